//! `directory_entries` and `directory_syncs`: the directory of record and the outcome of each
//! source's last sync.

use rusqlite::OptionalExtension;

use super::{dollars, inline, Db, Inline, On, StoreError};

/// An entry as PostgreSQL returns it (phones as the stored JSON text).
type PgEntry = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
);

fn entry_pg(t: PgEntry) -> EntryRow {
    EntryRow {
        owner: t.0,
        display_name: t.1,
        phones: serde_json::from_str(&t.2).unwrap_or_default(),
        manager: t.3,
        manager_phone: t.4,
        department: t.5,
        mail: t.6,
        source: t.7,
        synced_at: t.8,
    }
}

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
    match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM directory_entries WHERE owner = ?1"
            ))?;
            Ok(statement.query_row([owner], entry_row).optional()?)
        }
        // SQLite's key is `owner COLLATE NOCASE`; PostgreSQL's unique index is on this.
        On::Postgres(pg) => Ok(pg
            .optional(
                sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM directory_entries WHERE lower(owner) COLLATE \"C\" = lower($1) COLLATE \"C\""
                ))
                .bind(owner),
            )?
            .map(entry_pg)),
    }
}

/// Every entry, by owner.
pub async fn all(db: impl Into<Db<'_>>) -> Result<Vec<EntryRow>, StoreError> {
    inline(db, all_on).await?
}

/// [`all`] on a held connection.
pub fn all_on(c: &Inline<'_>) -> Result<Vec<EntryRow>, StoreError> {
    match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM directory_entries ORDER BY owner"
            ))?;
            let rows = statement.query_map([], entry_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        }
        // NOCASE order: ASCII folded, then bytes.
        On::Postgres(pg) => Ok(pg
            .all(sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM directory_entries ORDER BY lower(owner) COLLATE \"C\""
            )))?
            .into_iter()
            .map(entry_pg)
            .collect()),
    }
}

/// Replaces every entry of `source` with `entries` (which may also take over owners another
/// source held). Run inside the sync's write transaction.
pub fn replace_source_on(
    c: &Inline<'_>,
    source: &str,
    entries: &[EntryRow],
) -> Result<(), StoreError> {
    const DELETE: &str = "DELETE FROM directory_entries WHERE source = ?1";
    let conn = match c.on() {
        On::Sqlite(conn) => conn,
        On::Postgres(pg) => {
            pg.execute(sqlx::query(&dollars(DELETE)).bind(source))?;
            // SQLite's INSERT OR REPLACE: a row whose owner matches (any case) is replaced.
            let insert = format!(
                "INSERT INTO directory_entries ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT ((lower(owner))) DO UPDATE SET owner = excluded.owner, \
                 display_name = excluded.display_name, phones = excluded.phones, \
                 manager = excluded.manager, manager_phone = excluded.manager_phone, \
                 department = excluded.department, mail = excluded.mail, \
                 source = excluded.source, synced_at = excluded.synced_at"
            );
            for e in entries {
                let phones = serde_json::Value::from(e.phones.clone()).to_string();
                pg.execute(
                    sqlx::query(&insert)
                        .bind(&e.owner)
                        .bind(&e.display_name)
                        .bind(phones)
                        .bind(&e.manager)
                        .bind(&e.manager_phone)
                        .bind(&e.department)
                        .bind(&e.mail)
                        .bind(&e.source)
                        .bind(e.synced_at),
                )?;
            }
            return Ok(());
        }
    };
    conn.prepare_cached(DELETE)?.execute([source])?;
    let mut insert = conn.prepare_cached(&format!(
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
    const SQL: &str = "INSERT INTO directory_syncs (source, outcome, message, at, last_ok_at)
             VALUES (?1, ?2, ?3, ?4, CASE WHEN ?2 = 'ok' THEN ?4 END)
             ON CONFLICT (source) DO UPDATE SET outcome = excluded.outcome,
                 message = excluded.message, at = excluded.at,
                 last_ok_at = CASE WHEN excluded.outcome = 'ok' THEN excluded.at ELSE directory_syncs.last_ok_at END";
    let outcome = if ok { "ok" } else { "failed" };
    match c.on() {
        On::Sqlite(conn) => {
            conn.prepare_cached(SQL)?
                .execute(rusqlite::params![source, outcome, message, at])?;
        }
        On::Postgres(pg) => {
            pg.execute(
                sqlx::query(&dollars(SQL))
                    .bind(source)
                    .bind(outcome)
                    .bind(message)
                    .bind(at),
            )?;
        }
    }
    Ok(())
}

/// The last sync of every source that has run, by source.
pub async fn syncs(db: impl Into<Db<'_>>) -> Result<Vec<SyncRow>, StoreError> {
    const SQL: &str =
        "SELECT source, outcome, message, at, last_ok_at FROM directory_syncs ORDER BY source";
    inline(db, |c| -> Result<Vec<SyncRow>, StoreError> {
        match c.on() {
            On::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(SQL)?;
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
            }
            On::Postgres(pg) => Ok(pg
                .all(sqlx::query_as::<
                    _,
                    (String, String, String, i64, Option<i64>),
                >(&format!("{SQL} COLLATE \"C\"")))?
                .into_iter()
                .map(|(source, outcome, message, at, last_ok_at)| SyncRow {
                    source,
                    outcome,
                    message,
                    at,
                    last_ok_at,
                })
                .collect()),
        }
    })
    .await?
}

/// How many entries each source holds.
pub async fn counts(db: impl Into<Db<'_>>) -> Result<Vec<(String, i64)>, StoreError> {
    const SQL: &str =
        "SELECT source, count(*) FROM directory_entries GROUP BY source ORDER BY source";
    inline(db, |c| -> Result<Vec<(String, i64)>, StoreError> {
        match c.on() {
            On::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(SQL)?;
                let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            On::Postgres(pg) => pg.all(sqlx::query_as(&format!("{SQL} COLLATE \"C\""))),
        }
    })
    .await?
}
