//! The seed system's contract (the registry agentpkg replaces, whose report is
//! `shared/seed/phase-4.1-report.md`), end to end, and the package routes around it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{Backend, TestApp, expect_error};
use agentpkg_store::on_both_backends;

on_both_backends!(
    the_seed_scenario_works_end_to_end,
    fields_may_come_in_any_order_and_a_known_duplicate_is_refused_before_the_file,
    latest_follows_semver_and_prereleases_only_on_request,
    lists_filter_paginate_and_link,
    invalid_input_is_a_400_with_a_stable_code,
    a_filename_that_names_a_path_is_refused,
    health_and_readiness_answer,
    unknown_routes_and_ids_are_json_404s,
    hostile_requests_are_refused_and_the_server_keeps_serving,
    metrics_count_requests_bytes_rejections_and_rollbacks,
);

fn coords(version: &str) -> Vec<(&'static str, String)> {
    vec![
        ("name", "opamp-agent".to_owned()),
        ("version", version.to_owned()),
        ("platform", "linux".to_owned()),
        ("arch", "amd64".to_owned()),
    ]
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn the_seed_scenario_works_end_to_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // login
    let token = app.admin_token().await;
    // upload, file field first, exactly as the seed's curl does
    let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let sha = hex::encode(Sha256::digest(&data));
    let mut fields = coords("1.0.0");
    fields.push(("description", "Test OpAMP Agent for Linux AMD64".into()));
    let res = app.upload(&token, data.clone(), &as_refs(&fields)).await;
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    assert_eq!(location, format!("/api/v1/packages/{id}"));
    assert_eq!(created["name"], "opamp-agent");
    assert_eq!(created["version"], "1.0.0");
    assert_eq!(created["platform"], "linux");
    assert_eq!(created["arch"], "amd64");
    assert_eq!(created["file_size"], data.len() as u64);
    assert_eq!(created["checksum"], sha);
    assert_eq!(created["filename"], "agent-binary");
    assert_eq!(created["description"], "Test OpAMP Agent for Linux AMD64");
    assert_eq!(created["is_active"], true);
    for key in ["storage_path", "created_at", "updated_at"] {
        assert!(created[key].is_string(), "{key} missing: {created}");
    }

    // list
    let res = app.get("/api/v1/packages", &token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-total-count"], "1");
    let list: Vec<Value> = res.json().await.unwrap();
    assert_eq!(list, vec![created.clone()]);

    // get
    let res = app.get(&format!("/api/v1/packages/{id}"), &token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), created);

    // download: identical bytes, the right headers
    let res = app
        .get(&format!("/api/v1/packages/{id}/download"), &token)
        .await;
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "application/octet-stream");
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"agent-binary\""
    );
    assert_eq!(h["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(h["x-checksum-sha256"], sha.as_str());
    let body = res.bytes().await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), sha);
    assert_eq!(body.as_ref(), data.as_slice());

    // delete, then 404 — and the bytes are gone too
    let res = app.delete(&format!("/api/v1/packages/{id}"), &token).await;
    assert_eq!(res.status(), 204);
    for path in [
        format!("/api/v1/packages/{id}"),
        format!("/api/v1/packages/{id}/download"),
    ] {
        let res = app.get(&path, &token).await;
        expect_error(res, 404, "not_found").await;
    }
    app.assert_nothing_stored().await;
}

async fn fields_may_come_in_any_order_and_a_known_duplicate_is_refused_before_the_file(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    // Metadata first, file last, checksum announced in the form.
    let data = b"metadata first".to_vec();
    let sha = hex::encode(Sha256::digest(&data));
    let form = reqwest::multipart::Form::new()
        .text("arch", "arm64")
        .text("platform", "darwin")
        .text("version", "2.1.0-rc.1+build.7")
        .text("name", "otel-agent")
        .text("sha256", sha.to_uppercase())
        .part(
            "file",
            reqwest::multipart::Part::bytes(data.clone()).file_name("otelcol"),
        );
    let res = app
        .client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["version"], "2.1.0-rc.1+build.7");
    assert_eq!(p["checksum"], sha);
    assert_eq!(p["filename"], "otelcol");

    // Same coordinates (build metadata does not make another version), metadata first:
    // refused as a conflict.
    let form = reqwest::multipart::Form::new()
        .text("name", "otel-agent")
        .text("version", "2.1.0-rc.1+build.8")
        .text("platform", "darwin")
        .text("arch", "arm64")
        .part("file", reqwest::multipart::Part::bytes(vec![1u8; 4096]));
    let res = app
        .client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "conflict").await;
    let (keys, rows) = app.stored().await;
    assert_eq!(keys, vec![p["storage_path"].as_str().unwrap().to_owned()]);
    assert_eq!(rows, 1);
}

