//! The gate's rules that no single route owns: bytes published under one version do not
//! come back as another without an admin, and what a user's unfinished uploads may hold
//! is bounded, atomically, whatever the route and however many requests race.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Backend, TestApp, expect_error};
use agentpkg_store::on_both_backends;

on_both_backends!(
    published_bytes_come_back_as_another_version_only_by_an_admin,
    unfinished_uploads_are_bounded_per_user_even_when_requests_race,
);

async fn published_bytes_come_back_as_another_version_only_by_an_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let publisher = app.token_for("publisher").await;
    let build = b"last year's signed build".repeat(50);
    app.publish(&publisher, "edge/1.0.0/linux/amd64", &build)
        .await;
    let before = app.stored().await;

    // The same bytes as a newer version: refused, nothing stored, on every route.
    let res = app
        .put_package(&publisher, "edge/2.0.0/linux/amd64", &build)
        .await;
    let body = expect_error(res, 409, "same_bytes").await;
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1.0.0"),
        "{body}"
    );
    let fields = [
        ("name", "edge"),
        ("version", "2.0.1"),
        ("platform", "linux"),
        ("arch", "amd64"),
    ];
    let res = app.upload(&publisher, build.clone(), &fields).await;
    expect_error(res, 409, "same_bytes").await;
    assert_eq!(
        app.stored().await,
        before,
        "nothing of the refused uploads stays"
    );
    let res = app
        .get("/api/v1/packages/edge/2.0.0/linux/amd64", &publisher)
        .await;
    assert_eq!(res.status(), 404);

    // The same version on another platform, and another name, may share the bytes.
    app.publish(&publisher, "edge/1.0.0/darwin/arm64", &build)
        .await;
    app.publish(&publisher, "edge-mirror/1.0.0/linux/amd64", &build)
        .await;

    // Asking to republish is an admin's choice.
    let res = app
        .put_package(&publisher, "edge/2.0.0/linux/amd64?republish=true", &build)
        .await;
    expect_error(res, 403, "forbidden").await;
    let republished = app
        .publish(&admin, "edge/2.0.0/linux/amd64?republish=true", &build)
        .await;
    assert_eq!(republished["version"], "2.0.0");

    // The refusal and the republish are in the audit log.
    let events: Vec<Value> = app
        .get("/api/v1/audit?action=upload_refused&per_page=100", &admin)
        .await
        .json()
        .await
        .unwrap();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["detail"] == "same_bytes")
        .collect();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["detail"] == "forbidden" && e["outcome"] == "refused"),
        "{events:?}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Opens a resumable partial upload of `length` bytes.
async fn open_session(app: &TestApp, token: &str, length: u64) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header("Upload-Concat", "partial")
        .send()
        .await
        .unwrap()
}

async fn unfinished_uploads_are_bounded_per_user_even_when_requests_race(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.upload.max_bytes_in_flight_per_user = 1000;
        s.upload.max_sessions_per_user = 100;
        s.upload.max_direct_grants_per_user = 2;
    })
    .await;
    let publisher = app.token_for("publisher").await;
    let other = app.token_for("publisher").await;

    // Ten sessions of 300 bytes at once: exactly three fit in 1 000 bytes.
    let tries: Vec<_> = (0..10)
        .map(|_| open_session(&app, &publisher, 300))
        .collect();
    let mut statuses: Vec<u16> = Vec::new();
    for res in futures_util::future::join_all(tries).await {
        let status = res.status().as_u16();
        if status == 429 {
            let body = expect_error(res, 429, "upload_quota").await;
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("900 of the 1000 bytes"),
                "{body}"
            );
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 201, 429, 429, 429, 429, 429, 429, 429]);
    // 100 more bytes fit; one more do not. Another user has their own allowance.
    assert_eq!(open_session(&app, &publisher, 100).await.status(), 201);
    expect_error(open_session(&app, &publisher, 1).await, 429, "upload_quota").await;
    assert_eq!(open_session(&app, &other, 1000).await.status(), 201);

    if backend == Backend::Production {
        // Direct grants count against the same bytes, and are bounded in number.
        let grant = |token: String, version: &'static str, size: usize| {
            let app = &app;
            async move {
                let file = vec![7u8; size];
                app.client
                    .post(app.url("/api/v1/uploads/direct"))
                    .bearer_auth(token)
                    .json(&json!({
                        "name": "quota-agent", "version": version, "platform": "linux",
                        "arch": "amd64", "size": size, "sha256": sha256_hex(&file),
                    }))
                    .send()
                    .await
                    .unwrap()
            }
        };
        let third = app.token_for("publisher").await;
        assert_eq!(grant(third.clone(), "1.0.0", 10).await.status(), 201);
        assert_eq!(grant(third.clone(), "1.0.1", 11).await.status(), 201);
        expect_error(
            grant(third.clone(), "1.0.2", 12).await,
            429,
            "too_many_grants",
        )
        .await;
        expect_error(
            grant(publisher.clone(), "2.0.0", 10).await,
            429,
            "upload_quota",
        )
        .await;
    }
}
