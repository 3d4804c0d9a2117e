//! `approvals`: four-eyes requests and their decisions (one row per request). Read through
//! rusqlite like the token rows, since the reveal grant consumes an approval inline on its
//! group-commit connection.

use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use sqlx::Row as _;

use super::tokens::RevealWindow;
use super::{dollars, inline, Db, Inline, On, StoreError};

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

fn approval_pg(r: &sqlx::postgres::PgRow) -> Result<ApprovalRow, sqlx::Error> {
    Ok(ApprovalRow {
        id: r.try_get(0)?,
        token_row: r.try_get(1)?,
        serial: r.try_get(2)?,
        owner: r.try_get(3)?,
        requester_id: r.try_get(4)?,
        requester: r.try_get(5)?,
        policy: r.try_get(6)?,
        policy_hash: r.try_get(7)?,
        checks: r.try_get(8)?,
        ticket: r.try_get(9)?,
        note: r.try_get(10)?,
        binding: r.try_get(11)?,
        status: r.try_get(12)?,
        created_at: r.try_get(13)?,
        expires_at: r.try_get(14)?,
        decided_by_id: r.try_get(15)?,
        decided_by: r.try_get(16)?,
        decision: r.try_get(17)?,
        decided_at: r.try_get(18)?,
        reason: r.try_get(19)?,
        used_at: r.try_get(20)?,
    })
}

/// Approvals selected by `conditions` (SQL after `WHERE`, with `?` parameters, the same on
/// both engines).
fn select(
    c: &Inline<'_>,
    conditions: &str,
    params: &[Value],
) -> Result<Vec<ApprovalRow>, StoreError> {
    match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(&format!("{SELECT} WHERE {conditions}"))?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(params), approval_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        }
        On::Postgres(pg) => {
            let sql = dollars(&format!("{SELECT} WHERE {conditions}"));
            let mut query = sqlx::query(&sql);
            for value in params {
                query = match value {
                    Value::Integer(n) => query.bind(*n),
                    Value::Text(text) => query.bind(text.as_str()),
                    Value::Null => query.bind(None::<i64>),
                    Value::Real(x) => query.bind(*x),
                    Value::Blob(bytes) => query.bind(bytes.as_slice()),
                };
            }
            let rows = pg.rows(query)?;
            Ok(rows
                .iter()
                .map(approval_pg)
                .collect::<Result<_, sqlx::Error>>()?)
        }
    }
}

