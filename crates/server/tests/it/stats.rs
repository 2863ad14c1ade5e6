//! Download statistics, storage usage and retention, on both backends: the counting
//! definition over real downloads, two replicas counting into one database, the flush at
//! SIGTERM, top lists and daily series over a generated 90-day history, storage figures
//! against the bucket's own listing, and every retention rule.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use agentpkg_model::DownloadIncrement;
use agentpkg_server::Application;
use agentpkg_store::testing::Backend;
use agentpkg_store::{StatsStore, on_both_backends};
use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};

use crate::common::{TestApp, create_token, expect_error};

on_both_backends!(
    downloads_are_counted_by_the_definition,
    top_lists_and_daily_series_follow_a_generated_90_day_history,
    storage_figures_match_the_listing_of_the_bucket,
    every_retention_rule_deletes_what_its_dry_run_listed,
    bad_statistics_questions_are_refused_by_field_and_role,
    a_token_limited_to_some_names_runs_retention_on_those_names_only,
);

/// Counts flushed every second; reports never cached.
async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        s.stats.flush_secs = 1;
        s.stats.cache_secs = 0;
        s.stats.gauge_refresh_secs = 1;
    })
    .await
}

async fn package(app: &TestApp, token: &str, id: i64) -> Value {
    let res = app.get(&format!("/api/v1/packages/{id}"), token).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// Waits (bounded) until the package's `download_count` is `expected`, then one more
/// flush interval to see that nothing more arrives.
async fn counted(app: &TestApp, token: &str, id: i64, expected: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = package(app, token, id).await;
        if p["download_count"] == expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let p = package(app, token, id).await;
    assert_eq!(p["download_count"], expected, "{p}");
    p
}

async fn drain(res: reqwest::Response) -> usize {
    res.bytes().await.unwrap().len()
}

async fn downloads_are_counted_by_the_definition(backend: Backend) {
    let app = spawn(backend).await;
    let admin = app.admin_token().await;
    let size = 1000usize;
    let created = app
        .publish(&admin, "counted/1.0.0/linux/amd64", vec![7u8; size])
        .await;
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["download_count"], 0);
    assert_eq!(created["last_downloaded_at"], Value::Null);
    let by_id = format!("/api/v1/packages/{id}/download");
    let mut downloads = 0u64;
    let mut bytes = 0u64;

    // Whole bodies, by id, by coordinates and as the latest: one download each.
    for path in [
        by_id.clone(),
        "/api/v1/packages/counted/1.0.0/linux/amd64/download".into(),
        "/api/v1/packages/counted/latest/linux/amd64/download".into(),
    ] {
        let res = app.get(&path, &admin).await;
        assert_eq!(res.status(), 200);
        assert_eq!(drain(res).await, size);
        downloads += 1;
        bytes += size as u64;
    }
    // A range from the first byte is a download; a later one is a resumption (bytes only).
    for (range, is_download) in [("bytes=0-99", true), ("bytes=100-299", false)] {
        let res = app
            .client
            .get(app.url(&by_id))
            .bearer_auth(&admin)
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 206);
        bytes += drain(res).await as u64;
        downloads += u64::from(is_download);
    }
    // A 304 sends nothing and is not a download.
    let etag = created["checksum"].as_str().unwrap();
    let res = app
        .client
        .get(app.url(&by_id))
        .bearer_auth(&admin)
        .header("If-None-Match", format!("\"{etag}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    // A redirect to S3 is a download of the whole package (storage sends it); on the
    // embedded default the server streams it itself.
    let res = app.get(&format!("{by_id}?redirect=true"), &admin).await;
    match backend {
        Backend::Production => assert_eq!(res.status(), 307),
        Backend::Embedded => {
            assert_eq!(res.status(), 200);
            drain(res).await;
        }
    }
    downloads += 1;
    bytes += size as u64;
    // A download dropped after its head still counts as one, with what was sent.
    let res = app.get(&by_id, &admin).await;
    assert_eq!(res.status(), 200);
    drop(res);
    downloads += 1;

    let p = counted(&app, &admin, id, downloads).await;
    let last =
        chrono::DateTime::parse_from_rfc3339(p["last_downloaded_at"].as_str().unwrap()).unwrap();
    assert!((Utc::now() - last.with_timezone(&Utc)).num_seconds() < 60);

    let res = app
        .get(&format!("/api/v1/packages/{id}/stats?days=3"), &admin)
        .await;
    assert_eq!(res.status(), 200);
    let series: Value = res.json().await.unwrap();
    let days = series["days"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    let today = Utc::now().date_naive().to_string();
    assert_eq!(days[2]["day"], today.as_str());
    assert_eq!(days[2]["downloads"], downloads);
    assert_eq!(
        (days[0]["downloads"].as_u64(), days[1]["downloads"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(series["downloads"], downloads);
    assert_eq!(series["download_count"], downloads);
    // The dropped download sent what the connection took before it closed: at least
    // nothing, at most the package.
    let sent = series["bytes"].as_u64().unwrap();
    assert!(
        (bytes..=bytes + size as u64).contains(&sent),
        "bytes {sent}, expected {bytes} to {}",
        bytes + size as u64
    );
}

async fn top_lists_and_daily_series_follow_a_generated_90_day_history(backend: Backend) {
    let app = spawn(backend).await;
    let admin = app.admin_token().await;
    // Six packages: three names, two versions, two architectures.
    let mut ids: Vec<(i64, &str, &str, &str)> = Vec::new();
    for (i, (name, version, arch)) in [
        ("alpha", "1.0.0", "amd64"),
        ("alpha", "1.1.0", "amd64"),
        ("alpha", "1.1.0", "arm64"),
        ("beta", "2.0.0", "amd64"),
        ("gamma", "0.1.0", "arm64"),
        ("gamma", "0.2.0", "amd64"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = app
            .publish(
                &admin,
                &format!("{name}/{version}/linux/{arch}"),
                vec![i as u8; 10 + i],
            )
            .await;
        ids.push((p["id"].as_i64().unwrap(), name, version, arch));
    }
    // A deterministic history: package k gets (day * (k + 3) + k) % 17 downloads on the
    // day `day` days ago, for 90 days.
    let today = Utc::now().date_naive();
    let history = |k: usize, ago: u64| ((ago as usize * (k + 3) + k) % 17) as u64;
    let mut increments = Vec::new();
    for (k, (id, ..)) in ids.iter().enumerate() {
        for ago in 0..90u64 {
            let n = history(k, ago);
            if n > 0 {
                increments.push(DownloadIncrement {
                    package_id: *id,
                    day: today - chrono::Days::new(ago),
                    downloads: n,
                    bytes: n * 100,
                    last_at: Utc::now(),
                });
            }
        }
    }
    // In two halves, as two flushes would add them.
    let half = increments.len() / 2;
    let applied = app
        .store
        .add_downloads(increments[..half].to_vec())
        .await
        .unwrap()
        + app
            .store
            .add_downloads(increments[half..].to_vec())
            .await
            .unwrap();
    assert_eq!(applied as usize, increments.len());

    for (days, arch) in [(7u64, None), (30, None), (90, None), (30, Some("arm64"))] {
        let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_version: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (k, (_, name, version, a)) in ids.iter().enumerate() {
            if arch.is_some_and(|x| x != *a) {
                continue;
            }
            let n: u64 = (0..days).map(|ago| history(k, ago)).sum();
            *by_name.entry(name).or_default() += n;
            *by_version.entry((name, version)).or_default() += n;
        }
        let mut expected_names: Vec<(String, u64)> = by_name
            .into_iter()
            .map(|(n, c)| (n.to_owned(), c))
            .collect();
        expected_names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut expected_versions: Vec<(String, u64)> = by_version
            .into_iter()
            .map(|((n, v), c)| (format!("{n}@{v}"), c))
            .collect();
        expected_versions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        expected_versions.truncate(3);

        let mut path = format!("/api/v1/stats/top?days={days}&limit=3");
        if let Some(arch) = arch {
            path.push_str(&format!("&arch={arch}&platform=linux"));
        }
        let res = app.get(&path, &admin).await;
        assert_eq!(res.status(), 200);
        let top: Value = res.json().await.unwrap();
        let names: Vec<(String, u64)> = top["by_name"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["downloads"].as_u64().unwrap(),
                )
            })
            .collect();
        expected_names.truncate(3);
        assert_eq!(names, expected_names, "by name over {days} days, {arch:?}");
        let versions: Vec<(String, u64)> = top["by_version"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    format!(
                        "{}@{}",
                        e["name"].as_str().unwrap(),
                        e["version"].as_str().unwrap()
                    ),
                    e["downloads"].as_u64().unwrap(),
                )
            })
            .collect();
        // Ties sort by name alone in the API; compare as multisets of the same counts.
        assert_eq!(
            versions.iter().map(|v| v.1).collect::<Vec<_>>(),
            expected_versions.iter().map(|v| v.1).collect::<Vec<_>>(),
            "by version over {days} days, {arch:?}: {versions:?} against {expected_versions:?}"
        );
        for v in &versions {
            assert!(
                expected_versions.contains(v) || expected_versions.iter().any(|e| e.1 == v.1),
                "{v:?} not among {expected_versions:?}"
            );
        }
        assert_eq!(
            top["first_day"],
            (today - chrono::Days::new(days - 1)).to_string().as_str()
        );
    }

    // The daily series of package 2 over 90 days: every day, generated values.
    let (id, ..) = ids[2];
    let res = app
        .get(&format!("/api/v1/packages/{id}/stats?days=90"), &admin)
        .await;
    let series: Value = res.json().await.unwrap();
    let days = series["days"].as_array().unwrap();
    assert_eq!(days.len(), 90);
    for (i, d) in days.iter().enumerate() {
        let ago = 89 - i as u64;
        assert_eq!(
            d["day"],
            (today - chrono::Days::new(ago)).to_string().as_str()
        );
        assert_eq!(d["downloads"].as_u64(), Some(history(2, ago)), "{d}");
        assert_eq!(d["bytes"].as_u64(), Some(history(2, ago) * 100));
    }
    let total: u64 = (0..90).map(|ago| history(2, ago)).sum();
    assert_eq!(series["downloads"], total);
    // The package's own total moved with the increments.
    assert_eq!(package(&app, &admin, id).await["download_count"], total);

    // Increments of a package deleted since are dropped, the rest written.
    let (gone, ..) = ids[0];
    assert_eq!(
        app.delete(&format!("/api/v1/packages/{gone}"), &admin)
            .await
            .status(),
        204
    );
    let applied = app
        .store
        .add_downloads(vec![
            DownloadIncrement {
                package_id: gone,
                day: today,
                downloads: 5,
                bytes: 5,
                last_at: Utc::now(),
            },
            DownloadIncrement {
                package_id: id,
                day: today,
                downloads: 5,
                bytes: 5,
                last_at: Utc::now(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(applied, 1);
    assert_eq!(package(&app, &admin, id).await["download_count"], total + 5);
}

/// Every object in the bucket (or directory) and its size.
async fn listed(app: &TestApp) -> HashMap<String, u64> {
    app.storage
        .list_objects()
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect()
}

async fn storage_figures_match_the_listing_of_the_bucket(backend: Backend) {
    let app = spawn(backend).await;
    let admin = app.admin_token().await;
    app.publish(&admin, "big/1.0.0/linux/amd64", vec![1u8; 5000])
        .await;
    // The same bytes under other coordinates (an admin's republish): one object,
    // referenced twice.
    app.publish(
        &admin,
        "big/1.0.1/linux/amd64?republish=true",
        vec![1u8; 5000],
    )
    .await;
    app.publish(&admin, "small/1.0.0/linux/amd64", vec![2u8; 300])
        .await;
    let yanked = app
        .publish(&admin, "small/0.9.0/linux/amd64", vec![3u8; 200])
        .await;
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/packages/{}", yanked["id"])))
        .bearer_auth(&admin)
        .json(&json!({ "is_active": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(body["yanked_at"].is_string(), "{body}");

    let objects = listed(&app).await;
    let res = app
        .get("/api/v1/stats/storage?names=10&largest=2", &admin)
        .await;
    assert_eq!(res.status(), 200);
    let usage: Value = res.json().await.unwrap();
    assert_eq!(
        usage["objects"],
        objects.len() as u64,
        "{usage} against {objects:?}"
    );
    assert_eq!(usage["stored_bytes"], objects.values().sum::<u64>());
    assert_eq!(usage["referenced_bytes"], 10_500);
    assert_eq!(usage["deduplicated_bytes"], 5000);
    assert_eq!(
        (
            usage["active_packages"].as_u64(),
            usage["yanked_packages"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert_eq!(usage["yanked_bytes"], 200);
    assert_eq!(usage["names_total"], 2);
    assert_eq!(usage["names"][0]["name"], "big");
    assert_eq!(usage["names"][0]["bytes"], 10_000);
    assert_eq!(usage["names"][1]["yanked_bytes"], 200);
    let largest: Vec<u64> = usage["largest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file_size"].as_u64().unwrap())
        .collect();
    assert_eq!(largest, vec![5000, 5000]);

    // The gauges agree, refreshed in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = [
        format!("agentpkg_stored_objects {}", objects.len()),
        format!("agentpkg_stored_bytes {}", objects.values().sum::<u64>()),
        "agentpkg_packages{state=\"active\"} 3".to_owned(),
        "agentpkg_packages{state=\"yanked\"} 1".to_owned(),
    ];
    loop {
        let text = app.get("/metrics", &admin).await.text().await.unwrap();
        if expected.iter().all(|e| text.lines().any(|l| l == e)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges never showed {expected:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs SQL on the test's database directly (to age rows).
fn sql(app: &TestApp, statement: &str) {
    use diesel::{Connection, RunQueryDsl};
    match app.backend {
        Backend::Production => {
            let mut c = diesel::PgConnection::establish(&app.db_url()).unwrap();
            diesel::sql_query(statement).execute(&mut c).unwrap();
        }
        Backend::Embedded => {
            let mut c = diesel::SqliteConnection::establish(&app.db_url()).unwrap();
            diesel::sql_query(statement).execute(&mut c).unwrap();
        }
    }
}

async fn run(app: &TestApp, token: &str, dry_run: bool, policies: Option<Value>) -> Value {
    let mut req = app
        .client
        .post(app.url(&format!("/api/v1/retention/run?dry_run={dry_run}")))
        .bearer_auth(token);
    if let Some(policies) = policies {
        req = req.json(&json!({ "policies": policies }));
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

fn ids(report: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = report["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

async fn every_retention_rule_deletes_what_its_dry_run_listed(backend: Backend) {
    let app = TestApp::spawn_with(backend, |s| {
        s.stats.cache_secs = 0;
        // The configured policy: what a run without a body applies.
        s.retention.policies = vec![agentpkg_model::RetentionPolicySpec {
            rule: "keep_newest".into(),
            versions: Some(2),
            days: None,
            names: vec!["keep-*".into()],
        }];
    })
    .await;
    let admin = app.admin_token().await;
    let mut id = HashMap::new();
    // keep-a: five versions on amd64 (the newest yanked), one on arm64.
    for (coords, byte) in [
        ("keep-a/1.0.0/linux/amd64", 1u8),
        ("keep-a/1.1.0/linux/amd64", 2),
        ("keep-a/1.10.0/linux/amd64", 3),
        ("keep-a/1.2.0/linux/amd64", 4),
        ("keep-a/2.0.0/linux/amd64", 5),
        ("keep-a/1.0.0/linux/arm64", 6),
        // old-b: fetched long ago, never fetched, yanked long ago, yanked recently.
        ("old-b/1.0.0/linux/amd64", 7),
        ("old-b/2.0.0/linux/amd64", 8),
        ("old-b/3.0.0/linux/amd64", 9),
        ("old-b/4.0.0/linux/amd64", 10),
        // The bytes of keep-a 1.0.0 again: its object must stay while this refers to it.
        ("shared/1.0.0/linux/amd64", 1),
    ] {
        let p = app
            .publish(&admin, coords, vec![byte; 100 + usize::from(byte)])
            .await;
        // Keyed "name/version" on amd64, and "name/version/arm64".
        let key = coords.replace("/linux/amd64", "").replace("/linux/", "/");
        id.insert(key, p["id"].as_i64().unwrap());
    }
    let yank = |key: &str| id[key];
    for key in ["keep-a/2.0.0", "old-b/3.0.0", "old-b/4.0.0"] {
        let res = app
            .client
            .patch(app.url(&format!("/api/v1/packages/{}", yank(key))))
            .bearer_auth(&admin)
            .json(&json!({ "is_active": false }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // Age the history: uploads 200 days ago; old-b 1.0.0 last fetched 100 days ago,
    // old-b 2.0.0 fetched yesterday; old-b 3.0.0 yanked 60 days ago, 4.0.0 just now.
    let ago = |days: i64| {
        (Utc::now() - chrono::Duration::days(days))
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    sql(
        &app,
        &format!("UPDATE packages SET created_at = '{}'", ago(200)),
    );
    sql(
        &app,
        &format!(
            "UPDATE packages SET last_downloaded_at = '{}' WHERE id = {}",
            ago(100),
            id["old-b/1.0.0"]
        ),
    );
    sql(
        &app,
        &format!(
            "UPDATE packages SET last_downloaded_at = '{}' WHERE id = {}",
            ago(1),
            id["old-b/2.0.0"]
        ),
    );
    sql(
        &app,
        &format!(
            "UPDATE packages SET yanked_at = '{}' WHERE id = {}",
            ago(60),
            id["old-b/3.0.0"]
        ),
    );

    // Rule by rule, each dry run against what the rule means.
    let keep = json!([{ "rule": "keep_newest", "versions": 2, "names": ["keep-*"] }]);
    let dry = run(&app, &admin, true, Some(keep.clone())).await;
    // amd64 newest first: 2.0.0 (yanked), 1.10.0, 1.2.0, 1.1.0, 1.0.0. Keeping two keeps
    // 2.0.0 and 1.10.0; arm64 has one version.
    let mut expected = vec![id["keep-a/1.2.0"], id["keep-a/1.1.0"], id["keep-a/1.0.0"]];
    expected.sort_unstable();
    assert_eq!(ids(&dry), expected, "{dry}");
    assert_eq!(dry["bytes_referenced"], 104 + 102 + 101);
    // keep-a 1.0.0's bytes stay for `shared`.
    assert_eq!(dry["bytes_freed"], 104 + 102);

    let yanked = json!([{ "rule": "yanked_older_than", "days": 30 }]);
    assert_eq!(
        ids(&run(&app, &admin, true, Some(yanked)).await),
        vec![id["old-b/3.0.0"]]
    );

    let idle = json!([{ "rule": "not_downloaded_for", "days": 30, "names": ["old-*"] }]);
    // 1.0.0 (fetched 100 days ago) and the yanked ones never fetched; 2.0.0 is the newest
    // active version, and was fetched yesterday anyway.
    let mut expected_idle = vec![id["old-b/1.0.0"], id["old-b/3.0.0"], id["old-b/4.0.0"]];
    expected_idle.sort_unstable();
    assert_eq!(
        ids(&run(&app, &admin, true, Some(idle)).await),
        expected_idle
    );

    // Every package is idle for 30 days by its upload date alone except old-b 2.0.0; the
    // newest active version of each group stays whatever the rules say.
    let everything = json!([{ "rule": "keep_newest", "versions": 1 }, { "rule": "not_downloaded_for", "days": 1 }]);
    let all = run(&app, &admin, true, Some(everything)).await;
    let mut survivors: Vec<i64> = id
        .values()
        .filter(|i| !ids(&all).contains(i))
        .copied()
        .collect();
    survivors.sort_unstable();
    let mut newest_active = vec![
        id["keep-a/1.10.0"],
        id["keep-a/1.0.0/arm64"],
        id["old-b/2.0.0"],
        id["shared/1.0.0"],
    ];
    newest_active.sort_unstable();
    assert_eq!(survivors, newest_active, "{all}");

    // The configured policy (no body): its dry run, then the real run, delete the same.
    let dry = run(&app, &admin, true, None).await;
    assert_eq!(dry["policies"][0]["rule"], "keep_newest");
    let keys_before = listed(&app).await;
    let real = run(&app, &admin, false, None).await;
    assert_eq!(ids(&real), ids(&dry));
    assert_eq!(real["bytes_freed"], dry["bytes_freed"]);
    assert_eq!(real["skipped"], json!([]));
    for deleted in ids(&real) {
        assert_eq!(
            app.get(&format!("/api/v1/packages/{deleted}"), &admin)
                .await
                .status(),
            404
        );
    }
    // Objects: two gone, the shared one still there and still downloadable.
    let keys_after = listed(&app).await;
    assert_eq!(
        keys_before.len() - keys_after.len(),
        2,
        "{keys_before:?} {keys_after:?}"
    );
    let res = app
        .get("/api/v1/packages/shared/1.0.0/linux/amd64/download", &admin)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        vec![1u8; 101].as_slice()
    );
    // Every deletion is in the audit log, by the admin who asked.
    let audit: Value = app
        .get("/api/v1/audit?action=delete&package=keep-a", &admin)
        .await
        .json()
        .await
        .unwrap();
    let events = audit.as_array().unwrap();
    assert_eq!(events.len(), 3, "{audit}");
    assert!(
        events.iter().all(|e| e["actor"] == "admin"
            && e["detail"].as_str().unwrap().contains("retention policy 0"))
    );
    // Nothing left to do.
    assert_eq!(ids(&run(&app, &admin, true, None).await), Vec::<i64>::new());
}

async fn bad_statistics_questions_are_refused_by_field_and_role(backend: Backend) {
    let app = spawn(backend).await;
    let admin = app.admin_token().await;
    let viewer = app.token_for("viewer").await;
    let p = app
        .publish(&admin, "q/1.0.0/linux/amd64", vec![1; 10])
        .await;
    let id = p["id"].as_i64().unwrap();
    for (path, field) in [
        (format!("/api/v1/packages/{id}/stats?days=0"), "days"),
        (format!("/api/v1/packages/{id}/stats?days=4000"), "days"),
        ("/api/v1/stats/top?limit=0".to_owned(), "limit"),
        ("/api/v1/stats/top?limit=101".to_owned(), "limit"),
        ("/api/v1/stats/top?platform=plan9".to_owned(), "platform"),
        ("/api/v1/stats/top?arch=sparc".to_owned(), "arch"),
        ("/api/v1/stats/storage?names=1001".to_owned(), "names"),
    ] {
        let body = expect_error(app.get(&path, &viewer).await, 400, "invalid_field").await;
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }
    expect_error(
        app.get("/api/v1/packages/999999/stats", &viewer).await,
        404,
        "not_found",
    )
    .await;
    expect_error(app.get("/api/v1/stats/top", "").await, 401, "invalid_token").await;
    assert_eq!(app.get("/api/v1/stats/top", &viewer).await.status(), 200);
    assert_eq!(
        app.get("/api/v1/stats/storage", &viewer).await.status(),
        200
    );
    // Retention is the admin's.
    let res = app
        .client
        .post(app.url("/api/v1/retention/run?dry_run=true"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    for (policies, field) in [
        (json!([{ "rule": "keep_newest" }]), "versions"),
        (
            json!([{ "rule": "keep_newest", "versions": 0 }]),
            "versions",
        ),
        (
            json!([{ "rule": "keep_newest", "versions": 2, "days": 3 }]),
            "days",
        ),
        (json!([{ "rule": "delete_everything" }]), "rule"),
        (
            json!([{ "rule": "not_downloaded_for", "days": 5, "names": ["Bad Name"] }]),
            "names",
        ),
    ] {
        let res = app
            .client
            .post(app.url("/api/v1/retention/run"))
            .bearer_auth(&admin)
            .json(&json!({ "policies": policies }))
            .send()
            .await
            .unwrap();
        let body = expect_error(res, 400, "invalid_field").await;
        assert_eq!(body["error"]["field"], field, "{policies}: {body}");
    }
    // A body that is not JSON is refused, never taken for "no body".
    let res = app
        .client
        .post(app.url("/api/v1/retention/run"))
        .bearer_auth(&admin)
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_json").await;
    // Nothing was deleted by any of it.
    assert_eq!(package(&app, &admin, id).await["id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_counting_into_one_database_lose_nothing() {
    let app = spawn(Backend::Production).await;
    let second = Application::build(app.settings.clone()).await.unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    let stopped = tokio::spawn(second.run_until_stopped());
    let admin = app.admin_token().await;
    let p = app
        .publish(&admin, "replicated/1.0.0/linux/amd64", vec![5; 64])
        .await;
    let id = p["id"].as_i64().unwrap();
    let per_replica = 40u64;
    let fetch = |base: String| {
        let client = app.client.clone();
        let admin = admin.clone();
        async move {
            for _ in 0..per_replica {
                let res = client
                    .get(format!("{base}/api/v1/packages/{id}/download"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200);
                res.bytes().await.unwrap();
            }
        }
    };
    tokio::join!(fetch(app.base.clone()), fetch(other.clone()));
    // The second replica stops gracefully part-way through an interval: its last counts
    // are written at shutdown.
    handle.stop(true).await;
    stopped.await.unwrap().unwrap();
    let p = counted(&app, &admin, id, 2 * per_replica).await;
    assert_eq!(p["download_count"], 2 * per_replica);
    let today: NaiveDate = Utc::now().date_naive();
    let days = app.store.daily_downloads(id, today, today).await.unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].downloads, 2 * per_replica);
    assert_eq!(days[0].bytes, 2 * per_replica * 64);
}

/// The binary on the embedded default with counts written only at shutdown: SIGTERM
/// writes them. Then `agentpkg-server retention` from a configuration file lists, and
/// deletes, what its policy selects.
#[tokio::test]
async fn sigterm_writes_pending_counts_and_the_retention_command_applies_the_file_policies() {
    use crate::cli::{command, start, token};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agentpkg.toml"),
        "[stats]\nflush_secs = 3600\n\n[[retention.policies]]\nrule = \"keep_newest\"\nversions = 1\n",
    )
    .unwrap();
    let mut cmd = command(dir.path());
    cmd.env("AGENTPKG__AUTH__ADMIN_PASSWORD", "a long admin password");
    let mut server = start(cmd);
    let admin = token(server.port, "admin", "a long admin password").await;
    let base = format!("http://127.0.0.1:{}", server.port);
    let client = reqwest::Client::new();
    let mut id = 0;
    for version in ["1.0.0", "2.0.0"] {
        let res = client
            .put(format!("{base}/api/v1/packages/term/{version}/linux/amd64"))
            .bearer_auth(&admin)
            .body(version.as_bytes().to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    }
    for _ in 0..7 {
        let res = client
            .get(format!("{base}/api/v1/packages/{id}/download"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"2.0.0");
    }
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server stops");
    assert!(status.success(), "{status}");

    let store = agentpkg_store::DieselStore::connect(
        &agentpkg_store::DatabaseUrl::parse(
            &dir.path().join("data/agentpkg.db").display().to_string(),
        )
        .unwrap(),
        &agentpkg_store::PoolOptions::default(),
    )
    .unwrap();
    let today = Utc::now().date_naive();
    let days = store.daily_downloads(id, today, today).await.unwrap();
    assert_eq!(days.iter().map(|d| d.downloads).sum::<u64>(), 7, "{days:?}");

    let retention = |dry_run: bool| {
        let mut cmd = command(dir.path());
        cmd.arg("retention");
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let dry = retention(true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["deletions"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["deletions"][0]["version"], "1.0.0");
    let real = retention(false);
    assert_eq!(real["deletions"], dry["deletions"]);
    assert_eq!(real["bytes_freed"], 5);
    assert_eq!(retention(true)["deletions"], json!([]));
}

async fn a_token_limited_to_some_names_runs_retention_on_those_names_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    for coords in [
        "otelcol/1.0.0/linux/amd64",
        "otelcol/2.0.0/linux/amd64",
        "fluent-bit/1.0.0/linux/amd64",
        "fluent-bit/2.0.0/linux/amd64",
    ] {
        app.publish(&admin, coords, coords.as_bytes()).await;
    }
    let (_, limited) = create_token(
        &app,
        &admin,
        json!({"name": "otel-janitor", "scope": "admin", "packages": ["otelcol*"]}),
    )
    .await;
    let res = app
        .client
        .post(app.url("/api/v1/retention/run"))
        .bearer_auth(&limited)
        .json(&json!({"policies": [{"rule": "keep_newest", "versions": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let report: Value = res.json().await.unwrap();
    let deleted: Vec<String> = report["deletions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["name"].as_str().unwrap(),
                d["version"].as_str().unwrap()
            )
        })
        .collect();
    // fluent-bit 1.0.0 is outside the token's names: it was deleted too, before.
    assert_eq!(deleted, ["otelcol/1.0.0"], "{report}");
    let res = app
        .get("/api/v1/packages/fluent-bit/1.0.0/linux/amd64", &admin)
        .await;
    assert_eq!(res.status(), 200);
}
