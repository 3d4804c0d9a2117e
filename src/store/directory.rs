//! `directory_entries` and `directory_syncs`: the directory of record and the outcome of each
//! source's last sync.

use rusqlite::OptionalExtension;

use super::{inline, Db, Inline, StoreError};

/// One owner's record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub owner: String,
    pub display_name: Option<String>,
    pub phones: Vec<String>,
    pub manager: Option<String>,
    pub manager_phone: Option<String>,
    pub department: Option<String>,
    pub mail: Option<String>,
    pub source: String,
    pub synced_at: i64,
}

const COLUMNS: &str =
    "owner, display_name, phones, manager, manager_phone, department, mail, source, synced_at";

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    let phones: String = r.get(2)?;
    Ok(EntryRow {
        owner: r.get(0)?,
        display_name: r.get(1)?,
        // Written by `replace_source_on` only, always as a JSON array of strings.
        phones: serde_json::from_str(&phones).unwrap_or_default(),
        manager: r.get(3)?,
        manager_phone: r.get(4)?,
        department: r.get(5)?,
        mail: r.get(6)?,
        source: r.get(7)?,
        synced_at: r.get(8)?,
    })
}

/// The record of `owner` (any case), if the directory has one.
pub async fn by_owner(db: impl Into<Db<'_>>, owner: &str) -> Result<Option<EntryRow>, StoreError> {
    inline(db, |c| by_owner_on(c, owner)).await?
}

/// [`by_owner`] on a held connection.
pub fn by_owner_on(c: &Inline<'_>, owner: &str) -> Result<Option<EntryRow>, StoreError> {
    let mut statement = c.conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM directory_entries WHERE owner = ?1"
    ))?;
    Ok(statement.query_row([owner], entry_row).optional()?)
}

/// Every entry, by owner.
pub async fn all(db: impl Into<Db<'_>>) -> Result<Vec<EntryRow>, StoreError> {
    inline(db, all_on).await?
}

/// [`all`] on a held connection.
pub fn all_on(c: &Inline<'_>) -> Result<Vec<EntryRow>, StoreError> {
    let mut statement = c.conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM directory_entries ORDER BY owner"
    ))?;
    let rows = statement.query_map([], entry_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Replaces every entry of `source` with `entries` (which may also take over owners another
/// source held). Run inside the sync's write transaction.
pub fn replace_source_on(
    c: &Inline<'_>,
    source: &str,
    entries: &[EntryRow],
) -> Result<(), StoreError> {
    c.conn
        .prepare_cached("DELETE FROM directory_entries WHERE source = ?1")?
        .execute([source])?;
    let mut insert = c.conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO directory_entries ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?;
    for e in entries {
        let phones = serde_json::Value::from(e.phones.clone()).to_string();
        insert.execute(rusqlite::params![
            e.owner,
            e.display_name,
            phones,
            e.manager,
            e.manager_phone,
            e.department,
            e.mail,
            e.source,
            e.synced_at
        ])?;
    }
    Ok(())
}

/// The outcome of a source's last sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRow {
    pub source: String,
    pub outcome: String,
    pub message: String,
    pub at: i64,
    pub last_ok_at: Option<i64>,
}

/// Records a sync's outcome; `last_ok_at` moves only when it succeeded.
pub fn record_sync_on(
    c: &Inline<'_>,
    source: &str,
    ok: bool,
    message: &str,
    at: i64,
) -> Result<(), StoreError> {
    c.conn
        .prepare_cached(
            "INSERT INTO directory_syncs (source, outcome, message, at, last_ok_at)
             VALUES (?1, ?2, ?3, ?4, CASE WHEN ?2 = 'ok' THEN ?4 END)
             ON CONFLICT (source) DO UPDATE SET outcome = excluded.outcome,
                 message = excluded.message, at = excluded.at,
                 last_ok_at = CASE WHEN excluded.outcome = 'ok' THEN excluded.at ELSE last_ok_at END",
        )?
        .execute(rusqlite::params![
            source,
            if ok { "ok" } else { "failed" },
            message,
            at
        ])?;
    Ok(())
}

/// The last sync of every source that has run, by source.
pub async fn syncs(db: impl Into<Db<'_>>) -> Result<Vec<SyncRow>, StoreError> {
    inline(db, |c| -> Result<Vec<SyncRow>, StoreError> {
        let mut statement = c.conn.prepare_cached(
            "SELECT source, outcome, message, at, last_ok_at FROM directory_syncs ORDER BY source",
        )?;
        let rows = statement.query_map([], |r| {
            Ok(SyncRow {
                source: r.get(0)?,
                outcome: r.get(1)?,
                message: r.get(2)?,
                at: r.get(3)?,
                last_ok_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
    .await?
}

/// How many entries each source holds.
pub async fn counts(db: impl Into<Db<'_>>) -> Result<Vec<(String, i64)>, StoreError> {
    inline(db, |c| -> Result<Vec<(String, i64)>, StoreError> {
        let mut statement = c.conn.prepare_cached(
            "SELECT source, count(*) FROM directory_entries GROUP BY source ORDER BY source",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    })
    .await?
}
