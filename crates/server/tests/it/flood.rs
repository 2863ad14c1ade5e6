//! A flood of wrong passwords against the real binary: password hashing runs under a
//! bound, so the flood is answered quickly (401 or 503 `busy`), memory stays flat, and
//! authenticated reads keep answering throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::cli::{command, start, token};

const PASSWORD: &str = "a long admin password";
const CONNECTIONS: usize = 64;
const ATTEMPTS_PER_CONNECTION: usize = 50;
/// Resident memory the server may reach during the flood. Two hashing threads hold
/// about 19 MiB each; without the bound, 64 connections reached several GiB.
const PEAK_RSS_LIMIT_KIB: u64 = 300 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_flood_is_refused_quickly_with_bounded_memory_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("AGENTPKG__AUTH__ADMIN_PASSWORD", PASSWORD)
        .env("AGENTPKG__SERVER__WORKERS", "2")
        .env("AGENTPKG__AUTH__PASSWORD_HASH_WORKERS", "2")
        .env("AGENTPKG__AUTH__PASSWORD_HASH_QUEUE", "8")
        // What is measured is the hashing bound, not the throttle that would stop this
        // flood after five attempts.
        .env("AGENTPKG__AUTH__LOGIN_ATTEMPTS", "0");
    let server = start(cmd);
    let port = server.port;
    let admin = token(port, "admin", PASSWORD).await;
    let base = format!("http://127.0.0.1:{port}");

    // Reads with a valid token go on during the flood; each must be answered 200.
    let flooding = Arc::new(AtomicBool::new(true));
    let reader = {
        let (flooding, base) = (flooding.clone(), base.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut reads = 0usize;
            while flooding.load(Ordering::Relaxed) {
                let res = client
                    .get(format!("{base}/api/v1/packages"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .expect("an authenticated read went unanswered during the flood");
                assert_eq!(res.status(), 200, "an authenticated read during the flood");
                reads += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            reads
        })
    };

    let (refused, busy) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|n| {
            let (base, refused, busy) = (base.clone(), refused.clone(), busy.clone());
            tokio::spawn(async move {
                // One client per attacker: its own connection, kept alive.
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                for i in 0..ATTEMPTS_PER_CONNECTION {
                    let res = client
                        .post(format!("{base}/api/v1/auth/login"))
                        .json(&serde_json::json!({
                            "username": if i % 2 == 0 { "admin" } else { "nobody" },
                            "password": format!("wrong password {n}-{i}"),
                        }))
                        .send()
                        .await
                        .expect("a login went unanswered");
                    let status = res.status().as_u16();
                    let retry_after = res
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let body: Value = res.json().await.unwrap();
                    match (status, body["error"]["code"].as_str()) {
                        (401, Some("invalid_credentials")) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        (503, Some("busy")) => {
                            assert_eq!(retry_after.as_deref(), Some("1"));
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("a wrong password got {other:?}: {body}"),
                    }
                }
            })
        })
        .collect();
    for attacker in attackers {
        attacker.await.unwrap();
    }
    flooding.store(false, Ordering::Relaxed);
    let reads = reader.await.unwrap();

    let peak = server.peak_rss_kib();
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "the server peaked at {} MiB during the flood",
        peak / 1024
    );
    let (refused, busy) = (
        refused.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {refused} wrong passwords checked, {busy} turned away busy, {reads} reads \
         answered, peak resident {} MiB",
        peak / 1024
    );
    assert_eq!(refused + busy, CONNECTIONS * ATTEMPTS_PER_CONNECTION);
    assert!(
        busy > 0,
        "with 64 connections some logins must be turned away"
    );
    assert!(refused > 0, "some wrong passwords must have been checked");
    assert!(reads > 0, "no read ran during the flood");
    // The real user still gets in once the flood is over.
    token(port, "admin", PASSWORD).await;
}
