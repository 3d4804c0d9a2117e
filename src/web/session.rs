//! The signed-in operator, as an extractor. Sessions live server-side (tower-sessions: its
//! SQLite store, or on PostgreSQL its Postgres store on `transient.sessions`, shared by every
//! instance); the cookie holds only the session id.
//!
//! Idle and absolute timeouts are checked here against the injectable clock, and the operator
//! is re-read on every request, so a disabled operator or a role change takes effect at once.

use axum::extract::FromRequestParts;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};
use tower_sessions::Session;
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use super::{AppError, AppState};
use crate::config::IpNetwork;
use crate::operators::{self, Operator, Role};
use crate::store::sessions::SessionRow;

/// Session key of the signed-in marker.
pub const SIGNED_IN: &str = "signed_in";

/// How long `last_seen` may lag before it is written again (saves a write per request).
const LAST_SEEN_GRANULARITY: i64 = 30;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub operator_id: i64,
    pub signed_in_at: i64,
    pub last_seen: i64,
}

/// The signed-in, enabled operator making this request.
pub struct CurrentOperator {
    pub operator: Operator,
    pub session: Session,
}

impl CurrentOperator {
    /// 403 unless the operator holds `role`.
    pub fn require(&self, role: Role) -> Result<&Operator, AppError> {
        if self.operator.roles.contains(role) {
            Ok(&self.operator)
        } else {
            Err(AppError::Forbidden(format!(
                "this needs the {role} role, which {} does not hold",
                self.operator.name
            )))
        }
    }

    /// 403 unless the operator holds one of `roles`.
    pub fn require_any(&self, roles: &[Role]) -> Result<&Operator, AppError> {
        match roles {
            [role] => self.require(*role),
            _ if roles.iter().any(|r| self.operator.roles.contains(*r)) => Ok(&self.operator),
            _ => {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                Err(AppError::Forbidden(format!(
                    "this needs one of the roles {}",
                    names.join(", ")
                )))
            }
        }
    }
}

pub fn session_error(e: tower_sessions::session::Error) -> AppError {
    AppError::Internal(format!("session store: {e}"))
}

impl FromRequestParts<AppState> for CurrentOperator {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, message)| AppError::Internal(message.to_owned()))?;
        let Some(session_id) = session.id() else {
            return Err(AppError::Unauthenticated);
        };
        let signed_in_as = |record: &Record| {
            record
                .data
                .get(SIGNED_IN)
                .and_then(|v| serde_json::from_value::<SignedIn>(v.clone()).ok())
                .map(|s| s.operator_id)
        };
        // The record is handed to tower-sessions for this request only
        // (`SessionTable::preload`).
        let (operator, record) = if state.sessions.is_shared() {
            // Sessions in the instances' shared table, the operator from the vault's.
            let Some(record) = state
                .sessions
                .load(&session_id)
                .await
                .map_err(|e| AppError::Internal(format!("session store: {e}")))?
            else {
                return Err(AppError::Unauthenticated);
            };
            let operator = match signed_in_as(&record) {
                Some(id) => operators::by_id(&state.store, id).await?,
                None => None,
            };
            (operator, record)
        } else {
            // The session row and the operator it names in one round trip.
            let mut record = None;
            let loaded = operators::with_session(&state.store, &session_id.to_string(), |data| {
                let decoded: Record = rmp_serde::from_slice(data).ok()?;
                let operator_id = signed_in_as(&decoded);
                record = Some(decoded);
                operator_id
            })
            .await?;
            let (Some((_, operator)), Some(record)) = (loaded, record) else {
                return Err(AppError::Unauthenticated);
            };
            (operator, record)
        };
        // As tower-sessions' own load: an expired row is no session.
        if record.expiry_date <= time::OffsetDateTime::now_utc() {
            return Err(AppError::Unauthenticated);
        }
        let record_id = record.id;
        state.sessions.preload(record);
        let signed_in = session.get::<SignedIn>(SIGNED_IN).await;
        // Never left for a later request: when this request's session was already loaded
        // (a second extractor), its load did not take the record.
        state.sessions.unload(&record_id);
        let Some(mut signed_in) = signed_in.map_err(session_error)? else {
            return Err(AppError::Unauthenticated);
        };
        let now = state.clock.unix();
        let idle = i64::from(state.config.session_idle_minutes) * 60;
        let absolute = i64::from(state.config.session_absolute_hours) * 3600;
        if now - signed_in.last_seen > idle || now - signed_in.signed_in_at > absolute {
            session.flush().await.map_err(session_error)?;
            return Err(AppError::Unauthenticated);
        }
        // Read in the same round trip as the session, on every request: a disabled operator
        // is refused at once.
        let Some(operator) = operator.filter(|op| op.id == signed_in.operator_id && !op.disabled)
        else {
            session.flush().await.map_err(session_error)?;
            return Err(AppError::Unauthenticated);
        };
        if now - signed_in.last_seen >= LAST_SEEN_GRANULARITY {
            signed_in.last_seen = now;
            session
                .insert(SIGNED_IN, &signed_in)
                .await
                .map_err(session_error)?;
        }
        Ok(Self { operator, session })
    }
}

