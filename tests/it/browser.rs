//! The whole path in a real browser: Debian's headless Chromium driven through chromedriver,
//! with a virtual WebAuthn authenticator, against the real `seedvault serve` binary. Screenshots
//! of the key pages go to target/screenshots/.
//!
//! Needs `chromium` and `chromium-driver` (`.ci/run` installs them with apt when missing).

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use thirtyfour::prelude::*;

pub(crate) const SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

pub(crate) struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `seedvault serve` on a fresh data directory and returns the printed invite URL.
pub(crate) fn start_server(dir: &std::path::Path, port: u16) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seedvault"))
        .current_dir(dir)
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--origin",
            &format!("http://localhost:{port}"),
        ])
        .env_remove("SEEDVAULT_DATA_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut invite = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.trim().starts_with("http://") && line.contains("/invite/") {
            invite = Some(line.trim().to_owned());
        }
        if line.contains("listening on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), invite.expect("serve prints an admin invite"))
}

pub(crate) fn start_chromedriver() -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver not found: install the Debian packages chromium and chromium-driver (.ci/run does)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), port)
}

/// Only one browser at a time: on two shared cores, parallel browsers slow each other into
/// timeouts.
pub(crate) static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A headless Chromium with one virtual authenticator that verifies the user. With
/// `has_resident_key` it is a passkey provider (discoverable credentials); without, a security
/// key that cannot store any, so its credentials are found only by a named sign-in.
pub(crate) async fn browser(driver_port: u16, has_resident_key: bool) -> WebDriver {
    let mut caps = DesiredCapabilities::chrome();
    caps.set_binary("/usr/bin/chromium").unwrap();
    let profile = tempfile::tempdir().unwrap().keep();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,900",
    ] {
        caps.add_arg(arg).unwrap();
    }
    caps.add_arg(&format!("--user-data-dir={}", profile.display()))
        .unwrap();
    let driver = WebDriver::new(format!("http://localhost:{driver_port}"), caps)
        .await
        .unwrap();
    let cdp = driver.cdp();
    cdp.send_raw("WebAuthn.enable", json!({})).await.unwrap();
    cdp.send_raw(
        "WebAuthn.addVirtualAuthenticator",
        json!({ "options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": has_resident_key,
            "hasUserVerification": true, "isUserVerified": true, "automaticPresenceSimulation": true
        }}),
    )
    .await
    .unwrap();
    driver
}

pub(crate) async fn wait_for(driver: &WebDriver, css: &str) -> WebElement {
    driver
        .query(By::Css(css))
        .wait(Duration::from_secs(15), Duration::from_millis(100))
        .first()
        .await
        .unwrap()
}

