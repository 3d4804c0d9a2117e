//! Capture and reveal over HTTP with software passkeys: seeds in, one-time codes out, only
//! behind the policy's checklist and a passkey signature of that very reveal.

use crate::common;

use common::{Desk, Operator, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// T2-100001 from tests/data/entra-oath.csv; its code at T0 comes from expected-codes.csv.
const SEED_B32: &str = "7GIYCPFAMKVZ2CIPUBR42BBLN573O7R2";
const SERIAL: &str = "T2-100001";
const CODE_AT_T0: &str = "091009";

fn expected_code(key: &str) -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/expected-codes.csv");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{key},")))
        .unwrap()
        .rsplit(',')
        .next()
        .unwrap()
        .to_owned()
}

async fn desk() -> Desk {
    Desk::start().await
}

async fn capture(op: &Operator, serial: &str, secret: &str, extra: Value) -> (StatusCode, Value) {
    common::capture(op, "user1@example.org", serial, secret, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_seed_reveals_the_independently_computed_code_after_callback_and_video_id() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    srv.canary.watch_seed(
        "T2-100001 seed",
        &data_encoding::BASE32_NOPAD
            .decode(SEED_B32.as_bytes())
            .unwrap(),
    );
    let (status, body) = capture(
        &provisioner,
        SERIAL,
        &SEED_B32.to_lowercase(),
        json!({ "manufacturer": "Token2" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({ "serial": SERIAL, "state": "escrowed", "warnings": [] })
    );

    let (status, body) = helpdesk
        .reveal(SERIAL, &["callback", "video-id"], Some("INC-1001"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], CODE_AT_T0);
    assert_eq!(body["period"], 30);
    assert_eq!(body["valid_for_seconds"], 30 - (common::T0 % 30));
    assert_eq!(
        body["next_code"].as_str().unwrap().len(),
        6,
        "standard shows the next code"
    );

    // The token view and the audit never show the seed or the code.
    let (status, detail) = helpdesk.get(&format!("/api/v1/tokens/{SERIAL}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["state"], "escrowed");
    let granted = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "reveal.granted")
        .unwrap();
    assert_eq!(
        granted["details"]["checks"],
        json!(["callback", "video-id"])
    );
    assert_eq!(granted["details"]["ticket"], "INC-1001");
    assert_eq!(granted["details"]["policy"], "standard");
    assert_eq!(
        granted["details"]["policy_hash"].as_str().unwrap().len(),
        64
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otpauth_uri_brings_its_own_algorithm_digits_and_period() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    let uri = "otpauth://totp/Example%20Corp:user2%40example.org?secret=TT4MGKVES2XNZYPNNDW3LJIOHJ55QUHI7GUBDVU6NSTG3NSGAR4A&issuer=Example%20Corp&algorithm=SHA256&digits=8&period=30";
    let (status, body) = capture(&provisioner, "URI-2", uri, json!({ "format": "otpauth" })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, detail) = helpdesk.get("/api/v1/tokens/URI-2").await;
    assert_eq!(
        (detail["algorithm"].clone(), detail["digits"].clone()),
        (json!("SHA256"), json!(8))
    );
    let (status, body) = helpdesk
        .reveal("URI-2", &["callback", "manager"], Some("INC-2"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], expected_code("user2@example.org"));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveals_that_fall_short_of_the_checklist_are_refused_and_audited() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    capture(&provisioner, SERIAL, SEED_B32, json!({})).await;
    let table: Vec<(&[&str], Option<&str>, StatusCode, &str)> = vec![
        (
            &["callback"],
            Some("INC-1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at least 2 checks are needed, 1 ticked",
        ),
        (
            &["video-id", "manager"],
            Some("INC-1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "required check 'callback' is not ticked",
        ),
        (
            &["callback", "video-id"],
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            "a ticket reference is required",
        ),
        (
            &["callback", "date-of-birth"],
            Some("INC-1"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "'date-of-birth' is not a check of this policy",
        ),
    ];
    for (checks, ticket, status, message) in table {
        let (got, body) = helpdesk.reveal(SERIAL, checks, ticket).await;
        assert_eq!(got, status, "{checks:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{checks:?}: {body}"
        );
    }
    let long_note = "n".repeat(501);
    let (status, body) = helpdesk
        .post(
            &format!("/api/v1/tokens/{SERIAL}/reveal/start"),
            json!({ "checks": ["callback", "video-id"], "ticket": "I", "note": long_note }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = helpdesk
        .reveal("NO-SUCH", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let denied = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, o)| a == "reveal.denied" && o == "denied")
        .count();
    assert_eq!(denied, 5);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_without_the_helpdesk_role_cannot_reveal() {
    let Desk {
        srv, provisioner, ..
    } = desk().await;
    capture(&provisioner, SERIAL, SEED_B32, json!({})).await;
    let mut admin = srv.operator("ada", "admin,provisioner,auditor").await;
    let (status, body) = admin
        .reveal(SERIAL, &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().unwrap().contains("helpdesk"));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_assertion_and_one_started_for_another_token_are_refused() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    capture(&provisioner, "A-1", SEED_B32, json!({})).await;
    capture(
        &provisioner,
        "B-2",
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        json!({}),
    )
    .await;
    let start = |serial: &str| {
        (
            format!("/api/v1/tokens/{serial}/reveal/start"),
            json!({ "checks": ["callback", "video-id"], "ticket": "INC-7" }),
        )
    };

    let (path, body) = start("A-1");
    let (_, challenge) = helpdesk.post(&path, body).await;
    let assertion = helpdesk.assert(challenge);
    let (status, body) = helpdesk
        .send(
            Method::POST,
            "/api/v1/tokens/A-1/reveal/finish",
            Some(assertion.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    srv.canary
        .watch_code("A-1 code", body["code"].as_str().unwrap());
    let (status, body) = helpdesk
        .post("/api/v1/tokens/A-1/reveal/finish", assertion)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "replay: {body}");

    let (path, body) = start("A-1");
    let (_, challenge) = helpdesk.post(&path, body).await;
    let assertion = helpdesk.assert(challenge);
    let (status, body) = helpdesk
        .post("/api/v1/tokens/B-2/reveal/finish", assertion)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("started for token 'A-1', not 'B-2'"),
        "{body}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reveal_signed_with_another_operators_passkey_is_refused_audited_and_changes_nothing() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    let mut other = srv.operator("bea", "helpdesk").await;
    capture(&provisioner, SERIAL, SEED_B32, json!({})).await;
    let (status, mut challenge) = helpdesk
        .post(
            &format!("/api/v1/tokens/{SERIAL}/reveal/start"),
            json!({ "checks": ["callback", "video-id"], "ticket": "INC-9" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    // Bea's passkey signs hal's challenge: the browser would offer it if hal's session let
    // someone else touch the key.
    let (_, own) = other.login_start().await;
    challenge["publicKey"]["allowCredentials"] = own["publicKey"]["allowCredentials"].clone();
    let assertion = other.assert(challenge);
    let (status, body) = helpdesk
        .post(&format!("/api/v1/tokens/{SERIAL}/reveal/finish"), assertion)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.get("code").is_none(), "{body}");

    let events = seedvault::store::audit::for_target(&srv.state.store, &format!("token:{SERIAL}"))
        .await
        .unwrap();
    let denied = events
        .iter()
        .find(|e| e.action == "reveal.denied")
        .expect("the refusal is in the audit trail");
    assert_eq!(denied.actor, "operator:hal");
    assert_eq!(denied.outcome, "denied");
    assert!(
        denied.details.contains("not registered to you"),
        "{}",
        denied.details
    );
    assert!(events.iter().all(|e| e.action != "reveal.granted"));
    let (_, token) = helpdesk.get(&format!("/api/v1/tokens/{SERIAL}")).await;
    assert_eq!(token["state"], "escrowed");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_reveal_limit_per_token_answers_429_with_retry_after() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    capture(&provisioner, SERIAL, SEED_B32, json!({})).await;
    for _ in 0..3 {
        assert_eq!(
            helpdesk
                .reveal(SERIAL, &["callback", "video-id"], Some("INC-1"))
                .await
                .0,
            StatusCode::OK
        );
        srv.clock.advance(time::Duration::minutes(10));
    }
    let response = helpdesk
        .http
        .post(srv.url(&format!("/api/v1/tokens/{SERIAL}/reveal/start")))
        .header("Origin", &srv.base)
        .json(&json!({ "checks": ["callback", "video-id"], "ticket": "INC-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 86_400 - 30 * 60);
    let (_, body) = srv.finish("limited", response).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("daily reveal limit reached (3)"),
        "{body}"
    );
    srv.clock.advance(time::Duration::days(1));
    helpdesk.sign_in_fresh().await;
    assert_eq!(
        helpdesk
            .reveal(SERIAL, &["callback", "video-id"], Some("INC-1"))
            .await
            .0,
        StatusCode::OK
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_reveal_window_replaces_the_day_of_the_policys_per_token_limit() {
    let srv = TestServer::start_with(seedvault::config::Overrides {
        reveal_token_window_hours: Some(1),
        ..Default::default()
    })
    .await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut helpdesk = srv.operator("hal", "helpdesk").await;
    capture(&provisioner, SERIAL, SEED_B32, json!({})).await;
    for _ in 0..3 {
        let (status, _) = helpdesk
            .reveal(SERIAL, &["callback", "video-id"], Some("INC-1"))
            .await;
        assert_eq!(status, StatusCode::OK);
        srv.clock.advance(time::Duration::minutes(10));
    }
    let response = helpdesk
        .http
        .post(srv.url(&format!("/api/v1/tokens/{SERIAL}/reveal/start")))
        .header("Origin", &srv.base)
        .json(&json!({ "checks": ["callback", "video-id"], "ticket": "INC-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response.headers()["retry-after"],
        "1800",
        "an hour, not a day"
    );
    srv.finish("limited", response).await;
    srv.clock.advance(time::Duration::minutes(31));
    helpdesk.sign_in_fresh().await;
    let (status, _) = helpdesk
        .reveal(SERIAL, &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::OK);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_capture_input_is_refused_with_the_field_and_the_fix_and_nothing_is_stored() {
    let Desk {
        srv, provisioner, ..
    } = desk().await;
    let table: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "S-1",
            "JBSWY3DPEHPK3PX1",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret: '1' is not a base32 character",
        ),
        (
            "S-2",
            "JBSWY3DPEHPK3PXP",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "secret: secret is 80 bits",
        ),
        (
            "S-3",
            "JBSWY3DP",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at least 80 bits",
        ),
        (
            "S-4",
            "23456723456723456723456723456723",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "valid both as hex and as base32",
        ),
        (
            "S-5",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            json!({ "digits": 7 }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "digits",
        ),
        (
            "S-6",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            json!({ "policy": "lax" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "policy 'lax' is not loaded",
        ),
        (
            "has space",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "serial: must not contain spaces",
        ),
        (
            "S-8",
            "otpauth://hotp/x?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&counter=1",
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "TOTP tokens only",
        ),
    ];
    for (serial, secret, extra, status, message) in table {
        let (got, body) = capture(&provisioner, serial, secret, extra).await;
        if status == StatusCode::UNPROCESSABLE_ENTITY && message == "secret: secret is 80 bits" {
            // 80 bits is accepted with a warning, not refused.
            assert_eq!(got, StatusCode::CREATED, "{body}");
            assert!(
                body["warnings"][0].as_str().unwrap().contains("80 bits"),
                "{body}"
            );
            continue;
        }
        assert_eq!(got, status, "{serial}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{serial}: {body}"
        );
    }
    let (status, body) = capture(
        &provisioner,
        "S-2",
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, list) = provisioner.get("/api/v1/tokens").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the 80-bit token was stored: {list}"
    );
    // Only provisioners capture.
    let helpdesk = srv.operator("h2", "helpdesk").await;
    assert_eq!(
        capture(
            &helpdesk,
            "S-9",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            json!({})
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_searched_by_owner_serial_and_state_and_reassigned_by_provisioners() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = desk().await;
    capture(
        &provisioner,
        "T-1",
        SEED_B32,
        json!({ "owner": "ann@example.org" }),
    )
    .await;
    capture(
        &provisioner,
        "T-2",
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        json!({ "owner": "bob@example.org" }),
    )
    .await;
    let serials = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["serial"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        serials(&helpdesk.get("/api/v1/tokens?q=bob").await.1),
        ["T-2"]
    );
    assert_eq!(
        serials(&helpdesk.get("/api/v1/tokens?owner=ann@example.org").await.1),
        ["T-1"]
    );
    assert_eq!(
        helpdesk
            .get("/api/v1/tokens?state=escrowed")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        helpdesk.get("/api/v1/tokens?state=bogus").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        helpdesk
            .get("/api/v1/tokens?due_within=31d")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        helpdesk
            .get("/api/v1/tokens?due_within=7d")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let (status, body) = provisioner
        .request(
            Method::PATCH,
            "/api/v1/tokens/T-1",
            Some(json!({ "owner": "carl@example.org", "policy": "high-risk" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["owner"].clone(), body["policy"].clone()),
        (json!("carl@example.org"), json!("high-risk"))
    );
    assert_eq!(
        helpdesk
            .request(
                Method::PATCH,
                "/api/v1/tokens/T-1",
                Some(json!({ "owner": "x" }))
            )
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (_, policies) = helpdesk.get("/api/v1/policies").await;
    assert_eq!(policies.as_array().unwrap().len(), 2);
    srv.stop_and_check().await;
}
