//! `audit_events`: append and read the hash-chained trail. Rows are never updated or deleted
//! (triggers enforce it).

use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::{dollars, inline, Db, Inline, On, PgInline, StoreError};

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

const COLUMNS: &str = "seq, time, actor, action, target, outcome, details, prev_hash, hash, sig";

/// The newest event's `seq` and `hash`, if any (to show; an append reads it with
/// [`head_on`]).
pub async fn head(db: impl Into<Db<'_>>) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    inline(db, read_head_on).await?
}

/// The key of the PostgreSQL advisory lock that serialises appends to the audit chain across
/// instances ("SVAUDIT" in ASCII): one chain, never a fork.
pub const HEAD_LOCK: i64 = 0x0053_5641_5544_4954;

/// The newest event's `seq` and `hash`, if any, read to append after it: inside a write
/// transaction, which then holds the chain's end until it commits. On SQLite the write
/// transaction's `BEGIN IMMEDIATE` already excludes every other writer; on PostgreSQL this
/// first takes the transaction-scoped advisory lock [`HEAD_LOCK`] (held to commit or
/// rollback), so two instances appending at once queue instead of both linking to the same
/// head. Under `READ COMMITTED` the read after the lock sees the head the previous holder
/// committed.
pub fn head_on(c: &Inline<'_>) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    if let On::Postgres(pg) = c.on() {
        pg.execute(sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(HEAD_LOCK))?;
    }
    read_head_on(c)
}

fn read_head_on(c: &Inline<'_>) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    match c.on() {
        On::Sqlite(conn) => select_head(conn),
        On::Postgres(pg) => pg.optional(sqlx::query_as(
            "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        )),
    }
}

pub(super) fn select_head(
    conn: &rusqlite::Connection,
) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Stores an event as given (the product appends through `audit::append`, which links and
/// signs it; tests forge events with this).
pub async fn insert(db: impl Into<Db<'_>>, row: &AuditRow) -> Result<(), StoreError> {
    inline(db, |c| insert_on(c, row)).await?
}

/// [`insert`] on a held connection.
pub fn insert_on(c: &Inline<'_>, row: &AuditRow) -> Result<(), StoreError> {
    match c.on() {
        On::Sqlite(conn) => insert_row(conn, row),
        On::Postgres(pg) => {
            pg.execute(
                sqlx::query(&dollars(INSERT))
                    .bind(row.seq)
                    .bind(&row.time)
                    .bind(&row.actor)
                    .bind(&row.action)
                    .bind(&row.target)
                    .bind(&row.outcome)
                    .bind(&row.details)
                    .bind(&row.prev_hash)
                    .bind(&row.hash)
                    .bind(&row.sig),
            )?;
            Ok(())
        }
    }
}

const INSERT: &str = "INSERT INTO audit_events (seq, time, actor, action, target, outcome, details, prev_hash, hash, sig)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

fn insert_row(conn: &rusqlite::Connection, row: &AuditRow) -> Result<(), StoreError> {
    conn.prepare_cached(INSERT)?.execute(rusqlite::params![
        row.seq,
        row.time,
        row.actor,
        row.action,
        row.target,
        row.outcome,
        row.details,
        row.prev_hash,
        row.hash,
        row.sig,
    ])?;
    Ok(())
}

/// An event as PostgreSQL returns it.
type PgAuditTuple = (
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

fn from_tuple(t: PgAuditTuple) -> AuditRow {
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

/// `query` with `params` bound in order: the filters' values, built once for both engines as
/// rusqlite values.
fn bind_values<'q, O>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    params: &'q [Value],
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
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

/// Events selected by `conditions` (SQL after `WHERE`, with `?` parameters), on either engine.
fn select(c: &Inline<'_>, conditions: &str, params: &[Value]) -> Result<Vec<AuditRow>, StoreError> {
    match c.on() {
        On::Sqlite(conn) => select_sqlite(conn, conditions, params),
        On::Postgres(pg) => select_pg(pg, conditions, params),
    }
}

fn select_pg(
    pg: &PgInline<'_>,
    conditions: &str,
    params: &[Value],
) -> Result<Vec<AuditRow>, StoreError> {
    let sql = dollars(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE {conditions}"
    ));
    let rows: Vec<PgAuditTuple> = pg.all(bind_values(sqlx::query_as(&sql), params))?;
    Ok(rows.into_iter().map(from_tuple).collect())
}

fn select_sqlite(
    conn: &rusqlite::Connection,
    conditions: &str,
    params: &[Value],
) -> Result<Vec<AuditRow>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM audit_events WHERE {conditions}"
    ))?;
    let mut rows = statement.query(rusqlite::params_from_iter(params))?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(row_ref(row)?.to_row());
    }
    Ok(events)
}

