//! Storage: the engine (SQLite: a read pool, rusqlite's own read connections ([`readers`]), one
//! write connection, pragmas; PostgreSQL: a pool),
//! migrations, and every query (grouped by table, choosing SQL per engine only where the
//! dialects differ); PostgreSQL's connection, migrations and the bulk copy from SQLite
//! ([`postgres`]). No SQL lives outside this module.

/// Runs `$body` with `$conn` bound to the connection `$db` names, of whichever engine: the
/// same tokens compile once per engine. For queries whose SQL is the same on both, written
/// with `$N` placeholders (sqlx's SQLite driver takes them as it takes `?N`).
macro_rules! on_either {
    ($db:expr, |$conn:ident| $body:expr) => {
        match $crate::store::engine($db).await? {
            $crate::store::Engine::Sqlite(mut $conn) => $body,
            $crate::store::Engine::Postgres(mut $conn) => $body,
        }
    };
}

pub mod approvals;
pub mod audit;
pub mod delivery_links;
pub mod directory;
pub mod engine;
mod group;
pub mod imports;
pub mod key_slots;
pub mod leader;
pub mod meta;
pub mod operators;
pub mod outbox;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod pg_cluster;
pub mod postgres;
mod readers;
pub mod sessions;
pub mod siem;
pub mod snapshot;
pub mod token_pages;
pub mod tokens;
pub mod transient;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction};

/// A write transaction. On SQLite it is opened with `BEGIN IMMEDIATE` so that it holds the
/// write lock from the start (a deferred transaction that reads and then writes can fail with
/// `SQLITE_BUSY` when the CLI writes beside a running server); on PostgreSQL it is a plain
/// `READ COMMITTED` transaction (what must be serialised across instances, the audit head,
/// takes its own lock: [`audit::head_on`]). Pass `&mut tx` to the store's functions; it rolls
/// back when dropped without [`commit`](Self::commit).
///
/// Statements run through sqlx, or on the same connection through [`Self::inline`] (rusqlite
/// on SQLite, sqlx blocking on PostgreSQL); which one is the store's choice per query, never
/// the caller's.
///
/// A write that fails (a full disk, a refused `COMMIT`, a cancelled request) never leaves the
/// SQLite write connection inside a transaction: see [`release_writer`].
pub struct WriteTx {
    tx: EngineTx,
    simulated_full_disk: Arc<AtomicBool>,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// PostgreSQL: the pool to run `VACUUM tokens` on after the commit, once a purge asked
    /// for it ([`Self::vacuum_tokens_after_commit`]).
    vacuum_tokens: Option<PgPool>,
    vacuum_requested: bool,
}

