//! `tokens`, `reveals` and `delivery_attempts`: token metadata, lifecycle state, the nullable
//! sealed seed, and the counters behind the rate limits.
//!
//! Token rows are read through rusqlite (one column mapping, `token_row`) because the reveal
//! grant reads them inline on the write connection ([`super::WriteTx::inline`]); the other
//! readers share that mapping.

use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::{conn, inline, Db, Inline, StoreError, WriteTx};

/// A token's stored metadata. Deliberately without the sealed seed: that is read only by
/// [`sealed_seed`] and [`by_serial_with_seed_on`], on the reveal and delivery paths.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub token_id: String,
    pub serial: String,
    pub owner: Option<String>,
    pub display_name: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub t0: i64,
    pub drift_steps: i64,
    pub policy: String,
    pub state: String,
    pub captured_by: String,
    pub captured_at: i64,
    pub retention_deadline: i64,
    pub delivered_at: Option<i64>,
    pub delivered_by: Option<String>,
    pub purged_at: Option<i64>,
    pub purge_reason: Option<String>,
    pub shipping: ShippingRow,
}

/// A token's check against its device and its journey in the post (migration 20261202002301).
#[derive(Debug, Clone, Default)]
pub struct ShippingRow {
    pub verified_at: Option<i64>,
    pub verified_by: Option<String>,
    pub shipped_at: Option<i64>,
    pub shipped_by: Option<String>,
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    /// `YYYY-MM-DD`.
    pub expected: Option<String>,
}

const COLUMNS: &str = "id, token_id, serial, owner, display_name, manufacturer, model, algorithm, digits, period, t0, \
     drift_steps, policy, state, captured_by, captured_at, retention_deadline, delivered_at, delivered_by, purged_at, purge_reason, \
     verified_at, verified_by, shipped_at, shipped_by, carrier, tracking, expected";

/// The rows readers may see: not those of a bulk import that has not committed (or never
/// will: failed, abandoned, being deleted). Every read of `tokens` carries it (`VISIBLE_T`:
/// for `tokens t`); see `store::imports`. A row imported in chunks stays tagged after its
/// import commits, so this costs one primary-key lookup per such row.
pub const VISIBLE: &str = "(import_id IS NULL OR EXISTS (SELECT 1 FROM imports WHERE imports.id = import_id AND imports.committed_at IS NOT NULL))";

/// [`VISIBLE`] for `tokens` aliased as `t`.
pub const VISIBLE_T: &str = "(t.import_id IS NULL OR EXISTS (SELECT 1 FROM imports WHERE imports.id = t.import_id AND imports.committed_at IS NOT NULL))";

/// How many columns [`COLUMNS`] names: the index of a column selected after them.
const COLUMN_COUNT: usize = 28;

/// A row selected as [`COLUMNS`] (and possibly more columns after them).
fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        token_id: r.get(1)?,
        serial: r.get(2)?,
        owner: r.get(3)?,
        display_name: r.get(4)?,
        manufacturer: r.get(5)?,
        model: r.get(6)?,
        algorithm: r.get(7)?,
        digits: r.get(8)?,
        period: r.get(9)?,
        t0: r.get(10)?,
        drift_steps: r.get(11)?,
        policy: r.get(12)?,
        state: r.get(13)?,
        captured_by: r.get(14)?,
        captured_at: r.get(15)?,
        retention_deadline: r.get(16)?,
        delivered_at: r.get(17)?,
        delivered_by: r.get(18)?,
        purged_at: r.get(19)?,
        purge_reason: r.get(20)?,
        shipping: ShippingRow {
            verified_at: r.get(21)?,
            verified_by: r.get(22)?,
            shipped_at: r.get(23)?,
            shipped_by: r.get(24)?,
            carrier: r.get(25)?,
            tracking: r.get(26)?,
            expected: r.get(27)?,
        },
    })
}

/// Visible tokens selected by `conditions` (SQL after `WHERE … AND`, with `?` parameters; no
/// top-level `OR`), as [`TokenRow`]s.
pub(super) fn select_rows(
    conn: &rusqlite::Connection,
    conditions: &str,
    params: &[Value],
) -> Result<Vec<TokenRow>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tokens WHERE {VISIBLE} AND {conditions}"
    ))?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(params), token_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub struct NewTokenRow<'a> {
    pub token_id: &'a str,
    pub serial: &'a str,
    pub owner: Option<&'a str>,
    pub display_name: Option<&'a str>,
    pub manufacturer: Option<&'a str>,
    pub model: Option<&'a str>,
    pub algorithm: &'a str,
    pub digits: u32,
    pub period: u32,
    pub policy: &'a str,
    pub sealed_seed: &'a [u8],
    pub captured_by: &'a str,
    pub captured_at: i64,
    pub retention_deadline: i64,
}

