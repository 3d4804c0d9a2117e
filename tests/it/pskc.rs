//! PSKC files as vendors ship them (issue 24), built here with the same RustCrypto crates a
//! producer would use, so the expected seeds are known: password-protected (PBKDF2) files, AES
//! key wrap, HMAC-SHA384, encrypted parameters and mixed TOTP/HOTP deliveries import through
//! the API and the CLI, and reveal the codes of an independent RFC 6238 computation; wrong
//! passwords and keys, bad MACs and truncated ciphertext are refused with nothing stored.

use crate::common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use common::{Desk, Operator, TestServer, T0};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;

const HOTP: &str = "hotp";
const TOTP: &str = "totp";
/// RFC 6238's SHA-1 seed (20 bytes: a padded key wrap carries it).
const SEED: &[u8] = b"12345678901234567890";

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// How the built file protects its values.
#[derive(Clone, Copy)]
enum Protection {
    /// AES-256-CBC under a key derived with PBKDF2-HMAC-SHA256 from this password.
    Password(&'static str),
    /// AES-256 key wrap with padding (RFC 5649) under this pre-shared key.
    KeyWrap([u8; 32]),
}

impl Protection {
    fn key(self) -> Vec<u8> {
        match self {
            Self::Password(password) => {
                let mut key = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                    password.as_bytes(),
                    b"NaCl-24",
                    4000,
                    &mut key,
                );
                key
            }
            Self::KeyWrap(key) => key.to_vec(),
        }
    }

    fn uri(self) -> &'static str {
        match self {
            Self::Password(_) => "http://www.w3.org/2001/04/xmlenc#aes256-cbc",
            Self::KeyWrap(_) => "http://www.w3.org/2009/xmlenc11#kw-aes-256-pad",
        }
    }

    fn seal(self, plain: &[u8]) -> Vec<u8> {
        let key = self.key();
        match self {
            Self::Password(_) => {
                let iv = [0x24u8; 16];
                let mut buffer = vec![0u8; plain.len() + 16];
                buffer[..plain.len()].copy_from_slice(plain);
                let len = cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &iv)
                    .unwrap()
                    .encrypt_padded_mut::<Pkcs7>(&mut buffer, plain.len())
                    .unwrap()
                    .len();
                [&iv[..], &buffer[..len]].concat()
            }
            Self::KeyWrap(_) => {
                let kek = aes_kw::KekAes256::try_from(key.as_slice()).unwrap();
                let mut out = vec![0u8; plain.len().div_ceil(8) * 8 + 8];
                kek.wrap_with_padding(plain, &mut out).unwrap();
                out
            }
        }
    }
}

const MAC_KEY: [u8; 32] = [0x3C; 32];

fn value_mac(sealed: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha384> as Mac>::new_from_slice(&MAC_KEY).unwrap();
    mac.update(sealed);
    b64(&mac.finalize().into_bytes())
}

fn encrypted(protection: Protection, holder: &str, plain: &[u8]) -> String {
    let sealed = protection.seal(plain);
    format!(
        r#"<pskc:{holder}><pskc:EncryptedValue><xenc:EncryptionMethod Algorithm="{}"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></pskc:EncryptedValue><pskc:ValueMAC>{}</pskc:ValueMAC></pskc:{holder}>"#,
        protection.uri(),
        b64(&sealed),
        value_mac(&sealed)
    )
}