/// The transaction of either engine.
enum EngineTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl WriteTx {
    /// Makes the transaction's writes durable.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if matches!(self.tx, EngineTx::Sqlite(_))
            && self.simulated_full_disk.load(Ordering::Relaxed)
        {
            self.exhaust_space().await?;
        }
        match self.tx {
            EngineTx::Sqlite(tx) => tx.commit().await?,
            EngineTx::Postgres(tx) => tx.commit().await?,
        }
        // Wakes the SIEM forwarders (`Store::commits`); never waits for them.
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
        if let (true, Some(pool)) = (self.vacuum_requested, &self.vacuum_tokens) {
            // A purge's old row versions (its sealed bytes) are dead tuples until vacuumed.
            // VACUUM cannot run inside a transaction, so it runs here, on a pooled connection.
            // The purge is committed whatever happens: a failure is logged, not returned, and
            // autovacuum or the next purge's VACUUM reclaims the tuples.
            if let Err(e) = sqlx::query("VACUUM tokens").execute(pool).await {
                tracing::warn!(error = %e, "VACUUM tokens after a purge failed; autovacuum or the next purge will reclaim the purged row versions");
            }
        }
        Ok(())
    }

    /// Asks the commit to vacuum `tokens` afterwards (a purge on PostgreSQL, `tokens::purge`);
    /// nothing on SQLite, where `secure_delete` zeroes freed space and the sweeper checkpoints.
    pub(crate) fn vacuum_tokens_after_commit(&mut self) {
        self.vacuum_requested = true;
    }

    /// Ends the transaction without keeping its writes (what dropping it does, awaited).
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        match self.tx {
            EngineTx::Sqlite(tx) => tx.rollback().await?,
            EngineTx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// The SQLite connection of this transaction, for what only SQLite does (group commit,
    /// the full-disk hook): on PostgreSQL it answers [`not_on_postgres`] instead of running
    /// SQLite's SQL.
    fn sqlite(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        match &mut self.tx {
            EngineTx::Sqlite(tx) => Ok(tx),
            EngineTx::Postgres(_) => Err(not_on_postgres()),
        }
    }

    /// The test hook behind [`Store::simulate_full_disk`]: grows the database past a page limit
    /// set at its current size, so that SQLite itself fails the transaction with `SQLITE_FULL`
    /// and handles it as on a full disk (it may roll the whole transaction back on its own).
    async fn exhaust_space(&mut self) -> Result<(), StoreError> {
        let tx = self.sqlite()?;
        let limit: i64 = sqlx::query_scalar("PRAGMA max_page_count")
            .fetch_one(&mut *tx)
            .await?;
        // A limit below the current size is raised to it: no page can be added.
        sqlx::query("PRAGMA max_page_count = 1")
            .execute(&mut *tx)
            .await?;
        let mut grown = Ok(());
        for _ in 0..64 {
            grown = sqlx::query("CREATE TABLE IF NOT EXISTS simulated_full_disk (b BLOB)")
                .execute(&mut *tx)
                .await
                .and(
                    sqlx::query("INSERT INTO simulated_full_disk (b) VALUES (zeroblob(1048576))")
                        .execute(&mut *tx)
                        .await,
                )
                .map(|_| ());
            if grown.is_err() {
                break;
            }
        }
        sqlx::query(&format!("PRAGMA max_page_count = {limit}"))
            .execute(&mut *tx)
            .await?;
        Ok(grown?)
    }

    /// Runs `work` on this transaction's connection, held on the calling thread: a run of
    /// short statements (the `_on` functions of the table modules) with one hand-off from
    /// sqlx's worker thread in all, instead of one each. The writes belong to the transaction.
    /// On PostgreSQL see [`on_postgres`] (needs tokio's multi-threaded runtime).
    pub async fn inline<R>(
        &mut self,
        work: impl FnOnce(&Inline<'_>) -> R,
    ) -> Result<R, StoreError> {
        match &mut self.tx {
            EngineTx::Sqlite(tx) => on_rusqlite(tx, work, false).await,
            EngineTx::Postgres(tx) => on_postgres(tx, work),
        }
    }

    /// [`Self::inline`] for long work (bulk inserts): on a multi-threaded runtime the worker
    /// thread's other tasks move elsewhere meanwhile (`block_in_place`).
    async fn inline_long<R>(
        &mut self,
        work: impl FnOnce(&Inline<'_>) -> R,
    ) -> Result<R, StoreError> {
        match &mut self.tx {
            EngineTx::Sqlite(tx) => on_rusqlite(tx, work, true).await,
            EngineTx::Postgres(tx) => on_postgres(tx, work),
        }
    }
}

/// Where a store function runs its query: on the read pool (`&Store`, or a raw pool in tests)
/// or inside a write transaction (`&mut WriteTx`). Every function of the table modules takes
/// `impl Into<Db>`.
pub struct Db<'c>(Source<'c>);

enum Source<'c> {
    /// The store's read side: sqlx's read pool for sqlx queries, rusqlite's own connections
    /// for [`Db::inline`].
    Reads(&'c SqlitePool, &'c readers::Readers),
    Pool(&'c SqlitePool),
    Tx(&'c mut SqliteConnection),
    /// PostgreSQL: the table modules run on it through [`Engine`] (SQLite-only paths answer
    /// [`not_on_postgres`]).
    PgPool(&'c PgPool),
    PgTx(&'c mut PgConnection),
}

impl<'c> From<&'c sqlx::PgPool> for Db<'c> {
    fn from(pool: &'c sqlx::PgPool) -> Self {
        Self(Source::PgPool(pool))
    }
}

impl<'c> From<&'c mut postgres::PgTx> for Db<'c> {
    fn from(tx: &'c mut postgres::PgTx) -> Self {
        Self(Source::PgTx(tx.connection()))
    }
}

/// A connection of either engine, for the table modules that choose SQL per dialect (the
/// pattern for moving the store to PostgreSQL one module at a time; `siem` is the first).
enum Engine<'c> {
    Sqlite(Conn<'c>),
    Postgres(PgConn<'c>),
}

/// A PostgreSQL connection for one store function: checked out of the pool, or borrowed from
/// a transaction.
enum PgConn<'c> {
    Pooled(PoolConnection<sqlx::Postgres>),
    Borrowed(&'c mut sqlx::PgConnection),
}

impl std::ops::Deref for PgConn<'_> {
    type Target = sqlx::PgConnection;

    fn deref(&self) -> &sqlx::PgConnection {
        match self {
            Self::Pooled(conn) => conn,
            Self::Borrowed(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for PgConn<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::PgConnection {
        match self {
            Self::Pooled(conn) => conn,
            Self::Borrowed(conn) => conn,
        }
    }
}

/// The connection `db` names, of whichever engine.
async fn engine<'c>(db: impl Into<Db<'c>>) -> Result<Engine<'c>, StoreError> {
    Ok(match db.into().0 {
        Source::Reads(pool, _) | Source::Pool(pool) => {
            Engine::Sqlite(Conn::Pooled(pool.acquire().await?))
        }
        Source::Tx(conn) => Engine::Sqlite(Conn::Borrowed(conn)),
        Source::PgPool(pool) => Engine::Postgres(PgConn::Pooled(pool.acquire().await?)),
        Source::PgTx(conn) => Engine::Postgres(PgConn::Borrowed(conn)),
    })
}

impl<'c> From<&'c Store> for Db<'c> {
    fn from(store: &'c Store) -> Self {
        Self(match &store.engine {
            StoreEngine::Sqlite(sqlite) => Source::Reads(&sqlite.pool, &sqlite.readers),
            StoreEngine::Postgres(pool) => Source::PgPool(pool),
        })
    }
}

impl<'c> From<&'c SqlitePool> for Db<'c> {
    fn from(pool: &'c SqlitePool) -> Self {
        Self(Source::Pool(pool))
    }
}

impl<'c> From<&'c mut WriteTx> for Db<'c> {
    fn from(tx: &'c mut WriteTx) -> Self {
        Self(match &mut tx.tx {
            EngineTx::Sqlite(tx) => Source::Tx(tx),
            EngineTx::Postgres(tx) => Source::PgTx(tx),
        })
    }
}

impl<'c> Db<'c> {
    /// The connection to run on: one checked out of the pool, or the transaction's.
    async fn conn(self) -> Result<Conn<'c>, StoreError> {
        Ok(match self.0 {
            Source::Reads(pool, _) | Source::Pool(pool) => Conn::Pooled(pool.acquire().await?),
            Source::Tx(conn) => Conn::Borrowed(conn),
            Source::PgPool(_) | Source::PgTx(_) => return Err(not_on_postgres()),
        })
    }

    /// Runs `work` on that connection, on the calling thread (see [`WriteTx::inline`]).
    async fn inline<R>(self, work: impl FnOnce(&Inline<'_>) -> R) -> Result<R, StoreError> {
        if let Source::Reads(_, readers) = self.0 {
            // No await and no hand-off: rusqlite's own connection, on this thread.
            return readers.run(|conn| work(&Inline(InlineConn::Sqlite(conn))));
        }
        match engine(self).await? {
            Engine::Sqlite(mut conn) => on_rusqlite(&mut conn, work, false).await,
            Engine::Postgres(mut conn) => on_postgres(&mut conn, work),
        }
    }
}