async fn latest_follows_semver_and_prereleases_only_on_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    for v in ["1.9.0", "1.10.0", "1.2.3", "1.11.0-rc.1"] {
        let res = app
            .upload(&token, v.as_bytes().to_vec(), &as_refs(&coords(v)))
            .await;
        assert_eq!(res.status(), 201);
    }
    let viewer = app.token_for("viewer").await;
    let latest = |query: &'static str| {
        let req = app
            .client
            .get(app.url(&format!("/api/v1/packages/latest?{query}")))
            .bearer_auth(&viewer);
        async move { req.send().await.unwrap() }
    };
    let res = latest("name=opamp-agent&platform=linux&arch=amd64").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], "1.10.0");
    let res = latest("name=opamp-agent&platform=linux&arch=amd64&prerelease=true").await;
    assert_eq!(res.json::<Value>().await.unwrap()["version"], "1.11.0-rc.1");
    let res = latest("name=opamp-agent&platform=windows&arch=amd64").await;
    assert_eq!(res.status(), 404);
    let res = latest("name=opamp-agent&platform=linux").await;
    let body = expect_error(res, 400, "missing_field").await;
    assert_eq!(body["error"]["field"], "arch");
    let res = latest("name=opamp-agent&platform=plan9&arch=amd64").await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["field"],
        "platform"
    );
}

async fn lists_filter_paginate_and_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    for (i, v) in ["1.0.0", "1.1.0", "1.2.0"].into_iter().enumerate() {
        assert_eq!(
            app.upload(&token, vec![i as u8; 10], &as_refs(&coords(v)))
                .await
                .status(),
            201
        );
    }
    let other = [
        ("name", "other"),
        ("version", "0.1.0"),
        ("platform", "windows"),
        ("arch", "386"),
    ];
    assert_eq!(app.upload(&token, vec![2; 10], &other).await.status(), 201);

    let res = app
        .get(
            "/api/v1/packages?name=opamp-agent&per_page=2&page=1",
            &token,
        )
        .await;
    assert_eq!(res.headers()["x-total-count"], "3");
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    assert!(link.contains("page=2>; rel=\"next\""), "{link}");
    assert!(link.contains("page=2>; rel=\"last\""), "{link}");
    let page: Vec<Value> = res.json().await.unwrap();
    let versions: Vec<_> = page
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.2.0", "1.1.0"]);

    let res = app
        .get("/api/v1/packages?platform=windows&arch=386", &token)
        .await;
    let page: Vec<Value> = res.json().await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0]["name"], "other");

    let res = app.get("/api/v1/packages?arch=sparc", &token).await;
    expect_error(res, 400, "invalid_field").await;
}

