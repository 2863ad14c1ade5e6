//! Fuzzing the request parsing and validation paths: generated multipart forms (random
//! boundaries, field names, values, file names, truncation), raw uploads to random paths
//! and query strings, and random `Authorization` headers, against the real routes over a
//! SQLite store and in-memory object storage.
//!
//! Every answer must be a success or a 4xx with a JSON error code — never a 5xx — and
//! afterwards storage and table agree: no object without its row, no row without its
//! object. `AGENTPKG_FUZZ_CASES` sets how many requests (default 3000);
//! `AGENTPKG_FUZZ_SEED` replays a run (the seed is printed on failure).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, test};
use agentpkg_api::{ApiMetrics, ApiState, BodyDeadlines, DownloadOptions, JwtSecret, TokenIssuer};
use agentpkg_model::{Password, Role, Username};
use agentpkg_packagemgr::{Accounts, HashingLimits, ManagerConfig, PackageManager};
use agentpkg_storage::MemoryStore;
use agentpkg_store::{DatabaseUrl, DieselStore, PoolOptions};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A request to send.
#[derive(Debug, Clone)]
enum Fuzzed {
    Form {
        content_type: String,
        body: Vec<u8>,
        authorization: Option<String>,
    },
    Put {
        path: String,
        query: String,
        checksum: Option<String>,
        body: Vec<u8>,
    },
    Get {
        path: String,
        authorization: Option<String>,
    },
}

fn text_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Valid values, so that some uploads get through to storage and the database.
        Just(b"opamp-agent".to_vec()),
        Just(b"1.0.0".to_vec()),
        Just(b"2.0.0-rc.1+build.5".to_vec()),
        Just(b"linux".to_vec()),
        Just(b"amd64".to_vec()),
        Just(b"386".to_vec()),
        // Hostile ones.
        Just(b"../../etc/passwd".to_vec()),
        Just(b"%2e%2e%2f".to_vec()),
        Just(b"/abs/path".to_vec()),
        Just(b"a'; DROP TABLE packages; --".to_vec()),
        Just(b"nul\0inside".to_vec()),
        Just(vec![b'x'; 10_000]),
        "[a-z0-9.+-]{0,20}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("file".to_owned()),
        Just("name".to_owned()),
        Just("version".to_owned()),
        Just("platform".to_owned()),
        Just("arch".to_owned()),
        Just("description".to_owned()),
        Just("sha256".to_owned()),
        "[ -~]{0,12}",
    ]
}

fn file_name() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("agent.tar.gz".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("/etc/passwd".to_owned()),
        Just("..".to_owned()),
        Just("%2e%2e".to_owned()),
        "[ -~]{0,20}",
    ])
}

/// `Some("")` stands for the publisher's real token, `None` for no header at all.
fn authorization() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        12 => Just(Some(String::new())),
        1 => Just(None),
        1 => Just(Some("Bearer".to_owned())),
        1 => Just(Some("Basic YWRtaW46YWRtaW4=".to_owned())),
        1 => Just(Some("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.".to_owned())),
        1 => "Bearer [ -~]{0,80}".prop_map(Some),
    ]
}

type Part = (String, Option<String>, Vec<u8>);

fn random_part() -> impl Strategy<Value = Part> {
    (field_name(), file_name(), text_value())
}

/// A complete, valid form in any order, maybe with one part replaced by a generated one.
fn mostly_valid_parts() -> impl Strategy<Value = Vec<Part>> {
    (
        (
            0u32..100_000,
            // Some files cross the 64 KiB limit set below.
            prop_oneof![
                9 => proptest::collection::vec(any::<u8>(), 0..4096),
                1 => proptest::collection::vec(any::<u8>(), 60_000..80_000),
            ],
        ),
        proptest::option::weighted(0.5, (0usize..5, random_part())),
    )
        .prop_flat_map(|((n, file), mutation)| {
            let mut parts: Vec<Part> = vec![
                ("name".into(), None, b"opamp-agent".to_vec()),
                ("version".into(), None, format!("1.{n}.0").into_bytes()),
                ("platform".into(), None, b"linux".to_vec()),
                ("arch".into(), None, b"amd64".to_vec()),
                ("file".into(), Some("agent.bin".into()), file),
            ];
            if let Some((i, part)) = mutation {
                parts[i] = part;
            }
            Just(parts).prop_shuffle()
        })
}

