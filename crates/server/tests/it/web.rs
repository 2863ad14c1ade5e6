//! The web interface: its security over HTTP on both backends (the session cookie, CSRF,
//! the content security policy, escaping, roles), and the whole of it in a real browser
//! (Playwright driving Debian's Chromium, axe-core checking every page) on PostgreSQL and
//! Garage, which also writes the README's screenshots.

use std::path::Path;
use std::process::Command;

use agentpkg_store::on_both_backends;
use agentpkg_store::testing::Backend;
use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, TestApp, expect_error, tools_dir};

on_both_backends!(
    pages_need_a_session_cookie_that_scripts_cannot_read_and_forms_need_its_csrf_token,
    values_are_escaped_searches_filter_and_viewers_get_no_write_controls,
    the_commands_a_package_page_shows_download_the_package,
    the_package_list_pages_by_place_to_the_end_and_back,
);

/// The package list pages by place: following "Next" from the first page reaches every
/// package once, in order, and "Last" then "Previous" walks back the same way; a place that
/// is not a package's coordinates is refused in words.
async fn the_package_list_pages_by_place_to_the_end_and_back(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let mut published = Vec::new();
    for i in 0..56 {
        let path = format!("paged-{}/1.{}.0/linux/amd64", i % 7, i / 7);
        app.publish(&admin, &path, path.as_bytes()).await;
        published.push(path);
    }
    let (_, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let session = session.unwrap();
    // The packages a page lists, and its pager's links by their words.
    let read = |html: &str| {
        let rows: Vec<String> = html
            .split("href=\"/packages/")
            .skip(1)
            .filter_map(|l| l.split('"').next())
            .filter(|l| l.split('/').count() == 4)
            .map(str::to_owned)
            .collect();
        let link = |words: &str| {
            let pager = html.split("class=\"pager\"").nth(1)?;
            let at = pager.find(words)?;
            let href = pager[..at].rsplit("href=\"").next()?;
            Some(unescape(href.split('"').next()?))
        };
        (
            rows,
            link("Next"),
            link("Previous"),
            link("Last"),
            link("First"),
        )
    };
    let (status, html) = page(&app, &session, "/packages?q=paged-").await;
    assert_eq!(status, 200);
    assert!(html.contains("56 packages"), "{html}");
    let (mut rows, mut next, prev, last, first) = read(&html);
    assert!(
        prev.is_none() && first.is_none(),
        "the first page has nothing before it"
    );
    let last = last.expect("a last page");
    let mut forwards = Vec::new();
    let mut pages = 1;
    loop {
        forwards.extend(rows);
        let Some(link) = next else { break };
        assert!(
            link.contains("after=") && link.contains("q=paged-"),
            "{link}"
        );
        let (status, html) = page(&app, &session, &link).await;
        assert_eq!(status, 200, "{link}");
        (rows, next, _, _, _) = read(&html);
        pages += 1;
    }
    assert_eq!(pages, 3, "25 + 25 + 6");
    let mut expected = published.clone();
    expected.sort_by_key(|p| {
        let parts: Vec<&str> = p.split('/').collect();
        let minor: u32 = parts[1].split('.').nth(1).unwrap().parse().unwrap();
        (parts[0].to_owned(), std::cmp::Reverse(minor))
    });
    assert_eq!(forwards, expected);

    let (_, html) = page(&app, &session, &last).await;
    let (mut rows, next, mut prev, _, first) = read(&html);
    assert!(
        next.is_none() && first.is_some(),
        "the last page has nothing after it"
    );
    let mut backwards = Vec::new();
    loop {
        rows.extend(backwards);
        backwards = rows;
        let Some(link) = prev else { break };
        let (status, html) = page(&app, &session, &link).await;
        assert_eq!(status, 200, "{link}");
        (rows, _, prev, _, _) = read(&html);
    }
    assert_eq!(backwards, expected);

    let (status, html) = page(&app, &session, "/packages?after=..%2F..%2Fetc").await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("name/version/platform/arch"), "{html}");
}

/// The browser test runs on the production backend only (it takes a while).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interface_works_end_to_end_in_chromium_with_no_serious_accessibility_finding() {
    in_the_browser(Backend::Production).await;
}

/// A signed-in session: the cookie header to send, and the page's CSRF token.
pub(crate) struct Session {
    pub(crate) cookie: String,
    csrf: String,
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf-token\" content=\"")
        .expect("the page carries its CSRF token")
        + "name=\"csrf-token\" content=\"".len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// The sign-in form's CSRF token and the cookie holding its twin, as a browser gets them.
