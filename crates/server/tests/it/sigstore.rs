//! Sigstore bundles nobody here made — the public conformance vectors (see
//! `crates/packagemgr/tests/data/sigstore-conformance/SOURCE.md`) — verified at ingest on
//! every upload route, refused when they do not hold, and what the registry offers agents
//! checked by sigstore-python, as a supervisor would check it.

use std::path::{Path, PathBuf};

use agentpkg_store::on_both_backends;
use base64::Engine;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, expect_error};
use crate::signing::{json_of, put_signed, refused, upload_signed};

on_both_backends!(
    bundles_are_verified_on_every_upload_route_and_refused_when_they_do_not_hold,
    resumable_and_direct_uploads_verify_bundles_too,
    identity_policies_are_admin_only_validated_and_audited,
    agents_get_the_signature_format_they_verify_and_sigstore_python_accepts_it,
);

pub(crate) const BEACON: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
pub(crate) const GITHUB: &str = "https://token.actions.githubusercontent.com";

pub(crate) fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packagemgr/tests/data/sigstore-conformance")
}

pub(crate) fn vector(case: &str) -> Vec<u8> {
    std::fs::read(vectors().join(case).join("bundle.sigstore.json")).unwrap()
}

pub(crate) fn artifact() -> Vec<u8> {
    std::fs::read(vectors().join("a.txt")).unwrap()
}

/// The conformance signer, trusted for `patterns`.
pub(crate) async fn trust_beacon(app: &TestApp, admin: &str, patterns: &[&str]) -> Value {
    let res = app
        .client
        .post(app.url("/api/v1/sigstore-identities"))
        .bearer_auth(admin)
        .json(&json!({
            "patterns": patterns,
            "issuer": GITHUB,
            "san_regex": format!("^{}$", regex_escape(BEACON)),
        }))
        .send()
        .await
        .unwrap();
    json_of(res, 201).await
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// A raw PUT with the bundle in `X-Signature` (base64) and its format named.
async fn put_bundle(
    app: &TestApp,
    token: &str,
    path: &str,
    file: &[u8],
    bundle: &[u8],
) -> reqwest::Response {
    app.client
        .put(app.url(path))
        .bearer_auth(token)
        .header(
            "X-Signature",
            base64::engine::general_purpose::STANDARD.encode(bundle),
        )
        .header("X-Signature-Format", "sigstore-bundle")
        .body(file.to_vec())
        .send()
        .await
        .unwrap()
}

async fn bundles_are_verified_on_every_upload_route_and_refused_when_they_do_not_hold(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let publisher = app.token_for("publisher").await;
    let policy = trust_beacon(&app, &admin, &["conformance*"]).await;
    let a = artifact();

    // A raw PUT with a v0.3 bundle: verified, the signer and the attested time recorded.
    let res = put_bundle(
        &app,
        &publisher,
        "/api/v1/packages/conformance/1.0.0/linux/amd64",
        &a,
        &vector("happy-path-v0.3"),
    )
    .await;
    let package = json_of(res, 201).await;
    let signature = &package["signature"];
    assert_eq!(signature["format"], "sigstore-bundle");
    assert_eq!(signature["verified"], true, "{signature}");
    assert_eq!(signature["signer"], BEACON);
    assert_eq!(signature["issuer"], GITHUB);
    assert_eq!(signature["sigstore_identity"], policy["id"]);
    assert_eq!(signature["key_fingerprint"], Value::Null);
    assert!(
        signature["signed_at"]
            .as_str()
            .unwrap()
            .starts_with("2024-03-19"),
        "{signature}"
    );
    // The bundle is served back byte for byte.
    let id = package["id"].as_i64().unwrap();
    let res = app
        .client
        .get(app.url(&format!("/api/v1/packages/{id}/signature")))
        .bearer_auth(&publisher)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        vector("happy-path-v0.3")
    );

    // A form upload with a v0.1 bundle (the signature part after the file).
    let res = upload_form(
        &app,
        &publisher,
        "linux",
        "arm64",
        &vector("happy-path-v0.1"),
    )
    .await;
    let package = json_of(res, 201).await;
    assert_eq!(package["signature"]["verified"], true);
    assert!(
        package["signature"]["signed_at"]
            .as_str()
            .unwrap()
            .starts_with("2023-07-12")
    );

    // A Rekor v2 entry with an RFC 3161 timestamp needs its own (staging) trust root, which
    // this server does not have: refused, like a bundle from another instance.
    let before = app.stored().await;
    for case in ["rekor2-happy-path", "bundle-from-wrong-instance_fail"] {
        let res = put_bundle(
            &app,
            &publisher,
            "/api/v1/packages/conformance/1.0.0/windows/amd64",
            &a,
            &vector(case),
        )
        .await;
        let why = refused(&app, res, 422, "signature_invalid", &before).await;
        assert!(why.contains("does not verify"), "{case}: {why}");
    }
    // The right bundle over other bytes.
    let res = put_bundle(
        &app,
        &publisher,
        "/api/v1/packages/conformance/1.0.0/windows/amd64",
        b"DO NOT MODIFY ME! (modified)",
        &vector("happy-path-v0.3"),
    )
    .await;
    refused(&app, res, 422, "signature_invalid", &before).await;
    // A name no policy covers: refused before the bytes, in words.
    let res = put_bundle(
        &app,
        &publisher,
        "/api/v1/packages/other/1.0.0/linux/amd64",
        &a,
        &vector("happy-path-v0.3"),
    )
    .await;
    let why = refused(&app, res, 422, "signature_invalid", &before).await;
    assert!(
        why.contains("no Sigstore identity is trusted to sign other"),
        "{why}"
    );
    // Not a bundle at all.
    let res = put_bundle(
        &app,
        &publisher,
        "/api/v1/packages/conformance/1.0.0/windows/amd64",
        &a,
        &vector("bundle-malformed-json_fail"),
    )
    .await;
    refused(&app, res, 400, "malformed_signature", &before).await;

    // Attached later, over the stored bytes, by the signature route.
    let res = put_signed(
        &app,
        &publisher,
        "/api/v1/packages/conformance/1.0.0/darwin/arm64",
        &a,
        None,
    )
    .await;
    let unsigned = json_of(res, 201).await;
    let id = unsigned["id"].as_i64().unwrap();
    let res = app
        .client
        .put(app.url(&format!(
            "/api/v1/packages/{id}/signature?format=sigstore-bundle"
        )))
        .bearer_auth(&publisher)
        .body(vector("happy-path-v0.2"))
        .send()
        .await
        .unwrap();
    let signed = json_of(res, 200).await;
    assert_eq!(signed["signature"]["verified"], true, "{signed}");
    assert_eq!(signed["signature"]["signer"], BEACON);

    // Once the policy is gone, nothing new verifies; what it verified keeps the record.
    let pid = policy["id"].as_i64().unwrap();
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/sigstore-identities/{pid}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = put_bundle(
        &app,
        &publisher,
        "/api/v1/packages/conformance/1.0.0/windows/amd64",
        &a,
        &vector("happy-path-v0.3"),
    )
    .await;
    let before = app.stored().await;
    refused(&app, res, 422, "signature_invalid", &before).await;
    let res = app
        .client
        .get(app.url(&format!("/api/v1/packages/{id}")))
        .bearer_auth(&publisher)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res, 200).await["signature"], signed["signature"]);
}

