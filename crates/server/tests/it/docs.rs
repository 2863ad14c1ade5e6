//! The API describes itself: the OpenAPI document and Swagger UI, served by the binary.

use serde_json::Value;

use crate::common::{Backend, TestApp};

/// A value for each path or required query parameter, naming the package uploaded first.
fn sample(param: &str, id: i64, fingerprint: &str) -> String {
    match param {
        "id" => id.to_string(),
        "fingerprint" => fingerprint.to_owned(),
        "name" => "opamp-agent".into(),
        "version" => "1.0.0".into(),
        "platform" => "linux".into(),
        "arch" => "amd64".into(),
        "uid" => "01".repeat(16),
        "rollout" => "1".into(),
        other => panic!("no sample value for parameter {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_read_operation_exists_and_answers_a_documented_status() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let admin = app.admin_token().await;
    let res = app
        .upload(&admin, b"agent bytes".to_vec(), &crate::rollback::FIELDS)
        .await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    // A trusted key, and a signature on the package, for the signing routes to find.
    let gpg = crate::signing::Gpg::new();
    let fingerprint = gpg.generate("Docs <docs@example.com>", "ed25519", "never", None);
    let res = crate::signing::trust(&app, &admin, &gpg.export(&fingerprint), &["*"]).await;
    assert_eq!(res.status(), 201);
    // A trusted Sigstore signer (the first: its id is the package's too).
    let policy = crate::sigstore::trust_beacon(&app, &admin, &["*"]).await;
    assert_eq!(policy["id"], id);
    let res = app
        .client
        .put(app.url(&format!("/api/v1/packages/{id}/signature?format=cosign")))
        .bearer_auth(&admin)
        .body("cosign signature")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // An agent, and an assignment (the first: its id is the package's), for the fleet's.
    let hello = agentpkg_fleet::proto::AgentToServer {
        instance_uid: vec![1; 16],
        ..Default::default()
    };
    let res = app
        .client
        .post(app.url("/v1/opamp"))
        .bearer_auth(&admin)
        .header("Content-Type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(&hello))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .post(app.url("/api/v1/assignments"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "package": "opamp-agent" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], id);
    // And a rollout of another version on it (waiting for approval: nothing moves).
    app.publish(&admin, "opamp-agent/1.1.0/linux/amd64", "agent bytes 1.1")
        .await;
    let res = app
        .client
        .post(app.url(&format!("/api/v1/assignments/{id}/rollouts")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "version": "1.1.0", "waves": [{"percent": 100}], "approval": "each_wave"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    // Public: no token needed to read the description of the API.
    let res = reqwest::get(app.url("/api/v1/openapi.json")).await.unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));

    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        let mut url = path.clone();
        let mut query = Vec::new();
        for param in op["parameters"].as_array().into_iter().flatten() {
            let name = param["name"].as_str().unwrap();
            match param["in"].as_str().unwrap() {
                "path" => {
                    url = url.replace(&format!("{{{name}}}"), &sample(name, id, &fingerprint))
                }
                "query" if param["required"] == true => {
                    query.push(format!("{name}={}", sample(name, id, &fingerprint)));
                }
                _ => {}
            }
        }
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let res = app.get(&url, &admin).await;
        let status = res.status().as_u16().to_string();
        assert!(
            op["responses"].get(&status).is_some(),
            "GET {url} answered {status}, which {path} does not document"
        );
        assert!(
            res.status().is_success(),
            "GET {url} answered {status}: {}",
            res.text().await.unwrap()
        );
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} read operations documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_is_served_from_the_binary_and_fetches_nothing_from_elsewhere() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = client.get(app.url("/swagger-ui")).send().await.unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/swagger-ui/");

    let res = client.get(app.url("/swagger-ui/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let index = res.text().await.unwrap();
    assert!(
        !index.contains("http://") && !index.contains("https://"),
        "{index}"
    );

    // Every stylesheet, icon and script the page names comes from the server itself.
    let mut assets = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in index.split(attr).skip(1) {
            let target = part.split('"').next().unwrap();
            assets.push(target.trim_start_matches("./").to_owned());
        }
    }
    assert!(
        assets.iter().any(|a| a == "swagger-ui-bundle.js"),
        "{assets:?}"
    );
    for asset in &assets {
        let res = client
            .get(app.url(&format!("/swagger-ui/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        assert!(!res.bytes().await.unwrap().is_empty(), "{asset}");
    }

    let init = client
        .get(app.url("/swagger-ui/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("\"/api/v1/openapi.json\""), "{init}");
    assert!(
        !init.contains("http://") && !init.contains("https://"),
        "{init}"
    );
}