/// One KeyPackage per `(serial, kind)`, each on its own line from line 4; the secret and a
/// 60-second `TimeInterval` are encrypted, MACed with HMAC-SHA384 under an encrypted MAC key.
fn build(protection: Protection, keys: &[(&str, &str)]) -> String {
    let encryption_key = match protection {
        Protection::Password(_) => format!(
            r#"<pskc:EncryptionKey><xenc11:DerivedKey><xenc11:KeyDerivationMethod Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2"><pkcs5:PBKDF2-params><Salt><Specified>{}</Specified></Salt><IterationCount>4000</IterationCount><KeyLength>32</KeyLength><PRF Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"/></pkcs5:PBKDF2-params></xenc11:KeyDerivationMethod></xenc11:DerivedKey></pskc:EncryptionKey>"#,
            b64(b"NaCl-24")
        ),
        Protection::KeyWrap(_) => {
            "<pskc:EncryptionKey><ds:KeyName>PSK</ds:KeyName></pskc:EncryptionKey>".to_owned()
        }
    };
    let packages: String = keys
        .iter()
        .map(|(serial, kind)| {
            format!(
                r#"<pskc:KeyPackage><pskc:DeviceInfo><pskc:Manufacturer>Acme</pskc:Manufacturer><pskc:SerialNo>{serial}</pskc:SerialNo></pskc:DeviceInfo><pskc:Key Id="{serial}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:{kind}"><pskc:AlgorithmParameters><pskc:ResponseFormat Length="6" Encoding="DECIMAL"/></pskc:AlgorithmParameters><pskc:Data>{}{}</pskc:Data></pskc:Key></pskc:KeyPackage>
"#,
                encrypted(protection, "Secret", SEED),
                encrypted(protection, "TimeInterval", &60u64.to_be_bytes()),
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer Version="1.0" xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" xmlns:xenc11="http://www.w3.org/2009/xmlenc11#" xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#">
{encryption_key}<pskc:MACMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#hmac-sha384"><pskc:MACKey><xenc:EncryptionMethod Algorithm="{}"/><xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></pskc:MACKey></pskc:MACMethod>
{packages}</pskc:KeyContainer>
"#,
        protection.uri(),
        b64(&protection.seal(&MAC_KEY))
    )
}

/// `POST /api/v1/imports`: the raw file, or multipart when a key or password goes along (the
/// only place either is accepted). `options` is a query string; a `psk_hex` in it is moved to a
/// form field.
async fn upload(
    op: &Operator,
    options: &str,
    file: &[u8],
    password: Option<&str>,
) -> (StatusCode, Value) {
    let mut query = Vec::new();
    let mut psk_hex = None;
    for pair in options.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("psk_hex=") {
            Some(hex) => psk_hex = Some(hex.to_owned()),
            None => query.push(pair),
        }
    }
    let mut request = op
        .http
        .post(format!("{}/api/v1/imports?{}", op.base, query.join("&")))
        .header("Origin", &op.base);
    let mut parts: Vec<(&str, &[u8])> = Vec::new();
    if let Some(password) = password {
        parts.push(("password", password.as_bytes()));
    }
    if let Some(hex) = &psk_hex {
        parts.push(("psk_hex", hex.as_bytes()));
    }
    request = if parts.is_empty() {
        request
            .header("Content-Type", "application/octet-stream")
            .body(file.to_vec())
    } else {
        parts.push(("file", file));
        let (content_type, body) = common::multipart("vendor.xml", &parts);
        request.header("Content-Type", content_type).body(body)
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    op.canary.record_response("pskc import", &bytes);
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn stored(srv: &TestServer) -> i64 {
    srv.count("SELECT COUNT(*) FROM tokens").await
}

fn reasons(report: &Value) -> String {
    report["errors"].to_string()
}

/// The code a reveal shows must be the independent computation's. Imported tokens are
/// unassigned (the files carry no UserId), so the token is assigned first.
async fn assert_reveals(desk: &mut Desk, serial: &str, digits: u32, period: i64) {
    let (status, body) = desk
        .provisioner
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/tokens/{serial}"),
            Some(serde_json::json!({ "owner": "user1@example.org" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{serial}: {body}");
    let (status, body) = desk
        .helpdesk
        .reveal(serial, &["callback", "video-id"], Some("INC-24"))
        .await;
    assert_eq!(status, StatusCode::OK, "{serial}: {body}");
    assert_eq!(
        body["code"],
        common::totp::totp(SEED, "SHA1", digits, period, T0),
        "{serial}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_protected_files_import_through_a_multipart_upload_and_reveal_their_codes() {
    let mut desk = Desk::start().await;
    desk.srv.canary.watch_seed("pskc seed", SEED);
    let figure7 = std::fs::read(testdata("pskc-rfc6030-figure7.xml")).unwrap();
    let op = &desk.provisioner;

    // Never in the URL.
    let (status, report) = upload(op, "password=qwerty", &figure7, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    // No password, then a wrong one: refused, naming the password, nothing stored.
    let (status, report) = upload(op, "", &figure7, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert!(reasons(&report).contains("password"), "{report}");
    let (status, report) = upload(op, "", &figure7, Some("qwertz")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert!(reasons(&report).contains("the password"), "{report}");
    assert_eq!(stored(&desk.srv).await, 0);

    let (status, report) = upload(op, "", &figure7, Some("qwerty")).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["imported"], 1);

    // A server's export: PBKDF2-HMAC-SHA256, AES-256-CBC, HMAC-SHA384, encrypted interval.
    let built = build(
        Protection::Password("s3cret vendor pw"),
        &[("PW-1", TOTP), ("PW-2", TOTP)],
    );
    let (status, report) = upload(op, "", built.as_bytes(), Some("s3cret vendor pw")).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["imported"], 2);

    assert_reveals(&mut desk, "987654321", 8, 30).await;
    assert_reveals(&mut desk, "PW-2", 6, 60).await;
    desk.srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_delivery_imports_its_totp_keys_only_when_asked_to_skip_the_others() {
    let mut desk = Desk::start().await;
    desk.srv.canary.watch_seed("pskc seed", SEED);
    let psk = [0x11u8; 32];
    let file = build(
        Protection::KeyWrap(psk),
        &[("MX-1", TOTP), ("MX-H", HOTP), ("MX-2", TOTP)],
    );
    let query = format!("psk_hex={}", data_encoding::HEXLOWER.encode(&psk));
    let op = &desk.provisioner;
    let (status, report) = upload(op, &query, file.as_bytes(), None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert_eq!(report["errors"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["errors"][0]["line"], 5);
    assert!(
        reasons(&report).contains("skip_unsupported=true"),
        "{report}"
    );
    assert_eq!(stored(&desk.srv).await, 0);

    let (status, report) = upload(
        op,
        &format!("{query}&skip_unsupported=true"),
        file.as_bytes(),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(
        (report["imported"].as_u64(), report["skipped"].as_u64()),
        (Some(2), Some(1))
    );
    let warnings = report["warnings"].to_string();
    assert!(
        warnings.contains("HOTP") && warnings.contains("MX-H"),
        "{report}"
    );
    assert_eq!(stored(&desk.srv).await, 2);
    assert_reveals(&mut desk, "MX-1", 6, 60).await;
    desk.srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_a_bad_mac_or_truncated_ciphertext_stores_nothing() {
    let srv = TestServer::start().await;
    srv.canary.watch_seed("pskc seed", SEED);
    let op = srv.operator("imp", "provisioner").await;
    let psk = [0x22u8; 32];
    let query = format!("psk_hex={}", data_encoding::HEXLOWER.encode(&psk));
    let file = build(Protection::KeyWrap(psk), &[("BAD-1", TOTP)]);
    let cipher_value = file
        .split("<xenc:CipherValue>")
        .nth(2)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let mac = file
        .split("<pskc:ValueMAC>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let mut flipped = mac.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let bad_mac = file.replace(&mac, std::str::from_utf8(&flipped).unwrap());
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&cipher_value)
        .unwrap();
    let truncated = file.replace(&cipher_value, &b64(&sealed[..sealed.len() - 8]));
    for (what, query, body, needle) in [
        (
            "wrong key",
            format!("psk_hex={}", "33".repeat(32)),
            file.clone(),
            "--psk-hex",
        ),
        ("bad MAC", query.clone(), bad_mac, "ValueMAC"),
        ("truncated ciphertext", query.clone(), truncated, "ValueMAC"),
    ] {
        let (status, report) = upload(&op, &query, body.as_bytes(), None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {report}");
        assert_eq!(report["imported"], 0, "{what}");
        assert!(reasons(&report).contains(needle), "{what}: {report}");
        assert_eq!(stored(&srv).await, 0, "{what}");
    }
    srv.stop_and_check().await;
}

#[test]
fn the_cli_reads_a_password_file_and_skips_unsupported_keys_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_seedvault"))
            .current_dir(dir.path())
            .args(args)
            .env_remove("SEEDVAULT_DATA_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(run(&["init"]).status.success());
    let figure7 = testdata("pskc-rfc6030-figure7.xml");
    let wrong = dir.path().join("wrong.pw");
    std::fs::write(&wrong, "qwertz\n").unwrap();
    let output = run(&[
        "import",
        figure7.to_str().unwrap(),
        "--password-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the password") && stderr.contains("--password-file"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    let right = dir.path().join("right.pw");
    std::fs::write(&right, "qwerty\n").unwrap();
    let output = run(&[
        "import",
        figure7.to_str().unwrap(),
        "--password-file",
        right.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("imported 1 token(s)"));

    let psk = [0x44u8; 32];
    let psk_file = dir.path().join("vendor.psk");
    std::fs::write(&psk_file, data_encoding::HEXLOWER.encode(&psk)).unwrap();
    let mixed = dir.path().join("mixed.xml");
    std::fs::write(
        &mixed,
        build(Protection::KeyWrap(psk), &[("CL-1", TOTP), ("CL-H", HOTP)]),
    )
    .unwrap();
    let args = [
        "import",
        mixed.to_str().unwrap(),
        "--psk-file",
        psk_file.to_str().unwrap(),
    ];
    let output = run(&args);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("line 5, Algorithm") && stderr.contains("--skip-unsupported"),
        "{stderr}"
    );
    let output = run(&[&args[..], &["--skip-unsupported"]].concat());
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("warning: line 5: an HOTP"), "{stderr}");
    assert!(
        stderr.contains("1 key(s) that are not TOTP were skipped"),
        "{stderr}"
    );
    assert!(text(&output.stdout).contains("imported 1 token(s)"));
    let status = text(&run(&["status"]).stdout);
    assert!(status.contains("escrowed   2"), "{status}");
}

/// The import page as a browser posts it; returns the status and the page's HTML.
async fn post_page(op: &Operator, parts: &[(&str, &[u8])]) -> (StatusCode, String) {
    common::post_form(op, "/import", common::multipart("vendor.xml", parts)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_page_takes_a_password_and_the_skip_checkbox() {
    let srv = TestServer::start().await;
    srv.canary.watch_seed("pskc seed", SEED);
    let op = srv.operator("imp", "provisioner").await;
    let figure7 = std::fs::read(testdata("pskc-rfc6030-figure7.xml")).unwrap();
    let (status, html) = post_page(&op, &[("file", &figure7), ("dry_run", b"false")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("Nothing was imported") && html.contains("password field"),
        "{html}"
    );
    let (status, html) = post_page(
        &op,
        &[
            ("file", &figure7),
            ("password", b"qwerty"),
            ("dry_run", b"false"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Imported 1 token(s)"), "{html}");

    let psk = [0x55u8; 32];
    let hex = data_encoding::HEXLOWER.encode(&psk);
    let mixed = build(Protection::KeyWrap(psk), &[("PG-1", TOTP), ("PG-H", HOTP)]);
    let (status, html) = post_page(
        &op,
        &[
            ("file", mixed.as_bytes()),
            ("psk_hex", hex.as_bytes()),
            ("skip_unsupported", b"true"),
            ("dry_run", b"false"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Imported 1 token(s)"), "{html}");
    assert!(
        html.contains("1 key(s) that are not TOTP were skipped"),
        "{html}"
    );
    assert_eq!(stored(&srv).await, 2);
    srv.stop_and_check().await;
}
