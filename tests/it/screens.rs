//! The token list and the audit page at more than one page of data, in Chromium: paging both
//! ways, sorting, prefix search, counts, the audit filters (time, actor, token, action,
//! outcome) kept in the URL and handed to the exports, and the details written for people.

use crate::browser::{
    browser, free_port, register, start_chromedriver, start_server, wait_for, wait_text,
    without_autofill, ONE_BROWSER, SEED_B32,
};

use serde_json::{json, Value};
use thirtyfour::prelude::*;

/// Runs `body` (an async function body with `api(method, path, json)` in scope) in the page.
async fn in_page(driver: &WebDriver, body: &str) -> Value {
    let script = format!(
        "const api = (method, path, data) => fetch(path, {{ method, headers: {{ 'Content-Type': 'application/json' }}, \
         body: data === undefined ? undefined : JSON.stringify(data) }}).then(async r => ({{ status: r.status, body: await r.json().catch(() => null) }}));\n\
         return (async () => {{ {body} }})();"
    );
    driver
        .execute(&script, vec![])
        .await
        .unwrap()
        .json()
        .clone()
}

/// The texts of the first cells of the list's rows.
async fn first_column(driver: &WebDriver) -> Vec<String> {
    let mut texts = Vec::new();
    for cell in driver
        .find_all(By::Css("tbody tr td:first-child"))
        .await
        .unwrap()
    {
        texts.push(cell.text().await.unwrap());
    }
    texts
}

