//! `delivery_links`: one-time links by which a token's owner confirms delivery themselves.
//! Only the SHA-256 of a link's token is stored.

use rusqlite::OptionalExtension;

use super::{inline, Db, StoreError};

/// A link as stored.
#[derive(Debug, Clone)]
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
    inline(db, |c| {
        let voided = c.conn.execute(
            "UPDATE delivery_links SET state = 'void' WHERE token_id = ?1 AND state = 'open'",
            [token],
        )?;
        c.conn.execute(
            "INSERT INTO delivery_links (token_id, link_hash, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![token, hash, created_by, created_at, expires_at],
        )?;
        Ok(voided as u64)
    })
    .await?
}

/// The link whose token hashes to `hash`, if any.
pub async fn by_hash(db: impl Into<Db<'_>>, hash: &[u8]) -> Result<Option<LinkRow>, StoreError> {
    inline(db, |c| {
        Ok(c.conn
            .prepare_cached(
                "SELECT id, token_id, expires_at, wrong_codes, state FROM delivery_links
                 WHERE link_hash = ?1",
            )?
            .query_row([hash], |r| {
                Ok(LinkRow {
                    id: r.get(0)?,
                    token: r.get(1)?,
                    expires_at: r.get(2)?,
                    wrong_codes: r.get(3)?,
                    state: r.get(4)?,
                })
            })
            .optional()?)
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
    inline(db, |c| {
        Ok(c.conn.query_row(
            "UPDATE delivery_links SET wrong_codes = wrong_codes + 1,
                    state = CASE WHEN wrong_codes + 1 >= ?2 THEN 'locked' ELSE state END
             WHERE id = ?1 RETURNING wrong_codes",
            [id, lock_at],
            |r| r.get(0),
        )?)
    })
    .await?
}

/// Marks link `id` used (its delivery was confirmed).
pub async fn mark_used(db: impl Into<Db<'_>>, id: i64) -> Result<(), StoreError> {
    inline(db, |c| {
        c.conn.execute(
            "UPDATE delivery_links SET state = 'used' WHERE id = ?1",
            [id],
        )?;
        Ok(())
    })
    .await?
}
