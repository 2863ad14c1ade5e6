//! Package reads kept in memory: a change made through a replica is seen there at once,
//! and on another replica (over the same database) once it reads the package revision —
//! each kept read being trusted for an hour here, so that nothing but those two can make a
//! change show.

use std::time::{Duration, Instant};

use agentpkg_model::{Description, PackagePatch};
use agentpkg_store::PackageStore;
use agentpkg_store::on_both_backends;
use agentpkg_store::testing::Backend;
use serde_json::{Value, json};

use crate::common::TestApp;

on_both_backends!(
    a_change_through_this_replica_is_read_at_once,
    a_change_through_another_replica_is_read_once_the_revision_moves,
);

const HOUR_MS: u64 = 3_600_000;

/// Everything a reader can ask of `name` 1.x on linux/amd64, as this replica answers:
/// the latest build's version, by id (status and description), by coordinates (is_active)
/// and the versions' list.
struct Reads {
    latest: Value,
    by_id: (u16, Value),
    by_coordinates: Value,
    versions: Value,
}

async fn read(base: &str, app: &TestApp, token: &str, id: &Value, coords: &str) -> Reads {
    let get = |path: String| {
        let req = app.client.get(format!("{base}{path}")).bearer_auth(token);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap())
        }
    };
    let (_, latest) =
        get("/api/v1/packages/latest?name=cached&platform=linux&arch=amd64".into()).await;
    let (status, one) = get(format!("/api/v1/packages/{id}")).await;
    let (_, found) = get(format!("/api/v1/packages/{coords}")).await;
    let (_, versions) = get("/api/v1/packages/cached/versions".into()).await;
    Reads {
        latest: latest
            .get("version")
            .cloned()
            .unwrap_or(latest["error"]["code"].clone()),
        by_id: (
            status,
            one.get("description").cloned().unwrap_or(Value::Null),
        ),
        by_coordinates: found
            .get("is_active")
            .cloned()
            .unwrap_or(found["error"]["code"].clone()),
        versions: versions
            .as_array()
            .map(|v| Value::from(v.iter().map(|e| e["version"].clone()).collect::<Vec<_>>()))
            .unwrap_or(versions["error"]["code"].clone()),
    }
}

