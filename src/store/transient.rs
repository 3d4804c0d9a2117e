//! `transient.*` (PostgreSQL only): what several instances on one database share and SQLite
//! keeps in the one process's memory (issue #20): passkey ceremonies in flight and the events
//! of sliding-window rate limits. Sessions live beside them (`transient.sessions`, read and
//! written by tower-sessions' PostgreSQL store).
//!
//! Each function is one statement, or one short transaction holding a transaction-scoped
//! advisory lock, so that two instances cannot both pass a cap's or a limit's last slot. A
//! ceremony's state is secret-ish challenge material: it is only ever bound, never logged, and
//! its row is deleted when it is taken or expires.

use sqlx::PgPool;

use super::StoreError;

/// Advisory-lock classes (the first key of the two-int form, so they never meet a one-bigint
/// lock): a ceremony kind's global cap, a rate limit's key.
const CEREMONY_CAP_LOCK: i32 = 0x5356_0001;
const RATE_LIMIT_LOCK: i32 = 0x5356_0002;

/// Stores a ceremony, replacing its key's earlier one, and forgets the kind's expired ones, in
/// one statement: $1 kind, $2 key, $3 state, $4 expiry, $5 now, $6 client.
const UPSERT_CEREMONY: &str =
    "WITH swept AS (DELETE FROM transient.pending_ceremonies WHERE kind = $1 AND key <> $2 AND expires_at < $5)
     INSERT INTO transient.pending_ceremonies (kind, key, state, expires_at, client) VALUES ($1, $2, $3, $4, $6)
     ON CONFLICT (kind, key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at, client = excluded.client";

/// Stores `key`'s ceremony of `kind` (replacing an earlier one) and forgets the kind's expired
/// ones, in one statement.
pub async fn put_ceremony(
    pool: &PgPool,
    kind: &str,
    key: &str,
    state: &[u8],
    expires_at: i64,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(UPSERT_CEREMONY)
        .bind(kind)
        .bind(key)
        .bind(state)
        .bind(expires_at)
        .bind(now)
        .bind("")
        .execute(pool)
        .await?;
    Ok(())
}

/// Whether [`put_ceremony_within`] stored the ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Stored,
    /// `limit` unexpired ceremonies of the kind are stored.
    KindFull,
    /// `per_client` unexpired ceremonies of this client are stored; the oldest expires then.
    ClientFull {
        oldest_expires_at: i64,
    },
}

/// [`put_ceremony`] unless `limit` unexpired ceremonies of `kind`, or `per_client` of
/// `client`'s, are stored. The counts and the insert hold the kind's advisory lock, so
/// instances starting ceremonies at once cannot overshoot either cap.
#[allow(clippy::too_many_arguments)]
pub async fn put_ceremony_within(
    pool: &PgPool,
    kind: &str,
    key: &str,
    state: &[u8],
    expires_at: i64,
    now: i64,
    limit: i64,
    client: &str,
    per_client: i64,
) -> Result<Admission, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(CEREMONY_CAP_LOCK)
        .bind(kind)
        .execute(&mut *tx)
        .await?;
    let (theirs, oldest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), min(expires_at) FROM transient.pending_ceremonies
         WHERE kind = $1 AND client = $2 AND expires_at >= $3",
    )
    .bind(kind)
    .bind(client)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if theirs >= per_client {
        tx.rollback().await?;
        return Ok(Admission::ClientFull {
            oldest_expires_at: oldest.unwrap_or(now),
        });
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM transient.pending_ceremonies WHERE kind = $1 AND expires_at >= $2",
    )
    .bind(kind)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    if stored >= limit {
        tx.rollback().await?;
        return Ok(Admission::KindFull);
    }
    sqlx::query(UPSERT_CEREMONY)
        .bind(kind)
        .bind(key)
        .bind(state)
        .bind(expires_at)
        .bind(now)
        .bind(client)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Admission::Stored)
}

/// Takes `key`'s ceremony of `kind` out (`DELETE … RETURNING`: of any number of instances
/// asking at once, exactly one gets it), expired or not: its finish judges the expiry.
pub async fn take_ceremony(
    pool: &PgPool,
    kind: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar(
        "DELETE FROM transient.pending_ceremonies WHERE kind = $1 AND key = $2 RETURNING state",
    )
    .bind(kind)
    .bind(key)
    .fetch_optional(pool)
    .await?)
}