/// Events with `seq > after`, oldest first, at most `limit` of them.
pub async fn page_after(
    db: impl Into<Db<'_>>,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditRow>, StoreError> {
    inline(db, |c| {
        select(
            c,
            "seq > ? ORDER BY seq LIMIT ?",
            &[after.into(), limit.into()],
        )
    })
    .await?
}

/// Events about one target, oldest first (a token's timeline).
pub async fn for_target(db: impl Into<Db<'_>>, target: &str) -> Result<Vec<AuditRow>, StoreError> {
    inline(db, |c| {
        select(c, "target = ? ORDER BY seq", &[target.to_owned().into()])
    })
    .await?
}

pub async fn count(db: impl Into<Db<'_>>) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM audit_events";
    Ok(on_either!(db, |conn| sqlx::query_scalar(SQL)
        .fetch_one(&mut *conn)
        .await?))
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
    /// Exactly this outcome (`success`, `denied`, `failure`).
    pub outcome: Option<String>,
}

/// Overwrites an event's hashes in place (tests of tamper detection; the triggers must be
/// dropped first).
#[cfg(test)]
pub(crate) async fn set_hashes(
    db: impl Into<Db<'_>>,
    seq: i64,
    prev_hash: &[u8],
    hash: &[u8],
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE seq = $3";
    on_either!(db, |conn| {
        sqlx::query(SQL)
            .bind(prev_hash)
            .bind(hash)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// How many events with `seq <= through` match `filter`.
pub async fn count_matching(
    db: impl Into<Db<'_>>,
    filter: &AuditFilter,
    through: i64,
) -> Result<i64, StoreError> {
    let (conditions, mut params) = filter_sql(filter);
    params.insert(0, through.into());
    let sql = format!("SELECT COUNT(*) FROM audit_events WHERE seq <= ?{conditions}");
    inline(db, |c| -> Result<i64, StoreError> {
        match c.on() {
            On::Sqlite(conn) => {
                Ok(conn.query_row(&sql, rusqlite::params_from_iter(&params), |row| row.get(0))?)
            }
            On::Postgres(pg) => {
                let sql = dollars(&sql);
                let (n,): (i64,) = pg.one(bind_values(sqlx::query_as(&sql), &params))?;
                Ok(n)
            }
        }
    })
    .await?
}

/// An event borrowed from the bulk reader's current row: no allocation per event.
pub struct AuditRowRef<'a> {
    pub seq: i64,
    pub time: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub details: &'a str,
    pub prev_hash: &'a [u8],
    pub hash: &'a [u8],
    pub sig: &'a [u8],
}

impl AuditRowRef<'_> {
    pub fn to_row(&self) -> AuditRow {
        AuditRow {
            seq: self.seq,
            time: self.time.to_owned(),
            actor: self.actor.to_owned(),
            action: self.action.to_owned(),
            target: self.target.to_owned(),
            outcome: self.outcome.to_owned(),
            details: self.details.to_owned(),
            prev_hash: self.prev_hash.to_vec(),
            hash: self.hash.to_vec(),
            sig: self.sig.to_vec(),
        }
    }
}

impl AuditRow {
    pub fn as_ref(&self) -> AuditRowRef<'_> {
        AuditRowRef {
            seq: self.seq,
            time: &self.time,
            actor: &self.actor,
            action: &self.action,
            target: &self.target,
            outcome: &self.outcome,
            details: &self.details,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
            sig: &self.sig,
        }
    }
}

/// Rows per keyset page of the bulk reader.
const PAGE: i64 = 8_192;

/// A blocking, query-only reader for walking the whole trail fast (verify, export, the SIEM
/// forwarder), on either engine.
///
/// Use it from a blocking thread (`std::thread`, `tokio::task::spawn_blocking`); the async
/// functions above serve everything else. On SQLite it is a connection of its own on the
/// database file: sqlx's SQLite driver moves every value through a worker thread (about 10 µs
/// per event), this reads rows in place. On PostgreSQL it runs its queries on the store's pool
/// with `Handle::block_on`, a keyset page at a time. One reader per thread: verify opens one
/// per core and walks disjoint seq ranges.
pub struct AuditReader {
    engine: ReaderEngine,
}

