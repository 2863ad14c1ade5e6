//! Every route that changes something leaves an audit event — done, and refused — with
//! who, what, on what, and the outcome. The routes come from the OpenAPI document the
//! server publishes, so a new route that this test does not call fails it: it must be
//! audited (and called here), or be named below as not a change made by a person.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{Backend, TestApp};

/// State-changing routes without an event per call, and why.
const NOT_AUDITED: &[(&str, &str, &str)] = &[(
    "POST",
    "/v1/opamp",
    "an agent's status report is telemetry, not a change made by a person; refusing an agent is audited (agent_refused, fleet_trust)",
)];

/// A call made, and the event it must have left.
struct Expected {
    method: &'static str,
    route: &'static str,
    action: &'static str,
    outcome: &'static str,
    request_id: String,
}

struct Caller<'a> {
    app: &'a TestApp,
    expected: Vec<Expected>,
}

enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
    Form(Form),
}

impl<'a> Caller<'a> {
    /// Calls `method url` as `token`; it must answer `status`, and leave an event of
    /// `action` with `outcome` (a refusal for a missing role: `access_denied`).
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        (method, route): (&'static str, &'static str),
        url: &str,
        token: &str,
        body: Body,
        headers: &[(&str, String)],
        status: u16,
        (action, outcome): (&'static str, &'static str),
    ) -> Value {
        let mut req = self.app.client.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            self.app.url(url),
        );
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Bytes(b) => req.body(b),
            Body::Form(f) => req.multipart(f),
        };
        let res = req.send().await.unwrap();
        let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_eq!(got, status, "{method} {url}: {text}");
        self.expected.push(Expected {
            method,
            route,
            action,
            outcome,
            request_id,
        });
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Calls a route as a caller without the role it needs: 403, recorded.
    async fn denied(&mut self, route: (&'static str, &'static str), url: &str, token: &str) {
        let body = if route.0 == "DELETE" {
            Body::None
        } else {
            Body::Json(json!({}))
        };
        self.call(
            route,
            url,
            token,
            body,
            &[],
            403,
            ("access_denied", "refused"),
        )
        .await;
    }
}