/// What a SQLite-only path (group commit, the full-disk hook, the file snapshot) answers when
/// handed a PostgreSQL source; the public entry points refuse earlier with
/// [`sqlite_only`]'s advice, so reaching this is a bug, not a user's mistake.
fn not_on_postgres() -> StoreError {
    StoreError::Postgres("this query is SQLite's alone and does not run on PostgreSQL".into())
}

/// The connection a table module's function runs its sqlx query on.
async fn conn<'c>(db: impl Into<Db<'c>>) -> Result<Conn<'c>, StoreError> {
    db.into().conn().await
}

/// Runs a table module's rusqlite statements on `db`'s connection, on the calling thread.
async fn inline<'c, R>(
    db: impl Into<Db<'c>>,
    work: impl FnOnce(&Inline<'_>) -> R,
) -> Result<R, StoreError> {
    db.into().inline(work).await
}

/// Runs one SQL statement as given: for tests elsewhere in the crate that set up or damage
/// what the product's queries never would (raw SQL stays inside `store`).
#[cfg(test)]
pub(crate) async fn execute(db: impl Into<Db<'_>>, sql: &str) -> Result<u64, StoreError> {
    Ok(sqlx::query(sql)
        .execute(&mut *conn(db).await?)
        .await?
        .rows_affected())
}

/// A connection for one store function: checked out of the pool, or borrowed from a
/// transaction.
enum Conn<'c> {
    Pooled(PoolConnection<Sqlite>),
    Borrowed(&'c mut SqliteConnection),
}

impl std::ops::Deref for Conn<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            Self::Pooled(conn) => conn,
            Self::Borrowed(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            Self::Pooled(conn) => conn,
            Self::Borrowed(conn) => conn,
        }
    }
}

/// A connection held on the calling thread for a run of statements ([`WriteTx::inline`],
/// [`Store::inline`]); the table modules' `_on` functions run on it, matching on
/// [`Inline::on`] where the engines differ.
pub struct Inline<'c>(InlineConn<'c>);

enum InlineConn<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(PgInline<'c>),
}

/// Which engine an [`Inline`] holds, for a table module's `_on` function.
enum On<'a, 'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(&'a PgInline<'c>),
}

impl<'c> Inline<'c> {
    fn on(&self) -> On<'_, 'c> {
        match &self.0 {
            InlineConn::Sqlite(conn) => On::Sqlite(conn),
            InlineConn::Postgres(pg) => On::Postgres(pg),
        }
    }

    /// Runs SQL without parameters on SQLite (a group-commit job's savepoint); on PostgreSQL
    /// [`not_on_postgres`].
    fn execute_sqlite(&self, sql: &str) -> Result<(), StoreError> {
        match &self.0 {
            InlineConn::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            InlineConn::Postgres(_) => Err(not_on_postgres()),
        }
    }

    /// The SQLite connection (tests of SQLite-only behaviour); on PostgreSQL
    /// [`not_on_postgres`].
    #[cfg(test)]
    fn sqlite(&self) -> Result<&'c rusqlite::Connection, StoreError> {
        match &self.0 {
            InlineConn::Sqlite(conn) => Ok(conn),
            InlineConn::Postgres(_) => Err(not_on_postgres()),
        }
    }
}

/// A PostgreSQL connection held inside `tokio::task::block_in_place` ([`on_postgres`]): each
/// statement runs to completion with `Handle::block_on`, the pattern tokio documents for
/// calling async code from a synchronous closure on a multi-threaded runtime. The `RefCell`
/// lends the connection to one statement at a time (the `_on` functions take `&Inline`).
struct PgInline<'c> {
    conn: RefCell<&'c mut PgConnection>,
    handle: tokio::runtime::Handle,
}

impl PgInline<'_> {
    /// Runs a statement; how many rows it changed.
    fn execute(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn.borrow_mut();
        Ok(self
            .handle
            .block_on(query.execute(&mut **conn))?
            .rows_affected())
    }

    /// Every row a query returns, undecoded (for rows wider than sqlx's tuples).
    fn rows(
        &self,
        query: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<sqlx::postgres::PgRow>, StoreError> {
        let mut conn = self.conn.borrow_mut();
        Ok(self.handle.block_on(query.fetch_all(&mut **conn))?)
    }

    /// Every row a query returns.
    fn all<O>(
        &self,
        query: sqlx::query::QueryAs<'_, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<O>, StoreError>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut conn = self.conn.borrow_mut();
        Ok(self.handle.block_on(query.fetch_all(&mut **conn))?)
    }

    /// The first row a query returns, if any.
    fn optional<O>(
        &self,
        query: sqlx::query::QueryAs<'_, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> Result<Option<O>, StoreError>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut conn = self.conn.borrow_mut();
        Ok(self.handle.block_on(query.fetch_optional(&mut **conn))?)
    }

    /// The one row a query returns.
    fn one<O>(
        &self,
        query: sqlx::query::QueryAs<'_, Postgres, O, sqlx::postgres::PgArguments>,
    ) -> Result<O, StoreError>
    where
        O: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut conn = self.conn.borrow_mut();
        Ok(self.handle.block_on(query.fetch_one(&mut **conn))?)
    }
}

/// SQLite's placeholders (`?`, `?NNN`) as PostgreSQL's (`$N`), for the `_on` functions whose
/// SQL is otherwise the same on both engines (no `?` in their literals). Runs on PostgreSQL
/// only; sqlx's statement cache keys on the result, so the statement is still prepared once.
fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '?' {
            out.push(ch);
            continue;
        }
        out.push('$');
        if chars.peek().is_some_and(char::is_ascii_digit) {
            while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                out.push(digit);
            }
        } else {
            next += 1;
            out.push_str(&next.to_string());
        }
    }
    out
}

