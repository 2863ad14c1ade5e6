//! What agents and pipelines need: ranged and conditional downloads, downloads by
//! coordinates, presigned redirects, raw PUT uploads, yanking, version history.

use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{Backend, TestApp};
use agentpkg_store::on_both_backends;

on_both_backends!(
    ranges_resume_downloads_and_conditions_save_them,
    agents_download_by_coordinates_and_by_requirement,
    pipelines_upload_with_a_raw_put,
    a_raw_put_failure_leaves_nothing,
    yanked_packages_leave_lists_and_latest_but_stay_downloadable,
    version_history_and_requirement_filters,
    redirects_go_to_object_storage_when_it_can_serve,
    identical_bytes_are_stored_once,
    concurrent_uploads_and_deletes_of_the_same_bytes_never_lose_or_orphan_them,
    concurrent_uploads_of_the_same_coordinates_publish_exactly_one,
);

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn put(
    app: &TestApp,
    token: &str,
    path: impl AsRef<str>,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/api/v1/packages/{}", path.as_ref())))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::RequestBuilder {
    app.client.get(app.url(path)).bearer_auth(token)
}

async fn ranges_resume_downloads_and_conditions_save_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let bytes = data(3 * 1024 * 1024 + 17);
    let sha = hex::encode(Sha256::digest(&bytes));
    let res = put(&app, &token, "agent/1.0.0/linux/amd64", bytes.clone()).await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let url = format!("/api/v1/packages/{id}/download");
    let size = bytes.len();

    // A plain GET is a plain 200 that advertises ranges.
    let res = get(&app, &token, &url).await.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.bytes().await.unwrap().len(), size);

    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-1099", 100, 1099),
        (
            &format!("bytes={}-", size - 10) as &str,
            size - 10,
            size - 1,
        ),
        ("bytes=-500", size - 500, size - 1),
        (&format!("bytes=1000-{}", size * 2) as &str, 1000, size - 1),
    ] {
        let res = get(&app, &token, &url)
            .await
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206, "{range}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {start}-{end}/{size}").as_str(),
            "{range}"
        );
        assert_eq!(res.headers()["x-checksum-sha256"], sha.as_str());
        let body = res.bytes().await.unwrap();
        assert_eq!(body.as_ref(), &bytes[start..=end], "{range}");
    }

    // Out of range.
    let res = get(&app, &token, &url)
        .await
        .header("Range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "range_not_satisfiable"
    );

    // If-Range with the current ETag keeps the range; with another it gets everything.
    let etag = format!("\"{sha}\"");
    let res = get(&app, &token, &url)
        .await
        .header("Range", "bytes=10-19")
        .header("If-Range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    let res = get(&app, &token, &url)
        .await
        .header("Range", "bytes=10-19")
        .header("If-Range", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().len(), size);

    // If-None-Match with the ETag: nothing to send.
    let res = get(&app, &token, &url)
        .await
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert!(res.bytes().await.unwrap().is_empty());
    let res = get(&app, &token, &url)
        .await
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

async fn agents_download_by_coordinates_and_by_requirement(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let publisher = app.token_for("publisher").await;
    for v in ["1.4.0", "1.10.0", "1.9.3", "2.0.0", "2.1.0-rc.1"] {
        let res = put(
            &app,
            &publisher,
            &format!("otelcol/{v}/linux/arm64"),
            v.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(res.status(), 201, "{v}");
    }
    let agent = app.token_for("viewer").await;
    let fetch = |path: String| {
        let req = app.client.get(app.url(&path)).bearer_auth(&agent);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            (
                status,
                String::from_utf8_lossy(&res.bytes().await.unwrap()).into_owned(),
            )
        }
    };
    let base = "/api/v1/packages/otelcol";
    assert_eq!(
        fetch(format!("{base}/1.9.3/linux/arm64/download")).await,
        (StatusCode::OK, "1.9.3".into())
    );
    assert_eq!(
        fetch(format!("{base}/latest/linux/arm64/download")).await,
        (StatusCode::OK, "2.0.0".into())
    );
    assert_eq!(
        fetch(format!("{base}/latest/linux/arm64/download?version=%5E1.4")).await,
        (StatusCode::OK, "1.10.0".into())
    );
    assert_eq!(
        fetch(format!(
            "{base}/latest/linux/arm64/download?prerelease=true"
        ))
        .await,
        (StatusCode::OK, "2.1.0-rc.1".into())
    );
    assert_eq!(
        fetch(format!("{base}/latest/linux/arm64/download?version=%3E3"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(format!("{base}/1.9.4/linux/arm64/download")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(format!("{base}/latest/darwin/arm64/download"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fetch(format!("{base}/not-semver/linux/arm64/download"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        fetch(format!("{base}/latest/beos/arm64/download")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        fetch(format!("{base}/latest/linux/arm64/download?version=%5Ebad"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // Resumable by coordinates too.
    let res = app
        .client
        .get(app.url(&format!("{base}/1.10.0/linux/arm64/download")))
        .bearer_auth(&agent)
        .header("Range", "bytes=2-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"10.0");
}

async fn pipelines_upload_with_a_raw_put(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let bytes = data(12 * 1024 * 1024 + 5);
    let sha = hex::encode(Sha256::digest(&bytes));
    let res = app
        .client
        .put(app.url("/api/v1/packages/ci-agent/3.2.1+git.abc/windows/386?filename=agent.exe&description=nightly%20build"))
        .bearer_auth(&token)
        .header("X-Checksum-Sha256", &sha)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["version"], "3.2.1+git.abc");
    assert_eq!(p["platform"], "windows");
    assert_eq!(p["arch"], "386");
    assert_eq!(p["filename"], "agent.exe");
    assert_eq!(p["description"], "nightly build");
    assert_eq!(p["checksum"], sha);
    assert_eq!(p["file_size"], bytes.len() as u64);
    let res = app
        .get(
            "/api/v1/packages/ci-agent/3.2.1/windows/386/download",
            &token,
        )
        .await;
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"agent.exe\""
    );
    assert_eq!(hex::encode(Sha256::digest(res.bytes().await.unwrap())), sha);

    // The same coordinates again: refused before the body is read.
    let res = put(
        &app,
        &token,
        "ci-agent/3.2.1/windows/386",
        b"again".to_vec(),
    )
    .await;
    assert_eq!(res.status(), 409);
    // Bad coordinates and a path-like filename.
    let res = put(&app, &token, "ci-agent/3.2/windows/386", b"x".to_vec()).await;
    assert_eq!(res.status(), 400);
    let res = put(
        &app,
        &token,
        "ci-agent/3.2.2/windows/386?filename=..%2F..%2Fetc%2Fpasswd",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["field"],
        "filename"
    );
    // Viewers cannot publish.
    let viewer = app.token_for("viewer").await;
    let res = put(&app, &viewer, "ci-agent/9.9.9/linux/amd64", b"x".to_vec()).await;
    assert_eq!(res.status(), 403);
    let (keys, rows) = app.stored().await;
    assert_eq!((keys.len(), rows), (1, 1));
}

async fn a_raw_put_failure_leaves_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.upload.max_size_bytes = 1024 * 1024).await;
    let token = app.token_for("publisher").await;
    // Too large, announced: refused up front.
    let res = put(
        &app,
        &token,
        "a/1.0.0/linux/amd64",
        vec![0u8; 2 * 1024 * 1024],
    )
    .await;
    assert_eq!(res.status(), 413);
    // Too large, streamed without a length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..32).map(|_| Ok(vec![1u8; 64 * 1024])).collect();
    // A client of its own: the server closes this connection after refusing the body.
    let res = reqwest::Client::new()
        .put(app.url("/api/v1/packages/a/1.0.0/linux/amd64"))
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await;
    // The server may answer before it has read the whole stream, or close it.
    if let Ok(res) = res {
        assert_eq!(res.status(), 413);
    }
    app.assert_nothing_stored().await;
    // Checksum mismatch.
    let res = app
        .client
        .put(app.url("/api/v1/packages/a/1.0.0/linux/amd64"))
        .bearer_auth(&token)
        .header("X-Checksum-Sha256", hex::encode(Sha256::digest(b"other")))
        .body(b"these bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    app.assert_nothing_stored().await;
}

async fn yanked_packages_leave_lists_and_latest_but_stay_downloadable(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let publisher = app.token_for("publisher").await;
    for v in ["1.0.0", "1.1.0"] {
        assert_eq!(
            put(
                &app,
                &publisher,
                &format!("agent/{v}/linux/amd64"),
                v.as_bytes().to_vec()
            )
            .await
            .status(),
            201
        );
    }
    let latest = || async {
        let res = app
            .get(
                "/api/v1/packages/latest?name=agent&platform=linux&arch=amd64",
                &publisher,
            )
            .await;
        res.json::<Value>().await.unwrap()
    };
    let newest = latest().await;
    assert_eq!(newest["version"], "1.1.0");
    let id = newest["id"].as_i64().unwrap();
    let patch = |body: Value, token: String| {
        let req = app
            .client
            .patch(app.url(&format!("/api/v1/packages/{id}")))
            .bearer_auth(token)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    // Yank.
    let res = patch(serde_json::json!({"is_active": false}), publisher.clone()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["is_active"], false);
    assert_eq!(latest().await["version"], "1.0.0");
    // Only the yanked build matches: not found, saying why and what to do instead.
    let res = app
        .get(
            "/api/v1/packages/latest?name=agent&platform=linux&arch=amd64&version=%3D1.1.0",
            &publisher,
        )
        .await;
    let body = crate::common::expect_error(res, 404, "not_found").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("yanked builds are never the latest")),
        "{body}"
    );
    let listed = |query: &'static str| {
        let req = app
            .client
            .get(app.url(&format!("/api/v1/packages{query}")))
            .bearer_auth(&publisher);
        async move {
            let list: Vec<Value> = req.send().await.unwrap().json().await.unwrap();
            list.iter()
                .map(|p| p["version"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("").await, ["1.0.0"]);
    assert_eq!(listed("?include_yanked=true").await, ["1.1.0", "1.0.0"]);
    // The former name still works.
    assert_eq!(listed("?include_inactive=true").await, ["1.1.0", "1.0.0"]);
    assert_eq!(listed("?active=false").await, ["1.1.0"]);
    // Still downloadable by id and by exact coordinates: pinned agents keep working.
    for path in [
        format!("/api/v1/packages/{id}/download"),
        "/api/v1/packages/agent/1.1.0/linux/amd64/download".into(),
    ] {
        let res = app.get(&path, &publisher).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"1.1.0");
    }
    // Restore and describe; viewers may not; nonsense is refused.
    let res = patch(
        serde_json::json!({"is_active": true, "description": "fixed"}),
        publisher.clone(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["description"], "fixed");
    assert_eq!(latest().await["version"], "1.1.0");
    let viewer = app.token_for("viewer").await;
    assert_eq!(
        patch(serde_json::json!({"is_active": false}), viewer)
            .await
            .status(),
        403
    );
    assert_eq!(
        patch(serde_json::json!({}), publisher.clone())
            .await
            .status(),
        400
    );
    assert_eq!(
        patch(serde_json::json!({"is_active": "no"}), publisher.clone())
            .await
            .status(),
        400
    );
    assert_eq!(
        patch(serde_json::json!({"name": "x"}), publisher.clone())
            .await
            .status(),
        400
    );
}

async fn version_history_and_requirement_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    for (v, platform) in [
        ("1.9.0", "linux"),
        ("1.10.0", "linux"),
        ("1.10.0", "darwin"),
        ("2.0.0-rc.1", "linux"),
    ] {
        assert_eq!(
            put(
                &app,
                &token,
                &format!("agent/{v}/{platform}/amd64"),
                v.as_bytes().to_vec()
            )
            .await
            .status(),
            201
        );
    }
    let res = app.get("/api/v1/packages/agent/versions", &token).await;
    assert_eq!(res.status(), 200);
    let history: Vec<Value> = res.json().await.unwrap();
    let summary: Vec<(String, usize)> = history
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_owned(),
                v["packages"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("2.0.0-rc.1".to_owned(), 1),
            ("1.10.0".to_owned(), 2),
            ("1.9.0".to_owned(), 1)
        ]
    );
    assert_eq!(history[0]["prerelease"], true);
    let res = app
        .get("/api/v1/packages/nothing-here/versions", &token)
        .await;
    assert_eq!(res.status(), 404);

    let res = app
        .get(
            "/api/v1/packages?name=agent&version=%3E%3D1.10&per_page=1",
            &token,
        )
        .await;
    assert_eq!(res.headers()["x-total-count"], "3");
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    assert!(link.contains("version=%3E%3D1.10"), "{link}");
    assert!(link.contains("rel=\"next\""), "{link}");
    let page: Vec<Value> = res.json().await.unwrap();
    assert_eq!(page[0]["version"], "2.0.0-rc.1");
    let res = app.get("/api/v1/packages?version=%5E1", &token).await;
    assert_eq!(res.status(), 400, "a requirement needs a name");
}

async fn redirects_go_to_object_storage_when_it_can_serve(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| s.download.presign_ttl_secs = 120).await;
    let token = app.token_for("publisher").await;
    let bytes = data(100_000);
    let sha = hex::encode(Sha256::digest(&bytes));
    assert_eq!(
        put(&app, &token, "agent/1.0.0/linux/amd64", bytes.clone())
            .await
            .status(),
        201
    );
    let res = app
        .get(
            "/api/v1/packages/agent/1.0.0/linux/amd64/download?redirect=true",
            &token,
        )
        .await;
    match backend {
        Backend::Production => {
            assert_eq!(res.status(), 307);
            assert_eq!(res.headers()["x-checksum-sha256"], sha.as_str());
            assert_eq!(res.headers()["etag"], format!("\"{sha}\"").as_str());
            let location = res.headers()["location"].to_str().unwrap().to_owned();
            assert!(location.contains("X-Amz-Expires=120"), "{location}");
            // The presigned URL serves the bytes without our token.
            let direct = reqwest::get(&location).await.unwrap();
            assert_eq!(direct.status(), 200);
            assert_eq!(
                hex::encode(Sha256::digest(direct.bytes().await.unwrap())),
                sha
            );
        }
        // A directory cannot presign: the server streams.
        Backend::Embedded => {
            assert_eq!(res.status(), 200);
            assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice());
        }
    }
    // Without asking, it streams.
    let res = app
        .get("/api/v1/packages/agent/1.0.0/linux/amd64/download", &token)
        .await;
    assert_eq!(res.status(), 200);
}

async fn identical_bytes_are_stored_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("admin").await;
    let bytes = data(9 * 1024 * 1024);
    let mut ids = Vec::new();
    for path in [
        "a/1.0.0/linux/amd64",
        "a/1.0.0/linux/arm64",
        "b/0.1.0/darwin/arm64",
    ] {
        let res = put(&app, &token, path, bytes.clone()).await;
        assert_eq!(res.status(), 201, "{path}");
        ids.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    let (keys, rows) = app.stored().await;
    assert_eq!((keys.len(), rows), (1, 3), "one object for three packages");
    for id in &ids[..2] {
        let res = app.delete(&format!("/api/v1/packages/{id}"), &token).await;
        assert_eq!(res.status(), 204);
    }
    assert_eq!(
        app.stored().await,
        (keys.clone(), 1),
        "the last package keeps the object"
    );
    let res = app
        .get(&format!("/api/v1/packages/{}/download", ids[2]), &token)
        .await;
    assert_eq!(res.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let res = app
        .delete(&format!("/api/v1/packages/{}", ids[2]), &token)
        .await;
    assert_eq!(res.status(), 204);
    app.assert_nothing_stored().await;
}

async fn concurrent_uploads_and_deletes_of_the_same_bytes_never_lose_or_orphan_them(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("admin").await;
    let bytes = data(64 * 1024);
    let sha = hex::encode(Sha256::digest(&bytes));
    // Ten uploads of the same bytes at once.
    let uploads = (0..10).map(|i| {
        put(
            &app,
            &token,
            format!("first-{i}/1.0.0/linux/amd64"),
            bytes.clone(),
        )
    });
    let mut ids = Vec::new();
    for res in futures_util::future::join_all(uploads).await {
        assert_eq!(res.status(), 201);
        ids.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    assert_eq!(app.stored().await.0.len(), 1);
    // Delete them all while ten more uploads of the same bytes arrive.
    let deletes = ids.iter().map(|id| {
        app.client
            .delete(app.url(&format!("/api/v1/packages/{id}")))
            .bearer_auth(&token)
            .send()
    });
    let uploads = (0..10).map(|i| {
        put(
            &app,
            &token,
            format!("second-{i}/1.0.0/linux/amd64"),
            bytes.clone(),
        )
    });
    let (deleted, uploaded) = futures_util::future::join(
        futures_util::future::join_all(deletes),
        futures_util::future::join_all(uploads),
    )
    .await;
    assert!(deleted.iter().all(|r| r.as_ref().unwrap().status() == 204));
    let mut survivors = Vec::new();
    for res in uploaded {
        assert_eq!(res.status(), 201);
        survivors.push(res.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
    }
    // Every surviving package serves its bytes, and exactly one object backs them all.
    for id in &survivors {
        let res = app
            .get(&format!("/api/v1/packages/{id}/download"), &token)
            .await;
        assert_eq!(res.status(), 200, "package {id} lost its bytes");
        assert_eq!(hex::encode(Sha256::digest(res.bytes().await.unwrap())), sha);
    }
    let (keys, rows) = app.stored().await;
    assert_eq!((keys.len(), rows), (1, 10), "objects {keys:?}");
}

async fn concurrent_uploads_of_the_same_coordinates_publish_exactly_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token_for("publisher").await;
    let uploads = (0..50u8).map(|i| put(&app, &token, "race/1.0.0/linux/amd64", vec![i; 300_000]));
    let statuses: Vec<u16> = futures_util::future::join_all(uploads)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        49,
        "{statuses:?}"
    );
    let (keys, rows) = app.stored().await;
    assert_eq!((keys.len(), rows), (1, 1), "objects {keys:?}");
}
