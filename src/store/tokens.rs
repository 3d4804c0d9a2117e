//! `tokens`, `reveals` and `delivery_attempts`: token metadata, lifecycle state, the nullable
//! sealed seed, and the counters behind the rate limits.
//!
//! Token rows are read through rusqlite (one column mapping, `token_row`) because the reveal
//! grant reads them inline on the write connection ([`super::WriteTx::inline`]); the other
//! readers share that mapping.

use rusqlite::types::Value;
use rusqlite::OptionalExtension;
use sqlx::Row as _;

use super::{dollars, inline, Db, Inline, On, StoreError, WriteTx};

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

/// [`token_row`] for a PostgreSQL row.
fn token_pg(r: &sqlx::postgres::PgRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: r.try_get(0)?,
        token_id: r.try_get(1)?,
        serial: r.try_get(2)?,
        owner: r.try_get(3)?,
        display_name: r.try_get(4)?,
        manufacturer: r.try_get(5)?,
        model: r.try_get(6)?,
        algorithm: r.try_get(7)?,
        digits: r.try_get(8)?,
        period: r.try_get(9)?,
        t0: r.try_get(10)?,
        drift_steps: r.try_get(11)?,
        policy: r.try_get(12)?,
        state: r.try_get(13)?,
        captured_by: r.try_get(14)?,
        captured_at: r.try_get(15)?,
        retention_deadline: r.try_get(16)?,
        delivered_at: r.try_get(17)?,
        delivered_by: r.try_get(18)?,
        purged_at: r.try_get(19)?,
        purge_reason: r.try_get(20)?,
        shipping: ShippingRow {
            verified_at: r.try_get(21)?,
            verified_by: r.try_get(22)?,
            shipped_at: r.try_get(23)?,
            shipped_by: r.try_get(24)?,
            carrier: r.try_get(25)?,
            tracking: r.try_get(26)?,
            expected: r.try_get(27)?,
        },
    })
}

/// `query` with `params` bound in order (values built once for both engines as rusqlite's).
pub(super) fn bind_pg<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    params: &'q [Value],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for value in params {
        query = match value {
            Value::Null => query.bind(None::<i64>),
            Value::Integer(n) => query.bind(*n),
            Value::Real(x) => query.bind(*x),
            Value::Text(text) => query.bind(text.as_str()),
            Value::Blob(bytes) => query.bind(bytes.as_slice()),
        };
    }
    query
}

/// Visible tokens selected by `conditions` (SQL after `WHERE … AND`, with bare `?` parameters;
/// no top-level `OR`), as [`TokenRow`]s, on either engine.
pub(super) fn select_rows(
    c: &Inline<'_>,
    conditions: &str,
    params: &[Value],
) -> Result<Vec<TokenRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM tokens WHERE {VISIBLE} AND {conditions}");
    match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(&sql)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(params), token_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        }
        On::Postgres(pg) => {
            let sql = dollars(&sql);
            let rows = pg.rows(bind_pg(sqlx::query(&sql), params))?;
            Ok(rows
                .iter()
                .map(token_pg)
                .collect::<Result<_, sqlx::Error>>()?)
        }
    }
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

/// The columns an escrowed token's insert sets, in [`INSERT`]'s order.
const INSERT_COLUMNS: &str = "token_id, serial, owner, display_name, manufacturer, model, algorithm, digits, period, policy, \
     state, sealed_seed, captured_by, captured_at, retention_deadline, import_id";

/// One row's values for [`INSERT_COLUMNS`], with `?` placeholders (`state` is fixed).
const INSERT_VALUES: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'escrowed', ?, ?, ?, ?, ?)";

/// How many parameters [`INSERT_VALUES`] binds.
const INSERT_PARAMS: usize = 15;

/// An escrowed token's insert; the last parameter is its chunked import (NULL: none).
fn insert_sql() -> String {
    format!("INSERT INTO tokens ({INSERT_COLUMNS}) VALUES {INSERT_VALUES}")
}

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

