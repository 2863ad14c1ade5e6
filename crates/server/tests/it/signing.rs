//! Signatures, against GnuPG: keys made by `gpg --quick-gen-key`, signatures by
//! `gpg --detach-sign`, and downloads checked by `gpgv` the way an agent would.

use std::path::{Path, PathBuf};
use std::process::Command;

use agentpkg_store::on_both_backends;
use base64::Engine;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, expect_error};

on_both_backends!(
    signed_uploads_are_verified_and_served_to_agents,
    bad_signatures_are_refused_and_leave_nothing,
    keys_that_may_not_sign_verify_nothing,
    required_signatures_are_enforced_on_every_upload_route,
    a_signature_can_be_added_later_and_only_an_admin_replaces_a_verified_one,
);

/// A GnuPG home of its own, with keys made without passphrases.
pub(crate) struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    pub(crate) fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg runs (the test command installs gnupg)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Makes a key and returns its fingerprint; `faked` runs GnuPG at another time.
    pub(crate) fn generate(
        &self,
        uid: &str,
        algo: &str,
        expire: &str,
        faked: Option<&str>,
    ) -> String {
        let mut args = vec![];
        if let Some(t) = faked {
            args.extend(["--faked-system-time", t]);
        }
        args.extend(["--quick-gen-key", uid, algo, "sign", expire]);
        self.run(&args);
        self.fingerprint(uid)
    }

    fn fingerprint(&self, uid: &str) -> String {
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])).unwrap();
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned()
    }

    /// Adds an Ed25519 signing subkey; GnuPG then signs with it. Its fingerprint.
    pub(crate) fn add_signing_subkey(&self, fingerprint: &str) -> String {
        self.run(&["--quick-add-key", fingerprint, "ed25519", "sign", "never"]);
        let listing =
            String::from_utf8(self.run(&["--with-colons", "--list-keys", fingerprint])).unwrap();
        listing
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .filter_map(|l| l.split(':').nth(9))
            .next_back()
            .unwrap()
            .to_owned()
    }

    pub(crate) fn export(&self, fingerprint: &str) -> String {
        String::from_utf8(self.run(&["--armor", "--export", fingerprint])).unwrap()
    }

    /// A detached signature of `file` by `key`, armoured or binary, with extra options.
    pub(crate) fn sign(&self, key: &str, file: &Path, armor: bool, extra: &[&str]) -> Vec<u8> {
        let mut args = vec!["--local-user", key, "--output", "-"];
        if armor {
            args.push("--armor");
        }
        args.extend(extra);
        args.extend(["--detach-sign", file.to_str().unwrap()]);
        self.run(&args)
    }

    /// Revokes the key with the certificate GnuPG made at generation.
    fn revoke(&self, fingerprint: &str) {
        let cert = self
            .home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{fingerprint}.rev"));
        // GnuPG puts a colon before the armour so the certificate is not imported by
        // accident.
        let text = std::fs::read_to_string(cert).unwrap().replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let path = self.home.path().join("revoke.asc");
        std::fs::write(&path, text).unwrap();
        self.run(&["--import", path.to_str().unwrap()]);
    }

    /// A keyring of `fingerprint` for `gpgv`, as an agent would be given.
    pub(crate) fn keyring_for_gpgv(&self, fingerprint: &str) -> PathBuf {
        let path = self.home.path().join(format!("{fingerprint}.gpg"));
        std::fs::write(&path, self.run(&["--export", fingerprint])).unwrap();
        path
    }
}

/// `gpgv --keyring KEYRING SIG FILE`: whether an agent would accept the download.
fn gpgv(keyring: &Path, signature: &Path, file: &Path) -> bool {
    Command::new("gpgv")
        .arg("--keyring")
        .arg(keyring)
        .arg(signature)
        .arg(file)
        .output()
        .expect("gpgv runs (the test command installs gpgv)")
        .status
        .success()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

pub(crate) async fn trust(
    app: &TestApp,
    admin: &str,
    armored: &str,
    patterns: &[&str],
) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/keys"))
        .bearer_auth(admin)
        .json(&json!({"key": armored, "patterns": patterns}))
        .send()
        .await
        .unwrap()
}