async fn invalid_input_is_a_400_with_a_stable_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    // (form fields, expected code, expected field)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("name", "opamp-agent"),
                ("version", "v1"),
                ("platform", "linux"),
                ("arch", "amd64"),
            ],
            "invalid_field",
            Some("version"),
        ),
        (
            vec![
                ("name", "Bad Name"),
                ("version", "1.0.0"),
                ("platform", "linux"),
                ("arch", "amd64"),
            ],
            "invalid_field",
            Some("name"),
        ),
        (
            vec![
                ("name", "../../etc"),
                ("version", "1.0.0"),
                ("platform", "linux"),
                ("arch", "amd64"),
            ],
            "invalid_field",
            Some("name"),
        ),
        (
            vec![
                ("name", "a"),
                ("version", "1.0.0"),
                ("platform", "solaris"),
                ("arch", "amd64"),
            ],
            "invalid_field",
            Some("platform"),
        ),
        (
            vec![
                ("name", "a"),
                ("version", "1.0.0"),
                ("platform", "linux"),
                ("arch", "x86_64"),
            ],
            "invalid_field",
            Some("arch"),
        ),
        (
            vec![("name", "a"), ("version", "1.0.0"), ("platform", "linux")],
            "missing_field",
            Some("arch"),
        ),
        (
            vec![
                ("name", "a"),
                ("name", "b"),
                ("version", "1.0.0"),
                ("platform", "linux"),
                ("arch", "amd64"),
            ],
            "duplicate_field",
            Some("name"),
        ),
        (
            vec![
                ("name", "a"),
                ("verison", "1.0.0"),
                ("platform", "linux"),
                ("arch", "amd64"),
            ],
            "unknown_field",
            None,
        ),
        (
            vec![
                ("name", "a"),
                ("version", "1.0.0"),
                ("platform", "linux"),
                ("arch", "amd64"),
                ("sha256", "abc"),
            ],
            "invalid_field",
            Some("sha256"),
        ),
    ];
    for (fields, code, field) in cases {
        let res = app.upload(&token, b"bytes".to_vec(), &fields).await;
        assert_eq!(res.status(), 400, "{fields:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{fields:?}: {body}");
        if let Some(field) = field {
            assert_eq!(body["error"]["field"], field, "{fields:?}: {body}");
        }
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // A 10 000-character description is refused; the limit is 4096.
    let long = "d".repeat(10_000);
    let base = coords("1.0.0");
    let mut fields = as_refs(&base);
    fields.push(("description", long.as_str()));
    let res = app.upload(&token, b"bytes".to_vec(), &fields).await;
    assert_eq!(res.status(), 400);
    // An empty file is refused.
    let res = app.upload(&token, vec![], &as_refs(&coords("1.0.0"))).await;
    assert_eq!(res.status(), 400);
    // Not a form at all.
    let res = app
        .client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "a"}))
        .send()
        .await
        .unwrap();
    expect_error(res, 415, "unsupported_media_type").await;
    // A broken multipart body.
    let res = app
        .client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(&token)
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body("this is not multipart at all")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_multipart").await;
    // A form without a file.
    let form = reqwest::multipart::Form::new()
        .text("name", "a")
        .text("version", "1.0.0")
        .text("platform", "linux")
        .text("arch", "amd64");
    let res = app
        .client
        .post(app.url("/api/v1/packages"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["field"], "file");
    // Non-numeric ids.
    let res = app.get("/api/v1/packages/abc", &token).await;
    assert_eq!(res.status(), 400);
    app.assert_nothing_stored().await;
}

async fn a_filename_that_names_a_path_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    for name in ["../../etc/passwd", "/etc/passwd", "a\\b", "..", ".", "x/y"] {
        let mut form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"x".to_vec()).file_name(name.to_owned()),
        );
        for (k, v) in coords("1.0.0") {
            form = form.text(k, v);
        }
        let res = app
            .client
            .post(app.url("/api/v1/packages"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{name}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["field"], "filename", "{name}: {body}");
    }
    app.assert_nothing_stored().await;
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = std::collections::HashSet::new();
    for path in [
        "/healthz",
        "/readyz",
        "/api/v1/healthz",
        "/api/v1/readyz",
        "/nope",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            res.status(),
            if path == "/nope" { 404 } else { 200 },
            "{path}"
        );
        // Every answer names its request, for matching with the server's log.
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        ids.insert(id);
    }
    assert_eq!(ids.len(), 5, "request ids repeat");
}

async fn unknown_routes_and_ids_are_json_404s(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.admin_token().await;
    for path in [
        "/nope",
        "/api/v1/packages/999999",
        "/api/v1/packages/999999/download",
    ] {
        let res = app.get(path, &token).await;
        expect_error(res, 404, "not_found").await;
    }
    let res = app.delete("/api/v1/packages/999999", &token).await;
    assert_eq!(res.status(), 404);
}