/// Binds one row's [`INSERT_VALUES`] on PostgreSQL (digits and period as BIGINT).
fn bind_new_pg<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    t: &'q NewTokenRow<'q>,
    import_id: Option<i64>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(t.token_id)
        .bind(t.serial)
        .bind(t.owner)
        .bind(t.display_name)
        .bind(t.manufacturer)
        .bind(t.model)
        .bind(t.algorithm)
        .bind(i64::from(t.digits))
        .bind(i64::from(t.period))
        .bind(t.policy)
        .bind(t.sealed_seed)
        .bind(t.captured_by)
        .bind(t.captured_at)
        .bind(t.retention_deadline)
        .bind(import_id)
}

/// Inserts one escrowed token; a duplicate serial is a unique violation
/// ([`StoreError::is_unique_violation`]).
pub async fn insert(db: impl Into<Db<'_>>, t: &NewTokenRow<'_>) -> Result<(), StoreError> {
    inline(db, |c| match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(&insert_sql())?;
            insert_with(&mut statement, t, None)
        }
        On::Postgres(pg) => {
            pg.execute(bind_new_pg(sqlx::query(&dollars(&insert_sql())), t, None))?;
            Ok(())
        }
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
    // The escrowed insert's columns and bindings, in the `programming` state, never imported.
    let token = insert_sql().replace("'escrowed'", "'programming'");
    const PROGRAMMING: &str =
        "INSERT INTO token_programming (token_id, generated_by, shown_at) VALUES (?, ?, ?)";
    inline(&mut *tx, |c| match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(&token)?;
            insert_with(&mut statement, t, None)?;
            let id = conn.last_insert_rowid();
            conn.execute(PROGRAMMING, rusqlite::params![id, t.captured_by, shown_at])?;
            Ok::<i64, StoreError>(id)
        }
        On::Postgres(pg) => {
            let returning = dollars(&format!("{token} RETURNING id"));
            let rows = pg.rows(bind_new_pg(sqlx::query(&returning), t, None))?;
            let id: i64 = rows.first().ok_or(sqlx::Error::RowNotFound)?.try_get(0)?;
            pg.execute(
                sqlx::query(&dollars(PROGRAMMING))
                    .bind(id)
                    .bind(t.captured_by)
                    .bind(shown_at),
            )?;
            Ok(id)
        }
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
    let done = on_either!(&mut *tx, |conn| {
        sqlx::query(
        "UPDATE token_programming SET shown_at = $1 WHERE token_id = $2 AND generated_by = $3 AND shown_at IS NULL",
    )
    .bind(at)
    .bind(id)
    .bind(actor)
    .execute(&mut *conn)
    .await?
    .rows_affected()
    });
    Ok(done == 1)
}

