//! `delivery_links`: one-time links by which a token's owner confirms delivery themselves.
//! Only the SHA-256 of a link's token is stored.

use rusqlite::OptionalExtension;

use super::{dollars, inline, Db, On, StoreError};

/// A link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    pub id: i64,
    /// The token's row id.
    pub token: i64,
    pub expires_at: i64,
    pub wrong_codes: i64,
    /// `open`, `used`, `void` or `locked`.
    pub state: String,
}

/// Voids the token's open links and records a new one (inside the caller's transaction).
pub async fn replace(
    db: impl Into<Db<'_>>,
    token: i64,
    hash: &[u8],
    created_by: &str,
    created_at: i64,
    expires_at: i64,
) -> Result<u64, StoreError> {
    const VOID: &str =
        "UPDATE delivery_links SET state = 'void' WHERE token_id = ?1 AND state = 'open'";
    const INSERT: &str =
        "INSERT INTO delivery_links (token_id, link_hash, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)";
    inline(db, |c| match c.on() {
        On::Sqlite(conn) => {
            let voided = conn.execute(VOID, [token])?;
            conn.execute(
                INSERT,
                rusqlite::params![token, hash, created_by, created_at, expires_at],
            )?;
            Ok(voided as u64)
        }
        On::Postgres(pg) => {
            let voided = pg.execute(sqlx::query(&dollars(VOID)).bind(token))?;
            pg.execute(
                sqlx::query(&dollars(INSERT))
                    .bind(token)
                    .bind(hash)
                    .bind(created_by)
                    .bind(created_at)
                    .bind(expires_at),
            )?;
            Ok(voided)
        }
    })
    .await?
}

/// The link whose token hashes to `hash`, if any.
pub async fn by_hash(db: impl Into<Db<'_>>, hash: &[u8]) -> Result<Option<LinkRow>, StoreError> {
    const SQL: &str = "SELECT id, token_id, expires_at, wrong_codes, state FROM delivery_links
                 WHERE link_hash = ?1";
    inline(db, |c| match c.on() {
        On::Sqlite(conn) => Ok(conn
            .prepare_cached(SQL)?
            .query_row([hash], |r| {
                Ok(LinkRow {
                    id: r.get(0)?,
                    token: r.get(1)?,
                    expires_at: r.get(2)?,
                    wrong_codes: r.get(3)?,
                    state: r.get(4)?,
                })
            })
            .optional()?),
        On::Postgres(pg) => Ok(pg
            .optional(sqlx::query_as::<_, (i64, i64, i64, i64, String)>(&dollars(SQL)).bind(hash))?
            .map(|(id, token, expires_at, wrong_codes, state)| LinkRow {
                id,
                token,
                expires_at,
                wrong_codes,
                state,
            })),
    })
    .await?
}

/// Counts a wrong code on link `id`; at `lock_at` wrong codes the link is locked. Returns the
/// new count.
pub async fn count_wrong_code(
    db: impl Into<Db<'_>>,
    id: i64,
    lock_at: i64,
) -> Result<i64, StoreError> {
    const SQL: &str = "UPDATE delivery_links SET wrong_codes = wrong_codes + 1,
                    state = CASE WHEN wrong_codes + 1 >= ?2 THEN 'locked' ELSE state END
             WHERE id = ?1 RETURNING wrong_codes";
    inline(db, |c| match c.on() {
        On::Sqlite(conn) => Ok(conn.query_row(SQL, [id, lock_at], |r| r.get(0))?),
        On::Postgres(pg) => {
            let (n,): (i64,) = pg.one(sqlx::query_as(&dollars(SQL)).bind(id).bind(lock_at))?;
            Ok(n)
        }
    })
    .await?
}

/// Marks link `id` used (its delivery was confirmed).
pub async fn mark_used(db: impl Into<Db<'_>>, id: i64) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE delivery_links SET state = 'used' WHERE id = ?1";
    inline(db, |c| {
        match c.on() {
            On::Sqlite(conn) => {
                conn.execute(SQL, [id])?;
            }
            On::Postgres(pg) => {
                pg.execute(sqlx::query(&dollars(SQL)).bind(id))?;
            }
        }
        Ok(())
    })
    .await?
}
