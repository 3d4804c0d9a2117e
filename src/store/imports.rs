//! `imports`: bulk imports whose rows are written in chunks (issue #27, "fast while busy").
//!
//! An import's tokens go into `tokens` over many short write transactions, each row tagged
//! with the import's id, so that other writes (a reveal's grant) commit between the chunks.
//! Until [`mark_committed`] sets the import's `committed_at`, every read of `tokens` treats its
//! rows as absent ([`super::tokens::VISIBLE`]); committing is one O(1) update. An import that
//! failed, was given up or whose process died has its rows deleted in chunks
//! ([`delete_rows`], then [`forget`]); they were never seen. The statements are the same on
//! both engines (`$N` placeholders, `RETURNING`).

use super::{Db, StoreError, WriteTx};

/// Who runs a new import.
pub struct NewImport<'a> {
    pub actor: &'a str,
    pub file: &'a str,
    pub started_at: i64,
    /// The importing process and its start time in clock ticks since boot (`/proc/<pid>/stat`),
    /// so that another process can tell whether it still runs.
    pub pid: i64,
    pub pid_start: i64,
}

/// Records a new, uncommitted import; returns its id.
pub async fn begin(tx: &mut WriteTx, new: &NewImport<'_>) -> Result<i64, StoreError> {
    Ok(on_either!(Db::from(&mut *tx), |conn| sqlx::query_scalar(
        "INSERT INTO imports (actor, file, started_at, pid, pid_start, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(new.actor)
    .bind(new.file)
    .bind(new.started_at)
    .bind(new.pid)
    .bind(new.pid_start)
    .bind(new.started_at)
    .fetch_one(&mut *conn)
    .await?))
}

/// Says the import is still being written (with each chunk). False if it was claimed as
/// abandoned meanwhile ([`claim_abandoned`]): the importer must stop.
pub async fn heartbeat(tx: &mut WriteTx, id: i64, at: i64) -> Result<bool, StoreError> {
    set_while_pending(tx, "heartbeat_at", id, at).await
}

/// Makes every row of the import visible at once. False if the import is no longer pending
/// (another process judged it abandoned and is deleting it): the caller must roll back.
pub async fn mark_committed(tx: &mut WriteTx, id: i64, at: i64) -> Result<bool, StoreError> {
    set_while_pending(tx, "committed_at", id, at).await
}

/// Sets `column` to `at` on an import that is neither committed nor claimed as abandoned;
/// whether it was such an import.
async fn set_while_pending(
    tx: &mut WriteTx,
    column: &'static str,
    id: i64,
    at: i64,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE imports SET {column} = $1 WHERE id = $2 AND committed_at IS NULL AND pid >= 0"
    );
    let done = on_either!(Db::from(&mut *tx), |conn| sqlx::query(&sql)
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected());
    Ok(done == 1)
}

/// An import not (yet) committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: i64,
    pub pid: i64,
    pub pid_start: i64,
    pub heartbeat_at: i64,
}

/// Every import not committed, oldest first.
pub async fn pending(db: impl Into<Db<'_>>) -> Result<Vec<Pending>, StoreError> {
    const SQL: &str =
        "SELECT id, pid, pid_start, heartbeat_at FROM imports WHERE committed_at IS NULL ORDER BY id";
    let rows: Vec<(i64, i64, i64, i64)> =
        on_either!(db, |conn| sqlx::query_as(SQL).fetch_all(&mut *conn).await?);
    Ok(rows
        .into_iter()
        .map(|(id, pid, pid_start, heartbeat_at)| Pending {
            id,
            pid,
            pid_start,
            heartbeat_at,
        })
        .collect())
}