/// The SQLite engine's migrations (`migrations/sqlite/`; moved there from `migrations/` with
/// names and contents unchanged, so existing vaults' recorded checksums still match).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "seedvault.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data directory {path}: {reason} — check that it exists, is a directory and is writable by this user, or choose another with --data-dir / SEEDVAULT_DATA_DIR")]
    DataDir { path: String, reason: String },
    #[error("the disk holding the data directory is full ({0}) — nothing was written; free space there and retry (no restart needed)")]
    DiskFull(String),
    #[error("the database stayed locked by another writer past the busy timeout ({0}) — another seedvault process (the server or a command) is writing; retry shortly")]
    Busy(String),
    #[error("database error: {0}")]
    Sqlx(sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
    #[error(
        "cannot migrate the database: {0} — the data directory may come from a newer seedvault"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database holds a corrupt value: {0}")]
    Corrupt(String),
    #[error("the write was not committed: {0}")]
    Batch(String),
    /// A PostgreSQL failure, already in words that name the fix (see `postgres::connect`).
    #[error("{0}")]
    Postgres(String),
}

impl From<sqlx::Error> for StoreError {
    /// Sorts out the failures a caller can do something about: a full disk, a lock held by
    /// another process past the busy timeout (or a queue for the write connection that long).
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            // PostgreSQL's SQLSTATEs are not SQLite result codes: never read them as such.
            sqlx::Error::Database(db)
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some() =>
            {
                return Self::Sqlx(e)
            }
            sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()),
            sqlx::Error::PoolTimedOut => return Self::Busy(e.to_string()),
            _ => None,
        };
        match code.map(|c| c & 0xff) {
            Some(rusqlite::ffi::SQLITE_FULL) => Self::DiskFull(e.to_string()),
            Some(rusqlite::ffi::SQLITE_BUSY | rusqlite::ffi::SQLITE_LOCKED) => {
                Self::Busy(e.to_string())
            }
            _ => Self::Sqlx(e),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DiskFull => {
                Self::DiskFull(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                Self::Busy(e.to_string())
            }
            _ => Self::Sqlite(e),
        }
    }
}

impl StoreError {
    /// The same failure once more, for each job of a group-commit batch that shared it: a
    /// full disk or a lock stays recognisable, anything else becomes [`StoreError::Batch`].
    pub(crate) fn shared(&self) -> Self {
        match self {
            Self::DiskFull(detail) => Self::DiskFull(detail.clone()),
            Self::Busy(detail) => Self::Busy(detail.clone()),
            Self::Batch(why) => Self::Batch(why.clone()),
            other => Self::Batch(other.to_string()),
        }
    }

    /// Whether a `UNIQUE` (or primary key) constraint refused the write, through either driver:
    /// the one place that knows how each driver reports it.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Sqlx(sqlx::Error::Database(db)) => db.is_unique_violation(),
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.extended_code,
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            ),
            _ => false,
        }
    }
}

/// The vault database: a pool of connections for reads and a single connection for writes.
///
/// SQLite admits one writer at a time. Letting several pooled connections race for its write
/// lock makes the losers wait in SQLite's busy handler, which sleeps 1, 2, 5, 10, … ms between
/// retries: under concurrent writes most of the time goes to sleeping, and the tail latency to
/// tens or hundreds of milliseconds. Every write in this process therefore goes through one
/// connection, queued fairly by the pool (no busy handler involved); reads never wait for it
/// (WAL). The busy timeout still covers the CLI writing beside a running server.
///
/// On PostgreSQL ([`Store::open_postgres`]) the store is a pool: the server serialises
/// writers itself, and several instances share one database.
#[derive(Clone)]
pub struct Store {
    engine: StoreEngine,
    simulated_full_disk: Arc<AtomicBool>,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
}

#[derive(Clone)]
enum StoreEngine {
    Sqlite(SqliteStore),
    Postgres(PgPool),
}

/// The SQLite engine's parts.
#[derive(Clone)]
struct SqliteStore {
    pool: SqlitePool,
    writer: SqlitePool,
    /// The read side of [`Store::inline`] (`readers`).
    readers: Arc<readers::Readers>,
    group: group::Group,
    path: PathBuf,
}

/// What a SQLite-only operation answers on a PostgreSQL store: `what` cannot be done there,
/// `instead` is how it is done on PostgreSQL.
fn sqlite_only(what: &str, instead: &str) -> StoreError {
    StoreError::Postgres(format!(
        "{what} is a SQLite vault's; this vault is on PostgreSQL — {instead}"
    ))
}

pub use group::GroupTx;

