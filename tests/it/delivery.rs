//! Delivery, cancellation and retention: the seed's destruction, verified byte by byte.

use crate::common;

use common::totp::totp;
use common::{Desk, Operator, TestServer, T0};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn seed() -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap()
}

async fn desk() -> Desk {
    let desk = Desk::start().await;
    desk.srv.canary.watch_seed("delivery seed", &seed());
    desk
}

async fn capture(op: &Operator, serial: &str, extra: Value) {
    let (status, body) = common::capture(op, "user@example.org", serial, SEED_B32, extra).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn code_at(unix: i64) -> String {
    totp(&seed(), "SHA1", 6, 30, unix)
}

async fn deliver(op: &Operator, serial: &str, code: &str) -> (StatusCode, Value) {
    op.post(
        &format!("/api/v1/tokens/{serial}/delivery"),
        json!({ "code": code }),
    )
    .await
}

#[test]
fn the_independent_totp_helper_matches_rfc_6238() {
    common::totp::self_check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_is_refused_audited_and_changes_nothing() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    capture(&provisioner, "D-1", json!({})).await;
    let before = srv.sealed_bytes("D-1").await.unwrap();
    let wrong = if code_at(T0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (status, body) = deliver(&helpdesk, "D-1", wrong).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("does not match"),
        "{body}"
    );
    assert_eq!(srv.sealed_bytes("D-1").await.unwrap(), before);
    assert_eq!(
        helpdesk.get("/api/v1/tokens/D-1").await.1["state"],
        "escrowed"
    );
    assert!(srv
        .audit_actions()
        .await
        .iter()
        .any(|(a, t, o)| a == "delivery.refused" && t == "token:D-1" && o == "denied"));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_code_purges_the_seed_without_a_trace_and_later_reveals_get_409() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    capture(&provisioner, "D-2", json!({})).await;
    let sealed = srv.sealed_bytes("D-2").await.unwrap();
    let code = code_at(T0);
    srv.canary.watch_code("delivery code", &code);
    let (status, body) = deliver(&helpdesk, "D-2", &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "serial": "D-2", "state": "purged", "reason": "delivered", "drift_steps": 0 })
    );
    assert_eq!(srv.sealed_bytes("D-2").await, None);
    srv.assert_no_trace("delivered", &sealed);

    let (_, detail) = helpdesk.get("/api/v1/tokens/D-2").await;
    assert_eq!(
        (detail["state"].clone(), detail["purge_reason"].clone()),
        (json!("purged"), json!("delivered"))
    );
    assert_eq!(detail["delivered_by"], "operator:hal");
    let (status, body) = helpdesk
        .reveal("D-2", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("purged"),
        "{body}"
    );
    let (status, _) = deliver(&helpdesk, "D-2", &code).await;
    assert_eq!(status, StatusCode::CONFLICT);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_of_three_steps_is_found_recorded_and_other_tokens_are_unaffected() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    capture(&provisioner, "FAST", json!({})).await;
    capture(&provisioner, "OTHER", json!({})).await;
    // The token's clock runs three steps (90 s) ahead.
    let (status, body) = deliver(&helpdesk, "FAST", &code_at(T0 + 90)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["drift_steps"], 3);
    let (_, detail) = helpdesk.get("/api/v1/tokens/FAST").await;
    assert_eq!(detail["drift_steps"], 3);
    let delivered = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "token.delivered")
        .unwrap();
    assert_eq!(
        delivered["details"],
        json!({ "verified": true, "drift_steps": 3 })
    );
    let (status, body) = helpdesk
        .reveal("OTHER", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["code"], code_at(T0), "no drift on the other token");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unverified_delivery_needs_a_reason_and_is_audited_as_unverified() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    capture(&provisioner, "D-3", json!({})).await;
    let (status, body) = helpdesk
        .post("/api/v1/tokens/D-3/delivery", json!({ "unverified": true }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["message"].as_str().unwrap().contains("reason"),
        "{body}"
    );
    let (status, body) = helpdesk
        .post("/api/v1/tokens/D-3/delivery", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = helpdesk
        .post("/api/v1/tokens/D-3/delivery", json!({ "unverified": true, "reason": "user's display is broken; replacement ordered" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reason"], "delivered-unverified");
    let (_, detail) = helpdesk.get("/api/v1/tokens/D-3").await;
    let event = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "token.delivered")
        .unwrap();
    assert_eq!(event["details"]["verified"], false);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_wrong_code_within_an_hour_is_refused_with_429() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    capture(&provisioner, "D-4", json!({})).await;
    let right = code_at(T0);
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    for _ in 0..5 {
        assert_eq!(
            deliver(&helpdesk, "D-4", wrong).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let (status, body) = deliver(&helpdesk, "D-4", &right).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right code waits: {body}"
    );
    srv.clock.advance(time::Duration::minutes(61));
    let mut helpdesk = helpdesk;
    helpdesk.sign_in_fresh().await;
    let now = srv.clock_unix();
    assert_eq!(
        deliver(&helpdesk, "D-4", &code_at(now)).await.0,
        StatusCode::OK
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_token_leaves_no_trace_and_only_provisioners_cancel() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    capture(&provisioner, "D-5", json!({})).await;
    let sealed = srv.sealed_bytes("D-5").await.unwrap();
    assert_eq!(
        helpdesk
            .post("/api/v1/tokens/D-5/cancel", json!({ "reason": "lost" }))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        provisioner
            .post("/api/v1/tokens/D-5/cancel", json!({ "reason": " " }))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/D-5/cancel",
            json!({ "reason": "lost in the post" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reason"], "cancelled");
    srv.assert_no_trace("cancelled", &sealed);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_paced_sweep_still_purges_every_overdue_token_batch_after_batch() {
    use seedvault::tokens::lifecycle::{purge_expired_paced, SweepPace, SWEEP_BATCH};
    let Desk {
        srv, provisioner, ..
    } = desk().await;
    // Two full batches and one token more: the pauses come between batches, none is skipped.
    let count = 2 * SWEEP_BATCH as usize + 1;
    for i in 0..count {
        capture(&provisioner, &format!("P-{i:03}"), json!({})).await;
    }
    srv.clock.advance(time::Duration::days(31));
    let purged = purge_expired_paced(&srv.state.env(), "system", SweepPace::Yielding)
        .await
        .unwrap();
    assert_eq!(purged.len(), count);
    let expired = srv.count_action("token.expired").await;
    assert_eq!(expired, count);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_purges_exactly_the_overdue_tokens_without_a_trace() {
    let Desk {
        srv,
        mut provisioner,
        ..
    } = desk().await;
    capture(&provisioner, "R-30", json!({})).await;
    capture(&provisioner, "R-14", json!({ "policy": "high-risk" })).await;
    srv.clock.advance(time::Duration::days(10));
    provisioner.sign_in_fresh().await;
    capture(&provisioner, "R-LATE", json!({})).await;
    let sealed_14 = srv.sealed_bytes("R-14").await.unwrap();

    let sweep = || async {
        seedvault::tokens::lifecycle::purge_expired(&srv.state.env(), "system")
            .await
            .unwrap()
    };
    assert!(sweep().await.is_empty(), "nothing is due after 10 days");
    srv.clock.advance(time::Duration::days(5));
    assert_eq!(
        sweep().await,
        ["R-14"],
        "the high-risk policy keeps seeds 14 days"
    );
    srv.assert_no_trace("expired", &sealed_14);
    srv.clock.advance(time::Duration::days(16));
    assert_eq!(sweep().await, ["R-30"]);
    srv.clock.advance(time::Duration::days(10));
    assert_eq!(sweep().await, ["R-LATE"]);
    let expired = srv.count_action("token.expired").await;
    assert_eq!(expired, 3);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_audit_append_leaves_the_token_unchanged() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    capture(&provisioner, "D-6", json!({})).await;
    let sealed = srv.sealed_bytes("D-6").await.unwrap();
    srv.execute(
        "CREATE TRIGGER inject_failure BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'injected'); END",
        "CREATE FUNCTION inject_failure() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$; \
         CREATE TRIGGER inject_failure BEFORE INSERT ON audit_events FOR EACH ROW EXECUTE FUNCTION inject_failure()",
    )
    .await;
    let (status, _) = deliver(&helpdesk, "D-6", &code_at(T0)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _) = provisioner
        .post("/api/v1/tokens/D-6/cancel", json!({ "reason": "test" }))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    srv.execute(
        "DROP TRIGGER inject_failure",
        "DROP TRIGGER inject_failure ON audit_events",
    )
    .await;
    assert_eq!(
        srv.sealed_bytes("D-6").await.unwrap(),
        sealed,
        "seed untouched"
    );
    assert_eq!(
        helpdesk.get("/api/v1/tokens/D-6").await.1["state"],
        "escrowed"
    );
    srv.stop_and_check().await;
}

/// A form post as the token page sends it; the client follows the redirect to the page that
/// shows the outcome.
async fn page_post(op: &Operator, srv: &TestServer, path: &str, form: &[(&str, &str)]) -> String {
    let response = op
        .http
        .post(srv.url(path))
        .header("Origin", &srv.base)
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let body = response.text().await.unwrap();
    srv.canary.record_response(path, body.as_bytes());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_pages_refuse_the_same_delivery_and_cancel_input_with_the_same_message() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    capture(&provisioner, "D-9", json!({})).await;
    // (API body, page form, who, action, the message both must show)
    type Case<'a> = (
        Value,
        &'a [(&'a str, &'a str)],
        &'a Operator,
        &'a str,
        &'a str,
    );
    let cases: &[Case] = &[
        (
            // A blank code is not an unverified delivery, even with a reason beside it.
            json!({ "code": "", "reason": "no display" }),
            &[("code", ""), ("reason", "no display")],
            &helpdesk,
            "delivery",
            "code: enter the code the user reads from the token, or confirm unverified with a reason",
        ),
        (
            json!({ "code": "123456", "unverified": true, "reason": "x" }),
            &[("code", "123456"), ("unverified", "true"), ("reason", "x")],
            &helpdesk,
            "delivery",
            "unverified: send either a code or unverified with a reason, not both",
        ),
        (
            json!({ "unverified": true, "reason": "  " }),
            &[("unverified", "true"), ("reason", "  ")],
            &helpdesk,
            "delivery",
            "reason: a reason is required",
        ),
        (
            json!({ "reason": " " }),
            &[("reason", " ")],
            &provisioner,
            "cancel",
            "reason: a reason is required",
        ),
    ];
    for (body, form, op, action, message) in cases {
        let path = format!("/api/v1/tokens/D-9/{action}");
        let (status, reply) = op.post(&path, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().starts_with(message),
            "{body}: {reply}"
        );
        let page = page_post(op, &srv, &format!("/tokens/D-9/{action}"), form).await;
        assert!(page.contains(message), "{form:?}: {page}");
    }
    let (_, token) = helpdesk.get("/api/v1/tokens/D-9").await;
    assert_eq!(token["state"], "escrowed", "{token}");
    assert!(
        !token["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "delivery.refused"),
        "refused input is not a delivery attempt: {token}"
    );
    srv.stop_and_check().await;
}
