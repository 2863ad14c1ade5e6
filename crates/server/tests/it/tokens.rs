//! Access for machines: API tokens by scope and name pattern, on every route of the API
//! document; revocation that reaches a second replica within a second; expiry; password
//! and role changes that end sessions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agentpkg_server::Application;
use agentpkg_store::on_both_backends;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, create_token, expect_error};

on_both_backends!(
    every_route_admits_exactly_the_roles_and_scopes_it_should,
    a_name_belongs_to_its_owners,
    a_team_owns_a_name_together,
    name_patterns_limit_what_a_token_sees_and_publishes,
    tokens_are_shown_once_listed_without_secrets_and_expire,
    password_and_role_changes_end_sessions_but_not_the_account,
    a_token_revokes_only_itself_never_its_siblings,
    a_tokens_names_limit_uploads_in_progress_and_teams_too,
);

async fn call(app: &TestApp, method: &str, path: &str, bearer: Option<&str>) -> reqwest::Response {
    let method: reqwest::Method = method.parse().unwrap();
    let mut req = app.client.request(method.clone(), app.url(path));
    if let Some(bearer) = bearer {
        req = req.bearer_auth(bearer);
    }
    // Bodies that pass the JSON extractors, so that what answers is authorisation.
    req = match (method.as_str(), path) {
        ("POST", "/api/v1/tokens") => req.json(&json!({"name": "x", "scope": "read"})),
        ("POST", "/api/v1/teams") => req.json(&json!({"name": "t"})),
        ("POST", "/api/v1/keys") => req.json(&json!({"key": "not a key", "patterns": ["*"]})),
        ("POST", "/api/v1/sigstore-identities") => req.json(&json!({
            "patterns": ["*"], "issuer": "https://issuer.example", "san_regex": "^x$"
        })),
        ("POST", "/api/v1/uploads/direct") => req.json(&json!({
            "name": "a", "version": "1.0.0", "platform": "linux", "arch": "amd64", "size": 1,
            "sha256": "0000000000000000000000000000000000000000000000000000000000000000"
        })),
        ("PUT", p) if p.ends_with("/signature") => req.body("not a signature"),
        ("POST", "/api/v1/users") => req.json(
            &json!({"username": "x", "password": "a long enough password", "role": "viewer"}),
        ),
        ("PATCH", p) if p.starts_with("/api/v1/users/") => req.json(&json!({"role": "viewer"})),
        ("PATCH", _) => req.json(&json!({"is_active": true})),
        ("PUT", p) if p.contains("password") => {
            req.json(&json!({"new_password": "another long password"}))
        }
        _ => req,
    };
    req.send().await.unwrap()
}