fn upload_form<'a>(
    app: &'a TestApp,
    token: &'a str,
    platform: &'a str,
    arch: &'a str,
    bundle: &'a [u8],
) -> impl std::future::Future<Output = reqwest::Response> + 'a {
    let form = reqwest::multipart::Form::new()
        .text("name", "conformance")
        .text("version", "1.0.0")
        .text("platform", platform.to_owned())
        .text("arch", arch.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::bytes(artifact()).file_name("a.txt"),
        )
        .part(
            "signature",
            reqwest::multipart::Part::bytes(bundle.to_vec()).file_name("a.txt.sigstore.json"),
        )
        .text("signature_format", "sigstore-bundle");
    async move {
        app.client
            .post(app.url("/api/v1/packages"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }
}

async fn identity_policies_are_admin_only_validated_and_audited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.signing.required = true).await;
    let admin = app.token_for("admin").await;
    let publisher = app.token_for("publisher").await;
    let url = app.url("/api/v1/sigstore-identities");
    let valid = json!({"patterns": ["*"], "issuer": GITHUB, "san_regex": "^x$"});

    let res = app
        .client
        .post(&url)
        .bearer_auth(&publisher)
        .json(&valid)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    for (body, field) in [
        (
            json!({"patterns": [], "issuer": GITHUB, "san_regex": "^x$"}),
            "patterns",
        ),
        (
            json!({"patterns": ["*"], "issuer": "http://issuer", "san_regex": "^x$"}),
            "issuer",
        ),
        (
            json!({"patterns": ["*"], "issuer": GITHUB, "san_regex": "github.com/acme/"}),
            "san_regex",
        ),
        (
            json!({"patterns": ["*"], "issuer": GITHUB, "san_regex": "^(x$"}),
            "san_regex",
        ),
    ] {
        let res = app
            .client
            .post(&url)
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let error = expect_error(res, 400, "invalid_field").await;
        assert_eq!(error["error"]["field"], field, "{body}");
    }
    let res = app
        .client
        .get(app.url("/api/v1/sigstore-identities/999"))
        .bearer_auth(&publisher)
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;

    // signing.required: a verified bundle meets it.
    let policy = trust_beacon(&app, &admin, &["conformance"]).await;
    let listed = app
        .client
        .get(&url)
        .bearer_auth(&publisher)
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(listed, 200).await, json!([policy]));
    let res = put_bundle(
        &app,
        &publisher,
        "/api/v1/packages/conformance/1.0.0/linux/amd64",
        &artifact(),
        &vector("happy-path-v0.3-new-mediaType"),
    )
    .await;
    json_of(res, 201).await;
    let res = upload_signed(&app, &publisher, "unsigned", b"unsigned", None, false).await;
    expect_error(res, 422, "signature_required").await;

    let audit = app
        .client
        .get(app.url("/api/v1/audit?action=sigstore_identity_add"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let events = json_of(audit, 200).await;
    let details: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains(&format!("sigstore identity {}", policy["id"]))),
        "{events}"
    );
}

