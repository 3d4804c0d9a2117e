//! Whole-database copies for backups and restores: a consistent snapshot of the live vault
//! (`VACUUM INTO`), and the checks a restored copy must pass before it replaces anything.

use std::path::Path;

use super::{conn, Store, StoreError};

/// Writes a transactionally consistent copy of the whole database into `target`, which must
/// not exist or be empty (the caller creates it empty with mode 0600, so the copy is private
/// from its first byte). Runs in one read transaction: in WAL mode writers, and so reveals,
/// go on meanwhile. Rows of imports that have not committed are left out.
pub async fn vacuum_into(store: &Store, target: &Path) -> Result<(), StoreError> {
    if store.is_postgres() {
        return Err(super::sqlite_only(
            "a snapshot of the database file",
            "back the database up with pg_dump (or the server's base backups); seedvault backup covers SQLite vaults",
        ));
    }
    let target = target
        .to_str()
        .ok_or_else(|| StoreError::DataDir {
            path: target.display().to_string(),
            reason: "the path is not valid UTF-8".into(),
        })?
        .to_owned();
    sqlx::query("VACUUM INTO ?")
        .bind(&target)
        .execute(&mut *conn(store).await?)
        .await?;
    // The copy holds what readers of the vault could see: not the rows of an import still
    // being written (or abandoned), which a restore would otherwise bring back as pending.
    tokio::task::spawn_blocking(move || {
        super::imports::scrub_uncommitted(&rusqlite::Connection::open(&target)?)
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("scrubbing the snapshot: {e}")))??;
    Ok(())
}

/// What a database file says about itself, read without migrating or changing it.
pub struct Facts {
    /// The vault's id (`None`: no vault in it).
    pub vault_id: Option<String>,
    /// The newest audit event's seq and hash.
    pub head: Option<(i64, Vec<u8>)>,
}

/// Reads [`Facts`] from the database file at `path`.
pub fn facts(path: &Path) -> Result<Facts, StoreError> {
    let conn = open_query_only(path)?;
    let vault_id = conn
        .query_row("SELECT vault_id FROM vault_meta WHERE id = 1", [], |r| {
            r.get::<_, String>(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    let head = super::audit::select_head(&conn)?;
    Ok(Facts { vault_id, head })
}

/// `PRAGMA integrity_check` on the database file at `path`: the problems SQLite lists, empty
/// when the file is sound.
pub fn integrity_problems(path: &Path) -> Result<Vec<String>, StoreError> {
    let conn = open_query_only(path)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(lines.into_iter().filter(|l| l != "ok").collect())
}

pub(crate) fn open_query_only(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}