pub(crate) async fn wait_text(driver: &WebDriver, css: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(el) = driver.find(By::Css(css)).await {
            if el.text().await.unwrap_or_default().contains(expected) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "'{expected}' never appeared in {css}: {}",
            driver.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn shot(driver: &WebDriver, name: &str) {
    driver
        .screenshot(&screenshots().join(format!("{name}.png")))
        .await
        .unwrap();
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Registers a passkey from an invite page and lands on the dashboard.
pub(crate) async fn register(driver: &WebDriver, invite: &str) {
    driver.goto(invite).await.unwrap();
    wait_for(driver, "form[data-webauthn=register] button")
        .await
        .click()
        .await
        .unwrap();
    wait_text(driver, "h1", "Dashboard").await;
}

/// Signs out from the header and waits for the sign-in page.
pub(crate) async fn sign_out(driver: &WebDriver) {
    driver
        .find(By::Css("header form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(driver, "h1", "Sign in").await;
}

/// Types `name` (may be empty) into the sign-in form and presses its button.
pub(crate) async fn sign_in(driver: &WebDriver, name: &str) {
    let field = wait_for(driver, "input[name=username]").await;
    field.clear().await.unwrap();
    if !name.is_empty() {
        field.send_keys(name).await.unwrap();
    }
    driver
        .find(By::Css("form[data-webauthn=login] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Makes pages load as in a browser without passkey autofill, until [`with_autofill`].
///
/// Chromium's virtual environment answers an autofill (conditional mediation) request at once
/// with a discoverable credential, where a real browser waits for the user to pick it from the
/// name field's suggestions: with autofill on, the sign-in page signs a discoverable passkey in
/// by itself before the button can be pressed.
pub(crate) async fn without_autofill(driver: &WebDriver) -> serde_json::Value {
    let added = driver
        .cdp()
        .send_raw(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": "Object.defineProperty(PublicKeyCredential, 'isConditionalMediationAvailable', { value: async () => false });" }),
        )
        .await
        .unwrap();
    added["identifier"].clone()
}

async fn with_autofill(driver: &WebDriver, identifier: serde_json::Value) {
    driver
        .cdp()
        .send_raw(
            "Page.removeScriptToEvaluateOnNewDocument",
            json!({ "identifier": identifier }),
        )
        .await
        .unwrap();
}

/// The sign-in page shows no error while nobody touches it — in particular none from the
/// passkey autofill request that starts by itself on load.
async fn assert_no_error_unprompted(driver: &WebDriver) {
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let error = driver.find(By::Css("[data-error]")).await.unwrap();
        assert!(
            !error.is_displayed().await.unwrap(),
            "an error nobody caused: {}",
            error.text().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_signs_in_with_the_name_field_left_empty() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    let no_autofill = without_autofill(&driver).await;

    // The button, name field empty: the browser finds the discoverable passkey.
    register(&driver, &invite).await;
    sign_out(&driver).await;
    assert_no_error_unprompted(&driver).await;
    sign_in(&driver, "").await;
    wait_text(&driver, "h1", "Dashboard").await;

    // Autofill: the sign-in page offers the passkey by itself (here: takes it at once, see
    // `without_autofill`). A fresh dashboard document means signed out and in again.
    with_autofill(&driver, no_autofill).await;
    driver
        .execute("window.beforeSignOut = true;", Vec::new())
        .await
        .unwrap();
    driver
        .find(By::Css("header form[action='/logout'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let fresh_dashboard = driver
            .execute(
                "return !window.beforeSignOut && location.pathname === '/' \
                 && (document.querySelector('h1')?.textContent ?? '').includes('Dashboard');",
                Vec::new(),
            )
            .await
            .map(|r| r.json() == &json!(true))
            .unwrap_or(false);
        if fresh_dashboard {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "autofill did not sign in: {}",
            driver.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_key_without_passkey_storage_is_told_to_type_the_name_and_then_signs_in() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, false).await;

    // Registration asks for a discoverable credential but accepts the key's plain one.
    register(&driver, &invite).await;
    sign_out(&driver).await;
    assert_no_error_unprompted(&driver).await;
    sign_in(&driver, "").await;
    wait_text(&driver, "[data-error]", "type your operator name").await;
    let message = driver
        .find(By::Css("[data-error]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!message.contains("cancelled"), "{message}");
    shot(&driver, "sign-in-security-key-without-name").await;
    sign_in(&driver, "admin").await;
    wait_text(&driver, "h1", "Dashboard").await;
    driver.quit().await.unwrap();
}

/// Registers the first admin from the invite, grants it provisioner and helpdesk, and signs
/// in again with the passkey (by name).
async fn admin_with_desk_roles(driver: &WebDriver, base: &str, invite: &str) {
    // Register the first admin's passkey from the printed invite.
    register(driver, invite).await;

    // Grant myself provisioner and helpdesk (an admin holds no such rights by default).
    driver.goto(format!("{base}/operators")).await.unwrap();
    for role in ["provisioner", "helpdesk"] {
        wait_for(
            driver,
            &format!("form[action='/operators/admin'] input[value={role}]"),
        )
        .await
        .click()
        .await
        .unwrap();
    }
    driver
        .find(By::Css(
            "form[action='/operators/admin'] button[type=submit]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(driver, ".flash", "Saved admin").await;

    // Sign out, then sign in with the passkey.
    sign_out(driver).await;
    shot(driver, "sign-in").await;
    sign_in(driver, "admin").await;
    wait_text(driver, "h1", "Dashboard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_from_invite_to_destroyed_seed_works_in_chromium() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let base = format!("http://localhost:{port}");
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    // The named sign-in below, not the autofill.
    without_autofill(&driver).await;

    admin_with_desk_roles(&driver, &base, &invite).await;

    // Capture a token.
    driver.goto(format!("{base}/tokens/new")).await.unwrap();
    wait_for(&driver, "input[name=owner]")
        .await
        .send_keys("user1@example.org")
        .await
        .unwrap();
    driver
        .find(By::Css("input[name=serial]"))
        .await
        .unwrap()
        .send_keys("BR-1")
        .await
        .unwrap();
    driver
        .find(By::Css("textarea[name=secret]"))
        .await
        .unwrap()
        .send_keys(SEED_B32)
        .await
        .unwrap();
    driver
        .find(By::Css("form[action='/tokens/new'] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&driver, ".flash", "BR-1 escrowed").await;
    assert!(
        !driver.source().await.unwrap().contains(SEED_B32),
        "the seed is never shown again"
    );

    // Reveal its code: checklist, ticket, passkey.
    driver
        .goto(format!("{base}/tokens/BR-1/reveal"))
        .await
        .unwrap();
    wait_for(&driver, "input[value=callback]")
        .await
        .click()
        .await
        .unwrap();
    driver
        .find(By::Css("input[value=video-id]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    driver
        .find(By::Css("input[name=ticket]"))
        .await
        .unwrap()
        .send_keys("INC-4711")
        .await
        .unwrap();
    let before = unix_now();
    driver
        .find(By::Css("form[data-webauthn=reveal] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let code_el = wait_for(&driver, "[data-code-panel]:not([hidden]) [data-code]").await;
    let shown = code_el.text().await.unwrap();
    let after = unix_now();
    let code = shown.replace(' ', "");
    assert_eq!(shown.len(), 7, "grouped as 123 456: {shown}");
    let seed = data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap();
    let candidates: Vec<(i64, String)> = (before - 1..=after + 1)
        .map(|t| (t, common::totp::totp(&seed, "SHA1", 6, 30, t)))
        .collect();
    let (at, _) = candidates
        .iter()
        .find(|(_, c)| *c == code)
        .expect("the code equals an RFC 6238 computation");
    assert!(
        !driver.title().await.unwrap().contains(&code),
        "never in the title"
    );
    assert!(
        !driver.current_url().await.unwrap().as_str().contains(&code),
        "never in the URL"
    );
    shot(&driver, "reveal-code").await;

    // Confirm delivery with the next code, as the user would read it from the token.
    let next = common::totp::totp(&seed, "SHA1", 6, 30, at + 30);
    driver.goto(format!("{base}/tokens/BR-1")).await.unwrap();
    wait_for(&driver, "input[name=code]")
        .await
        .send_keys(&next)
        .await
        .unwrap();
    driver
        .find(By::Css(
            "form[action='/tokens/BR-1/delivery'] button[type=submit]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&driver, ".flash", "The seed is destroyed").await;
    wait_text(&driver, ".facts", "purged").await;

    // A reveal is now refused.
    driver
        .goto(format!("{base}/tokens/BR-1/reveal"))
        .await
        .unwrap();
    wait_text(&driver, ".error-box", "its seed is gone").await;

    driver.goto(format!("{base}/")).await.unwrap();
    wait_text(&driver, "h1", "Dashboard").await;
    shot(&driver, "dashboard").await;
    driver.goto(format!("{base}/audit")).await.unwrap();
    wait_text(&driver, "h1", "Audit trail").await;
    shot(&driver, "audit").await;
    driver.set_window_rect(0, 0, 360, 800).await.unwrap();
    driver.goto(format!("{base}/tokens")).await.unwrap();
    wait_text(&driver, "h1", "Tokens").await;
    shot(&driver, "tokens-360px").await;
    driver.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_confirms_delivery_from_the_link_on_a_phone_sized_window_by_keyboard_and_the_seed_is_purged(
) {
    let _one = ONE_BROWSER.lock().await;
    let desk = common::Desk::start().await;
    let srv = &desk.srv;
    let seed = data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap();
    srv.canary.watch_seed("browser link seed", &seed);
    let (status, body) = common::capture(
        &desk.provisioner,
        "user@example.org",
        "BR-LINK-7788",
        SEED_B32,
        json!({ "display_name": "Uma User" }),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let sealed = srv.sealed_bytes("BR-LINK-7788").await.unwrap();
    let (status, link) = desk
        .helpdesk
        .send(
            reqwest::Method::POST,
            "/api/v1/tokens/BR-LINK-7788/delivery-link",
            Some(json!({})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap().to_owned();

    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    driver.set_window_rect(0, 0, 390, 844).await.unwrap();
    driver.goto(&url).await.unwrap();
    wait_text(&driver, "h1", "Confirm that your token has arrived").await;
    wait_text(&driver, "main", "Uma User").await;
    wait_text(&driver, "main", "…7788").await;
    shot(&driver, "deliver-link-390px").await;
    // Keyboard only: the code field has the focus on arrival, Enter submits.
    let code = common::totp::totp(&seed, "SHA1", 6, 30, common::T0);
    srv.canary.watch_code("code typed by the owner", &code);
    let focused = driver.active_element().await.unwrap();
    assert_eq!(focused.attr("name").await.unwrap().as_deref(), Some("code"));
    focused.send_keys(code.clone() + Key::Enter).await.unwrap();
    wait_text(&driver, "h1", "delivery confirmed").await;
    let page = driver.source().await.unwrap();
    assert!(!page.contains(&code) && !page.contains(SEED_B32));
    shot(&driver, "deliver-link-confirmed").await;
    driver.quit().await.unwrap();

    assert_eq!(srv.sealed_bytes("BR-LINK-7788").await, None);
    srv.assert_no_trace("delivered from the owner's link in Chromium", &sealed);
    desk.srv.stop_and_check().await;
}

/// Ticks `role` in the operator form `form` (an `action` value) of the operators page.
async fn tick_role(driver: &WebDriver, form: &str, role: &str) {
    wait_for(
        driver,
        &format!("form[action='{form}'] input[value={role}]"),
    )
    .await
    .click()
    .await
    .unwrap();
}

async fn click(driver: &WebDriver, css: &str) {
    wait_for(driver, css).await.click().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_eyes_reveal_goes_from_request_to_approval_to_code_across_two_browsers() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let base = format!("http://localhost:{port}");
    let (_chromedriver, driver_port) = start_chromedriver();
    // Two browsers, each with its own virtual authenticator: the requester's and the approver's.
    let requester = browser(driver_port, true).await;
    without_autofill(&requester).await;
    register(&requester, &invite).await;
    requester.goto(format!("{base}/operators")).await.unwrap();
    for role in ["provisioner", "helpdesk"] {
        tick_role(&requester, "/operators/admin", role).await;
    }
    click(
        &requester,
        "form[action='/operators/admin'] button[type=submit]",
    )
    .await;
    wait_text(&requester, ".flash", "Saved admin").await;

    // Invite the approver (helpdesk) and capture a high-risk token.
    wait_for(&requester, "form[action='/operators'] input[name=name]")
        .await
        .send_keys("bea")
        .await
        .unwrap();
    tick_role(&requester, "/operators", "helpdesk").await;
    click(&requester, "form[action='/operators'] button[type=submit]").await;
    let approver_invite = wait_for(&requester, ".invite-link")
        .await
        .text()
        .await
        .unwrap();
    requester.goto(format!("{base}/tokens/new")).await.unwrap();
    wait_for(&requester, "input[name=owner]")
        .await
        .send_keys("ceo@example.org")
        .await
        .unwrap();
    requester
        .find(By::Css("input[name=serial]"))
        .await
        .unwrap()
        .send_keys("BR-HR")
        .await
        .unwrap();
    requester
        .find(By::Css("textarea[name=secret]"))
        .await
        .unwrap()
        .send_keys(SEED_B32)
        .await
        .unwrap();
    click(&requester, "select[name=policy] option[value=high-risk]").await;
    click(&requester, "form[action='/tokens/new'] button[type=submit]").await;
    wait_text(&requester, ".flash", "BR-HR escrowed").await;

    // The high-risk policy relies on the directory of record for the callback and manager.
    std::fs::write(
        dir.path().join("directory.csv"),
        "owner,display_name,phone,mobile,manager,department,mail\n\
         ceo@example.org,Cleo Exec,+1 555 010 0700,,chair@example.org,Board,ceo@example.org\n\
         chair@example.org,Chair,+1 555 010 0701,,,Board,chair@example.org\n",
    )
    .unwrap();
    let synced = Command::new(env!("CARGO_BIN_EXE_seedvault"))
        .current_dir(dir.path())
        .args(["directory", "sync", "directory.csv"])
        .env_remove("SEEDVAULT_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        synced.status.success(),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );

    let approver = browser(driver_port, true).await;
    without_autofill(&approver).await;
    register(&approver, approver_invite.trim()).await;

    // The requester asks: the page waits for the approval.
    requester
        .goto(format!("{base}/tokens/BR-HR/reveal"))
        .await
        .unwrap();
    for check in ["callback", "video-id", "manager"] {
        click(&requester, &format!("input[value={check}]")).await;
    }
    requester
        .find(By::Css("input[name=ticket]"))
        .await
        .unwrap()
        .send_keys("INC-4711")
        .await
        .unwrap();
    click(&requester, "form[data-webauthn=reveal] button[type=submit]").await;
    wait_text(
        &requester,
        "[data-approval-state]",
        "waiting for a second operator",
    )
    .await;
    shot(&requester, "four-eyes-waiting").await;

    // The approver sees the count in the header, opens the request and approves.
    approver.goto(format!("{base}/")).await.unwrap();
    wait_text(&approver, "header nav .count", "1").await;
    click(&approver, "header nav a[href='/approvals']").await;
    click(&approver, "th a[href^='/approvals/']").await;
    wait_text(&approver, "main", "INC-4711").await;
    shot(&approver, "four-eyes-approval").await;
    click(&approver, "form[data-webauthn=approve] button[type=submit]").await;
    wait_text(&approver, ".lead", "approved").await;

    // The requester's page learns it without a reload, then signs with the requester's own
    // passkey.
    wait_text(&requester, "[data-approval-state]", "Approved by bea").await;
    let before = unix_now();
    click(&requester, "[data-approval-reveal]").await;
    let shown = wait_for(&requester, "[data-code-panel]:not([hidden]) [data-code]")
        .await
        .text()
        .await
        .unwrap();
    let after = unix_now();
    let code = shown.replace(' ', "");
    let seed = data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap();
    assert!(
        (before - 1..=after + 1).any(|t| common::totp::totp(&seed, "SHA1", 6, 30, t) == code),
        "the code {shown} equals an RFC 6238 computation"
    );
    shot(&requester, "four-eyes-code").await;
    requester.quit().await.unwrap();
    approver.quit().await.unwrap();
}

/// Reveals a code for `serial` on its reveal page (two checks, a ticket, the passkey) and
/// returns it with the time window it was shown in.
async fn reveal_code(driver: &WebDriver, base: &str, serial: &str) -> (String, i64, i64) {
    driver
        .goto(format!("{base}/tokens/{serial}/reveal"))
        .await
        .unwrap();
    wait_for(driver, "input[value=callback]")
        .await
        .click()
        .await
        .unwrap();
    driver
        .find(By::Css("input[value=video-id]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    driver
        .find(By::Css("input[name=ticket]"))
        .await
        .unwrap()
        .send_keys("INC-19")
        .await
        .unwrap();
    let before = unix_now();
    driver
        .find(By::Css("form[data-webauthn=reveal] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let code_el = wait_for(driver, "[data-code-panel]:not([hidden]) [data-code]").await;
    let code = code_el.text().await.unwrap().replace(' ', "");
    (code, before, unix_now())
}

fn assert_rfc6238(seed: &[u8], code: &str, before: i64, after: i64) {
    assert!(
        (before - 1..=after + 1).any(|t| common::totp::totp(seed, "SHA1", 6, 30, t) == code),
        "the code {code} equals no RFC 6238 computation of the seed around the reveal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_qr_screenshot_is_summarised_captured_and_reveals_the_right_code() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let base = format!("http://localhost:{port}");
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    without_autofill(&driver).await;
    admin_with_desk_roles(&driver, &base, &invite).await;

    let uri = format!("otpauth://totp/Contoso:user2@example.org?secret={SEED_B32}&issuer=Contoso");
    let png = common::qr::screenshot(&uri);
    driver.goto(format!("{base}/tokens/new")).await.unwrap();
    wait_for(&driver, "form[data-qr-capture] input[name=owner]")
        .await
        .send_keys("user2@example.org")
        .await
        .unwrap();
    driver
        .find(By::Css("form[data-qr-capture] input[name=serial]"))
        .await
        .unwrap()
        .send_keys("QR-1")
        .await
        .unwrap();
    // Ctrl+V of a screenshot: a paste event whose clipboard holds a PNG file.
    driver
        .execute(
            "const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], 'screenshot.png', { type: 'image/png' }));
             document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true }));",
            vec![json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &png))],
        )
        .await
        .unwrap();
    wait_text(&driver, "[data-qr-summary] [data-qr-issuer]", "Contoso").await;
    wait_text(
        &driver,
        "[data-qr-summary] [data-qr-account]",
        "user2@example.org",
    )
    .await;
    wait_text(&driver, "[data-qr-summary] [data-qr-digits]", "6").await;
    wait_text(&driver, "[data-qr-summary] [data-qr-period]", "30 s").await;
    assert!(
        !driver.source().await.unwrap().contains(SEED_B32),
        "never the secret"
    );
    shot(&driver, "capture-qr-summary").await;
    driver
        .find(By::Css("form[data-qr-capture] button[value=capture]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&driver, ".flash", "QR-1 escrowed from the QR code").await;

    let (code, before, after) = reveal_code(&driver, &base, "QR-1").await;
    let seed = data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap();
    assert_rfc6238(&seed, &code, before, after);
    driver.quit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_seed_is_read_from_the_page_screenshot_confirmed_and_never_shown_again() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let base = format!("http://localhost:{port}");
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    without_autofill(&driver).await;
    admin_with_desk_roles(&driver, &base, &invite).await;

    driver
        .goto(format!("{base}/tokens/generate"))
        .await
        .unwrap();
    wait_for(&driver, "input[name=owner]")
        .await
        .send_keys("user3@example.org")
        .await
        .unwrap();
    for (field, value) in [("serial", "GEN-1"), ("issuer", "Contoso")] {
        driver
            .find(By::Css(format!("input[name={field}]")))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    driver
        .find(By::Css(
            "form[action='/tokens/generate'] button[type=submit]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&driver, "svg[data-qr-code]").await;
    // What a phone would scan: the QR code as the screen shows it.
    let screen = driver.screenshot_as_png().await.unwrap();
    shot(&driver, "generate-shown-once").await;
    let uri = common::qr::read(&screen);
    let url = url::Url::parse(&uri).unwrap();
    assert_eq!(url.host_str(), Some("totp"));
    let secret = url
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let seed = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    assert_eq!(seed.len(), 20);
    let shown_text = driver
        .find(By::Css("[data-secret]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        shown_text, secret,
        "the QR code and the text are the same seed"
    );

    // A reload shows neither again.
    driver.refresh().await.unwrap();
    wait_text(&driver, "[data-already-shown]", "already shown once").await;
    let page = driver.source().await.unwrap();
    assert!(
        !page.contains("data-qr-code") && !page.contains(&secret),
        "shown once only"
    );

    let code = common::totp::totp(&seed, "SHA1", 6, 30, unix_now());
    driver
        .find(By::Css(
            "form[action='/tokens/GEN-1/programming'] input[name=code]",
        ))
        .await
        .unwrap()
        .send_keys(&code)
        .await
        .unwrap();
    driver
        .find(By::Css(
            "form[action='/tokens/GEN-1/programming'] button[type=submit]",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&driver, ".flash", "Token GEN-1 is escrowed").await;
    driver
        .goto(format!("{base}/tokens/GEN-1/programming"))
        .await
        .unwrap();
    wait_text(&driver, "main", "nothing is left to program").await;
    assert!(!driver.source().await.unwrap().contains(&secret));
    driver.quit().await.unwrap();
}

/// Types `text` into the field `css`.
async fn type_into(driver: &WebDriver, css: &str, text: &str) {
    wait_for(driver, css).await.send_keys(text).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_verified_shipped_and_its_printed_slips_qr_code_confirms_its_delivery() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let base = format!("http://localhost:{port}");
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    without_autofill(&driver).await;
    admin_with_desk_roles(&driver, &base, &invite).await;
    let seed = data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap();

    driver.goto(format!("{base}/tokens/new")).await.unwrap();
    type_into(&driver, "input[name=owner]", "user5@example.org").await;
    type_into(&driver, "input[name=serial]", "SHIP-1").await;
    type_into(&driver, "textarea[name=secret]", SEED_B32).await;
    click(&driver, "form[action='/tokens/new'] button[type=submit]").await;
    wait_text(&driver, ".flash", "SHIP-1 escrowed").await;

    // Verify against the device before it leaves.
    let code = common::totp::totp(&seed, "SHA1", 6, 30, unix_now());
    type_into(
        &driver,
        "form[action='/tokens/SHIP-1/verify'] input[name=code]",
        &code,
    )
    .await;
    click(
        &driver,
        "form[action='/tokens/SHIP-1/verify'] button[type=submit]",
    )
    .await;
    wait_text(&driver, ".flash", "Verified: the code matched").await;
    wait_text(&driver, "main", "verified 20").await;

    // Record the shipment (the date field's value set as the date picker would).
    let form = "form[action='/tokens/SHIP-1/shipment']";
    type_into(&driver, &format!("{form} input[name=carrier]"), "DHL").await;
    type_into(&driver, &format!("{form} input[name=tracking]"), "JJD0099").await;
    let tomorrow = time::OffsetDateTime::from_unix_timestamp(unix_now() + 86_400)
        .unwrap()
        .date()
        .to_string();
    driver
        .execute(
            &format!(
                "document.querySelector(\"{form} input[name=expected]\").value = arguments[0];"
            ),
            vec![json!(tomorrow)],
        )
        .await
        .unwrap();
    click(&driver, &format!("{form} button[type=submit]")).await;
    wait_text(&driver, ".flash", "Shipment of SHIP-1 recorded").await;
    wait_text(&driver, "main", "JJD0099").await;

    // Print the slip: the print stylesheet as the print preview applies it.
    click(&driver, "form[action='/tokens/bulk'] button[type=submit]").await;
    wait_for(&driver, "article.slip svg[data-qr-code]").await;
    wait_text(&driver, "article.slip", "For user5@example.org").await;
    driver
        .cdp()
        .send_raw("Emulation.setEmulatedMedia", json!({ "media": "print" }))
        .await
        .unwrap();
    let header_shown = driver
        .execute(
            "return getComputedStyle(document.querySelector('header.top')).display !== 'none';",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(header_shown.json(), &json!(false), "print hides the shell");
    let preview = driver.screenshot_as_png().await.unwrap();
    shot(&driver, "slip-print-preview").await;
    let url = common::qr::read(&preview);
    assert!(
        url.starts_with(&format!("{base}/deliver/")),
        "the slip's QR code holds the delivery link: {url}"
    );
    driver
        .cdp()
        .send_raw("Emulation.setEmulatedMedia", json!({ "media": "" }))
        .await
        .unwrap();

    // The owner scans it, types the token's code, and the seed is gone.
    driver.goto(&url).await.unwrap();
    wait_text(&driver, "h1", "Confirm that your token has arrived").await;
    let code = common::totp::totp(&seed, "SHA1", 6, 30, unix_now());
    type_into(&driver, "input[name=code]", &(code + "\n")).await;
    wait_text(&driver, "h1", "delivery confirmed").await;
    driver.goto(format!("{base}/tokens/SHIP-1")).await.unwrap();
    wait_text(&driver, "main", "purged").await;
    wait_text(&driver, "main", "delivered").await;
    driver.quit().await.unwrap();
}