/// A programming token's device answered with a valid code: it becomes escrowed, with the
/// drift measured. False if it was no longer programming.
pub async fn finish_programming(
    tx: &mut WriteTx,
    id: i64,
    drift_steps: i64,
) -> Result<bool, StoreError> {
    let done = on_either!(&mut *tx, |conn| {
        sqlx::query(
        "UPDATE tokens SET state = 'escrowed', drift_steps = $1 WHERE id = $2 AND state = 'programming'",
    )
    .bind(drift_steps)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
    });
    Ok(done == 1)
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
    let done = on_either!(&mut *tx, |conn| {
        sqlx::query(
        "UPDATE tokens SET drift_steps = $1, verified_at = $2, verified_by = $3 WHERE id = $4 AND state = 'escrowed'",
    )
    .bind(drift_steps)
    .bind(at)
    .bind(by)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
    });
    Ok(done == 1)
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
    let done = on_either!(&mut *tx, |conn| {
        sqlx::query(
        "UPDATE tokens SET shipped_at = $1, shipped_by = $2, carrier = $3, tracking = $4, expected = $5
         WHERE id = $6 AND state = 'escrowed'",
    )
    .bind(s.at)
    .bind(s.by)
    .bind(s.carrier)
    .bind(s.tracking)
    .bind(s.expected)
    .bind(s.id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
    });
    Ok(done == 1)
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
    let (in_transit, late, nearing_retention): (i64, i64, i64) = on_either!(db, |conn| {
        sqlx::query_as(&format!(
            "SELECT COUNT(*), COUNT(CASE WHEN expected < $1 THEN 1 END),
                    COUNT(CASE WHEN retention_deadline < $2 THEN 1 END)
             FROM tokens WHERE shipped_at IS NOT NULL AND state = 'escrowed' AND {VISIBLE}"
        ))
        .bind(today)
        .bind(soon)
        .fetch_one(&mut *conn)
        .await?
    });
    Ok(InTransit {
        in_transit,
        late,
        nearing_retention,
    })
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
    inline(db, |c| Ok(select_rows(c, "id = ?", &[id.into()])?.pop())).await?
}

/// [`by_serial`] on a held connection.
pub fn by_serial_on(c: &Inline<'_>, serial: &str) -> Result<Option<TokenRow>, StoreError> {
    Ok(select_rows(c, "serial = ?", &[serial.to_owned().into()])?.pop())
}

/// Which of `serials` already exist (for import's duplicate check), each with whether it is
/// visible (false: it belongs to an import that has not committed, whose serials are taken
/// all the same). One statement and one bound value however many serials: they travel as a
/// JSON array that the engine unpacks (`json_each`, `jsonb_array_elements_text`), then looks
/// each one up in the `serial` index.
pub async fn existing_serials(
    db: impl Into<Db<'_>>,
    serials: &[&str],
) -> Result<Vec<(String, bool)>, StoreError> {
    if serials.is_empty() {
        return Ok(Vec::new());
    }
    let list = serde_json::Value::from(serials).to_string();
    Ok(match super::engine(db).await? {
        super::Engine::Sqlite(mut conn) => {
            sqlx::query_as(&format!(
                "SELECT serial, {VISIBLE} FROM tokens WHERE serial IN (SELECT value FROM json_each($1))"
            ))
            .bind(list)
            .fetch_all(&mut *conn)
            .await?
        }
        super::Engine::Postgres(mut conn) => {
            sqlx::query_as(&format!(
                "SELECT serial, {VISIBLE} FROM tokens WHERE serial IN (SELECT jsonb_array_elements_text(CAST($1 AS jsonb)))"
            ))
            .bind(list)
            .fetch_all(&mut *conn)
            .await?
        }
    })
}

/// The sealed seed of an escrowed token (`None` once purged).
pub async fn sealed_seed(db: impl Into<Db<'_>>, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
    let seed: Option<Option<Vec<u8>>> = on_either!(db, |conn| sqlx::query_scalar(&format!(
        "SELECT sealed_seed FROM tokens WHERE id = $1 AND {VISIBLE}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?);
    Ok(seed.flatten())
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
    let sql = format!("SELECT {COLUMNS}, sealed_seed FROM tokens WHERE serial = ?1 AND {VISIBLE}");
    match c.on() {
        On::Sqlite(conn) => Ok(conn
            .prepare_cached(&sql)?
            .query_row([serial], |r| {
                Ok(TokenWithSeed {
                    row: token_row(r)?,
                    sealed_seed: r.get(COLUMN_COUNT)?,
                })
            })
            .optional()?),
        On::Postgres(pg) => {
            let sql = dollars(&sql);
            let rows = pg.rows(sqlx::query(&sql).bind(serial))?;
            Ok(match rows.first() {
                Some(r) => Some(TokenWithSeed {
                    row: token_pg(r)?,
                    sealed_seed: r.try_get(COLUMN_COUNT)?,
                }),
                None => None,
            })
        }
    }
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
    // `substr` and `length` count bytes of a blob/bytea on both engines.
    const SQL: &str = "SELECT id, token_id, serial, sealed_seed FROM tokens
             WHERE id > ?2 AND sealed_seed IS NOT NULL AND substr(sealed_seed, 1, length(?1)) <> ?1
             ORDER BY id LIMIT ?3";
    inline(db, |c| match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(SQL)?;
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
        }
        On::Postgres(pg) => Ok(pg
            .all(
                sqlx::query_as::<_, (i64, String, String, Vec<u8>)>(&dollars(SQL))
                    .bind(header)
                    .bind(after)
                    .bind(limit),
            )?
            .into_iter()
            .map(|(id, token_id, serial, sealed_seed)| SealedSeedRow {
                id,
                token_id,
                serial,
                sealed_seed,
            })
            .collect()),
    })
    .await?
}

/// Replaces sealed seeds in place, each only if it still holds the blob it was read with (a
/// delivery or purge meanwhile wins). Returns how many were replaced.
pub async fn reseal(tx: &mut WriteTx, rows: &[(i64, &[u8], &[u8])]) -> Result<u64, StoreError> {
    const SQL: &str = "UPDATE tokens SET sealed_seed = ?3 WHERE id = ?1 AND sealed_seed = ?2";
    tx.inline(|c| {
        let mut done = 0u64;
        match c.on() {
            On::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(SQL)?;
                for (id, old, new) in rows {
                    done += statement.execute(rusqlite::params![id, old, new])? as u64;
                }
            }
            On::Postgres(pg) => {
                let sql = dollars(SQL);
                for (id, old, new) in rows {
                    done += pg.execute(sqlx::query(&sql).bind(id).bind(old).bind(new))?;
                }
            }
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
    let counted = match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(REVEAL_WINDOWS)?;
            statement.query_row([token, token_since, operator, operator_since], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
        }
        On::Postgres(pg) => pg.one(
            sqlx::query_as::<_, WindowCounts>(&dollars(REVEAL_WINDOWS))
                .bind(token)
                .bind(token_since)
                .bind(operator)
                .bind(operator_since),
        )?,
    };
    Ok(windows(counted))
}

/// The advisory-lock class of the reveal limits on PostgreSQL (beside `transient`'s and the
/// scheduled jobs' classes).
pub(super) const REVEAL_LIMIT_LOCK: i32 = 0x5356_0004;

/// Serialises a grant's limit check and its reveal row with every other grant of the same
/// token or by the same operator, across connections and instances (PostgreSQL: a
/// transaction-scoped advisory lock on each, token first). Under `READ COMMITTED` two grants
/// would otherwise both count the window before either inserts, and both pass its last slot.
/// Take it before any other lock in the transaction: waiting for it then closes no deadlock
/// cycle. On SQLite the one writer already runs grants one after another.
pub fn lock_reveal_limits_on(c: &Inline<'_>, token: i64, operator: i64) -> Result<(), StoreError> {
    if let On::Postgres(pg) = c.on() {
        // Two statements: the order of two calls in one select list is not specified.
        for key in [format!("token:{token}"), format!("operator:{operator}")] {
            pg.execute(
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(REVEAL_LIMIT_LOCK)
                    .bind(key),
            )?;
        }
    }
    Ok(())
}

/// Records a granted reveal (the limit windows count these).
pub fn insert_reveal_on(
    c: &Inline<'_>,
    token: i64,
    operator: i64,
    at: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO reveals (token_id, operator_id, at) VALUES (?1, ?2, ?3)";
    match c.on() {
        On::Sqlite(conn) => {
            conn.prepare_cached(SQL)?.execute([token, operator, at])?;
        }
        On::Postgres(pg) => {
            pg.execute(
                sqlx::query(&dollars(SQL))
                    .bind(token)
                    .bind(operator)
                    .bind(at),
            )?;
        }
    }
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
            let (sql, values) = super::token_pages::search_condition(c, q)?;
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
        select_rows(c, &conditions, &params)
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
    on_either!(db, |conn| {
        sqlx::query("UPDATE tokens SET owner = $1, display_name = $2, policy = $3 WHERE id = $4")
            .bind(owner)
            .bind(display_name)
            .bind(policy)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// How many reveals a limit window holds, and when the oldest of them happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    Ok(on_either!(db, |conn| sqlx::query_as(&format!(
        "SELECT state, COUNT(*) FROM tokens WHERE {VISIBLE} GROUP BY state ORDER BY state"
    ))
    .fetch_all(&mut *conn)
    .await?))
}

/// Escrowed tokens and, of those, how many are past their retention deadline at `now` (the
/// sweeper's backlog), for the metrics.
pub async fn escrowed_and_overdue(
    db: impl Into<Db<'_>>,
    now: i64,
) -> Result<(i64, i64), StoreError> {
    Ok(on_either!(db, |conn| {
        sqlx::query_as(&format!(
        "SELECT COUNT(*), COUNT(CASE WHEN retention_deadline <= $1 THEN 1 END) FROM tokens WHERE state = 'escrowed' AND {VISIBLE}",
    ))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?
    }))
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

/// The second half of [`purge`]: the seed removed, the state and how the life ended recorded.
const PURGE: &str =
    "UPDATE tokens SET state = 'purged', sealed_seed = NULL, purged_at = $1, purge_reason = $2,
        delivered_at = CASE WHEN $3 IS NOT NULL THEN $1 ELSE delivered_at END,
        delivered_by = COALESCE($3, delivered_by),
        drift_steps = COALESCE($4, drift_steps)
 WHERE id = $5 AND (state = 'escrowed' OR state = 'programming')";

/// Destroys a token's seed: the sealed bytes are first overwritten with zeros of the same
/// length in place, then removed. On SQLite, with `secure_delete` on, SQLite zeroes the freed
/// space. On PostgreSQL every update writes a new row version and leaves the old one as a dead
/// tuple: the commit then runs `VACUUM tokens` (see [`WriteTx::vacuum_tokens_after_commit`]),
/// and docs/ARCHITECTURE.md ("What purge guarantees") says what remains in the WAL and
/// backups. Only escrowed tokens are touched (and tokens being programmed, which hold a
/// generated seed); returns false if the token held no seed any more.
pub async fn purge(tx: &mut WriteTx, p: &PurgeRow<'_>) -> Result<bool, StoreError> {
    let done = match super::engine(&mut *tx).await? {
        super::Engine::Sqlite(mut conn) => {
            sqlx::query("UPDATE tokens SET sealed_seed = zeroblob(length(sealed_seed)) WHERE id = $1 AND (state = 'escrowed' OR state = 'programming')")
                .bind(p.id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(PURGE)
                .bind(p.at)
                .bind(p.reason)
                .bind(p.delivered_by)
                .bind(p.drift_steps)
                .bind(p.id)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }
        super::Engine::Postgres(mut conn) => {
            // `length` of a bytea counts bytes: zeros of exactly the sealed length.
            sqlx::query("UPDATE tokens SET sealed_seed = decode(repeat('00', length(sealed_seed)), 'hex') WHERE id = $1 AND (state = 'escrowed' OR state = 'programming')")
                .bind(p.id)
                .execute(&mut *conn)
                .await?;
            sqlx::query(PURGE)
                .bind(p.at)
                .bind(p.reason)
                .bind(p.delivered_by)
                .bind(p.drift_steps)
                .bind(p.id)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        }
    } == 1;
    if done {
        tx.vacuum_tokens_after_commit();
    }
    Ok(done)
}

/// Escrowed (or still programming) tokens whose retention deadline has passed, oldest deadline
/// first.
///
/// One query per state, each walking `tokens_state_deadline` in order and stopping at `limit`
/// rows, then merged: `state = 'escrowed' OR state = 'programming'` in one query made SQLite
/// read and sort every overdue row for every batch of the sweep, O(n²) over a sweep of n.
pub async fn overdue(
    db: impl Into<Db<'_>>,
    now: i64,
    limit: i64,
) -> Result<Vec<TokenRow>, StoreError> {
    inline(db, |c| {
        let mut rows = Vec::new();
        for state in ["escrowed", "programming"] {
            rows.extend(select_rows(
                c,
                "state = ? AND retention_deadline <= ? ORDER BY retention_deadline, id LIMIT ?",
                &[Value::Text(state.to_owned()), now.into(), limit.into()],
            )?);
        }
        rows.sort_by_key(|r| (r.retention_deadline, r.id));
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(rows)
    })
    .await?
}

/// Wrong delivery codes for a token since `since`, oldest first (their times).
pub async fn delivery_attempts_since(
    db: impl Into<Db<'_>>,
    token: i64,
    since: i64,
) -> Result<Vec<i64>, StoreError> {
    Ok(on_either!(db, |conn| sqlx::query_scalar(
        "SELECT at FROM delivery_attempts WHERE token_id = $1 AND at > $2 ORDER BY at",
    )
    .bind(token)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?))
}

pub async fn insert_delivery_attempt(
    db: impl Into<Db<'_>>,
    token: i64,
    at: i64,
) -> Result<(), StoreError> {
    on_either!(db, |conn| {
        sqlx::query("INSERT INTO delivery_attempts (token_id, at) VALUES ($1, $2)")
            .bind(token)
            .bind(at)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Granted reveals, newest first, with token serial and operator name (dashboard).
pub async fn recent_reveals(
    db: impl Into<Db<'_>>,
    limit: i64,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(on_either!(db, |conn| {
        sqlx::query_as(&format!(
        "SELECT t.serial, o.name, r.at FROM reveals r JOIN tokens t ON t.id = r.token_id JOIN operators o ON o.id = r.operator_id
         WHERE {VISIBLE_T} ORDER BY r.at DESC, r.id DESC LIMIT $1",
    ))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    }))
}

/// Inserts one chunk of a bulk import's escrowed tokens inside `tx`, tagged with `import_id`
/// (invisible until the import commits, `store::imports`): `fill` runs on the calling thread
/// (see [`WriteTx::inline`]) and feeds rows to the [`TokenSink`] it is given; whatever `fill`
/// returns comes back. The rows commit or roll back with `tx`.
///
/// On SQLite, why one prepared single-row statement rather than multi-row `INSERT … VALUES
/// (…), (…)`: binding borrowed values into a reused prepared statement costs no parsing and no
/// copies, and a single-row insert needs no statement journal (a multi-row insert that may
/// fail half-way on a `UNIQUE` constraint makes SQLite journal every page it touches).
///
/// On PostgreSQL every statement is a network round trip, so the sink collects rows and sends
/// them as multi-row inserts of [`PG_ROWS_PER_INSERT`] rows (BENCHMARKS.md, "Bulk import on
/// PostgreSQL"; chosen over `COPY … FROM STDIN`, which would need the values escaped as COPY
/// text and reports a duplicate serial only at the end of its stream). A duplicate serial in
/// the last, partial statement of a chunk is reported by `insert_bulk` itself rather than by
/// [`TokenSink::insert`].
pub async fn insert_bulk<R>(
    tx: &mut WriteTx,
    import_id: i64,
    fill: impl FnOnce(&mut TokenSink<'_, '_>) -> R,
) -> Result<R, StoreError> {
    tx.inline_long(|c| -> Result<R, StoreError> {
        match c.on() {
            On::Sqlite(conn) => {
                let mut sink = TokenSink {
                    to: SinkTo::Sqlite(conn.prepare_cached(&insert_sql())?),
                    import_id,
                };
                Ok(fill(&mut sink))
            }
            On::Postgres(_) => {
                let mut sink = TokenSink {
                    to: SinkTo::Postgres {
                        c,
                        rows: Vec::with_capacity(PG_ROWS_PER_INSERT),
                    },
                    import_id,
                };
                let out = fill(&mut sink);
                sink.flush()?;
                Ok(out)
            }
        }
    })
    .await?
}

/// Rows per multi-row insert on PostgreSQL: the import's whole chunk (1,000 rows) in one
/// statement, 15 parameters a row, well under the protocol's 65,535. BENCHMARKS.md: 100,000
/// rows in about 2 s this way, 25 s with a statement per row.
pub const PG_ROWS_PER_INSERT: usize = 1_000;

/// Where [`insert_bulk`]'s rows go.
pub struct TokenSink<'c, 'i> {
    to: SinkTo<'c, 'i>,
    import_id: i64,
}

enum SinkTo<'c, 'i> {
    Sqlite(rusqlite::CachedStatement<'c>),
    /// Rows waiting for the next multi-row insert.
    Postgres {
        c: &'i Inline<'c>,
        rows: Vec<OwnedTokenRow>,
    },
}

/// A [`NewTokenRow`] kept until its multi-row insert is sent.
struct OwnedTokenRow {
    token_id: String,
    serial: String,
    owner: Option<String>,
    display_name: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    algorithm: String,
    digits: i64,
    period: i64,
    policy: String,
    sealed_seed: Vec<u8>,
    captured_by: String,
    captured_at: i64,
    retention_deadline: i64,
}

impl TokenSink<'_, '_> {
    pub fn insert(&mut self, t: &NewTokenRow<'_>) -> Result<(), StoreError> {
        match &mut self.to {
            SinkTo::Sqlite(statement) => insert_with(statement, t, Some(self.import_id)),
            SinkTo::Postgres { rows, .. } => {
                rows.push(OwnedTokenRow {
                    token_id: t.token_id.to_owned(),
                    serial: t.serial.to_owned(),
                    owner: t.owner.map(str::to_owned),
                    display_name: t.display_name.map(str::to_owned),
                    manufacturer: t.manufacturer.map(str::to_owned),
                    model: t.model.map(str::to_owned),
                    algorithm: t.algorithm.to_owned(),
                    digits: t.digits.into(),
                    period: t.period.into(),
                    policy: t.policy.to_owned(),
                    sealed_seed: t.sealed_seed.to_vec(),
                    captured_by: t.captured_by.to_owned(),
                    captured_at: t.captured_at,
                    retention_deadline: t.retention_deadline,
                });
                if rows.len() >= PG_ROWS_PER_INSERT {
                    self.flush()?;
                }
                Ok(())
            }
        }
    }

    /// Sends the rows collected on PostgreSQL as one multi-row insert.
    fn flush(&mut self) -> Result<(), StoreError> {
        let SinkTo::Postgres { c, rows } = &mut self.to else {
            return Ok(());
        };
        if rows.is_empty() {
            return Ok(());
        }
        let On::Postgres(pg) = c.on() else {
            return Ok(());
        };
        let values = vec![INSERT_VALUES; rows.len()].join(", ");
        let sql = dollars(&format!(
            "INSERT INTO tokens ({INSERT_COLUMNS}) VALUES {values}"
        ));
        debug_assert_eq!(INSERT_VALUES.matches('?').count(), INSERT_PARAMS);
        let mut query = sqlx::query(&sql);
        for t in rows.iter() {
            query = query
                .bind(t.token_id.as_str())
                .bind(t.serial.as_str())
                .bind(t.owner.as_deref())
                .bind(t.display_name.as_deref())
                .bind(t.manufacturer.as_deref())
                .bind(t.model.as_deref())
                .bind(t.algorithm.as_str())
                .bind(t.digits)
                .bind(t.period)
                .bind(t.policy.as_str())
                .bind(t.sealed_seed.as_slice())
                .bind(t.captured_by.as_str())
                .bind(t.captured_at)
                .bind(t.retention_deadline)
                .bind(self.import_id);
        }
        let sent = pg.execute(query);
        rows.clear();
        sent.map(|_| ())
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

    #[tokio::test]
    async fn overdue_takes_both_states_oldest_deadline_first_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let import = new_import(&store).await;
        let tokens = [
            ("E5", "escrowed", 5),
            ("P3", "programming", 3),
            ("E4", "escrowed", 4),
            ("P9", "programming", 9),
            ("E20", "escrowed", 20),
            ("C1", "cancelled", 1),
        ];
        let mut tx = store.begin_write().await.unwrap();
        insert_bulk(&mut tx, import, |sink| {
            for (serial, _, deadline) in tokens {
                sink.insert(&NewTokenRow {
                    retention_deadline: deadline,
                    ..row(serial, serial)
                })?;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap()
        .unwrap();
        crate::store::imports::mark_committed(&mut tx, import, 3)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        for (serial, state, _) in tokens {
            // A token no longer escrowed has no seed (a CHECK holds the two together).
            sqlx::query(
                "UPDATE tokens SET state = ?1, sealed_seed = CASE WHEN ?1 = 'cancelled' THEN NULL ELSE sealed_seed END WHERE serial = ?2",
            )
                .bind(state)
                .bind(serial)
                .execute(store.pool().unwrap())
                .await
                .unwrap();
        }
        let serials_due =
            |rows: Vec<TokenRow>| rows.into_iter().map(|r| r.serial).collect::<Vec<_>>();
        assert_eq!(
            serials_due(overdue(&store, 10, 3).await.unwrap()),
            ["P3", "E4", "E5"]
        );
        assert_eq!(
            serials_due(overdue(&store, 10, 25).await.unwrap()),
            ["P3", "E4", "E5", "P9"]
        );
        assert!(overdue(&store, 2, 25).await.unwrap().is_empty());
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