/// An escrowed token's insert; the last parameter is its chunked import (NULL: none).
const INSERT: &str =
    "INSERT INTO tokens (token_id, serial, owner, display_name, manufacturer, model, algorithm, digits, period, policy,
                         state, sealed_seed, captured_by, captured_at, retention_deadline, import_id)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'escrowed', ?, ?, ?, ?, ?)";

fn insert_with(
    statement: &mut rusqlite::Statement<'_>,
    t: &NewTokenRow<'_>,
    import_id: Option<i64>,
) -> Result<(), StoreError> {
    statement.execute(rusqlite::params![
        t.token_id,
        t.serial,
        t.owner,
        t.display_name,
        t.manufacturer,
        t.model,
        t.algorithm,
        t.digits,
        t.period,
        t.policy,
        t.sealed_seed,
        t.captured_by,
        t.captured_at,
        t.retention_deadline,
        import_id,
    ])?;
    Ok(())
}

/// Inserts one escrowed token; a duplicate serial is a unique violation
/// ([`StoreError::is_unique_violation`]).
pub async fn insert(db: impl Into<Db<'_>>, t: &NewTokenRow<'_>) -> Result<(), StoreError> {
    inline(db, |c| {
        let mut statement = c.sqlite()?.prepare_cached(INSERT)?;
        insert_with(&mut statement, t, None)
    })
    .await?
}

/// Inserts one generated token in the `programming` state with its `token_programming` row
/// (`shown_at` set when the seed is shown in the same reply); returns the token's row id. A
/// duplicate serial is a unique violation, as for [`insert`].
pub async fn insert_programming(
    tx: &mut WriteTx,
    t: &NewTokenRow<'_>,
    shown_at: Option<i64>,
) -> Result<i64, StoreError> {
    inline(&mut *tx, |c| {
        c.sqlite()?.execute(
            "INSERT INTO tokens (token_id, serial, owner, display_name, manufacturer, model, algorithm, digits, period,
                                 policy, state, sealed_seed, captured_by, captured_at, retention_deadline)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'programming', ?, ?, ?, ?)",
            rusqlite::params![
                t.token_id,
                t.serial,
                t.owner,
                t.display_name,
                t.manufacturer,
                t.model,
                t.algorithm,
                t.digits,
                t.period,
                t.policy,
                t.sealed_seed,
                t.captured_by,
                t.captured_at,
                t.retention_deadline,
            ],
        )?;
        let id = c.sqlite()?.last_insert_rowid();
        c.sqlite()?.execute(
            "INSERT INTO token_programming (token_id, generated_by, shown_at) VALUES (?, ?, ?)",
            rusqlite::params![id, t.captured_by, shown_at],
        )?;
        Ok::<i64, StoreError>(id)
    })
    .await?
}

/// Marks a generated seed as shown, if it was not yet and `actor` generated it; true when this
/// call did (so the caller, and only this caller, may show it).
pub async fn mark_seed_shown(
    tx: &mut WriteTx,
    id: i64,
    actor: &str,
    at: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE token_programming SET shown_at = ? WHERE token_id = ? AND generated_by = ? AND shown_at IS NULL",
    )
    .bind(at)
    .bind(id)
    .bind(actor)
    .execute(tx.sqlite()?)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A programming token's device answered with a valid code: it becomes escrowed, with the
/// drift measured. False if it was no longer programming.
pub async fn finish_programming(
    tx: &mut WriteTx,
    id: i64,
    drift_steps: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE tokens SET state = 'escrowed', drift_steps = ? WHERE id = ? AND state = 'programming'",
    )
    .bind(drift_steps)
    .bind(id)
    .execute(tx.sqlite()?)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that an escrowed token's seed matched its device: the drift found, who and when.