enum ReaderEngine {
    Sqlite(rusqlite::Connection),
    Postgres(PgReader),
}

/// Where [`AuditReader`]s come from: the SQLite file, or a PostgreSQL pool with the runtime
/// its connections belong to. Cheap to clone, so each verify thread opens its own reader.
#[derive(Clone)]
pub enum AuditSource {
    Sqlite(std::path::PathBuf),
    Postgres(PgReader),
}

/// The PostgreSQL side of [`AuditReader`]: the pool and the runtime that drives it.
#[derive(Clone)]
pub struct PgReader {
    pool: sqlx::PgPool,
    handle: tokio::runtime::Handle,
}

impl AuditSource {
    /// The trail of the SQLite database file at `path`.
    pub fn sqlite(path: &std::path::Path) -> Self {
        Self::Sqlite(path.to_path_buf())
    }

    /// The trail on a PostgreSQL pool; call inside the tokio runtime the pool belongs to.
    pub fn postgres(pool: sqlx::PgPool) -> Result<Self, StoreError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Postgres(
                "the audit trail on PostgreSQL is read through the tokio runtime, and none is running here".into(),
            )
        })?;
        Ok(Self::Postgres(PgReader { pool, handle }))
    }

    /// A reader of this trail (blocking; see [`AuditReader`]).
    pub fn reader(&self) -> Result<AuditReader, StoreError> {
        match self {
            Self::Sqlite(path) => AuditReader::open(path),
            Self::Postgres(pg) => Ok(AuditReader {
                engine: ReaderEngine::Postgres(pg.clone()),
            }),
        }
    }
}

impl PgReader {
    fn select(&self, conditions: &str, params: &[Value]) -> Result<Vec<AuditRow>, StoreError> {
        let sql = dollars(&format!(
            "SELECT {COLUMNS} FROM audit_events WHERE {conditions}"
        ));
        let rows: Vec<PgAuditTuple> = self
            .handle
            .block_on(bind_values(sqlx::query_as(&sql), params).fetch_all(&self.pool))?;
        Ok(rows.into_iter().map(from_tuple).collect())
    }

    fn head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(self.handle.block_on(
            sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool),
        )?)
    }
}

fn text<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> Result<&'a str, StoreError> {
    row.get_ref(i)?
        .as_str()
        .map_err(|e| StoreError::Corrupt(format!("audit event column {i}: {e}")))
}

fn blob<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> Result<&'a [u8], StoreError> {
    row.get_ref(i)?
        .as_blob()
        .map_err(|e| StoreError::Corrupt(format!("audit event column {i}: {e}")))
}

fn row_ref<'a>(row: &'a rusqlite::Row<'_>) -> Result<AuditRowRef<'a>, StoreError> {
    Ok(AuditRowRef {
        seq: row.get(0)?,
        time: text(row, 1)?,
        actor: text(row, 2)?,
        action: text(row, 3)?,
        target: text(row, 4)?,
        outcome: text(row, 5)?,
        details: text(row, 6)?,
        prev_hash: blob(row, 7)?,
        hash: blob(row, 8)?,
        sig: blob(row, 9)?,
    })
}

/// The filter as SQL conditions (appended after a `WHERE …`) and their parameters: the one
/// translation of an [`AuditFilter`] into SQL.
fn filter_sql(filter: &AuditFilter) -> (String, Vec<Value>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    for (column, op, value) in [
        ("actor", "=", &filter.actor),
        ("target", "=", &filter.target),
        ("action", "=", &filter.action),
        ("outcome", "=", &filter.outcome),
        ("time", ">=", &filter.since),
        ("time", "<", &filter.until),
    ] {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} {op} ?"));
            params.push(Value::from(value.clone()));
        }
    }
    (sql, params)
}

impl AuditReader {
    /// Opens the database file at `path` (see [`super::Store::path`]) for queries only.
    pub fn open(path: &std::path::Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        // Read-write flags (never create) but query_only: a read-only open of a WAL database
        // fails when its -shm file is missing; query_only still refuses every write.
        let conn = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(Self {
            engine: ReaderEngine::Sqlite(conn),
        })
    }