/// The client's address, for per-client rate limits and the audit trail ("unknown" without
/// connect info). Behind a configured trusted proxy (`trusted_proxies`), the address that proxy
/// reports in `X-Forwarded-For` (or RFC 7239 `Forwarded`); a header from any other peer is
/// ignored, since a client can write whatever it likes there.
pub struct ClientAddr(pub String);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        let Some(peer) = peer else {
            return Ok(Self("unknown".to_owned()));
        };
        Ok(Self(
            client_behind(peer, &parts.headers, &state.config.trusted_proxies).to_string(),
        ))
    }
}

/// The client's address: `peer` itself unless it is a trusted proxy, in which case the nearest
/// address in the forwarding chain that is not a trusted proxy (walking from the right, since
/// each proxy appends the address it received from; the left part is whatever the client sent).
pub fn client_behind(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNetwork]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut chain: Vec<IpAddr> = forwarded_for(headers);
    while let Some(hop) = chain.pop() {
        if !is_trusted(hop) {
            return hop;
        }
    }
    peer
}

/// The addresses of `X-Forwarded-For` (all of its lines, in order), or else those of the
/// `for=` parameters of `Forwarded`. Entries that are not IP addresses (`unknown`, obfuscated
/// identifiers) end the chain there: nothing left of them can be trusted.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let entries: Vec<&str> = if xff.is_empty() {
        headers
            .get_all(axum::http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    key.eq_ignore_ascii_case("for").then_some(value.trim())
                })
            })
            .collect()
    } else {
        xff
    };
    let mut chain = Vec::new();
    for entry in entries {
        match parse_node(entry) {
            Some(ip) => chain.push(ip),
            None => chain.clear(),
        }
    }
    chain
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:443"`, `::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    text.rsplit_once(':')?.0.parse().ok()
}

/// Which roles a route admits; see [`Authorized`].
pub trait RoleRule {
    const ROLES: &'static [Role];
}

macro_rules! role_rule {
    ($($name:ident => [$($role:ident),+];)*) => {$(
        #[doc = concat!("Admits: ", $(stringify!($role), " ",)+)]
        pub struct $name;
        impl RoleRule for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
        }
    )*};
}

role_rule! {
    AdminOnly => [Admin];
    ProvisionerOnly => [Provisioner];
    HelpdeskOnly => [Helpdesk];
    ProvisionerOrHelpdesk => [Provisioner, Helpdesk];
    AuditorOrAdmin => [Auditor, Admin];
}

/// The signed-in operator, checked against a route's roles before the body is even read, so
/// a caller without the role gets 403 whatever they sent.
pub struct Authorized<R: RoleRule> {
    pub current: CurrentOperator,
    _rule: std::marker::PhantomData<R>,
}

