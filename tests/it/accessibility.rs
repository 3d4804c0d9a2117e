//! WCAG 2.1 AA in a real browser: axe-core (from the npm registry, installed by `.ci/run`
//! into `.ci/axe`, never served by the product) runs over every page of `views::PAGES`,
//! signed out, as an operator holding every role, and as an operator of each single role
//! (who also sees the 403 pages), plus the reveal page with a code on screen. Any violation
//! of WCAG 2.0/2.1 A or AA, or of axe's best practices, fails the test with the rule, its
//! help text and the offending elements.

use crate::browser::{
    browser, free_port, register, shot, sign_out, start_chromedriver, start_server, wait_for,
    wait_text, without_autofill, ONE_BROWSER, SEED_B32,
};

use std::path::PathBuf;

use serde_json::{json, Value};
use thirtyfour::prelude::*;

const RULE_SETS: &str = "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']";

/// axe-core's source: `SEEDVAULT_AXE`, else where `.ci/run` installs it. Missing → the test
/// fails and says how to install it (a skipped check would hide a broken CI).
fn axe_source() -> String {
    let path = std::env::var_os("SEEDVAULT_AXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".ci/axe/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core not found at {} ({e}): run `npm install --prefix .ci/axe axe-core@4.11.0` \
             (.ci/run does) or set SEEDVAULT_AXE to axe.min.js",
            path.display()
        )
    })
}

