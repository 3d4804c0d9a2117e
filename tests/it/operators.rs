//! Operators over real HTTP with software passkeys: invites, registration, sign-in, sessions,
//! Origin checks, rate limits, and the authorization matrix over every `/api/v1` route.

use crate::common;

use common::passkey::new_authenticator;
use common::{Operator, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_admin_registers_a_passkey_and_sees_themselves_at_me() {
    let srv = TestServer::start().await;
    let admin = srv.operator("alice", "admin").await;
    let (status, me) = admin.get("/api/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["credentials"].as_array().unwrap().len(), 1);
    let actions: Vec<String> = srv
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _, _)| a)
        .collect();
    for expected in ["invite.created", "invite.used", "operator.registered"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_again_on_a_fresh_cookie_jar_and_signs_out() {
    let srv = TestServer::start().await;
    let mut op = srv.operator("bob", "helpdesk,auditor").await;
    let (status, body) = op.sign_in_fresh().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "name": "bob", "roles": ["helpdesk", "auditor"] })
    );
    assert_eq!(op.get("/api/v1/me").await.0, StatusCode::OK);
    assert_eq!(
        op.post("/api/v1/auth/logout", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(op.get("/api/v1/me").await.0, StatusCode::UNAUTHORIZED);
    let actions: Vec<String> = srv
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _, _)| a)
        .collect();
    assert!(
        actions.contains(&"auth.sign_in".to_owned())
            && actions.contains(&"auth.sign_out".to_owned())
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_works_once_and_an_unknown_one_not_at_all() {
    let srv = TestServer::start().await;
    let token = srv.invite("carol", "provisioner").await;
    Operator::register(&srv, "carol", &token).await.unwrap();
    let (status, body) = Operator::register(&srv, "carol", &token)
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::GONE);
    assert!(
        body["message"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    let (status, body) = Operator::register(&srv, "x", "not-a-real-invite-token")
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let refused = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, o)| a == "invite.refused" && o == "denied")
        .count();
    assert_eq!(refused, 2);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invite_is_refused() {
    let srv = TestServer::start().await;
    let token = srv.invite("dave", "helpdesk").await;
    srv.clock.advance(time::Duration::hours(25));
    let (status, body) = Operator::register(&srv, "dave", &token)
        .await
        .err()
        .unwrap();
    assert_eq!(status, StatusCode::GONE);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_started_in_one_session_cannot_be_finished_twice() {
    let srv = TestServer::start().await;
    let token = srv.invite("erin", "helpdesk").await;
    let mut op = Operator::register(&srv, "erin", &token).await.unwrap();
    // Replaying the finish (no ceremony left in the session) is refused.
    let (_, challenge) = op.login_start().await;
    let assertion = op.assert(challenge);
    assert_eq!(
        op.post("/api/v1/auth/login/finish", assertion.clone())
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = op.post("/api/v1/auth/login/finish", assertion).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "replayed assertion: {body}"
    );
    srv.stop_and_check().await;
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// A sign-in with the cookies set by hand (to see the ids): from `session` if given; returns
/// the new session id.
async fn sign_in_by_hand(
    srv: &TestServer,
    op: &mut Operator,
    raw: &reqwest::Client,
    session: Option<String>,
) -> String {
    let cookies = session
        .map(|s| format!("seedvault_session={s}"))
        .unwrap_or_default();
    let started = raw
        .post(srv.url("/api/v1/auth/login/start"))
        .header("Origin", &srv.base)
        .header("Cookie", cookies.clone())
        .json(&json!({ "username": op.name }))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), StatusCode::OK);
    // Starting a sign-in creates no session (nothing written for anonymous callers).
    assert_eq!(set_cookie(&started, "seedvault_session"), None);
    let ceremony = set_cookie(&started, "seedvault_sign_in").unwrap();
    let assertion = op.assert(started.json().await.unwrap());
    let finished = raw
        .post(srv.url("/api/v1/auth/login/finish"))
        .header("Origin", &srv.base)
        .header("Cookie", format!("{cookies}; seedvault_sign_in={ceremony}"))
        .json(&assertion)
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), StatusCode::OK);
    set_cookie(&finished, "seedvault_session").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_gives_a_new_session_id_and_the_old_one_stops_working() {
    let srv = TestServer::start().await;
    let mut op = srv.operator("olga", "helpdesk").await;
    let raw = reqwest::Client::new();
    let me = |session: String| {
        raw.get(srv.url("/api/v1/me"))
            .header("Cookie", format!("seedvault_session={session}"))
            .send()
    };
    let first = sign_in_by_hand(&srv, &mut op, &raw, None).await;
    assert_eq!(me(first.clone()).await.unwrap().status(), StatusCode::OK);
    // Signing in again from that session: a new id (no fixation), the old one is gone.
    let second = sign_in_by_hand(&srv, &mut op, &raw, Some(first.clone())).await;
    assert_ne!(first, second);
    assert_eq!(me(first).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let response = me(second).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    srv.finish("signed in", response).await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_cannot_be_finished_without_the_cookie_of_its_start() {
    let srv = TestServer::start().await;
    let mut op = srv.operator("pia", "helpdesk").await;
    let (status, challenge) = op.login_start().await;
    assert_eq!(status, StatusCode::OK);
    let assertion = op.assert(challenge);
    // Another client (no ceremony cookie) replays the assertion: nothing to finish.
    let response = reqwest::Client::new()
        .post(srv.url("/api/v1/auth/login/finish"))
        .header("Origin", &srv.base)
        .json(&assertion)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    srv.finish("no sign-in in progress", response).await;
    // The starting client still can.
    let (status, body) = op.post("/api/v1/auth/login/finish", assertion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_from_another_operators_passkey_is_refused_and_audited() {
    let srv = TestServer::start().await;
    let victim = srv.operator("frank", "helpdesk").await;
    let mut attacker = srv.operator("mallory", "helpdesk").await;
    // Start a sign-in as frank, answer with mallory's key.
    let (status, challenge) = attacker
        .post(
            "/api/v1/auth/login/start",
            json!({ "username": victim.name }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let challenge: webauthn_rs::prelude::RequestChallengeResponse =
        serde_json::from_value(challenge).unwrap();
    let outcome = attacker
        .authenticator
        .do_authentication(attacker.origin.clone(), challenge);
    // The soft key holds no credential frank allows, so it cannot even produce an assertion;
    // forge one from mallory's own registration path instead: start as mallory, finish as frank.
    assert!(outcome.is_err());
    let (_, challenge) = attacker.login_start().await;
    let assertion = attacker.assert(challenge);
    let (status, _) = attacker
        .post("/api/v1/auth/login/start", json!({ "username": "frank" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = attacker.post("/api/v1/auth/login/finish", assertion).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let denied = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, t, o)| a == "auth.sign_in" && t == "operator:frank" && o == "denied")
        .count();
    assert_eq!(denied, 1);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_for_another_origin_or_without_user_verification_is_refused() {
    let srv = TestServer::start().await;
    let mut op = srv.operator("gina", "helpdesk").await;
    // Wrong origin in clientDataJSON.
    let (_, challenge) = op.login_start().await;
    let challenge: webauthn_rs::prelude::RequestChallengeResponse =
        serde_json::from_value(challenge).unwrap();
    let forged = op
        .authenticator
        .do_authentication(url::Url::parse("http://localhost:1").unwrap(), challenge)
        .unwrap();
    let (status, body) = op
        .post(
            "/api/v1/auth/login/finish",
            serde_json::to_value(forged).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // No UV flag: the client is told UV is not needed, so the soft key leaves the flag unset.
    let (_, mut challenge) = op.login_start().await;
    challenge["publicKey"]["userVerification"] = json!("discouraged");
    let assertion = op.assert(challenge);
    let (status, body) = op.post("/api/v1/auth/login/finish", assertion).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Registration without UV is refused too.
    let token = srv.invite("hank", "helpdesk").await;
    let (status, mut challenge) = op
        .post("/api/v1/auth/register/start", json!({ "invite": token }))
        .await;
    assert_eq!(status, StatusCode::OK);
    challenge["publicKey"]["authenticatorSelection"]["userVerification"] = json!("discouraged");
    let challenge: webauthn_rs::prelude::CreationChallengeResponse =
        serde_json::from_value(challenge).unwrap();
    let credential = new_authenticator()
        .do_registration(op.origin.clone(), challenge)
        .unwrap();
    let (status, body) = op
        .post(
            "/api/v1/auth/register/finish",
            serde_json::to_value(credential).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        srv.state.store.pool().is_ok_and(|pool| pool.is_closed())
            || common_operator_missing(&srv, "hank").await
    );
    srv.stop_and_check().await;
}

async fn common_operator_missing(srv: &TestServer, name: &str) -> bool {
    seedvault::operators::by_name(&srv.state.store, name)
        .await
        .unwrap()
        .is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_requests_without_or_with_a_foreign_origin_are_refused() {
    let srv = TestServer::start().await;
    let op = srv.operator("ivan", "admin").await;
    let invite = json!({ "name": "judy", "roles": ["helpdesk"] });
    for origin in [
        None,
        Some("http://evil.example"),
        Some("http://localhost:1"),
    ] {
        let mut request = op
            .http
            .post(srv.url("/api/v1/operators/invites"))
            .json(&invite);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        let response = request.send().await.unwrap();
        let (status, body) = srv.finish("invite without origin", response).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?}");
        assert_eq!(body["error"], "forbidden");
        assert!(
            body["message"].as_str().unwrap().contains(&srv.base),
            "{body}"
        );
    }
    // Auth routes are covered as well.
    let response = srv
        .client
        .post(srv.url("/api/v1/auth/login/start"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(seedvault::operators::by_name(&srv.state.store, "judy")
        .await
        .unwrap()
        .is_none());
    srv.stop_and_check().await;
}

/// A sign-in request that arrives through the trusted proxy on behalf of `client`.
async fn login_start_from(
    srv: &TestServer,
    http: &reqwest::Client,
    client: &str,
    name: &str,
) -> reqwest::Response {
    http.post(srv.url("/api/v1/auth/login/start"))
        .header("Origin", &srv.base)
        .header("X-Forwarded-For", client)
        .json(&json!({ "username": name }))
        .send()
        .await
        .unwrap()
}

async fn behind_a_proxy() -> TestServer {
    TestServer::start_with(seedvault::config::Overrides {
        trusted_proxies: Some(vec!["127.0.0.1".into()]),
        sign_in_attempts_per_address: Some(5),
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_limit_the_failing_client_and_never_lock_the_named_operator_out() {
    let srv = behind_a_proxy().await;
    let mut kate = srv.operator("kate", "helpdesk").await;
    let attacker = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    // An anonymous client fails five times against kate's name.
    for _ in 0..5 {
        let response = login_start_from(&srv, &attacker, "198.51.100.66", "kate").await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = attacker
            .post(srv.url("/api/v1/auth/login/finish"))
            .header("Origin", &srv.base)
            .header("X-Forwarded-For", "198.51.100.66")
            .json(&json!({ "id": "forged" }))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error());
    }
    // That client is slowed down…
    let response = login_start_from(&srv, &attacker, "198.51.100.66", "kate").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 900);
    srv.finish("rate limited", response).await;
    // …kate, from her own address, is not.
    let response = login_start_from(&srv, &kate.http, "198.51.100.5", "kate").await;
    assert_eq!(response.status(), StatusCode::OK);
    let challenge: Value = response.json().await.unwrap();
    let assertion = kate.assert(challenge);
    let response = kate
        .http
        .post(srv.url("/api/v1/auth/login/finish"))
        .header("Origin", &srv.base)
        .header("X-Forwarded-For", "198.51.100.5")
        .json(&assertion)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    srv.finish("signed in", response).await;
    // The window passes for the failing client too.
    srv.clock.advance(time::Duration::minutes(16));
    let response = login_start_from(&srv, &attacker, "198.51.100.66", "kate").await;
    assert_eq!(response.status(), StatusCode::OK);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_flooding_sign_in_starts_cannot_stop_another_from_signing_in() {
    let srv = behind_a_proxy().await;
    let mut kate = srv.operator("kate", "helpdesk").await;
    // A fresh cookie jar per start, as a flood would: none of them is ever finished.
    let flood = |_: usize| {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap()
    };
    for i in 0..100 {
        let response = login_start_from(&srv, &flood(i), "198.51.100.66", "nobody").await;
        assert_eq!(response.status(), StatusCode::OK, "start {i}");
    }
    // The flooding client is held to its share, told when to come back…
    let response = login_start_from(&srv, &flood(100), "198.51.100.66", "nobody").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 301, "{retry}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("in progress from this client"),
        "{body}"
    );
    // Kate, from her own address, signs in as usual.
    let response = login_start_from(&srv, &kate.http, "198.51.100.5", "kate").await;
    assert_eq!(response.status(), StatusCode::OK);
    let challenge: Value = response.json().await.unwrap();
    let assertion = kate.assert(challenge);
    let response = kate
        .http
        .post(srv.url("/api/v1/auth/login/finish"))
        .header("Origin", &srv.base)
        .header("X-Forwarded-For", "198.51.100.5")
        .json(&assertion)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    srv.finish("signed in", response).await;
    // Once the flood's ceremonies expire, that client may start again.
    srv.clock.advance(time::Duration::minutes(6));
    let response = login_start_from(&srv, &flood(102), "198.51.100.66", "nobody").await;
    assert_eq!(response.status(), StatusCode::OK);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_assertion_signs_in_even_after_others_failed_from_the_same_client() {
    let srv = behind_a_proxy().await;
    let mut kate = srv.operator("kate", "helpdesk").await;
    let shared = "203.0.113.40";
    let response = login_start_from(&srv, &kate.http, shared, "kate").await;
    let challenge: Value = response.json().await.unwrap();
    // Meanwhile someone else behind the same address fails until the limit is reached.
    let other = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    for _ in 0..6 {
        let _ = login_start_from(&srv, &other, shared, "nobody").await;
        let _ = other
            .post(srv.url("/api/v1/auth/login/finish"))
            .header("Origin", &srv.base)
            .header("X-Forwarded-For", shared)
            .json(&json!({ "id": "forged" }))
            .send()
            .await
            .unwrap();
    }
    let assertion = kate.assert(challenge);
    let response = kate
        .http
        .post(srv.url("/api/v1/auth/login/finish"))
        .header("Origin", &srv.base)
        .header("X-Forwarded-For", shared)
        .json(&assertion)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    srv.finish("signed in", response).await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_header_from_an_untrusted_peer_does_not_escape_the_limit() {
    let srv = TestServer::start_with(seedvault::config::Overrides {
        sign_in_attempts_per_address: Some(3),
        ..Default::default()
    })
    .await;
    let _kate = srv.operator("kate", "helpdesk").await;
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    // Each attempt claims another address; no proxy is trusted, so all count against the peer.
    for i in 0..3 {
        let _ = login_start_from(&srv, &client, &format!("198.51.100.{i}"), "kate").await;
        let _ = client
            .post(srv.url("/api/v1/auth/login/finish"))
            .header("Origin", &srv.base)
            .json(&json!({ "id": "forged" }))
            .send()
            .await
            .unwrap();
    }
    let response = login_start_from(&srv, &client, "198.51.100.99", "kate").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    srv.finish("rate limited", response).await;
    srv.stop_and_check().await;
}

/// The keys of a JSON value, recursively (values left out): the shape a client sees.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
        _ => Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_answers_do_not_tell_which_operator_names_exist() {
    let srv = TestServer::start().await;
    let kate = srv.operator("kate", "helpdesk").await;
    let admin = srv.operator("leo", "admin").await;
    let gone = srv.operator("gone", "helpdesk").await;
    let (status, _) = admin
        .request(
            Method::PATCH,
            "/api/v1/operators/gone",
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stranger = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let mut shapes = Vec::new();
    for name in ["kate", "nobody", "gone"] {
        let response = stranger
            .post(srv.url("/api/v1/auth/login/start"))
            .header("Origin", &srv.base)
            .json(&json!({ "username": name }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["publicKey"]["allowCredentials"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{name}: {body}"
        );
        shapes.push(shape(&body));
    }
    assert_eq!(
        shapes[0], shapes[1],
        "an unknown name is answered differently"
    );
    assert_eq!(
        shapes[0], shapes[2],
        "a disabled name is answered differently"
    );
    // The same unknown name gets the same decoy credential id twice.
    let decoy = |body: &Value| body["publicKey"]["allowCredentials"][0]["id"].clone();
    let again = |name: &'static str| {
        let stranger = stranger.clone();
        let srv_url = srv.url("/api/v1/auth/login/start");
        let origin = srv.base.clone();
        async move {
            stranger
                .post(srv_url)
                .header("Origin", origin)
                .json(&json!({ "username": name }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(decoy(&again("nobody").await), decoy(&again("nobody").await));
    // Finishing: a wrong passkey for a real operator and any answer for an unknown name get the
    // same status and message.
    let (_, own) = admin.login_start().await;
    let mut admin = admin;
    let foreign = admin.assert(own);
    let (_, _) = kate.login_start().await;
    let (status_real, body_real) = kate
        .post("/api/v1/auth/login/finish", foreign.clone())
        .await;
    let _ = again("nobody").await;
    let response = stranger
        .post(srv.url("/api/v1/auth/login/finish"))
        .header("Origin", &srv.base)
        .json(&foreign)
        .send()
        .await
        .unwrap();
    let status_unknown = response.status();
    let body_unknown: Value = response.json().await.unwrap();
    assert_eq!(status_real, StatusCode::UNAUTHORIZED);
    assert_eq!(status_unknown, StatusCode::UNAUTHORIZED);
    assert_eq!(body_real, body_unknown);
    drop(gone);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_an_operator_ends_their_sessions_at_once_and_role_changes_apply_immediately() {
    let srv = TestServer::start().await;
    let admin = srv.operator("leo", "admin").await;
    let op = srv.operator("mia", "helpdesk").await;
    assert_eq!(op.get("/api/v1/operators").await.0, StatusCode::FORBIDDEN);
    let (status, body) = admin
        .request(
            Method::PATCH,
            "/api/v1/operators/mia",
            Some(json!({ "roles": ["helpdesk", "admin"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(op.get("/api/v1/operators").await.0, StatusCode::OK);
    let (status, _) = admin
        .request(
            Method::PATCH,
            "/api/v1/operators/mia",
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(op.get("/api/v1/me").await.0, StatusCode::UNAUTHORIZED);
    // A disabled operator gets a challenge like anyone (names are not enumerable) that no
    // passkey can answer.
    let (status, _) = op.login_start().await;
    assert_eq!(status, StatusCode::OK);
    let mut other = srv.operator("lea", "auditor").await;
    let (_, own) = other.login_start().await;
    let foreign = other.assert(own);
    let (status, _) = op.post("/api/v1/auth/login/finish", foreign).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An admin cannot lock themselves out.
    let (status, _) = admin
        .request(
            Method::PATCH,
            "/api/v1/operators/leo",
            Some(json!({ "disabled": true })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let actions: Vec<String> = srv
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _, _)| a)
        .collect();
    assert!(
        actions.contains(&"operator.roles_changed".to_owned())
            && actions.contains(&"operator.disabled".to_owned())
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_after_idle_and_absolute_timeouts() {
    let srv = TestServer::start().await;
    let mut op = srv.operator("nina", "auditor").await;
    srv.clock.advance(time::Duration::minutes(14));
    assert_eq!(op.get("/api/v1/me").await.0, StatusCode::OK);
    srv.clock.advance(time::Duration::minutes(16));
    assert_eq!(
        op.get("/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED,
        "idle for 16 minutes"
    );
    op.sign_in_fresh().await;
    let signed_in_at = srv.clock_unix();
    while srv.clock_unix() + 12 * 60 <= signed_in_at + 8 * 3600 {
        srv.clock.advance(time::Duration::minutes(12));
        assert_eq!(
            op.get("/api/v1/me").await.0,
            StatusCode::OK,
            "active within 8 hours"
        );
    }
    srv.clock.advance(time::Duration::minutes(12));
    assert_eq!(
        op.get("/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED,
        "past 8 hours"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_adds_a_backup_passkey_and_cannot_remove_the_last_one() {
    let srv = TestServer::start().await;
    let mut op = srv.operator("omar", "helpdesk").await;
    let (status, challenge) = op
        .post(
            "/api/v1/me/credentials/start",
            json!({ "label": "backup key" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let challenge: webauthn_rs::prelude::CreationChallengeResponse =
        serde_json::from_value(challenge).unwrap();
    let mut backup = new_authenticator();
    let credential = backup
        .do_registration(op.origin.clone(), challenge)
        .unwrap();
    let (status, body) = op
        .post(
            "/api/v1/me/credentials/finish",
            serde_json::to_value(credential).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, me) = op.get("/api/v1/me").await;
    let ids: Vec<i64> = me["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    // Sign in with the backup key.
    std::mem::swap(&mut op.authenticator, &mut backup);
    assert_eq!(op.sign_in_fresh().await.0, StatusCode::OK);
    let (status, _) = op
        .request(
            Method::DELETE,
            &format!("/api/v1/me/credentials/{}", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = op
        .request(
            Method::DELETE,
            &format!("/api/v1/me/credentials/{}", ids[1]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["message"].as_str().unwrap().contains("last passkey"));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_asks_for_a_discoverable_passkey_and_still_accepts_a_key_without_room() {
    let srv = TestServer::start().await;
    let token = srv.invite("nadia", "helpdesk").await;
    let scout = srv.operator("scout", "helpdesk").await;
    let (status, invite_options) = scout
        .post("/api/v1/auth/register/start", json!({ "invite": token }))
        .await;
    assert_eq!(status, StatusCode::OK, "{invite_options}");
    let (status, backup_options) = scout
        .post("/api/v1/me/credentials/start", json!({ "label": "backup" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{backup_options}");
    for options in [&invite_options, &backup_options] {
        let selection = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "preferred", "{options}");
        assert_eq!(selection["requireResidentKey"], false, "{options}");
        assert_eq!(selection["userVerification"], "required", "{options}");
    }
    // The software key makes non-discoverable credentials only, like a security key that is
    // full: registration succeeds and the named sign-in works.
    let mut nadia = Operator::register(&srv, "nadia", &token).await.unwrap();
    let (status, body) = nadia.sign_in_fresh().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passkey_signs_in_without_a_name_through_the_user_handle_it_was_registered_with() {
    use base64::Engine as _;
    let srv = TestServer::start().await;
    let mut op = srv.operator("nina", "helpdesk").await;
    let handle = seedvault::operators::by_name(&srv.state.store, "nina")
        .await
        .unwrap()
        .unwrap()
        .user_handle;
    let handle = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(handle.as_bytes());
    let (_, named) = op.login_start().await;
    let own_credential = named["publicKey"]["allowCredentials"].clone();

    // The software key cannot search for a discoverable credential by itself: hand it its own
    // credential id and put the user handle a discoverable credential returns into its answer.
    let nameless_answer = |op: &mut Operator, challenge: serde_json::Value| {
        let mut challenge = challenge;
        assert_eq!(
            challenge["publicKey"]["allowCredentials"],
            json!([]),
            "a nameless sign-in names no credential: {challenge}"
        );
        challenge["publicKey"]["allowCredentials"] = own_credential.clone();
        op.assert(challenge)
    };
    op.http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let (status, challenge) = op.post("/api/v1/auth/login/start", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let mut assertion = nameless_answer(&mut op, challenge);
    assertion["response"]["userHandle"] = json!(handle);
    let (status, body) = op.post("/api/v1/auth/login/finish", assertion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "nina");
    assert_eq!(op.get("/api/v1/me").await.0, StatusCode::OK);

    // Without a user handle (a key holding no discoverable credential) nobody is signed in.
    op.http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let (_, challenge) = op.post("/api/v1/auth/login/start", json!({})).await;
    let assertion = nameless_answer(&mut op, challenge);
    let (status, body) = op.post("/api/v1/auth/login/finish", assertion).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(op.get("/api/v1/me").await.0, StatusCode::UNAUTHORIZED);
    let sign_ins: Vec<String> = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "auth.sign_in")
        .map(|(_, t, o)| format!("{t} {o}"))
        .collect();
    assert_eq!(
        sign_ins,
        ["operator:nina success", "operator:unknown denied"],
        "{sign_ins:?}"
    );
    srv.stop_and_check().await;
}

/// What each role may do on each route. Every route of the OpenAPI document must appear here,
/// so a route added without deciding who may call it fails this test.
fn expected(method: &str, path: &str) -> Option<(StatusCodeSet, &'static [&'static str])> {
    use StatusCodeSet::*;
    let all: &[&str] = &["admin", "provisioner", "helpdesk", "auditor"];
    Some(match (method, path) {
        ("get", "/api/v1/openapi.json" | "/readyz") => (Public, all),
        // Not a session route: a scraper's bearer token opens it (401 without, 404 while no
        // metrics_token is configured, as here), whatever the caller's roles.
        ("get", "/metrics") => (Public, all),
        (
            "post",
            "/api/v1/auth/register/start"
            | "/api/v1/auth/register/finish"
            | "/api/v1/auth/login/start"
            | "/api/v1/auth/login/finish"
            | "/api/v1/auth/logout",
        ) => (Public, all),
        ("get", "/api/v1/me")
        | ("post", "/api/v1/me/credentials/start" | "/api/v1/me/credentials/finish")
        | ("delete", "/api/v1/me/credentials/{id}") => (SignedIn, all),
        ("get", "/api/v1/operators")
        | ("post", "/api/v1/operators/invites")
        | ("patch", "/api/v1/operators/{name}") => (SignedIn, &["admin"]),
        ("get", "/api/v1/tokens" | "/api/v1/tokens/{serial}" | "/api/v1/policies") => {
            (SignedIn, all)
        }
        (
            "post",
            "/api/v1/tokens"
            | "/api/v1/tokens/{serial}/cancel"
            | "/api/v1/tokens/qr-preview"
            | "/api/v1/tokens/generate"
            | "/api/v1/tokens/{serial}/programming",
        )
        | ("patch", "/api/v1/tokens/{serial}") => (SignedIn, &["provisioner"]),
        // Shipping (issue #23) is the provisioners' work.
        (
            "post",
            "/api/v1/tokens/{serial}/verify"
            | "/api/v1/tokens/{serial}/shipment"
            | "/api/v1/tokens/shipments",
        ) => (SignedIn, &["provisioner"]),
        ("post", "/api/v1/tokens/{serial}/delivery") => (SignedIn, &["helpdesk"]),
        ("post", "/api/v1/tokens/{serial}/delivery-link") => {
            (SignedIn, &["provisioner", "helpdesk"])
        }
        ("post", "/api/v1/imports") => (SignedIn, &["provisioner"]),
        ("post", "/api/v1/backups") => (SignedIn, &["admin"]),
        (
            "post",
            "/api/v1/tokens/{serial}/reveal/start" | "/api/v1/tokens/{serial}/reveal/finish",
        ) => (SignedIn, &["helpdesk"]),
        ("get", "/api/v1/audit" | "/api/v1/audit/verify") => (SignedIn, &["auditor", "admin"]),
        // Who may decide an approval is per policy (`approvers`), so every signed-in operator
        // reaches these routes and the domain refuses the others (403, `tests/it/approvals.rs`).
        ("get", "/api/v1/approvals" | "/api/v1/approvals/{id}")
        | (
            "post",
            "/api/v1/approvals/{id}/approve/start"
            | "/api/v1/approvals/{id}/approve/finish"
            | "/api/v1/approvals/{id}/deny",
        ) => (SignedIn, all),
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum StatusCodeSet {
    /// Anyone may call it (the handler may still refuse the input).
    Public,
    /// Anonymous callers get 401; roles outside the list get 403.
    SignedIn,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_covers_every_api_route_for_anonymous_and_each_role() {
    let srv = TestServer::start().await;
    let mut callers = vec![("anonymous".to_owned(), None)];
    for role in ["admin", "provisioner", "helpdesk", "auditor"] {
        callers.push((
            role.to_owned(),
            Some(srv.operator(&format!("matrix-{role}"), role).await),
        ));
    }
    let (_, doc) = srv.get("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 13, "{paths:?}");
    let mut routes: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    // Sign-out last, so that it does not end the callers' sessions mid-way.
    routes.sort_by_key(|(_, path)| path.ends_with("/logout"));
    for (method, path) in &routes {
        let (method, path) = (method.as_str(), path.as_str());
        {
            let (kind, allowed) = expected(method, path)
                .unwrap_or_else(|| panic!("no authorization rule for {method} {path}"));
            let concrete = path
                .replace("{id}", "999999")
                .replace("{name}", "nobody")
                .replace("{serial}", "NO-SUCH-SERIAL");
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for (who, caller) in &callers {
                let body = Some(json!({}));
                let status = match caller {
                    Some(op) => op.request(http_method.clone(), &concrete, body).await.0,
                    None => {
                        let mut request =
                            srv.client.request(http_method.clone(), srv.url(&concrete));
                        if http_method != Method::GET {
                            request = request.header("Origin", &srv.base).json(&json!({}));
                        }
                        let response = request.send().await.unwrap();
                        srv.finish(&concrete, response).await.0
                    }
                };
                let ok = match (kind, caller) {
                    (StatusCodeSet::Public, _) => {
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
                    }
                    (StatusCodeSet::SignedIn, None) => status == StatusCode::UNAUTHORIZED,
                    (StatusCodeSet::SignedIn, Some(_)) if allowed.contains(&who.as_str()) => {
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
                    }
                    (StatusCodeSet::SignedIn, Some(_)) => status == StatusCode::FORBIDDEN,
                };
                assert!(ok, "{who} {method} {path} → {status}");
            }
        }
    }
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visiting_an_invite_page_does_not_put_its_token_in_the_log() {
    let srv = TestServer::start().await;
    let token = srv.invite("quinn", "auditor").await;
    // The page itself must carry the token (its script posts it); it is not recorded.
    let page = srv
        .client
        .get(srv.url(&format!("/invite/{token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Create my passkey"));
    Operator::register(&srv, "quinn", &token).await.unwrap();
    assert!(srv.canary.watched() > 0);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ceremony_bodies_get_json_errors_and_are_audited() {
    let srv = TestServer::start().await;
    let op = srv.operator("rita", "helpdesk").await;
    let (status, _) = op.login_start().await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = op
        .post("/api/v1/auth/login/finish", json!({ "id": 42 }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "unprocessable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("JSON body is not valid"),
        "{body}"
    );
    let (status, body) = op.post("/api/v1/auth/login/finish", json!({})).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the ceremony was used up: {body}"
    );
    let token = srv.invite("sam", "auditor").await;
    let fresh = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let post = |path: &str, body: serde_json::Value| {
        fresh
            .post(srv.url(path))
            .header("Origin", &srv.base)
            .json(&body)
            .send()
    };
    assert_eq!(
        post("/api/v1/auth/register/start", json!({ "invite": token }))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let response = post("/api/v1/auth/register/finish", json!({ "nonsense": true }))
        .await
        .unwrap();
    let (status, body) = srv.finish("register finish", response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let actions = srv.audit_actions().await;
    assert!(actions
        .iter()
        .any(|(a, _, o)| a == "auth.sign_in" && o == "denied"));
    assert!(actions
        .iter()
        .any(|(a, t, _)| a == "operator.registration_refused" && t == "operator:sam"));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backup_passkey_is_audited_and_attaches_nothing() {
    let srv = TestServer::start().await;
    let op = srv.operator("rita", "helpdesk").await;
    let (status, _) = op
        .post("/api/v1/me/credentials/start", json!({ "label": "backup" }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = op
        .post("/api/v1/me/credentials/finish", json!({ "id": "forged" }))
        .await;
    assert!(status.is_client_error(), "{status}: {body}");
    let refused: Vec<_> = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "credential.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let (_, me) = op.get("/api/v1/me").await;
    assert_eq!(me["credentials"].as_array().map(Vec::len), Some(1), "{me}");
    srv.stop_and_check().await;
}