impl<R: RoleRule> Authorized<R> {
    pub fn operator(&self) -> &Operator {
        &self.current.operator
    }
}

impl<R: RoleRule + Send + Sync> FromRequestParts<AppState> for Authorized<R> {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let current = CurrentOperator::from_request_parts(parts, state).await?;
        current.require_any(R::ROLES)?;
        Ok(Self {
            current,
            _rule: std::marker::PhantomData,
        })
    }
}

/// The session table (tower-sessions' SQLite store): loads go to the read pool, and every
/// write to the store's single write connection, so session writes queue with the other
/// writes instead of racing them for SQLite's lock (see [`crate::store::Store`]).
///
/// A sign-in writes its new session row itself, in the transaction that records the sign-in
/// ([`Self::sign_in_row`], [`Self::adopt`]): tower-sessions' own create of that session and
/// delete of the cycled one then find their work done and write nothing, so a completed
/// sign-in costs one durable commit instead of three.
#[derive(Debug, Clone)]
pub struct SessionTable {
    backing: Backing,
    /// Rows a sign-in committed itself, until the session's first save adopts the id.
    written: Arc<Mutex<HashSet<Id>>>,
    /// Rows a sign-in deleted itself, until the id cycle's delete skips them.
    deleted: Arc<Mutex<HashSet<Id>>>,
    /// Records the signed-in extractor has just read with their operator, until this
    /// request's session load takes them (never kept for another request).
    preloaded: Arc<Mutex<HashMap<Id, Record>>>,
}

#[derive(Debug, Clone)]
enum Backing {
    Sqlite {
        reads: SqliteStore,
        writes: SqliteStore,
    },
    /// `transient.sessions` (created by the PostgreSQL migrations), shared by every instance.
    Postgres(PostgresStore),
}

/// Session data key naming the row a sign-in wrote itself (see [`SessionTable::adopt`]).
const WRITTEN_ROW: &str = "row";

