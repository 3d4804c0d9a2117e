//! PostgreSQL: connecting (with errors that name the fix), the engine's migrations
//! (`migrations/postgres/`), the schema of both engines as data, and the bulk copy of a SQLite
//! vault into an empty PostgreSQL database (`seedvault migrate-to-postgres`).
//!
//! The server does not run on PostgreSQL yet: nothing here serves requests. The copy is
//! generic over the schemas (every SQLite table and column must have its PostgreSQL
//! counterpart, so a table added later cannot be skipped silently) and streams each table with
//! `COPY … FROM STDIN` inside one transaction ([`PgTx`]), read from one SQLite snapshot.

use std::path::Path;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row as _, Transaction};

use super::audit::AuditRowRef;
use super::engine::PostgresUrl;
use super::StoreError;

/// The PostgreSQL engine's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLite tables with no PostgreSQL counterpart by design, and why.
pub const NOT_COPIED: [(&str, &str); 3] = [
    ("_sqlx_migrations", "each engine records its own migrations"),
    (
        "sessions",
        "sign-in sessions: operators sign in again after the move",
    ),
    (
        "simulated_full_disk",
        "a test hook's scratch table (store::Store::simulate_full_disk)",
    ),
];

/// Connects to the server `url` names (password from the URL, `password_file`, `PGPASSWORD`
/// or `PGPASSFILE`), with errors that say what to fix.
pub async fn connect(
    url: &PostgresUrl,
    password_file: Option<&Path>,
) -> Result<PgPool, StoreError> {
    connect_pool(url, password_file, 2).await
}

/// [`connect`] with a pool of at most `connections` (the serving store's).
pub async fn connect_pool(
    url: &PostgresUrl,
    password_file: Option<&Path>,
    connections: u32,
) -> Result<PgPool, StoreError> {
    let options = url.connect_options(password_file)?;
    // One plain connection first: the pool retries a refused connection until its timeout and
    // then reports only the timeout, not why (refused, wrong password, no such database).
    let first = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
        .await
        .map_err(|e| explain(e, url))?;
    let _ = sqlx::Connection::close(first).await;
    PgPoolOptions::new()
        .max_connections(connections.max(1))
        .acquire_timeout(Duration::from_secs(15))
        .connect_with(options)
        .await
        .map_err(|e| explain(e, url))
}

/// A PostgreSQL failure in words that name the fix; never shows the password.
fn explain(e: sqlx::Error, url: &PostgresUrl) -> StoreError {
    let shown = url.redacted();
    let text = match &e {
        sqlx::Error::Io(io) => format!(
            "cannot reach the PostgreSQL server of {shown}: {io} — check that it runs and listens on that host and port, and that no firewall is in the way"
        ),
        sqlx::Error::PoolTimedOut => format!(
            "no connection to the PostgreSQL server of {shown} within 15 s — check the host, port and firewall"
        ),
        sqlx::Error::Tls(tls) => format!(
            "TLS to the PostgreSQL server of {shown} failed: {tls} — check sslmode and the server's certificate (verify-full needs a certificate for that host name, trusted by this machine)"
        ),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("28P01") => format!(
                "PostgreSQL refused the password for {shown}: {} — check the password in the URL, in database_password_file or in PGPASSFILE",
                db.message()
            ),
            Some("28000") => format!(
                "PostgreSQL does not let this client in ({}) for {shown} — add a pg_hba.conf line for this host and user, or check sslmode",
                db.message()
            ),
            Some("3D000") => format!(
                "the database of {shown} does not exist — create it first (createdb -O USER DATABASE)"
            ),
            _ => format!("PostgreSQL error on {shown}: {}", db.message()),
        },
        other => format!("PostgreSQL error on {shown}: {other}"),
    };
    StoreError::Postgres(text)
}

fn pg(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => StoreError::Postgres(format!(
            "PostgreSQL refused the copy: {}{}",
            db.message(),
            db.constraint()
                .map(|c| format!(" (constraint {c})"))
                .unwrap_or_default()
        )),
        _ => StoreError::Postgres(format!("PostgreSQL error: {e}")),
    }
}

/// A PostgreSQL transaction: everything written through it lands together at
/// [`PgTx::commit`], or not at all (dropping it rolls back).
pub struct PgTx {
    tx: Transaction<'static, Postgres>,
}