async fn every_route_admits_exactly_the_roles_and_scopes_it_should(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.token_for("admin").await;
    let mut credentials = vec![
        ("viewer session", 0, app.token_for("viewer").await, false),
        (
            "publisher session",
            1,
            app.token_for("publisher").await,
            false,
        ),
        ("admin session", 2, admin.clone(), false),
    ];
    // An admin's tokens of each scope: a read token cannot do what its owner can.
    for (scope, rank) in [("read", 0), ("publish", 1), ("admin", 2)] {
        let (_, secret) = create_token(&app, &admin, json!({"name": scope, "scope": scope})).await;
        credentials.push((scope, rank, secret, true));
    }
    // (method, path template, a concrete path, least role, sessions only). Ids that do not
    // exist are fine: authorisation comes first.
    let routes: Vec<(&str, &str, &str, Option<usize>, bool)> = vec![
        ("POST", "/api/v1/auth/login", "", None, false),
        ("GET", "/api/v1/auth/me", "/api/v1/auth/me", Some(0), false),
        ("GET", "/api/v1/healthz", "/api/v1/healthz", None, false),
        ("GET", "/api/v1/readyz", "/api/v1/readyz", None, false),
        ("GET", "/healthz", "/healthz", None, false),
        ("GET", "/readyz", "/readyz", None, false),
        (
            "GET",
            "/api/v1/packages",
            "/api/v1/packages",
            Some(0),
            false,
        ),
        (
            "POST",
            "/api/v1/packages",
            "/api/v1/packages",
            Some(1),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/latest",
            "/api/v1/packages/latest?name=a&platform=linux&arch=amd64",
            Some(0),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{id}",
            "/api/v1/packages/424242",
            Some(0),
            false,
        ),
        (
            "PATCH",
            "/api/v1/packages/{id}",
            "/api/v1/packages/424242",
            Some(1),
            false,
        ),
        (
            "DELETE",
            "/api/v1/packages/{id}",
            "/api/v1/packages/424242",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{id}/download",
            "/api/v1/packages/424242/download",
            Some(0),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{name}/versions",
            "/api/v1/packages/a/versions",
            Some(0),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{name}/latest/{platform}/{arch}/download",
            "/api/v1/packages/a/latest/linux/amd64/download",
            Some(0),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{name}/{version}/{platform}/{arch}/download",
            "/api/v1/packages/a/1.0.0/linux/amd64/download",
            Some(0),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{name}/{version}/{platform}/{arch}",
            "/api/v1/packages/a/1.0.0/linux/amd64",
            Some(0),
            false,
        ),
        (
            "PUT",
            "/api/v1/packages/{name}/{version}/{platform}/{arch}",
            "/api/v1/packages/a/1.0.0/linux/amd64",
            Some(1),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{name}/owners",
            "/api/v1/packages/a/owners",
            Some(0),
            false,
        ),
        (
            "PUT",
            "/api/v1/packages/{name}/owners/{username}",
            "/api/v1/packages/a/owners/admin",
            Some(1),
            false,
        ),
        (
            "DELETE",
            "/api/v1/packages/{name}/owners/{username}",
            "/api/v1/packages/a/owners/admin",
            Some(1),
            false,
        ),
        ("GET", "/api/v1/teams", "/api/v1/teams", Some(0), false),
        ("POST", "/api/v1/teams", "/api/v1/teams", Some(1), false),
        (
            "PUT",
            "/api/v1/teams/{team}/members/{username}",
            "/api/v1/teams/nosuchteam/members/admin",
            Some(1),
            false,
        ),
        (
            "DELETE",
            "/api/v1/teams/{team}/members/{username}",
            "/api/v1/teams/nosuchteam/members/admin",
            Some(1),
            false,
        ),
        ("GET", "/api/v1/tokens", "/api/v1/tokens", Some(0), false),
        ("POST", "/api/v1/tokens", "/api/v1/tokens", Some(0), true),
        (
            "DELETE",
            "/api/v1/tokens/{id}",
            "/api/v1/tokens/424242",
            Some(0),
            false,
        ),
        ("GET", "/api/v1/users", "/api/v1/users", Some(2), false),
        ("POST", "/api/v1/users", "/api/v1/users", Some(2), false),
        (
            "PATCH",
            "/api/v1/users/{id}",
            "/api/v1/users/424242",
            Some(2),
            false,
        ),
        (
            "DELETE",
            "/api/v1/users/{id}",
            "/api/v1/users/424242",
            Some(2),
            false,
        ),
        (
            "PUT",
            "/api/v1/users/me/password",
            "/api/v1/users/me/password",
            Some(0),
            true,
        ),
        (
            "PUT",
            "/api/v1/users/{id}/password",
            "/api/v1/users/424242/password",
            Some(2),
            false,
        ),
        ("GET", "/metrics", "/metrics", Some(2), false),
        ("GET", "/api/v1/audit", "/api/v1/audit", Some(2), false),
        (
            "GET",
            "/api/v1/packages/{id}/stats",
            "/api/v1/packages/424242/stats",
            Some(0),
            false,
        ),
        (
            "GET",
            "/api/v1/stats/top",
            "/api/v1/stats/top",
            Some(0),
            false,
        ),
        ("POST", "/v1/opamp", "/v1/opamp", Some(0), false),
        (
            "GET",
            "/api/v1/assignments",
            "/api/v1/assignments",
            Some(0),
            false,
        ),
        (
            "GET",
            "/api/v1/assignments/{id}/status",
            "/api/v1/assignments/424242/status",
            Some(0),
            false,
        ),
        (
            "POST",
            "/api/v1/assignments",
            "/api/v1/assignments",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/assignments/{id}",
            "/api/v1/assignments/424242",
            Some(0),
            false,
        ),
        (
            "PATCH",
            "/api/v1/assignments/{id}",
            "/api/v1/assignments/424242",
            Some(2),
            false,
        ),
        (
            "DELETE",
            "/api/v1/assignments/{id}",
            "/api/v1/assignments/424242",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/assignments/{id}/rollouts",
            "/api/v1/assignments/424242/rollouts",
            Some(0),
            false,
        ),
        (
            "POST",
            "/api/v1/assignments/{id}/rollouts",
            "/api/v1/assignments/424242/rollouts",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/assignments/{id}/rollouts/{rollout}",
            "/api/v1/assignments/424242/rollouts/1",
            Some(0),
            false,
        ),
        (
            "POST",
            "/api/v1/assignments/{id}/rollouts/{rollout}/approve",
            "/api/v1/assignments/424242/rollouts/1/approve",
            Some(2),
            false,
        ),
        (
            "POST",
            "/api/v1/assignments/{id}/rollouts/{rollout}/pause",
            "/api/v1/assignments/424242/rollouts/1/pause",
            Some(2),
            false,
        ),
        (
            "POST",
            "/api/v1/assignments/{id}/rollouts/{rollout}/resume",
            "/api/v1/assignments/424242/rollouts/1/resume",
            Some(2),
            false,
        ),
        (
            "POST",
            "/api/v1/assignments/{id}/rollouts/{rollout}/abort",
            "/api/v1/assignments/424242/rollouts/1/abort",
            Some(2),
            false,
        ),
        ("GET", "/api/v1/agents", "/api/v1/agents", Some(0), false),
        (
            "GET",
            "/api/v1/agents/{uid}",
            "/api/v1/agents/abababababababababababababababab",
            Some(0),
            false,
        ),
        (
            "DELETE",
            "/api/v1/agents/{uid}",
            "/api/v1/agents/abababababababababababababababab",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/stats/storage",
            "/api/v1/stats/storage",
            Some(0),
            false,
        ),
        (
            "POST",
            "/api/v1/retention/run",
            "/api/v1/retention/run?dry_run=true",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{id}/signature",
            "/api/v1/packages/424242/signature",
            Some(0),
            false,
        ),
        (
            "PUT",
            "/api/v1/packages/{id}/signature",
            "/api/v1/packages/424242/signature",
            Some(1),
            false,
        ),
        (
            "GET",
            "/api/v1/packages/{name}/{version}/{platform}/{arch}/signature",
            "/api/v1/packages/a/1.0.0/linux/amd64/signature",
            Some(0),
            false,
        ),
        (
            "POST",
            "/api/v1/uploads/direct",
            "/api/v1/uploads/direct",
            Some(1),
            false,
        ),
        (
            "POST",
            "/api/v1/uploads/direct/{id}/complete",
            "/api/v1/uploads/direct/0123456789abcdef0123456789abcdef/complete",
            Some(1),
            false,
        ),
        // tus: discovery is public; the rest needs a publisher (then 412 without the
        // Tus-Resumable header).
        ("OPTIONS", "/api/v1/uploads", "/api/v1/uploads", None, false),
        ("POST", "/api/v1/uploads", "/api/v1/uploads", Some(1), false),
        (
            "HEAD",
            "/api/v1/uploads/{id}",
            "/api/v1/uploads/0123456789abcdef0123456789abcdef",
            Some(1),
            false,
        ),
        (
            "PATCH",
            "/api/v1/uploads/{id}",
            "/api/v1/uploads/0123456789abcdef0123456789abcdef",
            Some(1),
            false,
        ),
        (
            "DELETE",
            "/api/v1/uploads/{id}",
            "/api/v1/uploads/0123456789abcdef0123456789abcdef",
            Some(1),
            false,
        ),
        ("GET", "/api/v1/keys", "/api/v1/keys", Some(0), false),
        ("POST", "/api/v1/keys", "/api/v1/keys", Some(2), false),
        (
            "GET",
            "/api/v1/keys/{fingerprint}",
            "/api/v1/keys/69BEF1F11B6C5E2D0BC01157EEAA4D0602DF1AAA",
            Some(0),
            false,
        ),
        (
            "DELETE",
            "/api/v1/keys/{fingerprint}",
            "/api/v1/keys/69BEF1F11B6C5E2D0BC01157EEAA4D0602DF1AAA",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/sigstore-identities",
            "/api/v1/sigstore-identities",
            Some(0),
            false,
        ),
        (
            "POST",
            "/api/v1/sigstore-identities",
            "/api/v1/sigstore-identities",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/sigstore-identities/{id}",
            "/api/v1/sigstore-identities/424242",
            Some(0),
            false,
        ),
        (
            "DELETE",
            "/api/v1/sigstore-identities/{id}",
            "/api/v1/sigstore-identities/424242",
            Some(2),
            false,
        ),
        (
            "GET",
            "/api/v1/mirrors/status",
            "/api/v1/mirrors/status",
            Some(0),
            false,
        ),
        // Last: it ends each session it is called with.
        (
            "POST",
            "/api/v1/auth/logout",
            "/api/v1/auth/logout",
            Some(0),
            false,
        ),
    ];
    // Every operation of the document has an entry: a new route needs one.
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let covered: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, t, ..)| ((*m).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(
        documented, covered,
        "every documented route needs an entry here"
    );

    for (method, template, path, least, sessions_only) in routes {
        let Some(least) = least else { continue };
        let res = call(&app, method, path, None).await;
        assert_eq!(
            res.status(),
            401,
            "{method} {template} without a credential"
        );
        for (who, rank, bearer, is_token) in &credentials {
            let res = call(&app, method, path, Some(bearer)).await;
            let status = res.status().as_u16();
            if *rank < least || (sessions_only && *is_token) {
                assert_eq!(status, 403, "{who} on {method} {template}");
            } else {
                assert!(
                    ![401, 403].contains(&status),
                    "{who} on {method} {template} got {status}"
                );
            }
        }
    }
}

