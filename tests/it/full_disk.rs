//! A full disk and a held database lock: clear refusals while they last, and every kind of
//! write working again afterwards without a restart (issue #21, finding 1).
//!
//! The full disk is SQLite's own `SQLITE_FULL` (`Store::simulate_full_disk`: each commit grows
//! the file past a page limit set at its current size), so it needs no root and no small mount.

use std::time::Duration;

use crate::common;

use common::totp::totp;
use common::{Operator, TestServer};
use reqwest::{Method, StatusCode};
use seedvault::config::Overrides;
use serde_json::{json, Value};

const SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const CHECKS: &[&str] = &["callback", "video-id"];

fn seed() -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap()
}

async fn capture(op: &Operator, serial: &str) -> (StatusCode, Value) {
    common::capture(op, "user@example.org", serial, SEED_B32, json!({})).await
}

async fn deliver(srv: &TestServer, op: &Operator, serial: &str) -> (StatusCode, Value) {
    let code = totp(&seed(), "SHA1", 6, 30, srv.clock_unix());
    op.post(
        &format!("/api/v1/tokens/{serial}/delivery"),
        json!({ "code": code }),
    )
    .await
}

/// The retention sweep as the server's sweeper runs it, answered as the API would answer it.
async fn sweep(srv: &TestServer) -> Result<Vec<String>, StatusCode> {
    seedvault::tokens::lifecycle::purge_expired(&srv.state.env(), "system")
        .await
        .map_err(|e| seedvault::web::AppError::from(e).status())
}

/// A write by another process, as the CLI makes beside the server.
fn another_process_writes(srv: &TestServer) {
    let other = rusqlite::Connection::open(srv.state.store.path().unwrap()).unwrap();
    other.busy_timeout(Duration::from_secs(5)).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM sessions WHERE 0; COMMIT;")
        .unwrap();
}

fn assert_disk_full(what: &str, status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{what}: {body}");
    assert_eq!(body["error"], "disk_full", "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("disk") && message.contains("full"),
        "{what} names the cause: {message}"
    );
    assert!(
        body.get("code").is_none(),
        "{what} lets no code out: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_naming_it_and_every_write_works_again_once_space_is_freed() {
    if crate::common::sqlite_only(
        "a full disk is simulated at SQLite's commit (PostgreSQL's disk is the server's)",
    ) {
        return;
    }
    let srv = TestServer::start().await;
    srv.canary.watch_seed("full disk seed", &seed());
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut helpdesk = srv.operator("hal", "helpdesk").await;
    for serial in ["FD-REVEAL", "FD-DELIVER"] {
        let (status, body) = capture(&provisioner, serial).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let audited_before = srv.audit_actions().await.len();

    srv.state.store.simulate_full_disk(true);
    let (status, body) = capture(&provisioner, "FD-LATE").await;
    assert_disk_full("capture", status, &body);
    let (status, body) = helpdesk.reveal("FD-REVEAL", CHECKS, Some("INC-1")).await;
    assert_disk_full("reveal", status, &body);
    let (status, body) = deliver(&srv, &helpdesk, "FD-DELIVER").await;
    assert_disk_full("delivery", status, &body);
    let (status, body) = helpdesk.sign_in_fresh().await;
    assert_disk_full("sign-in", status, &body);
    assert_eq!(
        sweep(&srv).await,
        Ok(vec![]),
        "a sweep with nothing due writes nothing"
    );
    assert_eq!(
        srv.audit_actions().await.len(),
        audited_before,
        "no failed write left an audit event or anything else behind"
    );

    srv.state.store.simulate_full_disk(false);
    let (status, body) = helpdesk.sign_in_fresh().await;
    assert_eq!(
        status,
        StatusCode::OK,
        "sign-in after space is freed: {body}"
    );
    let (status, body) = capture(&provisioner, "FD-LATE").await;
    assert_eq!(status, StatusCode::CREATED, "capture: {body}");
    let (status, body) = helpdesk.reveal("FD-REVEAL", CHECKS, Some("INC-1")).await;
    assert_eq!(status, StatusCode::OK, "reveal: {body}");
    let (status, body) = deliver(&srv, &helpdesk, "FD-DELIVER").await;
    assert_eq!(status, StatusCode::OK, "delivery: {body}");
    another_process_writes(&srv);

    // The sweeper meets a full disk too, and sweeps once there is room.
    srv.clock.advance(time::Duration::days(31));
    srv.state.store.simulate_full_disk(true);
    assert_eq!(sweep(&srv).await, Err(StatusCode::INSUFFICIENT_STORAGE));
    srv.state.store.simulate_full_disk(false);
    let mut swept = sweep(&srv).await.unwrap();
    swept.sort();
    assert_eq!(swept, ["FD-LATE", "FD-REVEAL"]);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_busy_timeout_answers_503_with_retry_after_and_then_clears() {
    if crate::common::sqlite_only("SQLite's write lock and busy timeout") {
        return;
    }
    let srv = TestServer::start_with(Overrides {
        busy_timeout_seconds: Some(1),
        ..Default::default()
    })
    .await;
    let provisioner = srv.operator("pat", "provisioner").await;

    // Another process (a CLI command, say) holds the write lock for longer than the timeout.
    let other = rusqlite::Connection::open(srv.state.store.path().unwrap()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let response = provisioner
        .http
        .post(format!("{}/api/v1/tokens", srv.base))
        .header("Origin", &srv.base)
        .json(&json!({ "owner": "user@example.org", "serial": "BUSY-1", "secret": SEED_B32 }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "database_busy", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("locked"),
        "{body}"
    );
    assert_eq!(retry_after.unwrap(), "1");
    other.execute_batch("ROLLBACK").unwrap();

    let (status, body) = capture(&provisioner, "BUSY-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = provisioner
        .request(Method::GET, "/api/v1/tokens/BUSY-1", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_page_on_a_full_disk_says_so_and_works_once_space_is_freed() {
    if crate::common::sqlite_only(
        "a full disk is simulated at SQLite's commit (PostgreSQL's disk is the server's)",
    ) {
        return;
    }
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let post = || {
        provisioner
            .http
            .post(srv.url("/tokens/new"))
            .header("Origin", &srv.base)
            .form(&[
                ("owner", "u@example.org"),
                ("serial", "FD-PAGE"),
                ("secret", SEED_B32),
                ("format", "auto"),
            ])
            .send()
    };
    srv.state.store.simulate_full_disk(true);
    let response = post().await.unwrap();
    assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
    let (status, _) = provisioner.get("/api/v1/tokens/FD-PAGE").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    let html = response.text().await.unwrap();
    assert!(html.contains("The disk is full"), "{html}");
    srv.state.store.simulate_full_disk(false);
    let response = post().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let (status, token) = provisioner.get("/api/v1/tokens/FD-PAGE").await;
    assert_eq!(status, StatusCode::OK, "{token}");
    srv.stop_and_check().await;
}