    /// Reads the database through a memory map instead of copying every page from the OS
    /// cache into SQLite's own: faster for a walk over the whole trail (verify). Mapped pages
    /// count towards the process's RSS although they are the shared page cache, so the export,
    /// which promises a small RSS, does not use it. Nothing to do on PostgreSQL, whose pages
    /// are the server's.
    pub fn mapped(self) -> Result<Self, StoreError> {
        if let ReaderEngine::Sqlite(conn) = &self.engine {
            conn.pragma_update(None, "mmap_size", 1i64 << 40)?;
        }
        Ok(self)
    }

    /// The newest event's `seq` and `hash`, if any.
    pub fn head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        match &self.engine {
            ReaderEngine::Sqlite(conn) => select_head(conn),
            ReaderEngine::Postgres(pg) => pg.head(),
        }
    }

    /// Every event with `action`, oldest first (the signing key hand-overs: a handful in a
    /// trail's life, found with one scan).
    pub fn with_action(&self, action: &str) -> Result<Vec<AuditRow>, StoreError> {
        const CONDITIONS: &str = "action = ? ORDER BY seq";
        match &self.engine {
            ReaderEngine::Sqlite(conn) => {
                select_sqlite(conn, CONDITIONS, &[action.to_owned().into()])
            }
            ReaderEngine::Postgres(pg) => pg.select(CONDITIONS, &[action.to_owned().into()]),
        }
    }

    /// The event at `seq`, if stored.
    pub fn get(&self, seq: i64) -> Result<Option<AuditRow>, StoreError> {
        const CONDITIONS: &str = "seq = ?";
        let rows = match &self.engine {
            ReaderEngine::Sqlite(conn) => select_sqlite(conn, CONDITIONS, &[seq.into()])?,
            ReaderEngine::Postgres(pg) => pg.select(CONDITIONS, &[seq.into()])?,
        };
        Ok(rows.into_iter().next())
    }

    /// Calls `each` for every event with `from <= seq <= through` that matches `filter`,
    /// oldest first, until it returns `false`. Reads in keyset pages (`seq > last LIMIT n`),
    /// each its own short read, so memory stays constant and a slow consumer never pins a
    /// snapshot that would keep the WAL from being checkpointed. Returns how many it visited.
    pub fn scan(
        &self,
        filter: &AuditFilter,
        from: i64,
        through: i64,
        mut each: impl FnMut(&AuditRowRef<'_>) -> bool,
    ) -> Result<u64, StoreError> {
        let (conditions, params) = filter_sql(filter);
        let conn = match &self.engine {
            ReaderEngine::Sqlite(conn) => conn,
            ReaderEngine::Postgres(pg) => {
                return scan_pg(pg, &conditions, &params, from, through, each)
            }
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_events WHERE seq > ? AND seq <= ?{conditions} ORDER BY seq LIMIT {PAGE}"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut after = from.saturating_sub(1);
        let mut visited = 0;
        loop {
            let mut values: Vec<Value> = vec![after.into(), through.into()];
            values.extend(params.iter().cloned());
            let mut rows = stmt.query(rusqlite::params_from_iter(values))?;
            let mut in_page = 0;
            while let Some(row) = rows.next()? {
                let event = row_ref(row)?;
                in_page += 1;
                visited += 1;
                after = event.seq;
                if !each(&event) {
                    return Ok(visited);
                }
            }
            if in_page < PAGE {
                return Ok(visited);
            }
        }
    }
}

/// [`AuditReader::scan`] on PostgreSQL: the same keyset pages, each its own statement on a
/// pooled connection (autocommit), so no snapshot or connection is held between pages.
fn scan_pg(
    pg: &PgReader,
    conditions: &str,
    params: &[Value],
    from: i64,
    through: i64,
    mut each: impl FnMut(&AuditRowRef<'_>) -> bool,
) -> Result<u64, StoreError> {
    let page_conditions = format!("seq > ? AND seq <= ?{conditions} ORDER BY seq LIMIT {PAGE}");
    let mut after = from.saturating_sub(1);
    let mut visited = 0;
    loop {
        let mut values: Vec<Value> = vec![after.into(), through.into()];
        values.extend(params.iter().cloned());
        let rows = pg.select(&page_conditions, &values)?;
        for event in &rows {
            visited += 1;
            after = event.seq;
            if !each(&event.as_ref()) {
                return Ok(visited);
            }
        }
        if (rows.len() as i64) < PAGE {
            return Ok(visited);
        }
    }
}

/// Inserts many events in one `BEGIN IMMEDIATE` transaction on a connection of its own
/// (the bulk fixture; the product appends through [`insert`] inside each action's
/// transaction).
#[cfg(any(test, feature = "test-fixtures"))]
pub fn insert_many(path: &std::path::Path, rows: &[AuditRow]) -> Result<(), StoreError> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for row in rows {
        // `insert_row` prepares through the connection's statement cache: compiled once.
        insert_row(&tx, row)?;
    }
    tx.commit()?;
    Ok(())
}

/// Where an audit page starts: just older or just newer than this seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditCursor {
    Older(i64),
    Newer(i64),
}