async fn name_patterns_limit_what_a_token_sees_and_publishes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let publisher = app.token_for("publisher").await;
    let put = |token: String, name: &'static str| {
        let url = app.url(&format!("/api/v1/packages/{name}/1.0.0/linux/amd64"));
        let client = app.client.clone();
        async move {
            client
                .put(url)
                .bearer_auth(token)
                .body(format!("{name} bytes"))
                .send()
                .await
                .unwrap()
        }
    };
    // One package outside the pattern, published with the session.
    let res = put(publisher.clone(), "opamp-agent").await;
    assert_eq!(res.status(), 201);
    let other_id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();

    let (_, limited) = create_token(
        &app,
        &publisher,
        json!({"name": "ci", "scope": "publish", "packages": ["otelcol*"]}),
    )
    .await;
    let res = put(limited.clone(), "otelcol-contrib").await;
    assert_eq!(res.status(), 201);
    let own_id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    // Writes outside the patterns are forbidden, and store nothing.
    expect_error(put(limited.clone(), "nginx-agent").await, 403, "forbidden").await;
    let fields = [
        ("name", "nginx-agent"),
        ("version", "1.0.0"),
        ("platform", "linux"),
        ("arch", "amd64"),
    ];
    let res = app.upload(&limited, b"x".to_vec(), &fields).await;
    expect_error(res, 403, "forbidden").await;
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/packages/{other_id}")))
        .bearer_auth(&limited)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    // Reads outside them are "not found"; lists hold only matching names.
    for path in [
        format!("/api/v1/packages/{other_id}"),
        format!("/api/v1/packages/{other_id}/download"),
        "/api/v1/packages/opamp-agent/versions".to_owned(),
        "/api/v1/packages/opamp-agent/1.0.0/linux/amd64/download".to_owned(),
        "/api/v1/packages/opamp-agent/latest/linux/amd64/download".to_owned(),
        "/api/v1/packages/latest?name=opamp-agent&platform=linux&arch=amd64".to_owned(),
    ] {
        expect_error(app.get(&path, &limited).await, 404, "not_found").await;
    }
    let res = app
        .get(&format!("/api/v1/packages/{own_id}"), &limited)
        .await;
    assert_eq!(res.status(), 200);
    let res = app.get("/api/v1/packages", &limited).await;
    assert_eq!(res.headers()["x-total-count"], "1");
    let names: Vec<String> = res
        .json::<Vec<Value>>()
        .await
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["otelcol-contrib"]);
    let all = app.get("/api/v1/packages", &publisher).await;
    assert_eq!(all.headers()["x-total-count"], "2");
    let (keys, rows) = app.stored().await;
    assert_eq!(
        (keys.len(), rows),
        (2, 2),
        "nothing of the refused uploads stays"
    );
}