fn locked<T>(set: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionTable {
    /// The `sessions` table of `store`, created if missing.
    pub async fn open(store: &crate::store::Store) -> Result<Self, String> {
        let table =
            |pool: &sqlx::SqlitePool| SqliteStore::new(pool.clone()).with_table_name("sessions");
        let writes = table(store.writer().map_err(|e| e.to_string())?)?;
        writes.migrate().await.map_err(|e| e.to_string())?;
        Ok(Self {
            backing: Backing::Sqlite {
                reads: table(store.pool().map_err(|e| e.to_string())?)?,
                writes,
            },
            written: Arc::default(),
            deleted: Arc::default(),
            preloaded: Arc::default(),
        })
    }

    /// The `transient.sessions` table on PostgreSQL, shared by every instance on `pool` (a
    /// session signed in through one loads through another). The table comes with the
    /// PostgreSQL migrations, not the store's own `migrate`, which returns early without it
    /// when two instances start at once and race on `CREATE SCHEMA`.
    pub fn postgres(pool: sqlx::PgPool) -> Result<Self, String> {
        let store = PostgresStore::new(pool)
            .with_schema_name("transient")?
            .with_table_name("sessions")?;
        Ok(Self {
            backing: Backing::Postgres(store),
            written: Arc::default(),
            deleted: Arc::default(),
            preloaded: Arc::default(),
        })
    }

    /// Whether sessions live in the table instances share (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Postgres(_))
    }

    /// Where writes go.
    fn writes(&self) -> &dyn SessionStore {
        match &self.backing {
            Backing::Sqlite { writes, .. } => writes,
            Backing::Postgres(store) => store,
        }
    }

    /// Hands `record`, just read, to the session load of the same request.
    fn preload(&self, record: Record) {
        locked(&self.preloaded).insert(record.id, record);
    }

    /// Drops what [`Self::preload`] handed over and the load did not take.
    fn unload(&self, id: &Id) {
        locked(&self.preloaded).remove(id);
    }

    /// Deletes sessions past their expiry (run by the sweeper every minute).
    pub async fn delete_expired(&self) -> session_store::Result<()> {
        use tower_sessions::ExpiredDeletion;
        match &self.backing {
            Backing::Sqlite { writes, .. } => writes.delete_expired().await,
            Backing::Postgres(store) => store.delete_expired().await,
        }
    }

    /// The row of a fresh session signed in as `signed_in` (a new random id: the id is cycled
    /// at sign-in, against fixation), replacing `session`'s current one, for the sign-in's
    /// transaction to write. Once that commits, [`Self::adopt`] makes `session` this row.
    pub fn sign_in_row(
        &self,
        session: &Session,
        signed_in: &SignedIn,
        idle: time::Duration,
    ) -> Result<(Id, SessionRow), AppError> {
        let id = Id::default();
        let mut data = std::collections::HashMap::new();
        let encode = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(|e| AppError::Internal(format!("session data: {e}")))
        };
        data.insert(
            SIGNED_IN.to_owned(),
            encode(serde_json::to_value(signed_in))?,
        );
        data.insert(
            WRITTEN_ROW.to_owned(),
            serde_json::Value::String(id.to_string()),
        );
        let record = Record {
            id,
            data,
            // As the session layer's `Expiry::OnInactivity` sets it (wall clock, as its loads
            // compare).
            expiry_date: time::OffsetDateTime::now_utc() + idle,
        };
        let bytes = rmp_serde::to_vec(&record)
            .map_err(|e| AppError::Internal(format!("session record: {e}")))?;
        Ok((
            id,
            SessionRow {
                id: id.to_string(),
                data: bytes,
                expiry: record.expiry_date,
                replaces: session.id().map(|old| old.to_string()),
            },
        ))
    }

    /// After the sign-in's commit: `session` becomes the row [`Self::sign_in_row`] made (its
    /// old id cycled out, its old data cleared), and neither change is written again.
    pub async fn adopt(
        &self,
        session: &Session,
        id: Id,
        signed_in: &SignedIn,
    ) -> Result<(), AppError> {
        locked(&self.written).insert(id);
        if let Some(old) = session.id() {
            locked(&self.deleted).insert(old);
            let cycled = session.cycle_id().await;
            // Also when the old row had expired (then the cycle deleted some other id).
            locked(&self.deleted).remove(&old);
            cycled.map_err(session_error)?;
        }
        session.clear().await;
        session
            .insert(SIGNED_IN, signed_in)
            .await
            .map_err(session_error)?;
        session
            .insert(WRITTEN_ROW, id.to_string())
            .await
            .map_err(session_error)
    }
}

#[async_trait::async_trait]
impl SessionStore for SessionTable {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let written = record
            .data
            .get(WRITTEN_ROW)
            .and_then(serde_json::Value::as_str)
            .and_then(|id| id.parse::<Id>().ok());
        if let Some(id) = written {
            // Taken once: only the sign-in that wrote the row can adopt it.
            if locked(&self.written).remove(&id) {
                record.id = id;
                if let Backing::Postgres(store) = &self.backing {
                    // Shared sessions are not in the sign-in's transaction: written here, as
                    // the session's first save.
                    return store.create(record).await;
                }
                return Ok(());
            }
        }
        self.writes().create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.writes().save(record).await
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        if let Some(record) = locked(&self.preloaded).remove(session_id) {
            return Ok(Some(record));
        }
        match &self.backing {
            Backing::Sqlite { reads, .. } => reads.load(session_id).await,
            Backing::Postgres(store) => store.load(session_id).await,
        }
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        if locked(&self.deleted).remove(session_id)
            && matches!(self.backing, Backing::Sqlite { .. })
        {
            return Ok(());
        }
        self.writes().delete(session_id).await
    }
}

