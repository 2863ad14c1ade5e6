//! The audit log: a publish → yank → restore → delete story, failed logins without the
//! password tried, user, role and token changes, and filters.

use serde_json::{Value, json};

use crate::common::{Backend, TestApp, expect_error};
use agentpkg_store::on_both_backends;

on_both_backends!(
    the_audit_log_tells_who_did_what_and_never_a_secret,
    a_package_change_and_its_audit_event_commit_together,
);

/// Runs `sql` on the server's database, beside it.
fn run_sql(app: &TestApp, postgres: &[&str], sqlite: &[&str]) {
    use diesel::{Connection, RunQueryDsl};
    match agentpkg_store::DatabaseUrl::parse(&app.db_url()).unwrap() {
        agentpkg_store::DatabaseUrl::Postgres(u) => {
            let mut c = diesel::PgConnection::establish(&u).unwrap();
            for statement in postgres {
                diesel::sql_query(*statement).execute(&mut c).unwrap();
            }
        }
        agentpkg_store::DatabaseUrl::Sqlite(p) => {
            let mut c = diesel::SqliteConnection::establish(p.to_str().unwrap()).unwrap();
            for statement in sqlite {
                diesel::sql_query(*statement).execute(&mut c).unwrap();
            }
        }
    }
}

/// A yank or a deletion whose audit event cannot be written does not happen: the change
/// and its record commit together (here the audit log refuses them, as a full disk or a
/// lost permission would).
async fn a_package_change_and_its_audit_event_commit_together(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let p = app
        .publish(&admin, "recorded/1.0.0/linux/amd64", b"recorded build")
        .await;
    let url = format!("/api/v1/packages/{}", p["id"]);
    run_sql(
        &app,
        &[
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'the audit log refuses'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW \
             WHEN (NEW.action IN ('yank', 'delete')) EXECUTE FUNCTION refuse_audit()",
        ],
        &["CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events \
           WHEN NEW.action IN ('yank', 'delete') \
           BEGIN SELECT RAISE(ABORT, 'the audit log refuses'); END"],
    );
    let res = app
        .client
        .patch(app.url(&url))
        .bearer_auth(&admin)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    expect_error(res, 500, "internal").await;
    expect_error(app.delete(&url, &admin).await, 500, "internal").await;
    let still: Value = app.get(&url, &admin).await.json().await.unwrap();
    assert_eq!(
        still["is_active"], true,
        "the yank was not recorded, so it did not happen"
    );
    assert_eq!(
        app.get(&format!("{url}/download"), &admin).await.status(),
        200
    );

    run_sql(
        &app,
        &["DROP TRIGGER refuse_audit ON audit_events"],
        &["DROP TRIGGER refuse_audit"],
    );
    let res = app
        .client
        .patch(app.url(&url))
        .bearer_auth(&admin)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let events: Vec<Value> = app
        .get("/api/v1/audit?action=yank", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["package"], "recorded");
}

async fn events(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/api/v1/audit?{query}"), admin).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn the_audit_log_tells_who_did_what_and_never_a_secret(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let publisher = app.token_for("publisher").await;
    let created = app
        .client
        .post(app.url("/api/v1/tokens"))
        .bearer_auth(&publisher)
        .json(&json!({"name": "ci", "scope": "publish"}))
        .send()
        .await
        .unwrap();
    let token: Value = created.json().await.unwrap();
    let secret = token["secret"].as_str().unwrap().to_owned();

    // Publish with the token, yank and restore, then delete as admin.
    let res = app
        .client
        .put(app.url("/api/v1/packages/opamp-agent/1.2.3/linux/amd64"))
        .bearer_auth(&secret)
        .body("agent")
        .send()
        .await
        .unwrap();
    let id = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    for active in [false, true] {
        let res = app
            .client
            .patch(app.url(&format!("/api/v1/packages/{id}")))
            .bearer_auth(&publisher)
            .json(&json!({"is_active": active}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(
        app.delete(&format!("/api/v1/packages/{id}"), &admin)
            .await
            .status(),
        204
    );
    // A refused upload, and a failed login.
    let res = app
        .client
        .put(app.url("/api/v1/packages/opamp-agent/1.2.4/linux/amd64"))
        .bearer_auth(&secret)
        .header("X-Checksum-Sha256", "0".repeat(64))
        .body("agent")
        .send()
        .await
        .unwrap();
    expect_error(res, 422, "checksum_mismatch").await;
    let wrong = "wrong-password-never-to-be-logged";
    assert_eq!(app.login("admin", wrong).await.status(), 401);

    let story = events(&app, &admin, "package=opamp-agent").await;
    let actions: Vec<&str> = story
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["publish", "yank", "restore", "delete"],
        "{story:?}"
    );
    let publish = story.last().unwrap();
    assert_eq!(publish["token_name"], "ci");
    assert_eq!(publish["package_id"], id);
    assert!(
        publish["detail"]
            .as_str()
            .unwrap()
            .starts_with("1.2.3 linux/amd64")
    );
    assert!(
        publish["address"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1")
    );
    assert!(publish["request_id"].is_string());
    assert_eq!(story[0]["actor"], "admin");

    let refused = events(&app, &admin, "action=upload_refused").await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["detail"], "checksum_mismatch");
    let logins = events(&app, &admin, "action=login").await;
    assert_eq!(logins.len(), 3);
    assert!(
        logins[0]["actor"]
            .as_str()
            .unwrap()
            .starts_with("publisher-")
    );
    assert_eq!(logins[2]["actor"], "admin");
    assert!(logins[0]["actor_id"].is_i64());
    let failed = events(&app, &admin, "action=login_failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["actor"], "admin");
    let all = app.get("/api/v1/audit?per_page=100", &admin).await;
    let total: u64 = all.headers()["x-total-count"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = all.text().await.unwrap();
    assert!(
        !text.contains(wrong) && !text.contains(&secret),
        "a secret reached the audit log"
    );
    let everything: Vec<Value> = serde_json::from_str(&text).unwrap();
    let actions: Vec<&str> = everything
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // Every sign-in is recorded too: the admin's (twice: the test signs in once more to make
    // the publisher), then the publisher's.
    assert_eq!(
        actions,
        [
            "login",
            "login",
            "user_create",
            "login",
            "token_create",
            "publish",
            "yank",
            "restore",
            "delete",
            "upload_refused",
            "login_failed"
        ]
    );
    assert_eq!(total, 11);
    // Filters combine, and a time window excludes.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none = events(&app, &admin, &format!("since={}", urlencode(&later))).await;
    assert!(none.is_empty());
    expect_error(
        app.get("/api/v1/audit?action=rename", &admin).await,
        400,
        "invalid_field",
    )
    .await;
    // Nothing in the API changes or deletes an entry.
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let res = app
            .client
            .request(method.parse().unwrap(), app.url("/api/v1/audit"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert!(
            [404, 405].contains(&res.status().as_u16()),
            "{method}: {}",
            res.status()
        );
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
