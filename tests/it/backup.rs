//! Backup and restore (issue 15): a backup taken while reveals run restores to a vault that
//! serves the same codes and verifies to the recorded head; purges after the backup are
//! replayed from an export; bad input changes nothing.

use std::path::{Path, PathBuf};

use reqwest::StatusCode;
use serde_json::json;

use crate::cli::{run, text};
use crate::common::{self, Operator, TestServer};
use seedvault::store::Store;
use seedvault::vault::{open, SealedBlob, Unlocker};

/// 20 bytes, base32.
const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

fn secret_bytes() -> Vec<u8> {
    data_encoding::BASE32_NOPAD
        .decode(SECRET.as_bytes())
        .unwrap()
}

/// Writes a fresh age identity to `dir/name` and returns its path and recipient.
fn identity(dir: &Path, name: &str) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    (path, identity.to_public().to_string())
}

/// Runs the binary on a blocking thread (the in-process server keeps serving meanwhile).
async fn seedvault(cwd: &Path, args: Vec<String>) -> std::process::Output {
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&cwd, &args)
    })
    .await
    .unwrap()
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    items
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

/// The seed a restored vault holds for `serial` (`None` when purged), through the library,
/// unsealed with the development slot that travelled in the backup.
pub(crate) async fn seed_in(data_dir: &Path, serial: &str) -> Option<Vec<u8>> {
    let store = Store::open(data_dir).await.unwrap();
    let vault = open::unlock(&store, &Unlocker::Development).await.unwrap();
    let row = seedvault::store::tokens::by_serial(&store, serial)
        .await
        .unwrap()
        .unwrap();
    let sealed = seedvault::store::tokens::sealed_seed(&store, row.id)
        .await
        .unwrap();
    let seed = sealed.map(|bytes| {
        vault
            .unseal_seed(&row.token_id, &row.serial, &SealedBlob::from_stored(bytes))
            .unwrap()
            .expose()
            .to_vec()
    });
    store.close().await;
    seed
}

