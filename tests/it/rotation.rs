//! Data key rotation beside a running server (issue 15): every code stays the same, reveals go
//! on during it, the old key opens no re-sealed blob, and a rotation killed part-way leaves a
//! vault that serves every seed and finishes on the next run.

use std::path::Path;

use reqwest::StatusCode;
use serde_json::json;

use crate::cli::text;
use crate::common::{self, Operator, TestServer, T0};
use seedvault::store::Store;
use seedvault::vault::{open, SealedBlob, Unlocker, Vault};

const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

fn code_at_t0() -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(SECRET.as_bytes())
        .unwrap();
    common::totp::totp(&secret, "SHA1", 6, 30, T0)
}

async fn rotate(data: &Path, extra_env: &[(&str, &str)]) -> std::process::Output {
    let data = data.to_path_buf();
    let env: Vec<(String, String)> = extra_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = crate::cli::seedvault(data.parent().unwrap());
        command.args([
            "--data-dir",
            data.to_str().unwrap(),
            "key",
            "rotate",
            "--batch",
            "2",
        ]);
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().unwrap()
    })
    .await
    .unwrap()
}

/// Every escrowed token's serial, token id and sealed blob, read from the file.
async fn blobs(data: &Path) -> Vec<(String, String, SealedBlob)> {
    let store = common::store_of(data).await;
    let mut out = Vec::new();
    for i in 0..6 {
        let serial = format!("ROT-{i}");
        let row = seedvault::store::tokens::by_serial(&store, &serial)
            .await
            .unwrap()
            .unwrap();
        let sealed = seedvault::store::tokens::sealed_seed(&store, row.id)
            .await
            .unwrap()
            .unwrap();
        out.push((serial, row.token_id, SealedBlob::from_stored(sealed)));
    }
    store.close().await;
    out
}

/// A separate process's view: the vault unlocked afresh from its slots.
async fn unlocked(data: &Path) -> (Store, Vault) {
    let store = common::store_of(data).await;
    let vault = open::unlock(&store, &Unlocker::Development).await.unwrap();
    (store, vault)
}