#[cfg(test)]
mod client_addr_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_forwarded_header_counts_only_from_a_trusted_proxy() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1")]);
        // Straight from the internet: the header is the client's own claim, ignored.
        assert_eq!(
            client_behind(ip("203.0.113.9"), &spoofed, &trusted),
            ip("203.0.113.9")
        );
        // Through the proxy: the address it appended.
        let via_proxy = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7")]);
        assert_eq!(
            client_behind(ip("10.0.0.2"), &via_proxy, &trusted),
            ip("198.51.100.7")
        );
        // Two trusted hops: the first untrusted from the right.
        let two_hops = headers(&[("x-forwarded-for", "198.51.100.7, 10.1.1.1")]);
        assert_eq!(
            client_behind(ip("10.0.0.2"), &two_hops, &trusted),
            ip("198.51.100.7")
        );
        // RFC 7239 with ports and brackets.
        let rfc = headers(&[(
            "forwarded",
            "for=\"[2001:db8::1]:443\";proto=https, for=198.51.100.8:1234",
        )]);
        assert_eq!(
            client_behind(ip("10.0.0.2"), &rfc, &trusted),
            ip("198.51.100.8")
        );
        // A trusted proxy that sent no header: the proxy itself.
        assert_eq!(
            client_behind(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // Nothing trusted: the peer, whatever the headers say.
        assert_eq!(
            client_behind(ip("10.0.0.2"), &via_proxy, &[]),
            ip("10.0.0.2")
        );
    }
}

#[cfg(test)]
mod postgres_tests {
    #![allow(clippy::unwrap_used)]
    use axum::body::Body;
    use axum::http::{header, Request};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;
    use tower_sessions::SessionManagerLayer;

    use super::*;

    /// One instance's app: `/set` stores a number in the session, `/get` reads it.
    fn instance(table: SessionTable) -> Router {
        Router::new()
            .route(
                "/set",
                get(|session: Session| async move {
                    session.insert("n", 42).await.unwrap();
                    "set"
                }),
            )
            .route(
                "/get",
                get(|session: Session| async move {
                    let n: Option<i32> = session.get("n").await.unwrap();
                    format!("{n:?}")
                }),
            )
            .layer(SessionManagerLayer::new(table).with_secure(false))
    }

    async fn body(response: axum::response::Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_session_saved_through_one_instance_loads_through_the_other() {
        let (a, b) = crate::shared::two_instances().await;
        let (one, two) = (
            SessionTable::postgres(a).unwrap(),
            SessionTable::postgres(b).unwrap(),
        );
        let set = instance(one.clone())
            .oneshot(Request::get("/set").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let cookie = set.headers()[header::SET_COOKIE].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let get = |app: Router| {
            let cookie = cookie.clone();
            async move {
                body(
                    app.oneshot(
                        Request::get("/get")
                            .header(header::COOKIE, cookie)
                            .body(Body::empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap(),
                )
                .await
            }
        };
        assert_eq!(get(instance(two.clone())).await, "Some(42)");

        // Deleted on one (sign-out): gone on the other.
        let id: Id = cookie.split_once('=').unwrap().1.parse().unwrap();
        one.delete(&id).await.unwrap();
        assert_eq!(get(instance(two.clone())).await, "None");

        // Expired rows are not sessions; the sweep runs on the migrations' table (the store's
        // own SQL against the schema we created for it) and keeps live ones.
        let mut stale = Record {
            id: Id::default(),
            data: HashMap::new(),
            expiry_date: time::OffsetDateTime::now_utc() - time::Duration::minutes(1),
        };
        one.create(&mut stale).await.unwrap();
        assert!(two.load(&stale.id).await.unwrap().is_none());
        two.delete_expired().await.unwrap();
        assert_eq!(get(instance(two.clone())).await, "None");
        let set = instance(one.clone())
            .oneshot(Request::get("/set").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let fresh = set.headers()[header::SET_COOKIE].to_str().unwrap();
        let fresh: Id = fresh
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .parse()
            .unwrap();
        two.delete_expired().await.unwrap();
        assert!(one.load(&fresh).await.unwrap().is_some());
    }
}
