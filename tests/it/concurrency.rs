//! Reveals under concurrency: the ceremony stays single-use when requests race, and reveals
//! that share a commit (group commit) are each recorded whole, with an audit chain that
//! verifies.

use crate::common;

use common::{Operator, TestServer};
use reqwest::{Method, StatusCode};
use seedvault::audit::chain::ChainVerifier;
use serde_json::json;

const SEED_B32: &str = "7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2";

async fn capture(op: &Operator, serial: &str) {
    let (status, body) = op
        .post(
            "/api/v1/tokens",
            json!({ "owner": "user1@example.org", "serial": serial, "secret": SEED_B32 }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn granted(srv: &TestServer, serial: &str) -> usize {
    srv.audit_actions()
        .await
        .iter()
        .filter(|(action, target, _)| {
            action == "reveal.granted" && *target == format!("token:{serial}")
        })
        .count()
}

async fn assert_chain_verifies(srv: &TestServer) {
    let rows = seedvault::store::audit::page_after(&srv.state.store, 0, 1_000_000)
        .await
        .unwrap();
    let mut verifier = ChainVerifier::new(srv.state.vault.id(), srv.state.vault.audit_public_key());
    for row in &rows {
        verifier.push(row).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_finish_requests_racing_with_one_assertion_reveal_the_code_once() {
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut helpdesk = srv.operator("hal", "helpdesk").await;
    capture(&provisioner, "RACE-1").await;
    let (status, challenge) = helpdesk
        .post(
            "/api/v1/tokens/RACE-1/reveal/start",
            json!({ "checks": ["callback", "video-id"], "ticket": "INC-9" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let assertion = helpdesk.assert(challenge);
    let path = "/api/v1/tokens/RACE-1/reveal/finish";
    let (first, second) = tokio::join!(
        helpdesk.send(Method::POST, path, Some(assertion.clone())),
        helpdesk.send(Method::POST, path, Some(assertion)),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);
    let code = [&first.1, &second.1]
        .into_iter()
        .find_map(|body| body["code"].as_str())
        .unwrap();
    srv.canary.watch_code("RACE-1 code", code);
    for (status, body) in [first, second] {
        if status != StatusCode::OK {
            srv.canary
                .record_response("raced finish", body.to_string().as_bytes());
        }
    }
    assert_eq!(granted(&srv, "RACE-1").await, 1);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reveals_sharing_commits_are_each_recorded_with_a_verifying_audit_chain() {
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut desks = Vec::new();
    for i in 0..4 {
        let serial = format!("GC-{i}");
        capture(&provisioner, &serial).await;
        desks.push((srv.operator(&format!("hal{i}"), "helpdesk").await, serial));
    }
    capture(&provisioner, "GC-CANCELLED").await;
    let mut late = srv.operator("hal-late", "helpdesk").await;
    let reveals = desks.iter_mut().map(|(op, serial)| async move {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let (status, _) = op
                .reveal(serial, &["callback", "video-id"], Some("INC-1"))
                .await;
            statuses.push(status);
        }
        statuses
    });
    // Meanwhile a reveal whose token is cancelled between start and finish fails inside the
    // grant: its writes are undone without touching the reveals it may share a commit with.
    let refused = async {
        let (status, challenge) = late
            .post(
                "/api/v1/tokens/GC-CANCELLED/reveal/start",
                json!({ "checks": ["callback", "video-id"], "ticket": "INC-2" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let assertion = late.assert(challenge);
        let (status, body) = provisioner
            .post(
                "/api/v1/tokens/GC-CANCELLED/cancel",
                json!({ "reason": "lost in the post" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        late.post("/api/v1/tokens/GC-CANCELLED/reveal/finish", assertion)
            .await
            .0
    };
    let (all, refused) = tokio::join!(futures::future::join_all(reveals), refused);
    for statuses in all {
        assert_eq!(statuses, [StatusCode::OK; 3]);
    }
    assert_eq!(refused, StatusCode::CONFLICT);
    for i in 0..4 {
        assert_eq!(granted(&srv, &format!("GC-{i}")).await, 3);
    }
    assert_eq!(granted(&srv, "GC-CANCELLED").await, 0);
    let reveal_rows = srv.count("SELECT COUNT(*) FROM reveals").await;
    assert_eq!(reveal_rows, 12);
    assert_chain_verifies(&srv).await;
    srv.stop_and_check().await;
}