/// False when the token is no longer escrowed.
pub async fn record_verified(
    tx: &mut WriteTx,
    id: i64,
    drift_steps: i64,
    at: i64,
    by: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE tokens SET drift_steps = ?, verified_at = ?, verified_by = ? WHERE id = ? AND state = 'escrowed'",
    )
    .bind(drift_steps)
    .bind(at)
    .bind(by)
    .bind(id)
    .execute(tx.sqlite()?)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A shipment to record on an escrowed token.
pub struct ShipmentRow<'a> {
    pub id: i64,
    pub at: i64,
    pub by: &'a str,
    pub carrier: Option<&'a str>,
    pub tracking: Option<&'a str>,
    pub expected: Option<&'a str>,
}

/// Records a shipment (replacing an earlier one). False when the token is no longer escrowed.
pub async fn record_shipment(tx: &mut WriteTx, s: &ShipmentRow<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE tokens SET shipped_at = ?, shipped_by = ?, carrier = ?, tracking = ?, expected = ?
         WHERE id = ? AND state = 'escrowed'",
    )
    .bind(s.at)
    .bind(s.by)
    .bind(s.carrier)
    .bind(s.tracking)
    .bind(s.expected)
    .bind(s.id)
    .execute(tx.sqlite()?)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Escrowed tokens in the post: how many, how many past their expected date (`today`,
/// `YYYY-MM-DD`), and how many whose seed reaches its retention deadline before `soon`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InTransit {
    pub in_transit: i64,
    pub late: i64,
    pub nearing_retention: i64,
}

pub async fn in_transit(
    db: impl Into<Db<'_>>,
    today: &str,
    soon: i64,
) -> Result<InTransit, StoreError> {
    let today = today.to_owned();
    inline(db, move |c| {
        Ok(c.sqlite()?
            .prepare_cached(&format!(
                "SELECT COUNT(*), COUNT(CASE WHEN expected < ?1 THEN 1 END),
                        COUNT(CASE WHEN retention_deadline < ?2 THEN 1 END)
                 FROM tokens WHERE shipped_at IS NOT NULL AND state = 'escrowed' AND {VISIBLE}"
            ))?
            .query_row(rusqlite::params![today, soon], |r| {
                Ok(InTransit {
                    in_transit: r.get(0)?,
                    late: r.get(1)?,
                    nearing_retention: r.get(2)?,
                })
            })?)
    })
    .await?
}

/// The token with `serial`, if any.
pub async fn by_serial(
    db: impl Into<Db<'_>>,
    serial: &str,
) -> Result<Option<TokenRow>, StoreError> {
    inline(db, |c| by_serial_on(c, serial)).await?
}

/// The token with row id `id`, if any.
pub async fn by_id(db: impl Into<Db<'_>>, id: i64) -> Result<Option<TokenRow>, StoreError> {
    inline(db, |c| {
        Ok(select_rows(c.sqlite()?, "id = ?", &[id.into()])?.pop())
    })
    .await?
}

/// [`by_serial`] on a held connection.
pub fn by_serial_on(c: &Inline<'_>, serial: &str) -> Result<Option<TokenRow>, StoreError> {
    Ok(select_rows(c.sqlite()?, "serial = ?", &[serial.to_owned().into()])?.pop())
}

/// Which of `serials` already exist (for import's duplicate check), each with whether it is
/// visible (false: it belongs to an import that has not committed, whose serials are taken
/// all the same). One statement and one bound value however many serials: they travel as a
/// JSON array that `json_each` unpacks inside SQLite, which then looks each one up in the
/// `serial` index.
pub async fn existing_serials(
    db: impl Into<Db<'_>>,
    serials: &[&str],
) -> Result<Vec<(String, bool)>, StoreError> {
    if serials.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::Value::from(serials).to_string();
    Ok(sqlx::query_as(&format!(
        "SELECT serial, {VISIBLE} FROM tokens WHERE serial IN (SELECT value FROM json_each(?))"
    ))
    .bind(list)
    .fetch_all(&mut *conn(db).await?)
    .await?)
}

/// The sealed seed of an escrowed token (`None` once purged).
pub async fn sealed_seed(db: impl Into<Db<'_>>, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT sealed_seed FROM tokens WHERE id = ? AND {VISIBLE}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn(db).await?)
    .await?
    .flatten())
}

/// A token's row and its sealed seed (`None` once purged).
pub struct TokenWithSeed {
    pub row: TokenRow,
    pub sealed_seed: Option<Vec<u8>>,
}

