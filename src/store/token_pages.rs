//! The token list at volume: search, sorting and keyset paging that stay fast at a million
//! tokens (BENCHMARKS.md, "Screens at volume").
//!
//! Search matches the *start* of a serial, an owner id or a display name, ignoring ASCII case:
//! each is a range over an index (`COLLATE NOCASE`). A substring search (`LIKE '%q%'`) reads
//! every row — 1.4 s at 1,000,000 tokens — and a trigram index would triple the cost of every
//! import. When a prefix matches many rows (`u`), the rows are read in the list's order instead
//! and the first page is there at once.
//!
//! Paging is by keyset: a page ends at a token id, and the next page starts after that token's
//! position in the chosen order, so page 5,000 costs what page 1 costs.

use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::tokens::{select_rows, TokenRow, VISIBLE};
use super::{dollars, inline, Db, Inline, On, StoreError};

/// The orders the token list offers; each is backed by an index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenSort {
    /// Capture time (the default, newest first).
    #[default]
    Captured,
    Owner,
    Serial,
    State,
    Deadline,
}

impl TokenSort {
    pub const ALL: [TokenSort; 5] = [
        TokenSort::Captured,
        TokenSort::Owner,
        TokenSort::Serial,
        TokenSort::State,
        TokenSort::Deadline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenSort::Captured => "captured",
            TokenSort::Owner => "owner",
            TokenSort::Serial => "serial",
            TokenSort::State => "state",
            TokenSort::Deadline => "deadline",
        }
    }

    pub fn parse(text: &str) -> Option<TokenSort> {
        TokenSort::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The sort key exactly as its index is declared (SQLite: migration 20261201002601;
    /// PostgreSQL: the `lower(…) COLLATE "C"` expression indexes), so the planner walks the
    /// index instead of sorting. Text keys order bytewise on both engines.
    fn key(self, c: &Inline<'_>) -> &'static str {
        let postgres = matches!(c.on(), On::Postgres(_));
        match self {
            TokenSort::Captured => "captured_at",
            TokenSort::Owner if postgres => "lower(coalesce(owner, '')) COLLATE \"C\"",
            TokenSort::Owner => "ifnull(owner, '') COLLATE NOCASE",
            TokenSort::Serial if postgres => "serial COLLATE \"C\"",
            TokenSort::Serial => "serial",
            TokenSort::State => "state",
            TokenSort::Deadline => "retention_deadline",
        }
    }

    /// Whether the sort key is an integer column (else text).
    fn integer(self) -> bool {
        matches!(self, TokenSort::Captured | TokenSort::Deadline)
    }
}

/// Where a page starts: after or before the token with this serial (its position in the
/// order). An unknown serial starts from the beginning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    After(String),
    Before(String),
}

/// Escrowed tokens in the post, as the dashboard and `status` count them
/// ([`super::tokens::in_transit`]): the list filtered to one of its figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPost {
    /// Shipped and still escrowed.
    InTransit,
    /// … and the expected delivery date (`YYYY-MM-DD`) is before `today`.
    Late { today: String },
    /// … and the seed's retention deadline is before `soon`.
    NearingRetention { soon: i64 },
}

/// One page request of the token list.
#[derive(Debug, Default)]
pub struct PageRequest {
    /// Prefix of a serial, owner or display name.
    pub query: Option<String>,
    pub state: Option<String>,
    pub policy: Option<String>,
    pub in_post: Option<InPost>,
    pub sort: TokenSort,
    pub descending: bool,
    pub cursor: Option<Cursor>,
    pub limit: i64,
}

/// A page of tokens in the requested order, and whether more lie on either side.
#[derive(Debug)]
pub struct TokenPage {
    pub rows: Vec<TokenRow>,
    pub has_previous: bool,
    pub has_next: bool,
}

/// How many rows a prefix may match in one column before the search reads the list's order
/// instead of collecting and sorting candidates (three columns' candidates stay under SQLite's
/// 32,766 parameters).
const NARROW: i64 = 10_000;

