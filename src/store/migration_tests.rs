//! Upgrades of existing vaults: a database created by an older seedvault, holding seeds,
//! reveals and delivery attempts, keeps every row through the later migrations, and the
//! constraints still hold afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;

use super::{Store, DATABASE_FILE};

/// The migrations that rebuild tables holding data: the `=`/`OR` CHECKs, then the
/// `programming` state (issue #19).
const REBUILDS: [&str; 2] = ["20261130000001", "20261201001901"];

/// Applies only the migrations before `before`, as a vault from that time has them.
async fn old_vault(data_dir: &Path, before: &str) {
    let old = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join("sqlite");
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < before {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(data_dir).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(data_dir.join(DATABASE_FILE))
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    Migrator::new(old.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// How many columns the old table of `row` had: that of the old row with the same id.
fn old_width(before: &[Vec<Vec<String>>; 4], row: &[String]) -> usize {
    before
        .iter()
        .flatten()
        .find(|old| old.first() == row.first() && old.get(1) == row.get(1))
        .map_or(row.len(), Vec::len)
}

fn dump(conn: &rusqlite::Connection, table: &str) -> Vec<Vec<String>> {
    let mut statement = conn
        .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
        .unwrap();
    let columns = statement.column_count();
    statement
        .query_map([], |row| {
            (0..columns)
                .map(|i| Ok(format!("{:?}", row.get_ref(i)?)))
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn an_old_vault_keeps_every_token_reveal_and_attempt_through_the_table_rebuilds() {
    for before in REBUILDS {
        upgrade_keeps_every_row(before).await;
    }
}

async fn upgrade_keeps_every_row(before: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    old_vault(&data_dir, before).await;
    let db = data_dir.join(DATABASE_FILE);
    let tables = ["tokens", "reveals", "delivery_attempts", "operators"];
    let rows_before = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             INSERT INTO operators (id, name, user_handle, roles, created_at)
                 VALUES (1, 'hal', '00000000-0000-4000-8000-000000000001', 'helpdesk', 10);
             INSERT INTO tokens (id, token_id, serial, owner, algorithm, digits, period, policy, state,
                                 sealed_seed, captured_by, captured_at, retention_deadline)
                 VALUES (1, 'a1', 'T-1', 'u@example.org', 'SHA256', 8, 60, 'standard', 'escrowed',
                         x'00112233445566778899', 'cli:root', 100, 200);
             INSERT INTO tokens (id, token_id, serial, algorithm, digits, period, policy, state,
                                 captured_by, captured_at, retention_deadline, delivered_at,
                                 delivered_by, purged_at, purge_reason, drift_steps)
                 VALUES (2, 'a2', '00042', 'SHA1', 6, 30, 'high-risk', 'purged',
                         'operator:pat', 100, 200, 150, 'operator:hal', 150, 'delivered', -1);
             INSERT INTO reveals (id, token_id, operator_id, at) VALUES (7, 1, 1, 120), (8, 2, 1, 130);
             INSERT INTO delivery_attempts (id, token_id, at) VALUES (3, 2, 140);",
        )
        .unwrap();
        tables.map(|t| dump(&conn, t))
    };

    let store = Store::open(&data_dir).await.unwrap();
    store.close().await;

    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    // Later migrations may add columns (NULL in old rows, e.g. 20261202002301's shipping
    // facts): the old columns keep their values and the new ones are empty.
    let rows_after = tables.map(|t| dump(&conn, t)).map(|rows| {
        rows.into_iter()
            .map(|mut row| {
                let added = row.split_off(row.len().min(old_width(&rows_before, &row)));
                assert!(added.iter().all(|v| v == "Null"), "{added:?}");
                row
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(
        rows_after, rows_before,
        "rows changed upgrading from before {before}"
    );
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let dangling: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(dangling, 0);
    // The children point at the rebuilt table: a reveal of a token that does not exist fails.
    assert!(conn
        .execute(
            "INSERT INTO reveals (token_id, operator_id, at) VALUES (99, 1, 1)",
            []
        )
        .is_err());
    // The constraints accept and refuse exactly what they did.
    let insert = |algorithm: &str, state: &str, seed: Option<&[u8]>| {
        conn.execute(
            "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state,
                                 sealed_seed, captured_by, captured_at, retention_deadline)
             VALUES (?1, ?1, ?2, 6, 30, 'standard', ?3, ?4, 'test', 1, 2)",
            rusqlite::params![
                format!("{algorithm}-{state}-{}", seed.is_some()),
                algorithm,
                state,
                seed
            ],
        )
    };
    for algorithm in ["SHA1", "SHA256", "SHA512"] {
        insert(algorithm, "escrowed", Some(b"sealed")).unwrap();
    }
    for state in ["delivered", "cancelled", "expired", "purged"] {
        insert("SHA1", state, None).unwrap();
    }
    assert!(insert("MD5", "escrowed", Some(b"sealed")).is_err());
    assert!(insert("sha1", "escrowed", Some(b"sealed")).is_err());
    assert!(insert("SHA1", "lost", None).is_err());
    assert!(
        insert("SHA1", "escrowed", None).is_err(),
        "escrowed needs a seed"
    );
    assert!(
        insert("SHA1", "purged", Some(b"sealed")).is_err(),
        "no seed once purged"
    );
    // A token being programmed holds its generated seed, like an escrowed one.
    insert("SHA256", "programming", Some(b"sealed")).unwrap();
    assert!(
        insert("SHA512", "programming", None).is_err(),
        "programming needs a seed"
    );
}

/// A vault made before the migrations moved to `migrations/sqlite/` (the fixture was created by
/// sqlx's migrator from the files as they stood in `migrations/` at f64b162, then an operator
/// and two tokens were inserted and the file vacuumed): sqlx
/// compares each applied migration's recorded checksum with the shipped file's, so opening it
/// fails if a moved file changed by a byte.
#[tokio::test]
async fn a_vault_created_before_the_migrations_moved_opens_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vault-before-engine-split.db");
    std::fs::copy(&fixture, dir.path().join(DATABASE_FILE)).unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    store
        .readiness(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let serials: Vec<String> = sqlx::query_scalar("SELECT serial FROM tokens ORDER BY id")
        .fetch_all(store.pool().unwrap())
        .await
        .unwrap();
    assert_eq!(serials, ["T-1", "00042"]);
    store.close().await;
}
