//! Shared helpers for integration tests: an in-process server on a temporary SQLite file (or,
//! with `SEEDVAULT_TEST_ENGINE=postgres`, a fresh database on the throwaway PostgreSQL
//! cluster), an HTTP client that feeds every response into the secret-leak canary, and the
//! canary.

pub mod canary;

use std::path::Path;
use std::sync::Arc;

use seedvault::clock::ManualClock;
use seedvault::config::{Config, Overrides};
use seedvault::shared::Shared;
use seedvault::store::Store;
use seedvault::vault::open::{self, SlotRequest};
use seedvault::web::AppState;
use tempfile::TempDir;

pub use canary::Canary;
pub use passkey::Operator;

pub mod passkey;
pub mod postgres;
pub mod qr;
pub mod smtp;
pub mod totp;

/// A unix time inside the shared test data's reference step.
pub const T0: i64 = 1_764_000_000;

/// Whether this run puts each [`TestServer`]'s vault on PostgreSQL: `SEEDVAULT_TEST_ENGINE=postgres
/// cargo test --test it` runs the whole suite there (a fresh database on the test cluster per
/// server); unset or `sqlite` is SQLite in a temporary data directory.
pub fn on_postgres() -> bool {
    match std::env::var("SEEDVAULT_TEST_ENGINE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("SEEDVAULT_TEST_ENGINE={other}: expected sqlite or postgres"),
    }
}

/// For tests that are SQLite's by nature (database files, full disk, backups of the file, WAL):
/// true, with the reason printed, when the suite runs on PostgreSQL and the test should return.
pub fn sqlite_only(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("skipped on PostgreSQL: {why}");
    }
    skip
}

/// Where a test server's database URL is kept in its temporary directory, so that a restart on
/// the same directory ([`TestServer::restart_in`]) finds the same PostgreSQL database.
pub const DATABASE_URL_FILE: &str = "test-database-url";

/// The PostgreSQL database of the (stopped) test server whose temporary directory is `dir`,
/// for running the binary on its vault; `None` on SQLite.
pub fn database_url_of(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(DATABASE_URL_FILE)).ok()
}

/// The store of the test server whose data directory is `data`, on its engine (for a look from
/// outside the server, as another process would).
pub async fn store_of(data: &Path) -> Store {
    match data.parent().and_then(database_url_of) {
        Some(url) => {
            let url = seedvault::store::engine::PostgresUrl::parse(&url).unwrap();
            Store::open_postgres(&url, None, 4).await.unwrap()
        }
        None => Store::open(data).await.unwrap(),
    }
}

/// On PostgreSQL, the database of the test server in `dir`: the one recorded there, or a
/// fresh one the first time. `None` on SQLite.
async fn test_database_url(dir: &Path) -> Option<String> {
    if !on_postgres() {
        return None;
    }
    let recorded = dir.join(DATABASE_URL_FILE);
    Some(match std::fs::read_to_string(&recorded) {
        Ok(url) => url,
        Err(_) => {
            let url = postgres::Database::fresh().await.url();
            std::fs::write(&recorded, &url).unwrap();
            url
        }
    })
}

/// The store `config` names, opened as `serve` opens it.
async fn open_test_store(config: &Config) -> Store {
    match &config.database_url {
        seedvault::store::engine::DatabaseUrl::Sqlite => {
            Store::open_with(&config.data_dir, config.busy_timeout())
                .await
                .unwrap()
        }
        seedvault::store::engine::DatabaseUrl::Postgres(url) => {
            Store::open_postgres(url, None, config.database_pool_size)
                .await
                .unwrap()
        }
    }
}