async fn patch(base: &str, app: &TestApp, token: &str, id: &Value, body: Value) {
    let res = app
        .client
        .patch(format!("{base}/api/v1/packages/{id}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

/// Package reads by `read` and `outcome` so far, from the server's metrics.
async fn counted(app: &TestApp, admin: &str, read: &str, outcome: &str) -> u64 {
    let series = format!("agentpkg_package_reads_total{{read=\"{read}\",outcome=\"{outcome}\"}}");
    app.metric(admin, &series).await
}

async fn a_change_through_this_replica_is_read_at_once(backend: Backend) {
    // The revision is read once an hour: only this replica's own changes can show.
    let app = TestApp::spawn_with(backend, |s| {
        s.database.read_cache_watch_ms = HOUR_MS;
        s.database.read_cache_max_age_ms = HOUR_MS;
    })
    .await;
    let admin = app.admin_token().await;
    let base = app.base.clone();
    let first = app
        .publish(&admin, "cached/1.0.0/linux/amd64", b"one")
        .await;
    let id = &first["id"];
    let coords = "cached/1.0.0/linux/amd64";
    let before = read(&base, &app, &admin, id, coords).await;
    assert_eq!(before.latest, "1.0.0");
    assert_eq!(before.versions, json!(["1.0.0"]));
    // The metrics tell what memory answered: the first read of each kind asked the
    // database, the same reads again did not.
    let kinds = ["id", "coordinates", "latest", "versions"];
    for kind in kinds {
        assert_eq!(counted(&app, &admin, kind, "miss").await, 1, "{kind}");
        assert_eq!(counted(&app, &admin, kind, "hit").await, 0, "{kind}");
    }
    read(&base, &app, &admin, id, coords).await;
    for kind in kinds {
        assert_eq!(counted(&app, &admin, kind, "miss").await, 1, "{kind}");
        assert_eq!(counted(&app, &admin, kind, "hit").await, 1, "{kind}");
    }

    // Kept: a change made in the database behind the server's back does not show (until
    // the revision is read, an hour from now)...
    let behind = PackagePatch {
        description: Some(Description::parse("behind its back").unwrap()),
        ..PackagePatch::default()
    };
    let id_n = id.as_i64().unwrap();
    app.store
        .update_package(id_n, behind)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        read(&base, &app, &admin, id, coords).await.by_id,
        (200, json!(""))
    );

    // ...but a publish through it is read at once, and what was kept is read again.
    app.publish(&admin, "cached/1.1.0/linux/amd64", b"two")
        .await;
    let after = read(&base, &app, &admin, id, coords).await;
    assert_eq!(after.latest, "1.1.0");
    assert_eq!(after.versions, json!(["1.1.0", "1.0.0"]));
    assert_eq!(after.by_id, (200, json!("behind its back")));

    // A description, then a yank of the newer one.
    patch(&base, &app, &admin, id, json!({"description": "first"})).await;
    assert_eq!(
        read(&base, &app, &admin, id, coords).await.by_id,
        (200, json!("first"))
    );
    let newer = app
        .get("/api/v1/packages/cached/1.1.0/linux/amd64", &admin)
        .await
        .json::<Value>()
        .await
        .unwrap();
    patch(
        &base,
        &app,
        &admin,
        &newer["id"],
        json!({"is_active": false}),
    )
    .await;
    assert_eq!(read(&base, &app, &admin, id, coords).await.latest, "1.0.0");

    // A delete: gone by id and coordinates, and the name with no active build left.
    patch(
        &base,
        &app,
        &admin,
        &newer["id"],
        json!({"is_active": true}),
    )
    .await;
    let res = app.delete(&format!("/api/v1/packages/{id}"), &admin).await;
    assert_eq!(res.status(), 204);
    let gone = read(&base, &app, &admin, id, coords).await;
    assert_eq!(gone.by_id.0, 404);
    assert_eq!(gone.by_coordinates, "not_found");
    assert_eq!(gone.versions, json!(["1.1.0"]));
    assert_eq!(gone.latest, "1.1.0");
}

async fn a_change_through_another_replica_is_read_once_the_revision_moves(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.database.read_cache_watch_ms = 100;
        s.database.read_cache_max_age_ms = HOUR_MS;
    })
    .await;
    let admin = app.admin_token().await;
    let first = app
        .publish(&admin, "cached/1.0.0/linux/amd64", b"one")
        .await;
    let id = &first["id"];
    let coords = "cached/1.0.0/linux/amd64";
    // A second replica over the same database and storage; what it reads, it keeps.
    let second = agentpkg_server::Application::build(app.settings.clone())
        .await
        .unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    let kept = read(&other, &app, &admin, id, coords).await;
    assert_eq!(
        (kept.latest, kept.by_id, kept.by_coordinates, kept.versions),
        (
            json!("1.0.0"),
            (200, json!("")),
            json!(true),
            json!(["1.0.0"])
        )
    );

    // Each change through the first replica shows on the second within a few readings of
    // the revision (the bound is generous: the test asserts that it shows at all).
    let until = |what: &'static str, check: fn(&Reads) -> bool| {
        let (app, admin, other) = (&app, &admin, &other);
        async move {
            let started = Instant::now();
            loop {
                let now = read(other, app, admin, id, coords).await;
                if check(&now) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{what} never showed on the other replica: latest {}, by id {:?}, by coordinates {}, versions {}",
                    now.latest,
                    now.by_id,
                    now.by_coordinates,
                    now.versions
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    app.publish(&admin, "cached/1.1.0/linux/amd64", b"two")
        .await;
    until("a publish", |r| {
        r.latest == "1.1.0" && r.versions == json!(["1.1.0", "1.0.0"])
    })
    .await;
    patch(
        &app.base,
        &app,
        &admin,
        id,
        json!({"description": "edited"}),
    )
    .await;
    until("a description", |r| r.by_id == (200, json!("edited"))).await;
    patch(&app.base, &app, &admin, id, json!({"is_active": false})).await;
    until("a yank", |r| r.by_coordinates == false).await;
    let res = app.delete(&format!("/api/v1/packages/{id}"), &admin).await;
    assert_eq!(res.status(), 204);
    until("a delete", |r| {
        r.by_id.0 == 404 && r.by_coordinates == "not_found" && r.versions == json!(["1.1.0"])
    })
    .await;
    handle.stop(true).await;
}