async fn agents_get_the_signature_format_they_verify_and_sigstore_python_accepts_it(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let viewer = app.token_for("viewer").await;
    trust_beacon(&app, &admin, &["conformance"]).await;
    let res = put_bundle(
        &app,
        &admin,
        "/api/v1/packages/conformance/1.0.0/linux/amd64",
        &artifact(),
        &vector("happy-path-v0.3"),
    )
    .await;
    json_of(res, 201).await;
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&admin)
        .json(&json!({
            "package": "conformance", "version": "1.0.0", "signature": "sigstore-bundle",
            "selector": {"service.name": "otelcol"},
        }))
        .send()
        .await
        .unwrap();
    let assignment = json_of(res, 201).await;
    assert_eq!(assignment["signature"], "sigstore-bundle");
    let id = assignment["id"].as_i64().unwrap();
    let agent = |uid: usize, identity: &str| {
        crate::fleet::scripted_env(
            &app.base,
            &viewer,
            &format!("{uid:032x}"),
            "linux",
            "amd64",
            false,
            &[
                ("AGENT_SIGSTORE_IDENTITY", identity),
                ("AGENT_SIGSTORE_ISSUER", GITHUB),
            ],
        )
    };

    // The bundle as stored; sigstore-python verifies it offline, for the signer it expects.
    let report = agent(1, BEACON);
    let bundle_offer = report["offered"][""].clone();
    assert_eq!(bundle_offer["content_hash_ok"], true, "{report}");
    assert_eq!(
        bundle_offer["signature_bytes"],
        vector("happy-path-v0.3").len(),
        "{report}"
    );
    assert_eq!(bundle_offer["signature_ok"], true, "{report}");
    // The same check fails for a signer the agent does not expect.
    let report = agent(2, "https://github.com/acme/release.yml@refs/tags/v1");
    assert_eq!(report["offered"][""]["signature_ok"], false, "{report}");

    // The supervisor's older form: certificate and signature, made from the bundle.
    let patch = |signature: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let res = app
                .client
                .patch(app.url(&format!("/api/v1/assignments/{id}")))
                .bearer_auth(admin)
                .json(&json!({ "signature": signature }))
                .send()
                .await
                .unwrap();
            json_of(res, 200).await
        }
    };
    assert_eq!(
        patch("cosign-cert-sig").await["signature"],
        "cosign-cert-sig"
    );
    let report = agent(3, BEACON);
    let cosign_offer = &report["offered"][""];
    assert_eq!(cosign_offer["signature_ok"], true, "{report}");
    // Another format is another offer: the agents download again.
    assert_ne!(cosign_offer["hash"], bundle_offer["hash"], "{report}");

    // A format the package cannot give is not offered, and the agent's page says why.
    patch("openpgp").await;
    let report = agent(4, BEACON);
    assert_eq!(report["offered"], json!({}), "{report}");
    let res = app.get(&format!("/api/v1/agents/{:032x}", 4), &admin).await;
    let page = json_of(res, 200).await;
    let note = page["offer_note"].as_str().unwrap_or_default();
    assert!(
        note.contains("has a sigstore-bundle signature, not the openpgp signature"),
        "{page}"
    );
    // And an unknown format is refused in words.
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/assignments/{id}")))
        .bearer_auth(&admin)
        .json(&json!({ "signature": "cosign" }))
        .send()
        .await
        .unwrap();
    let error = expect_error(res, 400, "invalid_field").await;
    assert_eq!(error["error"]["field"], "signature");
}