/// The real server, in-process, on a port of its own and a fresh data directory.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub canary: Arc<Canary>,
    pub clock: ManualClock,
    pub state: AppState,
    pub dir: TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The notice sender, as `serve` runs it beside the server.
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Overrides::default()).await
    }

    /// A server whose configuration has `settings` on top of the test defaults.
    pub async fn start_with(settings: Overrides) -> Self {
        Self::start_with_limits(
            settings,
            seedvault::server::ConnectionLimits::for_open_file_limit(1024),
        )
        .await
    }

    /// [`TestServer::start_with`] with the connection limits of the test's choosing.
    pub async fn start_with_limits(
        settings: Overrides,
        limits: seedvault::server::ConnectionLimits,
    ) -> Self {
        Self::launch(
            tempfile::tempdir().unwrap(),
            settings,
            limits,
            None,
            Shared::Memory,
        )
        .await
    }

    /// A server keeping the state instances share (sessions, ceremonies in flight, rate
    /// limits) in the PostgreSQL database of `pool`, as one of several instances does.
    pub async fn start_sharing(settings: Overrides, pool: sqlx::PgPool) -> Self {
        Self::launch(
            tempfile::tempdir().unwrap(),
            settings,
            seedvault::server::ConnectionLimits::for_open_file_limit(1024),
            None,
            Shared::Postgres(pool),
        )
        .await
    }

    /// Starts the server again on the data directory a stopped one left ([`Self::stop_keep_dir`]),
    /// as `seedvault serve` does after a restart: same vault (development slot), same database.
    pub async fn restart_in(dir: TempDir, settings: Overrides, at_unix: i64) -> Self {
        Self::launch(
            dir,
            settings,
            seedvault::server::ConnectionLimits::for_open_file_limit(1024),
            Some(at_unix),
            Shared::Memory,
        )
        .await
    }

    async fn launch(
        dir: TempDir,
        settings: Overrides,
        limits: seedvault::server::ConnectionLimits,
        restart_at: Option<i64>,
        shared: Shared,
    ) -> Self {
        let canary = Arc::new(Canary::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let database_url = match settings.database_url.clone() {
            Some(url) => Some(url),
            None => test_database_url(dir.path()).await,
        };
        let config = Config::validate(Overrides {
            data_dir: Some(dir.path().join("data")),
            database_url,
            origin: Some(format!("http://localhost:{port}")),
            // The shipped policies unless the test brings its own (from tests/data/).
            policies_dir: Some(
                settings
                    .policies_dir
                    .clone()
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")),
            ),
            ..settings
        })
        .unwrap();
        let clock = ManualClock::at_unix(restart_at.unwrap_or(T0));
        let store = open_test_store(&config).await;
        // On PostgreSQL the state instances share goes where `serve` puts it: the store's
        // database (a test of several instances brings its own pool).
        let shared = match (&shared, store.postgres_pool()) {
            (Shared::Memory, Some(pool)) => Shared::Postgres(pool.clone()),
            _ => shared,
        };
        let vault = match restart_at {
            Some(_) => open::unlock(&store, &seedvault::vault::Unlocker::Development)
                .await
                .unwrap(),
            None => open::create(
                &store,
                clock_now(&clock),
                "system",
                vec![("development".into(), SlotRequest::Development)],
            )
            .await
            .unwrap(),
        };
        let sender = seedvault::notices::sender::Sender::from_config(
            store.clone(),
            Arc::new(clock.clone()),
            &config,
        )
        .unwrap()
        .spawn();
        let state = AppState::with_shared(store, vault, config, Arc::new(clock.clone()), shared)
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // The server's own accept loop, as `seedvault serve` runs it.
        let serving = seedvault::server::run(
            state.clone(),
            listener,
            async {
                let _ = rx.await;
            },
            limits,
        );
        let task = tokio::spawn(async move {
            serving.await.unwrap();
        });
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        Self {
            base: format!("http://localhost:{port}"),
            client,
            canary,
            clock,
            state,
            dir,
            shutdown: Some(tx),
            task: Some(task),
            sender: Some(sender),
        }
    }

    /// Makes an invite through the library (as the CLI would) and returns its token.
    pub async fn invite(&self, name: &str, roles: &str) -> String {
        use seedvault::clock::Clock;
        let roles = seedvault::operators::Roles::parse_list(roles).unwrap();
        let invite = seedvault::operators::create_invite(
            &self.state.store,
            &self.state.vault,
            self.clock.now(),
            "test",
            seedvault::operators::NewInvite {
                name,
                roles: &roles,
                ttl_hours: self.state.config.invite_ttl_hours,
                replace_pending: false,
            },
        )
        .await
        .unwrap();
        let token = invite.token.expose().to_owned();
        self.canary
            .watch_text(&format!("invite token for {name}"), &token);
        token
    }

    /// Invites and registers an operator with a fresh software passkey; signed in.
    pub async fn operator(&self, name: &str, roles: &str) -> Operator {
        let token = self.invite(name, roles).await;
        Operator::register(self, name, &token).await.unwrap()
    }

    /// The sealed seed of a token, straight from the database (for byte-scan tests).
    pub async fn sealed_bytes(&self, serial: &str) -> Option<Vec<u8>> {
        const SQL: &str = "SELECT sealed_seed FROM tokens WHERE serial = $1";
        match self.state.store.postgres_pool() {
            Some(pool) => sqlx::query_scalar(SQL).bind(serial).fetch_one(pool).await,
            None => {
                sqlx::query_scalar(SQL)
                    .bind(serial)
                    .fetch_one(self.state.store.pool().unwrap())
                    .await
            }
        }
        .unwrap()
    }

    /// Every row `sql` returns, on whichever engine the server runs (write `$N` placeholders,
    /// which both take).
    pub async fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        match self.state.store.postgres_pool() {
            Some(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
            None => sqlx::query_as(sql)
                .fetch_all(self.state.store.pool().unwrap())
                .await
                .unwrap(),
        }
    }

    /// The one integer `sql` returns (a count), on either engine.
    pub async fn count(&self, sql: &str) -> i64 {
        let rows: Vec<(i64,)> = self.rows(sql).await;
        rows[0].0
    }

    /// Runs a statement the product never runs (fixtures, injected failures), on either
    /// engine: `sqlite` on SQLite, `postgres` on PostgreSQL.
    pub async fn execute(&self, sqlite: &str, postgres: &str) {
        match self.state.store.postgres_pool() {
            Some(pool) => {
                sqlx::raw_sql(postgres).execute(pool).await.unwrap();
            }
            None => {
                sqlx::raw_sql(sqlite)
                    .execute(self.state.store.writer().unwrap())
                    .await
                    .unwrap();
            }
        }
    }

    /// Fails if any 12-byte window of `sealed` appears in the database, its WAL or its
    /// shared-memory file.
    pub fn assert_no_trace(&self, what: &str, sealed: &[u8]) {
        if sqlite_only("the byte scan reads SQLite's database, WAL and shm files") {
            return;
        }
        let db = self.state.store.path().unwrap().to_path_buf();
        for suffix in ["", "-wal", "-shm"] {
            let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let needles: std::collections::HashSet<&[u8]> = sealed.windows(12).collect();
            assert!(
                !bytes.windows(12).any(|w| needles.contains(w)),
                "{what}: bytes of the sealed seed remain in {}",
                path.display()
            );
        }
    }

    /// The audit actions recorded so far, oldest first.
    pub async fn audit_actions(&self) -> Vec<(String, String, String)> {
        seedvault::store::audit::page_after(&self.state.store, 0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.action, r.target, r.outcome))
            .collect()
    }

    /// How many audit events of `action` were recorded so far.
    pub async fn count_action(&self, action: &str) -> usize {
        self.audit_actions()
            .await
            .iter()
            .filter(|(a, _, _)| a == action)
            .count()
    }

    pub fn clock_unix(&self) -> i64 {
        use seedvault::clock::Clock;
        self.clock.unix()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET; the body goes to the canary.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        self.finish(path, response).await
    }

    /// Records a response body with the canary and parses it as JSON (Null when not JSON).
    pub async fn finish(
        &self,
        what: &str,
        response: reqwest::Response,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        self.canary.record_response(what, &bytes);
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Stops the server, checks the canary, and hands back the data directory (kept on disk
    /// until the returned `TempDir` drops) for tests that work on the stopped vault's files.
    pub async fn stop_keep_dir(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(sender) = self.sender.take() {
            sender.abort();
            let _ = sender.await;
        }
        self.state.store.close().await;
        self.canary.assert_clean(&[self.dir.path()]);
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, placeholder)
    }

    /// Stops the server and checks the canary over logs, responses and every file written.
    pub async fn stop_and_check(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(sender) = self.sender.take() {
            sender.abort();
            let _ = sender.await;
        }
        self.state.store.close().await;
        self.canary.assert_clean(&[self.dir.path()]);
    }
}

