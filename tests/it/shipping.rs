//! Shipping (issue #23): verify before the token leaves, its shipment, delivery slips and the
//! token list's bulk actions — over the API, the pages and the command line.

use crate::common;

use common::totp::totp;
use common::{Desk, Operator, TestServer, T0};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SEED_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

fn code_at(unix: i64) -> String {
    let seed = data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap();
    totp(&seed, "SHA1", 6, 30, unix)
}

/// A code that is not the token's at T0 (nor within the window around it).
fn wrong_code() -> String {
    let near: Vec<String> = (-16..=16).map(|s| code_at(T0 + s * 30)).collect();
    (0..1000)
        .map(|n| format!("{:06}", 100_000 + n * 7))
        .find(|c| !near.contains(c))
        .unwrap()
}

async fn capture(op: &Operator, serial: &str, owner: Option<&str>) {
    let mut body = json!({ "serial": serial, "secret": SEED_B32 });
    if let Some(owner) = owner {
        body["owner"] = json!(owner);
    }
    let (status, reply) = op.post("/api/v1/tokens", body).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
}

async fn verify(op: &Operator, serial: &str, code: &str) -> (StatusCode, Value) {
    op.post(
        &format!("/api/v1/tokens/{serial}/verify"),
        json!({ "code": code }),
    )
    .await
}

/// A form post as the browser sends it; the status after redirects and the page's text.
async fn form(op: &Operator, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
    let body = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                url::form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>(),
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let response = op
        .http
        .post(format!("{}{path}", op.base))
        .header("Origin", &op.base)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, text)
}

