//! `approvals`: four-eyes requests and their decisions (one row per request). Read through
//! rusqlite like the token rows, since the reveal grant consumes an approval inline on its
//! group-commit connection.

use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::tokens::RevealWindow;
use super::{inline, Db, Inline, StoreError};

/// One approval as stored, with the names the views need joined in.
#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: i64,
    pub token_row: i64,
    pub serial: String,
    pub owner: Option<String>,
    pub requester_id: i64,
    pub requester: String,
    pub policy: String,
    pub policy_hash: String,
    /// JSON array of check ids.
    pub checks: String,
    pub ticket: Option<String>,
    pub note: Option<String>,
    pub binding: String,
    pub status: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_by_id: Option<i64>,
    pub decided_by: Option<String>,
    pub decision: Option<String>,
    pub decided_at: Option<i64>,
    pub reason: Option<String>,
    pub used_at: Option<i64>,
}

const SELECT: &str =
    "SELECT a.id, a.token_id, t.serial, t.owner, a.requester_id, r.name, a.policy, \
     a.policy_hash, a.checks, a.ticket, a.note, a.binding, a.status, a.created_at, a.expires_at, \
     a.decided_by, d.name, a.decision, a.decided_at, a.reason, a.used_at \
     FROM approvals a JOIN tokens t ON t.id = a.token_id JOIN operators r ON r.id = a.requester_id \
     LEFT JOIN operators d ON d.id = a.decided_by";

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: r.get(0)?,
        token_row: r.get(1)?,
        serial: r.get(2)?,
        owner: r.get(3)?,
        requester_id: r.get(4)?,
        requester: r.get(5)?,
        policy: r.get(6)?,
        policy_hash: r.get(7)?,
        checks: r.get(8)?,
        ticket: r.get(9)?,
        note: r.get(10)?,
        binding: r.get(11)?,
        status: r.get(12)?,
        created_at: r.get(13)?,
        expires_at: r.get(14)?,
        decided_by_id: r.get(15)?,
        decided_by: r.get(16)?,
        decision: r.get(17)?,
        decided_at: r.get(18)?,
        reason: r.get(19)?,
        used_at: r.get(20)?,
    })
}

fn select(
    c: &Inline<'_>,
    conditions: &str,
    params: &[Value],
) -> Result<Vec<ApprovalRow>, StoreError> {
    let mut statement = c
        .conn
        .prepare_cached(&format!("{SELECT} WHERE {conditions}"))?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(params), approval_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A request to store.
pub struct NewApproval<'a> {
    pub token_row: i64,
    pub requester_id: i64,
    pub policy: &'a str,
    pub policy_hash: &'a str,
    pub checks: &'a str,
    pub ticket: Option<&'a str>,
    pub note: Option<&'a str>,
    pub binding: &'a str,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Stores a pending request; its id.
pub fn insert_on(c: &Inline<'_>, a: &NewApproval<'_>) -> Result<i64, StoreError> {
    c.conn
        .prepare_cached(
            "INSERT INTO approvals (token_id, requester_id, policy, policy_hash, checks, ticket, note, \
             binding, status, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        )?
        .execute(rusqlite::params![
            a.token_row,
            a.requester_id,
            a.policy,
            a.policy_hash,
            a.checks,
            a.ticket,
            a.note,
            a.binding,
            a.created_at,
            a.expires_at,
        ])?;
    Ok(c.conn.last_insert_rowid())
}

/// The approval with `id`, if any.
pub async fn by_id(db: impl Into<Db<'_>>, id: i64) -> Result<Option<ApprovalRow>, StoreError> {
    inline(db, |c| by_id_on(c, id)).await?
}

/// [`by_id`] on a held connection.
pub fn by_id_on(c: &Inline<'_>, id: i64) -> Result<Option<ApprovalRow>, StoreError> {
    Ok(select(c, "a.id = ?", &[id.into()])?.pop())
}

/// Pending, unexpired requests under `policies` that `viewer` did not make, oldest first.
pub async fn pending(
    db: impl Into<Db<'_>>,
    policies: &[String],
    viewer: i64,
    now: i64,
) -> Result<Vec<ApprovalRow>, StoreError> {
    let list = serde_json::Value::from(policies).to_string();
    inline(db, |c| {
        select(
            c,
            "a.status = 'pending' AND a.expires_at >= ? AND a.requester_id != ? \
             AND a.policy IN (SELECT value FROM json_each(?)) ORDER BY a.created_at, a.id LIMIT 200",
            &[now.into(), viewer.into(), list.into()],
        )
    })
    .await?
}

/// How many requests [`pending`] would list: one COUNT in the status index, for the header.
pub async fn count_pending(
    db: impl Into<Db<'_>>,
    policies: &[String],
    viewer: i64,
    now: i64,
) -> Result<i64, StoreError> {
    let list = serde_json::Value::from(policies).to_string();
    inline(db, |c| {
        Ok(c.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires_at >= ?1 \
                 AND requester_id != ?2 AND policy IN (SELECT value FROM json_each(?3))",
            )?
            .query_row(rusqlite::params![now, viewer, list], |r| r.get(0))?)
    })
    .await?
}

/// Pending or approved requests whose time ran out before `now` (for the sweeper).
pub async fn overdue(db: impl Into<Db<'_>>, now: i64) -> Result<Vec<ApprovalRow>, StoreError> {
    inline(db, |c| {
        select(
            c,
            "(a.status = 'pending' OR a.status = 'approved') AND a.expires_at < ? LIMIT 100",
            &[now.into()],
        )
    })
    .await?
}

/// Marks a pending or approved request whose time ran out as expired; whether it was.
pub fn expire_on(c: &Inline<'_>, id: i64, now: i64) -> Result<bool, StoreError> {
    Ok(c.conn
        .prepare_cached(
            "UPDATE approvals SET status = 'expired' WHERE id = ?1 \
             AND (status = 'pending' OR status = 'approved') AND expires_at < ?2",
        )?
        .execute([id, now])?
        == 1)
}

/// A decision on a pending request.
pub struct Decision<'a> {
    pub id: i64,
    pub by: i64,
    pub approved: bool,
    pub at: i64,
    pub reason: Option<&'a str>,
    /// The new end of the approval's life (an approval is usable for the TTL from its decision).
    pub expires_at: i64,
}

