//! The API contract: schemathesis drives every operation of `/api/v1/openapi.json` (examples,
//! coverage, fuzzing, and stateful runs that follow the document's links) with a session that
//! holds every role and the vault's `Origin`, and every check it has must pass. What it is told
//! to skip or relax is in `api_contract.toml`, each with its reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::header::SET_COOKIE;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{capture, TestServer};

/// Where schemathesis is: `SEEDVAULT_SCHEMATHESIS` (set by `.ci/run`), else `st` or
/// `schemathesis` on PATH.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("SEEDVAULT_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    for name in ["st", "schemathesis"] {
        if let Some(found) = on_path
            .iter()
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return found;
        }
    }
    // Failing rather than skipping: a skipped contract test would let CI pass with the
    // document unchecked.
    panic!(
        "schemathesis is not installed, so the API contract cannot be checked. Run .ci/run \
         (it installs it), or: python3 -m venv .ci/venv && .ci/venv/bin/pip install \
         'schemathesis==4.32.5', then set SEEDVAULT_SCHEMATHESIS=.ci/venv/bin/st"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_its_openapi_document_says_under_schemathesis() {
    let st = schemathesis();
    let srv = TestServer::start().await;
    let mut op = srv
        .operator("fuzz", "admin,provisioner,helpdesk,auditor")
        .await;
    for (owner, serial, secret) in [
        (
            "ada@example.org",
            "FUZZ-0001",
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        ),
        (
            "bob@example.org",
            "FUZZ-0002",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
        ),
        (
            "cy@example.org",
            "FUZZ-0003",
            "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U",
        ),
    ] {
        let (status, body) = capture(&op, owner, serial, secret, json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // A session of its own for schemathesis: sign in once more and keep the cookie it sets.
    let (status, challenge) = op.login_start().await;
    assert_eq!(status, StatusCode::OK, "{challenge}");
    let assertion = op.assert(challenge);
    let response = op
        .http
        .post(srv.url("/api/v1/auth/login/finish"))
        .header("Origin", &srv.base)
        .json(&assertion)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(seedvault::web::SESSION_COOKIE))
        .and_then(|v| v.split(';').next())
        .expect("sign-in sets the session cookie")
        .to_owned();

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/api_contract.toml");
    let report = srv.dir.path().join("schemathesis");
    let mut command = Command::new(&st);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(srv.url("/api/v1/openapi.json"))
        .args(["--header", &format!("Cookie: {cookie}")])
        .args(["--header", &format!("Origin: {}", srv.base)])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--max-examples", "30", "--seed", "25", "--workers", "1"])
        .args(["--no-color"])
        .arg("--report-dir")
        .arg(&report)
        // schemathesis keeps a cache of past failures in its working directory; a fresh one
        // keeps runs independent of each other and the checkout clean.
        .current_dir(srv.dir.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", st.display()));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Shown with `--nocapture`: what was covered, and schemathesis' warnings.
    println!("{text}");
    assert!(
        output.status.success(),
        "schemathesis found the server and its document disagreeing:\n{text}"
    );
    srv.stop_and_check().await;
}