impl PgTx {
    /// Migrates the database to this version's schema and opens a transaction on it whose
    /// foreign keys are checked at commit (so tables can be filled in any order).
    pub async fn begin(pool: &PgPool) -> Result<Self, StoreError> {
        MIGRATOR.run(pool).await.map_err(|e| {
            StoreError::Postgres(format!(
                "cannot create seedvault's tables on the target: {e} — migrate into an empty database of its own (createdb -O USER DATABASE)"
            ))
        })?;
        let mut tx = pool.begin().await.map_err(pg)?;
        sqlx::query("SET CONSTRAINTS ALL DEFERRED")
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        Ok(Self { tx })
    }

    /// A plain write transaction on a migrated database (foreign keys checked per
    /// statement): what the table modules ported to PostgreSQL write through.
    pub async fn write(pool: &PgPool) -> Result<Self, StoreError> {
        Ok(Self {
            tx: pool.begin().await.map_err(pg)?,
        })
    }

    /// The transaction's connection, for the table modules ([`super::Db`]).
    pub(super) fn connection(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Checks the deferred foreign keys now, then commits.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("SET CONSTRAINTS ALL IMMEDIATE")
            .execute(&mut *self.tx)
            .await
            .map_err(pg)?;
        self.tx.commit().await.map_err(pg)
    }
}

/// A table and its columns as an engine declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableShape {
    pub name: String,
    pub columns: Vec<ColumnShape>,
}

/// A column: its name, declared type (lower case) and whether it refuses NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnShape {
    pub name: String,
    pub type_name: String,
    pub not_null: bool,
}

/// The PostgreSQL type a SQLite declared type is stored as.
pub fn postgres_type_for(sqlite_type: &str) -> Option<&'static str> {
    match sqlite_type.to_ascii_uppercase().as_str() {
        "INTEGER" => Some("bigint"),
        "BLOB" => Some("bytea"),
        "TEXT" => Some("text"),
        _ => None,
    }
}

/// The tables of the SQLite database on `conn` (without SQLite's own `sqlite_*` tables).
pub fn sqlite_shapes(conn: &rusqlite::Connection) -> Result<Vec<TableShape>, StoreError> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    names
        .into_iter()
        .map(|name| {
            let columns = conn
                .prepare(
                    "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1) ORDER BY cid",
                )?
                .query_map([&name], |r| {
                    let type_name: String = r.get(1)?;
                    let pk: i64 = r.get(3)?;
                    // An INTEGER PRIMARY KEY is the rowid: never NULL, whatever it declares.
                    let rowid = pk > 0 && type_name.eq_ignore_ascii_case("INTEGER");
                    Ok(ColumnShape {
                        name: r.get(0)?,
                        not_null: r.get::<_, i64>(2)? != 0 || rowid,
                        type_name: type_name.to_ascii_lowercase(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(TableShape { name, columns })
        })
        .collect()
}

/// The tables of the PostgreSQL database in the transaction's current schema (without sqlx's
/// `_sqlx_migrations`).
pub async fn postgres_shapes(tx: &mut PgTx) -> Result<Vec<TableShape>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
           AND c.table_name <> '_sqlx_migrations'
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(&mut *tx.tx)
    .await
    .map_err(pg)?;
    let mut tables: Vec<TableShape> = Vec::new();
    for row in rows {
        let table: String = row.get(0);
        let column = ColumnShape {
            name: row.get(1),
            type_name: row.get::<String, _>(2).to_ascii_lowercase(),
            not_null: row.get::<String, _>(3) == "NO",
        };
        match tables.last_mut() {
            Some(last) if last.name == table => last.columns.push(column),
            _ => tables.push(TableShape {
                name: table,
                columns: vec![column],
            }),
        }
    }
    Ok(tables)
}

/// Why the SQLite tables cannot all be copied into the PostgreSQL ones, each line naming the
/// table and column (empty when they can).
pub fn schema_mismatches(sqlite: &[TableShape], postgres: &[TableShape]) -> Vec<String> {
    let mut problems = Vec::new();
    for table in sqlite {
        if NOT_COPIED.iter().any(|(name, _)| *name == table.name) {
            continue;
        }
        let Some(target) = postgres.iter().find(|t| t.name == table.name) else {
            problems.push(format!(
                "table {} has no PostgreSQL counterpart",
                table.name
            ));
            continue;
        };
        for column in &table.columns {
            let Some(other) = target.columns.iter().find(|c| c.name == column.name) else {
                problems.push(format!(
                    "column {}.{} has no PostgreSQL counterpart",
                    table.name, column.name
                ));
                continue;
            };
            if postgres_type_for(&column.type_name) != Some(other.type_name.as_str()) {
                problems.push(format!(
                    "column {}.{} is {} on SQLite but {} on PostgreSQL",
                    table.name, column.name, column.type_name, other.type_name
                ));
            }
            if column.not_null != other.not_null {
                problems.push(format!(
                    "column {}.{} is {} on SQLite but {} on PostgreSQL",
                    table.name,
                    column.name,
                    if column.not_null {
                        "NOT NULL"
                    } else {
                        "nullable"
                    },
                    if other.not_null {
                        "NOT NULL"
                    } else {
                        "nullable"
                    },
                ));
            }
        }
    }
    problems
}

/// Rows in the target's tables: a copy goes only into an empty database.
pub async fn non_empty_tables(tx: &mut PgTx) -> Result<Vec<(String, i64)>, StoreError> {
    let mut found = Vec::new();
    for table in postgres_shapes(tx).await? {
        let rows = count_rows(tx, &table.name).await?;
        if rows > 0 {
            found.push((table.name, rows));
        }
    }
    Ok(found)
}

/// The number of rows in `table` (a name from [`postgres_shapes`]).
pub async fn count_rows(tx: &mut PgTx, table: &str) -> Result<i64, StoreError> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM \"{table}\""))
        .fetch_one(&mut *tx.tx)
        .await
        .map_err(pg)
}