/// Records a decision if the request is still pending and unexpired; whether it was.
pub fn decide_on(c: &Inline<'_>, d: &Decision<'_>) -> Result<bool, StoreError> {
    let status = if d.approved { "approved" } else { "denied" };
    Ok(c.conn
        .prepare_cached(
            "UPDATE approvals SET status = ?1, decision = ?1, decided_by = ?2, decided_at = ?3, \
             reason = ?4, expires_at = ?5 WHERE id = ?6 AND status = 'pending' AND expires_at >= ?3",
        )?
        .execute(rusqlite::params![
            status,
            d.by,
            d.at,
            d.reason,
            d.expires_at,
            d.id
        ])?
        == 1)
}

/// Voids a pending or approved request (what it bound has changed); whether it was.
pub fn void_on(c: &Inline<'_>, id: i64) -> Result<bool, StoreError> {
    Ok(c.conn
        .prepare_cached(
            "UPDATE approvals SET status = 'void' WHERE id = ?1 \
             AND (status = 'pending' OR status = 'approved')",
        )?
        .execute([id])?
        == 1)
}

/// Consumes an approval for the reveal it approved: only while approved, unexpired and bound
/// to exactly this reveal. Whether it was (at most one reveal ever gets `true`).
pub fn use_on(c: &Inline<'_>, id: i64, binding: &str, at: i64) -> Result<bool, StoreError> {
    Ok(c.conn
        .prepare_cached(
            "UPDATE approvals SET status = 'used', used_at = ?3 WHERE id = ?1 AND status = 'approved' \
             AND expires_at >= ?3 AND binding = ?2",
        )?
        .execute(rusqlite::params![id, binding, at])?
        == 1)
}

/// The approvals `operator` granted since `since` (their approval limit), counted in the index.
pub async fn approved_by_since(
    db: impl Into<Db<'_>>,
    operator: i64,
    since: i64,
) -> Result<RevealWindow, StoreError> {
    inline(db, |c| approved_by_since_on(c, operator, since)).await?
}

/// [`approved_by_since`] on a held connection.
pub fn approved_by_since_on(
    c: &Inline<'_>,
    operator: i64,
    since: i64,
) -> Result<RevealWindow, StoreError> {
    Ok(c.conn
        .prepare_cached(
            "SELECT COUNT(*), MIN(decided_at) FROM approvals \
             WHERE decided_by = ?1 AND decided_at > ?2 AND decision = 'approved'",
        )?
        .query_row([operator, since], |r| {
            Ok(RevealWindow {
                count: r.get(0)?,
                oldest: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}