fn clock_now(clock: &ManualClock) -> time::OffsetDateTime {
    use seedvault::clock::Clock;
    clock.now()
}

/// A server with a provisioner (`pat`) and a helpdesk operator (`hal`), each with a passkey and
/// a signed-in session: the cast of most capture, reveal and delivery tests.
pub struct Desk {
    pub srv: TestServer,
    pub provisioner: Operator,
    pub helpdesk: Operator,
}

impl Desk {
    pub async fn start() -> Self {
        let srv = TestServer::start().await;
        let provisioner = srv.operator("pat", "provisioner").await;
        let helpdesk = srv.operator("hal", "helpdesk").await;
        Self {
            srv,
            provisioner,
            helpdesk,
        }
    }
}

/// Captures a token through `POST /api/v1/tokens` as `op`, with `extra` fields merged into the
/// body (format, policy, manufacturer, …).
pub async fn capture(
    op: &Operator,
    owner: &str,
    serial: &str,
    secret: &str,
    extra: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut body = serde_json::json!({ "owner": owner, "serial": serial, "secret": secret });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    op.post("/api/v1/tokens", body).await
}

/// A `multipart/form-data` body as a browser builds it, by hand (reqwest's multipart feature
/// would add crates for a few tests): the part named `file` is a file upload called
/// `file_name`, the others are plain fields, in the given order. Returns the content type and
/// the body.
pub fn multipart(file_name: &str, parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "seedvault-test-boundary-5mWq1vXk";
    let mut body = Vec::new();
    for (name, value) in parts {
        let disposition = if *name == "file" {
            format!(
                "form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream"
            )
        } else {
            format!("form-data; name=\"{name}\"")
        };
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Posts a body with its content type (e.g. from [`multipart`]) to `path` as `op`, with the
/// vault's Origin; the status and the reply as text, recorded by the canary.
pub async fn post_form(
    op: &Operator,
    path: &str,
    (content_type, body): (String, Vec<u8>),
) -> (reqwest::StatusCode, String) {
    let response = op
        .http
        .post(format!("{}{path}", op.base))
        .header("Origin", &op.base)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    op.canary.record_response(path, &bytes);
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
