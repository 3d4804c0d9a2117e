//! Provisioning by QR (issue #19) over HTTP: capture from a screenshot (JSON base64 and
//! multipart), the preview that never shows the secret, the refusals that name the fix, and
//! generate → show once → confirm programming → escrowed (or abandoned).

use crate::common;

use base64::Engine;
use common::qr::screenshot;
use common::totp::totp;
use common::{multipart, post_form, Desk, Operator, TestServer, T0};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SEED_B32: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const URI: &str = "otpauth://totp/Contoso:ada@example.org?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Contoso&digits=8&period=60&algorithm=SHA256";

fn seed() -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(SEED_B32.as_bytes())
        .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn desk() -> Desk {
    let desk = Desk::start().await;
    desk.srv.canary.watch_seed("QR seed", &seed());
    desk.srv.canary.watch_text("QR URI", URI);
    desk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_in_json_is_previewed_without_its_secret_then_captured_with_its_parameters() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = desk().await;
    let image = b64(&screenshot(URI));
    let (status, found) = provisioner
        .post("/api/v1/tokens/qr-preview", json!({ "qr_image": image }))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["issuer"], "Contoso");
    assert_eq!(found["account"], "ada@example.org");
    assert_eq!(
        (&found["digits"], &found["period"], &found["algorithm"]),
        (&json!(8), &json!(60), &json!("SHA256"))
    );
    assert_eq!(found["seed_bits"], 160);
    assert!(
        srv.audit_actions()
            .await
            .iter()
            .all(|(a, ..)| a != "token.captured"),
        "a preview stores nothing"
    );

    let (status, body) = provisioner
        .post(
            "/api/v1/tokens",
            json!({ "owner": "ada@example.org", "serial": "Q-1", "qr_image": format!("data:image/png;base64,{image}") }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, token) = provisioner.get("/api/v1/tokens/Q-1").await;
    assert_eq!(
        (&token["digits"], &token["period"], &token["algorithm"]),
        (&json!(8), &json!(60), &json!("SHA256"))
    );
    assert_eq!(token["manufacturer"], "Contoso");
    let (status, revealed) = helpdesk
        .reveal("Q-1", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{revealed}");
    assert_eq!(revealed["code"], totp(&seed(), "SHA256", 8, 60, T0));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_in_a_multipart_form_is_captured() {
    let Desk {
        srv, provisioner, ..
    } = desk().await;
    let png = screenshot(URI);
    let form = multipart(
        "shot.png",
        &[
            ("owner", b"ada@example.org"),
            ("serial", b"Q-2"),
            ("qr_image", &png),
        ],
    );
    let (status, body) = post_form(&provisioner, "/api/v1/tokens", form).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        provisioner.get("/api/v1/tokens/Q-2").await.1["state"],
        "escrowed"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_qr_images_are_refused_with_the_fix_and_nothing_is_stored() {
    let Desk {
        srv, provisioner, ..
    } = desk().await;
    let whole = screenshot(URI);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "phonefactor",
            screenshot("phonefactor://activate_account?code=123456789&url=https://mobileappcommunicator.auth.microsoft.com/activate/1/WEU"),
            "Configure app without notifications",
        ),
        (
            "hotp",
            screenshot("otpauth://hotp/ACME:ada?secret=JBSWY3DPEHPK3PXP&counter=1"),
            "HOTP is not supported",
        ),
        ("no QR", common::qr::png(&image::GrayImage::from_pixel(300, 200, image::Luma([240]))), "crop or zoom"),
        ("truncated", whole[..whole.len() / 3].to_vec(), "damaged or cut short"),
        ("svg", b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"></svg>".to_vec(), "SVG"),
        ("pdf", b"%PDF-1.4\n%\xe2\xe3\n1 0 obj".to_vec(), "PDF"),
        ("bomb", common::qr::bomb(), "million"),
        (
            "64-bit seed",
            screenshot("otpauth://totp/A:b?secret=JBSWY3DPEHPK3"),
            "at least 80 bits",
        ),
        (
            "MD5",
            screenshot("otpauth://totp/A:b?secret=JBSWY3DPEHPK3PXPJBSWY3DP&algorithm=MD5"),
            "SHA1, SHA256 or SHA512",
        ),
    ];
    let before = srv.audit_actions().await.len();
    for (i, (what, image, fix)) in cases.iter().enumerate() {
        let serial = format!("BAD-{i}");
        for path in ["/api/v1/tokens/qr-preview", "/api/v1/tokens"] {
            let (status, body) = provisioner
                .post(path, json!({ "serial": serial, "qr_image": b64(image) }))
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{what} at {path}: {body}"
            );
            let message = body["message"].as_str().unwrap();
            assert!(message.starts_with("qr_image: "), "{what}: {message}");
            assert!(message.contains(fix), "{what}: {message}");
        }
        assert_eq!(
            provisioner.get(&format!("/api/v1/tokens/{serial}")).await.0,
            StatusCode::NOT_FOUND
        );
    }
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens",
            json!({ "serial": "BAD-X", "secret": SEED_B32, "qr_image": b64(&whole) }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        srv.audit_actions().await.len(),
        before,
        "nothing was stored"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_page_previews_a_qr_image_without_a_script_and_stores_nothing() {
    let Desk {
        srv, provisioner, ..
    } = desk().await;
    let png = screenshot(URI);
    let form = multipart(
        "shot.png",
        &[
            ("owner", b"ada@example.org"),
            ("serial", b"Q-3"),
            ("policy", b"standard"),
            ("step", b"preview"),
            ("qr_image", &png),
        ],
    );
    let (status, page) = post_form(&provisioner, "/tokens/new/qr", form).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Found in the QR code"), "{page}");
    assert!(page.contains("data-qr-issuer>Contoso<"), "{page}");
    assert!(page.contains("data-qr-digits>8<"), "{page}");
    assert!(
        page.contains("value=\"Q-3\""),
        "the serial is kept for the capture"
    );
    assert_eq!(
        provisioner.get("/api/v1/tokens/Q-3").await.0,
        StatusCode::NOT_FOUND
    );
    srv.stop_and_check().await;
}

/// Generates through the API as `provisioner`; the seed is put on the canary's watch list.
async fn generate(
    srv: &TestServer,
    provisioner: &Operator,
    serial: &str,
    extra: Value,
) -> (StatusCode, Value, Vec<u8>) {
    let mut body = json!({ "owner": "ada@example.org", "serial": serial, "issuer": "Contoso IT" });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    // The one response allowed to carry the seed: not recorded; the seed is watched after it.
    let (status, shown) = provisioner
        .send(Method::POST, "/api/v1/tokens/generate", Some(body))
        .await;
    let seed = shown["secret_base32"]
        .as_str()
        .map(|b32| data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap())
        .unwrap_or_default();
    if !seed.is_empty() {
        srv.canary
            .watch_seed(&format!("generated seed {serial}"), &seed);
        srv.canary
            .watch_text("generated URI", shown["otpauth_uri"].as_str().unwrap());
    }
    (status, shown, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_seed_is_shown_once_and_escrowed_when_the_devices_code_is_confirmed() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = Desk::start().await;
    let (status, shown, seed) = generate(&srv, &provisioner, "G-1", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{shown}");
    assert_eq!(seed.len(), 20, "a 160-bit seed");
    assert_eq!(shown["state"], "programming");
    assert!(shown["qr_svg"].as_str().unwrap().contains("<svg"));
    let uri = shown["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Contoso%20IT:ada@example.org?secret="),
        "{uri}"
    );
    assert!(uri.ends_with("&algorithm=SHA1&digits=6&period=30"), "{uri}");

    let (status, token) = provisioner.get("/api/v1/tokens/G-1").await;
    assert_eq!(
        (status, &token["state"]),
        (StatusCode::OK, &json!("programming"))
    );
    // No code before the device is confirmed.
    let (status, body) = helpdesk
        .reveal("G-1", &["callback", "video-id"], Some("INC-2"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("still being programmed"),
        "{body}"
    );
    // A second generate for the serial is refused.
    let (status, body, _) = generate(&srv, &provisioner, "G-1", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // The device, one step late.
    let code = totp(&seed, "SHA1", 6, 30, T0 - 30);
    let (status, done) = provisioner
        .post("/api/v1/tokens/G-1/programming", json!({ "code": code }))
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(
        (&done["state"], &done["drift_steps"]),
        (&json!("escrowed"), &json!(-1))
    );
    let (status, revealed) = helpdesk
        .reveal("G-1", &["callback", "video-id"], Some("INC-3"))
        .await;
    assert_eq!(status, StatusCode::OK, "{revealed}");
    assert_eq!(revealed["code"], totp(&seed, "SHA1", 6, 30, T0 - 30));
    let actions: Vec<String> = srv
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, ..)| a)
        .collect();
    assert!(actions.contains(&"token.generated".to_owned()));
    assert!(actions.contains(&"token.programmed".to_owned()));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_programming_codes_are_audited_and_then_refused_like_delivery() {
    let Desk {
        srv, provisioner, ..
    } = Desk::start().await;
    let (status, shown, seed) = generate(&srv, &provisioner, "G-2", json!({ "digits": 8 })).await;
    assert_eq!(status, StatusCode::CREATED, "{shown}");
    let right = totp(&seed, "SHA1", 8, 30, T0);
    let wrong = if right == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    for _ in 0..5 {
        let (status, body) = provisioner
            .post("/api/v1/tokens/G-2/programming", json!({ "code": wrong }))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let (status, body) = provisioner
        .post("/api/v1/tokens/G-2/programming", json!({ "code": right }))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let refused = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, t, o)| a == "programming.refused" && t == "token:G-2" && o == "denied")
        .count();
    assert_eq!(refused, 6);
    assert_eq!(
        provisioner.get("/api/v1/tokens/G-2").await.1["state"],
        "programming"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_generated_token_is_purged_without_a_trace() {
    let Desk {
        srv, provisioner, ..
    } = Desk::start().await;
    let (status, shown, _) = generate(&srv, &provisioner, "G-3", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{shown}");
    let sealed = srv.sealed_bytes("G-3").await.unwrap();
    let (status, purged) = provisioner
        .post(
            "/api/v1/tokens/G-3/cancel",
            json!({ "reason": "device not programmed" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["reason"], "abandoned");
    srv.assert_no_trace("abandoned generated seed", &sealed);
    assert!(srv
        .audit_actions()
        .await
        .iter()
        .any(|(a, ..)| a == "token.abandoned"));
    let (status, body) = provisioner
        .post(
            "/api/v1/tokens/G-3/programming",
            json!({ "code": "123456" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generate_page_shows_the_seed_once_to_its_generator_and_never_again() {
    let Desk {
        srv, provisioner, ..
    } = Desk::start().await;
    let other = srv.operator("pia", "provisioner").await;
    let form = "owner=ada%40example.org&serial=G-4&issuer=Contoso&label=&algorithm=SHA1&digits=6&period=30";
    let response = provisioner
        .http
        .post(srv.url("/tokens/generate"))
        .header("Origin", &srv.base)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.url().path(), "/tokens/G-4/programming");
    assert_eq!(
        response.headers()["cache-control"].to_str().unwrap(),
        "no-store"
    );
    let first = response.text().await.unwrap();
    let start = first
        .find("data-secret>")
        .expect("the seed is shown on the first visit")
        + 12;
    let b32 = &first[start..start + 32];
    let seed = data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap();
    srv.canary.watch_seed("page-generated seed", &seed);
    assert!(first.contains("<svg"));
    for op in [&other, &provisioner] {
        let (status, again) = op.get_text("/tokens/G-4/programming").await;
        assert_eq!(status, StatusCode::OK);
        assert!(again.contains("already shown once"), "{again}");
        assert!(!again.contains("<svg role"), "{again}");
    }
    srv.stop_and_check().await;
}