/// How long a write waits for another process's write lock (the CLI beside a running server)
/// before it fails with [`StoreError::Busy`], unless the caller chooses
/// ([`Store::open_with`]).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and runs migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, DEFAULT_BUSY_TIMEOUT).await
    }

    /// [`Store::open`] with the time a write waits for another process's lock.
    pub async fn open_with(data_dir: &Path, busy_timeout: Duration) -> Result<Self, StoreError> {
        let shown = data_dir.display().to_string();
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::DataDir {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        restrict_permissions(data_dir).map_err(|e| StoreError::DataDir {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let path = data_dir.join(DATABASE_FILE);
        restrict_database_files(&path).map_err(|e| StoreError::DataDir {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit (and so its audit event) survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout)
            // Freed pages are zeroed, so a purged seed's bytes do not linger in the file.
            .pragma("secure_delete", "ON");
        let connect = |pool: SqlitePoolOptions| {
            let options = options.clone();
            let shown = shown.clone();
            async move {
                pool
                    // A local SQLite connection cannot go stale; the default ping before every
                    // acquisition is one more hand-off to the connection's worker thread per
                    // query, which on the reveal path costs more than the query itself.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(db) => StoreError::DataDir {
                            path: shown,
                            reason: db.message().to_owned(),
                        },
                        other => other.into(),
                    })
            }
        };
        let writer = connect(
            SqlitePoolOptions::new()
                .max_connections(1)
                .after_release(|conn, _| Box::pin(async move { Ok(release_writer(conn).await) })),
        )
        .await?;
        SQLITE_MIGRATOR.run(&writer).await?;
        let pool = connect(SqlitePoolOptions::new().max_connections(8)).await?;
        Ok(Self::with_engine(StoreEngine::Sqlite(SqliteStore {
            pool,
            writer,
            readers: Arc::new(readers::Readers::new(path.clone(), busy_timeout, false)),
            group: Default::default(),
            path,
        })))
    }

    fn with_engine(engine: StoreEngine) -> Self {
        Self {
            engine,
            simulated_full_disk: Default::default(),
            commits: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// Opens the vault database on the PostgreSQL server `url` names (password as
    /// [`postgres::connect`] finds it) with a pool of `connections`, and runs the engine's
    /// migrations ([`postgres::MIGRATOR`]).
    pub async fn open_postgres(
        url: &engine::PostgresUrl,
        password_file: Option<&Path>,
        connections: u32,
    ) -> Result<Self, StoreError> {
        let pool = postgres::connect_pool(url, password_file, connections).await?;
        postgres::MIGRATOR.run(&pool).await.map_err(|e| {
            StoreError::Postgres(format!(
                "cannot migrate the PostgreSQL database of {url}: {e} — the database may come from a newer seedvault"
            ))
        })?;
        Ok(Self::from_postgres_pool(pool))
    }

    /// A store on an already migrated PostgreSQL pool (tests, and two "instances" on one
    /// database).
    pub fn from_postgres_pool(pool: PgPool) -> Self {
        Self::with_engine(StoreEngine::Postgres(pool))
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.engine, StoreEngine::Postgres(_))
    }

    /// The PostgreSQL pool, when the store is on PostgreSQL: what the state instances share
    /// is kept there too (`shared::Shared::for_store`).
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.engine {
            StoreEngine::Sqlite(_) => None,
            StoreEngine::Postgres(pool) => Some(pool),
        }
    }

    /// The SQLite engine's parts, or the error naming what to do on PostgreSQL.
    fn sqlite(&self, what: &str, instead: &str) -> Result<&SqliteStore, StoreError> {
        match &self.engine {
            StoreEngine::Sqlite(sqlite) => Ok(sqlite),
            StoreEngine::Postgres(_) => Err(sqlite_only(what, instead)),
        }
    }

    /// Test hook: while `full`, every [`WriteTx`] (and so every group-commit batch) fails at
    /// its commit with SQLite's own `SQLITE_FULL`, exactly as when the disk holding the data
    /// directory has no room; `false` is the space freed again. Writes outside a `WriteTx`
    /// (the session store) are not affected, nor PostgreSQL stores (a server's full disk is
    /// the server's to simulate).
    #[doc(hidden)]
    pub fn simulate_full_disk(&self, full: bool) {
        self.simulated_full_disk.store(full, Ordering::Relaxed);
    }

    /// Opens an existing database for reading only: nothing is migrated or chmod-ed and every
    /// write is refused, so an inspection (`doctor`) sees the directory as it is.
    ///
    /// Like [`audit::AuditReader`], the connection is read-write with `query_only` rather than
    /// `SQLITE_OPEN_READONLY`: a read-only connection that had to create the WAL and shm files
    /// (no server running) cannot remove them on close, and run as root it would leave
    /// root-owned files that the service's user cannot open. After [`Store::close`] the
    /// directory holds what it held before.
    pub async fn open_read_only(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        if !path.is_file() {
            return Err(StoreError::DataDir {
                path: data_dir.display().to_string(),
                reason: format!("there is no {DATABASE_FILE} in it"),
            });
        }
        let busy_timeout = Duration::from_secs(10);
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(false)
            .busy_timeout(busy_timeout)
            .pragma("query_only", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Self::with_engine(StoreEngine::Sqlite(SqliteStore {
            writer: pool.clone(),
            pool,
            readers: Arc::new(readers::Readers::new(path.clone(), busy_timeout, true)),
            group: Default::default(),
            path,
        })))
    }

    /// The SQLite read pool, for what runs its own SQL on it (the session store, tests).
    pub fn pool(&self) -> Result<&SqlitePool, StoreError> {
        Ok(&self
            .sqlite(
                "the SQLite read pool",
                "pass the store itself (`&store`) to the store's functions",
            )?
            .pool)
    }

    /// The single SQLite write connection, for writes that are not a [`WriteTx`] (the session
    /// store).
    pub fn writer(&self) -> Result<&SqlitePool, StoreError> {
        Ok(&self
            .sqlite(
                "the SQLite write connection",
                "write through Store::begin_write",
            )?
            .writer)
    }

    /// Path of the SQLite database file (its `-wal` and `-shm` sit beside it).
    pub fn path(&self) -> Result<&Path, StoreError> {
        Ok(&self
            .sqlite(
                "the database file",
                "read the trail through the store's functions, and back up the database with pg_dump",
            )?
            .path)
    }

    /// Where blocking walks over the whole audit trail read it ([`audit::AuditReader`]: verify,
    /// export, the SIEM forwarder): the SQLite file, or this store's PostgreSQL pool. Call
    /// inside the runtime (a PostgreSQL reader drives the pool's connections through it).
    pub fn audit_source(&self) -> Result<audit::AuditSource, StoreError> {
        match &self.engine {
            StoreEngine::Sqlite(sqlite) => Ok(audit::AuditSource::sqlite(&sqlite.path)),
            StoreEngine::Postgres(pool) => audit::AuditSource::postgres(pool.clone()),
        }
    }

    /// Starts a write transaction: on SQLite one that holds the write lock.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let tx = match &self.engine {
            StoreEngine::Sqlite(sqlite) => {
                EngineTx::Sqlite(sqlite.writer.begin_with("BEGIN IMMEDIATE").await?)
            }
            StoreEngine::Postgres(pool) => EngineTx::Postgres(pool.begin().await?),
        };
        Ok(WriteTx {
            tx,
            simulated_full_disk: self.simulated_full_disk.clone(),
            commits: self.commits.clone(),
            vacuum_tokens: match &self.engine {
                StoreEngine::Sqlite(_) => None,
                StoreEngine::Postgres(pool) => Some(pool.clone()),
            },
            vacuum_requested: false,
        })
    }

    /// Changes with every write this process commits: what the SIEM forwarders wait on instead
    /// of polling (a commit only bumps a counter; it never waits for a forwarder).
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Why the database cannot take writes right now, if it cannot: a write transaction must
    /// start within `within` (another writer holding the lock longer means not ready), and
    /// every migration this binary ships must be applied.
    pub async fn readiness(&self, within: Duration) -> Result<(), String> {
        // `WHERE success`: an integer on SQLite, a boolean on PostgreSQL.
        const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";
        let (applied, migrator): (Result<Vec<i64>, _>, _) = match &self.engine {
            StoreEngine::Sqlite(sqlite) => (
                sqlx::query_scalar(APPLIED).fetch_all(&sqlite.pool).await,
                &SQLITE_MIGRATOR,
            ),
            StoreEngine::Postgres(pool) => (
                sqlx::query_scalar(APPLIED).fetch_all(pool).await,
                &postgres::MIGRATOR,
            ),
        };
        let applied = applied.map_err(|e| format!("cannot read the applied migrations: {e}"))?;
        let missing = migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count();
        if missing > 0 {
            return Err(format!(
                "{missing} migration(s) of this version are not applied — restart seedvault so that it migrates the database"
            ));
        }
        match tokio::time::timeout(within, self.begin_write()).await {
            // Dropping the transaction rolls it back: nothing is written.
            Ok(Ok(tx)) => {
                drop(tx);
                Ok(())
            }
            Ok(Err(e)) => Err(format!("the database does not take writes: {e}")),
            Err(_) => Err(format!(
                "no write transaction could start within {} ms (another writer holds the lock)",
                within.as_millis()
            )),
        }
    }

    /// Runs `work` on a pooled read connection held on the calling thread: several short reads
    /// with one hand-off in all (see [`WriteTx::inline`]; on PostgreSQL, [`on_postgres`]).
    pub async fn inline<R>(&self, work: impl FnOnce(&Inline<'_>) -> R) -> Result<R, StoreError> {
        Db::from(self).inline(work).await
    }

    /// A trivial query: proves the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.engine {
            StoreEngine::Sqlite(sqlite) => {
                sqlx::query("SELECT 1").execute(&sqlite.pool).await?;
            }
            StoreEngine::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Starts a write that shares its transaction, and so its `fsync`, with concurrent
    /// writes of the same kind (group commit, see [`GroupTx`]). For hot paths where many
    /// small durable writes arrive at once; the job stays atomic on its own. On PostgreSQL,
    /// which takes concurrent writers, each job is an ordinary transaction of its own.
    pub async fn begin_grouped(&self) -> Result<GroupTx, StoreError> {
        match &self.engine {
            StoreEngine::Sqlite(sqlite) => GroupTx::begin(&sqlite.group, self).await,
            StoreEngine::Postgres(_) => Ok(GroupTx::solo(self.begin_write().await?)),
        }
    }

    /// A whole grouped write in one call ([`GroupTx::run`]): `work`'s statements run on the
    /// calling thread inside the job's savepoint, and the answer comes back once the shared
    /// transaction holding them is durable (`Ok(Ok)`), or once they are undone (`Ok(Err)`,
    /// `work`'s refusal). The reveal's grant.
    pub async fn write_grouped<T, E>(
        &self,
        work: impl FnOnce(&Inline<'_>) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        let job = match &self.engine {
            StoreEngine::Sqlite(sqlite) => GroupTx::join(&sqlite.group, self).await?,
            StoreEngine::Postgres(_) => GroupTx::solo(self.begin_write().await?),
        };
        job.run(work).await
    }

    /// Removes what overwritten or deleted rows leave in the database's own files: on SQLite
    /// the WAL's copies of old pages (checkpoint, then truncate the WAL to zero bytes; freed
    /// pages are already zeroed by `secure_delete`); on PostgreSQL the dead row versions of
    /// the tables holding sealed or wrapped bytes (`VACUUM tokens, key_slots, vault_meta`;
    /// right after a purge's own `VACUUM tokens` the second pass skips the pages it marked
    /// all-visible). What PostgreSQL's WAL, replicas and backups hold is beyond reach here:
    /// docs/ARCHITECTURE.md, "Purge".
    pub async fn scrub_freed_space(&self) -> Result<(), StoreError> {
        match &self.engine {
            StoreEngine::Sqlite(sqlite) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&sqlite.writer)
                    .await?;
            }
            StoreEngine::Postgres(pool) => {
                sqlx::query("VACUUM tokens, key_slots, vault_meta")
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub async fn close(&self) {
        match &self.engine {
            StoreEngine::Sqlite(sqlite) => {
                sqlite.readers.close();
                sqlite.pool.close().await;
                sqlite.writer.close().await;
            }
            StoreEngine::Postgres(pool) => pool.close().await,
        }
    }
}

/// Name of the file, beside the database, that remembers which vault this data directory holds.
pub const VAULT_ID_FILE: &str = "vault-id";

/// The data directory's record of its vault, kept outside the database so that losing the
/// database (or its WAL) cannot also lose the knowledge that a vault was here.
///
/// On PostgreSQL there is no marker: the database is the server's, and no file of the data
/// directory can lose it; the vault's id lives in `vault_meta` alone.
impl Store {
    /// Path of the vault id marker (`None` on PostgreSQL).
    pub fn vault_id_marker(&self) -> Option<PathBuf> {
        match &self.engine {
            StoreEngine::Sqlite(sqlite) => Some(sqlite.path.with_file_name(VAULT_ID_FILE)),
            StoreEngine::Postgres(_) => None,
        }
    }

    /// The vault id this data directory recorded, if any (always none on PostgreSQL).
    pub fn recorded_vault_id(&self) -> Result<Option<String>, StoreError> {
        let Some(path) = self.vault_id_marker() else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|id| !id.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::DataDir {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Records `vault_id` as this data directory's vault (mode 0600); nothing on PostgreSQL.
    pub fn record_vault_id(&self, vault_id: &str) -> Result<(), StoreError> {
        let Some(path) = self.vault_id_marker() else {
            return Ok(());
        };
        write_private(&path, format!("{vault_id}\n").as_bytes()).map_err(|e| StoreError::DataDir {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// Writes `bytes` to a new or truncated file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = private_file_options().open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Options that create a file with mode 0600 (on unix), truncating an existing one.
pub fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Makes the database file (and its WAL and shm, if present) readable by the owner only.
/// SQLite gives a new WAL and shm the database file's mode, so creating the database 0600 is
/// what keeps all three private.
#[cfg(unix)]
fn restrict_database_files(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !path.exists() {
        private_file_options().open(path)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_database_files(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn restrict_permissions(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = std::fs::metadata(dir)?.permissions();
    if permissions.mode() & 0o077 != 0 {
        permissions.set_mode(0o700);
        std::fs::set_permissions(dir, permissions)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Decides, each time the write connection goes back to its pool, whether it may serve the
/// next writer: only if no transaction is left open on it.
///
/// sqlx counts its transaction depth up on a successful `BEGIN` and down on a successful
/// `COMMIT` or `ROLLBACK`. A `COMMIT` that fails (a full disk) leaves the count at one and
/// queues a `ROLLBACK` when the transaction is dropped; but on `SQLITE_FULL` (or an I/O
/// error) SQLite may already have rolled the whole transaction back by itself, so that
/// `ROLLBACK` fails too ("no transaction is active") and the count stays at one for good:
/// every later `begin_with` on that connection fails with "non-zero transaction depth" until
/// a restart. Where the transaction is still open in SQLite and its rollback fails, SQLite
/// also keeps the write lock, so the CLI beside the server gets "database is locked". Either
/// way the connection is closed here instead of returned (closing rolls back whatever SQLite
/// still holds), and the pool opens a fresh one for the next writer.
async fn release_writer(conn: &mut SqliteConnection) -> bool {
    use sqlx::Connection as _;
    // The common case costs an atomic load, no hand-off to the connection's worker thread.
    if !conn.is_in_transaction() {
        return true;
    }
    // A transaction dropped just before queued its rollback on the worker: let it run first.
    if conn.ping().await.is_ok() && !conn.is_in_transaction() {
        return true;
    }
    tracing::warn!("a failed write left its transaction open; replacing the write connection");
    false
}

/// Runs `work` on a PostgreSQL connection inside `tokio::task::block_in_place`, its statements
/// each driven by `Handle::block_on` ([`PgInline`]): the domain's synchronous closures run
/// unchanged on PostgreSQL. The worker thread's other tasks move elsewhere meanwhile. Needs
/// tokio's multi-threaded runtime (the server's, the CLI's and the integration tests'); on
/// another it refuses instead of panicking.
fn on_postgres<R>(
    conn: &mut PgConnection,
    work: impl FnOnce(&Inline<'_>) -> R,
) -> Result<R, StoreError> {
    let handle = tokio::runtime::Handle::try_current()
        .ok()
        .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        .ok_or_else(|| {
            StoreError::Postgres(
                "the PostgreSQL store runs its statement sequences on tokio's multi-threaded runtime; this code runs on another (use #[tokio::main] / #[tokio::test(flavor = \"multi_thread\")])".into(),
            )
        })?;
    let inline = Inline(InlineConn::Postgres(PgInline {
        conn: RefCell::new(conn),
        handle,
    }));
    Ok(tokio::task::block_in_place(|| work(&inline)))
}

/// Runs `work` through rusqlite on the connection sqlx opened, on the calling thread, and hands
/// back what it returns: for runs of statements and for bulk writes, where sqlx would copy every
/// bound value into an owned argument list and ship it to its worker thread (for 100,000 rows
/// that costs more than SQLite's own work); rusqlite binds borrowed values straight into a
/// reused prepared statement and reads rows in place. What `work` writes belongs to whatever
/// transaction is open on the connection.
///
/// `work` runs synchronously (no `.await` while the handle is out, so a cancelled caller cannot
/// leave the connection in use): inline on the calling thread, or, when `may_block`, inside
/// `tokio::task::block_in_place` on a multi-threaded runtime so that the worker's other tasks
/// move elsewhere meanwhile.
///
/// The crate's one `unsafe` (see the crate documentation, "Safety").
#[allow(unsafe_code)]
async fn on_rusqlite<R>(
    conn: &mut SqliteConnection,
    work: impl FnOnce(&Inline<'_>) -> R,
    may_block: bool,
) -> Result<R, StoreError> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: `lock_handle` guarantees that sqlx's worker thread makes no call on this
    // connection (or its statements) while `handle` lives, and `conn` is dropped before
    // `handle`. `from_handle` does not take ownership: dropping `conn` finalizes only the
    // statements `work` prepared and leaves the connection open (rusqlite is built without its
    // `hooks` features, so it does not touch any hook sqlx may have set). sqlx and rusqlite
    // link the same libsqlite3-sys, so this is the library that opened the handle (checked by
    // `tests::rusqlite_and_sqlx_share_one_sqlite_and_one_transaction`).
    let conn = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr())? };
    let inline = Inline(InlineConn::Sqlite(&conn));
    let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) if may_block => {
            tokio::task::block_in_place(|| work(&inline))
        }
        _ => work(&inline),
    };
    drop(conn);
    drop(handle);
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// `on_rusqlite` hands sqlx's handle to rusqlite: both must be the same SQLite library
    /// (a second, differently built copy linked in would corrupt memory), and what rusqlite
    /// sees must be the transaction sqlx opened.
    #[tokio::test]
    async fn rusqlite_and_sqlx_share_one_sqlite_and_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let through_sqlx: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(store.pool().unwrap())
            .await
            .unwrap();
        assert_eq!(through_sqlx, rusqlite::version());
        let through_handle: String = store
            .inline(|c| {
                c.sqlite()
                    .unwrap()
                    .query_row("SELECT sqlite_version()", [], |r| r.get(0))
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(through_handle, rusqlite::version());
        // Same version but built differently (bundled beside a system library) shows in the
        // compile options: those of a connection rusqlite opens itself, against sqlx's.
        let sqlx_options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(store.pool().unwrap())
            .await
            .unwrap();
        let own = rusqlite::Connection::open_in_memory().unwrap();
        let rusqlite_options: Vec<String> = own
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sqlx_options, rusqlite_options);

        let mut tx = store.begin_write().await.unwrap();
        sqlx::query("CREATE TABLE scratch (n INTEGER NOT NULL)")
            .execute(tx.sqlite().unwrap())
            .await
            .unwrap();
        sqlx::query("INSERT INTO scratch (n) VALUES (41)")
            .execute(tx.sqlite().unwrap())
            .await
            .unwrap();
        let seen: i64 = tx
            .inline(|c| {
                c.sqlite()
                    .unwrap()
                    .execute("UPDATE scratch SET n = n + 1", [])?;
                c.sqlite()
                    .unwrap()
                    .query_row("SELECT n FROM scratch", [], |r| r.get(0))
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, 42, "rusqlite sees sqlx's uncommitted row");
        let after: i64 = sqlx::query_scalar("SELECT n FROM scratch")
            .fetch_one(tx.sqlite().unwrap())
            .await
            .unwrap();
        assert_eq!(
            after, 42,
            "sqlx sees rusqlite's write in the same transaction"
        );
        drop(tx);
        let gone = sqlx::query("SELECT n FROM scratch")
            .fetch_optional(store.pool().unwrap())
            .await;
        assert!(gone.is_err(), "the rollback undid both drivers' work");
    }

    async fn scratch_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), Duration::from_millis(200))
            .await
            .unwrap();
        execute(
            store.writer().unwrap(),
            "CREATE TABLE scratch (b BLOB NOT NULL)",
        )
        .await
        .unwrap();
        (dir, store)
    }

    async fn write_row(store: &Store) -> Result<(), StoreError> {
        let mut tx = store.begin_write().await?;
        execute(&mut tx, "INSERT INTO scratch (b) VALUES (zeroblob(100))").await?;
        tx.commit().await
    }

    async fn rows(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM scratch")
            .fetch_one(store.pool().unwrap())
            .await
            .unwrap()
    }

    /// What another process (the CLI) sees: it can take the write lock and write.
    fn another_process_can_write(store: &Store) {
        let other = rusqlite::Connection::open(store.path().unwrap()).unwrap();
        other.busy_timeout(Duration::from_secs(2)).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO scratch (b) VALUES (x'00'); COMMIT;")
            .unwrap();
    }

    #[tokio::test]
    async fn a_commit_on_a_full_disk_fails_as_disk_full_and_writes_resume_once_space_is_back() {
        let (_dir, store) = scratch_store().await;
        store.simulate_full_disk(true);
        for _ in 0..3 {
            let failed = write_row(&store).await;
            assert!(matches!(failed, Err(StoreError::DiskFull(_))), "{failed:?}");
        }
        assert_eq!(rows(&store).await, 0, "nothing of a failed write is kept");
        store.simulate_full_disk(false);
        write_row(&store).await.unwrap();
        write_row(&store).await.unwrap();
        another_process_can_write(&store);
        assert_eq!(rows(&store).await, 3);
    }

    #[tokio::test]
    async fn a_statement_on_a_full_disk_leaves_no_transaction_behind() {
        let (_dir, store) = scratch_store().await;
        // Caps the file at its current size on the write connection: no page can be added.
        execute(store.writer().unwrap(), "PRAGMA max_page_count = 1")
            .await
            .unwrap();
        let mut tx = store.begin_write().await.unwrap();
        let failed = execute(
            &mut tx,
            "INSERT INTO scratch (b) VALUES (zeroblob(1048576))",
        )
        .await;
        assert!(matches!(failed, Err(StoreError::DiskFull(_))), "{failed:?}");
        drop(tx);
        // Space back: on this connection if it survived, or on a fresh one with no limit.
        execute(
            store.writer().unwrap(),
            "PRAGMA max_page_count = 1073741823",
        )
        .await
        .unwrap();
        write_row(&store).await.unwrap();
        another_process_can_write(&store);
        assert_eq!(rows(&store).await, 2);
    }

    #[tokio::test]
    async fn a_lock_held_past_the_busy_timeout_fails_as_busy_and_does_not_outlive_the_lock() {
        let (_dir, store) = scratch_store().await;
        let other = rusqlite::Connection::open(store.path().unwrap()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let failed = write_row(&store).await;
        assert!(matches!(failed, Err(StoreError::Busy(_))), "{failed:?}");
        other.execute_batch("ROLLBACK").unwrap();
        write_row(&store).await.unwrap();
        assert_eq!(rows(&store).await, 1);
    }
}

#[cfg(test)]
mod both_engines;
#[cfg(test)]
mod migration_tests;