/// A token's row together with its sealed seed, in one statement (the reveal grant).
pub fn by_serial_with_seed_on(
    c: &Inline<'_>,
    serial: &str,
) -> Result<Option<TokenWithSeed>, StoreError> {
    let mut statement = c.sqlite()?.prepare_cached(&format!(
        "SELECT {COLUMNS}, sealed_seed FROM tokens WHERE serial = ?1 AND {VISIBLE}"
    ))?;
    Ok(statement
        .query_row([serial], |r| {
            Ok(TokenWithSeed {
                row: token_row(r)?,
                sealed_seed: r.get(COLUMN_COUNT)?,
            })
        })
        .optional()?)
}

/// A sealed seed to re-seal under a rotation's new key.
pub struct SealedSeedRow {
    pub id: i64,
    pub token_id: String,
    pub serial: String,
    pub sealed_seed: Vec<u8>,
}

/// Up to `limit` escrowed seeds with `id > after` whose blob does not start with `header` (the
/// new key's version and generation), in id order: a rotation's next batch.
pub async fn sealed_not_under(
    db: impl Into<Db<'_>>,
    header: &[u8],
    after: i64,
    limit: i64,
) -> Result<Vec<SealedSeedRow>, StoreError> {
    inline(db, |c| {
        let mut statement = c.sqlite()?.prepare_cached(
            "SELECT id, token_id, serial, sealed_seed FROM tokens
             WHERE id > ?2 AND sealed_seed IS NOT NULL AND substr(sealed_seed, 1, length(?1)) <> ?1
             ORDER BY id LIMIT ?3",
        )?;
        let rows = statement
            .query_map(rusqlite::params![header, after, limit], |r| {
                Ok(SealedSeedRow {
                    id: r.get(0)?,
                    token_id: r.get(1)?,
                    serial: r.get(2)?,
                    sealed_seed: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    })
    .await?
}

/// Replaces sealed seeds in place, each only if it still holds the blob it was read with (a
/// delivery or purge meanwhile wins). Returns how many were replaced.
pub async fn reseal(tx: &mut WriteTx, rows: &[(i64, &[u8], &[u8])]) -> Result<u64, StoreError> {
    tx.inline(|c| {
        let mut statement = c.sqlite()?.prepare_cached(
            "UPDATE tokens SET sealed_seed = ?3 WHERE id = ?1 AND sealed_seed = ?2",
        )?;
        let mut done = 0u64;
        for (id, old, new) in rows {
            done += statement.execute(rusqlite::params![id, old, new])? as u64;
        }
        Ok(done)
    })
    .await?
}

/// Both reveal-limit windows in one statement: a token's granted reveals since `token_since`
/// and an operator's since `operator_since`, each counted in its index, not fetched.
pub fn reveal_windows_on(
    c: &Inline<'_>,
    token: i64,
    token_since: i64,
    operator: i64,
    operator_since: i64,
) -> Result<(RevealWindow, RevealWindow), StoreError> {
    let mut statement = c.sqlite()?.prepare_cached(REVEAL_WINDOWS)?;
    let counted = statement.query_row([token, token_since, operator, operator_since], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(windows(counted))
}

/// Records a granted reveal (the limit windows count these).
pub fn insert_reveal_on(
    c: &Inline<'_>,
    token: i64,
    operator: i64,
    at: i64,
) -> Result<(), StoreError> {
    c.sqlite()?
        .prepare_cached("INSERT INTO reveals (token_id, operator_id, at) VALUES (?1, ?2, ?3)")?
        .execute([token, operator, at])?;
    Ok(())
}

/// Filters for the token list; all optional.
#[derive(Debug, Default)]
pub struct TokenFilter {
    /// Prefix of a serial, owner or display name (case-insensitive; see `token_pages`).
    pub query: Option<String>,
    pub state: Option<String>,
    pub owner: Option<String>,
    /// Escrowed tokens whose retention deadline is before this time.
    pub due_before: Option<i64>,
    pub limit: i64,
}

pub async fn search(
    db: impl Into<Db<'_>>,
    filter: &TokenFilter,
) -> Result<Vec<TokenRow>, StoreError> {
    inline(db, |c| {
        let mut conditions = String::from("1 = 1");
        let mut params: Vec<Value> = Vec::new();
        if let Some(q) = filter.query.as_deref().filter(|q| !q.is_empty()) {
            let (sql, values) = super::token_pages::search_condition(c.sqlite()?, q)?;
            conditions.push_str(&sql);
            params.extend(values);
        }
        if let Some(state) = &filter.state {
            conditions.push_str(" AND state = ?");
            params.push(state.clone().into());
        }
        if let Some(owner) = &filter.owner {
            conditions.push_str(" AND owner = ?");
            params.push(owner.clone().into());
        }
        if let Some(due) = filter.due_before {
            conditions.push_str(
                " AND state = 'escrowed' AND retention_deadline <= ? ORDER BY retention_deadline",
            );
            params.push(due.into());
        } else {
            conditions.push_str(" ORDER BY captured_at DESC, id DESC");
        }
        conditions.push_str(" LIMIT ?");
        params.push(filter.limit.into());
        select_rows(c.sqlite()?, &conditions, &params)
    })
    .await?
}

pub async fn update_fields(
    db: impl Into<Db<'_>>,
    id: i64,
    owner: Option<&str>,
    display_name: Option<&str>,
    policy: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tokens SET owner = ?, display_name = ?, policy = ? WHERE id = ?")
        .bind(owner)
        .bind(display_name)
        .bind(policy)
        .bind(id)
        .execute(&mut *conn(db).await?)
        .await?;
    Ok(())
}

/// How many reveals a limit window holds, and when the oldest of them happened.
#[derive(Debug, Clone, Copy, Default)]
pub struct RevealWindow {
    pub count: i64,
    pub oldest: Option<i64>,
}

const REVEAL_WINDOWS: &str = "SELECT t.count, t.oldest, o.count, o.oldest FROM \
     (SELECT COUNT(*) AS count, MIN(at) AS oldest FROM reveals WHERE token_id = ?1 AND at > ?2) AS t, \
     (SELECT COUNT(*) AS count, MIN(at) AS oldest FROM reveals WHERE operator_id = ?3 AND at > ?4) AS o";

/// A [`REVEAL_WINDOWS`] row: the token's count and oldest, then the operator's.
type WindowCounts = (i64, Option<i64>, i64, Option<i64>);

fn windows(
    (token_count, token_oldest, operator_count, operator_oldest): WindowCounts,
) -> (RevealWindow, RevealWindow) {
    (
        RevealWindow {
            count: token_count,
            oldest: token_oldest,
        },
        RevealWindow {
            count: operator_count,
            oldest: operator_oldest,
        },
    )
}

/// Number of tokens in each state, for `status` and the dashboard.
pub async fn count_by_state(db: impl Into<Db<'_>>) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT state, COUNT(*) FROM tokens WHERE {VISIBLE} GROUP BY state ORDER BY state"
    ))
    .fetch_all(&mut *conn(db).await?)
    .await?)
}

/// Escrowed tokens and, of those, how many are past their retention deadline at `now` (the
/// sweeper's backlog), for the metrics.
pub async fn escrowed_and_overdue(
    db: impl Into<Db<'_>>,
    now: i64,
) -> Result<(i64, i64), StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT COUNT(*), COALESCE(SUM(retention_deadline <= ?), 0) FROM tokens WHERE state = 'escrowed' AND {VISIBLE}",
    ))
    .bind(now)
    .fetch_one(&mut *conn(db).await?)
    .await?)
}