async fn capture(op: &Operator, serial: &str) {
    let (status, body) = common::capture(op, "user1@example.org", serial, SECRET, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".partial"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_reveals_restores_to_a_vault_with_the_same_codes_and_recorded_head() {
    if crate::common::sqlite_only("backups are of the SQLite file (pg_dump on PostgreSQL)") {
        return;
    }
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut desks = Vec::new();
    for i in 0..3 {
        let serial = format!("BK-{i}");
        capture(&provisioner, &serial).await;
        desks.push((srv.operator(&format!("hal{i}"), "helpdesk").await, serial));
    }
    let work = tempfile::tempdir().unwrap();
    let (id_path, recipient) = identity(work.path(), "backup.key");
    let data = srv.dir.path().join("data");
    let out = work.path().join("vault.age");

    let backup = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &data,
            &"backup",
            &"--out",
            &out,
            &"--recipient",
            &recipient,
        ]),
    );
    let reveals = futures::future::join_all(desks.iter_mut().map(|(op, serial)| async move {
        op.reveal(serial, &["callback", "video-id"], Some("INC-1"))
            .await
            .0
    }));
    let (backup, statuses) = tokio::join!(backup, reveals);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let printed = text(&backup.stdout);
    let head = printed
        .split("audit head ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    assert!(head.contains(':'), "{printed}");
    let actions = srv.audit_actions().await;
    assert!(
        actions
            .iter()
            .any(|(action, _, _)| action == "backup.created"),
        "{actions:?}"
    );
    assert_eq!(leftovers(&data), Vec::<String>::new(), "no snapshot left");
    let backup_bytes = std::fs::read(&out).unwrap();
    assert!(
        !backup_bytes
            .windows(12)
            .any(|w| secret_bytes().windows(12).any(|s| s == w)),
        "the backup holds no seed in clear"
    );

    let restored = work.path().join("restored");
    let output = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &restored,
            &"restore",
            &out,
            &"--identity",
            &id_path,
        ]),
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("OK: restored vault"));
    for (_, serial) in &desks {
        assert_eq!(seed_in(&restored, serial).await, Some(secret_bytes()));
    }
    let verify = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &restored,
            &"audit",
            &"verify",
            &"--all-signatures",
            &"--expect-head",
            &head,
        ]),
    )
    .await;
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    assert!(
        text(&verify.stdout).contains(&head),
        "{}",
        text(&verify.stdout)
    );
    assert_eq!(leftovers(work.path()), Vec::<String>::new());
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_purges_destroys_exactly_the_tokens_destroyed_after_the_backup() {
    if crate::common::sqlite_only("backups are of the SQLite file (pg_dump on PostgreSQL)") {
        return;
    }
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pat", "provisioner").await;
    for serial in ["RP-KEEP", "RP-BEFORE", "RP-AFTER", "RP-NEW"] {
        if serial != "RP-NEW" {
            capture(&provisioner, serial).await;
        }
    }
    let cancel = |serial: &'static str| {
        let provisioner = &provisioner;
        async move {
            let (status, body) = provisioner
                .post(
                    &format!("/api/v1/tokens/{serial}/cancel"),
                    json!({ "reason": "lost in the post" }),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    cancel("RP-BEFORE").await;
    let work = tempfile::tempdir().unwrap();
    let (id_path, recipient) = identity(work.path(), "backup.key");
    let data = srv.dir.path().join("data");
    let out = work.path().join("vault.age");
    let backup = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &data,
            &"backup",
            &"--out",
            &out,
            &"--recipient",
            &recipient,
        ]),
    )
    .await;
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    // After the backup: one token destroyed, one captured (not in the backup at all).
    cancel("RP-AFTER").await;
    capture(&provisioner, "RP-NEW").await;
    let export = work.path().join("later.jsonl");
    let exported = seedvault(
        work.path(),
        args(&[&"--data-dir", &data, &"audit", &"export", &"-o", &export]),
    )
    .await;
    assert!(exported.status.success(), "{}", text(&exported.stderr));

    // An export of another vault is refused and nothing is restored.
    let other = TestServer::start().await;
    let other_export = work.path().join("other.jsonl");
    let other_data = other.dir.path().join("data");
    let exported = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &other_data,
            &"audit",
            &"export",
            &"-o",
            &other_export,
        ]),
    )
    .await;
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let refused_dir = work.path().join("refused");
    let refused = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &refused_dir,
            &"restore",
            &out,
            &"--identity",
            &id_path,
            &"--replay-purges",
            &other_export,
        ]),
    )
    .await;
    assert!(!refused.status.success());
    let message = text(&refused.stderr);
    assert!(message.contains("replay export"), "{message}");
    assert!(!refused_dir.exists());
    assert_eq!(leftovers(work.path()), Vec::<String>::new());

    let restored = work.path().join("restored");
    let output = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &restored,
            &"restore",
            &out,
            &"--identity",
            &id_path,
            &"--replay-purges",
            &export,
        ]),
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed = text(&output.stdout);
    assert!(printed.contains("replayed purges: 1 token(s)"), "{printed}");
    assert!(printed.contains("purged RP-AFTER"), "{printed}");
    assert_eq!(seed_in(&restored, "RP-KEEP").await, Some(secret_bytes()));
    assert_eq!(seed_in(&restored, "RP-AFTER").await, None);
    assert_eq!(seed_in(&restored, "RP-BEFORE").await, None);
    let verify = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &restored,
            &"audit",
            &"verify",
            &"--all-signatures",
        ]),
    )
    .await;
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    other.stop_and_check().await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_identity_a_damaged_backup_or_a_used_directory_is_refused_in_one_line_leaving_nothing(
) {
    if crate::common::sqlite_only("backups are of the SQLite file (pg_dump on PostgreSQL)") {
        return;
    }
    let srv = TestServer::start().await;
    let provisioner = srv.operator("pat", "provisioner").await;
    capture(&provisioner, "BAD-1").await;
    let work = tempfile::tempdir().unwrap();
    let (id_path, recipient) = identity(work.path(), "backup.key");
    let (stranger, _) = identity(work.path(), "stranger.key");
    let data = srv.dir.path().join("data");
    let out = work.path().join("vault.age");
    let backup = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &data,
            &"backup",
            &"--out",
            &out,
            &"--recipient",
            &recipient,
        ]),
    )
    .await;
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let again = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &data,
            &"backup",
            &"--out",
            &out,
            &"--recipient",
            &recipient,
        ]),
    )
    .await;
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let bad_recipient = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &data,
            &"backup",
            &"--out",
            &work.path().join("x.age"),
            &"--recipient",
            &"age1nope",
        ]),
    )
    .await;
    assert!(text(&bad_recipient.stderr).contains("is not an age recipient"));
    let plugin = bech32::encode::<bech32::Bech32>(
        bech32::Hrp::parse("age1seedvaultnone").unwrap(),
        &[7u8; 33],
    )
    .unwrap();
    let no_plugin = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &data,
            &"backup",
            &"--out",
            &work.path().join("y.age"),
            &"--recipient",
            &plugin,
        ]),
    )
    .await;
    let message = text(&no_plugin.stderr);
    assert!(
        message.contains("install age-plugin-seedvaultnone"),
        "{message}"
    );
    assert_eq!(message.trim().lines().count(), 1, "{message}");

    let bytes = std::fs::read(&out).unwrap();
    let tampered = work.path().join("tampered.age");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    std::fs::write(&tampered, flipped).unwrap();
    let truncated = work.path().join("truncated.age");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let other = TestServer::start().await;
    let other_data = other.dir.path().join("data");
    let used = work.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("something"), "x").unwrap();

    let target = work.path().join("target");
    for (file, key, dir, expected) in [
        (&out, &stranger, &target, "no identity opens this backup"),
        (&tampered, &id_path, &target, "damaged or truncated"),
        (&truncated, &id_path, &target, "damaged or truncated"),
        (&out, &id_path, &used, "is not empty"),
        (&out, &id_path, &data, "is not empty"),
        (&out, &id_path, &other_data, "already holds vault"),
    ] {
        let refused = seedvault(
            work.path(),
            args(&[&"--data-dir", dir, &"restore", file, &"--identity", key]),
        )
        .await;
        assert!(!refused.status.success(), "{expected}");
        let message = text(&refused.stderr);
        assert!(message.contains(expected), "{expected}: {message}");
        assert_eq!(message.trim().lines().count(), 1, "{message}");
        assert!(!target.exists(), "{expected}");
        assert_eq!(leftovers(work.path()), Vec::<String>::new(), "{expected}");
    }
    other.stop_and_check().await;
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_downloads_a_backup_over_the_api_and_others_may_not() {
    if crate::common::sqlite_only("backups are of the SQLite file (pg_dump on PostgreSQL)") {
        return;
    }
    let srv = TestServer::start().await;
    let admin = srv.operator("ada", "admin").await;
    let provisioner = srv.operator("pat", "provisioner").await;
    capture(&provisioner, "API-1").await;
    let work = tempfile::tempdir().unwrap();
    let (id_path, recipient) = identity(work.path(), "backup.key");
    let (status, _) = provisioner
        .post("/api/v1/backups", json!({ "recipients": [recipient] }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = admin
        .post("/api/v1/backups", json!({ "recipients": ["not-a-key"] }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = admin.post("/api/v1/backups", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["message"].as_str().unwrap().contains("--recipient"));

    // A full disk: refused with 507, and no temporary file stays behind.
    srv.state.store.simulate_full_disk(true);
    let (status, body) = admin
        .post("/api/v1/backups", json!({ "recipients": [recipient] }))
        .await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(
        leftovers(&srv.dir.path().join("data")),
        Vec::<String>::new()
    );
    srv.state.store.simulate_full_disk(false);

    let response = admin
        .raw_response("/api/v1/backups", json!({ "recipients": [recipient] }))
        .await;
    assert_eq!(response.0, StatusCode::OK);
    let file = work.path().join("download.age");
    std::fs::write(&file, &response.1).unwrap();
    let restored = work.path().join("restored");
    let output = seedvault(
        work.path(),
        args(&[
            &"--data-dir",
            &restored,
            &"restore",
            &file,
            &"--identity",
            &id_path,
        ]),
    )
    .await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(seed_in(&restored, "API-1").await, Some(secret_bytes()));
    assert_eq!(
        leftovers(&srv.dir.path().join("data")),
        Vec::<String>::new()
    );
    srv.stop_and_check().await;
}