/// `policy IN` the policies of a JSON array bound as text: SQLite's `json_each`, PostgreSQL's
/// `jsonb_array_elements_text`.
fn in_policies(c: &Inline<'_>, column: &str) -> String {
    match c.on() {
        On::Sqlite(_) => format!("{column} IN (SELECT value FROM json_each(?))"),
        On::Postgres(_) => {
            format!("{column} IN (SELECT jsonb_array_elements_text(CAST(? AS jsonb)))")
        }
    }
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
    const SQL: &str =
        "INSERT INTO approvals (token_id, requester_id, policy, policy_hash, checks, ticket, note, \
             binding, status, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)";
    let conn = match c.on() {
        On::Sqlite(conn) => conn,
        On::Postgres(pg) => {
            let (id,): (i64,) = pg.one(
                sqlx::query_as(&dollars(&format!("{SQL} RETURNING id")))
                    .bind(a.token_row)
                    .bind(a.requester_id)
                    .bind(a.policy)
                    .bind(a.policy_hash)
                    .bind(a.checks)
                    .bind(a.ticket)
                    .bind(a.note)
                    .bind(a.binding)
                    .bind(a.created_at)
                    .bind(a.expires_at),
            )?;
            return Ok(id);
        }
    };
    conn.prepare_cached(SQL)?.execute(rusqlite::params![
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
    Ok(conn.last_insert_rowid())
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
            &format!(
                "a.status = 'pending' AND a.expires_at >= ? AND a.requester_id != ? \
                 AND {} ORDER BY a.created_at, a.id LIMIT 200",
                in_policies(c, "a.policy")
            ),
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
        let sql = format!(
            "SELECT COUNT(*) FROM approvals WHERE status = 'pending' AND expires_at >= ? \
             AND requester_id != ? AND {}",
            in_policies(c, "policy")
        );
        match c.on() {
            On::Sqlite(conn) => Ok(conn
                .prepare_cached(&sql)?
                .query_row(rusqlite::params![now, viewer, list], |r| r.get(0))?),
            On::Postgres(pg) => {
                let (n,): (i64,) = pg.one(
                    sqlx::query_as(&dollars(&sql))
                        .bind(now)
                        .bind(viewer)
                        .bind(&list),
                )?;
                Ok(n)
            }
        }
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
    const SQL: &str = "UPDATE approvals SET status = 'expired' WHERE id = ?1 \
             AND (status = 'pending' OR status = 'approved') AND expires_at < ?2";
    Ok(match c.on() {
        On::Sqlite(conn) => conn.prepare_cached(SQL)?.execute([id, now])? as u64,
        On::Postgres(pg) => pg.execute(sqlx::query(&dollars(SQL)).bind(id).bind(now))?,
    } == 1)
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
    const SQL: &str =
        "UPDATE approvals SET status = ?1, decision = ?1, decided_by = ?2, decided_at = ?3, \
             reason = ?4, expires_at = ?5 WHERE id = ?6 AND status = 'pending' AND expires_at >= ?3";
    let status = if d.approved { "approved" } else { "denied" };
    Ok(match c.on() {
        On::Sqlite(conn) => conn.prepare_cached(SQL)?.execute(rusqlite::params![
            status,
            d.by,
            d.at,
            d.reason,
            d.expires_at,
            d.id
        ])? as u64,
        On::Postgres(pg) => pg.execute(
            sqlx::query(&dollars(SQL))
                .bind(status)
                .bind(d.by)
                .bind(d.at)
                .bind(d.reason)
                .bind(d.expires_at)
                .bind(d.id),
        )?,
    } == 1)
}

/// Voids a pending or approved request (what it bound has changed); whether it was.
pub fn void_on(c: &Inline<'_>, id: i64) -> Result<bool, StoreError> {
    const SQL: &str = "UPDATE approvals SET status = 'void' WHERE id = ?1 \
             AND (status = 'pending' OR status = 'approved')";
    Ok(match c.on() {
        On::Sqlite(conn) => conn.prepare_cached(SQL)?.execute([id])? as u64,
        On::Postgres(pg) => pg.execute(sqlx::query(&dollars(SQL)).bind(id))?,
    } == 1)
}

/// Consumes an approval for the reveal it approved: only while approved, unexpired and bound
/// to exactly this reveal. Whether it was (at most one reveal ever gets `true`).
pub fn use_on(c: &Inline<'_>, id: i64, binding: &str, at: i64) -> Result<bool, StoreError> {
    const SQL: &str =
        "UPDATE approvals SET status = 'used', used_at = ?3 WHERE id = ?1 AND status = 'approved' \
             AND expires_at >= ?3 AND binding = ?2";
    Ok(match c.on() {
        On::Sqlite(conn) => conn
            .prepare_cached(SQL)?
            .execute(rusqlite::params![id, binding, at])? as u64,
        On::Postgres(pg) => {
            pg.execute(sqlx::query(&dollars(SQL)).bind(id).bind(binding).bind(at))?
        }
    } == 1)
}

/// The approvals `operator` granted since `since` (their approval limit), counted in the index.
pub async fn approved_by_since(
    db: impl Into<Db<'_>>,
    operator: i64,
    since: i64,
) -> Result<RevealWindow, StoreError> {
    inline(db, |c| approved_by_since_on(c, operator, since)).await?
}

/// Serialises an approval's limit check (`reveals_per_operator_per_hour` of approvals) and its
/// decision with the approver's other approvals across connections and instances, as
/// [`super::tokens::lock_reveal_limits_on`] does for reveals. Take it before any other lock.
pub fn lock_approvals_by_on(c: &Inline<'_>, approver: i64) -> Result<(), StoreError> {
    if let On::Postgres(pg) = c.on() {
        pg.execute(
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(super::tokens::REVEAL_LIMIT_LOCK)
                .bind(format!("approver:{approver}")),
        )?;
    }
    Ok(())
}

/// [`approved_by_since`] on a held connection.
pub fn approved_by_since_on(
    c: &Inline<'_>,
    operator: i64,
    since: i64,
) -> Result<RevealWindow, StoreError> {
    const SQL: &str = "SELECT COUNT(*), MIN(decided_at) FROM approvals \
             WHERE decided_by = ?1 AND decided_at > ?2 AND decision = 'approved'";
    match c.on() {
        On::Sqlite(conn) => Ok(conn
            .prepare_cached(SQL)?
            .query_row([operator, since], |r| {
                Ok(RevealWindow {
                    count: r.get(0)?,
                    oldest: r.get(1)?,
                })
            })
            .optional()?
            .unwrap_or_default()),
        On::Postgres(pg) => Ok(pg
            .optional(
                sqlx::query_as::<_, (i64, Option<i64>)>(&dollars(SQL))
                    .bind(operator)
                    .bind(since),
            )?
            .map(|(count, oldest)| RevealWindow { count, oldest })
            .unwrap_or_default()),
    }
}