/// Deletes the ceremonies of `kind` that expired before `now`; how many.
pub async fn sweep_ceremonies_of(pool: &PgPool, kind: &str, now: i64) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM transient.pending_ceremonies WHERE kind = $1 AND expires_at < $2")
            .bind(kind)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// A sliding window: at most `max` events per `window_seconds` for each key of a limiter.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub max: i64,
    pub window_seconds: i64,
}

/// The limit-checking query: the `max`-th newest event inside the window, which exists exactly
/// when the window is full and leaves it when the next event is allowed.
const BLOCKING_EVENT: &str = "SELECT at FROM transient.rate_events
     WHERE limiter = $1 AND key = $2 AND at > $3 ORDER BY at DESC OFFSET $4 LIMIT 1";

fn retry_after(blocking: i64, window: Window, now: i64) -> u64 {
    u64::try_from(blocking + window.window_seconds - now)
        .unwrap_or(1)
        .max(1)
}

/// `Err(seconds)` until the next event for `key` is allowed, or `Ok(())`.
pub async fn check_rate(
    pool: &PgPool,
    limiter: &str,
    key: &str,
    window: Window,
    now: i64,
) -> Result<Result<(), u64>, StoreError> {
    if window.max <= 0 {
        return Ok(Err(u64::try_from(window.window_seconds)
            .unwrap_or(1)
            .max(1)));
    }
    let blocking: Option<i64> = sqlx::query_scalar(BLOCKING_EVENT)
        .bind(limiter)
        .bind(key)
        .bind(now - window.window_seconds)
        .bind(window.max - 1)
        .fetch_optional(pool)
        .await?;
    Ok(match blocking {
        Some(at) => Err(retry_after(at, window, now)),
        None => Ok(()),
    })
}

/// Counts one event for `key`, and forgets the key's events that left the window.
pub async fn record_rate(
    pool: &PgPool,
    limiter: &str,
    key: &str,
    window: Window,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH old AS (DELETE FROM transient.rate_events WHERE limiter = $1 AND key = $2 AND at <= $4)
         INSERT INTO transient.rate_events (limiter, key, at) VALUES ($1, $2, $3)",
    )
    .bind(limiter)
    .bind(key)
    .bind(now)
    .bind(now - window.window_seconds)
    .execute(pool)
    .await?;
    Ok(())
}

/// Checks and counts in one transaction under the key's advisory lock: `Ok(event id)` when
/// the event was allowed (and counted), `Err(seconds)` otherwise. Of attempts from any number
/// of instances at once, exactly as many as the window has room for are allowed.
pub async fn admit_rate(
    pool: &PgPool,
    limiter: &str,
    key: &str,
    window: Window,
    now: i64,
) -> Result<Result<i64, u64>, StoreError> {
    if window.max <= 0 {
        return Ok(Err(u64::try_from(window.window_seconds)
            .unwrap_or(1)
            .max(1)));
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2 || ':' || $3))")
        .bind(RATE_LIMIT_LOCK)
        .bind(limiter)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    let blocking: Option<i64> = sqlx::query_scalar(BLOCKING_EVENT)
        .bind(limiter)
        .bind(key)
        .bind(now - window.window_seconds)
        .bind(window.max - 1)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(at) = blocking {
        tx.rollback().await?;
        return Ok(Err(retry_after(at, window, now)));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO transient.rate_events (limiter, key, at) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(limiter)
    .bind(key)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(id))
}

/// Un-counts an event [`admit_rate`] counted (the attempt turned out not to count).
pub async fn forgive_rate(pool: &PgPool, id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM transient.rate_events WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes `limiter`'s events that left its window by `now`; how many.
pub async fn sweep_rate(
    pool: &PgPool,
    limiter: &str,
    window: Window,
    now: i64,
) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM transient.rate_events WHERE limiter = $1 AND at <= $2")
            .bind(limiter)
            .bind(now - window.window_seconds)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