/// How a token's life ended; stored as `purge_reason`.
pub struct PurgeRow<'a> {
    pub id: i64,
    /// `delivered`, `delivered-unverified`, `cancelled`, `abandoned` or `expired`.
    pub reason: &'a str,
    pub at: i64,
    pub delivered_by: Option<&'a str>,
    pub drift_steps: Option<i64>,
}

/// Destroys a token's seed: the sealed bytes are first overwritten with zeros in place, then
/// removed (with `secure_delete` on, SQLite zeroes the freed space). Only escrowed tokens are
/// touched (and tokens being programmed, which hold a generated seed); returns false if the
/// token held no seed any more.
pub async fn purge(tx: &mut WriteTx, p: &PurgeRow<'_>) -> Result<bool, StoreError> {
    sqlx::query("UPDATE tokens SET sealed_seed = zeroblob(length(sealed_seed)) WHERE id = ? AND (state = 'escrowed' OR state = 'programming')")
        .bind(p.id)
        .execute(tx.sqlite()?)
        .await?;
    let done = sqlx::query(
        "UPDATE tokens SET state = 'purged', sealed_seed = NULL, purged_at = ?, purge_reason = ?,
                delivered_at = CASE WHEN ? IS NOT NULL THEN ? ELSE delivered_at END,
                delivered_by = COALESCE(?, delivered_by),
                drift_steps = COALESCE(?, drift_steps)
         WHERE id = ? AND (state = 'escrowed' OR state = 'programming')",
    )
    .bind(p.at)
    .bind(p.reason)
    .bind(p.delivered_by)
    .bind(p.at)
    .bind(p.delivered_by)
    .bind(p.drift_steps)
    .bind(p.id)
    .execute(tx.sqlite()?)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Escrowed (or still programming) tokens whose retention deadline has passed, oldest deadline
/// first.
pub async fn overdue(
    db: impl Into<Db<'_>>,
    now: i64,
    limit: i64,
) -> Result<Vec<TokenRow>, StoreError> {
    inline(db, |c| {
        select_rows(
            c.sqlite()?,
            "(state = 'escrowed' OR state = 'programming') AND retention_deadline <= ? ORDER BY retention_deadline, id LIMIT ?",
            &[now.into(), limit.into()],
        )
    })
    .await?
}

/// Wrong delivery codes for a token since `since`, oldest first (their times).
pub async fn delivery_attempts_since(
    db: impl Into<Db<'_>>,
    token: i64,
    since: i64,
) -> Result<Vec<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT at FROM delivery_attempts WHERE token_id = ? AND at > ? ORDER BY at",
    )
    .bind(token)
    .bind(since)
    .fetch_all(&mut *conn(db).await?)
    .await?)
}

