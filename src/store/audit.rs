//! `audit_events`: append and read the hash-chained trail. Rows are never updated or deleted
//! (triggers enforce it).

use sqlx::SqliteExecutor;

use super::StoreError;

/// One stored audit event.
#[derive(Clone)]
pub struct AuditRow {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
    pub sig: Vec<u8>,
}

type Tuple = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
);

fn from_tuple(t: Tuple) -> AuditRow {
    AuditRow {
        seq: t.0,
        time: t.1,
        actor: t.2,
        action: t.3,
        target: t.4,
        outcome: t.5,
        details: t.6,
        prev_hash: t.7,
        hash: t.8,
        sig: t.9,
    }
}

const COLUMNS: &str = "seq, time, actor, action, target, outcome, details, prev_hash, hash, sig";

/// The newest event's `seq` and `hash`, if any.
pub async fn head(db: impl SqliteExecutor<'_>) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(db)
            .await?,
    )
}

pub async fn insert(db: impl SqliteExecutor<'_>, row: &AuditRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (seq, time, actor, action, target, outcome, details, prev_hash, hash, sig)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(row.seq)
    .bind(&row.time)
    .bind(&row.actor)
    .bind(&row.action)
    .bind(&row.target)
    .bind(&row.outcome)
    .bind(&row.details)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .bind(&row.sig)
    .execute(db)
    .await?;
    Ok(())
}

/// Events with `seq > after`, oldest first, at most `limit` of them (for paging through the
/// chain with constant memory).
pub async fn page_after(
    db: impl SqliteExecutor<'_>,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    let rows: Vec<Tuple> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(from_tuple).collect())
}

/// Events about one target, oldest first (a token's timeline).
pub async fn for_target(
    db: impl SqliteExecutor<'_>,
    target: &str,
) -> Result<Vec<AuditRow>, StoreError> {
    let rows: Vec<Tuple> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE target = ? ORDER BY seq"
    ))
    .bind(target)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(from_tuple).collect())
}

pub async fn count(db: impl SqliteExecutor<'_>) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(db)
        .await?)
}

/// Filters over the trail; all optional.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    /// RFC 3339 bounds, compared as text (all times are stored in one UTC format).
    pub since: Option<String>,
    pub until: Option<String>,
}

/// The newest `limit` events matching `filter`, newest first.
pub async fn recent(
    db: impl SqliteExecutor<'_>,
    filter: &AuditFilter,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
        "SELECT {COLUMNS} FROM audit_events WHERE 1 = 1"
    ));
    if let Some(actor) = &filter.actor {
        query.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(target) = &filter.target {
        query.push(" AND target = ").push_bind(target.clone());
    }
    if let Some(action) = &filter.action {
        query.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(since) = &filter.since {
        query.push(" AND time >= ").push_bind(since.clone());
    }
    if let Some(until) = &filter.until {
        query.push(" AND time < ").push_bind(until.clone());
    }
    query.push(" ORDER BY seq DESC LIMIT ").push_bind(limit);
    let rows: Vec<Tuple> = query.build_query_as().fetch_all(db).await?;
    Ok(rows.into_iter().map(from_tuple).collect())
}