async fn hostile_requests_are_refused_and_the_server_keeps_serving(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let long = "x".repeat(10_000);
    let hostile: Vec<Vec<(&str, &str)>> = vec![
        vec![
            ("name", "%2e%2e"),
            ("version", "1.0.0"),
            ("platform", "linux"),
            ("arch", "amd64"),
        ],
        vec![
            ("name", "a'; DROP TABLE packages; --"),
            ("version", "1.0.0"),
            ("platform", "linux"),
            ("arch", "amd64"),
        ],
        vec![
            ("name", "a"),
            ("version", "1.0.0' OR '1'='1"),
            ("platform", "linux"),
            ("arch", "amd64"),
        ],
        vec![
            ("name", "a"),
            ("version", "1.0.0\0"),
            ("platform", "linux"),
            ("arch", "amd64"),
        ],
        vec![
            ("name", "a"),
            ("version", "1.0.0"),
            ("platform", "linux\0"),
            ("arch", "amd64"),
        ],
        vec![
            ("name", &long),
            ("version", "1.0.0"),
            ("platform", "linux"),
            ("arch", "amd64"),
        ],
        vec![
            ("name", "a"),
            ("version", &long),
            ("platform", "linux"),
            ("arch", "amd64"),
        ],
        vec![
            ("name", "a"),
            ("version", "1.0.0"),
            ("platform", "linux"),
            ("arch", "amd64"),
            ("description", "nul\0byte"),
        ],
    ];
    for fields in &hostile {
        let res = app.upload(&token, b"x".to_vec(), fields).await;
        assert_eq!(res.status(), 400, "{:?}", &fields[..2]);
        assert!(res.json::<Value>().await.unwrap()["error"]["code"].is_string());
    }
    // Paths that try to climb out, encoded or not, never reach a file.
    for path in [
        "/api/v1/packages/%2e%2e/%2e%2e/etc/passwd/download",
        "/api/v1/packages/..%2F..%2Fetc/1.0.0/linux/amd64/download",
        "/api/v1/packages/a/1.0.0/linux/amd64%00/download",
    ] {
        let res = app.get(path, &token).await;
        assert!(res.status().is_client_error(), "{path}: {}", res.status());
    }
    // A header flood is refused by the HTTP layer.
    let mut req = app
        .client
        .get(app.url("/api/v1/packages"))
        .bearer_auth(&token);
    for i in 0..200 {
        req = req.header(format!("x-flood-{i}"), "y".repeat(100));
    }
    if let Ok(res) = req.send().await {
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    // Nothing stored, and the server still serves.
    app.assert_nothing_stored().await;
    let res = app.get("/api/v1/packages", &token).await;
    assert_eq!(res.status(), 200);
}

async fn metrics_count_requests_bytes_rejections_and_rollbacks(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.metrics.bind = "127.0.0.1:0".into()).await;
    let admin = app.admin_token().await;
    let fields = coords("1.0.0");
    assert_eq!(
        app.upload(&admin, b"12345".to_vec(), &as_refs(&fields))
            .await
            .status(),
        201
    );
    // The same bytes again under other coordinates (an admin's explicit republish):
    // stored once, and the spare copy's deletion is not a rollback.
    let mut again = coords("2.0.0");
    again.push(("republish", "true".to_owned()));
    assert_eq!(
        app.upload(&admin, b"12345".to_vec(), &as_refs(&again))
            .await
            .status(),
        201
    );
    // File first: stored, then refused as a duplicate and rolled back.
    assert_eq!(
        app.upload(&admin, b"other".to_vec(), &as_refs(&fields))
            .await
            .status(),
        409
    );
    let list: Vec<Value> = app
        .get("/api/v1/packages", &admin)
        .await
        .json()
        .await
        .unwrap();
    let id = list[0]["id"].as_i64().unwrap();
    let res = app
        .get(&format!("/api/v1/packages/{id}/download"), &admin)
        .await;
    assert_eq!(res.bytes().await.unwrap().len(), 5);

    // On the API port, for admins only.
    assert_eq!(
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let viewer = app.token_for("viewer").await;
    assert_eq!(app.get("/metrics", &viewer).await.status(), 403);
    let res = app.get("/metrics", &admin).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = res.text().await.unwrap();
    for line in [
        "http_requests_total{method=\"POST\",route=\"/api/v1/packages\",status=\"201\"} 2",
        "http_requests_total{method=\"POST\",route=\"/api/v1/packages\",status=\"409\"} 1",
        "http_requests_total{method=\"GET\",route=\"/api/v1/packages/{id}/download\",status=\"200\"} 1",
        "agentpkg_uploaded_bytes_total 10",
        "agentpkg_downloaded_bytes_total 5",
        "agentpkg_uploads_rejected_total{reason=\"conflict\"} 1",
        "agentpkg_rollback_cleanups_total 1",
        "agentpkg_rollback_cleanup_failures_total 0",
        // Three files were stored (one then refused), two rows inserted, three logins.
        "agentpkg_storage_operation_duration_seconds_count{operation=\"put\",outcome=\"ok\"} 3",
        "agentpkg_db_operation_duration_seconds_count{operation=\"insert_package\",outcome=\"ok\"} 2",
        "agentpkg_db_operation_duration_seconds_count{operation=\"user_credentials\",outcome=\"ok\"} 3",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    let gauge = |name: &str| -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let (open, idle, max) = (
        gauge("agentpkg_db_pool_connections"),
        gauge("agentpkg_db_pool_idle_connections"),
        gauge("agentpkg_db_pool_max_connections"),
    );
    assert!(
        1 <= open && idle <= open && open <= max,
        "{open} {idle} {max}"
    );
    assert_eq!(max, i64::from(app.settings.database.max_connections));

    // The separate listener serves the same, without a token.
    let port = app.metrics_port.expect("metrics listener");
    let res = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("agentpkg_uploaded_bytes_total 10")
    );
    let res = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/packages"))
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        404,
        "the metrics listener serves nothing else"
    );
}