fn form() -> impl Strategy<Value = Fuzzed> {
    let parts = prop_oneof![
        2 => mostly_valid_parts(),
        1 => proptest::collection::vec(random_part(), 0..9),
    ];
    (
        "[0-9A-Za-z'()+_,./:=?-]{1,40}",
        proptest::bool::weighted(0.1),
        parts,
        proptest::option::weighted(0.2, 0usize..4096),
        proptest::bool::weighted(0.1),
        authorization(),
    )
        .prop_map(
            |(boundary, other_boundary, parts, truncate, no_close, authorization)| {
                let mut body = Vec::new();
                for (name, filename, value) in parts {
                    body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
                    let disposition = match filename {
                        Some(f) => format!(
                            "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n"
                        ),
                        None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n"),
                    };
                    body.extend_from_slice(disposition.as_bytes());
                    body.extend_from_slice(b"\r\n");
                    body.extend_from_slice(&value);
                    body.extend_from_slice(b"\r\n");
                }
                if !no_close {
                    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
                }
                if let Some(at) = truncate {
                    body.truncate(at);
                }
                let declared = if other_boundary {
                    "something-else".to_owned()
                } else {
                    boundary
                };
                Fuzzed::Form {
                    content_type: format!("multipart/form-data; boundary={declared}"),
                    body,
                    authorization,
                }
            },
        )
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("opamp-agent".to_owned()),
        Just("1.2.3".to_owned()),
        Just("linux".to_owned()),
        Just("arm64".to_owned()),
        Just("latest".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("..".to_owned()),
        Just("%00".to_owned()),
        Just("%2F".to_owned()),
        "[a-zA-Z0-9._~%-]{0,16}",
    ]
}

fn put() -> impl Strategy<Value = Fuzzed> {
    let segments = prop_oneof![
        1 => (0u32..100_000).prop_map(|n| vec![
            "opamp-agent".to_owned(),
            format!("2.{n}.0"),
            "darwin".to_owned(),
            "arm64".to_owned(),
        ]),
        1 => proptest::collection::vec(segment(), 4),
    ];
    (
        segments,
        prop_oneof![Just(String::new()), "[ -~]{0,40}"],
        proptest::option::weighted(0.3, "[0-9a-fA-F]{0,70}"),
        proptest::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(segments, query, checksum, body)| Fuzzed::Put {
            path: format!("/api/v1/packages/{}", segments.join("/")),
            query: query.replace([' ', '#'], "%20"),
            checksum,
            body,
        })
}

fn get() -> impl Strategy<Value = Fuzzed> {
    (
        proptest::collection::vec(segment(), 1..6),
        "[a-z_]{0,10}=[ -~]{0,20}",
        authorization(),
    )
        .prop_map(|(segments, query, authorization)| Fuzzed::Get {
            path: format!(
                "/api/v1/packages/{}?{}",
                segments.join("/"),
                query.replace([' ', '#'], "%20")
            ),
            authorization,
        })
}

fn request() -> impl Strategy<Value = Fuzzed> {
    prop_oneof![3 => form(), 2 => put(), 2 => get()]
}

