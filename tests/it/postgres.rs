//! PostgreSQL so far (issue #20, first part): `seedvault migrate-to-postgres` copies a vault
//! and verifies it on a throwaway cluster; a damaged copy is never committed; a postgres
//! database_url is refused by the server with the password nowhere in its output.

use std::path::{Path, PathBuf};
use std::process::Output;

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::Row as _;

use crate::cli::text;
use crate::common::postgres::Database;
use crate::common::{self, TestServer};
use seedvault::store::pg_cluster::Cluster;

const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// Runs the binary in `dir` with `args` and the environment pairs `env`, off the runtime.
async fn seedvault(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut command = crate::cli::seedvault(&dir);
        command.args(&args).envs(env);
        command.output().unwrap()
    })
    .await
    .unwrap()
}

/// A stopped vault with tokens in every stored state (programming, escrowed, purged as
/// delivered and as cancelled), two operators with passkeys, a reveal, a data key rotation and
/// an audit signing key hand-over. Returns the temporary directory and the data directory.
async fn populated_vault() -> (tempfile::TempDir, PathBuf) {
    // The source of a migration is a SQLite vault, whichever engine the suite runs on.
    let srv = TestServer::start_with(seedvault::config::Overrides {
        database_url: Some(String::new()),
        ..Default::default()
    })
    .await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut helpdesk = srv.operator("hal", "helpdesk").await;
    for serial in ["E-1", "E-2", "C-1", "D-1"] {
        let (status, body) =
            common::capture(&provisioner, "ada@example.org", serial, SECRET, json!({})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = helpdesk
        .reveal("E-1", &["callback", "video-id"], Some("INC-1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = provisioner
        .post("/api/v1/tokens/C-1/cancel", json!({ "reason": "lost" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = helpdesk
        .post(
            "/api/v1/tokens/D-1/delivery",
            json!({ "unverified": true, "reason": "display broken" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Not recorded by the canary: the one response that carries a generated seed.
    let (status, body) = provisioner
        .send(
            Method::POST,
            "/api/v1/tokens/generate",
            Some(json!({ "owner": "ada@example.org", "serial": "G-1", "issuer": "Contoso IT" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body:?}");
    let dir = srv.stop_keep_dir().await;
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    for args in [
        &["--data-dir", data_arg, "key", "rotate"][..],
        &["--data-dir", data_arg, "audit", "rotate-signing-key"][..],
    ] {
        let output = seedvault(dir.path(), args, &[]).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    (dir, data)
}

/// Every row of `table` on SQLite, each value rendered the same way as [`pg_rows`] does.
fn sqlite_rows(db: &Path, table: &str, columns: &[String]) -> Vec<Vec<String>> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut statement = conn
        .prepare(&format!(
            "SELECT {} FROM {table} ORDER BY 1",
            columns.join(", ")
        ))
        .unwrap();
    statement
        .query_map([], |row| {
            (0..columns.len())
                .map(|i| {
                    use rusqlite::types::ValueRef;
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => "NULL".to_owned(),
                        ValueRef::Integer(n) => n.to_string(),
                        ValueRef::Real(f) => f.to_string(),
                        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                        ValueRef::Blob(b) => data_encoding::HEXLOWER.encode(b),
                    })
                })
                .collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn pg_rows(pool: &sqlx::PgPool, table: &str, columns: &[String]) -> Vec<Vec<String>> {
    // Every column as text on PostgreSQL's side: bytea as hex, like the SQLite rendering.
    let list: Vec<String> = columns
        .iter()
        .map(|c| {
            format!("CASE WHEN {c} IS NULL THEN 'NULL' WHEN pg_typeof({c}) = 'bytea'::regtype THEN encode({c}::text::bytea, 'hex') ELSE {c}::text END")
        })
        .collect();
    let rows = sqlx::query(&format!(
        "SELECT {} FROM {table} ORDER BY 1",
        list.join(", ")
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    rows.iter()
        .map(|row| {
            (0..columns.len())
                .map(|i| row.get::<String, _>(i))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_to_postgres_copies_every_row_and_verifies_the_audit_chain_on_the_target() {
    let (dir, data) = populated_vault().await;
    let db = Database::fresh().await;
    let password_file = Database::password_file(dir.path());
    let output = seedvault(
        dir.path(),
        &[
            "migrate-to-postgres",
            "--from",
            data.to_str().unwrap(),
            "--to",
            &db.url_without_password(),
        ],
        &[(
            "SEEDVAULT_DATABASE_PASSWORD_FILE",
            password_file.to_str().unwrap(),
        )],
    )
    .await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.starts_with("OK: vault "), "{stdout}");
    assert!(
        stdout.contains("audit chain verified on PostgreSQL"),
        "{stdout}"
    );
    assert!(stderr.contains("copying tokens: 5/5 rows"), "{stderr}");
    assert!(stderr.contains("copying audit_events: "), "{stderr}");

    // Every table the vault has, row for row and byte for byte (sealed seeds, wrapped keys,
    // passkeys, hashes and signatures).
    let source = data.join("seedvault.db");
    let tables: Vec<(String, Vec<String>)> = {
        let conn = rusqlite::Connection::open(&source).unwrap();
        seedvault::store::postgres::sqlite_shapes(&conn)
            .unwrap()
            .into_iter()
            .filter(|t| {
                !seedvault::store::postgres::NOT_COPIED
                    .iter()
                    .any(|(n, _)| *n == t.name)
            })
            .map(|t| (t.name, t.columns.into_iter().map(|c| c.name).collect()))
            .collect()
    };
    assert!(tables.len() >= 17, "{tables:?}");
    let pool = db.pool().await;
    let mut compared = 0;
    for (table, columns) in &tables {
        // Compared as sorted sets of rendered rows (PostgreSQL orders the text renderings).
        let mut expected = sqlite_rows(&source, table, columns);
        expected.sort();
        let mut copied = pg_rows(&pool, table, columns).await;
        copied.sort();
        assert_eq!(copied, expected, "{table}");
        compared += expected.len();
    }
    assert!(compared > 30, "only {compared} rows compared");
    let states: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT state FROM tokens ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(states, ["escrowed", "programming", "purged"]);
    for action in ["key.rotated", "audit.signing_key_rotated", "reveal.granted"] {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = $1")
            .bind(action)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1, "{action}");
    }
    // Ids allocated later continue after the copied ones.
    let max_token: i64 = sqlx::query_scalar("SELECT max(id) FROM tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    let new_token: i64 = sqlx::query_scalar(
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, captured_by, captured_at, retention_deadline)
         VALUES ('new', 'NEW-1', 'SHA1', 6, 30, 'standard', 'purged', 't', 1, 2) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(new_token, max_token + 1);

    // A second run into the same, now full, database is refused and changes nothing.
    let again = seedvault(
        dir.path(),
        &[
            "migrate-to-postgres",
            "--from",
            data.to_str().unwrap(),
            "--to",
            &db.url(),
        ],
        &[],
    )
    .await;
    assert!(!again.status.success());
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("the target database is not empty"),
        "{stderr}"
    );
    assert!(!stderr.contains(Cluster::PASSWORD), "{stderr}");
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tokens, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_audit_row_or_token_row_was_tampered_with_fails_verification_and_is_not_committed(
) {
    let (_dir, data) = populated_vault().await;
    let db = Database::fresh().await;
    let pool = db.pool().await;
    let mut quiet = |_: seedvault::store::postgres::CopyProgress<'_>| {};
    for (damage, expected) in [
        (
            "ALTER TABLE audit_events DISABLE TRIGGER USER;
             UPDATE audit_events SET details = '{\"serial\":\"E-9\"}' WHERE seq = 5;",
            "audit chain broken at seq 5: hash does not match",
        ),
        (
            "DELETE FROM reveals",
            "table reveals has 1 rows in the SQLite vault but 0 on PostgreSQL",
        ),
    ] {
        let mut transfer = seedvault::transfer::copy(&data, &pool, &mut quiet)
            .await
            .unwrap();
        seedvault::store::postgres::execute(transfer.transaction(), damage)
            .await
            .unwrap();
        let refused = transfer.verify().await.unwrap_err().to_string();
        assert!(refused.contains(expected), "{refused}");
        assert!(refused.contains("nothing was committed"), "{refused}");
        drop(transfer);
        let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(tokens, 0, "the damaged copy was rolled back");
    }
    // Undamaged, the same copy verifies.
    let mut transfer = seedvault::transfer::copy(&data, &pool, &mut quiet)
        .await
        .unwrap();
    let report = transfer.verify().await.unwrap();
    assert!(report.events > 10, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_postgres_counterpart_is_refused_by_name() {
    let (dir, data) = populated_vault().await;
    rusqlite::Connection::open(data.join("seedvault.db"))
        .unwrap()
        .execute_batch("CREATE TABLE later_feature (id INTEGER PRIMARY KEY, note TEXT)")
        .unwrap();
    let db = Database::fresh().await;
    let output = seedvault(
        dir.path(),
        &[
            "migrate-to-postgres",
            "--from",
            data.to_str().unwrap(),
            "--to",
            &db.url(),
        ],
        &[],
    )
    .await;
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("table later_feature has no PostgreSQL counterpart"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
}

/// Each failure names its fix, and no output ever shows a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_and_a_postgres_database_url_fail_with_the_fix_and_never_show_the_password() {
    let (dir, data) = populated_vault().await;
    let db = Database::fresh().await;
    let from = data.to_str().unwrap();
    let wrong_password = db.url().replace(Cluster::PASSWORD, "not-the-password-123");
    let unreachable = "postgres://seedvault:hunter2-secret@127.0.0.1:1/db?sslmode=disable";
    let bad_sslmode = "postgres://seedvault:hunter2-secret@127.0.0.1/db?sslmode=sometimes";
    let cases: [(Vec<&str>, &str, &str); 5] = [
        (
            vec!["migrate-to-postgres", "--from", from, "--to", bad_sslmode],
            "sslmode must be one of disable",
            "hunter2-secret",
        ),
        (
            vec![
                "migrate-to-postgres",
                "--from",
                from,
                "--to",
                &wrong_password,
            ],
            "PostgreSQL refused the password",
            "not-the-password-123",
        ),
        (
            vec!["migrate-to-postgres", "--from", from, "--to", unreachable],
            "cannot reach the PostgreSQL server",
            "hunter2-secret",
        ),
        (
            vec![
                "migrate-to-postgres",
                "--from",
                "/nonexistent",
                "--to",
                unreachable,
            ],
            "no vault in /nonexistent",
            "hunter2-secret",
        ),
        (
            vec!["--data-dir", from, "--database-url", unreachable, "serve"],
            "cannot reach the PostgreSQL server",
            "hunter2-secret",
        ),
    ];
    for (args, expected, password) in cases {
        let output = seedvault(dir.path(), &args, &[("SEEDVAULT_LOG", "debug")]).await;
        assert!(!output.status.success(), "{args:?}");
        let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(all.contains(expected), "{args:?}: {all}");
        assert!(
            !all.contains(password),
            "{args:?} shows the password: {all}"
        );
    }
    // The environment variable says the same.
    let output = seedvault(
        dir.path(),
        &["--data-dir", from, "status"],
        &[("SEEDVAULT_DATABASE_URL", unreachable)],
    )
    .await;
    let stderr = text(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("seedvault:***@127.0.0.1:1/db"), "{stderr}");
    assert!(!stderr.contains("hunter2-secret"), "{stderr}");
}

/// With a `postgres://` database_url the commands that run on PostgreSQL work on that
/// database (nothing appears in the data directory), the audit trail verifies and exports from
/// it, and backups are refused naming pg_dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_on_a_postgres_database_url_and_refuses_backups_naming_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh().await;
    let password_file = Database::password_file(dir.path());
    let url = db.url_without_password();
    let env = [
        ("SEEDVAULT_DATABASE_URL", url.as_str()),
        (
            "SEEDVAULT_DATABASE_PASSWORD_FILE",
            password_file.to_str().unwrap(),
        ),
        ("SEEDVAULT_DATA_DIR", "data"),
    ];
    let ok = |output: &Output, what: &str| {
        assert!(
            output.status.success(),
            "{what}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    };
    ok(&seedvault(dir.path(), &["init"], &env).await, "init");
    ok(
        &seedvault(
            dir.path(),
            &["operator", "invite", "bob", "--role", "helpdesk"],
            &env,
        )
        .await,
        "operator invite",
    );
    let verified = ok(
        &seedvault(dir.path(), &["audit", "verify", "--all-signatures"], &env).await,
        "audit verify",
    );
    assert!(verified.starts_with("ok: 2 events verified"), "{verified}");
    let head = ok(
        &seedvault(dir.path(), &["audit", "head"], &env).await,
        "head",
    );
    assert!(head.starts_with("2:"), "{head}");
    ok(
        &seedvault(
            dir.path(),
            &["audit", "export", "--output", "trail.jsonl"],
            &env,
        )
        .await,
        "audit export",
    );
    let exported = std::fs::read_to_string(dir.path().join("trail.jsonl")).unwrap();
    assert!(exported.contains("\"invite.created\""), "{exported}");
    let checked = ok(
        &seedvault(
            dir.path(),
            &["audit", "verify", "--file", "trail.jsonl"],
            &env,
        )
        .await,
        "audit verify --file",
    );
    assert!(checked.contains("ok"), "{checked}");

    let pool = db.pool().await;
    let invites: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM invites")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(invites, 1);
    assert!(
        !dir.path().join("data").join("seedvault.db").exists(),
        "a SQLite database appeared beside a PostgreSQL vault"
    );

    let backup = seedvault(dir.path(), &["backup", "--out", "b.age"], &env).await;
    assert!(!backup.status.success());
    assert!(
        text(&backup.stderr).contains("pg_dump"),
        "{}",
        text(&backup.stderr)
    );
    // The token commands run there too.
    let status = seedvault(dir.path(), &["status"], &env).await;
    assert!(status.status.success(), "{}", text(&status.stderr));
    pool.close().await;
}

/// Run only by the test below, in a process of its own: starts the cluster, says where, fails.
#[tokio::test]
#[ignore = "run by the_cluster_stops_and_its_directory_goes_when_its_test_process_fails"]
async fn starts_the_cluster_and_fails() {
    if std::env::var_os("SEEDVAULT_PG_FAIL_ON_PURPOSE").is_none() {
        return;
    }
    let cluster = seedvault::store::pg_cluster::cluster().unwrap();
    println!("CLUSTER {} {}", cluster.port(), cluster.dir().display());
    panic!("failing on purpose, with the cluster running");
}

#[test]
fn the_cluster_stops_and_its_directory_goes_when_its_test_process_fails() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "postgres::starts_the_cluster_and_fails",
            "--nocapture",
        ])
        .env("SEEDVAULT_PG_FAIL_ON_PURPOSE", "1")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the inner test was meant to fail");
    let stdout = text(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CLUSTER "))
        .unwrap_or_else(|| panic!("{stdout}{}", text(&output.stderr)));
    let (port, dir) = line.split_once(' ').unwrap();
    let (port, dir): (u16, PathBuf) = (port.parse().unwrap(), PathBuf::from(dir));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !listening && !dir.exists() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "30 s after its process ended the cluster still {}",
            if listening {
                "listens"
            } else {
                "has its directory"
            }
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
