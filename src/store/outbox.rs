//! `outbox`: notices to token owners, written inside the transaction of the action they tell
//! of and sent afterwards by the server's sender task (`notices::sender`).

use rusqlite::OptionalExtension;

use super::{dollars, inline, Db, Inline, On, StoreError};

/// A notice as the action's transaction records it.
pub struct NewNotice<'a> {
    pub kind: &'a str,
    pub serial: &'a str,
    pub owner: &'a str,
    pub notify_manager: bool,
    /// JSON object of the facts the message tells.
    pub facts: &'a str,
    pub created_at: i64,
}

const INSERT: &str =
    "INSERT INTO outbox (kind, serial, owner, notify_manager, facts, created_at, next_attempt_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)";

/// Records a notice on a held connection (the reveal grant's group-commit transaction).
pub fn insert_on(c: &Inline<'_>, n: &NewNotice<'_>) -> Result<(), StoreError> {
    match c.on() {
        On::Sqlite(conn) => {
            conn.prepare_cached(INSERT)?.execute(rusqlite::params![
                n.kind,
                n.serial,
                n.owner,
                n.notify_manager,
                n.facts,
                n.created_at,
            ])?;
        }
        // The flag is a 0/1 BIGINT on PostgreSQL, as SQLite stores it.
        On::Postgres(pg) => {
            pg.execute(
                sqlx::query(&dollars(INSERT))
                    .bind(n.kind)
                    .bind(n.serial)
                    .bind(n.owner)
                    .bind(i64::from(n.notify_manager))
                    .bind(n.facts)
                    .bind(n.created_at),
            )?;
        }
    }
    Ok(())
}

/// Records a notice in `db` (inside the caller's write transaction).
pub async fn insert(db: impl Into<Db<'_>>, n: &NewNotice<'_>) -> Result<(), StoreError> {
    inline(db, |c| insert_on(c, n)).await?
}

/// A notice waiting to be sent.
#[derive(Debug, Clone)]
pub struct PendingNotice {
    pub id: i64,
    pub kind: String,
    pub serial: String,
    pub owner: String,
    pub notify_manager: bool,
    pub facts: String,
    pub created_at: i64,
    pub attempts: i64,
}