async fn setup() -> (TestServer, Operator, std::path::PathBuf) {
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pat", "provisioner").await;
    for i in 0..6 {
        let (status, body) = common::capture(
            &provisioner,
            "user1@example.org",
            &format!("ROT-{i}"),
            SECRET,
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let helpdesk = srv.operator("hal", "helpdesk").await;
    let data = srv.dir.path().join("data");
    (srv, helpdesk, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_beside_the_server_keeps_every_code_and_the_old_key_opens_no_resealed_blob() {
    let (srv, mut helpdesk, data) = setup().await;
    let (old_store, old_vault) = unlocked(&data).await;
    let before = blobs(&data).await;
    assert!(before.iter().all(|(_, _, b)| b.generation() == Some(0)));

    let rotation = rotate(&data, &[]);
    let reveals = async {
        let mut statuses = Vec::new();
        for i in 0..3 {
            let (status, body) = helpdesk
                .reveal(
                    &format!("ROT-{i}"),
                    &["callback", "video-id"],
                    Some("INC-1"),
                )
                .await;
            assert_eq!(body["code"], json!(code_at_t0()), "{body}");
            statuses.push(status);
        }
        statuses
    };
    let (output, statuses) = tokio::join!(rotation, reveals);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("rotated to data key generation 1: 6 seeds re-sealed"),
        "{}",
        text(&output.stdout)
    );
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    // After: the server still reveals the same codes, under the key it learned.
    for i in 3..6 {
        let (status, body) = helpdesk
            .reveal(
                &format!("ROT-{i}"),
                &["callback", "video-id"],
                Some("INC-2"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["code"], json!(code_at_t0()));
    }
    let after = blobs(&data).await;
    let (new_store, new_vault) = unlocked(&data).await;
    for ((serial, token_id, old_blob), (_, _, new_blob)) in before.iter().zip(&after) {
        assert_eq!(new_blob.generation(), Some(1), "{serial}");
        assert_ne!(old_blob.as_bytes(), new_blob.as_bytes());
        assert!(
            old_vault.unseal_seed(token_id, serial, new_blob).is_err(),
            "the old key must not open {serial}'s new blob"
        );
        let seed = new_vault.unseal_seed(token_id, serial, new_blob).unwrap();
        assert_eq!(
            seed.expose(),
            data_encoding::BASE32_NOPAD
                .decode(SECRET.as_bytes())
                .unwrap()
                .as_slice()
        );
        assert!(new_vault.unseal_seed(token_id, serial, old_blob).is_err());
    }
    let actions: Vec<String> = srv
        .audit_actions()
        .await
        .into_iter()
        .map(|(action, _, _)| action)
        .collect();
    for expected in ["key.rotation_started", "key.rotated"] {
        assert!(actions.iter().any(|a| a == expected), "{actions:?}");
    }
    old_store.close().await;
    new_store.close().await;
    let verify = crate::cli::run(
        srv.dir.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "audit",
            "verify",
            "--all-signatures",
        ],
    );
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_killed_part_way_leaves_a_vault_that_serves_every_seed_and_finishes_on_rerun() {
    let (srv, mut helpdesk, data) = setup().await;
    let killed = rotate(
        &data,
        &[("SEEDVAULT_TEST_ROTATION_ABORT_AFTER_BATCHES", "1")],
    )
    .await;
    assert!(!killed.status.success(), "the hook aborts the process");
    let mixed = blobs(&data).await;
    let generations: Vec<_> = mixed.iter().map(|(_, _, b)| b.generation()).collect();
    assert!(
        generations.contains(&Some(0)) && generations.contains(&Some(1)),
        "{generations:?}"
    );

    // A process that opens the vault now (the next start) serves every seed...
    let (store, vault) = unlocked(&data).await;
    for (serial, token_id, blob) in &mixed {
        assert!(
            vault.unseal_seed(token_id, serial, blob).is_ok(),
            "{serial}"
        );
    }
    store.close().await;
    // ...and so does the server that ran beside the killed rotation.
    for i in [0, 5] {
        let (status, body) = helpdesk
            .reveal(
                &format!("ROT-{i}"),
                &["callback", "video-id"],
                Some("INC-3"),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["code"], json!(code_at_t0()));
    }
    // A slot cannot change while the rotation is unfinished.
    let refused = crate::cli::run(
        srv.dir.path(),
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "key",
            "add",
            "recipient",
            &age::x25519::Identity::generate().to_public().to_string(),
        ],
    );
    assert!(
        text(&refused.stderr).contains("key rotation is already under way"),
        "{}",
        text(&refused.stderr)
    );

    let finished = rotate(&data, &[]).await;
    assert!(finished.status.success(), "{}", text(&finished.stderr));
    assert!(
        text(&finished.stdout).contains("finished the rotation to data key generation 1"),
        "{}",
        text(&finished.stdout)
    );
    let after = blobs(&data).await;
    assert!(after.iter().all(|(_, _, b)| b.generation() == Some(1)));
    let (store, vault) = unlocked(&data).await;
    for (serial, token_id, blob) in &after {
        assert!(
            vault.unseal_seed(token_id, serial, blob).is_ok(),
            "{serial}"
        );
    }
    store.close().await;
    let (status, body) = helpdesk
        .reveal("ROT-3", &["callback", "video-id"], Some("INC-4"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], json!(code_at_t0()));
    srv.stop_and_check().await;
}

fn cli_line(dir: &Path, data: &Path, args: &[&str]) -> String {
    let mut all = vec!["--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = crate::cli::run(dir, &all);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verification_follows_a_signing_key_hand_over_made_beside_the_server() {
    let (srv, mut helpdesk, data) = setup().await;
    let dir = srv.dir.path().to_path_buf();
    let old_key = cli_line(&dir, &data, &["audit", "public-key"]);
    let printed = cli_line(&dir, &data, &["audit", "rotate-signing-key"]);
    assert!(printed.contains("hand-over at seq"), "{printed}");
    let new_key = cli_line(&dir, &data, &["audit", "public-key"]);
    assert_ne!(old_key, new_key);

    // The server signs its next events with the new key without a restart.
    let (status, body) = helpdesk
        .reveal("ROT-0", &["callback", "video-id"], Some("INC-5"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let verified = cli_line(&dir, &data, &["audit", "verify", "--all-signatures"]);
    assert!(verified.starts_with("ok:"), "{verified}");
    let quick = cli_line(&dir, &data, &["audit", "verify"]);
    assert!(quick.starts_with("ok:"), "{quick}");

    let export = dir.join("trail.jsonl");
    cli_line(
        &dir,
        &data,
        &["audit", "export", "-o", export.to_str().unwrap()],
    );
    for key in [&new_key, &old_key] {
        let ok = cli_line(
            &dir,
            &data,
            &[
                "audit",
                "verify",
                "--file",
                export.to_str().unwrap(),
                "--public-key",
                key,
            ],
        );
        assert!(ok.starts_with("ok:"), "{ok}");
    }
    let stranger = data_encoding::HEXLOWER.encode(
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .as_bytes(),
    );
    let refused = crate::cli::run(
        &dir,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "audit",
            "verify",
            "--file",
            export.to_str().unwrap(),
            "--public-key",
            &stranger,
        ],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stdout).contains("none of the keys the signing key hand-overs name"),
        "{}",
        text(&refused.stdout)
    );
    if let Some(script) = crate::audit::python_verifier(&dir) {
        let vault_id = srv.state.vault.id().to_owned();
        for key in [&new_key, &old_key] {
            let output = crate::audit::verify_with_python(&script, &export, key, &vault_id, None);
            assert!(
                output.status.success(),
                "{}{}",
                text(&output.stdout),
                text(&output.stderr)
            );
        }
        let output = crate::audit::verify_with_python(&script, &export, &stranger, &vault_id, None);
        assert!(!output.status.success());
    }
    srv.stop_and_check().await;
}
