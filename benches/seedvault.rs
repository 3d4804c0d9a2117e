//! seedvault's benchmark: a plain bench binary (no criterion, so CI compiles nothing extra).
//!
//! Runs the real server in-process on a temporary data directory (the same `web::app` that
//! `seedvault serve` runs, on a loopback port) and drives it over HTTP with software passkeys,
//! one cookie jar and one passkey per simulated operator. Figures are medians; the load
//! generator shares the machine's cores with the server, so the figures are conservative.
//!
//! ```text
//! cargo bench --bench seedvault                      # every scenario
//! cargo bench --bench seedvault -- reveal sweep      # only some: primitives signin reveal sweep siem
//! cargo bench --bench seedvault -- siem --siem-events 1000000   # SIEM forwarding rate
//! cargo bench --bench seedvault -- --reveals 20000   # more reveals per run
//! ```
//!
//! Method and figures: BENCHMARKS.md. No timing is asserted anywhere; this only prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use seedvault::clock::{Clock, SystemClock};
use seedvault::config::{Config, Overrides};
use seedvault::operators::{self, NewInvite, Roles};
use seedvault::otp::{self, TotpSpec};
use seedvault::secret::{Algorithm, Seed};
use seedvault::store::Store;
use seedvault::tokens::{self, CaptureRequest, Env};
use seedvault::vault::open::{self, SlotRequest};
use seedvault::web::AppState;
use serde_json::{json, Value};
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};
use zeroize::Zeroizing;

/// Simulated helpdesk operators (and so the concurrency of the HTTP scenarios).
const CONCURRENCY: usize = 16;
/// Tokens the reveal load spreads over.
const REVEAL_TOKENS: usize = 1_000;

struct Options {
    scenarios: Vec<String>,
    reveals: usize,
    sign_ins: usize,
    sweep_tokens: usize,
    siem_events: u64,
}

impl Options {
    fn parse() -> Option<Self> {
        let mut args = std::env::args().skip(1);
        let mut options = Self {
            scenarios: Vec::new(),
            reveals: 5_000,
            sign_ins: 2_000,
            sweep_tokens: 10_000,
            siem_events: 1_000_000,
        };
        let mut benching = false;
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> usize {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} needs a number"))
            };
            match arg.as_str() {
                // cargo passes --bench to a bench binary; `cargo test --benches` does not.
                "--bench" => benching = true,
                "--reveals" => options.reveals = number("--reveals"),
                "--sign-ins" => options.sign_ins = number("--sign-ins"),
                "--sweep-tokens" => options.sweep_tokens = number("--sweep-tokens"),
                "--siem-events" => options.siem_events = number("--siem-events") as u64,
                other if other.starts_with('-') => {}
                other => options.scenarios.push(other.to_owned()),
            }
        }
        benching.then_some(options)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }
}