async fn click_link(driver: &WebDriver, css: &str) {
    let link = wait_for(driver, css).await;
    let before = driver.current_url().await.unwrap();
    link.click().await.unwrap();
    for _ in 0..100 {
        if driver.current_url().await.unwrap() != before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_for(driver, "main h1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_list_and_the_audit_trail_page_sort_search_and_filter_in_chromium() {
    let _one = ONE_BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_server, invite) = start_server(dir.path(), port);
    let base = format!("http://localhost:{port}");
    let (_chromedriver, driver_port) = start_chromedriver();
    let driver = browser(driver_port, true).await;
    without_autofill(&driver).await;
    register(&driver, &invite).await;

    // 120 tokens for two owners, and a refused delivery (an event whose outcome is denied).
    let seeded = in_page(
        &driver,
        &format!(
            "let r = await api('PATCH', '/api/v1/operators/admin', {{ roles: ['admin', 'provisioner', 'helpdesk', 'auditor'] }});\n\
             if (r.status !== 200) return r;\n\
             for (let i = 0; i < 120; i++) {{\n\
               const serial = 'S-' + String(i).padStart(3, '0');\n\
               r = await api('POST', '/api/v1/tokens', {{ serial, owner: (i % 2 ? 'bob' : 'ann') + '@example.org', secret: '{SEED_B32}' }});\n\
               if (r.status !== 201) return r;\n\
             }}\n\
             return await api('POST', '/api/v1/tokens/S-007/delivery', {{ code: '000000' }});"
        ),
    )
    .await;
    assert_eq!(seeded["status"], 422, "a wrong code is refused: {seeded}");

    // The token list: newest first, 50 a page, counts above it.
    driver.goto(format!("{base}/tokens")).await.unwrap();
    wait_text(&driver, ".counts", "120 tokens").await;
    let first = first_column(&driver).await;
    assert_eq!(first.len(), 50);
    assert_eq!(first[0], "S-119", "newest first");
    click_link(&driver, "nav.pager a[rel=next]").await;
    let second = first_column(&driver).await;
    assert_eq!(
        second[0], "S-069",
        "the next page continues where the first stopped"
    );
    click_link(&driver, "nav.pager a[rel=prev]").await;
    assert_eq!(first_column(&driver).await, first, "and comes back");

    // Sorted by serial, ascending, by its column header.
    click_link(&driver, "thead th a[href*='sort=serial']").await;
    let sorted = first_column(&driver).await;
    assert_eq!(&sorted[..3], ["S-000", "S-001", "S-002"]);
    let header = driver
        .find(By::Css("th[aria-sort]"))
        .await
        .unwrap()
        .attr("aria-sort")
        .await
        .unwrap();
    assert_eq!(
        header.as_deref(),
        Some("ascending"),
        "screen readers hear the order"
    );
    click_link(&driver, "nav.pager a[rel=next]").await;
    assert_eq!(first_column(&driver).await[0], "S-050");
    click_link(&driver, "nav.pager a[rel=next]").await;
    let last = first_column(&driver).await;
    assert_eq!((last.len(), last[0].as_str()), (20, "S-100"));
    assert!(
        driver.find(By::Css("nav.pager a[rel=next]")).await.is_err(),
        "no next page after the last"
    );

    // Prefix search, any case; and by owner.
    driver.goto(format!("{base}/tokens?q=s-00")).await.unwrap();
    wait_for(&driver, "tbody tr").await;
    assert_eq!(first_column(&driver).await.len(), 10, "S-000 … S-009");
    driver.goto(format!("{base}/tokens?q=BOB")).await.unwrap();
    wait_for(&driver, "tbody tr").await;
    assert_eq!(
        first_column(&driver).await.len(),
        50,
        "60 of bob's, one page"
    );

    // The audit page: newest first, older and newer pages.
    driver.goto(format!("{base}/audit")).await.unwrap();
    let newest: Vec<i64> = first_column(&driver)
        .await
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(newest.len(), 50);
    assert!(
        newest.windows(2).all(|w| w[0] == w[1] + 1),
        "newest first, no gap"
    );
    click_link(&driver, "nav.pager a[rel=next]").await;
    let older: Vec<i64> = first_column(&driver)
        .await
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        older[0],
        newest[49] - 1,
        "the older page starts below the newest"
    );
    click_link(&driver, "nav.pager a[rel=prev]").await;
    assert_eq!(first_column(&driver).await[0], newest[0].to_string());

    // Filters: one token's capture, then the denied events only, each kept in the URL and
    // handed to the export links.
    driver
        .goto(format!("{base}/audit?token=S-005&action=token.captured"))
        .await
        .unwrap();
    wait_for(&driver, "tbody tr").await;
    assert_eq!(first_column(&driver).await.len(), 1);
    let target = driver
        .find(By::Css("tbody td a[href='/tokens/S-005']"))
        .await
        .unwrap();
    assert_eq!(
        target.text().await.unwrap(),
        "token:S-005",
        "targets open the token"
    );
    let export = driver
        .find(By::Css("a[href*='format=csv']"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        export,
        "/api/v1/audit?format=csv&token=S-005&action=token.captured"
    );
    let csv = driver
        .execute(
            "return fetch(arguments[0]).then(r => r.text());",
            vec![json!(export)],
        )
        .await
        .unwrap()
        .json()
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("event,")).count(),
        1,
        "the export holds exactly the events on screen: {csv}"
    );

    driver.goto(format!("{base}/audit")).await.unwrap();
    let outcome = wait_for(&driver, "select[name=outcome]").await;
    outcome
        .find(By::Css("option[value=denied]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click_link(&driver, "form.filters button[type=submit]").await;
    assert!(driver
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains("outcome=denied"));
    let rows = driver.find_all(By::Css("tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "only the refused delivery");
    let row = rows[0].text().await.unwrap();
    assert!(row.contains("delivery.refused (denied)"), "{row}");
    assert!(
        row.contains("Reason\nwrong code"),
        "details are labelled for people: {row}"
    );

    // Time range: the last hour holds everything; a range in the future holds nothing.
    driver.goto(format!("{base}/audit")).await.unwrap();
    click_link(&driver, "p.quick a:first-child").await;
    assert_eq!(first_column(&driver).await.len(), 50);
    driver
        .goto(format!("{base}/audit?since=2999-01-01T00:00"))
        .await
        .unwrap();
    wait_text(&driver, "main", "No event matches").await;
    driver
        .goto(format!("{base}/audit?since=yesterday"))
        .await
        .unwrap();
    wait_text(&driver, ".error-box", "from = 'yesterday' is not a time").await;

    // The details of each kind of event read as labelled values, the raw JSON one click away.
    driver
        .goto(format!("{base}/audit?action=operator.roles_changed"))
        .await
        .unwrap();
    wait_for(&driver, "tbody tr").await;
    let details = driver
        .find(By::Css("tbody tr dl.details"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        details.contains("Roles") || details.contains("To"),
        "{details}"
    );
    let raw = driver.find(By::Css("tbody tr details.raw")).await.unwrap();
    assert!(!raw
        .find(By::Css("code"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    raw.find(By::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(raw
        .find(By::Css("code"))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap());
    driver.quit().await.unwrap();
}