/// A multipart upload with the signature before or after the file.
pub(crate) async fn upload_signed(
    app: &TestApp,
    token: &str,
    name: &str,
    file: &[u8],
    signature: Option<(&[u8], Option<&str>)>,
    signature_first: bool,
) -> reqwest::Response {
    let mut form = Form::new()
        .text("name", name.to_owned())
        .text("version", "1.0.0")
        .text("platform", "linux")
        .text("arch", "amd64");
    let sig_part = |form: Form| match signature {
        Some((bytes, format)) => {
            let form = form.part("signature", Part::bytes(bytes.to_vec()).file_name("f.sig"));
            match format {
                Some(f) => form.text("signature_format", f.to_owned()),
                None => form,
            }
        }
        None => form,
    };
    if signature_first {
        form = sig_part(form);
    }
    form = form.part(
        "file",
        Part::bytes(file.to_vec()).file_name(name.to_owned()),
    );
    if !signature_first {
        form = sig_part(form);
    }
    app.client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn put_signed(
    app: &TestApp,
    token: &str,
    path: &str,
    file: &[u8],
    signature: Option<&[u8]>,
) -> reqwest::Response {
    let mut req = app
        .client
        .put(app.url(path))
        .bearer_auth(token)
        .body(file.to_vec());
    if let Some(sig) = signature {
        req = req.header(
            "X-Signature",
            base64::engine::general_purpose::STANDARD.encode(sig),
        );
    }
    req.send().await.unwrap()
}

pub(crate) async fn json_of(res: reqwest::Response, status: u16) -> Value {
    let got = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

async fn signed_uploads_are_verified_and_served_to_agents(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let publisher = app.token_for("publisher").await;
    let gpg = Gpg::new();
    // Ed25519 with a signing subkey (GnuPG signs with the subkey), and RSA 3072.
    let ed = gpg.generate(
        "Collector Builds <builds@example.com>",
        "ed25519",
        "never",
        None,
    );
    gpg.add_signing_subkey(&ed);
    let rsa = gpg.generate(
        "Fleet Release <release@example.com>",
        "rsa3072",
        "never",
        None,
    );

    let key = json_of(
        trust(&app, &admin, &gpg.export(&ed), &["otelcol*"]).await,
        201,
    )
    .await;
    assert_eq!(key["fingerprint"], ed.as_str());
    assert_eq!(
        key["user_ids"],
        json!(["Collector Builds <builds@example.com>"])
    );
    assert_eq!(key["revoked"], false);
    assert_eq!(key["expired"], false);
    assert_eq!(key["expires_at"], Value::Null);
    assert_eq!(key["patterns"], json!(["otelcol*"]));
    let key = json_of(trust(&app, &admin, &gpg.export(&rsa), &["*"]).await, 201).await;
    assert_eq!(key["fingerprint"], rsa.as_str());
    assert!(key["algorithm"].as_str().unwrap().contains("RSA"), "{key}");

    let dir = tempfile::tempdir().unwrap();
    let file = b"otelcol-contrib build 1.0.0\n".repeat(5_000);
    let path = write(dir.path(), "otelcol-contrib", &file);

    // Binary signature by the subkey, sent after the file.
    let sig = gpg.sign(&ed, &path, false, &[]);
    let res = upload_signed(
        &app,
        &publisher,
        "otelcol-contrib",
        &file,
        Some((&sig, None)),
        false,
    );
    let package = json_of(res.await, 201).await;
    assert_eq!(package["signature"]["format"], "openpgp");
    assert_eq!(package["signature"]["verified"], true);
    assert_eq!(package["signature"]["key_fingerprint"], ed.as_str());
    assert_eq!(
        package["signature"]["signer"],
        "Collector Builds <builds@example.com>"
    );
    let id = package["id"].as_i64().unwrap();

    // Armoured signature by the RSA key, in the raw PUT's header.
    let asc = gpg.sign(&rsa, &path, true, &[]);
    let res = put_signed(
        &app,
        &publisher,
        "/api/v1/packages/otelcol-contrib/1.0.0/linux/arm64",
        &file,
        Some(&asc),
    );
    let put = json_of(res.await, 201).await;
    assert_eq!(put["signature"]["key_fingerprint"], rsa.as_str());

    // SHA-512 signatures: before the file (hashed on the way) and after it (read back).
    for (platform, arch, first) in [("linux", "386", true), ("windows", "amd64", false)] {
        let sig = gpg.sign(&ed, &path, true, &["--digest-algo", "SHA512"]);
        let form = Form::new()
            .text("name", "otelcol-contrib")
            .text("version", "1.0.0")
            .text("platform", platform)
            .text("arch", arch);
        let form = if first {
            form.part("signature", Part::bytes(sig.clone()))
                .part("file", Part::bytes(file.clone()).file_name("f"))
        } else {
            form.part("file", Part::bytes(file.clone()).file_name("f"))
                .part("signature", Part::bytes(sig.clone()))
        };
        let res = app
            .client
            .post(app.url("/api/v1/packages"))
            .bearer_auth(&publisher)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let body = json_of(res, 201).await;
        assert_eq!(body["signature"]["verified"], true, "{arch}");
    }

    // An agent downloads the package and its signature, and checks them with gpgv.
    let res = app
        .get(&format!("/api/v1/packages/{id}/download"), &publisher)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-signature-key"], ed.as_str());
    let downloaded = write(dir.path(), "downloaded", &res.bytes().await.unwrap());
    let res = app
        .get(
            "/api/v1/packages/otelcol-contrib/1.0.0/linux/amd64/signature",
            &publisher,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/pgp-signature");
    assert_eq!(res.headers()["x-signature-format"], "openpgp");
    assert_eq!(res.headers()["x-signature-key"], ed.as_str());
    let served = res.bytes().await.unwrap();
    assert_eq!(
        &served[..],
        &sig[..],
        "the signature is served as it was sent"
    );
    let sig_path = write(dir.path(), "downloaded.sig", &served);
    assert!(gpgv(&gpg.keyring_for_gpgv(&ed), &sig_path, &downloaded));
    // The check can fail: another key does not verify it.
    assert!(!gpgv(&gpg.keyring_for_gpgv(&rsa), &sig_path, &downloaded));
    let by_id = app
        .get(&format!("/api/v1/packages/{id}/signature"), &publisher)
        .await;
    assert_eq!(&by_id.bytes().await.unwrap()[..], &sig[..]);

    // The keys an agent needs are readable by any signed-in user.
    let viewer = app.token_for("viewer").await;
    let keys = json_of(app.get("/api/v1/keys", &viewer).await, 200).await;
    assert_eq!(keys.as_array().unwrap().len(), 2);
    let one = json_of(app.get(&format!("/api/v1/keys/{ed}"), &viewer).await, 200).await;
    assert!(
        one["armored"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    );
    // An unsigned package has no signature to serve.
    let res = app
        .client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(&publisher)
        .multipart(
            Form::new()
                .text("name", "plain")
                .text("version", "1.0.0")
                .text("platform", "linux")
                .text("arch", "amd64")
                .part("file", Part::bytes(b"plain".to_vec()).file_name("plain")),
        )
        .send()
        .await
        .unwrap();
    let plain = json_of(res, 201).await;
    assert_eq!(plain["signature"], Value::Null);
    let res = app
        .get(
            &format!("/api/v1/packages/{}/signature", plain["id"]),
            &viewer,
        )
        .await;
    expect_error(res, 404, "not_found").await;
}

/// Asserts a refused upload left no row and no object beyond `before`.
pub(crate) async fn refused(
    app: &TestApp,
    res: reqwest::Response,
    status: u16,
    code: &str,
    before: &(Vec<String>, u64),
) -> String {
    let body = expect_error(res, status, code).await;
    let mut after = app.stored().await;
    for _ in 0..30 {
        if after == *before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = app.stored().await;
    }
    assert_eq!(&after, before, "a refused upload left something behind");
    body["error"]["message"].as_str().unwrap().to_owned()
}

async fn bad_signatures_are_refused_and_leave_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let gpg = Gpg::new();
    let fpr = gpg.generate("Builds <builds@example.com>", "ed25519", "never", None);
    json_of(
        trust(&app, &admin, &gpg.export(&fpr), &["agent*"]).await,
        201,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = b"agent build\n".repeat(1_000);
    let path = write(dir.path(), "agent", &file);
    let sig = gpg.sign(&fpr, &path, false, &[]);
    let before = app.stored().await;

    // One byte changed after signing, with the signature before and after the file.
    let mut tampered = file.clone();
    tampered[500] ^= 1;
    for first in [true, false] {
        let res = upload_signed(&app, &admin, "agent", &tampered, Some((&sig, None)), first);
        let message = refused(&app, res.await, 422, "signature_invalid", &before).await;
        assert!(message.contains("does not match"), "{message}");
    }
    // The signature of another file.
    let other = write(dir.path(), "other", b"another file");
    let other_sig = gpg.sign(&fpr, &other, true, &[]);
    let res = put_signed(
        &app,
        &admin,
        "/api/v1/packages/agent/1.0.0/linux/amd64",
        &file,
        Some(&other_sig),
    );
    refused(&app, res.await, 422, "signature_invalid", &before).await;
    // A name the key is not trusted for: refused before the file.
    let res = upload_signed(&app, &admin, "collector", &file, Some((&sig, None)), true);
    let message = refused(&app, res.await, 422, "signature_invalid", &before).await;
    assert!(
        message.contains("not trusted to sign collector"),
        "{message}"
    );
    // A truncated signature, random bytes, a 1 MiB "signature", bad base64.
    let truncated = &sig[..sig.len() / 2];
    let random: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
    let huge = vec![b'A'; 1024 * 1024];
    for bad in [truncated, &random[..], &huge[..]] {
        let res = upload_signed(&app, &admin, "agent", &file, Some((bad, None)), false);
        refused(&app, res.await, 400, "malformed_signature", &before).await;
    }
    let res = app
        .client
        .put(app.url("/api/v1/packages/agent/1.0.0/linux/amd64"))
        .bearer_auth(&admin)
        .header("X-Signature", "not base64!")
        .body(file.clone())
        .send()
        .await
        .unwrap();
    refused(&app, res, 400, "malformed_signature", &before).await;
    // A text-mode signature signs something else than the bytes.
    let text_sig = gpg.sign(&fpr, &path, true, &["--textmode"]);
    let res = upload_signed(&app, &admin, "agent", &file, Some((&text_sig, None)), true);
    refused(&app, res.await, 400, "malformed_signature", &before).await;
    // An unknown format is a field error.
    let res = upload_signed(
        &app,
        &admin,
        "agent",
        &file,
        Some((&sig, Some("pgp"))),
        true,
    );
    refused(&app, res.await, 400, "invalid_field", &before).await;
    // And the good one passes.
    let res = upload_signed(&app, &admin, "agent", &file, Some((&sig, None)), true);
    json_of(res.await, 201).await;
}

async fn keys_that_may_not_sign_verify_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let gpg = Gpg::new();
    let dir = tempfile::tempdir().unwrap();
    let file = b"agent build\n".repeat(100);
    let path = write(dir.path(), "agent", &file);

    // A key that expired: made (and used) in 2020, valid for a day.
    let then = "20200101T000000!";
    let expired = gpg.generate("Old <old@example.com>", "ed25519", "1d", Some(then));
    let key = json_of(
        trust(&app, &admin, &gpg.export(&expired), &["*"]).await,
        201,
    )
    .await;
    assert_eq!(key["expired"], true);
    assert!(
        key["expires_at"]
            .as_str()
            .unwrap()
            .starts_with("2020-01-02")
    );
    let sig = gpg.sign(&expired, &path, false, &["--faked-system-time", then]);
    let before = app.stored().await;
    let res = upload_signed(&app, &admin, "agent", &file, Some((&sig, None)), true);
    let message = refused(&app, res.await, 422, "signature_invalid", &before).await;
    assert!(message.contains("expired"), "{message}");

    // A key that verified a package, then was revoked.
    let revoked = gpg.generate("Leaked <leaked@example.com>", "ed25519", "never", None);
    json_of(
        trust(&app, &admin, &gpg.export(&revoked), &["*"]).await,
        201,
    )
    .await;
    let sig = gpg.sign(&revoked, &path, false, &[]);
    let res = upload_signed(&app, &admin, "agent", &file, Some((&sig, None)), true);
    let verified = json_of(res.await, 201).await;
    gpg.revoke(&revoked);
    let key = json_of(
        trust(&app, &admin, &gpg.export(&revoked), &["*"]).await,
        200,
    )
    .await;
    assert_eq!(key["revoked"], true, "sending a known key again updates it");
    let before = app.stored().await;
    let res = put_signed(
        &app,
        &admin,
        "/api/v1/packages/agent/2.0.0/linux/amd64?republish=true",
        &file,
        Some(&sig),
    );
    let message = refused(&app, res.await, 422, "signature_invalid", &before).await;
    assert!(message.contains("revoked"), "{message}");

    // A removed key verifies nothing new; what it verified keeps the record.
    let removed = gpg.generate("Gone <gone@example.com>", "ed25519", "never", None);
    json_of(
        trust(&app, &admin, &gpg.export(&removed), &["*"]).await,
        201,
    )
    .await;
    let sig = gpg.sign(&removed, &path, false, &[]);
    let res = put_signed(
        &app,
        &admin,
        "/api/v1/packages/agent/3.0.0/linux/amd64?republish=true",
        &file,
        Some(&sig),
    );
    let kept = json_of(res.await, 201).await;
    let res = app.delete(&format!("/api/v1/keys/{removed}"), &admin).await;
    assert_eq!(res.status(), 204);
    let res = app.get(&format!("/api/v1/keys/{removed}"), &admin).await;
    expect_error(res, 404, "not_found").await;
    let before = app.stored().await;
    let res = put_signed(
        &app,
        &admin,
        "/api/v1/packages/agent/4.0.0/linux/amd64?republish=true",
        &file,
        Some(&sig),
    );
    let message = refused(&app, res.await, 422, "signature_invalid", &before).await;
    assert!(message.contains("not a trusted key"), "{message}");
    for package in [&kept, &verified] {
        let now = json_of(
            app.get(&format!("/api/v1/packages/{}", package["id"]), &admin)
                .await,
            200,
        )
        .await;
        assert_eq!(now["signature"], package["signature"]);
        assert_eq!(now["signature"]["verified"], true);
    }

    // What is not a public key is refused.
    for (bad, why) in [
        ("not a key", "not an OpenPGP public key"),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n-----END PGP PRIVATE KEY BLOCK-----",
            "secret key",
        ),
    ] {
        let body = expect_error(trust(&app, &admin, bad, &["*"]).await, 400, "invalid_key").await;
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    let res = trust(&app, &admin, &gpg.export(&removed), &[]).await;
    expect_error(res, 400, "invalid_field").await;
}

async fn required_signatures_are_enforced_on_every_upload_route(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.signing.required = true).await;
    let admin = app.token_for("admin").await;
    let gpg = Gpg::new();
    let fpr = gpg.generate("Builds <builds@example.com>", "ed25519", "never", None);
    json_of(trust(&app, &admin, &gpg.export(&fpr), &["*"]).await, 201).await;
    let dir = tempfile::tempdir().unwrap();
    let file = b"agent".repeat(100);
    let path = write(dir.path(), "agent", &file);
    let before = app.stored().await;

    let res = upload_signed(&app, &admin, "agent", &file, None, false);
    refused(&app, res.await, 422, "signature_required", &before).await;
    let res = put_signed(
        &app,
        &admin,
        "/api/v1/packages/agent/1.0.0/linux/amd64",
        &file,
        None,
    );
    refused(&app, res.await, 422, "signature_required", &before).await;
    // A format the registry cannot verify does not meet the requirement.
    let res = upload_signed(
        &app,
        &admin,
        "agent",
        &file,
        Some((b"MEUCIQD-cosign-signature", Some("cosign"))),
        true,
    );
    refused(&app, res.await, 422, "signature_required", &before).await;
    // And a direct upload (S3) is refused before a URL is handed out.
    if backend == Backend::Production {
        let res = app
            .client
            .post(app.url("/api/v1/uploads/direct"))
            .bearer_auth(&admin)
            .json(
                &json!({"name": "agent", "version": "1.0.0", "platform": "linux",
                "arch": "amd64", "size": file.len(),
                "sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file))}),
            )
            .send()
            .await
            .unwrap();
        refused(&app, res, 422, "signature_required", &before).await;
    }

    let sig = gpg.sign(&fpr, &path, false, &[]);
    let res = put_signed(
        &app,
        &admin,
        "/api/v1/packages/agent/1.0.0/linux/amd64",
        &file,
        Some(&sig),
    );
    json_of(res.await, 201).await;
}

async fn a_signature_can_be_added_later_and_only_an_admin_replaces_a_verified_one(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let publisher = app.token_for("publisher").await;
    let gpg = Gpg::new();
    let fpr = gpg.generate("Builds <builds@example.com>", "rsa3072", "never", None);
    json_of(trust(&app, &admin, &gpg.export(&fpr), &["*"]).await, 201).await;
    let dir = tempfile::tempdir().unwrap();
    let file = b"agent".repeat(1000);
    let path = write(dir.path(), "agent", &file);

    // Kept as sent, unverified: a cosign signature for agents that check it themselves.
    let cosign = b"MEUCIQDcosign-signature-bytes".to_vec();
    let res = upload_signed(
        &app,
        &publisher,
        "agent",
        &file,
        Some((&cosign, Some("cosign"))),
        false,
    );
    let package = json_of(res.await, 201).await;
    assert_eq!(
        package["signature"],
        json!({"format": "cosign", "verified": false, "key_fingerprint": null, "signer": null, "verified_at": null})
    );
    let id = package["id"].as_i64().unwrap();
    let res = app
        .get(&format!("/api/v1/packages/{id}/signature"), &publisher)
        .await;
    assert_eq!(res.headers()["x-signature-format"], "cosign");
    assert!(res.headers().get("x-signature-key").is_none());
    assert_eq!(&res.bytes().await.unwrap()[..], &cosign[..]);

    let attach = |token: &str, body: Vec<u8>| {
        app.client
            .put(app.url(&format!("/api/v1/packages/{id}/signature")))
            .bearer_auth(token)
            .body(body)
            .send()
    };
    // A bad signature changes nothing.
    let other = write(dir.path(), "other", b"other");
    let res = attach(&publisher, gpg.sign(&fpr, &other, false, &[]))
        .await
        .unwrap();
    expect_error(res, 422, "signature_invalid").await;
    // The owner signs it: verified over the stored bytes.
    let sig = gpg.sign(&fpr, &path, true, &[]);
    let signed = json_of(attach(&publisher, sig.clone()).await.unwrap(), 200).await;
    assert_eq!(signed["signature"]["verified"], true);
    assert_eq!(signed["signature"]["key_fingerprint"], fpr.as_str());
    let res = app
        .get(&format!("/api/v1/packages/{id}/download"), &publisher)
        .await;
    assert_eq!(res.headers()["x-signature-key"], fpr.as_str());
    // A verified signature is replaced only by an admin.
    let again = gpg.sign(&fpr, &path, false, &[]);
    let res = attach(&publisher, again.clone()).await.unwrap();
    expect_error(res, 403, "forbidden").await;
    let res = app
        .get(&format!("/api/v1/packages/{id}/signature"), &admin)
        .await;
    assert_eq!(&res.bytes().await.unwrap()[..], &sig[..]);
    json_of(attach(&admin, again.clone()).await.unwrap(), 200).await;
    let res = app
        .get(&format!("/api/v1/packages/{id}/signature"), &admin)
        .await;
    assert_eq!(&res.bytes().await.unwrap()[..], &again[..]);
    // Another publisher (not an owner) may not sign it at all.
    let stranger = app.token_for("publisher").await;
    let res = attach(&stranger, sig).await.unwrap();
    expect_error(res, 403, "forbidden").await;
    // Deleting the package takes its signature with it.
    assert_eq!(
        app.delete(&format!("/api/v1/packages/{id}"), &admin)
            .await
            .status(),
        204
    );
    let res = app
        .get(&format!("/api/v1/packages/{id}/signature"), &admin)
        .await;
    expect_error(res, 404, "not_found").await;
}