fn main() {
    let Some(options) = Options::parse() else {
        println!("seedvault bench: run it with `cargo bench --bench seedvault` (skipped here)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "seedvault {} bench — {} cores, {}",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    runtime.block_on(async {
        machine_probe().await;
        if options.wants("primitives") {
            primitives().await;
        }
        if options.wants("siem") {
            siem_forwarding(options.siem_events).await;
        }
        if options.wants("signin")
            || options.wants("reveal")
            || options.wants("sweep")
            || options.wants("siem")
        {
            let bench = Bench::start().await;
            if options.wants("signin") {
                bench.sign_ins(options.sign_ins).await;
            }
            if options.wants("reveal") {
                bench.reveals(options.reveals).await;
            }
            if options.wants("sweep") {
                bench.sweep(options.sweep_tokens).await;
            }
            if options.wants("siem") {
                bench.reveals_with_stalled_sink(options.reveals).await;
            }
            bench.stop().await;
        }
        println!("\nload average at the end: {}", load_average());
    });
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Median time per call of `f`, from `samples` timed batches of `batch` calls.
fn median_per_call(samples: usize, batch: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..batch {
        f();
    }
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed() / batch as u32
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Latencies of one scenario.
struct Latencies(Vec<Duration>);

impl Latencies {
    fn percentile(&mut self, p: f64) -> Duration {
        self.0.sort_unstable();
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn row(what: &str, figure: &str) {
    println!("| {what:<58} | {figure:>30} |");
}

fn heading(title: &str) {
    println!("\n## {title}\n");
    println!("| {:<58} | {:>30} |", "scenario", "median");
    println!("|{}|{}:|", "-".repeat(60), "-".repeat(31));
}

// ---------------------------------------------------------------------------------------------
// The machine at the time of the run: other load and the disk's durable-commit rate bound
// every durable figure below, so they are printed with them.

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

async fn machine_probe() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("probe.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
        .execute(&mut db)
        .await
        .unwrap();
    let mut commits = Latencies(Vec::new());
    let started = Instant::now();
    for _ in 0..500 {
        let t = Instant::now();
        sqlx::query("INSERT INTO t (v) VALUES (randomblob(200))")
            .execute(&mut db)
            .await
            .unwrap();
        commits.0.push(t.elapsed());
    }
    let rate = 500.0 / started.elapsed().as_secs_f64();
    println!("load average: {}", load_average());
    println!(
        "durable single-row commits (SQLite WAL, synchronous=FULL, this disk): {rate:.0}/s, p50 {} p99 {}",
        ms(commits.percentile(50.0)),
        ms(commits.percentile(99.0))
    );
}

// ---------------------------------------------------------------------------------------------
// Vault primitives

async fn primitives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let vault = open::create(
        &store,
        SystemClock.now(),
        "bench",
        vec![("development".into(), SlotRequest::Development)],
    )
    .await
    .unwrap();
    let seed = Seed::from_bytes((0u8..20).collect()).unwrap();
    let token_id = uuid::Uuid::new_v4().to_string();

    heading("Vault primitives (median of 201 batches)");
    let seal_unseal = median_per_call(201, 1_000, || {
        let sealed = vault.seal_seed(&token_id, "SN-1", &seed).unwrap();
        let opened = vault.unseal_seed(&token_id, "SN-1", &sealed).unwrap();
        black_box(opened.expose()[0]);
    });
    row(
        "seal + unseal, 20-byte seed (XChaCha20-Poly1305)",
        &us(seal_unseal),
    );
    let sealed = vault.seal_seed(&token_id, "SN-1", &seed).unwrap();
    let unseal = median_per_call(201, 1_000, || {
        let opened = vault.unseal_seed(&token_id, "SN-1", &sealed).unwrap();
        black_box(opened.expose()[0]);
    });
    row("unseal only", &us(unseal));
    let spec = TotpSpec::new(Algorithm::Sha1, 6, 30).unwrap();
    let now = SystemClock.unix();
    let code = median_per_call(201, 1_000, || {
        black_box(otp::code_at(&seed, &spec, black_box(now), 0).expose().len());
    });
    row("one TOTP code (SHA-1, 6 digits)", &us(code));
    let message = [7u8; 52];
    let sign = median_per_call(201, 100, || {
        black_box(vault.sign_audit(black_box(&message)));
    });
    row("audit event signature (Ed25519)", &us(sign));
    store.close().await;
}

// ---------------------------------------------------------------------------------------------
// The in-process server and its simulated operators

struct Bench {
    state: AppState,
    base: String,
    /// Taken out by a scenario's workers and put back when they finish.
    helpdesk: std::sync::Mutex<Vec<BenchOperator>>,
    serials: Vec<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Writes the shipped default policy with only its limits raised, so the load generator
/// measures the reveal path rather than the rate limiter.
fn bench_policies(dir: &Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/standard.toml"),
    )
    .unwrap();
    let raised = shipped
        .replace(
            "reveals_per_token_per_day = 3",
            "reveals_per_token_per_day = 1000000",
        )
        .replace(
            "reveals_per_operator_per_hour = 20",
            "reveals_per_operator_per_hour = 1000000",
        );
    assert_ne!(shipped, raised, "the shipped policy's limits have moved");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("standard.toml"), raised).unwrap();
    policies
}

impl Bench {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = Config::validate(Overrides {
            data_dir: Some(dir.path().join("data")),
            origin: Some(format!("http://localhost:{port}")),
            policies_dir: Some(bench_policies(dir.path())),
            ..Default::default()
        })
        .unwrap();
        let clock = Arc::new(SystemClock);
        let store = Store::open(&config.data_dir).await.unwrap();
        let vault = open::create(
            &store,
            clock.now(),
            "system",
            vec![("development".into(), SlotRequest::Development)],
        )
        .await
        .unwrap();
        let state = AppState::new(store, vault, config, clock).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router =
            seedvault::web::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        let base = format!("http://localhost:{port}");
        let mut bench = Self {
            state,
            base,
            helpdesk: std::sync::Mutex::new(Vec::new()),
            serials: Vec::new(),
            shutdown: Some(tx),
            task,
            _dir: dir,
        };
        for i in 0..CONCURRENCY {
            let op = bench.register(&format!("helpdesk{i:02}"), "helpdesk").await;
            bench.helpdesk.lock().unwrap().push(op);
        }
        for i in 0..REVEAL_TOKENS {
            let serial = format!("REV{i:06}");
            bench.capture(&serial, &bench.state.env()).await;
            bench.serials.push(serial);
        }
        bench
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
        self.state.store.close().await;
    }

    fn take_operators(&self) -> Vec<BenchOperator> {
        std::mem::take(&mut *self.helpdesk.lock().unwrap())
    }

    fn put_back(&self, ops: Vec<BenchOperator>) {
        *self.helpdesk.lock().unwrap() = ops;
    }

    /// An invite through the library (as the CLI makes it), then registration over HTTP.
    async fn register(&self, name: &str, roles: &str) -> BenchOperator {
        let invite = operators::create_invite(
            &self.state.store,
            &self.state.vault,
            self.state.clock.now(),
            "bench",
            NewInvite {
                name,
                roles: &Roles::parse_list(roles).unwrap(),
                ttl_hours: 24,
                replace_pending: false,
            },
        )
        .await
        .unwrap();
        let mut op = BenchOperator::new(name, &self.base);
        let (status, challenge) = op
            .post(
                "/api/v1/auth/register/start",
                json!({ "invite": invite.token.expose() }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let challenge: CreationChallengeResponse = serde_json::from_value(challenge).unwrap();
        let credential = op
            .authenticator
            .do_registration(op.origin.clone(), challenge)
            .unwrap();
        let (status, body) = op
            .post(
                "/api/v1/auth/register/finish",
                serde_json::to_value(&credential).unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        op
    }

    /// Captures a token with a random 20-byte seed through the library.
    async fn capture(&self, serial: &str, env: &Env<'_>) {
        tokens::capture(env, "bench", capture_input(serial))
            .await
            .unwrap();
    }

    // -----------------------------------------------------------------------------------------
    // Sign-in

    async fn sign_ins(&self, total: usize) {
        heading("Sign-in (login start + passkey + finish over HTTP)");
        let mut ops = self.take_operators();
        let op = &mut ops[0];
        op.http = client();
        let sequential = total / 4;
        let started = Instant::now();
        let mut latencies = Latencies(Vec::with_capacity(sequential));
        for _ in 0..sequential {
            let t = Instant::now();
            op.sign_in().await;
            latencies.0.push(t.elapsed());
        }
        let rate = sequential as f64 / started.elapsed().as_secs_f64();
        row(
            &format!("sequential, {sequential} sign-ins"),
            &format!("{rate:.0} /s"),
        );
        row("  latency p50 / p99", &p50_p99(&mut latencies));

        let counter = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = ops
            .into_iter()
            .map(|mut op| {
                op.http = client();
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while counter.fetch_add(1, Ordering::Relaxed) < total {
                        let t = Instant::now();
                        op.sign_in().await;
                        latencies.push(t.elapsed());
                    }
                    (op, latencies)
                })
            })
            .collect();
        let mut latencies = Latencies(Vec::new());
        let mut ops = Vec::new();
        for worker in workers {
            let (op, l) = worker.await.unwrap();
            ops.push(op);
            latencies.0.extend(l);
        }
        self.put_back(ops);
        let rate = latencies.0.len() as f64 / started.elapsed().as_secs_f64();
        row(
            &format!("concurrency {CONCURRENCY}, {} sign-ins", latencies.0.len()),
            &format!("{rate:.0} /s"),
        );
        row("  latency p50 / p99", &p50_p99(&mut latencies));
    }

    // -----------------------------------------------------------------------------------------
    // Reveals

    /// Runs reveal start+finish pairs on every helpdesk operator until `total` are done or
    /// `stop` is set; returns (pair latencies, finish latencies, wall time).
    async fn reveal_load(
        &self,
        total: usize,
        stop: Arc<AtomicBool>,
    ) -> (Latencies, Latencies, Duration) {
        let counter = Arc::new(AtomicUsize::new(0));
        let serials = Arc::new(self.serials.clone());
        let started = Instant::now();
        let workers: Vec<_> = self
            .take_operators()
            .into_iter()
            .enumerate()
            .map(|(w, mut op)| {
                let counter = counter.clone();
                let serials = serials.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut pairs = Vec::new();
                    let mut finishes = Vec::new();
                    loop {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        if n >= total || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let serial = &serials[(n * 7 + w) % serials.len()];
                        let (pair, finish) = op.reveal(serial).await;
                        pairs.push(pair);
                        finishes.push(finish);
                    }
                    (op, pairs, finishes)
                })
            })
            .collect();
        let mut pairs = Latencies(Vec::new());
        let mut finishes = Latencies(Vec::new());
        let mut ops = Vec::new();
        for worker in workers {
            let (op, p, f) = worker.await.unwrap();
            ops.push(op);
            pairs.0.extend(p);
            finishes.0.extend(f);
        }
        self.put_back(ops);
        (pairs, finishes, started.elapsed())
    }

    async fn reveals(&self, total: usize) {
        heading("Reveal hot path (start + passkey + finish over HTTP)");
        // Warm-up: connections, caches, the WAL.
        self.reveal_load(CONCURRENCY * 10, Arc::new(AtomicBool::new(false)))
            .await;
        let (mut pairs, mut finishes, wall) = self
            .reveal_load(total, Arc::new(AtomicBool::new(false)))
            .await;
        let rate = pairs.0.len() as f64 / wall.as_secs_f64();
        row(
            &format!(
                "concurrency {CONCURRENCY}, {} reveals, {REVEAL_TOKENS} tokens",
                pairs.0.len()
            ),
            &format!("{rate:.0} reveals/s"),
        );
        row("  pair latency p50 / p99", &p50_p99(&mut pairs));
        row(
            "  finish request latency p50 / p99",
            &p50_p99(&mut finishes),
        );
    }

    /// The reveal hot path without a SIEM sink, then with one that accepts connections and
    /// never answers (its forwarder waits out its timeout and backs off, again and again).
    async fn reveals_with_stalled_sink(&self, total: usize) {
        heading("Reveals with a stalled SIEM sink");
        self.reveals(total).await;
        let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = stalled.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = stalled.accept().await {
                open.push(stream);
            }
        });
        let config = Config::validate(Overrides {
            siem: Some(vec![seedvault::siem::SinkSettings {
                name: Some("stalled".into()),
                kind: Some("http".into()),
                url: Some(format!("http://{addr}/ingest")),
                timeout_seconds: Some(5),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .unwrap();
        let forwarding = seedvault::siem::spawn(&self.state.store, &config.siem);
        heading("... the same with the stalled sink");
        self.reveals(total).await;
        let lag = seedvault::siem::lag(&self.state.store, &config.siem, SystemClock.now())
            .await
            .unwrap();
        row(
            "stalled sink's lag at the end",
            &format!("{} events", lag[0].events),
        );
        forwarding.stop().await;
        held.abort();
    }

    // -----------------------------------------------------------------------------------------
    // Retention sweep

    async fn sweep(&self, count: usize) {
        heading("Retention sweep (purge_expired) with reveals running");
        // Captured 40 days ago under a 30-day retention: all overdue now. Inserted through the
        // same sealing and audit functions as capture, 500 per transaction to set up quickly.
        let mut env = self.state.env();
        env.now -= time::Duration::days(40);
        let setup = Instant::now();
        let serials: Vec<String> = (0..count).map(|i| format!("EXP{i:06}")).collect();
        for chunk in serials.chunks(500) {
            let mut tx = self.state.store.begin_write().await.unwrap();
            for serial in chunk {
                let token = capture_input(serial).validate(env.policies).unwrap();
                tokens::insert_sealed(&env, &mut tx, "bench", &token)
                    .await
                    .unwrap();
                let event = seedvault::audit::NewEvent::new(
                    "bench",
                    "token.captured",
                    tokens::target(serial),
                );
                seedvault::audit::append(&mut tx, env.vault, env.now, event)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
        println!(
            "\n(set-up: {count} overdue tokens inserted in {:.1} s)\n",
            setup.elapsed().as_secs_f64()
        );

        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let stop = stop.clone();
            let this: &Bench = self;
            // Reveals run concurrently with the sweep, until it ends.
            async move { this.reveal_load(usize::MAX, stop).await }
        };
        let sweep = async {
            // Let the reveal load reach steady state first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let started = Instant::now();
            let purged = tokens::lifecycle::purge_expired(&self.state.env(), "system")
                .await
                .unwrap();
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            (purged.len(), took)
        };
        let ((mut pairs, mut finishes, wall), (purged, took)) = tokio::join!(load, sweep);
        assert_eq!(purged, count, "every overdue token is purged");
        row(
            &format!(
                "sweep of {purged} expired tokens (batches of {})",
                tokens::lifecycle::SWEEP_BATCH
            ),
            &format!("{:.2} s", took.as_secs_f64()),
        );
        row(
            "  per token",
            &us(took / u32::try_from(purged.max(1)).unwrap()),
        );
        row(
            &format!(
                "reveals answered during the run ({:.1} s)",
                wall.as_secs_f64()
            ),
            &format!(
                "{} ({:.0} /s)",
                pairs.0.len(),
                pairs.0.len() as f64 / wall.as_secs_f64()
            ),
        );
        row("  pair latency p50 / p99", &p50_p99(&mut pairs));
        row(
            "  finish request latency p50 / p99",
            &p50_p99(&mut finishes),
        );
    }
}

fn p50_p99(latencies: &mut Latencies) -> String {
    format!(
        "{} / {}",
        ms(latencies.percentile(50.0)),
        ms(latencies.percentile(99.0))
    )
}

fn capture_input(serial: &str) -> CaptureRequest {
    let seed: [u8; 20] = rand::random();
    CaptureRequest {
        owner: Some(format!("{}@example.org", serial.to_lowercase())),
        serial: serial.to_owned(),
        secret: Zeroizing::new(data_encoding::HEXLOWER.encode(&seed)),
        format: Some("hex".into()),
        display_name: None,
        manufacturer: None,
        model: None,
        algorithm: None,
        digits: None,
        period: None,
        policy: None,
    }
}

// ---------------------------------------------------------------------------------------------
// A simulated operator: own cookie jar, own software passkey, the browser's Origin header.

struct BenchOperator {
    name: String,
    http: reqwest::Client,
    authenticator: WebauthnAuthenticator<SoftPasskey>,
    base: String,
    origin: Url,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

impl BenchOperator {
    fn new(name: &str, base: &str) -> Self {
        Self {
            name: name.to_owned(),
            http: client(),
            authenticator: WebauthnAuthenticator::new(SoftPasskey::new(true)),
            base: base.to_owned(),
            origin: Url::parse(base).unwrap(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Origin", self.origin.origin().ascii_serialization())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    fn assert(&mut self, challenge: Value) -> Value {
        let challenge: RequestChallengeResponse = serde_json::from_value(challenge).unwrap();
        serde_json::to_value(
            self.authenticator
                .do_authentication(self.origin.clone(), challenge)
                .unwrap(),
        )
        .unwrap()
    }

    async fn sign_in(&mut self) {
        let (status, challenge) = self
            .post("/api/v1/auth/login/start", json!({ "username": self.name }))
            .await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let assertion = self.assert(challenge);
        let (status, body) = self.post("/api/v1/auth/login/finish", assertion).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// One reveal: start (checklist), passkey assertion, finish. Returns the latency of the
    /// whole pair and of the finish request alone.
    async fn reveal(&mut self, serial: &str) -> (Duration, Duration) {
        let started = Instant::now();
        let (status, challenge) = self
            .post(
                &format!("/api/v1/tokens/{serial}/reveal/start"),
                json!({ "checks": ["callback", "video-id"], "ticket": "INC-1" }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let assertion = self.assert(challenge);
        let finish = Instant::now();
        let (status, body) = self
            .post(&format!("/api/v1/tokens/{serial}/reveal/finish"), assertion)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["code"].is_string());
        (started.elapsed(), finish.elapsed())
    }
}

// ---------------------------------------------------------------------------------------------
// SIEM forwarding

/// A sink that drains what it receives and counts newlines (HTTP: one per event) or frames
/// (syslog: one per event), answering HTTP requests with 200.
async fn counting_sink(http: bool, events: Arc<AtomicUsize>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let events = events.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 1 << 16];
                if !http {
                    // Octet counting: count frames by their "<8" PRI start after a length.
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 {
                            return;
                        }
                        let frames = buffer[..n].windows(3).filter(|w| w == b" <8").count();
                        events.fetch_add(frames, Ordering::Relaxed);
                    }
                    return;
                }
                // HTTP/1.1 keep-alive: header, Content-Length body, answer, repeat.
                let mut pending: Vec<u8> = Vec::new();
                loop {
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buffer[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while pending.len() < end + 4 + length {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let body = &pending[end + 4..end + 4 + length];
                    events.fetch_add(
                        body.iter().filter(|b| **b == b'\n').count(),
                        Ordering::Relaxed,
                    );
                    pending.drain(..end + 4 + length);
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Forwarding rate of `events` fixture events to an HTTP sink and to a syslog/TCP sink, each
/// from a cursor at 0 to the head, default batches (1,000 events).
async fn siem_forwarding(events: u64) {
    heading(&format!("SIEM forwarding of {events} audit events"));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let vault = open::create(
        &store,
        SystemClock.now(),
        "system",
        vec![("development".into(), SlotRequest::Development)],
    )
    .await
    .unwrap();
    let path = store.path().unwrap().to_owned();
    let vault = Arc::new(vault);
    let v = vault.clone();
    let started = Instant::now();
    let head = tokio::task::spawn_blocking(move || {
        seedvault::audit::fixture::fill(&path, &v, events, time::OffsetDateTime::now_utc()).unwrap()
    })
    .await
    .unwrap();
    row(
        "fixture filled",
        &format!("{head} events in {:.1} s", started.elapsed().as_secs_f64()),
    );
    for (kind, http) in [("http", true), ("syslog-tcp", false)] {
        let received = Arc::new(AtomicUsize::new(0));
        let addr = counting_sink(http, received.clone()).await;
        let sink = if http {
            seedvault::siem::SinkSettings {
                name: Some(kind.into()),
                kind: Some("http".into()),
                url: Some(format!("http://{addr}/ingest")),
                ..Default::default()
            }
        } else {
            seedvault::siem::SinkSettings {
                name: Some(kind.into()),
                kind: Some("syslog-tcp".into()),
                address: Some(addr.to_string()),
                ..Default::default()
            }
        };
        let config = Config::validate(Overrides {
            siem: Some(vec![sink]),
            ..Default::default()
        })
        .unwrap();
        let started = Instant::now();
        let forwarding = seedvault::siem::spawn(&store, &config.siem);
        loop {
            let lag = seedvault::siem::lag(&store, &config.siem, SystemClock.now())
                .await
                .unwrap();
            if lag[0].acked_seq >= head {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = started.elapsed();
        forwarding.stop().await;
        row(
            &format!("{kind}: {head} events, acknowledged"),
            &format!(
                "{:.1} s, {:.0} events/s (sink counted {})",
                wall.as_secs_f64(),
                head as f64 / wall.as_secs_f64(),
                received.load(Ordering::Relaxed)
            ),
        );
    }
    store.close().await;
}
