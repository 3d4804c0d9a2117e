//! Notices to token owners (issue 17): a real SMTP listener on loopback receives them; the
//! canary runs over every message; an outage delays but loses nothing across a restart; the
//! self-service delivery link end to end over HTTP.

use std::time::Duration;

use crate::common;

use common::smtp::{Mode, SmtpServer};
use common::totp::totp;
use common::{Operator, TestServer, T0};
use reqwest::StatusCode;
use seedvault::config::Overrides;
use seedvault::store::outbox::{self, NoticeRow};
use serde_json::{json, Value};

const SEED_B32: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const OWNER: &str = "user@example.org";

fn seed() -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap()
}

fn code_at(unix: i64) -> String {
    totp(&seed(), "SHA1", 6, 30, unix)
}

struct Cast {
    srv: TestServer,
    provisioner: Operator,
    helpdesk: Operator,
}

async fn cast(settings: Overrides) -> Cast {
    let srv = TestServer::start_with(settings).await;
    srv.canary.watch_seed("notice seed", &seed());
    let provisioner = srv.operator("pat", "provisioner").await;
    let helpdesk = srv.operator("hal", "helpdesk").await;
    Cast {
        srv,
        provisioner,
        helpdesk,
    }
}

async fn capture(op: &Operator, serial: &str) {
    let (status, body) = common::capture(op, OWNER, serial, SEED_B32, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn notices(srv: &TestServer, serial: &str) -> Vec<NoticeRow> {
    outbox::for_serial(&srv.state.store, serial).await.unwrap()
}

/// Waits (up to 20 s) until every notice about `serial` has left `pending`, or has been tried.
async fn settled(
    srv: &TestServer,
    serial: &str,
    until: impl Fn(&[NoticeRow]) -> bool,
) -> Vec<NoticeRow> {
    for _ in 0..200 {
        let rows = notices(srv, serial).await;
        if until(&rows) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "notices for {serial} did not settle: {:?}",
        notices(srv, serial).await
    );
}

fn record_mails(srv: &TestServer, smtp: &SmtpServer) {
    for (i, mail) in smtp.mails().iter().enumerate() {
        srv.canary
            .record_response(&format!("notice mail {i}"), mail.data.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_hears_of_a_reveal_a_delivery_and_a_cancellation_and_no_message_holds_a_secret() {
    let smtp = SmtpServer::start(Mode::Accept).await;
    let Cast {
        srv,
        provisioner,
        mut helpdesk,
    } = cast(smtp.settings()).await;
    capture(&provisioner, "N-1").await;
    capture(&provisioner, "N-2").await;
    let (status, body) = helpdesk
        .reveal("N-1", &["callback", "video-id"], Some("INC-7"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mails = smtp.wait_for(1).await;
    let reveal = &mails[0];
    assert_eq!(reveal.to, [OWNER]);
    assert!(reveal.from.contains("vault@example.org"), "{}", reveal.from);
    let text = reveal.text();
    assert!(
        text.contains("Subject: A one-time code for your token N-1 was given out"),
        "{text}"
    );
    assert!(
        text.contains("a one-time code for your token N-1 was given out by hal at 2025-11-24 16:00 UTC for ticket INC-7."),
        "{text}"
    );
    assert!(text.contains("call security at +1 555 0100"), "{text}");

    let code = code_at(T0);
    let (status, body) = helpdesk
        .post("/api/v1/tokens/N-1/delivery", json!({ "code": code }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/N-2/cancel",
            json!({ "reason": "lost in the post" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mails = smtp.wait_for(3).await;
    let texts: Vec<String> = mails.iter().map(|m| m.text()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("your token N-1 was confirmed as delivered by hal")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("your token N-2 was cancelled by pat")),
        "{texts:?}"
    );
    let rows = settled(&srv, "N-1", |rows| rows.iter().all(|r| r.state == "sent")).await;
    assert_eq!(
        rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        ["reveal", "delivered"]
    );
    assert_eq!(rows[0].recipients.as_deref(), Some(OWNER));
    record_mails(&srv, &smtp);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_sweep_tells_the_owner_their_seed_was_purged() {
    let smtp = SmtpServer::start(Mode::Accept).await;
    let Cast {
        srv, provisioner, ..
    } = cast(smtp.settings()).await;
    capture(&provisioner, "N-EXP").await;
    srv.clock.advance(time::Duration::days(31));
    let purged = seedvault::tokens::lifecycle::purge_expired(&srv.state.env(), "system")
        .await
        .unwrap();
    assert_eq!(purged, ["N-EXP"]);
    let mails = smtp.wait_for(1).await;
    assert!(
        mails[0]
            .text()
            .contains("your token N-EXP was not confirmed as delivered before its deadline"),
        "{}",
        mails[0].text()
    );
    record_mails(&srv, &smtp);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_notices_are_recorded_as_not_sent_and_the_dashboard_says_so() {
    let Cast {
        srv,
        provisioner,
        mut helpdesk,
    } = cast(Overrides::default()).await;
    capture(&provisioner, "N-3").await;
    let (status, _) = helpdesk
        .reveal("N-3", &["callback", "video-id"], Some("INC-8"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = settled(&srv, "N-3", |rows| {
        rows.iter().all(|r| r.state != "pending") && !rows.is_empty()
    })
    .await;
    assert_eq!(rows[0].state, "unsent");
    assert_eq!(rows[0].last_error.as_deref(), Some("smtp not configured"));
    let page = helpdesk
        .http
        .get(format!("{}/", srv.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Notices to token owners are not being sent."),
        "{page}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_delays_but_loses_no_notice_across_a_server_restart() {
    let smtp = SmtpServer::start(Mode::DropMidMessage).await;
    let Cast {
        srv,
        provisioner,
        mut helpdesk,
    } = cast(smtp.settings()).await;
    capture(&provisioner, "N-4").await;
    let started = std::time::Instant::now();
    let (status, body) = helpdesk
        .reveal("N-4", &["callback", "video-id"], Some("INC-9"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The reveal never waits for the mail server.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let rows = settled(&srv, "N-4", |rows| {
        rows.first().is_some_and(|r| r.attempts >= 1)
    })
    .await;
    assert_eq!(rows[0].state, "pending", "{rows:?}");
    assert!(rows[0].last_error.is_some(), "{rows:?}");
    assert!(smtp.mails().is_empty());
    let dir = srv.stop_keep_dir().await;

    // The mail server comes back; so does the vault, a minute later.
    smtp.set_mode(Mode::Accept);
    let srv = TestServer::restart_in(dir, smtp.settings(), T0 + 60).await;
    let mails = smtp.wait_for(1).await;
    assert!(
        mails[0]
            .text()
            .contains("your token N-4 was given out by hal"),
        "{}",
        mails[0].text()
    );
    let rows = settled(&srv, "N-4", |rows| rows.iter().all(|r| r.state == "sent")).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attempts, 2);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_that_refuses_the_sender_fails_the_notice_for_good_and_says_why() {
    let smtp = SmtpServer::start(Mode::RefuseSender).await;
    let Cast {
        srv,
        provisioner,
        mut helpdesk,
    } = cast(smtp.settings()).await;
    capture(&provisioner, "N-5").await;
    let (status, _) = helpdesk
        .reveal("N-5", &["callback", "video-id"], Some("INC-10"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = settled(&srv, "N-5", |rows| {
        rows.first().is_some_and(|r| r.state != "pending")
    })
    .await;
    assert_eq!(rows[0].state, "failed");
    let error = rows[0].last_error.clone().unwrap();
    assert!(error.starts_with("refused by the mail server"), "{error}");
    srv.stop_and_check().await;
}

/// The owner's browser: no operator session, an `Origin` on posts as a browser sends.
struct Owner {
    http: reqwest::Client,
    base: String,
}

impl Owner {
    fn new(srv: &TestServer) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: srv.base.clone(),
        }
    }

    async fn open(&self, url: &str) -> (StatusCode, String) {
        let response = self.http.get(url).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    async fn confirm(&self, url: &str, code: &str) -> (StatusCode, String) {
        let response = self
            .http
            .post(url)
            .header("Origin", &self.base)
            .form(&[("code", code)])
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }
}

/// Makes a delivery link as `op`. The response is the one place the link may appear, so it is
/// not given to the canary (as the reveal's code is not).
async fn create_link(op: &Operator, serial: &str) -> (StatusCode, Value) {
    op.send(
        reqwest::Method::POST,
        &format!("/api/v1/tokens/{serial}/delivery-link"),
        Some(json!({})),
    )
    .await
}

async fn link(op: &Operator, serial: &str) -> String {
    let (status, body) = create_link(op, serial).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["url"].as_str().unwrap().to_owned()
}

fn wrong_code(right: &str) -> &'static str {
    if right == "000000" {
        "111111"
    } else {
        "000000"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_confirms_delivery_through_the_link_and_the_seed_is_purged_without_a_trace() {
    let Cast {
        srv,
        provisioner,
        helpdesk,
    } = cast(Overrides::default()).await;
    capture(&provisioner, "LINK-0001").await;
    let sealed = srv.sealed_bytes("LINK-0001").await.unwrap();
    let (status, body) = create_link(&helpdesk, "LINK-0001").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let url = body["url"].as_str().unwrap().to_owned();
    let token = url.rsplit('/').next().unwrap();
    assert!(url.starts_with(&format!("{}/deliver/", srv.base)), "{url}");
    // 256 bits, base64url.
    assert_eq!(token.len(), 43, "{token}");
    assert_eq!(body["emailed"], false);
    srv.canary.watch_text("delivery link", token);

    let owner = Owner::new(&srv);
    let (status, page) = owner.open(&url).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("…0001"), "{page}");
    assert!(
        !page.contains("LINK-0001"),
        "the page shows only the serial's end"
    );
    let code = code_at(T0);
    srv.canary.watch_code("the owner's code", &code);
    let (status, page) = owner.confirm(&url, &code).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("delivery confirmed"), "{page}");
    assert_eq!(srv.sealed_bytes("LINK-0001").await, None);
    srv.assert_no_trace("delivered by the owner", &sealed);
    let events = seedvault::store::audit::page_after(&srv.state.store, 0, 1_000)
        .await
        .unwrap();
    let delivered = events
        .iter()
        .find(|e| e.action == "token.delivered")
        .unwrap();
    assert_eq!(delivered.actor, format!("owner:{OWNER}"));
    assert!(events
        .iter()
        .any(|e| e.action == "delivery_link.created" && e.actor == "operator:hal"));
    assert!(
        events.iter().all(|e| !e.details.contains(token)),
        "the audit trail never holds the link"
    );

    let (status, page) = owner.open(&url).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("already used"), "{page}");
    let (status, _) = owner.confirm(&url, &code).await;
    assert_eq!(status, StatusCode::GONE);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_codes_lock_a_link_and_a_new_link_voids_the_old_one() {
    let Cast {
        srv,
        provisioner,
        helpdesk,
    } = cast(Overrides::default()).await;
    capture(&provisioner, "LINK-2").await;
    let sealed = srv.sealed_bytes("LINK-2").await.unwrap();
    let owner = Owner::new(&srv);
    let first = link(&helpdesk, "LINK-2").await;
    let wrong = wrong_code(&code_at(T0));
    for left in (1..=4).rev() {
        let (status, page) = owner.confirm(&first, wrong).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
        assert!(page.contains(&format!("({left} tries left)")), "{page}");
    }
    let (status, page) = owner.confirm(&first, wrong).await;
    assert_eq!(status, StatusCode::GONE, "{page}");
    assert!(page.contains("locked after 5 wrong codes"), "{page}");
    let (status, _) = owner.confirm(&first, &code_at(T0)).await;
    assert_eq!(
        status,
        StatusCode::GONE,
        "a locked link stays locked, even for the right code"
    );
    assert_eq!(srv.sealed_bytes("LINK-2").await.unwrap(), sealed);
    assert!(srv
        .audit_actions()
        .await
        .iter()
        .any(|(a, t, o)| a == "delivery_link.locked" && t == "token:LINK-2" && o == "denied"));

    // The provisioner makes a new one; the old link now says it was replaced.
    let second = link(&provisioner, "LINK-2").await;
    let third = link(&provisioner, "LINK-2").await;
    let (status, page) = owner.open(&second).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("replaced by a newer one"), "{page}");
    // The token's own limit on wrong codes (5 an hour) still holds: an hour later it works.
    srv.clock.advance(time::Duration::minutes(61));
    let (status, page) = owner.confirm(&third, &code_at(T0 + 61 * 60)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    srv.assert_no_trace("delivered by the owner after a lock", &sealed);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_and_expired_links_get_a_clear_page_and_guessing_is_rate_limited_per_address() {
    let Cast {
        srv,
        provisioner,
        helpdesk,
    } = cast(Overrides {
        sign_in_attempts_per_address: Some(3),
        ..Default::default()
    })
    .await;
    capture(&provisioner, "LINK-3").await;
    let url = link(&helpdesk, "LINK-3").await;
    let owner = Owner::new(&srv);
    let guessed = format!("{}/deliver/{}", srv.base, "A".repeat(43));
    let (status, page) = owner.open(&guessed).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("this delivery link is not valid"), "{page}");

    srv.clock.advance(time::Duration::days(30));
    let (status, page) = owner.open(&url).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("has expired"), "{page}");

    let (status, _) = owner.open(&guessed).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = owner.confirm(&guessed, "123456").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, page) = owner.open(&guessed).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{page}");
    assert!(page.contains("Too many attempts"), "{page}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_link_is_emailed_to_the_owner_when_smtp_is_configured_and_the_vault_forgets_it_once_sent(
) {
    let smtp = SmtpServer::start(Mode::Accept).await;
    let Cast {
        srv,
        provisioner,
        helpdesk,
    } = cast(smtp.settings()).await;
    capture(&provisioner, "LINK-4").await;
    let (status, body) = create_link(&helpdesk, "LINK-4").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["emailed"], true);
    let url = body["url"].as_str().unwrap();
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails[0].to, [OWNER]);
    assert!(mails[0].text().contains(url), "{}", mails[0].text());
    settled(&srv, "LINK-4", |rows| {
        rows.iter().all(|r| r.state == "sent")
    })
    .await;
    let kept: Vec<String> = srv
        .rows::<(String,)>("SELECT facts FROM outbox WHERE serial = 'LINK-4'")
        .await
        .into_iter()
        .map(|(facts,)| facts)
        .collect();
    let token = url.rsplit('/').next().unwrap();
    assert!(kept.iter().all(|facts| !facts.contains(token)), "{kept:?}");

    // An owner id that is no address: the link is only shown, and the reply says so.
    let (status, body) =
        common::capture(&provisioner, "alice", "LINK-6", SEED_B32, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = create_link(&helpdesk, "LINK-6").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["emailed"], false);
    assert!(notices(&srv, "LINK-6").await.is_empty());
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_mail_server_never_slows_a_reveal_and_its_notice_stays_pending() {
    let smtp = SmtpServer::start(Mode::Stall).await;
    let Cast {
        srv,
        provisioner,
        mut helpdesk,
    } = cast(smtp.settings()).await;
    capture(&provisioner, "N-6").await;
    capture(&provisioner, "N-7").await;
    let (status, _) = helpdesk
        .reveal("N-6", &["callback", "video-id"], Some("INC-11"))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The sender is now waiting on the silent server; the next reveal does not wait with it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let (status, _) = helpdesk
        .reveal("N-7", &["callback", "video-id"], Some("INC-12"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for serial in ["N-6", "N-7"] {
        let rows = notices(&srv, serial).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].state, "pending", "{rows:?}");
    }
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_mail_server_is_given_up_on_after_smtp_timeout_seconds_and_tried_again_later() {
    let smtp = SmtpServer::start(Mode::Stall).await;
    let Cast {
        srv,
        provisioner,
        mut helpdesk,
    } = cast(Overrides {
        smtp_timeout_seconds: Some(1),
        ..smtp.settings()
    })
    .await;
    capture(&provisioner, "N-8").await;
    let (status, _) = helpdesk
        .reveal("N-8", &["callback", "video-id"], Some("INC-13"))
        .await;
    assert_eq!(status, StatusCode::OK);
    // With the default of 30 s this would not settle within `settled`'s 20 s.
    let rows = settled(&srv, "N-8", |rows| {
        rows.first().is_some_and(|r| r.attempts >= 1)
    })
    .await;
    assert_eq!(rows[0].state, "pending", "{rows:?}");
    // Our deadline or lettre's (both are the setting), whichever fires first.
    let error = rows[0]
        .last_error
        .clone()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        error.contains("within 1 s") || error.contains("timed out"),
        "{rows:?}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_page_makes_a_delivery_link_and_shows_it_once() {
    let Cast {
        srv,
        provisioner,
        helpdesk,
    } = cast(Overrides::default()).await;
    capture(&provisioner, "LINK-5").await;
    let token_page = helpdesk
        .http
        .get(format!("{}/tokens/LINK-5", srv.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        token_page.contains("action=\"/tokens/LINK-5/delivery-link\""),
        "{token_page}"
    );
    let response = helpdesk
        .http
        .post(format!("{}/tokens/LINK-5/delivery-link", srv.base))
        .header("Origin", &srv.base)
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    let page = response.text().await.unwrap();
    assert!(
        page.contains("give this link to the owner yourself"),
        "{page}"
    );
    let start = page.find(&format!("{}/deliver/", srv.base)).unwrap();
    let url: String = page[start..].chars().take_while(|c| *c != '"').collect();
    let (status, owner_page) = Owner::new(&srv).open(&url).await;
    assert_eq!(status, StatusCode::OK, "{owner_page}");
    assert!(owner_page.contains("…NK-5"), "{owner_page}");
    srv.stop_and_check().await;
}