async fn tokens_are_shown_once_listed_without_secrets_and_expire(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let viewer = app.token_for("viewer").await;
    // A token's scope never exceeds its owner's role.
    let res = app
        .client
        .post(app.url("/api/v1/tokens"))
        .bearer_auth(&viewer)
        .json(&json!({"name": "too big", "scope": "publish"}))
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (id, secret) = create_token(
        &app,
        &viewer,
        json!({"name": "short-lived", "scope": "read", "expires_at": soon}),
    )
    .await;
    let listed: Vec<Value> = app
        .get("/api/v1/tokens", &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["last_used_at"], Value::Null);
    assert!(!listed[0].to_string().contains(&secret), "{}", listed[0]);
    assert!(listed[0].get("secret").is_none());
    // Used once: recorded.
    assert_eq!(app.get("/api/v1/packages", &secret).await.status(), 200);
    let listed: Vec<Value> = app
        .get("/api/v1/tokens", &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed[0]["last_used_at"].is_string(), "{}", listed[0]);
    // A token cannot make another.
    let res = app
        .client
        .post(app.url("/api/v1/tokens"))
        .bearer_auth(&secret)
        .json(&json!({"name": "child", "scope": "read"}))
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    // Someone else's token does not exist for them.
    let other = app.token_for("viewer").await;
    let res = app.delete(&format!("/api/v1/tokens/{id}"), &other).await;
    expect_error(res, 404, "not_found").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    expect_error(
        app.get("/api/v1/packages", &secret).await,
        401,
        "token_expired",
    )
    .await;
    // Revoked by its owner: gone.
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{id}"), &viewer)
            .await
            .status(),
        204
    );
    let listed: Vec<Value> = app
        .get("/api/v1/tokens", &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty());
}

async fn password_and_role_changes_end_sessions_but_not_the_account(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "ops", "password": "the first password", "role": "admin"}))
        .send()
        .await
        .unwrap();
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let app = &app;
    let login = |password: &'static str| async move {
        let res = app.login("ops", password).await;
        let status = res.status();
        (
            status,
            res.json::<Value>().await.unwrap()["token"]
                .as_str()
                .map(str::to_owned),
        )
    };
    let (_, session) = login("the first password").await;
    let session = session.unwrap();
    let change = |body: Value, bearer: String, path: String| {
        let req = app
            .client
            .put(app.url(&path))
            .bearer_auth(bearer)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    // Your own password needs the current one.
    let res = change(
        json!({"new_password": "the second password"}),
        session.clone(),
        "/api/v1/users/me/password".into(),
    )
    .await;
    expect_error(res, 400, "invalid_field").await;
    let res = change(
        json!({"current_password": "wrong wrong wrong", "new_password": "the second password"}),
        session.clone(),
        "/api/v1/users/me/password".into(),
    )
    .await;
    expect_error(res, 400, "invalid_field").await;
    let res = change(
        json!({"current_password": "the first password", "new_password": "the second password"}),
        session.clone(),
        "/api/v1/users/me/password".into(),
    )
    .await;
    assert_eq!(res.status(), 204);
    expect_error(
        app.get("/api/v1/packages", &session).await,
        401,
        "token_revoked",
    )
    .await;
    assert_eq!(login("the first password").await.0, 401);
    let (_, session) = login("the second password").await;
    let session = session.unwrap();
    // An admin resets it without the current one.
    let res = change(
        json!({"new_password": "the third password"}),
        admin.clone(),
        format!("/api/v1/users/{id}/password"),
    )
    .await;
    assert_eq!(res.status(), 204);
    expect_error(
        app.get("/api/v1/packages", &session).await,
        401,
        "token_revoked",
    )
    .await;
    let (_, session) = login("the third password").await;
    let session = session.unwrap();
    // Demoted: the admin session ends; a new one has the new role.
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["role"], "viewer");
    expect_error(
        app.get("/api/v1/users", &session).await,
        401,
        "token_revoked",
    )
    .await;
    let (_, session) = login("the third password").await;
    expect_error(
        app.get("/api/v1/users", &session.unwrap()).await,
        403,
        "forbidden",
    )
    .await;
}

