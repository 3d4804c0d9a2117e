//! Bulk import over HTTP and the CLI: every sample file escrows tokens whose codes match the
//! independently computed expectations; a bad row imports nothing; duplicates and wrong keys
//! are refused; nothing secret leaks into reports, logs or files.
#![allow(clippy::type_complexity)]

use crate::common;

use std::path::{Path, PathBuf};

use common::{post_form, Operator, TestServer, T0};
use reqwest::StatusCode;
use seedvault::otp::{code_at, TotpSpec};
use seedvault::secret::Algorithm;
use seedvault::vault::SealedBlob;
use serde_json::Value;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn expected_codes() -> Vec<(String, String)> {
    std::fs::read_to_string(testdata("expected-codes.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[5].to_owned())
        })
        .collect()
}

async fn upload(op: &Operator, query: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = op
        .http
        .post(format!("{}/api/v1/imports?{query}", op.base))
        .header("Origin", &op.base)
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    op.canary.record_response("import", &bytes);
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// A `multipart/form-data` body: the file in part `file`, then the given fields.
fn multipart(file_name: &str, file: &[u8], fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    let mut parts: Vec<(&str, &[u8])> = vec![("file", file)];
    parts.extend(fields.iter().map(|(name, value)| (*name, value.as_bytes())));
    common::multipart(file_name, &parts)
}

/// The code each stored token produces at T0, computed from its sealed seed.
async fn stored_codes(srv: &TestServer) -> Vec<(String, Option<String>, String)> {
    let rows: Vec<(String, String, Option<String>, Vec<u8>, String, i64, i64)> = srv
        .rows("SELECT token_id, serial, owner, sealed_seed, algorithm, digits, period FROM tokens WHERE state = 'escrowed'")
        .await;
    rows.into_iter()
        .map(|(id, serial, owner, sealed, algorithm, digits, period)| {
            let seed = srv
                .state
                .vault
                .unseal_seed(&id, &serial, &SealedBlob::from_stored(sealed))
                .unwrap();
            let spec = TotpSpec::new(
                Algorithm::parse(&algorithm).unwrap(),
                digits as u32,
                period as u32,
            )
            .unwrap();
            (
                serial,
                owner,
                code_at(&seed, &spec, T0, 0).expose().to_owned(),
            )
        })
        .collect()
}

fn watch_sample_seeds(srv: &TestServer) {
    for line in std::fs::read_to_string(testdata("entra-oath.csv"))
        .unwrap()
        .lines()
        .skip(1)
    {
        let secret = line.split(',').nth(2).unwrap().to_uppercase();
        srv.canary.watch_seed(
            line.split(',').nth(1).unwrap(),
            &data_encoding::BASE32_NOPAD
                .decode(secret.as_bytes())
                .unwrap(),
        );
    }
    for line in std::fs::read_to_string(testdata("vendor-safeid.csv"))
        .unwrap()
        .lines()
        .skip(1)
    {
        let secret = line.split(',').nth(1).unwrap();
        srv.canary.watch_seed(
            line.split(',').next().unwrap(),
            &data_encoding::HEXLOWER.decode(secret.as_bytes()).unwrap(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_file_imports_and_each_token_produces_its_expected_code() {
    let srv = TestServer::start().await;
    watch_sample_seeds(&srv);
    let op = srv.operator("imp", "provisioner").await;
    let psk = std::fs::read_to_string(testdata("pskc-encrypted.psk.hex")).unwrap();
    for (file, query, format) in [
        (
            "entra-oath.csv",
            "name=entra-oath.csv".to_owned(),
            "entra-csv",
        ),
        (
            "vendor-safeid.csv",
            "secret_encoding=hex".to_owned(),
            "vendor-csv",
        ),
        ("otpauth-uris.txt", String::new(), "otpauth-list"),
        ("pskc-plain.xml", String::new(), "pskc"),
        ("pskc-encrypted.xml", String::new(), "pskc"),
    ] {
        let bytes = std::fs::read(testdata(file)).unwrap();
        let (status, report) = if file == "pskc-encrypted.xml" {
            // The key travels only in a form field, never in the URL.
            let form = multipart(file, &bytes, &[("psk_hex", psk.trim())]);
            let (status, text) = post_form(&op, "/api/v1/imports", form).await;
            (status, serde_json::from_str(&text).unwrap())
        } else {
            upload(&op, &query, bytes).await
        };
        assert_eq!(status, StatusCode::CREATED, "{file}: {report}");
        assert_eq!(report["format"], format, "{file}: {report}");
        assert_eq!(report["errors"], serde_json::json!([]), "{file}");
        assert!(
            report["imported"].as_u64().unwrap() >= 2,
            "{file}: {report}"
        );
    }
    let stored = stored_codes(&srv).await;
    assert!(
        stored.iter().any(|(_, owner, _)| owner.is_none()),
        "vendor tokens stay unassigned"
    );
    let expected = expected_codes();
    assert_eq!(
        stored.len(),
        expected.len(),
        "every sample token stored once"
    );
    for (key, code) in expected {
        let found = stored.iter().find(|(serial, _, _)| *serial == key);
        let (_, _, got) = found.unwrap_or_else(|| panic!("{key} was not imported"));
        assert_eq!(*got, code, "{key}");
    }
    let imports = srv.count_action("token.imported").await;
    assert_eq!(imports, 5, "one audit event per import");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_one_bad_row_imports_nothing_and_names_the_line() {
    let srv = TestServer::start().await;
    watch_sample_seeds(&srv);
    let op = srv.operator("imp", "provisioner").await;
    let mut text = std::fs::read_to_string(testdata("entra-oath.csv")).unwrap();
    text = text.replace("UFOEYZUHILYLDNGO", "UFOEYZUHILYLDNG0");
    let (status, report) = upload(&op, "", text.into_bytes()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert_eq!(report["imported"], 0);
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0]["line"], 3);
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("'0' is not a base32 character"),
        "{report}"
    );
    assert!(!errors[0]["fix"].as_str().unwrap().is_empty());
    assert!(stored_codes(&srv).await.is_empty(), "nothing stored");
    // A dry run of the good file previews without storing.
    let (status, report) = upload(
        &op,
        "dry_run=true",
        std::fs::read(testdata("entra-oath.csv")).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["rows"].clone(), report["imported"].clone()),
        (serde_json::json!(5), serde_json::json!(0))
    );
    assert!(stored_codes(&srv).await.is_empty());
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_a_wrong_pskc_key_are_refused() {
    let srv = TestServer::start().await;
    watch_sample_seeds(&srv);
    let op = srv.operator("imp", "provisioner").await;
    let file = std::fs::read(testdata("vendor-safeid.csv")).unwrap();
    assert_eq!(
        upload(&op, "secret_encoding=hex", file.clone()).await.0,
        StatusCode::CREATED
    );
    let (status, report) = upload(&op, "secret_encoding=hex", file).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(report["errors"].as_array().unwrap().len(), 3, "{report}");
    assert!(
        report["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("already exists in the vault"),
        "{report}"
    );

    let form = multipart(
        "pskc-encrypted.xml",
        &std::fs::read(testdata("pskc-encrypted.xml")).unwrap(),
        &[("psk_hex", "00112233445566778899aabbccddeeff")],
    );
    let (status, text) = post_form(&op, "/api/v1/imports", form).await;
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    assert_eq!(report["imported"], 0);
    // Only provisioners import.
    let helpdesk = srv.operator("hd", "helpdesk").await;
    assert_eq!(
        upload(&helpdesk, "", b"x".to_vec()).await.0,
        StatusCode::FORBIDDEN
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_shared_key_in_the_url_is_refused_by_the_api_and_the_import_page() {
    let srv = TestServer::start().await;
    watch_sample_seeds(&srv);
    let op = srv.operator("imq", "provisioner").await;
    let psk = std::fs::read_to_string(testdata("pskc-encrypted.psk.hex")).unwrap();
    let file = std::fs::read(testdata("pskc-encrypted.xml")).unwrap();
    let (status, reply) = upload(&op, &format!("psk_hex={}", psk.trim()), file.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert_eq!(reply["error"], "unprocessable", "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.starts_with("psk_hex: a pre-shared key or password is never accepted in the URL")
            && message.contains("form field psk_hex"),
        "{reply}"
    );
    // Refused even beside a correct form field, and on the page's form post too.
    for path in [
        format!("/api/v1/imports?psk_hex={}", psk.trim()),
        format!("/import?psk_hex={}", psk.trim()),
    ] {
        let form = multipart(
            "pskc-encrypted.xml",
            &file,
            &[("psk_hex", psk.trim()), ("dry_run", "false")],
        );
        let (status, text) = post_form(&op, &path, form).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {text}");
        assert!(text.contains("never accepted in the URL"), "{path}: {text}");
    }
    assert_eq!(op.get("/api/v1/tokens").await.1, serde_json::json!([]));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_import_requests_are_answered_with_the_json_error_shape() {
    let srv = TestServer::start().await;
    let op = srv.operator("imr", "provisioner").await;
    let (status, reply) = upload(&op, "dry_run=maybe", b"x".to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert_eq!(reply["error"], "unprocessable", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("query string"),
        "{reply}"
    );
    let (status, reply) = upload(&op, "format=xml", b"x".to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("format: unknown import format 'xml'"),
        "{reply}"
    );
    // A multipart body that breaks off is a JSON error too, not axum's plain text.
    let response = op
        .http
        .post(format!("{}/api/v1/imports", op.base))
        .header("Origin", &op.base)
        .header("Content-Type", "multipart/form-data; boundary=cut")
        .body("--cut\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let reply: Value = response.json().await.unwrap();
    assert!(
        reply["error"].is_string() && reply["message"].is_string(),
        "{reply}"
    );
    srv.stop_and_check().await;
}

#[test]
fn the_cli_imports_a_file_and_prints_one_line_per_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_seedvault");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .current_dir(dir.path())
            .args(args)
            .env_remove("SEEDVAULT_DATA_DIR")
            .output()
            .unwrap()
    };
    assert!(run(&["init"]).status.success());
    let bad = dir.path().join("bad.csv");
    let text = std::fs::read_to_string(testdata("entra-oath.csv"))
        .unwrap()
        .replace("UFOEYZUHILYLDNGO", "UFOEYZUHILYLDNG0");
    std::fs::write(&bad, text).unwrap();
    let output = run(&["import", bad.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 3, secret key: '0' is not a base32 character"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    let output = run(&["import", testdata("entra-oath.csv").to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("imported 5 token(s)"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("warning: line 3"),
        "80-bit seeds are warned about: {stderr}"
    );
    let status = String::from_utf8_lossy(&run(&["status"]).stdout).into_owned();
    assert!(status.contains("escrowed   5"), "{status}");
}

/// An Entra CSV of `rows` rows with distinct 160-bit secrets (about 80 bytes a row).
fn large_entra_csv(rows: usize) -> Vec<u8> {
    let mut csv = String::from("upn,serial number,secret key,time interval,manufacturer,model\n");
    for i in 0..rows {
        let mut seed = [0x5au8; 20];
        seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let secret = data_encoding::BASE32_NOPAD.encode(&seed);
        csv.push_str(&format!(
            "u{i}@example.org,BULK-{i:06},{secret},30,Token2,C202\n"
        ));
    }
    csv.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50000_row_file_goes_through_the_page_and_the_api_and_a_file_over_the_limit_gets_a_json_413(
) {
    let srv = TestServer::start_with(seedvault::config::Overrides {
        max_upload_mb: Some(5),
        ..Default::default()
    })
    .await;
    let op = srv.operator("imbig", "provisioner").await;
    let csv = large_entra_csv(50_000);
    assert!(
        csv.len() > 2 * 1024 * 1024,
        "the file must exceed axum's 2 MB default"
    );
    // The page's preview (a dry run) reads all of it.
    let (status, page) = post_form(&op, "/import", multipart("big.csv", &csv, &[])).await;
    assert_eq!(status, StatusCode::OK, "{}", &page[..page.len().min(500)]);
    assert!(
        page.contains("50000") || page.contains("50,000"),
        "the preview does not count the rows"
    );
    // The API stores all of it.
    let (status, report) = upload(&op, "format=entra", csv.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{}", report["errors"]);
    assert_eq!(report["imported"], 50_000);
    // Beyond the configured limit: a JSON 413 that names the limit, through both doors.
    let too_big = large_entra_csv(70_000);
    assert!(too_big.len() > 5 * 1024 * 1024);
    let (status, body) = upload(&op, "format=entra&dry_run=true", too_big.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"], "payload_too_large");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("5 MiB") && message.contains("max_upload_mb"),
        "{message}"
    );
    let (status, _) = post_form(&op, "/api/v1/imports", multipart("big.csv", &too_big, &[])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Other routes keep the small default: a 3 MB sign-in body is refused.
    let response = op
        .http
        .post(format!("{}/api/v1/auth/login/start", op.base))
        .header("Origin", &op.base)
        .header("Content-Type", "application/json")
        .body(format!(
            "{{\"username\":\"{}\"}}",
            "x".repeat(3 * 1024 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    srv.finish("too large", response).await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_a_million_problems_gets_a_bounded_report() {
    let srv = TestServer::start().await;
    let op = srv.operator("imhostile", "provisioner").await;
    // 950,000 unknown header columns in 1.9 MB: one warning each, before this was bounded an
    // 89 MB answer.
    let mut csv = String::from("upn,serial number,secret key,time interval,manufacturer,model");
    for _ in 0..950_000 {
        csv.push_str(",x");
    }
    csv.push_str("\nu@example.org,HOSTILE-1,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,30,Token2,C202\n");
    let response = op
        .http
        .post(format!(
            "{}/api/v1/imports?format=entra&dry_run=true",
            op.base
        ))
        .header("Origin", &op.base)
        .header("Content-Type", "application/octet-stream")
        .body(csv.into_bytes())
        .send()
        .await
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    assert!(
        bytes.len() < 512 * 1024,
        "the report is {} bytes",
        bytes.len()
    );
    let report: Value = serde_json::from_slice(&bytes).unwrap();
    let listed =
        report["warnings"].as_array().unwrap().len() + report["errors"].as_array().unwrap().len();
    let omitted =
        report["warnings_omitted"].as_u64().unwrap() + report["errors_omitted"].as_u64().unwrap();
    assert!(
        listed <= 2 * seedvault::import::MAX_LISTED,
        "{listed} entries listed"
    );
    assert!(
        listed as u64 + omitted >= 950_000,
        "the problems are not all counted: {listed} + {omitted}"
    );
    srv.stop_and_check().await;
}