pub async fn insert_delivery_attempt(
    db: impl Into<Db<'_>>,
    token: i64,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO delivery_attempts (token_id, at) VALUES (?, ?)")
        .bind(token)
        .bind(at)
        .execute(&mut *conn(db).await?)
        .await?;
    Ok(())
}

/// Granted reveals, newest first, with token serial and operator name (dashboard).
pub async fn recent_reveals(
    db: impl Into<Db<'_>>,
    limit: i64,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT t.serial, o.name, r.at FROM reveals r JOIN tokens t ON t.id = r.token_id JOIN operators o ON o.id = r.operator_id
         WHERE {VISIBLE_T} ORDER BY r.at DESC, r.id DESC LIMIT ?",
    ))
    .bind(limit)
    .fetch_all(&mut *conn(db).await?)
    .await?)
}

/// Inserts one chunk of a bulk import's escrowed tokens inside `tx`, tagged with `import_id`
/// (invisible until the import commits, `store::imports`): `fill` runs on the calling thread
/// (see [`WriteTx::inline`]) and feeds rows to the [`TokenSink`] it is given; whatever `fill`
/// returns comes back. The rows commit or roll back with `tx`.
///
/// Why one prepared single-row statement rather than multi-row `INSERT … VALUES (…), (…)`:
/// binding borrowed values into a reused statement costs no parsing and no copies, and a
/// single-row insert needs no statement journal (a multi-row insert that may fail half-way on
/// a `UNIQUE` constraint makes SQLite journal every page it touches).
pub async fn insert_bulk<R>(
    tx: &mut WriteTx,
    import_id: i64,
    fill: impl FnOnce(&mut TokenSink<'_>) -> R,
) -> Result<R, StoreError> {
    tx.inline_long(|c| -> Result<R, StoreError> {
        let mut sink = TokenSink {
            insert: c.sqlite()?.prepare_cached(INSERT)?,
            import_id,
        };
        Ok(fill(&mut sink))
    })
    .await?
}

/// Where [`insert_bulk`]'s rows go.
pub struct TokenSink<'c> {
    insert: rusqlite::CachedStatement<'c>,
    import_id: i64,
}

impl TokenSink<'_> {
    pub fn insert(&mut self, t: &NewTokenRow<'_>) -> Result<(), StoreError> {
        insert_with(&mut self.insert, t, Some(self.import_id))
    }
}