/// How far a copy is: `table`, rows sent so far of `total`.
#[derive(Debug, Clone)]
pub struct CopyProgress<'a> {
    pub table: &'a str,
    pub copied: u64,
    pub total: u64,
}

/// What was copied of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: String,
    /// Rows in the SQLite snapshot.
    pub source_rows: u64,
    /// Rows PostgreSQL reported for the `COPY`.
    pub copied_rows: u64,
}

/// What the reading thread hands the `COPY`.
enum Piece {
    Table {
        name: String,
        columns: Vec<String>,
        total: u64,
    },
    Rows(Vec<u8>, u64),
    Done,
    Failed(StoreError),
}

/// Bytes of `COPY` text sent at a time.
const CHUNK: usize = 1 << 20;

/// Copies every table of the SQLite database at `db_path` (one read snapshot) into the empty
/// PostgreSQL database of `tx`, table by table with `COPY … FROM STDIN`, then moves each
/// identity column past its largest copied id. Refuses, before writing anything, a source
/// whose schema the target lacks (naming every table and column) and a non-empty target.
pub async fn copy_from_sqlite(
    tx: &mut PgTx,
    db_path: &Path,
    progress: &mut (dyn FnMut(CopyProgress<'_>) + Send),
) -> Result<Vec<TableCopy>, StoreError> {
    let target = postgres_shapes(tx).await?;
    let non_empty = non_empty_tables(tx).await?;
    if let Some((table, rows)) = non_empty.first() {
        return Err(StoreError::Postgres(format!(
            "the target database is not empty (table {table} holds {rows} rows) — migrate into a new, empty database (createdb -O USER DATABASE); nothing was written"
        )));
    }
    let (send, mut receive) = tokio::sync::mpsc::channel::<Piece>(4);
    let path = db_path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        if let Err(e) = read_tables(&path, &target, &send) {
            let _ = send.blocking_send(Piece::Failed(e));
        }
    });
    let outcome = copy_pieces(tx, &mut receive, progress).await;
    drop(receive);
    let _ = reader.await;
    let copies = outcome?;
    reset_identities(tx).await?;
    Ok(copies)
}