#[actix_web::test]
async fn generated_requests_never_cause_a_5xx_nor_leave_storage_and_table_apart() {
    let cases: u32 = std::env::var("AGENTPKG_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("AGENTPKG_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand_seed);

    let dir = tempfile::tempdir().unwrap();
    let db = DatabaseUrl::Sqlite(dir.path().join("fuzz.db"));
    let store = Arc::new(DieselStore::connect(&db, &PoolOptions::default()).unwrap());
    store.run_migrations().await.unwrap();
    let storage = Arc::new(MemoryStore::new());
    let packages = PackageManager::new(
        store.clone(),
        storage,
        ManagerConfig {
            max_upload_bytes: 64 * 1024,
            ..ManagerConfig::default()
        },
    );
    let accounts = Accounts::new(store.clone(), HashingLimits::default());
    let publisher = accounts
        .create_user(
            &Username::parse("fuzzer").unwrap(),
            &Password::parse("a long enough password").unwrap(),
            Role::Publisher,
        )
        .await
        .unwrap();
    let secret = JwtSecret::new(secrecy::SecretString::from(
        "fuzzing-secret-of-at-least-32-bytes!".to_owned(),
    ))
    .unwrap();
    let tokens = TokenIssuer::new(&secret, 3600, 60);
    let (token, _) = tokens.issue(&publisher, 0).unwrap();
    let audit = agentpkg_packagemgr::AuditLog::new(store.clone());
    let reports = agentpkg_stats::Statistics::new(store.clone(), std::time::Duration::ZERO);
    let stats = agentpkg_api::StatsApi {
        counter: Some(agentpkg_stats::DownloadCounter::new(store.clone())),
        retention: agentpkg_stats::Retention::new(store.clone(), packages.clone(), audit.clone()),
        reports,
        policies: Arc::default(),
    };
    let state = ApiState {
        metrics: Arc::new(ApiMetrics::new(
            packages.metrics(),
            &stats.reports,
            &agentpkg_mirror::MirrorMetrics::default(),
        )),
        stats,
        fleet: agentpkg_fleet::Fleet::new(
            store.clone(),
            packages.clone(),
            Arc::new(agentpkg_api::DownloadTokens::new(
                tokens.clone(),
                std::time::Duration::from_secs(60),
            )),
            audit.clone(),
        ),
        public_url: None,
        opamp: agentpkg_api::OpampTransport::new(
            std::time::Duration::from_secs(30),
            agentpkg_api::ConnectionLimits::default(),
        ),
        mirror: agentpkg_mirror::Mirror::new(
            &agentpkg_mirror::MirrorSettings::default(),
            packages.clone(),
            accounts.clone(),
            audit.clone(),
            store.clone(),
        )
        .unwrap(),
        packages: packages.clone(),
        accounts,
        tokens,
        downloads: DownloadOptions::default(),
        body_deadlines: BodyDeadlines::default(),
        audit,
        trusted_proxies: Default::default(),
    };
    let app = test::init_service(App::new().configure(agentpkg_api::configure(state))).await;

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed)),
    );
    let strategy = request();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for case in 0..cases {
        let fuzzed = strategy.new_tree(&mut runner).unwrap().current();
        let uri = match &fuzzed {
            Fuzzed::Form { .. } => "/api/v1/packages".to_owned(),
            Fuzzed::Put { path, query, .. } => format!("{path}?{query}"),
            Fuzzed::Get { path, .. } => path.clone(),
        };
        // A URI that the HTTP layer itself refuses never reaches the app.
        if actix_web::http::Uri::try_from(uri.as_str()).is_err() {
            continue;
        }
        let bearer = format!("Bearer {token}");
        let req = match &fuzzed {
            Fuzzed::Form {
                content_type,
                body,
                authorization,
            } => {
                let auth = match authorization.as_deref() {
                    Some("") => bearer.clone(),
                    Some(other) => other.to_owned(),
                    None => String::new(),
                };
                let mut req = test::TestRequest::post()
                    .uri("/api/v1/packages")
                    .insert_header(("content-type", content_type.as_str()))
                    .set_payload(body.clone());
                if !auth.is_empty() {
                    req = req.insert_header(("authorization", auth));
                }
                req
            }
            Fuzzed::Put { checksum, body, .. } => {
                let mut req = test::TestRequest::put()
                    .uri(&uri)
                    .insert_header(("authorization", bearer.clone()))
                    .set_payload(body.clone());
                if let Some(sum) = checksum {
                    req = req.insert_header(("x-checksum-sha256", sum.as_str()));
                }
                req
            }
            Fuzzed::Get { authorization, .. } => {
                let auth = match authorization.as_deref() {
                    Some("") => bearer.clone(),
                    Some(other) => other.to_owned(),
                    None => String::new(),
                };
                let mut req = test::TestRequest::get().uri(&uri);
                if !auth.is_empty() {
                    req = req.insert_header(("authorization", auth));
                }
                req
            }
        };
        let answer = async {
            let res = test::call_service(&app, req.to_request()).await;
            let status = res.status().as_u16();
            (status, test::read_body(res).await)
        };
        let Ok((status, body)) = tokio::time::timeout(Duration::from_secs(10), answer).await else {
            panic!("case {case} (AGENTPKG_FUZZ_SEED={seed}) got no answer:\n{fuzzed:?}");
        };
        *statuses.entry(status).or_default() += 1;
        assert!(
            status < 500,
            "case {case} (AGENTPKG_FUZZ_SEED={seed}): {status} {}\n{fuzzed:?}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "case {case} (AGENTPKG_FUZZ_SEED={seed}): {status} without a JSON error ({e}): {}\n{fuzzed:?}",
                    String::from_utf8_lossy(&body)
                )
            });
            assert!(
                json["error"]["code"].is_string(),
                "case {case} (AGENTPKG_FUZZ_SEED={seed}): {json}\n{fuzzed:?}"
            );
        }
    }

    eprintln!("fuzz: {cases} cases, seed {seed}, answers by status: {statuses:?}");
    // Some requests got through to storage, and some were refused.
    assert!(
        statuses.contains_key(&201) && statuses.keys().any(|s| (400..500).contains(s)),
        "seed {seed}: {statuses:?}"
    );
    let report = packages.reconcile(Duration::ZERO, true).await.unwrap();
    assert!(
        report.orphans_removed.is_empty()
            && report.missing_objects.is_empty()
            && report.incomplete_removed.is_empty(),
        "seed {seed}: storage and table disagree: {report:?}"
    );
    let res = test::call_service(&app, test::TestRequest::get().uri("/healthz").to_request()).await;
    assert_eq!(res.status(), 200);
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&seed.to_le_bytes());
    }
    bytes
}