/// Runs axe over the current page and returns one line per violation.
async fn violations(driver: &WebDriver, axe: &str) -> Vec<String> {
    let script = format!(
        "{axe}\n;return axe.run(document, {{ runOnly: {{ type: 'tag', values: {RULE_SETS} }}, resultTypes: ['violations'] }})\
         .then(r => r.violations.map(v => ({{ id: v.id, impact: v.impact, help: v.help, \
         nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' → ' + n.failureSummary) }})));"
    );
    let result = driver.execute(&script, vec![]).await.unwrap();
    let found: Vec<Value> = serde_json::from_value(result.json().clone()).unwrap();
    found
        .iter()
        .map(|v| {
            format!(
                "{} ({}): {}\n      {}",
                v["id"].as_str().unwrap_or("?"),
                v["impact"].as_str().unwrap_or("?"),
                v["help"].as_str().unwrap_or("?"),
                v["nodes"]
                    .as_array()
                    .map(|n| n
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("\n      "))
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// A page template of `views::PAGES` with its placeholders filled in.
fn concrete(template: &str, serial: &str, invite_token: &str, delivery_token: &str) -> String {
    let token = if template.starts_with("/deliver/") {
        delivery_token
    } else {
        invite_token
    };
    // No approval exists in this vault: its page shows the not-found page (also checked).
    let path = template
        .replace("{serial}", serial)
        .replace("{token}", token)
        .replace("{id}", "1");
    assert!(
        !path.contains('{'),
        "teach the accessibility test how to open {template} (fill its placeholder with a real value)"
    );
    path
}

/// Opens every page and records its violations under `who`.
async fn walk(
    driver: &WebDriver,
    axe: &str,
    base: &str,
    who: &str,
    invite_token: &str,
    delivery_token: &str,
    found: &mut Vec<String>,
) {
    let mut pages: Vec<String> = seedvault::web::views::PAGES
        .iter()
        .map(|p| concrete(p, "AX-1", invite_token, delivery_token))
        .collect();
    pages.push("/no/such/page".into());
    for path in pages {
        driver.goto(format!("{base}{path}")).await.unwrap();
        wait_for(driver, "main h1").await;
        for v in violations(driver, axe).await {
            found.push(format!("{who} {path}: {v}"));
        }
    }
}

/// Calls the API from the page, as the page's own script does (same origin, session cookie).
async fn api(driver: &WebDriver, method: &str, path: &str, body: Value) -> Value {
    let script = format!(
        "return fetch({path:?}, {{ method: {method:?}, headers: {{ 'Content-Type': 'application/json' }}, body: JSON.stringify(arguments[0]) }})\
         .then(async r => ({{ status: r.status, body: await r.json() }}));"
    );
    let answer = driver.execute(&script, vec![body]).await.unwrap();
    let answer = answer.json().clone();
    assert!(
        answer["status"].as_u64().is_some_and(|s| s < 300),
        "{method} {path}: {answer}"
    );
    answer["body"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_meets_wcag_2_1_aa_for_every_role() {
    let axe = axe_source();
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let base = format!("http://localhost:{port}");
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    without_autofill(&driver).await;
    let mut found = Vec::new();

    // Signed out: the sign-in page, the invite page, a missing page.
    driver.goto(format!("{base}/login")).await.unwrap();
    wait_text(&driver, "h1", "Sign in").await;
    for v in violations(&driver, &axe).await {
        found.push(format!("signed out /login: {v}"));
    }
    driver.goto(&invite).await.unwrap();
    wait_for(&driver, "form[data-webauthn=register] button").await;
    for v in violations(&driver, &axe).await {
        found.push(format!("signed out invite: {v}"));
    }

    // The first admin takes every role and fills the vault with something to show.
    register(&driver, &invite).await;
    api(
        &driver,
        "PATCH",
        "/api/v1/operators/admin",
        json!({ "roles": ["admin", "provisioner", "helpdesk", "auditor"] }),
    )
    .await;
    api(
        &driver,
        "POST",
        "/api/v1/tokens",
        json!({ "serial": "AX-1", "owner": "ann@example.org", "secret": SEED_B32, "display_name": "Ann Example" }),
    )
    .await;
    let link = api(
        &driver,
        "POST",
        "/api/v1/tokens/AX-1/delivery-link",
        json!({}),
    )
    .await;
    let delivery_token = link["url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let mut invites = Vec::new();
    for role in ["helpdesk", "provisioner", "auditor", "admin"] {
        let created = api(
            &driver,
            "POST",
            "/api/v1/operators/invites",
            json!({ "name": format!("only-{role}"), "roles": [role] }),
        )
        .await;
        invites.push((role, created["url"].as_str().unwrap().to_owned()));
    }
    walk(
        &driver,
        &axe,
        &base,
        "all roles",
        "no-such-invite",
        &delivery_token,
        &mut found,
    )
    .await;

    // The pages that answer a form post: delivery slips and a batch's summary (on a token
    // of their own, so that AX-1's delivery link stays the one the walks open).
    api(
        &driver,
        "POST",
        "/api/v1/tokens",
        json!({ "serial": "AX-2", "owner": "bo@example.org", "secret": SEED_B32 }),
    )
    .await;
    driver.goto(format!("{base}/tokens/AX-2")).await.unwrap();
    wait_for(&driver, "form[action='/tokens/bulk'] button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    wait_for(&driver, "article.slip svg[data-qr-code]").await;
    for v in violations(&driver, &axe).await {
        found.push(format!("all roles, delivery slips: {v}"));
    }
    driver.goto(format!("{base}/tokens")).await.unwrap();
    wait_for(&driver, "input[name=serials][value=AX-2]")
        .await
        .click()
        .await
        .unwrap();
    driver
        .find(By::Css("form#bulk button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&driver, "h1", "Shipments recorded").await;
    for v in violations(&driver, &axe).await {
        found.push(format!("all roles, batch summary: {v}"));
    }

    // The reveal page with a code on screen (the countdown and its announcements).
    driver
        .goto(format!("{base}/tokens/AX-1/reveal"))
        .await
        .unwrap();
    for check in ["callback", "video-id"] {
        wait_for(&driver, &format!("input[value={check}]"))
            .await
            .click()
            .await
            .unwrap();
    }
    driver
        .find(By::Css("input[name=ticket]"))
        .await
        .unwrap()
        .send_keys("INC-1")
        .await
        .unwrap();
    driver
        .find(By::Css("form[data-webauthn=reveal] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&driver, "[data-code-panel]:not([hidden]) [data-code]").await;
    for v in violations(&driver, &axe).await {
        found.push(format!("all roles, code shown: {v}"));
    }
    shot(&driver, "reveal-code-a11y").await;

    // At 200 % zoom (a 1280 px screen shows 640 CSS px) every page reflows: nothing but the
    // tables' own scroll regions is wider than the window.
    driver.set_window_rect(0, 0, 640, 900).await.unwrap();
    for template in seedvault::web::views::PAGES {
        let path = concrete(template, "AX-1", "no-such-invite", &delivery_token);
        driver.goto(format!("{base}{path}")).await.unwrap();
        wait_for(&driver, "main h1").await;
        let overflow = driver
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        let overflow = overflow.json().as_i64().unwrap();
        if overflow > 0 {
            found.push(format!(
                "200 % zoom {path}: the page is {overflow} px wider than the window"
            ));
        }
    }
    driver.set_window_rect(0, 0, 1200, 900).await.unwrap();

    // Each role alone, through its own invite: its pages, and the 403 pages of the others.
    for (role, url) in &invites {
        driver.goto(format!("{base}/")).await.unwrap();
        sign_out(&driver).await;
        register(&driver, url).await;
        walk(
            &driver,
            &axe,
            &base,
            role,
            "no-such-invite",
            &delivery_token,
            &mut found,
        )
        .await;
    }

    // The owner's own delivery page, as the owner sees it: signed out, on a phone.
    driver.goto(format!("{base}/")).await.unwrap();
    sign_out(&driver).await;
    driver.set_window_rect(0, 0, 390, 844).await.unwrap();
    driver
        .goto(format!("{base}/deliver/{delivery_token}"))
        .await
        .unwrap();
    wait_for(&driver, "main h1").await;
    for v in violations(&driver, &axe).await {
        found.push(format!("signed out /deliver: {v}"));
    }
    driver.quit().await.unwrap();

    assert!(
        found.is_empty(),
        "{} accessibility violation(s):\n  {}",
        found.len(),
        found.join("\n  ")
    );
}