/// Feeds the reader's pieces into one `COPY` per table.
async fn copy_pieces(
    tx: &mut PgTx,
    receive: &mut tokio::sync::mpsc::Receiver<Piece>,
    progress: &mut (dyn FnMut(CopyProgress<'_>) + Send),
) -> Result<Vec<TableCopy>, StoreError> {
    let mut copies = Vec::new();
    let mut next = receive.recv().await;
    loop {
        match next.take() {
            Some(Piece::Table {
                name,
                columns,
                total,
            }) => {
                progress(CopyProgress {
                    table: &name,
                    copied: 0,
                    total,
                });
                let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
                let statement = format!("COPY \"{name}\" ({}) FROM STDIN", quoted.join(", "));
                // A COPY left unfinished on an error is failed by sqlx when dropped, and the
                // transaction rolls back with it.
                let mut copy = tx.tx.copy_in_raw(&statement).await.map_err(pg)?;
                let mut copied = 0;
                loop {
                    match receive.recv().await {
                        Some(Piece::Rows(bytes, rows)) => {
                            copy.send(bytes).await.map_err(pg)?;
                            copied += rows;
                            progress(CopyProgress {
                                table: &name,
                                copied,
                                total,
                            });
                        }
                        other => {
                            let copied_rows = copy.finish().await.map_err(pg)?;
                            copies.push(TableCopy {
                                table: name,
                                source_rows: total,
                                copied_rows,
                            });
                            next = other;
                            break;
                        }
                    }
                }
            }
            Some(Piece::Done) => return Ok(copies),
            Some(Piece::Failed(e)) => return Err(e),
            Some(Piece::Rows(..)) => {
                return Err(StoreError::Postgres(
                    "rows arrived before their table".into(),
                ))
            }
            None => {
                return Err(StoreError::Postgres(
                    "the SQLite reader stopped without finishing".into(),
                ))
            }
        }
    }
}

/// Moves every identity column's sequence past the largest id copied into it, so that rows
/// inserted later get fresh ids.
async fn reset_identities(tx: &mut PgTx) -> Result<(), StoreError> {
    let identities: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = current_schema() AND is_identity = 'YES'",
    )
    .fetch_all(&mut *tx.tx)
    .await
    .map_err(pg)?;
    for (table, column) in identities {
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence($1, $2), coalesce((SELECT max(\"{column}\") FROM \"{table}\"), 0) + 1, false)"
        ))
        .bind(format!("\"{table}\""))
        .bind(&column)
        .execute(&mut *tx.tx)
        .await
        .map_err(pg)?;
    }
    Ok(())
}

/// Opens the SQLite database read-only, checks its schema against the target's, and sends
/// every copied table's rows as `COPY` text, all from one read transaction (one snapshot).
fn read_tables(
    path: &Path,
    target: &[TableShape],
    send: &tokio::sync::mpsc::Sender<Piece>,
) -> Result<(), StoreError> {
    let conn = super::snapshot::open_query_only(path)?;
    conn.execute_batch("BEGIN")?;
    let applied: i64 = conn.query_row(
        "SELECT count(*) FROM _sqlx_migrations WHERE success = 1",
        [],
        |r| r.get(0),
    )?;
    let shipped = super::SQLITE_MIGRATOR.iter().count() as i64;
    if applied < shipped {
        return Err(StoreError::Postgres(format!(
            "the SQLite vault has {applied} of this version's {shipped} migrations — start this version of seedvault on it once (e.g. `seedvault status --data-dir DIR`) so that it migrates, then retry"
        )));
    }
    let source = sqlite_shapes(&conn)?;
    let problems = schema_mismatches(&source, target);
    if !problems.is_empty() {
        return Err(StoreError::Postgres(format!(
            "the PostgreSQL schema does not match the SQLite vault: {} — the target must be migrated by this same seedvault version (an empty database is), nothing was written",
            problems.join("; ")
        )));
    }
    let closed = || StoreError::Postgres("the copy stopped".into());
    for table in source
        .iter()
        .filter(|t| !NOT_COPIED.iter().any(|(name, _)| *name == t.name))
    {
        let Some(shape) = target.iter().find(|t| t.name == table.name) else {
            continue;
        };
        let kinds: Vec<Kind> = table
            .columns
            .iter()
            .map(|c| {
                match shape
                    .columns
                    .iter()
                    .find(|p| p.name == c.name)
                    .map(|p| p.type_name.as_str())
                {
                    Some("bigint") => Kind::Integer,
                    Some("bytea") => Kind::Bytes,
                    _ => Kind::Text,
                }
            })
            .collect();
        let total: i64 = conn.query_row(
            &format!("SELECT count(*) FROM \"{}\"", table.name),
            [],
            |r| r.get(0),
        )?;
        let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        send.blocking_send(Piece::Table {
            name: table.name.clone(),
            columns: names.clone(),
            total: total as u64,
        })
        .map_err(|_| closed())?;
        let list: Vec<String> = names.iter().map(|c| format!("\"{c}\"")).collect();
        let mut statement = conn.prepare(&format!(
            "SELECT {} FROM \"{}\" ORDER BY rowid",
            list.join(", "),
            table.name
        ))?;
        let mut rows = statement.query([])?;
        let mut buffer = Vec::with_capacity(CHUNK + 4096);
        let mut in_buffer = 0u64;
        let mut number = 0u64;
        while let Some(row) = rows.next()? {
            number += 1;
            for (i, kind) in kinds.iter().enumerate() {
                if i > 0 {
                    buffer.push(b'\t');
                }
                encode(&mut buffer, row.get_ref(i)?, *kind).map_err(|why| {
                    StoreError::Postgres(format!(
                        "row {number} of {}, column {}: {why} — nothing was written",
                        table.name, names[i]
                    ))
                })?;
            }
            buffer.push(b'\n');
            in_buffer += 1;
            if buffer.len() >= CHUNK {
                let full = std::mem::replace(&mut buffer, Vec::with_capacity(CHUNK + 4096));
                send.blocking_send(Piece::Rows(full, in_buffer))
                    .map_err(|_| closed())?;
                in_buffer = 0;
            }
        }
        if !buffer.is_empty() {
            send.blocking_send(Piece::Rows(buffer, in_buffer))
                .map_err(|_| closed())?;
        }
    }
    send.blocking_send(Piece::Done).map_err(|_| closed())?;
    Ok(())
}

/// How a column is written in `COPY` text on the PostgreSQL side.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Integer,
    Bytes,
    Text,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends one value in `COPY` text format (`\N` for NULL, backslash escapes, `\\x` hex for
/// bytea), refusing what the PostgreSQL column cannot hold.
fn encode(
    out: &mut Vec<u8>,
    value: rusqlite::types::ValueRef<'_>,
    kind: Kind,
) -> Result<(), String> {
    use rusqlite::types::ValueRef;
    match (value, kind) {
        (ValueRef::Null, _) => out.extend_from_slice(b"\\N"),
        (ValueRef::Integer(n), Kind::Integer | Kind::Text) => {
            out.extend_from_slice(n.to_string().as_bytes())
        }
        (ValueRef::Blob(bytes), Kind::Bytes) => {
            out.extend_from_slice(b"\\\\x");
            for byte in bytes {
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
        }
        (ValueRef::Text(bytes), Kind::Text) => {
            std::str::from_utf8(bytes).map_err(|_| "text that is not UTF-8".to_owned())?;
            for &byte in bytes {
                match byte {
                    0 => {
                        return Err(
                            "text holding a NUL character, which PostgreSQL cannot store".into(),
                        )
                    }
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    other => out.push(other),
                }
            }
        }
        (other, kind) => {
            return Err(format!(
                "a {:?} value where PostgreSQL expects {kind:?}",
                other.data_type()
            ))
        }
    }
    Ok(())
}

/// The audit trail as copied, oldest first, each event handed to `each` until it returns
/// `false`.
pub async fn scan_audit(
    tx: &mut PgTx,
    mut each: impl FnMut(&AuditRowRef<'_>) -> bool,
) -> Result<(), StoreError> {
    let mut rows = sqlx::query(
        "SELECT seq, time, actor, action, target, outcome, details, prev_hash, hash, sig FROM audit_events ORDER BY seq",
    )
    .fetch(&mut *tx.tx);
    while let Some(row) = rows.try_next().await.map_err(pg)? {
        let event = AuditRowRef {
            seq: row.try_get(0).map_err(pg)?,
            time: row.try_get(1).map_err(pg)?,
            actor: row.try_get(2).map_err(pg)?,
            action: row.try_get(3).map_err(pg)?,
            target: row.try_get(4).map_err(pg)?,
            outcome: row.try_get(5).map_err(pg)?,
            details: row.try_get(6).map_err(pg)?,
            prev_hash: row.try_get(7).map_err(pg)?,
            hash: row.try_get(8).map_err(pg)?,
            sig: row.try_get(9).map_err(pg)?,
        };
        if !each(&event) {
            break;
        }
    }
    Ok(())
}

/// The target's vault id and audit public key (`None` without a vault row).
pub async fn vault_identity(tx: &mut PgTx) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    sqlx::query_as("SELECT vault_id, audit_public_key FROM vault_meta WHERE id = 1")
        .fetch_optional(&mut *tx.tx)
        .await
        .map_err(pg)
}

/// Runs one SQL statement as given inside the transaction: for tests that damage what the
/// product never would (a tampered row before verification).
#[cfg(any(test, feature = "test-fixtures"))]
pub async fn execute(tx: &mut PgTx, sql: &str) -> Result<u64, StoreError> {
    Ok(sqlx::raw_sql(sql)
        .execute(&mut *tx.tx)
        .await
        .map_err(pg)?
        .rows_affected())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::str::FromStr as _;

    use super::*;
    use crate::store::{pg_cluster, Store};

    /// Both engines migrated from scratch: the SQLite store in a temporary data directory, and
    /// a fresh database on the test cluster (with a pool on it for autocommit statements).
    async fn both_engines() -> (tempfile::TempDir, Store, PgPool) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let url = pg_cluster::fresh_database().await.unwrap();
        let pool = PgPool::connect_with(sqlx::postgres::PgConnectOptions::from_str(&url).unwrap())
            .await
            .unwrap();
        MIGRATOR.run(&pool).await.unwrap();
        (dir, store, pool)
    }

    #[tokio::test]
    async fn every_sqlite_table_and_column_has_its_postgres_counterpart_with_a_compatible_type() {
        let (_dir, store, pool) = both_engines().await;
        let sqlite = {
            let conn = rusqlite::Connection::open(store.path().unwrap()).unwrap();
            sqlite_shapes(&conn).unwrap()
        };
        let mut tx = PgTx {
            tx: pool.begin().await.unwrap(),
        };
        let postgres = postgres_shapes(&mut tx).await.unwrap();
        assert_eq!(schema_mismatches(&sqlite, &postgres), Vec::<String>::new());
        // And nothing on PostgreSQL that SQLite lacks: the two schemas are one.
        let sqlite_tables: Vec<&str> = sqlite.iter().map(|t| t.name.as_str()).collect();
        for table in &postgres {
            assert!(
                sqlite_tables.contains(&table.name.as_str()),
                "{} only on PostgreSQL",
                table.name
            );
            let source = sqlite.iter().find(|t| t.name == table.name).unwrap();
            assert_eq!(table.columns.len(), source.columns.len(), "{}", table.name);
        }
        // The comparison itself notices a missing table and a type or nullability change.
        let mut broken = postgres.clone();
        broken.retain(|t| t.name != "outbox");
        broken[0].columns[0].not_null = !broken[0].columns[0].not_null;
        let problems = schema_mismatches(&sqlite, &broken);
        assert!(
            problems
                .iter()
                .any(|p| p == "table outbox has no PostgreSQL counterpart"),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("NOT NULL")),
            "{problems:?}"
        );
    }

    /// Rows that break exactly one rule (CHECK, NOT NULL, UNIQUE, foreign key, append-only
    /// trigger); `{blob}` stands for a short blob literal in each engine's syntax.
    const REFUSED: &[&str] = &[
        "INSERT INTO vault_meta (id, vault_id, created_at, key_check, audit_signing_key, audit_public_key) VALUES (2, 'v', 1, {blob}, {blob}, {blob})",
        "INSERT INTO key_slots (kind, label, wrapped_key, created_at) VALUES ('magic', 'k1', {blob}, 1)",
        "INSERT INTO key_slots (kind, label, wrapped_key, created_at) VALUES ('development', 'k2', {blob}, 1)",
        "INSERT INTO key_slots (kind, label, wrapped_key, development_identity, created_at) VALUES ('passphrase', 'k3', {blob}, 'AGE-SECRET-KEY-1', 1)",
        "INSERT INTO key_rotation (id, generation, next_key, started_at, started_by) VALUES (2, 1, {blob}, 1, 'x')",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b1', 'B1', 'MD5', 6, 30, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b2', 'B2', 'sha1', 6, 30, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b3', 'B3', 'SHA1', 7, 30, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b4', 'B4', 'SHA1', 6, 0, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b5', 'B5', 'SHA1', 6, 3601, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, captured_by, captured_at, retention_deadline) VALUES ('b6', 'B6', 'SHA1', 6, 30, 'standard', 'lost', 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, captured_by, captured_at, retention_deadline) VALUES ('b7', 'B7', 'SHA1', 6, 30, 'standard', 'escrowed', 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, captured_by, captured_at, retention_deadline) VALUES ('b8', 'B8', 'SHA1', 6, 30, 'standard', 'programming', 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b9', 'B9', 'SHA1', 6, 30, 'standard', 'purged', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (token_id, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b10', 'SHA1', 6, 30, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES ('b11', 'OK-1', 'SHA1', 6, 30, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO operators (name, user_handle, roles, disabled, created_at) VALUES ('o2', 'h2', 'helpdesk', 2, 1)",
        "INSERT INTO reveals (token_id, operator_id, at) VALUES (99, 1, 1)",
        "INSERT INTO delivery_attempts (token_id, at) VALUES (99, 1)",
        "INSERT INTO siem_cursors (sink, acked_seq, updated_at) VALUES ('s', -1, 1)",
        "INSERT INTO directory_entries (owner, source, synced_at) VALUES ('x@example.org', 'ad', 1)",
        "INSERT INTO directory_entries (owner, source, synced_at) VALUES ('OK@Example.org', 'csv', 1)",
        "INSERT INTO directory_syncs (source, outcome, message, at) VALUES ('csv', 'maybe', 'm', 1)",
        "INSERT INTO outbox (kind, serial, owner, notify_manager, facts, created_at, next_attempt_at) VALUES ('reveal', 'S', 'o', 2, '{}', 1, 1)",
        "INSERT INTO outbox (kind, serial, owner, facts, created_at, state, next_attempt_at) VALUES ('reveal', 'S', 'o', '{}', 1, 'queued', 1)",
        "INSERT INTO delivery_links (token_id, link_hash, created_by, created_at, expires_at, state) VALUES (1, {blob}, 'c', 1, 2, 'gone')",
        "INSERT INTO approvals (token_id, requester_id, policy, policy_hash, checks, binding, status, created_at, expires_at) VALUES (1, 1, 'p', 'h', '[]', 'b', 'granted', 1, 2)",
        "INSERT INTO approvals (token_id, requester_id, policy, policy_hash, checks, binding, status, created_at, expires_at, decision) VALUES (1, 1, 'p', 'h', '[]', 'b', 'approved', 1, 2, 'maybe')",
        "INSERT INTO token_programming (token_id, generated_by) VALUES (99, 'g')",
        "UPDATE audit_events SET actor = 'mallory'",
        "DELETE FROM audit_events",
    ];

    /// What each engine must accept first: the rows the refused ones collide with or point at.
    const ACCEPTED: &[&str] = &[
        "INSERT INTO operators (id, name, user_handle, roles, created_at) VALUES (1, 'o1', 'h1', 'helpdesk', 1)",
        "INSERT INTO tokens (id, token_id, serial, algorithm, digits, period, policy, state, sealed_seed, captured_by, captured_at, retention_deadline) VALUES (1, 'a1', 'OK-1', 'SHA1', 6, 30, 'standard', 'escrowed', {blob}, 't', 1, 2)",
        "INSERT INTO tokens (id, token_id, serial, algorithm, digits, period, policy, state, captured_by, captured_at, retention_deadline) VALUES (2, 'a2', 'OK-2', 'SHA512', 8, 3600, 'standard', 'purged', 't', 1, 2)",
        "INSERT INTO key_slots (kind, label, wrapped_key, development_identity, created_at) VALUES ('development', 'dev', {blob}, 'AGE-SECRET-KEY-1', 1)",
        "INSERT INTO directory_entries (owner, source, synced_at) VALUES ('ok@example.org', 'ldap', 1)",
        "INSERT INTO audit_events (seq, time, actor, action, target, outcome, details, prev_hash, hash, sig) VALUES (1, 't', 'a', 'x', 't', 'success', '{}', {blob}, {blob}, {blob})",
    ];

    #[tokio::test]
    async fn every_check_refuses_the_same_rows_on_both_engines() {
        let (_dir, store, pool) = both_engines().await;
        let sqlite = rusqlite::Connection::open(store.path().unwrap()).unwrap();
        sqlite.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        let on_sqlite = |sql: &str| sqlite.execute_batch(&sql.replace("{blob}", "x'0011'"));
        let pool = &pool;
        let on_postgres = |sql: &str| {
            let sql = sql.replace("{blob}", "'\\x0011'::bytea");
            async move { sqlx::raw_sql(&sql).execute(pool).await.map(|_| ()) }
        };
        for sql in ACCEPTED {
            on_sqlite(sql).unwrap_or_else(|e| panic!("SQLite refused {sql}: {e}"));
            on_postgres(sql)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL refused {sql}: {e}"));
        }
        for sql in REFUSED {
            assert!(on_sqlite(sql).is_err(), "SQLite accepted {sql}");
            assert!(on_postgres(sql).await.is_err(), "PostgreSQL accepted {sql}");
        }
    }
}