fn actions(events: &[(String, String, String)], action: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(a, _, _)| a == action)
        .map(|(_, t, o)| format!("{t} {o}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifying_records_the_drift_later_reveals_apply_and_the_token_stays_escrowed() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = Desk::start().await;
    capture(&provisioner, "V-1", Some("user@example.org")).await;
    let (_, before) = provisioner.get("/api/v1/tokens/V-1").await;
    assert_eq!(before["verified_at"], Value::Null);
    // The token's clock runs two steps (60 s) ahead.
    let (status, body) = verify(&provisioner, "V-1", &code_at(T0 + 60)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["drift_steps"], 2);
    assert_eq!(body["verified_by"], "operator:pat");
    let (_, detail) = provisioner.get("/api/v1/tokens/V-1").await;
    assert_eq!(detail["state"], "escrowed");
    assert_eq!(detail["drift_steps"], 2);
    assert_eq!(detail["verified_at"], T0);
    assert_eq!(detail["verified_by"], "operator:pat");
    let (status, body) = helpdesk
        .reveal("V-1", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["code"],
        code_at(T0 + 60),
        "the reveal applies the drift"
    );
    assert_eq!(
        actions(&srv.audit_actions().await, "token.verified"),
        ["token:V-1 success"]
    );
    // The list and the reveal page say so.
    let (_, list) = helpdesk.get_text("/tokens").await;
    assert!(list.contains("Verified"), "{list}");
    let (_, page) = helpdesk.get_text("/tokens/V-1/reveal").await;
    assert!(page.contains("verified 2025-11-24"), "{page}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_refuses_settled_tokens_wrong_codes_and_the_sixth_wrong_code_in_an_hour() {
    let Desk {
        srv,
        mut provisioner,
        helpdesk,
    } = Desk::start().await;
    capture(&provisioner, "V-2", Some("user@example.org")).await;
    capture(&provisioner, "V-3", Some("user@example.org")).await;
    let (status, _) = provisioner
        .post(
            "/api/v1/tokens/V-3/cancel",
            json!({ "reason": "lost in the post" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = verify(&provisioner, "V-3", &code_at(T0)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("purged"),
        "{body}"
    );
    let (status, _) = verify(&provisioner, "NO-SUCH", &code_at(T0)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = verify(&provisioner, "V-2", "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("code: "));
    // Only a provisioner verifies.
    let (status, _) = verify(&helpdesk, "V-2", &code_at(T0)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let sealed = srv.sealed_bytes("V-2").await.unwrap();
    let wrong = wrong_code();
    for _ in 0..5 {
        let (status, body) = verify(&provisioner, "V-2", &wrong).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["message"].as_str().unwrap().contains("does not match"));
    }
    let (status, body) = verify(&provisioner, "V-2", &code_at(T0)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (_, detail) = provisioner.get("/api/v1/tokens/V-2").await;
    assert_eq!(detail["verified_at"], Value::Null, "nothing changed");
    assert_eq!(detail["drift_steps"], 0);
    assert_eq!(srv.sealed_bytes("V-2").await.unwrap(), sealed);
    assert_eq!(
        actions(&srv.audit_actions().await, "verify.refused").len(),
        6,
        "five wrong codes and the refusal after them"
    );
    // An hour later the token can be verified again.
    srv.clock.advance(time::Duration::minutes(61));
    provisioner.sign_in_fresh().await;
    let now = srv.clock_unix();
    let (status, body) = verify(&provisioner, "V-2", &code_at(now)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_requiring_verification_refuses_reveals_until_the_token_is_verified() {
    let srv = TestServer::start_with(seedvault::config::Overrides {
        policies_dir: Some(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/policies-require-verified"),
        ),
        ..Default::default()
    })
    .await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut helpdesk = srv.operator("hal", "helpdesk").await;
    capture(&provisioner, "RV-1", Some("user@example.org")).await;
    let (status, body) = helpdesk
        .reveal("RV-1", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("never verified") && message.contains("seedvault token verify RV-1"),
        "{message}"
    );
    let (_, page) = helpdesk.get_text("/tokens/RV-1/reveal").await;
    assert!(page.contains("not verified"), "{page}");
    let (_, page) = helpdesk.get_text("/policies").await;
    assert!(page.contains("required before any reveal"), "{page}");
    assert!(actions(&srv.audit_actions().await, "reveal.denied").len() == 1);
    let (status, _) = verify(&provisioner, "RV-1", &code_at(T0)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = helpdesk
        .reveal("RV-1", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_is_recorded_and_a_date_in_the_past_or_a_settled_token_changes_nothing() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = Desk::start().await;
    capture(&provisioner, "S-1", Some("user@example.org")).await;
    // T0 is 2025-11-24 (UTC).
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/S-1/shipment",
            json!({ "expected": "2025-11-23", "carrier": "DHL" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("expected: 2025-11-23 is in the past"),
        "{message}"
    );
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/S-1/shipment",
            json!({ "expected": "24/11/2025" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, detail) = provisioner.get("/api/v1/tokens/S-1").await;
    assert_eq!(detail["shipped_at"], Value::Null, "nothing changed");
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/S-1/shipment",
            json!({ "carrier": "DHL", "tracking": "JJD000390007", "expected": "2025-11-27" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({ "serial": "S-1", "shipped_at": T0, "carrier": "DHL", "tracking": "JJD000390007", "expected": "2025-11-27" })
    );
    let (_, detail) = helpdesk.get("/api/v1/tokens/S-1").await;
    assert_eq!(
        (
            &detail["shipped_at"],
            &detail["carrier"],
            &detail["tracking"],
            &detail["expected"]
        ),
        (
            &json!(T0),
            &json!("DHL"),
            &json!("JJD000390007"),
            &json!("2025-11-27")
        )
    );
    let (status, _) = helpdesk
        .post("/api/v1/tokens/S-1/shipment", json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = provisioner
        .post("/api/v1/tokens/NOPE/shipment", json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    provisioner
        .post("/api/v1/tokens/S-1/cancel", json!({ "reason": "lost" }))
        .await;
    let (status, _) = provisioner
        .post("/api/v1/tokens/S-1/shipment", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        actions(&srv.audit_actions().await, "token.shipped"),
        ["token:S-1 success"]
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_ships_the_good_lines_and_reports_the_bad_ones_by_line() {
    let Desk {
        srv, provisioner, ..
    } = Desk::start().await;
    capture(&provisioner, "B-1", Some("a@example.org")).await;
    capture(&provisioner, "B-2", Some("b@example.org")).await;
    let csv = "serial\nB-1\nNO-SUCH-SERIAL\n\nB-2\n";
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/shipments",
            json!({ "csv": csv, "carrier": "UPS", "expected": "2025-11-26" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let lines = |key: &str| -> Vec<(u64, String)> {
        body[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["line"].as_u64().unwrap(),
                    l["serial"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(lines("succeeded"), [(2, "B-1".into()), (5, "B-2".into())]);
    assert_eq!(lines("failed"), [(3, "NO-SUCH-SERIAL".into())]);
    assert!(body["failed"][0]["message"]
        .as_str()
        .unwrap()
        .contains("no token has serial 'NO-SUCH-SERIAL'"));
    assert_eq!(
        actions(&srv.audit_actions().await, "token.shipped"),
        ["token:B-1 success", "token:B-2 success"]
    );
    // A shared field in error refuses the whole batch before any token is touched.
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/shipments",
            json!({ "csv": "B-1\n", "expected": "2020-01-01" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        actions(&srv.audit_actions().await, "token.shipped").len(),
        2
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_status_count_tokens_in_transit_late_and_nearing_retention() {
    let Desk {
        srv,
        mut provisioner,
        ..
    } = Desk::start().await;
    for serial in ["P-1", "P-2", "P-3"] {
        capture(&provisioner, serial, Some("u@example.org")).await;
    }
    for (serial, expected) in [("P-1", "2025-11-25"), ("P-2", "2026-01-10")] {
        let (status, body) = provisioner
            .post(
                &format!("/api/v1/tokens/{serial}/shipment"),
                json!({ "expected": expected }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let figures = |now: i64| {
        let store = srv.state.store.clone();
        async move {
            let report = seedvault::status::collect(&store, now).await.unwrap();
            let t = report.in_transit;
            (t.in_transit, t.late, t.nearing_retention)
        }
    };
    assert_eq!(figures(T0).await, (2, 0, 0));
    // Three days on, P-1's expected date has passed; 25 days on, both seeds (30 days'
    // retention) are within a week of their deadline while still in the post.
    assert_eq!(figures(T0 + 3 * 86_400).await, (2, 1, 0));
    assert_eq!(figures(T0 + 25 * 86_400).await, (2, 1, 2));
    srv.clock.advance(time::Duration::days(3));
    provisioner.sign_in_fresh().await;
    let (_, dashboard) = provisioner.get_text("/").await;
    assert!(dashboard.contains("In the post"), "{dashboard}");
    assert!(
        dashboard.contains("<div class=\"n\">1</div><div class=\"l\">delivered late"),
        "{dashboard}"
    );
    // Each figure opens the token list filtered to the tokens it counts.
    assert!(
        dashboard.contains("href=\"/tokens?post=late\""),
        "{dashboard}"
    );
    let listed = |page: &str| {
        ["P-1", "P-2", "P-3"]
            .into_iter()
            .filter(|serial| page.contains(&format!(">{serial}</a>")))
            .collect::<Vec<_>>()
    };
    let (_, in_transit) = provisioner.get_text("/tokens?post=in_transit").await;
    assert_eq!(listed(&in_transit), ["P-1", "P-2"], "{in_transit}");
    let (_, late) = provisioner.get_text("/tokens?post=late").await;
    assert_eq!(listed(&late), ["P-1"], "{late}");
    let (_, nearing) = provisioner.get_text("/tokens?post=nearing_retention").await;
    assert!(listed(&nearing).is_empty(), "{nearing}");
    // A bulk action on "all matching the filter" keeps the filter: only the late token.
    let (status, page) = form(
        &provisioner,
        "/tokens/bulk",
        &[("action", "slips"), ("all", "true"), ("post", "late")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(slip_links(&page).len(), 1, "{page}");
    assert!(page.contains("P-1") && !page.contains("P-2"), "{page}");
    srv.stop_and_check().await;
}

/// The link's token from a slip page (its text under the QR code).
fn slip_links(page: &str) -> Vec<String> {
    page.split("<p class=\"link mono\">")
        .skip(1)
        .map(|rest| rest[..rest.find('<').unwrap()].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slips_carry_a_new_delivery_link_each_and_tokens_without_an_owner_get_none() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = Desk::start().await;
    let (status, body) = common::capture(
        &provisioner,
        "ada@example.org",
        "SL-1",
        SEED_B32,
        json!({ "display_name": "Ada Lovelace" }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    capture(&provisioner, "SL-2", None).await;
    capture(&provisioner, "SL-3", Some("bob@example.org")).await;
    let (status, page) = form(
        &helpdesk,
        "/tokens/bulk",
        &[
            ("action", "slips"),
            ("serials", "SL-1"),
            ("serials", "SL-2"),
            ("serials", "SL-3"),
            ("paper", "letter"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("slips paper-letter"), "{page}");
    assert!(page.contains("For Ada Lovelace") && page.contains("<dd>ada@example.org</dd>"));
    assert!(page.contains("For bob@example.org"), "{page}");
    assert!(
        page.contains("type the 6-digit code it shows"),
        "arrival instructions: {page}"
    );
    assert!(
        page.contains("token 'SL-2' has no owner") && page.contains("assign it first"),
        "{page}"
    );
    assert!(page.contains("/static/print.css"));
    let links = slip_links(&page);
    assert_eq!(links.len(), 2, "{page}");
    for link in &links {
        srv.canary
            .watch_text("slip link", link.rsplit('/').next().unwrap());
    }
    assert_eq!(
        actions(&srv.audit_actions().await, "delivery_link.created"),
        ["token:SL-1 success", "token:SL-3 success"]
    );
    // The owner scans the link and types the code: delivered and purged.
    let path = links[0].strip_prefix(&srv.base).unwrap().to_owned();
    let owner = reqwest::Client::new();
    let response = owner
        .post(srv.url(&path))
        .header("Origin", &srv.base)
        .form(&[("code", code_at(T0))])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, detail) = helpdesk.get("/api/v1/tokens/SL-1").await;
    assert_eq!(detail["state"], "purged");
    assert_eq!(detail["purge_reason"], "delivered");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_actions_act_on_the_ticked_tokens_or_all_matching_the_filter_each_on_its_own() {
    let Desk {
        srv,
        provisioner,
        helpdesk,
    } = Desk::start().await;
    for serial in ["BK-1", "BK-2", "BK-3", "OTHER-1"] {
        capture(&provisioner, serial, Some("u@example.org")).await;
    }
    let (status, page) = form(
        &provisioner,
        "/tokens/bulk",
        &[
            ("action", "ship"),
            ("all", "true"),
            ("q", "BK-"),
            ("carrier", "DHL"),
            ("expected", "2025-11-28"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("3 succeeded, 0 did not"), "{page}");
    let (_, other) = provisioner.get("/api/v1/tokens/OTHER-1").await;
    assert_eq!(other["shipped_at"], Value::Null, "outside the filter");
    let (_, page) = form(
        &provisioner,
        "/tokens/bulk",
        &[
            ("action", "cancel"),
            ("serials", "BK-1"),
            ("serials", "NOPE"),
            ("reason", "wrong batch"),
        ],
    )
    .await;
    assert!(page.contains("1 succeeded, 1 did not"), "{page}");
    assert!(page.contains("no token has serial 'NOPE'"), "{page}");
    assert_eq!(
        actions(&srv.audit_actions().await, "token.cancelled"),
        ["token:BK-1 success"]
    );
    // A cancellation without a reason touches nothing; a helpdesk operator may not ship.
    let (_, page) = form(
        &provisioner,
        "/tokens/bulk",
        &[("action", "cancel"), ("serials", "BK-2")],
    )
    .await;
    assert!(page.contains("reason: a reason is required"), "{page}");
    let (status, _) = form(
        &helpdesk,
        "/tokens/bulk",
        &[("action", "ship"), ("serials", "BK-2")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        provisioner.get("/api/v1/tokens/BK-2").await.1["state"],
        "escrowed"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_page_verifies_and_records_a_shipment_and_a_csv_verifies_a_batch() {
    let Desk {
        srv, provisioner, ..
    } = Desk::start().await;
    capture(&provisioner, "PG-1", Some("u@example.org")).await;
    capture(&provisioner, "PG-2", Some("u@example.org")).await;
    let (_, page) = provisioner.get_text("/tokens/PG-1").await;
    assert!(page.contains("action=\"/tokens/PG-1/verify\""), "{page}");
    assert!(page.contains("action=\"/tokens/PG-1/shipment\""), "{page}");
    let (_, page) = form(
        &provisioner,
        "/tokens/PG-1/verify",
        &[("code", &code_at(T0))],
    )
    .await;
    assert!(page.contains("Verified: the code matched"), "{page}");
    let (_, page) = form(
        &provisioner,
        "/tokens/PG-1/shipment",
        &[
            ("carrier", "DHL"),
            ("tracking", "T-77"),
            ("expected", "2025-11-20"),
        ],
    )
    .await;
    assert!(
        page.contains("expected: 2025-11-20 is in the past"),
        "{page}"
    );
    let (_, page) = form(
        &provisioner,
        "/tokens/PG-1/shipment",
        &[
            ("carrier", "DHL"),
            ("tracking", "T-77"),
            ("expected", "2025-11-26"),
        ],
    )
    .await;
    assert!(page.contains("Shipment of PG-1 recorded"), "{page}");
    assert!(page.contains("T-77"), "{page}");
    let csv = format!("serial,code\nPG-2,{}\nPG-9,123456\n", code_at(T0));
    let (status, page) = common::post_form(
        &provisioner,
        "/tokens/batch",
        common::multipart(
            "codes.csv",
            &[("action", b"verify"), ("file", csv.as_bytes())],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("1 succeeded, 1 did not"), "{page}");
    assert!(
        provisioner.get("/api/v1/tokens/PG-2").await.1["verified_at"] == T0,
        "verified from the CSV"
    );
    srv.stop_and_check().await;
}

#[test]
fn the_cli_verifies_ships_one_token_and_ships_a_csv_reporting_bad_lines() {
    use crate::cli::{run, text};
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["init"]).status.success());
    for serial in ["CL-1", "CL-2"] {
        let mut child = crate::cli::seedvault(dir.path())
            .args([
                "token",
                "add",
                "--serial",
                serial,
                "--owner",
                "u@example.org",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(SEED_B32.as_bytes())
            .unwrap();
        assert!(child.wait_with_output().unwrap().status.success());
    }
    let now = time::OffsetDateTime::now_utc();
    let output = run(
        dir.path(),
        &[
            "token",
            "verify",
            "CL-1",
            "--code",
            &code_at(now.unix_timestamp()),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("verified CL-1"));
    let output = run(dir.path(), &["token", "verify", "CL-1", "--code", "1"]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("does not match"),
        "{}",
        text(&output.stderr)
    );

    let tomorrow = (now + time::Duration::days(1)).date().to_string();
    let output = run(
        dir.path(),
        &[
            "token",
            "ship",
            "CL-1",
            "--carrier",
            "DHL",
            "--tracking",
            "JJD1",
            "--expected",
            &tomorrow,
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("shipped CL-1 with DHL, tracking JJD1"));
    let output = run(
        dir.path(),
        &["token", "ship", "CL-2", "--expected", "2020-01-01"],
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("expected: 2020-01-01 is in the past"),
        "{}",
        text(&output.stderr)
    );
    std::fs::write(dir.path().join("batch.csv"), "serial\nCL-2\nCL-404\n").unwrap();
    let output = run(
        dir.path(),
        &["token", "ship", "--csv", "batch.csv", "--carrier", "UPS"],
    );
    assert!(!output.status.success(), "a refused line fails the command");
    assert!(text(&output.stdout).contains("line 2: CL-2 shipped"));
    assert!(
        text(&output.stderr).contains("line 3: CL-404: no token has serial 'CL-404'"),
        "{}",
        text(&output.stderr)
    );
    let status = text(&run(dir.path(), &["status"]).stdout);
    assert!(
        status.contains("in the post: 2 in transit, 0 late"),
        "{status}"
    );
}
