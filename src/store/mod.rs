//! SQLite storage: the pool, its pragmas, migrations, and every query (grouped by table).
//! No SQL lives outside this module.

pub mod audit;
mod group;
pub mod key_slots;
pub mod meta;
pub mod operators;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// A write transaction, opened with `BEGIN IMMEDIATE` so that it holds SQLite's write lock from
/// the start (a deferred transaction that reads and then writes can fail with `SQLITE_BUSY`
/// when the CLI writes beside a running server).
pub type WriteTx = Transaction<'static, Sqlite>;

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "seedvault.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data directory {path}: {reason} — check that it exists, is a directory and is writable by this user, or choose another with --data-dir / SEEDVAULT_DATA_DIR")]
    DataDir { path: String, reason: String },
    #[error("database error: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "cannot migrate the database: {0} — the data directory may come from a newer seedvault"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database holds a corrupt value: {0}")]
    Corrupt(String),
    #[error("the write was not committed: {0}")]
    Batch(String),
}

impl StoreError {
    /// Whether a `UNIQUE` (or primary key) constraint refused the write, through either driver.
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
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: SqlitePool,
    group: group::Group,
    path: PathBuf,
}

pub use group::GroupTx;

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and runs migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
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
            .busy_timeout(Duration::from_secs(10))
            // Freed pages are zeroed, so a purged seed's bytes do not linger in the file.
            .pragma("secure_delete", "ON");
        let connect = |connections: u32| {
            let options = options.clone();
            let shown = shown.clone();
            async move {
                SqlitePoolOptions::new()
                    .max_connections(connections)
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
                        other => StoreError::Sqlx(other),
                    })
            }
        };
        let writer = connect(1).await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let pool = connect(8).await?;
        Ok(Self {
            pool,
            writer,
            group: Default::default(),
            path,
        })
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
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(10))
            .pragma("query_only", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(Self {
            writer: pool.clone(),
            pool,
            group: Default::default(),
            path,
        })
    }

    /// The pool for reads.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The single write connection, for writes that are not a [`WriteTx`] (the session store).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Path of the database file (its `-wal` and `-shm` sit beside it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write transaction that holds the write lock.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Starts a write that shares its transaction, and so its `fsync`, with concurrent
    /// writes of the same kind (group commit, see [`GroupTx`]). For hot paths where many
    /// small durable writes arrive at once; the job stays atomic on its own.
    pub async fn begin_grouped(&self) -> Result<GroupTx, StoreError> {
        GroupTx::begin(&self.group, &self.writer).await
    }

    /// Moves the WAL's content into the database file and truncates the WAL to zero bytes,
    /// so that overwritten pages do not survive in the log.
    pub async fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

/// Name of the file, beside the database, that remembers which vault this data directory holds.
pub const VAULT_ID_FILE: &str = "vault-id";

/// The data directory's record of its vault, kept outside the database so that losing the
/// database (or its WAL) cannot also lose the knowledge that a vault was here.
impl Store {
    /// Path of the vault id marker.
    pub fn vault_id_marker(&self) -> PathBuf {
        self.path.with_file_name(VAULT_ID_FILE)
    }

    /// The vault id this data directory recorded, if any.
    pub fn recorded_vault_id(&self) -> Result<Option<String>, StoreError> {
        let path = self.vault_id_marker();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|id| !id.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::DataDir {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Records `vault_id` as this data directory's vault (mode 0600).
    pub fn record_vault_id(&self, vault_id: &str) -> Result<(), StoreError> {
        let path = self.vault_id_marker();
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

/// Runs `work` on the write transaction's own SQLite connection through rusqlite, on the
/// calling thread, and hands back what it returns. For bulk writes inside a [`WriteTx`]: sqlx
/// copies every bound value into an owned argument list and ships it to its worker thread,
/// which for 100,000 rows costs more than SQLite's own work; rusqlite binds borrowed values
/// straight into a reused prepared statement. The writes belong to `tx` and commit or roll
/// back with it.
///
/// `work` runs synchronously (no `.await` while the handle is out, so a cancelled caller cannot
/// leave the connection in use): inside `tokio::task::block_in_place` on a multi-threaded
/// runtime, so the worker's other tasks move elsewhere meanwhile, and inline otherwise.
pub(crate) async fn with_rusqlite<R>(
    tx: &mut WriteTx,
    work: impl FnOnce(&rusqlite::Connection) -> R,
) -> Result<R, StoreError> {
    on_rusqlite(tx, work, true).await
}

/// [`with_rusqlite`] for work of a few indexed statements (tens of microseconds, no disk
/// wait: nothing commits inside it): runs `work` inline on the calling thread, because moving
/// the runtime's worker to another thread (`block_in_place`) costs more than the work.
pub(crate) async fn with_rusqlite_brief<R>(
    tx: &mut WriteTx,
    work: impl FnOnce(&rusqlite::Connection) -> R,
) -> Result<R, StoreError> {
    on_rusqlite(tx, work, false).await
}

async fn on_rusqlite<R>(
    tx: &mut WriteTx,
    work: impl FnOnce(&rusqlite::Connection) -> R,
    may_block: bool,
) -> Result<R, StoreError> {
    let mut handle = tx.lock_handle().await?;
    // SAFETY: `lock_handle` guarantees that sqlx's worker thread makes no call on this
    // connection (or its statements) while `handle` lives, and `conn` is dropped before
    // `handle`. `from_handle` does not take ownership: dropping `conn` finalizes only the
    // statements `work` prepared and leaves the connection open (rusqlite is built without its
    // `hooks` features, so it does not touch any hook sqlx may have set). sqlx and rusqlite
    // link the same libsqlite3-sys, so this is the library that opened the handle.
    let conn = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr())? };
    let result = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) if may_block => {
            tokio::task::block_in_place(|| work(&conn))
        }
        _ => work(&conn),
    };
    drop(conn);
    drop(handle);
    Ok(result)
}

/// A trivial query: proves the database answers.
pub async fn ping(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod migration_tests;