/// Waits (bounded) until `path` answers `status` with `bearer`; returns how long it took.
async fn until(app_base: &str, path: &str, bearer: &str, status: u16) -> Duration {
    let started = Instant::now();
    let client = reqwest::Client::new();
    loop {
        let res = client
            .get(format!("{app_base}{path}"))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap();
        if res.status().as_u16() == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} still answers {} after 5 s",
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_ends_the_session_on_every_replica_though_it_has_not_expired() {
    let app = TestApp::spawn(Backend::Production).await;
    let second = Application::build(app.settings.clone()).await.unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());

    let viewer = app.token_for("viewer").await;
    let (_, secret) = create_token(&app, &viewer, json!({"name": "kept", "scope": "read"})).await;
    // Known (and cached) on the second replica first.
    until(&other, "/api/v1/auth/me", &viewer, 200).await;
    // An API token is not signed out, it is revoked.
    let res = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "not_a_session").await;
    let res = app
        .client
        .post(app.url("/api/v1/auth/logout"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // Refused here at once, there within the freshness interval (it was: valid until its
    // expiry, an hour later).
    expect_error(
        app.get("/api/v1/auth/me", &viewer).await,
        401,
        "token_revoked",
    )
    .await;
    let took = until(&other, "/api/v1/auth/me", &viewer, 401).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The user's other credentials go on.
    assert_eq!(app.get("/api/v1/auth/me", &secret).await.status(), 200);
    let admin = app.admin_token().await;
    let events: Vec<Value> = app
        .get("/api/v1/audit?action=logout", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0]["actor"].as_str().unwrap().starts_with("viewer-"));
    handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_a_second_replica_within_a_second() {
    let app = TestApp::spawn(Backend::Production).await;
    // A second replica over the same database and bucket.
    let second = Application::build(app.settings.clone()).await.unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());

    let admin = app.admin_token().await;
    let publisher = app.token_for("publisher").await;
    let (token_id, secret) =
        create_token(&app, &publisher, json!({"name": "agent", "scope": "read"})).await;
    let make_admin = async |name: &str| {
        let res = app
            .client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&json!({"username": name, "password": "a long enough password", "role": "admin"}))
            .send()
            .await
            .unwrap();
        let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        let res = app.login(name, "a long enough password").await;
        let token = res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        (id, token)
    };
    let (doomed_id, doomed) = make_admin("doomed").await;
    let (demoted_id, demoted) = make_admin("demoted").await;
    // All work on the second replica first (and are cached there).
    for bearer in [&secret, &doomed, &demoted] {
        until(&other, "/api/v1/packages", bearer, 200).await;
    }
    until(&other, "/api/v1/users", &demoted, 200).await;

    // Changed on the first replica…
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{token_id}"), &publisher)
            .await
            .status(),
        204
    );
    assert_eq!(
        app.delete(&format!("/api/v1/users/{doomed_id}"), &admin)
            .await
            .status(),
        204
    );
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/users/{demoted_id}")))
        .bearer_auth(&admin)
        .json(&json!({"role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // …refused on the first at once, and on the second within the freshness interval.
    for bearer in [&secret, &doomed] {
        expect_error(
            app.get("/api/v1/packages", bearer).await,
            401,
            "token_revoked",
        )
        .await;
    }
    let mut slowest = Duration::ZERO;
    for (bearer, path) in [
        (&secret, "/api/v1/packages"),
        (&doomed, "/api/v1/packages"),
        (&demoted, "/api/v1/users"),
    ] {
        let took = until(&other, path, bearer, 401).await;
        slowest = slowest.max(took);
    }
    eprintln!("revocation reached the second replica within {slowest:?}");
    assert!(slowest <= Duration::from_millis(1500), "took {slowest:?}");
    handle.stop(false).await;
}

/// A login from `address`, through the test server (trusted as a proxy for it).
async fn login_as(base: &str, user: &str, password: &str, address: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/login"))
        .header("X-Forwarded-For", address)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_address_on_every_replica() {
    let app = TestApp::spawn_with(Backend::Production, |s| {
        s.server.trusted_proxies = vec!["127.0.0.1".into()];
        s.auth.login_attempts = 3;
        s.auth.login_backoff_secs = 30;
    })
    .await;
    let second = Application::build(app.settings.clone()).await.unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let handle = second.handle();
    tokio::spawn(second.run_until_stopped());
    let password = crate::common::ADMIN_PASSWORD;
    let guesser = "203.0.113.7";

    for _ in 0..3 {
        let res = login_as(&app.base, "admin", "a wrong guess of a password", guesser).await;
        expect_error(res, 401, "invalid_credentials").await;
    }
    // Blocked now, even with the right password, on either replica.
    for base in [&app.base, &other] {
        let res = login_as(base, "admin", password, guesser).await;
        assert_eq!(res.status(), 429);
        let wait: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&wait), "Retry-After: {wait}");
        expect_error(res, 429, "too_many_attempts").await;
    }
    // The real user, elsewhere, is not locked out.
    let res = login_as(&other, "admin", password, "198.51.100.20").await;
    assert_eq!(res.status(), 200);
    // X-Forwarded-For from a peer that is not a trusted proxy is not believed: without
    // trust, every request is the peer's own.
    let untrusted = TestApp::spawn_with(Backend::Embedded, |s| s.auth.login_attempts = 2).await;
    for _ in 0..2 {
        let res = login_as(
            &untrusted.base,
            "admin",
            "a wrong guess of a password",
            "192.0.2.1",
        )
        .await;
        assert_eq!(res.status(), 401);
    }
    let res = login_as(&untrusted.base, "admin", password, "192.0.2.99").await;
    assert_eq!(
        res.status(),
        429,
        "a forged X-Forwarded-For escaped the throttle"
    );
    handle.stop(false).await;
}

/// Creates a user with `role` and returns (username, session token).
async fn user(app: &TestApp, admin: &str, name: &str, role: &str) -> String {
    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(admin)
        .json(&json!({"username": name, "password": "a long enough password", "role": role}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = app.login(name, "a long enough password").await;
    res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn a_name_belongs_to_its_owners(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let alice = user(&app, &admin, "alice", "publisher").await;
    let mallory = user(&app, &admin, "mallory", "publisher").await;
    let put = |token: &str, version: &str| {
        let req = app
            .client
            .put(app.url(&format!(
                "/api/v1/packages/opamp-agent/{version}/linux/amd64"
            )))
            .bearer_auth(token)
            .body(format!("agent {version}"));
        async move { req.send().await.unwrap() }
    };
    let owners = || async {
        let res = app.get("/api/v1/packages/opamp-agent/owners", &alice).await;
        let list: Vec<Value> = res.json().await.unwrap();
        list.iter()
            .map(|o| o["username"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    expect_error(
        app.get("/api/v1/packages/opamp-agent/owners", &alice).await,
        404,
        "not_found",
    )
    .await;
    // The first publisher claims the name.
    let res = put(&alice, "1.0.0").await;
    assert_eq!(res.status(), 201);
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    assert_eq!(owners().await, ["alice"]);
    // Another publisher may not publish, yank, describe, or make themselves an owner.
    expect_error(put(&mallory, "99.0.0").await, 403, "forbidden").await;
    let fields = [
        ("name", "opamp-agent"),
        ("version", "99.0.1"),
        ("platform", "linux"),
        ("arch", "amd64"),
    ];
    expect_error(
        app.upload(&mallory, b"x".to_vec(), &fields).await,
        403,
        "forbidden",
    )
    .await;
    for body in [
        json!({"is_active": false}),
        json!({"description": "mine now"}),
    ] {
        let res = app
            .client
            .patch(app.url(&format!("/api/v1/packages/{id}")))
            .bearer_auth(&mallory)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(res, 403, "forbidden").await;
    }
    let res = app
        .client
        .put(app.url("/api/v1/packages/opamp-agent/owners/mallory"))
        .bearer_auth(&mallory)
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    // Nor may a token of theirs, whatever its patterns.
    let (_, token) = create_token(
        &app,
        &mallory,
        json!({"name": "ci", "scope": "publish", "packages": ["opamp-*"]}),
    )
    .await;
    expect_error(put(&token, "99.0.2").await, 403, "forbidden").await;
    let (keys, rows) = app.stored().await;
    assert_eq!(
        (keys.len(), rows),
        (1, 1),
        "nothing of the refused uploads stays"
    );

    // Added as a co-owner by alice, mallory may.
    let res = app
        .client
        .put(app.url("/api/v1/packages/opamp-agent/owners/mallory"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(owners().await, ["alice", "mallory"]);
    assert_eq!(put(&mallory, "1.1.0").await.status(), 201);
    assert_eq!(put(&token, "1.2.0").await.status(), 201);
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/packages/{id}")))
        .bearer_auth(&mallory)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // An admin transfers the name: adds the new owner, removes the old ones.
    let bob = user(&app, &admin, "bob", "publisher").await;
    for (method, who) in [("PUT", "bob"), ("DELETE", "alice"), ("DELETE", "mallory")] {
        let res = app
            .client
            .request(
                method.parse().unwrap(),
                app.url(&format!("/api/v1/packages/opamp-agent/owners/{who}")),
            )
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "{method} {who}");
    }
    assert_eq!(owners().await, ["bob"]);
    expect_error(put(&alice, "2.0.0").await, 403, "forbidden").await;
    assert_eq!(put(&bob, "2.0.0").await.status(), 201);
    // The last owner stays.
    let res = app
        .client
        .delete(app.url("/api/v1/packages/opamp-agent/owners/bob"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    expect_error(res, 409, "conflict").await;
    let audit = |outcome: &'static str| {
        let app = &app;
        let admin = &admin;
        async move {
            let events: Vec<Value> = app
                .get(
                    &format!("/api/v1/audit?action=owner_add&outcome={outcome}"),
                    admin,
                )
                .await
                .json()
                .await
                .unwrap();
            events
        }
    };
    assert_eq!(audit("done").await.len(), 2);
    // Refusals by the gate are recorded too, with the actor and the reason.
    let refused = audit("refused").await;
    assert!(!refused.is_empty());
    assert!(
        refused
            .iter()
            .all(|e| e["actor"].is_string() && !e["detail"].as_str().unwrap().is_empty())
    );
}

async fn a_team_owns_a_name_together(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let alice = user(&app, &admin, "alice", "publisher").await;
    let bob = user(&app, &admin, "bob", "publisher").await;
    let carol = user(&app, &admin, "carol", "publisher").await;
    let send = |method: &str, path: String, token: &str| {
        let req = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(token);
        async move { req.send().await.unwrap() }
    };
    let put = |token: &str, version: &str| {
        let req = app
            .client
            .put(app.url(&format!("/api/v1/packages/otelcol/{version}/linux/amd64")))
            .bearer_auth(token)
            .body(format!("otelcol {version}"));
        async move { req.send().await.unwrap() }
    };
    assert_eq!(put(&alice, "1.0.0").await.status(), 201);
    let res = app
        .client
        .post(app.url("/api/v1/teams"))
        .bearer_auth(&alice)
        .json(&json!({"name": "platform"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Only members change a team.
    let res = send("PUT", "/api/v1/teams/platform/members/carol".into(), &carol).await;
    expect_error(res, 403, "forbidden").await;
    let res = send("PUT", "/api/v1/teams/platform/members/bob".into(), &alice).await;
    assert_eq!(
        res.json::<Value>().await.unwrap()["members"],
        json!(["alice", "bob"])
    );
    // The team owns the name: its members publish, others do not.
    expect_error(put(&bob, "1.1.0").await, 403, "forbidden").await;
    let res = send(
        "PUT",
        "/api/v1/packages/otelcol/owners/team:platform".into(),
        &alice,
    )
    .await;
    assert_eq!(res.status(), 204);
    assert_eq!(put(&bob, "1.1.0").await.status(), 201);
    expect_error(put(&carol, "1.2.0").await, 403, "forbidden").await;
    // Alice may leave as a person: the team still owns it, and she is still in the team.
    let res = send(
        "DELETE",
        "/api/v1/packages/otelcol/owners/alice".into(),
        &alice,
    )
    .await;
    assert_eq!(res.status(), 204);
    let owners: Vec<Value> = app
        .get("/api/v1/packages/otelcol/owners", &carol)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        owners,
        [json!({"team_id": owners[0]["team_id"], "team": "platform"})]
    );
    assert_eq!(put(&alice, "1.3.0").await.status(), 201);
    // The last owner, a team, stays; leaving the team removes the right.
    let res = send(
        "DELETE",
        "/api/v1/packages/otelcol/owners/team:platform".into(),
        &bob,
    )
    .await;
    expect_error(res, 409, "conflict").await;
    let res = send(
        "DELETE",
        "/api/v1/teams/platform/members/bob".into(),
        &alice,
    )
    .await;
    assert_eq!(res.status(), 200);
    expect_error(put(&bob, "1.4.0").await, 403, "forbidden").await;
    let res = send(
        "DELETE",
        "/api/v1/teams/platform/members/alice".into(),
        &alice,
    )
    .await;
    expect_error(res, 409, "conflict").await;
}

async fn a_token_revokes_only_itself_never_its_siblings(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let publisher = app.token_for("publisher").await;
    let (ci_id, ci) =
        create_token(&app, &publisher, json!({"name": "ci", "scope": "publish"})).await;
    let (fleet_id, fleet) = create_token(
        &app,
        &publisher,
        json!({"name": "fleet", "scope": "read", "packages": ["public-*"]}),
    )
    .await;
    // The fleet's limited read token cannot revoke its owner's CI token (it could).
    let refused = expect_error(
        app.delete(&format!("/api/v1/tokens/{ci_id}"), &fleet).await,
        403,
        "forbidden",
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only itself"),
        "{refused}"
    );
    assert_eq!(app.get("/api/v1/auth/me", &ci).await.status(), 200);
    // It may revoke itself; its owner, signed in, revokes any of theirs.
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{fleet_id}"), &fleet)
            .await
            .status(),
        204
    );
    assert_eq!(
        app.delete(&format!("/api/v1/tokens/{ci_id}"), &publisher)
            .await
            .status(),
        204
    );
}

async fn a_tokens_names_limit_uploads_in_progress_and_teams_too(backend: Backend) {
    use base64::Engine;
    let app = TestApp::spawn(backend).await;
    let publisher = app.token_for("publisher").await;
    let (_, limited) = create_token(
        &app,
        &publisher,
        json!({"name": "public", "scope": "publish", "packages": ["public-*"]}),
    )
    .await;
    // The owner starts a resumable upload of secret-agent…
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let res = app
        .client
        .post(app.url("/api/v1/uploads"))
        .bearer_auth(&publisher)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .header(
            "Upload-Metadata",
            format!(
                "name {},version {},platform {},arch {}",
                b64("secret-agent"),
                b64("1.0.0"),
                b64("linux"),
                b64("amd64")
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    // …which the owner's token limited to public-* neither sees nor continues (it could).
    let head = |bearer: &str| {
        app.client
            .head(app.url(&location))
            .bearer_auth(bearer)
            .header("Tus-Resumable", "1.0.0")
            .send()
    };
    assert_eq!(head(&publisher).await.unwrap().status(), 200);
    assert_eq!(head(&limited).await.unwrap().status(), 404);
    let res = app
        .client
        .patch(app.url(&location))
        .bearer_auth(&limited)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(vec![1u8; 10])
        .send()
        .await
        .unwrap();
    expect_error(res, 404, "not_found").await;
    expect_error(
        app.get("/api/v1/packages/secret-agent/versions", &publisher)
            .await,
        404,
        "not_found",
    )
    .await;

    // Nor does it complete its owner's direct upload of secret-agent (S3 only).
    if backend == Backend::Production {
        let res = app
            .client
            .post(app.url("/api/v1/uploads/direct"))
            .bearer_auth(&publisher)
            .json(&json!({
                "name": "secret-agent", "version": "2.0.0", "platform": "linux",
                "arch": "amd64", "size": 3,
                "sha256": "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let complete = res.json::<Value>().await.unwrap()["complete_url"]
            .as_str()
            .unwrap()
            .to_owned();
        let finish = |bearer: &str| {
            app.client
                .post(app.url(&complete))
                .bearer_auth(bearer)
                .send()
        };
        expect_error(finish(&limited).await.unwrap(), 404, "not_found").await;
        // Its owner is told the bytes are not there yet: the grant stands.
        let res = finish(&publisher).await.unwrap();
        assert_ne!(res.status(), 404);
    }

    // Teams own names beyond the token's: it may not make or change one.
    let res = app
        .client
        .post(app.url("/api/v1/teams"))
        .bearer_auth(&publisher)
        .json(&json!({"name": "builders"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let other = app.token_for("viewer").await;
    let other_name = app
        .get("/api/v1/auth/me", &other)
        .await
        .json::<Value>()
        .await
        .unwrap()["username"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = app
        .client
        .put(app.url(&format!("/api/v1/teams/builders/members/{other_name}")))
        .bearer_auth(&limited)
        .send()
        .await
        .unwrap();
    let refused = expect_error(res, 403, "forbidden").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot change teams"),
        "{refused}"
    );
    let res = app
        .client
        .post(app.url("/api/v1/teams"))
        .bearer_auth(&limited)
        .json(&json!({"name": "sneaky"}))
        .send()
        .await
        .unwrap();
    expect_error(res, 403, "forbidden").await;
    // The owner, signed in, still does.
    let res = app
        .client
        .put(app.url(&format!("/api/v1/teams/builders/members/{other_name}")))
        .bearer_auth(&publisher)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Team changes are in the audit log, with who and whom.
    let admin = app.admin_token().await;
    let added: Vec<Value> = app
        .get("/api/v1/audit?action=member_add&outcome=done", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["subject"], other_name.as_str());
    assert_eq!(added[0]["detail"], "team:builders");
    let created: Vec<Value> = app
        .get("/api/v1/audit?action=team_create&outcome=done", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(created.len(), 1, "{created:?}");
    // The limited token's attempts are recorded as refused, with the token and why.
    let refused: Vec<Value> = app
        .get("/api/v1/audit?outcome=refused", &admin)
        .await
        .json()
        .await
        .unwrap();
    let tried: Vec<(&str, &str)> = refused
        .iter()
        .filter(|e| e["token_name"] == "public")
        .map(|e| (e["action"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert!(
        tried.contains(&(
            "member_add",
            "a token limited to some names cannot change teams (a team owns other names too)"
        )),
        "{tried:?}"
    );
    assert!(tried.iter().any(|(a, _)| *a == "team_create"), "{tried:?}");
}