async fn login_form(app: &TestApp) -> (String, String) {
    let res = client().get(app.url("/login")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("agentpkg_login_csrf="))
        .expect("the form sets its CSRF cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let html = res.text().await.unwrap();
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("the form carries its CSRF token")
        + "name=\"csrf\" value=\"".len();
    let token = html[at..].split('"').next().unwrap().to_owned();
    (token, cookie.split(';').next().unwrap().to_owned())
}

pub(crate) async fn sign_in(
    app: &TestApp,
    username: &str,
    password: &str,
) -> (reqwest::Response, Option<Session>) {
    let (token, cookie) = login_form(app).await;
    let res = client()
        .post(app.url("/login"))
        .header("Cookie", cookie)
        .form(&[
            ("username", username),
            ("password", password),
            ("next", "/packages"),
            ("csrf", &token),
        ])
        .send()
        .await
        .unwrap();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("agentpkg_session="))
        .map(str::to_owned);
    let Some(set_cookie) = cookie else {
        return (res, None);
    };
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = client()
        .get(app.url("/packages"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    (res, Some(Session { cookie, csrf }))
}

async fn page(app: &TestApp, session: &Session, path: &str) -> (u16, String) {
    let res = client()
        .get(app.url(path))
        .header("Cookie", &session.cookie)
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn post_form(
    app: &TestApp,
    session: &Session,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(app.url(path))
        .header("Cookie", &session.cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn pages_need_a_session_cookie_that_scripts_cannot_read_and_forms_need_its_csrf_token(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let c = client();
    let root = c.get(app.url("/")).send().await.unwrap();
    assert_eq!(
        (
            root.status().as_u16(),
            root.headers()["location"].to_str().unwrap()
        ),
        (303, "/packages")
    );
    let list = c.get(app.url("/packages?q=x")).send().await.unwrap();
    assert_eq!(list.status(), 303);
    assert_eq!(
        list.headers()["location"],
        "/login?next=%2Fpackages%3Fq%3Dx"
    );
    let docs = c.get(app.url("/swagger/index.html")).send().await.unwrap();
    assert_eq!(docs.headers()["location"], "/swagger-ui/");

    // Login CSRF: a form posted from elsewhere (no token, or a token without its cookie)
    // signs nobody in, even with the right password.
    let (token, _) = login_form(&app).await;
    for form in [
        vec![
            ("username", "admin"),
            ("password", crate::common::ADMIN_PASSWORD),
        ],
        vec![
            ("username", "admin"),
            ("password", crate::common::ADMIN_PASSWORD),
            ("csrf", token.as_str()),
        ],
    ] {
        let res = client()
            .post(app.url("/login"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403);
        assert!(
            !res.headers()
                .get_all("set-cookie")
                .iter()
                .any(|v| v.to_str().unwrap().starts_with("agentpkg_session=")),
            "signed in without the form's token"
        );
        assert!(res.text().await.unwrap().contains("came from another site"));
    }

    // A wrong password: the sign-in page again, in words, and no cookie.
    let (res, none) = sign_in(&app, "admin", "not the password").await;
    assert_eq!(res.status(), 401);
    assert!(none.is_none());
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Wrong username or password.")
    );

    let (res, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/packages");
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP here: {set_cookie}"
    );
    let session = session.unwrap();

    let res = client()
        .get(app.url("/packages"))
        .header("Cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let html = res.text().await.unwrap();
    assert!(
        html.contains("No packages yet."),
        "the empty state says what to do"
    );
    assert!(html.contains("href=\"/upload\""));

    // Forms that change something need the session's CSRF token.
    let admin = app.admin_token().await;
    let p = app
        .publish(&admin, "csrf-agent/1.0.0/linux/amd64", b"bytes")
        .await;
    let yank = format!("/manage/{}/yank", p["id"]);
    let forged = post_form(&app, &session, &yank, &[]).await;
    assert_eq!(forged.status(), 403);
    let wrong = post_form(
        &app,
        &session,
        &yank,
        &[("csrf", "0123456789abcdef0123456789abcdef")],
    )
    .await;
    assert_eq!(wrong.status(), 403);
    let still: Value = app
        .get(&format!("/api/v1/packages/{}", p["id"]), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["is_active"], true, "refused forms change nothing");
    let done = post_form(&app, &session, &yank, &[("csrf", &session.csrf)]).await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        done.headers()["location"],
        "/packages/csrf-agent/1.0.0/linux/amd64?done=yanked"
    );
    let yanked: Value = app
        .get(&format!("/api/v1/packages/{}", p["id"]), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(yanked["is_active"], false);

    // The API takes the cookie for reads, and for writes only with the CSRF header.
    let read = client()
        .get(app.url("/api/v1/packages?include_inactive=true"))
        .header("Cookie", &session.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let create = |csrf: Option<&str>| {
        let mut req = client()
            .post(app.url("/api/v1/uploads"))
            .header("Cookie", &session.cookie)
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "5")
            .header(
                "Upload-Metadata",
                "name Y3NyZi1hZ2VudA==,version Mi4wLjA=,platform bGludXg=,arch YW1kNjQ=",
            );
        if let Some(csrf) = csrf {
            req = req.header("X-CSRF-Token", csrf);
        }
        req.send()
    };
    expect_error(create(None).await.unwrap(), 403, "csrf_failed").await;
    expect_error(create(Some("nope")).await.unwrap(), 403, "csrf_failed").await;
    assert_eq!(create(Some(&session.csrf)).await.unwrap().status(), 201);

    // Signing out ends the cookie, and the session itself: the old cookie, replayed, is
    // refused (it was valid until its expiry).
    let out = post_form(&app, &session, "/logout", &[("csrf", &session.csrf)]).await;
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _) = page(&app, &session, "/packages").await;
    assert_eq!(status, 303, "the signed-out session still opens pages");

    // Unknown paths: a page for browsers, the API's JSON for others.
    let (status, html) = page(&app, &session, "/no/such/page").await;
    assert_eq!(status, 404);
    assert!(html.contains("<h1>Not found</h1>"), "{html}");
    expect_error(
        c.get(app.url("/no/such/page")).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
}

async fn values_are_escaped_searches_filter_and_viewers_get_no_write_controls(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let xss = "<script>alert(1)</script>";
    let p = app
        .publish(&admin, "alpha-agent/1.0.0/linux/amd64", b"alpha")
        .await;
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/packages/{}", p["id"])))
        .bearer_auth(&admin)
        .json(&serde_json::json!({ "description": xss }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.publish(&admin, "beta-agent/2.0.0-rc.1/windows/arm64", b"beta")
        .await;
    let (_, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let session = session.unwrap();

    let (status, html) = page(&app, &session, "/packages/alpha-agent/1.0.0/linux/amd64").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{html}"
    );
    assert!(!html.contains(xss), "the description is text, never markup");
    assert!(html.contains(p["checksum"].as_str().unwrap()));
    assert!(html.contains("/api/v1/packages/alpha-agent/1.0.0/linux/amd64/download"));
    assert!(html.contains("action=\"/manage/") && html.contains("/delete\""));

    // Search by name and filters, in the page and in the API.
    let (_, html) = page(&app, &session, "/packages?q=alpha").await;
    assert!(
        html.contains("alpha-agent") && !html.contains("beta-agent"),
        "{html}"
    );
    let (_, html) = page(&app, &session, "/packages?arch=arm64").await;
    assert!(!html.contains("alpha-agent") && html.contains("beta-agent"));
    assert!(html.contains("pre-release"));
    let (_, html) = page(&app, &session, "/packages?q=zzz").await;
    assert!(html.contains("No package matches these filters."));
    let found = app.get("/api/v1/packages?q=ALPHA", &admin).await;
    assert_eq!(found.headers()["x-total-count"], "1");
    let (status, html) = page(&app, &session, "/packages/beta-agent").await;
    assert_eq!(status, 200);
    assert!(html.contains("windows/arm64") && html.contains("2.0.0-rc.1"));

    // A viewer sees no upload, yank, edit or delete control, and is refused them.
    let admin_res = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"username": "web-viewer", "password": "a long enough password", "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin_res.status(), 201);
    let (_, viewer) = sign_in(&app, "web-viewer", "a long enough password").await;
    let viewer = viewer.unwrap();
    let (_, html) = page(&app, &viewer, "/packages/alpha-agent/1.0.0/linux/amd64").await;
    for control in [
        "href=\"/upload\"",
        "/yank\"",
        "/delete\"",
        "/describe\"",
        "href=\"/users\"",
    ] {
        assert!(!html.contains(control), "a viewer sees {control}");
    }
    assert_eq!(page(&app, &viewer, "/upload").await.0, 403);
    assert_eq!(page(&app, &viewer, "/users").await.0, 403);
    let refused = post_form(
        &app,
        &viewer,
        &format!("/manage/{}/yank", p["id"]),
        &[("csrf", &viewer.csrf)],
    )
    .await;
    assert_eq!(refused.status(), 403);
}

async fn in_the_browser(backend: Backend) {
    // A fixed public address: the pages' `curl` lines (and so the screenshots) are the
    // same on every run.
    let app = TestApp::spawn_with(backend, |s| {
        s.server.public_url = "https://agentpkg.example.com".into();
    })
    .await;
    let admin = app.admin_token().await;
    app.publish(
        &admin,
        "otelcol-contrib/0.115.0/linux/amd64",
        vec![7u8; 3 * 1024 * 1024],
    )
    .await;
    app.publish(&admin, "otelcol-contrib/0.115.1/linux/amd64", b"next build")
        .await;
    app.publish(
        &admin,
        "otelcol-contrib/0.116.0-rc.1/linux/arm64",
        b"rc build",
    )
    .await;
    app.publish(
        &admin,
        "otelcol-contrib/0.114.0/windows/amd64",
        b"old build",
    )
    .await;
    // An agent, for the fleet's pages: unhealthy, with an install that failed.
    let viewer = app.token_for("viewer").await;
    let mut hello = crate::fleet::message(&[9; 16], 0, true);
    hello.health = Some(agentpkg_fleet::proto::ComponentHealth {
        healthy: false,
        last_error: "exporter otlp: connection refused".into(),
        ..Default::default()
    });
    crate::fleet::send(&app, &viewer, &hello).await;
    let python = tools_dir().join("venv/bin/python");
    let axe = tools_dir().join("node/node_modules/axe-core/axe.min.js");
    assert!(
        python.exists() && axe.exists(),
        "run ./scripts/tools.sh first"
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let work = tempfile::tempdir().unwrap();
    // A signing key for the keys page.
    let gpg = crate::signing::Gpg::new();
    let fingerprint = gpg.generate("Builds <builds@example.com>", "ed25519", "never", None);
    let subkey = gpg.add_signing_subkey(&fingerprint);
    std::fs::write(work.path().join("key.asc"), gpg.export(&fingerprint)).unwrap();
    let out = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/browser.py"))
        .arg(&app.base)
        .arg(ADMIN_PASSWORD)
        .arg("/packages/otelcol-contrib/0.115.0/linux/amd64")
        .arg(&shots)
        .arg(&axe)
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<&Value> = report["steps"].as_array().unwrap().iter().collect();
    let step = |name: &str| {
        *steps
            .iter()
            .find(|s| s["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {report}"))
    };
    assert!(
        step("root")["url"]
            .as_str()
            .unwrap()
            .ends_with("/login?next=%2Fpackages")
    );
    assert_eq!(
        step("wrong_password")["error"],
        "Wrong username or password."
    );
    let signed_in = step("signed_in");
    assert_eq!(signed_in["http_only"], true);
    assert_eq!(signed_in["same_site"], "Strict");
    assert_eq!(signed_in["script_sees_cookie"], false);

    let uploaded = step("uploaded");
    let progress: Vec<f64> = uploaded["progress"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(progress.last(), Some(&100.0), "{uploaded}");
    assert!(
        progress.iter().any(|p| *p > 0.0 && *p < 100.0),
        "the bar moved through the upload: {progress:?}"
    );
    let stats = uploaded["stats"].as_str().unwrap();
    assert!(stats.starts_with("100 % — 20.0 MiB uploaded"), "{stats}");

    let package = step("package_page");
    assert_eq!(package["description"], "<script>alert(1)</script>");
    assert_eq!(package["script_tags_in_description"], 0);
    assert_eq!(report["dialogs"], serde_json::json!([]), "no script ran");
    let downloaded = step("downloaded");
    assert_eq!(downloaded["sha256"], downloaded["expected"]);
    assert_eq!(package["sha256"], downloaded["expected"]);

    let conflict = step("conflict")["error"].as_str().unwrap();
    assert!(
        conflict.starts_with("Upload refused: ") && conflict.contains("(409 conflict)"),
        "{conflict}"
    );
    let resumed = step("resumed");
    assert!(
        resumed["dropped"].as_str().unwrap().contains("connection"),
        "{resumed}"
    );
    let stats = resumed["stats"].as_str().unwrap();
    assert!(stats.contains("100 % — 20.0 MiB uploaded"), "{stats}");
    // 8 MiB chunks: the first landed before the drop; the second run sent only the rest.
    assert_eq!(resumed["patches"], 4, "{resumed}");
    assert_eq!(step("resumed_download")["same"], true);
    let described = step("described");
    assert_eq!(described["description"], "edited in the browser");
    assert_eq!(described["first_tab"], "Skip to content");

    let names = |name: &str| step(name)["names"].to_string();
    assert!(names("listed").contains("web-demo"));
    assert!(!names("yanked_list").contains("web-demo"));
    assert_eq!(
        step("yanked_name_page")["badges"],
        serde_json::json!(["yanked"])
    );
    assert!(names("restored_list").contains("web-demo"));
    let deleted = step("deleted");
    assert_eq!(deleted["status"], 404);
    assert_eq!(deleted["heading"], "Not found");
    let users = names("users");
    assert!(
        users.contains("web-viewer") && !users.contains("web-temp"),
        "{users}"
    );

    let forged = step("forged_admin");
    assert_eq!(
        (forged["status"].as_u64(), forged["api_status"].as_u64()),
        (Some(403), Some(403))
    );
    let viewer = step("viewer");
    for control in [
        "upload_links",
        "yank_buttons",
        "delete_links",
        "describe_forms",
    ] {
        assert_eq!(viewer[control], 0, "{control}: {viewer}");
    }
    assert_eq!(viewer["upload_status"], 403);
    let bad = step("bad_plan")["error"].as_str().unwrap().to_owned();
    assert!(bad.starts_with("waves: "), "{bad}");
    assert_eq!(step("rollout_started")["state"], "waiting_for_approval");
    let keyboard = step("keyboard");
    for control in ["pause", "resume", "abort", "confirm"] {
        assert!(
            keyboard[control].as_u64().is_some_and(|n| n > 0),
            "{control} not operated by keyboard: {keyboard}"
        );
    }
    let approved = step("approved");
    assert!(
        approved["focused"]
            .as_str()
            .unwrap()
            .starts_with("Approve wave 1"),
        "the keyboard reaches the button: {approved}"
    );
    assert_eq!(approved["notice"], "The wave was approved.");
    assert!(
        approved["steps"]
            .as_str()
            .unwrap()
            .contains("wave 1 approved by admin: canary signed off"),
        "{approved}"
    );
    let aborted = step("aborted");
    assert_eq!(aborted["paused"], "paused");
    assert!(
        ["reverting", "reverted"].contains(&aborted["state"].as_str().unwrap()),
        "{aborted}"
    );
    let agents = step("agents");
    assert_eq!(agents["rows"], 1, "{agents}");
    assert!(
        agents["tiles"].as_str().unwrap().contains("1 unhealthy"),
        "{agents}"
    );
    assert_eq!(agents["healthy_filter_rows"], 0, "{agents}");
    assert!(
        agents["agent_page"]
            .as_str()
            .unwrap()
            .contains("exporter otlp: connection refused"),
        "{agents}"
    );
    let owners = step("owners");
    assert!(
        owners["added"].to_string().contains("web-viewer"),
        "{owners}"
    );
    assert!(
        !owners["removed"].to_string().contains("web-viewer"),
        "{owners}"
    );
    assert!(
        owners["unknown"]
            .as_str()
            .unwrap()
            .contains("there is no user \"nobody-here\""),
        "{owners}"
    );
    assert_eq!(step("viewer_owners")["forms"], 0);
    let keys = step("keys");
    assert!(!keys["bad"].as_str().unwrap().is_empty(), "{keys}");
    assert!(
        keys["listed"].as_str().unwrap().contains(&fingerprint),
        "{keys}"
    );
    // Its signing subkey, under it, in words.
    assert!(
        keys["listed"]
            .as_str()
            .unwrap()
            .contains(&format!("subkey {subkey} EdDSALegacy, signs")),
        "{keys}"
    );
    assert_eq!(keys["after_remove"], 0, "{keys}");
    let signers = step("signers");
    assert!(
        signers["bad"].as_str().unwrap().contains("anchored"),
        "{signers}"
    );
    assert_eq!(
        signers["kept"], "https://token.actions.githubusercontent.com",
        "{signers}"
    );
    assert!(
        signers["listed"]
            .as_str()
            .unwrap()
            .contains("^https://github\\.com/acme/.*$"),
        "{signers}"
    );
    assert_eq!(signers["after_remove"], 0, "{signers}");
    assert_eq!(step("viewer_keys")["forms"], 0);
    let tokens = step("tokens");
    assert!(
        tokens["bad"].as_str().unwrap().contains("packages"),
        "{tokens}"
    );
    assert_eq!(tokens["prefix"], "apk_", "{tokens}");
    assert_eq!(tokens["works"], 200, "{tokens}");
    assert_eq!(tokens["shown_again"], false, "the secret is shown once");
    assert_eq!(tokens["refused"], 401, "{tokens}");
    let audit = step("audit");
    assert_eq!(audit["rows"], 1, "{audit}");
    assert!(
        audit["text"]
            .as_str()
            .unwrap()
            .contains("canary signed off"),
        "{audit}"
    );
    assert!(
        step("audit_bad_day")["error"]
            .as_str()
            .unwrap()
            .contains("is not a day"),
        "{report}"
    );
    assert_eq!(step("viewer_audit")["status"], 403);
    let viewer_rollout = step("viewer_rollout");
    assert_eq!(viewer_rollout["controls"], 0, "{viewer_rollout}");
    assert_eq!(viewer_rollout["create_forms"], 0, "{viewer_rollout}");
    assert_eq!(step("viewer_rollout_post")["status"], 403);
    let forged = step("forged_viewer");
    assert_eq!(
        (
            forged["with_token"].as_u64(),
            forged["without_token"].as_u64()
        ),
        (Some(403), Some(403))
    );

    for s in steps.iter().filter(|s| s["step"] == "layout") {
        assert_eq!(s["overflows"], false, "wider than the screen: {s}");
    }
    let findings: Vec<(&String, &Value)> = report["axe"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    assert!(
        report["axe"].as_object().unwrap().len() >= 34,
        "every page at both widths"
    );
    assert!(
        findings.is_empty(),
        "serious or critical accessibility findings: {findings:?}"
    );
    // Pages answered 401 and 404 on purpose log "Failed to load resource"; anything else
    // (a script error, a refusal by the content security policy) is a fault.
    let script_errors: Vec<&Value> = report["console_errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            !e.as_str()
                .unwrap_or_default()
                .starts_with("Failed to load resource")
        })
        .collect();
    assert!(script_errors.is_empty(), "{script_errors:?}");
    for label in [
        "login",
        "packages",
        "name",
        "package",
        "upload",
        "delete",
        "users",
        "not-found",
        "assignments",
        "assignment",
        "rollout",
        "rollout-abort",
        "agents",
        "agent",
        "audit",
        "tokens",
        "keys",
        "mirror",
        "statistics",
        "retention",
        "teams",
    ] {
        for width in [375, 1440] {
            assert!(shots.join(format!("{label}-{width}.png")).exists());
        }
    }
}

/// The text of the element `<code id="{id}">`, as a person copies it.
fn code_block(html: &str, id: &str) -> String {
    let start = format!("<code id=\"{id}\">");
    let from = html
        .find(&start)
        .unwrap_or_else(|| panic!("no {id} in the page"))
        + start.len();
    let to = from + html[from..].find("</code>").unwrap();
    html[from..to]
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// Each `curl` line of a package's page, run as a person would (in a shell, with their
/// token in `$TOKEN`), fetches exactly the package's bytes.
async fn the_commands_a_package_page_shows_download_the_package(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let bytes = b"the build a page offers".to_vec();
    app.publish(
        &admin,
        "shown-agent/1.2.0/linux/arm64?filename=shown.tar.gz",
        &bytes,
    )
    .await;
    // An older build, so that "latest" has a choice to make.
    app.publish(
        &admin,
        "shown-agent/1.1.0/linux/arm64?filename=shown.tar.gz",
        b"older",
    )
    .await;
    let (_, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let (status, html) = page(
        &app,
        &session.unwrap(),
        "/packages/shown-agent/1.2.0/linux/arm64",
    )
    .await;
    assert_eq!(status, 200);
    for id in ["curl-exact", "curl-latest"] {
        let command = code_block(&html, id);
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg("-c")
            .arg(&command)
            .env("TOKEN", &admin)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{id}: {command}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::fs::read(dir.path().join("shown.tar.gz"))
            .unwrap_or_else(|e| panic!("{id}: {command}: no shown.tar.gz: {e}"));
        assert_eq!(got, bytes, "{id}: {command}");
    }
}

/// Every page an admin can reach from the front page, following every link of every page
/// (fleet, rollouts, keys, tokens, audit and the package pages included), answers: no link
/// leads to a 404 or an error, and every `curl` command a page shows runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_on_every_page_leads_somewhere_and_every_command_shown_runs() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let admin = app.admin_token().await;
    // Something on every page: two builds, an agent, an assignment and its rollout, a token.
    app.publish(
        &admin,
        "linked-agent/1.0.0/linux/amd64?filename=linked.tar.gz",
        b"one",
    )
    .await;
    app.publish(
        &admin,
        "linked-agent/1.1.0/linux/amd64?filename=linked.tar.gz",
        b"two",
    )
    .await;
    let hello = agentpkg_fleet::proto::AgentToServer {
        instance_uid: vec![7; 16],
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
        .json(&serde_json::json!({ "package": "linked-agent", "version": "1.0.0" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let assignment = res.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let res = app
        .client
        .post(app.url(&format!("/api/v1/assignments/{assignment}/rollouts")))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "version": "1.1.0", "waves": [{"percent": 100}], "approval": "each_wave"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (_, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let session = session.unwrap();

    let mut queue = std::collections::VecDeque::from(["/".to_owned()]);
    let mut seen = std::collections::BTreeSet::new();
    let mut commands = std::collections::BTreeSet::new();
    let mut broken = Vec::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) || seen.len() > 400 {
            continue;
        }
        let res = client()
            .get(app.url(&path))
            .header("Cookie", &session.cookie)
            .header("Accept", "text/html")
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        if !(200..400).contains(&status) {
            broken.push(format!("{path}: {status}"));
            continue;
        }
        if let Some(to) = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .filter(|to| to.starts_with('/'))
        {
            queue.push_back(to.to_owned());
            continue;
        }
        let is_html = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        if !is_html {
            continue;
        }
        let html = res.text().await.unwrap();
        for link in html.split("href=\"").skip(1) {
            let link = unescape(link.split('"').next().unwrap_or_default());
            let link = link.split('#').next().unwrap_or_default().to_owned();
            // Same site only; signing out would end the walk.
            if link.starts_with('/') && !link.starts_with("//") && link != "/logout" {
                queue.push_back(link);
            }
        }
        for block in html.split("<code").skip(1) {
            let text = block.split_once('>').map(|(_, t)| t).unwrap_or_default();
            let text = unescape(text.split("</code>").next().unwrap_or_default());
            if text.starts_with("curl ") {
                commands.insert(text);
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that lead nowhere: {broken:?}\n(walked {} pages)",
        seen.len()
    );
    for page in [
        "/agents",
        "/assignments",
        "/keys",
        "/tokens",
        "/audit",
        "/mirror",
    ] {
        assert!(
            seen.contains(page),
            "{page} is not linked from anywhere: {seen:?}"
        );
    }
    assert!(seen.len() > 20, "walked only {seen:?}");
    assert!(!commands.is_empty(), "no page showed a command");
    for command in &commands {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg("-c")
            .arg(command)
            .env("TOKEN", &admin)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The entities askama writes (named and numeric), back to text.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';').filter(|e| *e <= 8) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let text = match entity {
            "quot" => Some('"'),
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match text {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The statistics a person reads: a package page charts its downloads per day (an SVG with
/// one titled bar per day, and the same numbers in a table), and the statistics page ranks
/// names and versions by window and platform, with what storage holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_charted_per_day_and_ranked_on_the_statistics_page() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.stats.flush_secs = 1;
        s.stats.cache_secs = 0;
    })
    .await;
    let admin = app.admin_token().await;
    app.publish(&admin, "charted-agent/2.0.0/linux/arm64", b"charted")
        .await;
    let id = app
        .get("/api/v1/packages/charted-agent/2.0.0/linux/arm64", &admin)
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    for _ in 0..3 {
        let res = app
            .get(
                &format!("/api/v1/packages/{id}/download?redirect=false"),
                &admin,
            )
            .await;
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
    }
    let mut counted = 0;
    for _ in 0..100 {
        let stats: Value = app
            .get(&format!("/api/v1/packages/{id}/stats?days=1"), &admin)
            .await
            .json()
            .await
            .unwrap();
        counted = stats["downloads"].as_u64().unwrap_or(0);
        if counted == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(counted, 3, "the downloads were not counted");
    let today = chrono::Utc::now().date_naive().to_string();
    let (_, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let session = session.unwrap();

    let (status, html) = page(&app, &session, "/packages/charted-agent/2.0.0/linux/arm64").await;
    assert_eq!(status, 200);
    assert_eq!(
        html.matches("<rect class=\"bar\"").count(),
        30,
        "one bar per day"
    );
    assert!(
        html.contains(&format!("<title>{today}: 3 downloads</title>")),
        "today's bar says its number"
    );
    assert!(
        html.contains(&format!("3 downloads across 30 days; most: {today} (3)")),
        "{html}"
    );
    assert!(
        html.contains(&format!("<tr><td>{today}</td><td>3</td></tr>")),
        "the table behind the chart"
    );

    let (status, html) = page(&app, &session, "/stats?days=30").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("<a href=\"/packages/charted-agent\">charted-agent</a></td><td>3</td>"),
        "{html}"
    );
    assert!(html.contains("<td>2.0.0</td><td>3</td>"), "{html}");
    assert!(
        html.contains("<dt>Stored</dt><dd>7 B in 1 objects</dd>"),
        "{html}"
    );
    let (status, html) = page(&app, &session, "/stats?days=7&platform=windows").await;
    assert_eq!(status, 200);
    assert!(html.contains("No downloads in this window."), "{html}");
    let (status, _) = page(&app, &session, "/stats?platform=Linux").await;
    assert_eq!(status, 400);
}

/// An admin reads what the configured retention policies would delete before running
/// them, and the run deletes exactly that; a viewer sees neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reads_the_retention_dry_run_then_runs_it() {
    let app = TestApp::spawn_with(Backend::Embedded, |s| {
        s.retention.policies = vec![agentpkg_model::RetentionPolicySpec {
            rule: "keep_newest".into(),
            versions: Some(1),
            days: None,
            names: vec!["kept-*".into()],
        }];
    })
    .await;
    let admin = app.admin_token().await;
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        app.publish(&admin, &format!("kept-agent/{v}/linux/amd64"), v.as_bytes())
            .await;
    }
    app.publish(&admin, "other-agent/1.0.0/linux/amd64", b"other")
        .await;
    let (_, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let session = session.unwrap();
    let (status, html) = page(&app, &session, "/stats/retention").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("keep the newest 1 versions, names kept-*"),
        "{html}"
    );
    for gone in [
        "kept-agent 1.1.0 linux/amd64",
        "kept-agent 1.0.0 linux/amd64",
    ] {
        assert!(html.contains(gone), "{gone}: {html}");
    }
    assert!(
        !html.contains("kept-agent 1.2.0"),
        "the newest stays: {html}"
    );
    assert!(!html.contains("other-agent"), "{html}");
    // A dry run deleted nothing.
    let listed = |app: &TestApp| {
        let req = app
            .client
            .get(app.url("/api/v1/packages?include_yanked=true"))
            .bearer_auth(&admin);
        async move {
            req.send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!(listed(&app).await, 4);

    let res = post_form(
        &app,
        &session,
        "/stats/retention",
        &[("csrf", session.csrf.as_str())],
    )
    .await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("2 package(s) deleted"), "{html}");
    assert_eq!(listed(&app).await, 2);
    // Without the form's token, nothing runs.
    let res = post_form(&app, &session, "/stats/retention", &[]).await;
    assert_eq!(res.status(), 403);

    let password = "a-viewer-password-of-24ch";
    let res = app
        .client
        .post(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"username": "reader", "password": password, "role": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let (_, reader) = sign_in(&app, "reader", password).await;
    let (status, _) = page(&app, &reader.unwrap(), "/stats/retention").await;
    assert_eq!(status, 403);
}

/// Teams from the web interface: created (the creator its first member), members added
/// and removed through the same gate as the API, a missing user named, and a viewer sees
/// the teams but no control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teams_are_created_and_their_members_changed_from_their_page() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let admin = app.admin_token().await;
    let password = "a-password-of-24-chars!!";
    for (name, role) in [("ana", "publisher"), ("vic", "viewer")] {
        let res = app
            .client
            .post(app.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"username": name, "password": password, "role": role}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let (_, session) = sign_in(&app, "admin", ADMIN_PASSWORD).await;
    let session = session.unwrap();
    let csrf = session.csrf.as_str();
    let res = post_form(
        &app,
        &session,
        "/teams",
        &[("csrf", csrf), ("name", "collectors")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let res = post_form(
        &app,
        &session,
        "/teams/collectors/members",
        &[("csrf", csrf), ("username", "ana")],
    )
    .await;
    assert_eq!(res.status(), 303);
    let teams: Vec<Value> = app.get("/api/v1/teams", &admin).await.json().await.unwrap();
    let members = |teams: &[Value]| -> Vec<String> {
        teams[0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m.as_str()
                    .map_or_else(|| m["username"].to_string(), str::to_owned)
            })
            .collect()
    };
    assert_eq!(members(&teams), ["admin", "ana"]);
    let (status, html) = page(&app, &session, "/teams?done=added").await;
    assert_eq!(status, 200);
    assert!(html.contains("The member was added."), "{html}");
    assert!(
        html.contains("aria-label=\"Remove ana from collectors\""),
        "{html}"
    );

    let res = post_form(
        &app,
        &session,
        "/teams/collectors/members",
        &[("csrf", csrf), ("username", "nobody")],
    )
    .await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("user not found"));
    let res = post_form(
        &app,
        &session,
        "/teams/collectors/members/ana/remove",
        &[("csrf", csrf)],
    )
    .await;
    assert_eq!(res.status(), 303);
    let teams: Vec<Value> = app.get("/api/v1/teams", &admin).await.json().await.unwrap();
    assert_eq!(members(&teams), ["admin"]);

    let (_, viewer) = sign_in(&app, "vic", password).await;
    let viewer = viewer.unwrap();
    let (status, html) = page(&app, &viewer, "/teams").await;
    assert_eq!(status, 200);
    assert!(html.contains("collectors"), "{html}");
    assert!(
        !html.contains("<form method=\"post\" action=\"/teams"),
        "{html}"
    );
    let res = post_form(
        &app,
        &viewer,
        "/teams/collectors/members",
        &[("csrf", viewer.csrf.as_str()), ("username", "vic")],
    )
    .await;
    assert_eq!(res.status(), 403);
}
