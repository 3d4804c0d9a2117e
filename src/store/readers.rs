//! SQLite read connections owned by rusqlite, for [`super::Store::inline`] on the read side.
//!
//! sqlx runs each SQLite connection on a worker thread of its own: a statement, or the
//! `lock_handle` that lends the connection to rusqlite, is a message to that thread and a
//! wake-up back (and the pool's checkout a few more). On the reveal path those thread switches
//! cost more than the reads themselves (BENCHMARKS.md, "Where a reveal pair's server CPU
//! goes"). These connections are opened by rusqlite itself and used on the calling thread:
//! a read costs a mutex and the statements, and each connection keeps its prepared
//! statements (`prepare_cached`) from one call to the next.
//!
//! They see exactly what sqlx's read pool sees: same file, same pragmas, and in WAL mode each
//! statement (or explicit transaction) reads the newest commit. A connection comes back to the
//! idle list only with no transaction open, so nothing stale or lock-holding is reused.
//!
//! Like the read pool they can write (tests and a few maintenance paths write through
//! `&Store`), but the server's writes belong on the one write connection: a write here races
//! it for SQLite's lock and sleeps in SQLite's busy handler on a runtime thread meanwhile
//! (the notices sender did, and stalled reveals for up to a few hundred milliseconds).

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// How many idle connections are kept; more callers at once open more, and the extra ones
/// are closed when handed back.
const KEEP_IDLE: usize = 8;

/// The read connections of one SQLite store.
pub(super) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    /// `query_only`: the store was opened for inspection ([`super::Store::open_read_only`]).
    query_only: bool,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration, query_only: bool) -> Self {
        Self {
            path,
            busy_timeout,
            query_only,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `work` on an idle connection (or a new one), on the calling thread.
    pub(super) fn run<R>(&self, work: impl FnOnce(&Connection) -> R) -> Result<R, StoreError> {
        let idle = self.idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = work(&conn);
        // A transaction left open would pin an old snapshot and hold back checkpoints.
        if conn.is_autocommit() {
            let mut idle = self.idle();
            if idle.len() < KEEP_IDLE {
                idle.push(conn);
            }
        }
        Ok(result)
    }

    /// Closes every idle connection ([`super::Store::close`]: the last connection to close
    /// removes the WAL and shm files).
    pub(super) fn close(&self) {
        self.idle().clear();
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // The list holds no invariant a panicking holder could break.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection configured as sqlx configures the read pool's (`Store::open_with`).
    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.execute_batch(if self.query_only {
            "PRAGMA query_only = ON;"
        } else {
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;"
        })?;
        Ok(conn)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A read on a reused connection sees what was committed after its previous read, and a
    /// connection handed back with a transaction open is not reused.
    #[tokio::test]
    async fn reused_connections_read_the_newest_commit_and_never_an_open_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        crate::store::execute(store.writer().unwrap(), "CREATE TABLE scratch (n INTEGER)")
            .await
            .unwrap();
        let count = |store: &Store| {
            let store = store.clone();
            async move {
                store
                    .inline(|c| -> i64 {
                        c.sqlite()
                            .unwrap()
                            .prepare_cached("SELECT COUNT(*) FROM scratch")
                            .unwrap()
                            .query_row([], |r| r.get(0))
                            .unwrap()
                    })
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count(&store).await, 0);
        crate::store::execute(store.writer().unwrap(), "INSERT INTO scratch VALUES (1)")
            .await
            .unwrap();
        assert_eq!(
            count(&store).await,
            1,
            "the cached statement saw an old snapshot"
        );

        let readers = Readers::new(store.path().unwrap().to_owned(), Duration::ZERO, false);
        readers
            .run(|c| c.execute_batch("BEGIN; SELECT COUNT(*) FROM scratch;"))
            .unwrap()
            .unwrap();
        assert!(
            readers.idle().is_empty(),
            "a connection inside BEGIN was kept"
        );
        readers.run(|_| ()).unwrap();
        assert_eq!(readers.idle().len(), 1);
        readers.close();
        assert!(readers.idle().is_empty());
    }

    /// The connections carry the pragmas the store's writes and purges rely on.
    #[test]
    fn connections_are_configured_as_the_read_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        Connection::open(&path).unwrap();
        let readers = Readers::new(path.clone(), Duration::from_millis(1234), false);
        let pragma = |c: &Connection, name: &str| -> i64 {
            c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .unwrap()
        };
        readers
            .run(|c| {
                assert_eq!(pragma(c, "foreign_keys"), 1);
                assert_eq!(pragma(c, "synchronous"), 2, "FULL");
                assert_eq!(pragma(c, "secure_delete"), 1);
                assert_eq!(pragma(c, "busy_timeout"), 1234);
                assert_eq!(pragma(c, "query_only"), 0);
            })
            .unwrap();
        let inspecting = Readers::new(path, Duration::ZERO, true);
        inspecting
            .run(|c| assert_eq!(pragma(c, "query_only"), 1))
            .unwrap();
    }
}