/// Claims a pending import for deletion: from now on [`mark_committed`] and [`heartbeat`]
/// refuse it, so a process wrongly judged gone can neither commit nor add to rows that are
/// being deleted. False if it committed meanwhile. Claiming twice is harmless (two cleaners
/// delete the same chunks in turn).
pub async fn claim_abandoned(tx: &mut WriteTx, id: i64) -> Result<bool, StoreError> {
    let done = on_either!(Db::from(&mut *tx), |conn| sqlx::query(
        "UPDATE imports SET pid = -1 WHERE id = $1 AND committed_at IS NULL"
    )
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(done == 1)
}

/// Deletes up to `limit` rows of an uncommitted import; returns how many (0: none left). The
/// freed pages are zeroed (`secure_delete`), as for a purge.
pub async fn delete_rows(tx: &mut WriteTx, id: i64, limit: i64) -> Result<u64, StoreError> {
    let done = on_either!(Db::from(&mut *tx), |conn| sqlx::query(
        "DELETE FROM tokens WHERE id IN (SELECT id FROM tokens WHERE import_id = $1 LIMIT $2)
           AND import_id IN (SELECT id FROM imports WHERE id = $1 AND committed_at IS NULL)",
    )
    .bind(id)
    .bind(limit)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(done)
}

/// Removes an uncommitted import's own row once its tokens are gone.
pub async fn forget(tx: &mut WriteTx, id: i64) -> Result<(), StoreError> {
    on_either!(Db::from(&mut *tx), |conn| sqlx::query(
        "DELETE FROM imports WHERE id = $1 AND committed_at IS NULL"
    )
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(())
}

/// Whether `serial` belongs to an import that has not committed: a capture of it gets a clear
/// "being imported" refusal rather than a duplicate one.
pub async fn serial_being_imported(
    db: impl Into<Db<'_>>,
    serial: &str,
) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT EXISTS (SELECT 1 FROM tokens t JOIN imports i ON i.id = t.import_id
                                      WHERE t.serial = $1 AND i.committed_at IS NULL)";
    Ok(on_either!(db, |conn| sqlx::query_scalar(SQL)
        .bind(serial)
        .fetch_one(&mut *conn)
        .await?))
}

/// Deletes every uncommitted import's rows from a database file that no process serves (a
/// backup's fresh snapshot), so the copy holds only what readers of the vault could see.
pub fn scrub_uncommitted(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.execute_batch(
        "BEGIN;
         DELETE FROM tokens WHERE import_id IN (SELECT id FROM imports WHERE committed_at IS NULL);
         DELETE FROM imports WHERE committed_at IS NULL;
         COMMIT;",
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::tokens::{by_serial, insert_bulk, NewTokenRow};
    use crate::store::Store;

    async fn import_with(store: &Store, serial: &str) -> i64 {
        let mut tx = store.begin_write().await.unwrap();
        let id = begin(
            &mut tx,
            &NewImport {
                actor: "cli:test",
                file: "f.csv",
                started_at: 1,
                pid: 1,
                pid_start: 1,
            },
        )
        .await
        .unwrap();
        insert_bulk(&mut tx, id, |sink| {
            sink.insert(&NewTokenRow {
                token_id: &format!("id-{serial}"),
                serial,
                owner: None,
                display_name: None,
                manufacturer: None,
                model: None,
                algorithm: "SHA1",
                digits: 6,
                period: 30,
                policy: "standard",
                sealed_seed: b"sealed",
                captured_by: "cli:test",
                captured_at: 1,
                retention_deadline: 2,
            })
        })
        .await
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    #[tokio::test]
    async fn a_claimed_import_can_neither_commit_nor_go_on_and_a_committed_one_cannot_be_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let claimed = import_with(&store, "A").await;
        let committed = import_with(&store, "B").await;
        let mut tx = store.begin_write().await.unwrap();
        assert!(mark_committed(&mut tx, committed, 5).await.unwrap());
        assert!(claim_abandoned(&mut tx, claimed).await.unwrap());
        assert!(!claim_abandoned(&mut tx, committed).await.unwrap());
        assert!(!heartbeat(&mut tx, claimed, 6).await.unwrap());
        assert!(!mark_committed(&mut tx, claimed, 6).await.unwrap());
        // The committed import's rows can never be deleted as abandoned ones.
        assert_eq!(delete_rows(&mut tx, committed, 10).await.unwrap(), 0);
        assert_eq!(delete_rows(&mut tx, claimed, 10).await.unwrap(), 1);
        forget(&mut tx, claimed).await.unwrap();
        tx.commit().await.unwrap();
        assert!(pending(&store).await.unwrap().is_empty());
        assert!(by_serial(&store, "B").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_snapshot_leaves_out_the_rows_of_an_import_that_has_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let running = import_with(&store, "RUNNING").await;
        let done = import_with(&store, "DONE").await;
        let mut tx = store.begin_write().await.unwrap();
        assert!(mark_committed(&mut tx, done, 5).await.unwrap());
        tx.commit().await.unwrap();
        let target = dir.path().join("snapshot.db");
        crate::store::snapshot::vacuum_into(&store, &target)
            .await
            .unwrap();
        let copy = rusqlite::Connection::open(&target).unwrap();
        let serials: Vec<String> = copy
            .prepare("SELECT serial FROM tokens")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(serials, ["DONE"]);
        let imports: i64 = copy
            .query_row("SELECT COUNT(*) FROM imports", [], |r| r.get(0))
            .unwrap();
        assert_eq!(imports, 1);
        // The live vault still holds the running import's row, unseen.
        assert_eq!(pending(&store).await.unwrap().len(), 1);
        assert_eq!(pending(&store).await.unwrap()[0].id, running);
    }
}
