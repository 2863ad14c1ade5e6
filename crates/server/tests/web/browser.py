"""The web interface in a real browser, for the tests: Playwright (PyPI) drives Debian's
Chromium against the running server; axe-core (npm) checks each page's accessibility.

    browser.py BASE ADMIN_PASSWORD KEEP_PATH SCREENSHOT_DIR AXE_JS WORK_DIR

KEEP_PATH is a package page (a package the test uploaded through the API) that a viewer
opens. Prints one JSON object: what was seen at each step, for the test to assert.
"""

import hashlib
import json
import os
import sys

from playwright.sync_api import sync_playwright

base, admin_password, keep_path, shots, axe_js, work = sys.argv[1:7]
report = {"steps": [], "axe": {}, "dialogs": [], "console_errors": []}
axe_source = open(axe_js, encoding="utf-8").read()


def step(name, **seen):
    report["steps"].append({"step": name, **seen})


def axe(page, label):
    page.evaluate(axe_source)
    found = page.evaluate(
        """() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        targets: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})))"""
    )
    report["axe"][label] = found


def by_keyboard(page, selector, limit=80):
    """Tabs from the top of the page until `selector` has the focus, presses Enter there,
    and says how many Tabs it took."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    for n in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => !!document.activeElement && document.activeElement.matches(s)", selector):
            page.keyboard.press("Enter")
            return n
    raise Exception(f"{selector}: not reached with {limit} presses of Tab")


def sign_in(page, username, password):
    page.goto(base + "/")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/packages**")


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
        args=["--no-sandbox", "--disable-dev-shm-usage"],
    )
    wide = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = wide.new_page()
    page.on("dialog", lambda d: (report["dialogs"].append(d.message), d.dismiss()))
    page.on("console", lambda m: m.type == "error" and report["console_errors"].append(m.text))

    # Signing in: the root leads to the sign-in page, a wrong password is refused in words.
    page.goto(base + "/")
    step("root", url=page.url)
    page.fill("#username", "admin")
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    step("wrong_password", error=page.text_content(".error"))
    page.fill("#password", admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/packages**")
    cookies = {c["name"]: c for c in wide.cookies()}
    session = cookies.get("agentpkg_session", {})
    step(
        "signed_in",
        url=page.url,
        http_only=session.get("httpOnly"),
        same_site=session.get("sameSite"),
        script_sees_cookie="agentpkg_session" in page.evaluate("document.cookie"),
    )

    # Upload a 20 MiB file and watch the progress bar reach 100 %.
    data = os.urandom(20 * 1024 * 1024)
    path = os.path.join(work, "web-demo.bin")
    with open(path, "wb") as f:
        f.write(data)
    page.goto(base + "/upload")
    page.set_input_files("#file", path)
    page.fill("#name", "web-demo")
    page.fill("#version", "1.0.0")
    page.select_option("#platform", "linux")
    page.select_option("#arch", "amd64")
    page.fill("#description", "<script>alert(1)</script>")
    # Record every value the progress bar takes.
    page.evaluate(
        """() => { const bar = document.getElementById('bar'); window.__progress = [];
            const desc = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value');
            Object.defineProperty(bar, 'value', {get() { return desc.get.call(this); },
              set(v) { window.__progress.push(v); desc.set.call(this, v); }}); }"""
    )
    page.click("#start")
    page.wait_for_selector("#done a", timeout=120000)
    step(
        "uploaded",
        progress=page.evaluate("window.__progress"),
        stats=page.text_content("#stats"),
        done=page.text_content("#done"),
    )
    page.click("#done a")
    page.wait_for_url("**/packages/web-demo/1.0.0/linux/amd64?done=uploaded")
    package_url = page.url.split("?")[0]
    step(
        "package_page",
        description=page.text_content("#description"),
        sha256=page.text_content("#sha256").strip(),
        notice=page.text_content(".notice"),
        script_tags_in_description=page.locator("#description script").count(),
    )
    with page.expect_download() as download:
        page.click("a.button[download]")
    saved = os.path.join(work, "downloaded.bin")
    download.value.save_as(saved)
    with open(saved, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    step("downloaded", sha256=got, expected=hashlib.sha256(data).hexdigest())

    page.goto(base + "/packages")
    step("listed", names=page.locator("tbody td:first-child").all_text_contents())

    # The same coordinates again: the server's refusal, in words.
    page.goto(base + "/upload")
    page.set_input_files("#file", path)
    page.fill("#name", "web-demo")
    page.fill("#version", "1.0.0")
    page.click("#start")
    page.wait_for_selector("#result:not([hidden])")
    step("conflict", error=page.text_content("#result"))

    # A dropped connection: the second chunk's request fails; uploading again continues
    # from what the server has, not from the start.
    big = os.urandom(20 * 1024 * 1024)
    resumable = os.path.join(work, "web-resume.bin")
    with open(resumable, "wb") as f:
        f.write(big)
    patches = {"n": 0}

    def drop_second_patch(route):
        if route.request.method == "PATCH":
            patches["n"] += 1
            if patches["n"] == 2:
                route.abort("connectionreset")
                return
        route.continue_()

    page.goto(base + "/upload")
    page.route("**/api/v1/uploads/**", drop_second_patch)
    page.set_input_files("#file", resumable)
    page.fill("#name", "web-resume")
    page.fill("#version", "2.0.0")
    page.click("#start")
    page.wait_for_selector("#result:not([hidden])")
    dropped = page.text_content("#result")
    page.reload()
    page.set_input_files("#file", resumable)
    page.fill("#name", "web-resume")
    page.fill("#version", "2.0.0")
    page.click("#start")
    page.wait_for_selector("#done a", timeout=120000)
    step("resumed", dropped=dropped, stats=page.text_content("#stats"), patches=patches["n"])
    page.unroute("**/api/v1/uploads/**")
    page.click("#done a")
    with page.expect_download() as download:
        page.click("a.button[download]")
    saved = os.path.join(work, "resumed.bin")
    download.value.save_as(saved)
    with open(saved, "rb") as f:
        step("resumed_download", same=f.read() == big)

    # Edit the description; the keyboard reaches the skip link first.
    page.goto(package_url)
    page.fill("#new-description", "edited in the browser")
    page.click("text=Save description")
    page.wait_for_url("**done=described")
    page.keyboard.press("Tab")
    step(
        "described",
        description=page.text_content("#description"),
        first_tab=page.evaluate("document.activeElement.textContent"),
    )

    # Yank: gone from the list, marked on its name page; restore; delete; then 404.
    page.goto(package_url)
    page.click("text=Yank")
    page.wait_for_url("**done=yanked")
    page.goto(base + "/packages")
    step("yanked_list", names=page.locator("tbody td:first-child").all_text_contents())
    page.goto(base + "/packages/web-demo")
    step("yanked_name_page", badges=page.locator(".badge.warn").all_text_contents())
    page.goto(package_url)
    page.click("text=Restore")
    page.wait_for_url("**done=restored")
    page.goto(base + "/packages")
    step("restored_list", names=page.locator("tbody td:first-child").all_text_contents())
    page.goto(package_url)
    page.click("text=Delete…")
    page.wait_for_url("**/delete")
    page.click("text=Delete for good")
    page.wait_for_url("**done=deleted")
    gone = page.goto(package_url)
    step("deleted", status=gone.status, heading=page.text_content("h1"))

    # Users: create a viewer and a user to delete, delete that one.
    page.goto(base + "/users")
    for username, role in [("web-viewer", "viewer"), ("web-temp", "publisher")]:
        page.fill("#new-username", username)
        page.fill("#new-password", "a long enough password")
        page.select_option("#new-role", role)
        page.click("form[action='/users'] button[type=submit]")
        page.wait_for_url("**done=user-created")
    page.click("button[aria-label='Delete user web-temp']")
    page.wait_for_url("**done=user-deleted")
    step("users", names=page.locator("tbody td:first-child").all_text_contents())

    # Owners of a name: a user added, then removed; an unknown one refused in words.
    page.goto(base + "/packages/otelcol-contrib")
    page.fill("#new-owner", "web-viewer")
    page.click("form[action$='/owners/add'] button[type=submit]")
    page.wait_for_url("**/packages/otelcol-contrib")
    added = page.locator("ul.owners li").all_text_contents()
    page.click("button[aria-label='Remove owner web-viewer']")
    page.wait_for_url("**/packages/otelcol-contrib")
    removed = page.locator("ul.owners li").all_text_contents()
    page.fill("#new-owner", "nobody-here")
    page.click("form[action$='/owners/add'] button[type=submit]")
    step("owners", added=added, removed=removed, unknown=page.text_content("main"))

    # The fleet: an assignment created in its form, a rollout started (a bad plan first),
    # approved from the keyboard, paused, resumed, and aborted after its confirmation.
    page.goto(base + "/assignments")
    page.fill("#a-package", "otelcol-contrib")
    page.fill("#a-version", "0.115.0")
    page.fill("#a-selector", "service.name=otelcol")
    page.click("form[action='/assignments'] button[type=submit]")
    page.wait_for_url("**/assignments/*")
    assignment_path = page.url.replace(base, "")
    page.fill("#r-version", "0.115.1")
    page.fill("#r-waves", "10%, 50%")
    page.click("form[action$='/rollouts'] button[type=submit]")
    step("bad_plan", error=page.text_content(".error"))
    page.fill("#r-version", "0.115.1")
    page.fill("#r-waves", "5 agents, 100%")
    page.select_option("#r-approval", "first_wave")
    page.click("form[action$='/rollouts'] button[type=submit]")
    page.wait_for_url("**/rollouts/*")
    rollout_path = page.url.replace(base, "")
    step("rollout_started", state=page.text_content(".facts .badge"))
    page.focus("#approve-reason")
    page.keyboard.type("canary signed off")
    page.keyboard.press("Tab")
    focused = page.evaluate("document.activeElement.textContent")
    page.keyboard.press("Enter")
    page.wait_for_url("**done=approve")
    step("approved", focused=focused, notice=page.text_content(".notice"),
         steps=page.locator("table").last.text_content())
    # Pause, resume and abort with the keyboard alone: Tab from the top of the page to
    # each control, then Enter.
    tabs = {"pause": by_keyboard(page, "form[action$='/pause'] button")}
    page.wait_for_url("**done=pause")
    paused = page.text_content(".facts .badge")
    tabs["resume"] = by_keyboard(page, "form[action$='/resume'] button")
    page.wait_for_url("**done=resume")
    tabs["abort"] = by_keyboard(page, "a[href$='/abort']")
    page.wait_for_url("**/abort")
    abort_path = page.url.replace(base, "")
    tabs["confirm"] = by_keyboard(page, "form[action$='/abort'] button[type=submit]")
    page.wait_for_url("**done=abort")
    step("keyboard", **tabs)
    step("aborted", paused=paused, state=page.text_content(".facts .badge"))

    # The agents: counts at the top, the table filtered by the database, one agent's page.
    page.goto(base + "/agents")
    rows = page.locator("tbody tr").count()
    tiles = " ".join(page.locator(".tiles li").all_text_contents())
    page.select_option("#f-health", "healthy")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**health=healthy**")
    healthy_rows = page.locator("table tbody tr").count()
    page.goto(base + "/agents")
    page.click("tbody a.hash")
    page.wait_for_url("**/agents/*")
    agent_path = page.url.replace(base, "")
    step("agents", rows=rows, tiles=tiles, healthy_filter_rows=healthy_rows,
         agent_page=page.text_content("main"))

    # Tokens: a bad pattern refused in words; a token created, its secret shown once and
    # working against the API; then revoked, and refused.
    page.goto(base + "/tokens")
    page.fill("#t-name", "ci-web")
    page.fill("#t-packages", "bad pattern!")
    page.click("form[action='/tokens'] button[type=submit]")
    bad_token = page.text_content(".error")
    page.fill("#t-name", "ci-web")
    page.fill("#t-packages", "otelcol-*")
    page.select_option("#t-scope", "read")
    page.click("form[action='/tokens'] button[type=submit]")
    secret = page.text_content("#secret").strip()
    works = page.request.get(base + "/api/v1/packages?name=otelcol-contrib",
                             headers={"Authorization": "Bearer " + secret}).status
    page.goto(base + "/tokens")
    shown_again = secret in page.content()
    page.click("button[aria-label='Revoke token ci-web']")
    page.wait_for_url("**done=revoked")
    # Revoked on every replica within a second (the credential cache's freshness).
    refused = None
    for _ in range(50):
        refused = page.request.get(base + "/api/v1/packages",
                                   headers={"Authorization": "Bearer " + secret}).status
        if refused == 401:
            break
        page.wait_for_timeout(100)
    step("tokens", bad=bad_token, prefix=secret[:4], works=works, shown_again=shown_again,
         refused=refused, notice=page.text_content(".notice"))
    page.fill("#t-name", "for-the-screenshot")
    page.click("form[action='/tokens'] button[type=submit]")

    # Signing keys: not a key, refused in words; a key trusted, listed by fingerprint,
    # removed, and trusted again (for the screenshot).
    armored = open(os.path.join(work, "key.asc"), encoding="utf-8").read()
    page.goto(base + "/keys")
    page.fill("#k-key", "not a key")
    page.fill("#k-patterns", "otelcol-*")
    page.click("form[action='/keys'] button[type=submit]")
    bad_key = page.text_content(".error")

    def trust():
        page.fill("#k-key", armored)
        page.fill("#k-patterns", "otelcol-*")
        page.click("form[action='/keys'] button[type=submit]")
        page.wait_for_url("**done=added")

    trust()
    listed = page.text_content("tbody")
    page.click("button[aria-label^='Remove key']")
    page.wait_for_url("**done=removed")
    after_remove = page.locator("tbody tr").count()
    trust()
    step("keys", bad=bad_key, listed=listed, after_remove=after_remove)

    # Sigstore signers: an unanchored identity pattern refused in words (the form keeps what
    # was typed); a signer trusted, listed, removed, and trusted again (for the screenshot).
    page.goto(base + "/keys")
    page.fill("#s-patterns", "otelcol*")
    page.fill("#s-issuer", "https://token.actions.githubusercontent.com")
    page.fill("#s-san", "github.com/acme/")
    page.click("form[action='/keys/sigstore'] button[type=submit]")
    bad_signer = page.text_content(".error")
    kept = page.input_value("#s-issuer")

    def trust_signer():
        page.fill("#s-patterns", "otelcol*")
        page.fill("#s-issuer", "https://token.actions.githubusercontent.com")
        page.fill("#s-san", "^https://github\\.com/acme/.*$")
        page.click("form[action='/keys/sigstore'] button[type=submit]")
        page.wait_for_url("**done=signer-added")

    trust_signer()
    signers = page.text_content("#signers tbody")
    page.click("button[aria-label^='Remove Sigstore signer']")
    page.wait_for_url("**done=signer-removed")
    after_signer_remove = page.locator("#signers").count()
    trust_signer()
    step("signers", bad=bad_signer, kept=kept, listed=signers,
         after_remove=after_signer_remove)

    # The audit log: the approval, found by its action, with its reason.
    page.goto(base + "/audit")
    page.select_option("#f-action", "rollout_approve")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**action=rollout_approve**")
    step("audit", rows=page.locator("tbody tr").count(), text=page.text_content("tbody"))
    page.goto(base + "/audit?since=yesterday")
    step("audit_bad_day", error=page.text_content(".error"))

    # A forged form without the CSRF token is refused, even for the admin.
    keep_id = page.goto(base + keep_path) and page.get_attribute("form[action$='/yank']", "action")
    forged = page.request.post(base + keep_id, form={"description": "x"})
    api_forged = page.request.post(base + "/api/v1/uploads", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "1"})
    step("forged_admin", status=forged.status, api_status=api_forged.status)

    # A viewer sees no upload, yank or delete control; the server refuses them too.
    narrow_viewer = browser.new_context(viewport={"width": 1440, "height": 900})
    viewer = narrow_viewer.new_page()
    sign_in(viewer, "web-viewer", "a long enough password")
    viewer.goto(base + keep_path)
    upload_page = viewer.goto(base + "/upload")
    viewer.goto(base + keep_path)
    step(
        "viewer",
        upload_links=viewer.locator("a[href='/upload']").count(),
        yank_buttons=viewer.locator("form[action$='/yank'], form[action$='/restore']").count(),
        delete_links=viewer.locator("a[href$='/delete']").count(),
        describe_forms=viewer.locator("form[action$='/describe']").count(),
        upload_status=upload_page.status,
    )
    viewer.goto(base + rollout_path)
    step(
        "viewer_rollout",
        controls=viewer.locator("form[action*='/rollouts/'], a[href$='/abort']").count(),
        create_forms=viewer.locator("form[action$='/rollouts']").count(),
    )
    viewer.goto(base + "/packages/otelcol-contrib")
    step("viewer_owners", forms=viewer.locator("form[action*='/owners/']").count())
    viewer.goto(base + "/keys")
    step("viewer_keys", forms=viewer.locator("form[action^='/keys']").count())
    audit_as_viewer = viewer.goto(base + "/audit")
    step("viewer_audit", status=audit_as_viewer.status)
    viewer.goto(base + rollout_path)
    csrf = viewer.get_attribute("meta[name=csrf-token]", "content")
    refused = viewer.request.post(base + rollout_path + "/pause", form={"csrf": csrf})
    step("viewer_rollout_post", status=refused.status)
    with_token = viewer.request.post(base + keep_id, form={"csrf": csrf})
    without_token = viewer.request.post(base + keep_id, form={})
    step("forged_viewer", with_token=with_token.status, without_token=without_token.status)

    # Every page, at 375 and 1440 pixels wide: a screenshot and axe-core's findings.
    pages = [
        ("login", "/login", False),
        ("packages", "/packages", True),
        ("name", "/packages/" + keep_path.split("/")[2], True),
        ("package", keep_path, True),
        ("upload", "/upload", True),
        ("delete", keep_id.replace("/yank", "/delete"), True),
        ("users", "/users", True),
        ("assignments", "/assignments", True),
        ("assignment", assignment_path, True),
        ("rollout", rollout_path, True),
        ("rollout-abort", abort_path, True),
        ("agents", "/agents", True),
        ("agent", agent_path, True),
        ("audit", "/audit", True),
        ("tokens", "/tokens", True),
        ("keys", "/keys", True),
        ("mirror", "/mirror", True),
        ("statistics", "/stats?days=30", True),
        ("retention", "/stats/retention", True),
        ("teams", "/teams", True),
        ("not-found", "/packages/web-demo/1.0.0/linux/amd64", True),
    ]
    for width, height in [(375, 812), (1440, 900)]:
        anonymous = browser.new_context(viewport={"width": width, "height": height})
        signed = browser.new_context(viewport={"width": width, "height": height})
        signed_page = signed.new_page()
        sign_in(signed_page, "admin", admin_password)
        for label, url, needs_session in pages:
            tab = signed_page if needs_session else anonymous.new_page()
            tab.goto(base + url)
            tab.screenshot(path=os.path.join(shots, f"{label}-{width}.png"), full_page=True)
            axe(tab, f"{label}-{width}")
            overflow = tab.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
            step("layout", page=f"{label}-{width}", overflows=overflow)
        anonymous.close()
        signed.close()
    browser.close()

print(json.dumps(report))
