//! Four-eyes reveals over HTTP with two soft-passkey helpdesk operators: hal asks for a code of
//! a high-risk token, bea approves with her own passkey, hal signs the reveal with his. Every
//! refusal is a 4xx JSON error that changes nothing and is audited.

use crate::common;

use common::{Operator, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// T2-100001 from tests/data/entra-oath.csv.
const SEED_B32: &str = "7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2";
const OTHER_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const CHECKS: [&str; 3] = ["callback", "manager", "video-id"];

/// A server with a provisioner, the requester hal and the approver bea (both helpdesk).
struct Desk {
    srv: TestServer,
    pat: Operator,
    hal: Operator,
    bea: Operator,
}

async fn desk() -> Desk {
    desk_with_requester_roles("helpdesk").await
}

/// The high-risk policy's callback and manager checks rely on the directory of record: vip and
/// their manager have numbers of record.
const DIRECTORY: &str = "owner,display_name,phone,mobile,manager,department,mail\n\
vip@example.org,Vera Important,+1 555 010 0900,,boss@example.org,Board,vip@example.org\n\
boss@example.org,Boss,+1 555 010 0901,,,Board,boss@example.org\n";

async fn desk_with_requester_roles(roles: &str) -> Desk {
    let srv = TestServer::start().await;
    let env = seedvault::directory::SyncEnv {
        store: &srv.state.store,
        vault: &srv.state.vault,
        now: seedvault::clock::Clock::now(&*srv.state.clock),
    };
    seedvault::directory::sync_csv(
        &env,
        "cli:test",
        "directory.csv",
        DIRECTORY.as_bytes(),
        false,
    )
    .await
    .unwrap();
    let pat = srv.operator("pat", "provisioner").await;
    let hal = srv.operator("hal", roles).await;
    let bea = srv.operator("bea", "helpdesk").await;
    Desk { srv, pat, hal, bea }
}

fn seed(b32: &str) -> Vec<u8> {
    data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap()
}

/// Escrows a high-risk token for vip@example.org.
async fn high_risk(pat: &Operator, serial: &str, secret: &str) {
    let (status, body) = common::capture(
        pat,
        "vip@example.org",
        serial,
        secret,
        json!({ "policy": "high-risk" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// hal's `reveal/start` with the full high-risk checklist and `ticket`.
async fn ask(op: &Operator, serial: &str, ticket: &str) -> (StatusCode, Value) {
    op.post(
        &format!("/api/v1/tokens/{serial}/reveal/start"),
        json!({ "checks": CHECKS, "ticket": ticket, "note": "caller on video, badge 4471" }),
    )
    .await
}

/// Asks and returns the new request's id.
async fn request(op: &Operator, serial: &str) -> i64 {
    let (status, body) = ask(op, serial, "INC-900").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["approval"]["id"].as_i64().unwrap()
}

/// Approves (start, the approver's passkey, finish).
async fn approve(op: &mut Operator, id: i64) -> (StatusCode, Value) {
    let (status, challenge) = op
        .post(&format!("/api/v1/approvals/{id}/approve/start"), json!({}))
        .await;
    if status != StatusCode::OK {
        return (status, challenge);
    }
    let assertion = op.assert(challenge);
    op.post(&format!("/api/v1/approvals/{id}/approve/finish"), assertion)
        .await
}

/// `reveal/start` with the approval, the requester's passkey, `reveal/finish`; a code is watched
/// by the canary from then on.
async fn reveal_with(op: &mut Operator, serial: &str, id: i64, body: Value) -> (StatusCode, Value) {
    let mut body = body;
    body["approval"] = json!(id);
    let (status, challenge) = op
        .post(&format!("/api/v1/tokens/{serial}/reveal/start"), body)
        .await;
    if status != StatusCode::OK {
        return (status, challenge);
    }
    let assertion = op.assert(challenge);
    let (status, body) = op
        .send(
            Method::POST,
            &format!("/api/v1/tokens/{serial}/reveal/finish"),
            Some(assertion),
        )
        .await;
    if let Some(code) = body["code"].as_str() {
        op.canary.watch_code("four-eyes code", code);
    } else {
        op.canary
            .record_response("reveal finish", body.to_string().as_bytes());
    }
    (status, body)
}

async fn status_of(op: &Operator, id: i64) -> String {
    let (status, body) = op.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["status"].as_str().unwrap().to_owned()
}

/// The last audit event: (actor, action, outcome, details).
async fn last_event(srv: &TestServer) -> (String, String, String, String) {
    let rows = seedvault::store::audit::page_after(&srv.state.store, 0, 1_000_000)
        .await
        .unwrap();
    let last = rows.last().unwrap();
    (
        last.actor.clone(),
        last.action.clone(),
        last.outcome.clone(),
        last.details.clone(),
    )
}

async fn actions(srv: &TestServer) -> Vec<String> {
    srv.audit_actions()
        .await
        .into_iter()
        .map(|(action, _, _)| action)
        .filter(|a| a.starts_with("approval.") || a.starts_with("reveal."))
        .collect()
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

/// Checks a refusal: its status, a JSON error naming `says`, and an `approval.refused` event
/// by `actor` with that reason as the last event.
async fn assert_refused(
    srv: &TestServer,
    (status, body): (StatusCode, Value),
    expected: StatusCode,
    says: &str,
    actor: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"].is_string(), "a JSON error: {body}");
    assert!(message(&body).contains(says), "{says}: {body}");
    let (who, action, outcome, details) = last_event(srv).await;
    assert_eq!(
        (who.as_str(), action.as_str(), outcome.as_str()),
        (actor, "approval.refused", "denied"),
        "{details}"
    );
    assert!(details.contains(says), "{details}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_risk_code_needs_a_second_operators_approval_and_then_the_requesters_own_passkey() {
    let Desk {
        srv,
        pat,
        mut hal,
        mut bea,
    } = desk().await;
    srv.canary.watch_seed("vip seed", &seed(SEED_B32));
    high_risk(&pat, "HR-1", SEED_B32).await;

    // hal asks: 202 with the request, not a challenge.
    let (status, body) = ask(&hal, "HR-1", "INC-900").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let approval = &body["approval"];
    let id = approval["id"].as_i64().unwrap();
    assert_eq!(approval["status"], "pending");
    assert_eq!(
        approval["expires_at"].as_i64().unwrap(),
        srv.clock_unix() + 600,
        "approval_ttl = 10 minutes"
    );
    assert!(body.get("publicKey").is_none());

    // bea sees it with hal's answers; hal does not list his own request, but follows it.
    let (_, pending) = bea.get("/api/v1/approvals").await;
    let listed = &pending.as_array().unwrap()[0];
    assert_eq!(listed["id"], id);
    assert_eq!(listed["requester"], "hal");
    assert_eq!(listed["checks"], json!(CHECKS));
    assert_eq!(listed["ticket"], "INC-900");
    assert_eq!(listed["note"], "caller on video, badge 4471");
    assert_eq!(listed["owner"], "vip@example.org");
    // The approver sees the owner's numbers and manager of record beside the answers.
    assert_eq!(listed["directory"]["phones"], json!(["+15550100900"]));
    assert_eq!(listed["directory"]["manager"], "boss@example.org");
    let (_, own) = hal.get("/api/v1/approvals").await;
    assert_eq!(own, json!([]));
    assert_eq!(status_of(&hal, id).await, "pending");
    // The provisioner approves under no policy: neither listed nor shown.
    assert_eq!(pat.get("/api/v1/approvals").await.1, json!([]));
    assert_eq!(
        pat.get(&format!("/api/v1/approvals/{id}")).await.0,
        StatusCode::FORBIDDEN
    );

    // The pages: bea's header counts the request, its page shows hal's answers.
    let page = bea.http.get(srv.url("/")).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("1 request waits for your approval"),
        "header count"
    );
    let page = bea
        .http
        .get(srv.url(&format!("/approvals/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for shown in [
        "INC-900",
        "caller on video, badge 4471",
        "hal",
        "data-webauthn=\"approve\"",
    ] {
        assert!(html.contains(shown), "the approval page shows {shown}");
    }
    let html = pat.http.get(srv.url("/")).send().await.unwrap();
    assert!(!html.text().await.unwrap().contains("/approvals"));

    // bea approves with her passkey.
    let (status, approved) = approve(&mut bea, id).await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decided_by"], "bea");
    let (_, followed) = hal.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(
        (followed["status"].clone(), followed["decided_by"].clone()),
        (json!("approved"), json!("bea"))
    );

    // hal signs with his own passkey; the code is the independent RFC 6238 one.
    let (status, revealed) = reveal_with(&mut hal, "HR-1", id, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{revealed}");
    let expected = common::totp::totp(&seed(SEED_B32), "SHA1", 6, 30, srv.clock_unix());
    assert_eq!(revealed["code"], expected.as_str());
    assert!(
        revealed.get("next_code").is_none(),
        "high-risk shows one code"
    );
    assert_eq!(status_of(&hal, id).await, "used");

    assert_eq!(
        actions(&srv).await,
        [
            "approval.requested",
            "approval.approved",
            "approval.used",
            "reveal.granted"
        ]
    );
    let events = seedvault::store::audit::for_target(&srv.state.store, "token:HR-1")
        .await
        .unwrap();
    let approved = events
        .iter()
        .find(|e| e.action == "approval.approved")
        .unwrap();
    assert_eq!(approved.actor, "operator:bea");
    let granted = events
        .iter()
        .find(|e| e.action == "reveal.granted")
        .unwrap();
    assert_eq!(granted.actor, "operator:hal");
    let details: Value = serde_json::from_str(&granted.details).unwrap();
    assert_eq!(details["approval"], id);
    assert_eq!(details["approved_by"], "bea");
    assert_eq!(details["policy"], "high-risk");

    // Single use.
    let refused = reveal_with(&mut hal, "HR-1", id, json!({})).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::CONFLICT,
        "already been used",
        "operator:hal",
    )
    .await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_approves_their_own_request_not_from_another_session_nor_as_an_admin() {
    let Desk {
        srv, pat, mut hal, ..
    } = desk_with_requester_roles("helpdesk,admin").await;
    high_risk(&pat, "HR-2", SEED_B32).await;
    let id = request(&hal, "HR-2").await;
    let refused = approve(&mut hal, id).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::FORBIDDEN,
        "you requested this reveal yourself",
        "operator:hal",
    )
    .await;
    hal.sign_in_fresh().await;
    let refused = approve(&mut hal, id).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::FORBIDDEN,
        "you requested this reveal yourself",
        "operator:hal",
    )
    .await;
    let refused = hal
        .post(
            &format!("/api/v1/approvals/{id}/deny"),
            json!({ "reason": "changed my mind" }),
        )
        .await;
    assert_refused(
        &srv,
        refused,
        StatusCode::FORBIDDEN,
        "you requested this reveal yourself",
        "operator:hal",
    )
    .await;
    // A role outside the policy's approvers cannot decide either.
    let mut ada = srv.operator("ada", "admin,auditor").await;
    let refused = approve(&mut ada, id).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::FORBIDDEN,
        "only by operators with one of the roles helpdesk",
        "operator:ada",
    )
    .await;
    assert_eq!(status_of(&hal, id).await, "pending");
    // Nor can hal reveal while it waits.
    let refused = reveal_with(&mut hal, "HR-2", id, json!({})).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::CONFLICT,
        "still waiting for a second operator",
        "operator:hal",
    )
    .await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_after_expiry_or_a_second_time_is_refused_and_expiry_is_recorded() {
    let Desk {
        srv,
        pat,
        hal,
        mut bea,
    } = desk().await;
    high_risk(&pat, "HR-3", SEED_B32).await;
    let late = request(&hal, "HR-3").await;
    srv.clock.advance(time::Duration::minutes(11));
    let refused = approve(&mut bea, late).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::GONE,
        "has expired",
        "operator:bea",
    )
    .await;
    let events = actions(&srv).await;
    assert_eq!(
        events[events.len() - 2..],
        ["approval.expired", "approval.refused"]
    );
    assert_eq!(status_of(&hal, late).await, "expired");

    let id = request(&hal, "HR-3").await;
    assert_eq!(approve(&mut bea, id).await.0, StatusCode::OK);
    let mut cy = srv.operator("cy", "helpdesk").await;
    for approver in [&mut bea, &mut cy] {
        let refused = approve(approver, id).await;
        let actor = format!("operator:{}", approver.name);
        assert_refused(
            &srv,
            refused,
            StatusCode::CONFLICT,
            "is already approved",
            &actor,
        )
        .await;
    }
    let refused = cy
        .post(
            &format!("/api/v1/approvals/{id}/deny"),
            json!({ "reason": "too late" }),
        )
        .await;
    assert_refused(
        &srv,
        refused,
        StatusCode::CONFLICT,
        "is already approved",
        "operator:cy",
    )
    .await;
    assert_eq!(status_of(&hal, id).await, "approved");

    // An approval not used within approval_ttl expires too; the sweeper records it.
    srv.clock.advance(time::Duration::minutes(11));
    let env = srv.state.env();
    assert_eq!(
        seedvault::tokens::approval::expire_overdue(&env)
            .await
            .unwrap(),
        1
    );
    let (actor, action, _, _) = last_event(&srv).await;
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("system", "approval.expired")
    );
    assert_eq!(status_of(&hal, id).await, "expired");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_prompt_for_one_request_cannot_approve_a_request_for_another_token() {
    let Desk {
        srv,
        pat,
        mut hal,
        mut bea,
    } = desk().await;
    high_risk(&pat, "HR-4", SEED_B32).await;
    high_risk(&pat, "HR-5", OTHER_SEED).await;
    let first = request(&hal, "HR-4").await;
    let second = request(&hal, "HR-5").await;
    let (status, challenge) = bea
        .post(
            &format!("/api/v1/approvals/{first}/approve/start"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let assertion = bea.assert(challenge);
    let refused = bea
        .post(
            &format!("/api/v1/approvals/{second}/approve/finish"),
            assertion,
        )
        .await;
    assert_refused(
        &srv,
        refused,
        StatusCode::BAD_REQUEST,
        &format!("started for approval {first}, not {second}"),
        "operator:bea",
    )
    .await;
    assert_eq!(status_of(&hal, first).await, "pending");
    assert_eq!(status_of(&hal, second).await, "pending");

    // An approval of HR-4 used for HR-5: void.
    assert_eq!(approve(&mut bea, first).await.0, StatusCode::OK);
    let body =
        json!({ "checks": CHECKS, "ticket": "INC-900", "note": "caller on video, badge 4471" });
    let (status, refused) = reveal_with(&mut hal, "HR-5", first, body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        message(&refused).contains("void: the token changed"),
        "{refused}"
    );
    let events = actions(&srv).await;
    assert_eq!(
        events[events.len() - 2..],
        ["approval.voided", "approval.refused"]
    );
    assert_eq!(status_of(&hal, first).await, "void");
    let refused = reveal_with(&mut hal, "HR-4", first, json!({})).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::CONFLICT,
        "is void",
        "operator:hal",
    )
    .await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_from_the_requesters_passkey_does_not_approve_for_the_approver() {
    let Desk {
        srv,
        pat,
        mut hal,
        bea,
    } = desk().await;
    high_risk(&pat, "HR-6", SEED_B32).await;
    let id = request(&hal, "HR-6").await;
    let (status, mut challenge) = bea
        .post(&format!("/api/v1/approvals/{id}/approve/start"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    // hal's passkey signs bea's prompt (as if he reached her unlocked browser).
    let (_, own) = hal.login_start().await;
    challenge["publicKey"]["allowCredentials"] = own["publicKey"]["allowCredentials"].clone();
    let assertion = hal.assert(challenge);
    let refused = bea
        .post(&format!("/api/v1/approvals/{id}/approve/finish"), assertion)
        .await;
    assert_refused(
        &srv,
        refused,
        StatusCode::UNAUTHORIZED,
        "not registered to you",
        "operator:bea",
    )
    .await;
    assert_eq!(status_of(&hal, id).await, "pending");
    assert!(!actions(&srv)
        .await
        .contains(&"approval.approved".to_owned()));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_token_was_delivered_meanwhile_cannot_be_approved() {
    let Desk {
        srv,
        pat,
        hal,
        mut bea,
    } = desk().await;
    high_risk(&pat, "HR-7", SEED_B32).await;
    let id = request(&hal, "HR-7").await;
    let typed = common::totp::totp(&seed(SEED_B32), "SHA1", 6, 30, srv.clock_unix());
    srv.canary.watch_code("code read from the token", &typed);
    let (status, body) = hal
        .post("/api/v1/tokens/HR-7/delivery", json!({ "code": typed }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = approve(&mut bea, id).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::CONFLICT,
        "can no longer be approved",
        "operator:bea",
    )
    .await;
    assert_eq!(status_of(&hal, id).await, "pending");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_request_cannot_be_used_to_reveal_and_the_requester_sees_who_denied_it_and_why() {
    let Desk {
        srv,
        pat,
        mut hal,
        bea,
    } = desk().await;
    high_risk(&pat, "HR-8", SEED_B32).await;
    let id = request(&hal, "HR-8").await;
    let refused = bea
        .post(
            &format!("/api/v1/approvals/{id}/deny"),
            json!({ "reason": "  " }),
        )
        .await;
    assert_refused(
        &srv,
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "reason: a reason is required",
        "operator:bea",
    )
    .await;
    let (status, denied) = bea
        .post(
            &format!("/api/v1/approvals/{id}/deny"),
            json!({ "reason": "manager did not confirm" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{denied}");
    let (_, seen) = hal.get(&format!("/api/v1/approvals/{id}")).await;
    assert_eq!(
        (
            seen["status"].clone(),
            seen["decided_by"].clone(),
            seen["reason"].clone()
        ),
        (
            json!("denied"),
            json!("bea"),
            json!("manager did not confirm")
        )
    );
    let refused = reveal_with(&mut hal, "HR-8", id, json!({})).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::CONFLICT,
        "was denied by bea: manager did not confirm",
        "operator:hal",
    )
    .await;
    assert!(!actions(&srv).await.contains(&"reveal.granted".to_owned()));
    assert_eq!(status_of(&hal, id).await, "denied");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ticket_voids_the_approval_and_another_operator_cannot_use_it() {
    let Desk {
        srv,
        pat,
        mut hal,
        mut bea,
    } = desk().await;
    high_risk(&pat, "HR-9", SEED_B32).await;
    let id = request(&hal, "HR-9").await;
    assert_eq!(approve(&mut bea, id).await.0, StatusCode::OK);
    let mut cy = srv.operator("cy", "helpdesk").await;
    let refused = reveal_with(&mut cy, "HR-9", id, json!({})).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::FORBIDDEN,
        "only they can use it",
        "operator:cy",
    )
    .await;
    assert_eq!(status_of(&hal, id).await, "approved");
    let body =
        json!({ "checks": CHECKS, "ticket": "INC-901", "note": "caller on video, badge 4471" });
    let (status, refused) = reveal_with(&mut hal, "HR-9", id, body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        message(&refused).contains("void: the ticket changed"),
        "{refused}"
    );
    assert_eq!(status_of(&hal, id).await, "void");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approvers_approvals_count_against_their_own_limit() {
    let Desk {
        srv,
        pat,
        hal,
        mut bea,
    } = desk().await;
    high_risk(&pat, "HR-10", SEED_B32).await;
    // high-risk: reveals_per_operator_per_hour = 5.
    for _ in 0..5 {
        let id = request(&hal, "HR-10").await;
        assert_eq!(approve(&mut bea, id).await.0, StatusCode::OK);
    }
    let id = request(&hal, "HR-10").await;
    let refused = approve(&mut bea, id).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::TOO_MANY_REQUESTS,
        "your approval limit is reached (5",
        "operator:bea",
    )
    .await;
    assert_eq!(status_of(&hal, id).await, "pending");
    // Denying is never limited.
    let (status, body) = bea
        .post(
            &format!("/api/v1/approvals/{id}/deny"),
            json!({ "reason": "enough for this hour" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reassigned_while_its_request_waits_voids_the_request() {
    let Desk {
        srv,
        pat,
        hal,
        mut bea,
    } = desk().await;
    high_risk(&pat, "HR-12", SEED_B32).await;
    let id = request(&hal, "HR-12").await;
    let (status, body) = pat
        .request(
            Method::PATCH,
            "/api/v1/tokens/HR-12",
            Some(json!({ "owner": "someone-else@example.org" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = approve(&mut bea, id).await;
    assert_refused(
        &srv,
        refused,
        StatusCode::CONFLICT,
        "void: the token's owner changed",
        "operator:bea",
    )
    .await;
    let events = actions(&srv).await;
    assert_eq!(
        events[events.len() - 2..],
        ["approval.voided", "approval.refused"]
    );
    assert_eq!(status_of(&hal, id).await, "void");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_started_in_two_sessions_reveals_one_code_only() {
    let Desk {
        srv,
        pat,
        mut hal,
        mut bea,
    } = desk().await;
    high_risk(&pat, "HR-11", SEED_B32).await;
    let id = request(&hal, "HR-11").await;
    assert_eq!(approve(&mut bea, id).await.0, StatusCode::OK);
    // Two sessions of hal's, each with a started reveal on the same approval.
    let first_session = hal.http.clone();
    hal.sign_in_fresh().await;
    let mut assertions = Vec::new();
    for session in [first_session.clone(), hal.http.clone()] {
        let response = session
            .post(srv.url("/api/v1/tokens/HR-11/reveal/start"))
            .header("Origin", &srv.base)
            .json(&json!({ "approval": id }))
            .send()
            .await
            .unwrap();
        let (status, challenge) = srv.finish("reveal start", response).await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        assertions.push((session, hal.assert(challenge)));
    }
    let mut granted = 0;
    for (session, assertion) in assertions {
        let response = session
            .post(srv.url("/api/v1/tokens/HR-11/reveal/finish"))
            .header("Origin", &srv.base)
            .json(&assertion)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if let Some(code) = body["code"].as_str() {
            srv.canary.watch_code("four-eyes code", code);
            granted += 1;
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "{body}");
            assert!(message(&body).contains("used or expired"), "{body}");
        }
    }
    assert_eq!(granted, 1);
    let events = actions(&srv).await;
    assert_eq!(
        events.iter().filter(|a| *a == "reveal.granted").count(),
        1,
        "{events:?}"
    );
    assert_eq!(events.last().unwrap(), "approval.refused");
    srv.stop_and_check().await;
}