async fn resumable_and_direct_uploads_verify_bundles_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let publisher = app.token_for("publisher").await;
    trust_beacon(&app, &admin, &["conformance"]).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let a = artifact();

    // tus: the bundle in Upload-Metadata, as its JSON (what a tus client does with a
    // string) or as base64 like any signature; every value there is base64 once more.
    let tus = |arch: &'static str, body: Vec<u8>, as_json: bool| {
        let app = &app;
        let publisher = &publisher;
        async move {
            let meta = [
                ("name", "conformance"),
                ("version", "1.0.0"),
                ("platform", "linux"),
                ("arch", arch),
                ("signature_format", "sigstore-bundle"),
            ]
            .iter()
            .map(|(k, v)| format!("{k} {}", b64(v.as_bytes())))
            .chain([format!(
                "signature {}",
                if as_json {
                    b64(&vector("happy-path-v0.3"))
                } else {
                    b64(b64(&vector("happy-path-v0.3")).as_bytes())
                }
            )])
            .collect::<Vec<_>>()
            .join(",");
            let res = app
                .client
                .post(app.url("/api/v1/uploads"))
                .bearer_auth(publisher)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", body.len().to_string())
                .header("Upload-Metadata", meta)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
            let location = res.headers()["location"].to_str().unwrap().to_owned();
            app.client
                .patch(app.url(&location))
                .bearer_auth(publisher)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Offset", "0")
                .header("Content-Type", "application/offset+octet-stream")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    for (arch, as_json) in [("amd64", true), ("arm64", false)] {
        let package = json_of(tus(arch, a.clone(), as_json).await, 200).await;
        assert_eq!(package["signature"]["verified"], true, "{package}");
        assert_eq!(package["signature"]["signer"], BEACON);
    }
    let before = app.stored().await;
    let res = tus("386", b"DO NOT MODIFY ME! (it was)".to_vec(), true).await;
    refused(&app, res, 422, "signature_invalid", &before).await;

    // A direct upload (S3): the bundle with the grant, verified at completion.
    if backend == Backend::Production {
        let res = app
            .client
            .post(app.url("/api/v1/uploads/direct"))
            .bearer_auth(&publisher)
            .json(&json!({
                "name": "conformance", "version": "1.0.0", "platform": "windows",
                "arch": "amd64", "size": a.len(),
                "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&a)),
                "signature": b64(&vector("happy-path-v0.3")),
                "signature_format": "sigstore-bundle",
            }))
            .send()
            .await
            .unwrap();
        let grant = json_of(res, 201).await;
        let mut put = app
            .client
            .put(grant["url"].as_str().unwrap())
            .body(a.clone());
        for (name, value) in grant["headers"].as_object().unwrap() {
            put = put.header(name.as_str(), value.as_str().unwrap());
        }
        let stored = put.send().await.unwrap();
        assert!(
            stored.status().is_success(),
            "{}",
            stored.text().await.unwrap()
        );
        let res = app
            .client
            .post(app.url(grant["complete_url"].as_str().unwrap()))
            .bearer_auth(&publisher)
            .send()
            .await
            .unwrap();
        let package = json_of(res, 201).await;
        assert_eq!(package["signature"]["verified"], true, "{package}");
        // Refused before any URL is handed out when the signer is not trusted for the name.
        let res = app
            .client
            .post(app.url("/api/v1/uploads/direct"))
            .bearer_auth(&publisher)
            .json(&json!({
                "name": "other", "version": "1.0.0", "platform": "linux", "arch": "amd64",
                "size": a.len(),
                "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&a)),
                "signature": b64(&vector("happy-path-v0.3")),
                "signature_format": "sigstore-bundle",
            }))
            .send()
            .await
            .unwrap();
        expect_error(res, 422, "signature_invalid").await;
    }
}