async fn login(app: &TestApp, username: &str, password: &str) -> String {
    let res = app.login(username, password).await;
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_that_changes_something_is_audited_done_and_refused() {
    // Direct uploads need S3: the production backend has every route.
    let app = TestApp::spawn(Backend::Production).await;
    let admin = app.admin_token().await;
    let mut c = Caller {
        app: &app,
        expected: Vec::new(),
    };
    let password = "a long enough password";

    // Users, and signing in.
    let users = ("POST", "/api/v1/users");
    let mut ids = Vec::new();
    for (name, role) in [
        ("pub-a", "publisher"),
        ("pub-b", "publisher"),
        ("view-a", "viewer"),
        ("gone", "viewer"),
    ] {
        let user = c
            .call(
                users,
                "/api/v1/users",
                &admin,
                Body::Json(json!({"username": name, "password": password, "role": role})),
                &[],
                201,
                ("user_create", "done"),
            )
            .await;
        ids.push(user["id"].as_i64().unwrap());
    }
    let (pub_b_id, gone_id) = (ids[1], ids[3]);
    let login_route = ("POST", "/api/v1/auth/login");
    let pa = c
        .call(
            login_route,
            "/api/v1/auth/login",
            "",
            Body::Json(json!({"username": "pub-a", "password": password})),
            &[],
            200,
            ("login", "done"),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.call(
        login_route,
        "/api/v1/auth/login",
        "",
        Body::Json(json!({"username": "pub-a", "password": "not the password at all"})),
        &[],
        401,
        ("login_failed", "refused"),
    )
    .await;
    let viewer = login(&app, "view-a", password).await;
    c.denied(users, "/api/v1/users", &pa).await;

    // Packages: publish (raw and form), change, sign.
    let put_route = ("PUT", "/api/v1/packages/{name}/{version}/{platform}/{arch}");
    let package = c
        .call(
            put_route,
            "/api/v1/packages/audited/1.0.0/linux/amd64",
            &pa,
            Body::Bytes(b"build one".to_vec()),
            &[],
            201,
            ("publish", "done"),
        )
        .await;
    let id = package["id"].as_i64().unwrap();
    c.denied(
        put_route,
        "/api/v1/packages/audited/9.0.0/linux/amd64",
        &viewer,
    )
    .await;
    let form_route = ("POST", "/api/v1/packages");
    let form = Form::new()
        .text("name", "audited")
        .text("version", "1.1.0")
        .text("platform", "linux")
        .text("arch", "amd64")
        .part("file", Part::bytes(b"build two".to_vec()).file_name("a"));
    c.call(
        form_route,
        "/api/v1/packages",
        &pa,
        Body::Form(form),
        &[],
        201,
        ("publish", "done"),
    )
    .await;
    c.denied(form_route, "/api/v1/packages", &viewer).await;
    let one = ("PATCH", "/api/v1/packages/{id}");
    let url = format!("/api/v1/packages/{id}");
    c.call(
        one,
        &url,
        &pa,
        Body::Json(json!({"is_active": false})),
        &[],
        200,
        ("yank", "done"),
    )
    .await;
    c.denied(one, &url, &viewer).await;
    let sign = ("PUT", "/api/v1/packages/{id}/signature");
    let url = format!("/api/v1/packages/{id}/signature?format=cosign");
    c.call(
        sign,
        &url,
        &pa,
        Body::Bytes(b"cosign signature".to_vec()),
        &[],
        200,
        ("signature_attach", "done"),
    )
    .await;
    c.denied(sign, &url, &viewer).await;

    // Owners and teams.
    let owner = ("PUT", "/api/v1/packages/{name}/owners/{username}");
    let url = "/api/v1/packages/audited/owners/pub-b";
    c.call(owner, url, &pa, Body::None, &[], 204, ("owner_add", "done"))
        .await;
    c.denied(owner, url, &viewer).await;
    let unown = ("DELETE", "/api/v1/packages/{name}/owners/{username}");
    c.call(
        unown,
        url,
        &pa,
        Body::None,
        &[],
        204,
        ("owner_remove", "done"),
    )
    .await;
    c.denied(unown, url, &viewer).await;
    let teams = ("POST", "/api/v1/teams");
    c.call(
        teams,
        "/api/v1/teams",
        &pa,
        Body::Json(json!({"name": "auditors"})),
        &[],
        201,
        ("team_create", "done"),
    )
    .await;
    c.denied(teams, "/api/v1/teams", &viewer).await;
    let member = ("PUT", "/api/v1/teams/{team}/members/{username}");
    let url = "/api/v1/teams/auditors/members/pub-b";
    c.call(
        member,
        url,
        &pa,
        Body::None,
        &[],
        200,
        ("member_add", "done"),
    )
    .await;
    c.denied(member, url, &viewer).await;
    let unmember = ("DELETE", "/api/v1/teams/{team}/members/{username}");
    c.call(
        unmember,
        url,
        &pa,
        Body::None,
        &[],
        200,
        ("member_remove", "done"),
    )
    .await;
    c.denied(unmember, url, &viewer).await;

    // Signing keys.
    let gpg = crate::signing::Gpg::new();
    let fingerprint = gpg.generate("Audit <audit@example.com>", "ed25519", "never", None);
    let keys = ("POST", "/api/v1/keys");
    let key = json!({"key": gpg.export(&fingerprint), "patterns": ["*"]});
    c.call(
        keys,
        "/api/v1/keys",
        &admin,
        Body::Json(key),
        &[],
        201,
        ("key_add", "done"),
    )
    .await;
    c.denied(keys, "/api/v1/keys", &pa).await;
    let unkey = ("DELETE", "/api/v1/keys/{fingerprint}");
    let url = format!("/api/v1/keys/{fingerprint}");
    c.call(
        unkey,
        &url,
        &admin,
        Body::None,
        &[],
        204,
        ("key_remove", "done"),
    )
    .await;
    c.denied(unkey, &url, &pa).await;

    // Sigstore identities.
    let identities = ("POST", "/api/v1/sigstore-identities");
    let policy = json!({
        "patterns": ["*"],
        "issuer": "https://token.actions.githubusercontent.com",
        "san_regex": "^https://github\\.com/acme/.*$",
    });
    let added = c
        .call(
            identities,
            "/api/v1/sigstore-identities",
            &admin,
            Body::Json(policy),
            &[],
            201,
            ("sigstore_identity_add", "done"),
        )
        .await;
    c.denied(identities, "/api/v1/sigstore-identities", &pa)
        .await;
    let unidentity = ("DELETE", "/api/v1/sigstore-identities/{id}");
    let url = format!("/api/v1/sigstore-identities/{}", added["id"]);
    c.call(
        unidentity,
        &url,
        &admin,
        Body::None,
        &[],
        204,
        ("sigstore_identity_remove", "done"),
    )
    .await;
    c.denied(unidentity, &url, &pa).await;

    // API tokens: a token makes none, and revokes only itself.
    let tokens = ("POST", "/api/v1/tokens");
    let mut secrets = Vec::new();
    for name in ["ci", "fleet"] {
        let token = c
            .call(
                tokens,
                "/api/v1/tokens",
                &pa,
                Body::Json(json!({"name": name, "scope": "publish"})),
                &[],
                201,
                ("token_create", "done"),
            )
            .await;
        secrets.push((
            token["id"].as_i64().unwrap(),
            token["secret"].as_str().unwrap().to_owned(),
        ));
    }
    let (ci_id, ci) = secrets[0].clone();
    let (fleet_id, fleet) = secrets[1].clone();
    c.call(
        tokens,
        "/api/v1/tokens",
        &ci,
        Body::Json(json!({"name": "more", "scope": "read"})),
        &[],
        403,
        ("token_create", "refused"),
    )
    .await;
    let revoke = ("DELETE", "/api/v1/tokens/{id}");
    c.call(
        revoke,
        &format!("/api/v1/tokens/{ci_id}"),
        &fleet,
        Body::None,
        &[],
        403,
        ("token_revoke", "refused"),
    )
    .await;
    c.call(
        revoke,
        &format!("/api/v1/tokens/{fleet_id}"),
        &pa,
        Body::None,
        &[],
        204,
        ("token_revoke", "done"),
    )
    .await;

    // Resumable uploads: open, write to the end (a publish), cancel.
    let open = ("POST", "/api/v1/uploads");
    let tus = |length: usize| {
        vec![
            ("Tus-Resumable", "1.0.0".to_owned()),
            ("Upload-Length", length.to_string()),
        ]
    };
    let mut partial = tus(10);
    partial.push(("Upload-Concat", "partial".to_owned()));
    c.call(
        open,
        "/api/v1/uploads",
        &pa,
        Body::None,
        &partial,
        201,
        ("upload_open", "done"),
    )
    .await;
    c.denied(open, "/api/v1/uploads", &viewer).await;
    let res = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&pa)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .header("Upload-Concat", "partial")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let partial_url = res.headers()["location"].to_str().unwrap().to_owned();
    let file = b"resumable build".to_vec();
    let mut whole = tus(file.len());
    whole.push((
        "Upload-Metadata",
        format!(
            "name {},version {},platform {},arch {}",
            b64("audited"),
            b64("1.2.0"),
            b64("linux"),
            b64("amd64")
        ),
    ));
    let res = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&pa)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", file.len().to_string())
        .header("Upload-Metadata", whole[2].1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let whole_url = res.headers()["location"].to_str().unwrap().to_owned();
    let path_of = |url: &str| {
        url.split_once("/api/")
            .map(|(_, p)| format!("/api/{p}"))
            .unwrap()
    };
    let write = ("PATCH", "/api/v1/uploads/{id}");
    let offset = [
        ("Tus-Resumable", "1.0.0".to_owned()),
        ("Upload-Offset", "0".to_owned()),
        ("Content-Type", "application/offset+octet-stream".to_owned()),
    ];
    c.call(
        write,
        &path_of(&whole_url),
        &pa,
        Body::Bytes(file),
        &offset,
        200,
        ("publish", "done"),
    )
    .await;
    c.denied(write, &path_of(&partial_url), &viewer).await;
    let cancel = ("DELETE", "/api/v1/uploads/{id}");
    let tus_only = [("Tus-Resumable", "1.0.0".to_owned())];
    c.call(
        cancel,
        &path_of(&partial_url),
        &pa,
        Body::None,
        &tus_only,
        204,
        ("upload_cancel", "done"),
    )
    .await;
    c.denied(cancel, &path_of(&partial_url), &viewer).await;

    // Direct uploads: granted, the bytes PUT straight to S3, completed (a publish).
    let grant_route = ("POST", "/api/v1/uploads/direct");
    let bytes = b"direct build".to_vec();
    let grant = c
        .call(
            grant_route,
            "/api/v1/uploads/direct",
            &pa,
            Body::Json(json!({
                "name": "audited", "version": "1.3.0", "platform": "linux", "arch": "amd64",
                "size": bytes.len(), "sha256": hex::encode(Sha256::digest(&bytes)),
            })),
            &[],
            201,
            ("upload_open", "done"),
        )
        .await;
    c.denied(grant_route, "/api/v1/uploads/direct", &viewer)
        .await;
    let mut put = app.client.put(grant["url"].as_str().unwrap());
    for (name, value) in grant["headers"].as_object().unwrap() {
        put = put.header(name.as_str(), value.as_str().unwrap());
    }
    assert!(put.body(bytes).send().await.unwrap().status().is_success());
    let complete = ("POST", "/api/v1/uploads/direct/{id}/complete");
    let url = grant["complete_url"].as_str().unwrap();
    c.call(
        complete,
        url,
        &pa,
        Body::None,
        &[],
        201,
        ("publish", "done"),
    )
    .await;
    c.denied(complete, url, &viewer).await;

    // The fleet: assignments, and forgetting an agent.
    let assign = ("POST", "/api/v1/assignments");
    let assignment = c
        .call(
            assign,
            "/api/v1/assignments",
            &admin,
            Body::Json(json!({"package": "audited", "selector": {"service.name": "x"}})),
            &[],
            201,
            ("assignment_create", "done"),
        )
        .await;
    c.denied(assign, "/api/v1/assignments", &pa).await;
    let url = format!("/api/v1/assignments/{}", assignment["id"]);
    let change = ("PATCH", "/api/v1/assignments/{id}");
    c.call(
        change,
        &url,
        &admin,
        Body::Json(json!({"rollout_percent": 50})),
        &[],
        200,
        ("assignment_change", "done"),
    )
    .await;
    c.denied(change, &url, &pa).await;
    // Its progressive rollout: created, approved, paused, resumed, aborted.
    let create = ("POST", "/api/v1/assignments/{id}/rollouts");
    let rollouts = format!("{url}/rollouts");
    let rollout = c
        .call(
            create,
            &rollouts,
            &admin,
            Body::Json(json!({
                "version": "1.1.0", "waves": [{"percent": 50}, {"percent": 100}],
                "approval": "each_wave"
            })),
            &[],
            201,
            ("rollout_create", "done"),
        )
        .await;
    c.denied(create, &rollouts, &pa).await;
    let rid = rollout["id"].as_i64().unwrap();
    for (step, action, body) in [
        (
            "approve",
            "rollout_approve",
            json!({"reason": "looks good"}),
        ),
        ("pause", "rollout_pause", json!({"reason": "a closer look"})),
        ("resume", "rollout_resume", json!({})),
        (
            "abort",
            "rollout_abort",
            json!({"revert": true, "reason": "not now"}),
        ),
    ] {
        let route = match step {
            "approve" => (
                "POST",
                "/api/v1/assignments/{id}/rollouts/{rollout}/approve",
            ),
            "pause" => ("POST", "/api/v1/assignments/{id}/rollouts/{rollout}/pause"),
            "resume" => ("POST", "/api/v1/assignments/{id}/rollouts/{rollout}/resume"),
            _ => ("POST", "/api/v1/assignments/{id}/rollouts/{rollout}/abort"),
        };
        let path = format!("{rollouts}/{rid}/{step}");
        c.denied(route, &path, &pa).await;
        c.call(
            route,
            &path,
            &admin,
            Body::Json(body),
            &[],
            200,
            (action, "done"),
        )
        .await;
    }
    let unassign = ("DELETE", "/api/v1/assignments/{id}");
    c.call(
        unassign,
        &url,
        &admin,
        Body::None,
        &[],
        204,
        ("assignment_delete", "done"),
    )
    .await;
    c.denied(unassign, &url, &pa).await;
    let uid = [7u8; 16];
    crate::fleet::send(&app, &viewer, &crate::fleet::message(&uid, 0, true)).await;
    let forget = ("DELETE", "/api/v1/agents/{uid}");
    let url = format!("/api/v1/agents/{}", hex::encode(uid));
    c.call(
        forget,
        &url,
        &admin,
        Body::None,
        &[],
        204,
        ("agent_forget", "done"),
    )
    .await;
    c.denied(forget, &url, &pa).await;

    // Retention, deletion.
    let retention = ("POST", "/api/v1/retention/run");
    let url = "/api/v1/retention/run?dry_run=true";
    c.call(
        retention,
        url,
        &admin,
        Body::None,
        &[],
        200,
        ("retention_run", "done"),
    )
    .await;
    c.denied(retention, url, &pa).await;
    let delete = ("DELETE", "/api/v1/packages/{id}");
    let url = format!("/api/v1/packages/{id}");
    c.denied(delete, &url, &pa).await;
    c.call(
        delete,
        &url,
        &admin,
        Body::None,
        &[],
        204,
        ("delete", "done"),
    )
    .await;

    // Users: passwords, roles, deletion; signing out.
    let reset = ("PUT", "/api/v1/users/{id}/password");
    let url = format!("/api/v1/users/{pub_b_id}/password");
    let new = json!({"new_password": "another long password"});
    c.call(
        reset,
        &url,
        &admin,
        Body::Json(new.clone()),
        &[],
        204,
        ("password_change", "done"),
    )
    .await;
    c.denied(reset, &url, &pa).await;
    let own = ("PUT", "/api/v1/users/me/password");
    let change_own = json!({"current_password": password, "new_password": "another long password"});
    c.call(
        own,
        "/api/v1/users/me/password",
        &ci,
        Body::Json(change_own.clone()),
        &[],
        403,
        ("password_change", "refused"),
    )
    .await;
    c.call(
        own,
        "/api/v1/users/me/password",
        &pa,
        Body::Json(change_own),
        &[],
        204,
        ("password_change", "done"),
    )
    .await;
    let role = ("PATCH", "/api/v1/users/{id}");
    let url = format!("/api/v1/users/{pub_b_id}");
    c.call(
        role,
        &url,
        &admin,
        Body::Json(json!({"role": "viewer"})),
        &[],
        200,
        ("role_change", "done"),
    )
    .await;
    c.denied(role, &url, &viewer).await;
    let remove = ("DELETE", "/api/v1/users/{id}");
    let url = format!("/api/v1/users/{gone_id}");
    c.denied(remove, &url, &viewer).await;
    c.call(
        remove,
        &url,
        &admin,
        Body::None,
        &[],
        204,
        ("user_delete", "done"),
    )
    .await;
    let logout = ("POST", "/api/v1/auth/logout");
    c.call(
        logout,
        "/api/v1/auth/logout",
        &viewer,
        Body::None,
        &[],
        204,
        ("logout", "done"),
    )
    .await;

    // Every state-changing route of the OpenAPI document was called (or is named above).
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            if ops.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let called: BTreeSet<(String, String)> = c
        .expected
        .iter()
        .map(|e| (e.method.to_owned(), e.route.to_owned()))
        .chain(
            NOT_AUDITED
                .iter()
                .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned())),
        )
        .collect();
    let missed: Vec<_> = documented.difference(&called).collect();
    assert!(
        missed.is_empty(),
        "routes this test does not call: {missed:?}"
    );
    let unknown: Vec<_> = called.difference(&documented).collect();
    assert!(
        unknown.is_empty(),
        "routes not in the document: {unknown:?}"
    );
    for (method, route) in &documented {
        if NOT_AUDITED
            .iter()
            .any(|(m, p, _)| m == method && p == route)
        {
            continue;
        }
        for outcome in ["done", "refused"] {
            let logout_refusal = route == "/api/v1/auth/logout" && outcome == "refused";
            assert!(
                logout_refusal
                    || c.expected
                        .iter()
                        .any(|e| e.method == method && e.route == route && e.outcome == outcome),
                "{method} {route} is not called with the outcome {outcome}"
            );
        }
    }

    // Each call left its event: found by the request's id, with actor, action, target and
    // outcome. Refusals at the door are recorded beside the answer: wait a moment.
    let mut missing = Vec::new();
    for _ in 0..50 {
        let events = all_events(&app, &admin).await;
        missing = c
            .expected
            .iter()
            .filter(|e| {
                !events.iter().any(|ev| {
                    ev["request_id"] == e.request_id.as_str()
                        && ev["action"] == e.action
                        && ev["outcome"] == e.outcome
                        && ev["actor"].as_str().is_some_and(|a| !a.is_empty())
                        && ["package", "subject", "detail"]
                            .iter()
                            .any(|f| ev[*f].as_str().is_some_and(|t| !t.is_empty()))
                })
            })
            .map(|e| format!("{} {} ({} {})", e.method, e.route, e.action, e.outcome))
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "calls without their audit event: {missing:#?}"
    );
}

async fn all_events(app: &TestApp, admin: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for page in 1.. {
        let res = app
            .get(&format!("/api/v1/audit?per_page=100&page={page}"), admin)
            .await;
        assert_eq!(res.status(), 200);
        let batch: Vec<Value> = res.json().await.unwrap();
        if batch.is_empty() {
            break;
        }
        events.extend(batch);
    }
    events
}