/// Pending notices due by `now` (all pending ones with `now = i64::MAX`), oldest first.
pub async fn due(
    db: impl Into<Db<'_>>,
    now: i64,
    limit: i64,
) -> Result<Vec<PendingNotice>, StoreError> {
    const SQL: &str = "SELECT id, kind, serial, owner, notify_manager, facts, created_at, attempts FROM outbox
             WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2";
    inline(db, |c| {
        let conn = match c.on() {
            On::Sqlite(conn) => conn,
            On::Postgres(pg) => {
                type Row = (i64, String, String, String, i64, String, i64, i64);
                let rows: Vec<Row> = pg.all(sqlx::query_as(&dollars(SQL)).bind(now).bind(limit))?;
                return Ok(rows
                    .into_iter()
                    .map(|r| PendingNotice {
                        id: r.0,
                        kind: r.1,
                        serial: r.2,
                        owner: r.3,
                        notify_manager: r.4 != 0,
                        facts: r.5,
                        created_at: r.6,
                        attempts: r.7,
                    })
                    .collect());
            }
        };
        let mut statement = conn.prepare_cached(SQL)?;
        let rows = statement
            .query_map([now, limit], |r| {
                Ok(PendingNotice {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    serial: r.get(2)?,
                    owner: r.get(3)?,
                    notify_manager: r.get(4)?,
                    facts: r.get(5)?,
                    created_at: r.get(6)?,
                    attempts: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
    .await?
}

/// How one attempt at a notice ended.
pub enum Attempt<'a> {
    /// Accepted by the mail server; `facts` is what the row keeps afterwards (without a
    /// delivery link's URL).
    Sent { recipients: &'a str, facts: &'a str },
    /// Not accepted this time; tried again at `retry_at`.
    Retry { error: &'a str, retry_at: i64 },
    /// Refused for good, or out of attempts.
    Failed { error: &'a str },
    /// Never tried: no SMTP server configured, or no address for the owner.
    Unsent { reason: &'a str },
}

/// Records the outcome of an attempt at notice `id`.
pub async fn record_attempt(
    db: impl Into<Db<'_>>,
    id: i64,
    at: i64,
    attempt: Attempt<'_>,
) -> Result<(), StoreError> {
    const SENT: &str = "UPDATE outbox SET state = 'sent', attempts = attempts + 1, sent_at = ?2,
                        recipients = ?3, facts = ?4, last_error = NULL WHERE id = ?1";
    const RETRY: &str =
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
                 WHERE id = ?1";
    // A row that will not be sent keeps no delivery link either: SQLite's json_remove,
    // PostgreSQL's jsonb `-` (facts is a JSON object as text on both).
    const FAILED: &str =
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ?2,
                        facts = json_remove(facts, '$.link') WHERE id = ?1";
    const FAILED_PG: &str =
        "UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $2,
                        facts = (CAST(facts AS jsonb) - 'link')::text WHERE id = $1";
    const UNSENT: &str = "UPDATE outbox SET state = 'unsent', last_error = ?2,
                        facts = json_remove(facts, '$.link') WHERE id = ?1";
    const UNSENT_PG: &str = "UPDATE outbox SET state = 'unsent', last_error = $2,
                        facts = (CAST(facts AS jsonb) - 'link')::text WHERE id = $1";
    inline(db, |c| {
        match (c.on(), attempt) {
            (On::Sqlite(conn), Attempt::Sent { recipients, facts }) => {
                conn.execute(SENT, rusqlite::params![id, at, recipients, facts])?;
            }
            (On::Sqlite(conn), Attempt::Retry { error, retry_at }) => {
                conn.execute(RETRY, rusqlite::params![id, retry_at, error])?;
            }
            (On::Sqlite(conn), Attempt::Failed { error }) => {
                conn.execute(FAILED, rusqlite::params![id, error])?;
            }
            (On::Sqlite(conn), Attempt::Unsent { reason }) => {
                conn.execute(UNSENT, rusqlite::params![id, reason])?;
            }
            (On::Postgres(pg), Attempt::Sent { recipients, facts }) => {
                pg.execute(
                    sqlx::query(&dollars(SENT))
                        .bind(id)
                        .bind(at)
                        .bind(recipients)
                        .bind(facts),
                )?;
            }
            (On::Postgres(pg), Attempt::Retry { error, retry_at }) => {
                pg.execute(
                    sqlx::query(&dollars(RETRY))
                        .bind(id)
                        .bind(retry_at)
                        .bind(error),
                )?;
            }
            (On::Postgres(pg), Attempt::Failed { error }) => {
                pg.execute(sqlx::query(FAILED_PG).bind(id).bind(error))?;
            }
            (On::Postgres(pg), Attempt::Unsent { reason }) => {
                pg.execute(sqlx::query(UNSENT_PG).bind(id).bind(reason))?;
            }
        }
        Ok(())
    })
    .await?
}

/// Notices by state, for the dashboard and `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
    pub unsent: i64,
}

pub async fn counts(db: impl Into<Db<'_>>) -> Result<OutboxCounts, StoreError> {
    const SQL: &str = "SELECT state, COUNT(*) FROM outbox GROUP BY state";
    inline(db, |c| {
        let mut counts = OutboxCounts::default();
        let rows: Vec<(String, i64)> = match c.on() {
            On::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(SQL)?;
                let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<Result<_, _>>()?
            }
            On::Postgres(pg) => pg.all(sqlx::query_as(SQL))?,
        };
        for (state, n) in rows {
            match state.as_str() {
                "pending" => counts.pending = n,
                "sent" => counts.sent = n,
                "failed" => counts.failed = n,
                _ => counts.unsent = n,
            }
        }
        Ok(counts)
    })
    .await?
}

/// One stored notice, as tests and `status` inspect it.
#[derive(Debug, Clone)]
pub struct NoticeRow {
    pub id: i64,
    pub kind: String,
    pub serial: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub recipients: Option<String>,
}

/// Every notice about `serial`, oldest first.
pub async fn for_serial(db: impl Into<Db<'_>>, serial: &str) -> Result<Vec<NoticeRow>, StoreError> {
    const SQL: &str = "SELECT id, kind, serial, state, attempts, last_error, recipients FROM outbox
             WHERE serial = ?1 ORDER BY id";
    inline(db, |c| {
        let conn = match c.on() {
            On::Sqlite(conn) => conn,
            On::Postgres(pg) => {
                type Row = (
                    i64,
                    String,
                    String,
                    String,
                    i64,
                    Option<String>,
                    Option<String>,
                );
                let rows: Vec<Row> = pg.all(sqlx::query_as(&dollars(SQL)).bind(serial))?;
                return Ok(rows
                    .into_iter()
                    .map(|r| NoticeRow {
                        id: r.0,
                        kind: r.1,
                        serial: r.2,
                        state: r.3,
                        attempts: r.4,
                        last_error: r.5,
                        recipients: r.6,
                    })
                    .collect());
            }
        };
        let mut statement = conn.prepare_cached(SQL)?;
        let rows = statement
            .query_map([serial], |r| {
                Ok(NoticeRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    serial: r.get(2)?,
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    last_error: r.get(5)?,
                    recipients: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
    .await?
}

/// The newest notice's id, if any (so a caller can wait for the ones after it).
pub async fn last_id(db: impl Into<Db<'_>>) -> Result<Option<i64>, StoreError> {
    const SQL: &str = "SELECT MAX(id) FROM outbox";
    inline(db, |c| match c.on() {
        On::Sqlite(conn) => Ok(conn.query_row(SQL, [], |r| r.get(0)).optional()?.flatten()),
        On::Postgres(pg) => Ok(pg
            .optional(sqlx::query_as::<_, (Option<i64>,)>(SQL))?
            .and_then(|(id,)| id)),
    })
    .await?
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::Store;

    async fn facts(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT facts FROM outbox ORDER BY id")
            .fetch_all(store.pool().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_notice_that_will_never_be_sent_keeps_no_delivery_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        for serial in ["S1", "S2", "S3"] {
            let notice = NewNotice {
                kind: "delivery-link",
                serial,
                owner: "a@example.org",
                notify_manager: false,
                facts: r#"{"operator":"hal","link":"https://vault.example.org/deliver/abc"}"#,
                created_at: 10,
            };
            insert(&store, &notice).await.unwrap();
        }
        let taken = due(&store, 10, 10).await.unwrap();
        assert_eq!(taken.len(), 3);
        record_attempt(&store, taken[0].id, 11, Attempt::Failed { error: "550" })
            .await
            .unwrap();
        record_attempt(
            &store,
            taken[1].id,
            11,
            Attempt::Unsent { reason: "no smtp" },
        )
        .await
        .unwrap();
        record_attempt(
            &store,
            taken[2].id,
            11,
            Attempt::Retry {
                error: "421",
                retry_at: 41,
            },
        )
        .await
        .unwrap();
        let kept = facts(&store).await;
        assert!(
            !kept[0].contains("/deliver/") && !kept[1].contains("/deliver/"),
            "{kept:?}"
        );
        // A notice still to be sent keeps what it must send.
        assert!(kept[2].contains("/deliver/abc"), "{kept:?}");
        assert!(due(&store, 40, 10).await.unwrap().is_empty());
        assert_eq!(due(&store, 41, 10).await.unwrap().len(), 1);
        assert_eq!(
            counts(&store).await.unwrap(),
            OutboxCounts {
                pending: 1,
                sent: 0,
                failed: 1,
                unsent: 1
            }
        );
    }
}