/// The `query` as SQL conditions (after `WHERE 1 = 1`) and parameters (bare `?`).
///
/// A prefix range per column, ignoring ASCII case: SQLite compares under `COLLATE NOCASE`,
/// PostgreSQL compares `lower(…) COLLATE "C"` (its expression indexes) with the bounds folded
/// by the same `lower`.
pub(super) fn search_condition(
    c: &Inline<'_>,
    query: &str,
) -> Result<(String, Vec<Value>), StoreError> {
    // Every string that starts with `query` sorts between it and it + the last code point.
    let low = query.to_owned();
    let high = format!("{query}\u{10FFFF}");
    let postgres = matches!(c.on(), On::Postgres(_));
    let columns: [&str; 3] = if postgres {
        [
            "lower(serial) COLLATE \"C\"",
            "lower(coalesce(owner, '')) COLLATE \"C\"",
            "lower(coalesce(display_name, '')) COLLATE \"C\"",
        ]
    } else {
        [
            "serial COLLATE NOCASE",
            "ifnull(owner, '') COLLATE NOCASE",
            "ifnull(display_name, '') COLLATE NOCASE",
        ]
    };
    let bound = if postgres {
        "lower(CAST(? AS TEXT))"
    } else {
        "?"
    };
    let mut candidates: Vec<i64> = Vec::new();
    for column in columns {
        let sql = format!(
            "SELECT id FROM tokens WHERE {column} >= {bound} AND {column} < {bound} AND {VISIBLE} LIMIT {}",
            NARROW + 1
        );
        let ids: Vec<i64> = match c.on() {
            On::Sqlite(conn) => conn
                .prepare_cached(&sql)?
                .query_map([&low, &high], |r| r.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()?,
            On::Postgres(pg) => pg
                .all(
                    sqlx::query_as::<_, (i64,)>(&dollars(&sql))
                        .bind(&low)
                        .bind(&high),
                )?
                .into_iter()
                .map(|(id,)| id)
                .collect(),
        };
        if ids.len() as i64 > NARROW {
            // Broad: test each row in the list's order (on SQLite, `+` keeps the planner off
            // the prefix indexes, which would collect every match and sort them all).
            let broad = columns
                .iter()
                .map(|c| {
                    if postgres {
                        format!("({c} >= {bound} AND {c} < {bound})")
                    } else {
                        let column = c.trim_end_matches(" COLLATE NOCASE");
                        format!(
                            "((+{column}) COLLATE NOCASE >= ? AND (+{column}) COLLATE NOCASE < ?)"
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            let mut params = Vec::new();
            for _ in columns {
                params.push(Value::from(low.clone()));
                params.push(Value::from(high.clone()));
            }
            return Ok((format!(" AND ({broad})"), params));
        }
        candidates.extend(ids);
    }
    candidates.sort_unstable();
    candidates.dedup();
    if candidates.is_empty() {
        return Ok((" AND 1 = 0".into(), Vec::new()));
    }
    let list = vec!["?"; candidates.len()].join(", ");
    Ok((
        format!(" AND id IN ({list})"),
        candidates.into_iter().map(Value::from).collect(),
    ))
}

/// One page of the token list.
pub async fn page(db: impl Into<Db<'_>>, request: &PageRequest) -> Result<TokenPage, StoreError> {
    inline(db, |c| page_on(c, request)).await?
}

fn page_on(c: &Inline<'_>, request: &PageRequest) -> Result<TokenPage, StoreError> {
    // Visibility inside the conditions too: the cursor's subqueries take their LIMIT before
    // `select_rows` filters.
    let mut conditions = String::from(VISIBLE);
    let mut params: Vec<Value> = Vec::new();
    if let Some(query) = request.query.as_deref().filter(|q| !q.is_empty()) {
        let (sql, values) = search_condition(c, query)?;
        conditions.push_str(&sql);
        params.extend(values);
    }
    for (column, value) in [("state", &request.state), ("policy", &request.policy)] {
        if let Some(value) = value {
            conditions.push_str(&format!(" AND {column} = ?"));
            params.push(value.clone().into());
        }
    }
    if let Some(in_post) = &request.in_post {
        conditions.push_str(" AND shipped_at IS NOT NULL AND state = 'escrowed'");
        match in_post {
            InPost::InTransit => {}
            InPost::Late { today } => {
                conditions.push_str(" AND expected < ?");
                params.push(today.clone().into());
            }
            InPost::NearingRetention { soon } => {
                conditions.push_str(" AND retention_deadline < ?");
                params.push((*soon).into());
            }
        }
    }
    let key = request.sort.key(c);
    // Rows are fetched in the direction of travel: backwards for the page before a cursor.
    let backwards = matches!(request.cursor, Some(Cursor::Before(_)));
    let ascending = request.descending == backwards;
    let (dir, cmp) = if ascending { ("", ">") } else { (" DESC", "<") };
    let take = request.limit + 1;
    let position = match &request.cursor {
        Some(Cursor::After(serial) | Cursor::Before(serial)) => {
            let sql = format!("SELECT id, {key} FROM tokens WHERE serial = ? AND {VISIBLE}");
            match c.on() {
                On::Sqlite(conn) => conn
                    .prepare_cached(&sql)?
                    .query_row([serial], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Value>(1)?))
                    })
                    .optional()?,
                On::Postgres(pg) if request.sort.integer() => pg
                    .optional(sqlx::query_as::<_, (i64, i64)>(&dollars(&sql)).bind(serial))?
                    .map(|(id, key)| (id, Value::from(key))),
                On::Postgres(pg) => pg
                    .optional(sqlx::query_as::<_, (i64, String)>(&dollars(&sql)).bind(serial))?
                    .map(|(id, key)| (id, Value::from(key))),
            }
        }
        None => None,
    };
    let found = position.is_some();
    let mut rows = match position {
        None => {
            params.push(take.into());
            select_rows(
                c,
                &format!("{conditions} ORDER BY {key}{dir}, id{dir} LIMIT ?"),
                &params,
            )?
        }
        Some((id, position)) => {
            // The rows tied with the cursor's key after its id, then the rows past its key:
            // two index ranges. A row-value comparison `(key, id) > (?, ?)` is bounded by the
            // key alone and walks every tie (half the table when sorting by state).
            let mut all = params.clone();
            all.extend([position.clone(), id.into(), take.into()]);
            all.extend(params);
            all.extend([position, take.into()]);
            select_rows(
                c,
                &format!(
                    "id IN (SELECT id FROM (SELECT id FROM tokens WHERE {conditions} AND {key} = ? AND id {cmp} ? \
                     ORDER BY id{dir} LIMIT ?) AS tied UNION ALL SELECT id FROM (SELECT id FROM tokens WHERE {conditions} \
                     AND {key} {cmp} ? ORDER BY {key}{dir}, id{dir} LIMIT ?) AS past) ORDER BY {key}{dir}, id{dir} LIMIT {take}"
                ),
                &all,
            )?
        }
    };
    let more = rows.len() as i64 > request.limit;
    rows.truncate(request.limit as usize);
    if backwards {
        rows.reverse();
    }
    let (has_previous, has_next) = match (&request.cursor, found) {
        (Some(Cursor::After(_)), true) => (true, more),
        (Some(Cursor::Before(_)), true) => (more, true),
        _ => (false, more),
    };
    Ok(TokenPage {
        rows,
        has_previous,
        has_next,
    })
}

/// Tokens per state and policy: the figures above the list.
pub async fn counts(db: impl Into<Db<'_>>) -> Result<Vec<(String, String, i64)>, StoreError> {
    const SQL: &str = "SELECT state, policy, COUNT(*) FROM tokens WHERE {VISIBLE} GROUP BY state, policy ORDER BY state, policy";
    let sql = SQL.replace("{VISIBLE}", VISIBLE);
    Ok(match super::engine(db).await? {
        super::Engine::Sqlite(mut conn) => sqlx::query_as(&sql).fetch_all(&mut *conn).await?,
        // Policy names order bytewise, as on SQLite.
        super::Engine::Postgres(mut conn) => {
            sqlx::query_as(&format!("{sql} COLLATE \"C\""))
                .fetch_all(&mut *conn)
                .await?
        }
    })
}
