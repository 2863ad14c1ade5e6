//! Authentication and authorisation: tokens that are missing, malformed, forged, expired
//! or not ours are 401; a role too small is 403; every route but login and health needs a
//! token.

use jwt_simple::prelude::*;
use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, Backend, JWT_SECRET, TestApp, expect_error};
use agentpkg_store::on_both_backends;

on_both_backends!(
    bad_tokens_are_401_with_a_stable_code,
    each_role_reaches_exactly_its_routes,
    login_refuses_wrong_passwords_and_unknown_users_alike,
    admins_manage_users,
);

#[derive(Serialize, Deserialize)]
struct Extra {
    uid: i64,
    role: String,
    /// The credentials version the token was issued at (a new user's is 0).
    ver: i64,
}

fn token_with(key: &HS256Key, tweak: impl FnOnce(&mut JWTClaims<Extra>)) -> String {
    let mut claims = Claims::with_custom_claims(
        Extra {
            uid: 1,
            role: "admin".into(),
            ver: 0,
        },
        Duration::from_secs(600),
    )
    .with_issuer("agentpkg")
    .with_subject("admin");
    tweak(&mut claims);
    key.authenticate(claims).unwrap()
}

fn b64(data: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(data).unwrap()
}

async fn bad_tokens_are_401_with_a_stable_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ours = HS256Key::from_bytes(JWT_SECRET.as_bytes());
    let now = Clock::now_since_epoch();
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(br#"{"iss":"agentpkg","sub":"admin","uid":1,"role":"admin","exp":99999999999}"#)
    );
    let hs512 = HS512Key::from_bytes(JWT_SECRET.as_bytes())
        .authenticate(
            Claims::with_custom_claims(
                Extra {
                    uid: 1,
                    role: "admin".into(),
                    ver: 0,
                },
                Duration::from_secs(600),
            )
            .with_issuer("agentpkg"),
        )
        .unwrap();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "missing_token"),
        (
            "not bearer",
            Some("Basic YWRtaW46YWRtaW4=".into()),
            "invalid_token",
        ),
        ("garbage", Some("Bearer not.a.jwt".into()), "invalid_token"),
        ("empty", Some("Bearer ".into()), "invalid_token"),
        (
            "wrong signature",
            Some(format!(
                "Bearer {}",
                token_with(
                    &HS256Key::from_bytes(b"another secret of at least 32 bytes..."),
                    |_| {}
                )
            )),
            "invalid_token",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                token_with(&ours, |c| {
                    c.issued_at = Some(now - Duration::from_secs(7200));
                    c.expires_at = Some(now - Duration::from_secs(3600));
                })
            )),
            "token_expired",
        ),
        (
            "issued in the future",
            Some(format!(
                "Bearer {}",
                token_with(&ours, |c| c.issued_at =
                    Some(now + Duration::from_secs(3600)))
            )),
            "invalid_token",
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                token_with(&ours, |c| c.issuer = Some("someone-else".into()))
            )),
            "invalid_token",
        ),
        (
            "alg none",
            Some(format!("Bearer {alg_none}")),
            "invalid_token",
        ),
        (
            "wrong algorithm",
            Some(format!("Bearer {hs512}")),
            "invalid_token",
        ),
    ];
    for (what, header, code) in cases {
        let mut req = app.client.get(app.url("/api/v1/packages"));
        if let Some(h) = header {
            req = req.header("Authorization", h);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer", "{what}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
    }
    // A genuine token made with the same secret works: the cases above fail for their
    // own reason, not for the secret.
    let good = token_with(&ours, |_| {});
    let res = app.get("/api/v1/packages", &good).await;
    assert_eq!(res.status(), 200);
    // Issued by a replica whose clock runs 10 s ahead: within auth.clock_skew_secs.
    let ahead = token_with(&ours, |c| {
        c.issued_at = Some(now + Duration::from_secs(10));
        c.invalid_before = Some(now + Duration::from_secs(10));
    });
    let res = app.get("/api/v1/packages", &ahead).await;
    assert_eq!(res.status(), 200, "a token from a replica 10 s ahead");
}

async fn each_role_reaches_exactly_its_routes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let tokens = [
        ("viewer", app.token_for("viewer").await),
        ("publisher", app.token_for("publisher").await),
        ("admin", app.token_for("admin").await),
    ];
    let rank = |role: &str| {
        ["viewer", "publisher", "admin"]
            .iter()
            .position(|r| *r == role)
            .unwrap()
    };
    // (method, path, least role). Ids that do not exist are fine: authorisation comes first.
    let routes = [
        ("GET", "/api/v1/packages", "viewer"),
        (
            "GET",
            "/api/v1/packages/latest?name=a&platform=linux&arch=amd64",
            "viewer",
        ),
        ("GET", "/api/v1/packages/424242", "viewer"),
        ("GET", "/api/v1/packages/424242/download", "viewer"),
        ("POST", "/api/v1/packages", "publisher"),
        ("DELETE", "/api/v1/packages/424242", "admin"),
        ("GET", "/api/v1/users", "admin"),
        ("POST", "/api/v1/users", "admin"),
        ("DELETE", "/api/v1/users/424242", "admin"),
    ];
    for (method, path, least) in routes {
        let method: reqwest::Method = method.parse().unwrap();
        let anonymous = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{method} {path} without a token");
        for (role, token) in &tokens {
            let res = app
                .client
                .request(method.clone(), app.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            if rank(role) < rank(least) {
                expect_error(res, 403, "forbidden").await;
            } else {
                assert!(
                    ![401, 403].contains(&res.status().as_u16()),
                    "{role} on {method} {path} got {}",
                    res.status()
                );
            }
        }
    }
}

async fn login_refuses_wrong_passwords_and_unknown_users_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (user, password) in [
        ("admin", "wrong password here"),
        ("nobody", ADMIN_PASSWORD),
        ("admin", ""),
    ] {
        let res = app.login(user, password).await;
        let body = expect_error(res, 401, "invalid_credentials").await;
        assert_eq!(body["error"]["message"], "invalid username or password");
    }
    let res = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(res, 400, "invalid_json").await;
    let res = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert!(body["expires_at"].as_str().is_some());
}

async fn admins_manage_users(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let create = |body: Value| {
        app.client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let res = create(serde_json::json!({"username": "ci-bot", "password": "a long enough password", "role": "publisher"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["role"], "publisher");
    assert!(user.get("password_hash").is_none());
    let res = create(serde_json::json!({"username": "ci-bot", "password": "a long enough password", "role": "viewer"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let res =
        create(serde_json::json!({"username": "weak", "password": "short", "role": "viewer"}))
            .await
            .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["field"],
        "password"
    );
    let res = create(
        serde_json::json!({"username": "x", "password": "a long enough password", "role": "root"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);

    let list: Vec<Value> = app.get("/api/v1/users", &admin).await.json().await.unwrap();
    let names: Vec<_> = list
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "ci-bot"]);

    let delete = |id: &Value| {
        app.client
            .delete(app.url(&format!("/api/v1/users/{id}")))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(delete(&user["id"]).await.unwrap().status(), 204);
    assert_eq!(delete(&user["id"]).await.unwrap().status(), 404);
    // An admin cannot delete themselves.
    assert_eq!(delete(&list[0]["id"]).await.unwrap().status(), 409);
    let res = app.login("ci-bot", "a long enough password").await;
    assert_eq!(res.status(), 401);
}