/// A page of events, newest first, and whether more match on either side.
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    pub has_newer: bool,
    pub has_older: bool,
}

/// One page of matching events, newest first (the audit page). Keyset paging on `seq` with
/// the filters on indexes, so a page costs the same anywhere in a trail of 10,000,000 events.
pub async fn page(
    db: impl Into<Db<'_>>,
    filter: &AuditFilter,
    cursor: Option<AuditCursor>,
    limit: i64,
) -> Result<AuditPage, StoreError> {
    inline(db, |c| page_on(c, filter, cursor, limit)).await?
}

fn page_on(
    conn: &Inline<'_>,
    filter: &AuditFilter,
    cursor: Option<AuditCursor>,
    limit: i64,
) -> Result<AuditPage, StoreError> {
    let (mut low, mut high) = seq_range(conn, filter)?;
    match cursor {
        Some(AuditCursor::Older(seq)) => high = high.min(seq - 1),
        Some(AuditCursor::Newer(seq)) => low = low.max(seq + 1),
        None => {}
    }
    let newer = matches!(cursor, Some(AuditCursor::Newer(_)));
    let (conditions, filter_params) = filter_sql(filter);
    let mut params: Vec<Value> = vec![low.into(), high.into()];
    params.extend(filter_params);
    params.push((limit + 1).into());
    let order = if newer { "ASC" } else { "DESC" };
    let mut rows = select(
        conn,
        &format!("seq BETWEEN ? AND ?{conditions} ORDER BY seq {order} LIMIT ?"),
        &params,
    )?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    if newer {
        rows.reverse();
    }
    let (has_newer, has_older) = match cursor {
        None => (false, more),
        Some(AuditCursor::Older(_)) => (true, more),
        Some(AuditCursor::Newer(_)) => (more, true),
    };
    Ok(AuditPage {
        rows,
        has_newer,
        has_older,
    })
}

/// The seqs that can hold events of the filter's time range. Events are appended in time
/// order, so each bound is a binary search over seq (about 24 primary-key reads for 10,000,000
/// events) instead of a scan or another index on every append; the time conditions still
/// apply to each row.
fn seq_range(c: &Inline<'_>, filter: &AuditFilter) -> Result<(i64, i64), StoreError> {
    let Some((head, _)) = read_head_on(c)? else {
        return Ok((1, 0));
    };
    const TIME_AT: &str = "SELECT time FROM audit_events WHERE seq = ";
    let mut time_at = match c.on() {
        On::Sqlite(conn) => Some(conn.prepare_cached(&format!("{TIME_AT}?"))?),
        On::Postgres(_) => None,
    };
    let mut time_of = |seq: i64| -> Result<Option<String>, StoreError> {
        match (&mut time_at, c.on()) {
            (Some(stmt), _) => Ok(stmt.query_row([seq], |r| r.get(0)).optional()?),
            (None, On::Postgres(pg)) => Ok(pg
                .optional(sqlx::query_as::<_, (String,)>(&format!("{TIME_AT}$1")).bind(seq))?
                .map(|(time,)| time)),
            (None, On::Sqlite(_)) => Ok(None),
        }
    };
    // The first seq whose time is >= `bound` (head + 1 when none).
    let mut first_at_or_after = |bound: &str| -> Result<i64, StoreError> {
        let (mut low, mut high) = (1, head + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            let time = time_of(middle)?;
            match time {
                Some(time) if time.as_str() < bound => low = middle + 1,
                _ => high = middle,
            }
        }
        Ok(low)
    };
    let low = match &filter.since {
        Some(since) => first_at_or_after(since)?,
        None => 1,
    };
    let high = match &filter.until {
        Some(until) => first_at_or_after(until)? - 1,
        None => head,
    };
    Ok((low, high))
}