#[cfg(test)]
mod column_tests {
    #[test]
    fn column_count_counts_the_selected_columns() {
        assert_eq!(super::COLUMNS.split(',').count(), super::COLUMN_COUNT);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn row<'a>(token_id: &'a str, serial: &'a str) -> NewTokenRow<'a> {
        NewTokenRow {
            token_id,
            serial,
            owner: Some("alice@example.org"),
            display_name: None,
            manufacturer: Some("Token2"),
            model: None,
            algorithm: "SHA1",
            digits: 6,
            period: 30,
            policy: "standard",
            sealed_seed: b"sealed",
            captured_by: "cli:test",
            captured_at: 1,
            retention_deadline: 2,
        }
    }

    async fn serials(store: &Store) -> Vec<String> {
        sqlx::query_scalar("SELECT serial FROM tokens ORDER BY id")
            .fetch_all(store.pool().unwrap())
            .await
            .unwrap()
    }

    async fn new_import(store: &Store) -> i64 {
        let mut tx = store.begin_write().await.unwrap();
        let id = crate::store::imports::begin(
            &mut tx,
            &crate::store::imports::NewImport {
                actor: "cli:test",
                file: "f.csv",
                started_at: 1,
                pid: 1,
                pid_start: 1,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    async fn bulk_rows_commit_with_their_chunk_but_stay_unseen_until_their_import_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let import = new_import(&store).await;
        let mut tx = store.begin_write().await.unwrap();
        let inserted = insert_bulk(&mut tx, import, |sink| {
            for (id, serial) in [("t1", "S1"), ("t2", "S2")] {
                sink.insert(&row(id, serial))?;
            }
            Ok::<_, StoreError>(2)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(inserted, 2);
        tx.commit().await.unwrap();
        // Stored, but no reader sees them before the import commits.
        assert_eq!(serials(&store).await, ["S1", "S2"]);
        assert!(by_serial(&store, "S1").await.unwrap().is_none());
        assert!(count_by_state(&store).await.unwrap().is_empty());
        let mut tx = store.begin_write().await.unwrap();
        assert!(crate::store::imports::mark_committed(&mut tx, import, 3)
            .await
            .unwrap());
        tx.commit().await.unwrap();
        assert!(by_serial(&store, "S1").await.unwrap().is_some());
        assert_eq!(
            count_by_state(&store).await.unwrap(),
            [("escrowed".to_owned(), 2)]
        );
    }

    async fn a_duplicate_in_a_bulk_insert_is_a_unique_violation_and_nothing_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let import = new_import(&store).await;
        let mut tx = store.begin_write().await.unwrap();
        let result = insert_bulk(&mut tx, import, |sink| {
            sink.insert(&row("t1", "S1"))?;
            sink.insert(&row("t2", "S1"))
        })
        .await
        .unwrap();
        assert!(result.unwrap_err().is_unique_violation());
        drop(tx);
        assert!(serials(&store).await.is_empty());
        // The write connection is usable again afterwards.
        let mut tx = store.begin_write().await.unwrap();
        insert_bulk(&mut tx, import, |sink| sink.insert(&row("t3", "S3")))
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(serials(&store).await, ["S3"]);
    }

    // `insert_bulk` runs its work inline on a current-thread runtime and inside
    // `block_in_place` on a multi-threaded one: both are exercised.
    #[tokio::test]
    async fn bulk_insert_on_a_current_thread_runtime() {
        bulk_rows_commit_with_their_chunk_but_stay_unseen_until_their_import_commits().await;
        a_duplicate_in_a_bulk_insert_is_a_unique_violation_and_nothing_is_kept().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_insert_on_a_multi_threaded_runtime() {
        bulk_rows_commit_with_their_chunk_but_stay_unseen_until_their_import_commits().await;
        a_duplicate_in_a_bulk_insert_is_a_unique_violation_and_nothing_is_kept().await;
    }

    #[tokio::test]
    async fn existing_serials_finds_exactly_the_stored_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let mut tx = store.begin_write().await.unwrap();
        insert(&mut tx, &row("t1", "S1")).await.unwrap();
        insert(&mut tx, &row("t2", "S\"2,")).await.unwrap();
        tx.commit().await.unwrap();
        let mut found = existing_serials(store.pool().unwrap(), &["S0", "S1", "S\"2,", "S3"])
            .await
            .unwrap();
        found.sort();
        assert_eq!(found, [("S\"2,".into(), true), ("S1".into(), true)]);
        assert!(existing_serials(store.pool().unwrap(), &[])
            .await
            .unwrap()
            .is_empty());
    }
}
