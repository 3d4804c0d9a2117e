//! seedvault's out-of-process load generator: a plain bench binary (no criterion).
//!
//! Starts the release binary (`seedvault serve`) as a child process on a temporary data
//! directory and a free loopback port, takes the one-time admin invite from its output,
//! registers operators with software passkeys over HTTP (one keep-alive client and cookie jar
//! per virtual user), imports the tokens it reveals, and drives closed-loop reveal pairs
//! (start + passkey assertion + finish). Besides throughput and latency it reports the
//! server's own CPU time per pair (utime + stime of the child in `/proc/<pid>/stat`), so the
//! generator's ECDSA signing on the same cores does not count as the server's work.
//!
//! ```text
//! cargo build --release --bin seedvault
//! cargo bench --bench loadgen                                   # reveal at c=1,4,16,64 + signin
//! cargo bench --bench loadgen -- reveal --seconds 10 --levels 1,4,16,64
//! cargo bench --bench loadgen -- signin busy                    # busy: API import, CLI import, sweep
//! cargo bench --bench loadgen -- busy-sweep                     # the sweep alone
//! cargo bench --bench loadgen -- soak --minutes 10              # #21's soak
//! SEEDVAULT_BIN=/tmp/seedvault-before cargo bench --bench loadgen -- --label before reveal
//! cargo bench --bench loadgen -- --engine postgres reveal import --levels 16    # on PostgreSQL
//! cargo bench --bench loadgen -- --engine postgres --instances 2 reveal --levels 16
//! ```
//!
//! With `--engine postgres` the servers share a fresh database on a throwaway cluster started
//! from the machine's binaries (`store::pg_cluster`, made durable for the comparison), each
//! instance answering for the first one's origin as behind one reverse proxy, helpdesk user
//! `i` on instance `i mod n`; the cluster's own CPU is reported beside the servers'. `import`
//! times a 100,000-row API import with nothing else running.
//!
//! Method and figures: BENCHMARKS.md ("Reveal speed from outside the process", "Soak"). No
//! timing is asserted anywhere; this only prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

/// Tokens the reveal load spreads over.
const REVEAL_TOKENS: usize = 1_000;
/// Rows of the import that runs beside the reveals ("busy" and soak).
const IMPORT_ROWS: usize = 100_000;
/// Overdue tokens the retention sweeper purges beside the reveals.
const SWEEP_TOKENS: usize = 20_000;
/// The concurrency of the busy and soak modes.
const BUSY_CONCURRENCY: usize = 16;

struct Options {
    modes: Vec<String>,
    bin: PathBuf,
    label: String,
    seconds: u64,
    levels: Vec<usize>,
    minutes: u64,
    /// `sqlite` (the embedded default) or `postgres` (a durable throwaway cluster).
    engine: String,
    /// Instances of `seedvault serve` on the one PostgreSQL database (reveal, signin).
    instances: usize,
}

impl Options {
    fn parse() -> Option<Self> {
        let mut args = std::env::args().skip(1);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| manifest.join("target"), PathBuf::from);
        let mut options = Self {
            modes: Vec::new(),
            bin: std::env::var_os("SEEDVAULT_BIN")
                .map_or_else(|| target.join("release/seedvault"), PathBuf::from),
            label: String::new(),
            seconds: 10,
            levels: vec![1, 4, 16, 64],
            minutes: 10,
            engine: "sqlite".into(),
            instances: 1,
        };
        let mut benching = false;
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .unwrap_or_else(|| panic!("{name} needs a value"))
            };
            match arg.as_str() {
                // cargo passes --bench to a bench binary; `cargo test --benches` does not.
                "--bench" => benching = true,
                "--bin" => options.bin = value("--bin").into(),
                "--label" => options.label = value("--label"),
                "--seconds" => options.seconds = value("--seconds").parse().expect("--seconds"),
                "--minutes" => options.minutes = value("--minutes").parse().expect("--minutes"),
                "--engine" => options.engine = value("--engine"),
                "--instances" => {
                    options.instances = value("--instances").parse().expect("--instances")
                }
                "--levels" => {
                    options.levels = value("--levels")
                        .split(',')
                        .map(|l| l.trim().parse().expect("--levels: e.g. 1,4,16,64"))
                        .collect()
                }
                other if other.starts_with('-') => {}
                other => options.modes.push(other.to_owned()),
            }
        }
        if options.modes.is_empty() {
            options.modes = vec!["reveal".into(), "signin".into()];
        }
        benching.then_some(options)
    }

    fn wants(&self, mode: &str) -> bool {
        self.modes.iter().any(|m| m == mode)
    }
}

fn main() {
    let Some(options) = Options::parse() else {
        println!("seedvault loadgen: run it with `cargo bench --bench loadgen` (skipped here)");
        return;
    };
    assert!(
        options.engine == "sqlite" || options.engine == "postgres",
        "--engine sqlite or --engine postgres"
    );
    assert!(
        options.instances == 1 || options.engine == "postgres",
        "several instances need --engine postgres"
    );
    assert!(
        options.engine == "sqlite"
            || !(options.wants("busy") || options.wants("busy-sweep") || options.wants("soak")),
        "busy and soak read the SQLite file directly: --engine sqlite"
    );
    if options.engine == "postgres" {
        // Durable like the SQLite side (fsync, synchronous_commit, full_page_writes on): a
        // code leaves only after its audit event is on disk on both engines.
        std::env::set_var("SEEDVAULT_PG_DURABLE", "1");
    }
    assert!(
        options.bin.is_file(),
        "no server binary at {} (cargo build --release --bin seedvault, or --bin / SEEDVAULT_BIN)",
        options.bin.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("# seedvault loadgen {}", options.label);
    println!(
        "machine: {} × {} cores; load average {}; commit {}; server {}; engine {}{}",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        git_commit(),
        options.bin.display(),
        options.engine,
        if options.engine == "postgres" {
            format!(
                " (throwaway cluster, fsync on), {} instance(s)",
                options.instances
            )
        } else {
            String::new()
        }
    );
    runtime.block_on(async {
        if options.wants("reveal") || options.wants("signin") || options.wants("import") {
            let levels = if options.wants("reveal") {
                options.levels.clone()
            } else {
                Vec::new()
            };
            let max = levels.iter().copied().max().unwrap_or(0).max(16);
            let mut deployment = Deployment::start(&options).await;
            let vault = Vault::set_up(&deployment.servers[0], max, 0).await;
            // The others once the admin exists: an instance starting on a vault without
            // operators replaces the pending admin invite with its own.
            deployment.grow(options.instances).await;
            let vault = vault.spread_over(&deployment);
            for c in levels {
                vault.reveal_level(&deployment, c, options.seconds).await;
            }
            if options.wants("signin") {
                vault.sign_ins(&deployment, 1, options.seconds).await;
                vault.sign_ins(&deployment, 16, options.seconds).await;
            }
            if options.wants("import") {
                vault.import_alone(&deployment).await;
            }
            deployment.stop().await;
        }
        if options.wants("busy") || options.wants("busy-sweep") {
            let works: &[Work] = if options.wants("busy") {
                &[Work::ApiImport, Work::CliImport, Work::Sweep]
            } else {
                &[Work::Sweep]
            };
            for &work in works {
                let server = Server::start(&options.bin).await;
                let sweep = if work == Work::Sweep { SWEEP_TOKENS } else { 0 };
                let vault = Vault::set_up(&server, BUSY_CONCURRENCY, sweep).await;
                vault.busy(&server, work).await;
                server.stop().await;
            }
        }
        if options.wants("soak") {
            let server = Server::start(&options.bin).await;
            let vault = Vault::set_up(&server, BUSY_CONCURRENCY, SWEEP_TOKENS).await;
            vault.soak(server, options.minutes).await;
        }
        println!("\nload average at the end: {}", load_average());
    });
}

// ---------------------------------------------------------------------------------------------
// The machine and the process

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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The kernel's clock ticks per second for `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// CPU time (user + system, every thread) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

// ---------------------------------------------------------------------------------------------
// The server as a child process

struct Server {
    child: Child,
    pid: u32,
    bin: PathBuf,
    base: String,
    data: PathBuf,
    /// The one-time admin invite the server printed (only the first on an empty vault does).
    admin_invite: Option<String>,
    /// When the server said it was listening; its sweeper ticks then and every minute after.
    listening: Instant,
    /// The data directory's parent, removed with the server.
    _dir: tempfile::TempDir,
}

/// The shipped default policy with only its limits raised, so the run measures the reveal
/// path rather than the rate limiter.
fn raised_policies(dir: &Path) -> PathBuf {
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

impl Server {
    /// A server on its own SQLite vault in a temporary directory.
    async fn start(bin: &Path) -> Self {
        Self::launch(bin, None, None).await
    }

    /// A server on `database_url` (none: SQLite in its data directory), answering for
    /// `origin` (none: its own address; another instance's, as behind one reverse proxy).
    async fn launch(bin: &Path, database_url: Option<&str>, origin: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        let base = format!("http://localhost:{port}");
        let mut command = Command::new(bin);
        command
            .arg("--data-dir")
            .arg(&data)
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--origin",
                origin.unwrap_or(&base),
            ])
            .env("SEEDVAULT_POLICIES_DIR", raised_policies(dir.path()))
            .env("SEEDVAULT_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(url) = database_url {
            command.env("SEEDVAULT_DATABASE_URL", url);
        }
        let mut child = command.spawn().unwrap();
        let pid = child.id();
        let stdout = child.stdout.take().unwrap();
        let (invite, listening) = tokio::task::spawn_blocking(move || {
            let mut invite = None;
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some((_, token)) = line.trim().split_once("/invite/") {
                    invite = Some(token.to_owned());
                }
                if line.contains(" listening on ") {
                    let at = Instant::now();
                    // Keep reading so the child never blocks on a full pipe.
                    std::thread::spawn(move || for _ in lines {});
                    return (invite, at);
                }
            }
            panic!("the server exited before listening");
        })
        .await
        .unwrap();
        Self {
            child,
            pid,
            bin: bin.to_owned(),
            base,
            data,
            admin_invite: invite,
            listening,
            _dir: dir,
        }
    }

    fn cpu(&self) -> Duration {
        cpu_time(self.pid)
    }

    fn database(&self) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(self.data.join("seedvault.db")).unwrap();
        db.busy_timeout(Duration::from_secs(30)).unwrap();
        db
    }

    /// SIGTERM and wait: the server's graceful shutdown.
    async fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }

    async fn stop(mut self) {
        self.terminate().await;
    }
}

/// The servers under load: one on SQLite, or one or more instances on one PostgreSQL
/// database (a fresh one on a durable throwaway cluster), all answering for the first one's
/// origin as behind one reverse proxy.
struct Deployment {
    servers: Vec<Server>,
    database_url: Option<String>,
    /// The cluster's postmaster: its backends' CPU is the database's share of the work.
    postmaster: Option<u32>,
}

impl Deployment {
    async fn start(options: &Options) -> Self {
        if options.engine == "sqlite" {
            return Self {
                servers: vec![Server::start(&options.bin).await],
                database_url: None,
                postmaster: None,
            };
        }
        let url = seedvault::store::pg_cluster::fresh_database()
            .await
            .unwrap();
        let first = Server::launch(&options.bin, Some(&url), None).await;
        let cluster = seedvault::store::pg_cluster::cluster().unwrap();
        let postmaster = std::fs::read_to_string(cluster.dir().join("data/postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok());
        Self {
            servers: vec![first],
            database_url: Some(url),
            postmaster,
        }
    }

    /// More instances on the first one's database, answering for its origin, up to `n`.
    async fn grow(&mut self, n: usize) {
        let Some(url) = self.database_url.clone() else {
            return;
        };
        let origin = self.servers[0].base.clone();
        let bin = self.servers[0].bin.clone();
        while self.servers.len() < n {
            let server = Server::launch(&bin, Some(&url), Some(&origin)).await;
            self.servers.push(server);
        }
    }

    /// CPU time of every seedvault instance.
    fn cpu(&self) -> Duration {
        self.servers.iter().map(Server::cpu).sum()
    }

    /// CPU time of the PostgreSQL cluster (postmaster and its children); zero on SQLite,
    /// whose work is inside the server's process.
    fn database_cpu(&self) -> Duration {
        let Some(postmaster) = self.postmaster else {
            return Duration::ZERO;
        };
        let children: Duration = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| parent_of(*pid) == Some(postmaster))
            .map(cpu_time)
            .sum();
        cpu_time(postmaster) + children
    }

    /// Both CPU figures per unit of work, for the report.
    fn cpu_per(&self, units: usize, server: Duration, database: Duration) -> String {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / units.max(1) as f64;
        if self.postmaster.is_some() {
            format!(
                "{:>6.0} µs + PostgreSQL {:>5.0} µs",
                per(server),
                per(database)
            )
        } else {
            format!("{:>6.0} µs", per(server))
        }
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// The parent of process `pid` (field 4 of `/proc/<pid>/stat`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A generator that panics leaves no server behind (after `terminate` this finds none).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long until the server's sweeper ticks next (at start and every minute after).
fn until_next_tick(server: &Server) -> Duration {
    let period = Duration::from_secs(60);
    let into = server.listening.elapsed().as_millis() % period.as_millis();
    period - Duration::from_millis(into as u64)
}

/// Moves the sweep tokens' retention deadlines into the past, just after a sweeper tick so
/// the update (a write from this process, not measured) never races a sweep.
async fn expire_sweep_tokens(server: &Server) {
    let next = until_next_tick(server);
    if next > Duration::from_secs(58) || next < Duration::from_secs(10) {
        tokio::time::sleep(next + Duration::from_secs(1)).await;
    }
    let moved = server
        .database()
        .execute(
            "UPDATE tokens SET retention_deadline = 1 WHERE serial LIKE 'SWP%' AND state = 'escrowed'",
            [],
        )
        .unwrap();
    assert_eq!(
        moved, SWEEP_TOKENS,
        "every sweep token is escrowed before the sweep"
    );
}

// ---------------------------------------------------------------------------------------------
// Virtual users: one keep-alive client, cookie jar and soft passkey each

struct User {
    name: String,
    http: reqwest::Client,
    authenticator: WebauthnAuthenticator<SoftPasskey>,
    base: String,
    origin: Url,
    origin_header: String,
}

impl User {
    fn new(name: &str, base: &str) -> Self {
        let origin = Url::parse(base).unwrap();
        Self {
            name: name.to_owned(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .pool_max_idle_per_host(1)
                .build()
                .unwrap(),
            authenticator: WebauthnAuthenticator::new(SoftPasskey::new(true)),
            base: base.to_owned(),
            origin_header: origin.origin().ascii_serialization(),
            origin,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(StatusCode, Value), String> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Origin", &self.origin_header)
            .json(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn register(base: &str, name: &str, invite: &str) -> Self {
        let mut user = Self::new(name, base);
        let (status, challenge) = user
            .post("/api/v1/auth/register/start", &json!({ "invite": invite }))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let challenge: CreationChallengeResponse = serde_json::from_value(challenge).unwrap();
        let credential = user
            .authenticator
            .do_registration(user.origin.clone(), challenge)
            .unwrap();
        let (status, body) = user
            .post(
                "/api/v1/auth/register/finish",
                &serde_json::to_value(&credential).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        user
    }

    fn assert(&mut self, challenge: Value) -> Result<Value, String> {
        let challenge: RequestChallengeResponse =
            serde_json::from_value(challenge).map_err(|e| e.to_string())?;
        let assertion = self
            .authenticator
            .do_authentication(self.origin.clone(), challenge)
            .map_err(|e| format!("{e:?}"))?;
        serde_json::to_value(assertion).map_err(|e| e.to_string())
    }

    async fn sign_in(&mut self) -> Result<(), String> {
        let (status, challenge) = self
            .post(
                "/api/v1/auth/login/start",
                &json!({ "username": self.name }),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!("login/start {status}: {challenge}"));
        }
        let assertion = self.assert(challenge)?;
        let (status, body) = self.post("/api/v1/auth/login/finish", &assertion).await?;
        if status != StatusCode::OK {
            return Err(format!("login/finish {status}: {body}"));
        }
        Ok(())
    }

    /// One reveal pair; Ok only when the code came back.
    async fn reveal(&mut self, serial: &str) -> Result<(), String> {
        let (status, challenge) = self
            .post(
                &format!("/api/v1/tokens/{serial}/reveal/start"),
                &json!({ "checks": ["callback", "video-id"], "ticket": "INC-1" }),
            )
            .await?;
        if status != StatusCode::OK {
            return Err(format!("reveal/start {status}: {challenge}"));
        }
        let assertion = self.assert(challenge)?;
        let (status, body) = self
            .post(
                &format!("/api/v1/tokens/{serial}/reveal/finish"),
                &assertion,
            )
            .await?;
        if status != StatusCode::OK || !body["code"].is_string() {
            return Err(format!("reveal/finish {status}: {body}"));
        }
        Ok(())
    }

    /// Uploads a seed file through the API (as a provisioner); returns the status and report.
    async fn import(&self, file: &Path, name: &str) -> (StatusCode, Value) {
        let body = tokio::fs::read(file).await.unwrap();
        let response = self
            .http
            .post(format!("{}/api/v1/imports?name={name}", self.base))
            .header("Origin", &self.origin_header)
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// An Entra/Azure MFA seed file of `rows` tokens `PREFIX000000…` with random 160-bit secrets.
fn seed_file(dir: &Path, prefix: &str, rows: usize) -> PathBuf {
    let path = dir.join(format!("{prefix}.csv"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        out,
        "upn,serial number,secret key,time interval,manufacturer,model"
    )
    .unwrap();
    for i in 0..rows {
        let secret: [u8; 20] = rand::random();
        writeln!(
            out,
            "{}{i:06}@example.org,{prefix}{i:06},{},30,Token2,C302-i",
            prefix.to_lowercase(),
            data_encoding::BASE32_NOPAD.encode(&secret)
        )
        .unwrap();
    }
    out.flush().unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// One finished request sequence: when it started (since the run's start), how long it took,
/// whether it succeeded.
#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    took: Duration,
    ok: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// p50 and p99 of the successful samples that finished inside [from, to).
fn window(samples: &[Sample], from: Duration, to: Duration) -> (usize, usize, Duration, Duration) {
    percentiles(
        samples
            .iter()
            .filter(|s| s.at + s.took >= from && s.at + s.took < to),
    )
}

/// The same over the samples that overlap [from, to) at all: every reveal in flight while
/// other work ran, including those it held up until it ended.
fn overlapping(
    samples: &[Sample],
    from: Duration,
    to: Duration,
) -> (usize, usize, Duration, Duration) {
    percentiles(samples.iter().filter(|s| s.at < to && s.at + s.took > from))
}

fn percentiles<'a>(
    samples: impl Iterator<Item = &'a Sample>,
) -> (usize, usize, Duration, Duration) {
    let mut ok: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for s in samples {
        if s.ok {
            ok.push(s.took);
        } else {
            errors += 1;
        }
    }
    ok.sort_unstable();
    (
        ok.len(),
        errors,
        percentile(&ok, 50.0),
        percentile(&ok, 99.0),
    )
}

// ---------------------------------------------------------------------------------------------
// The vault under load

struct Vault {
    helpdesk: std::sync::Mutex<Vec<User>>,
    provisioner: User,
    serials: Arc<Vec<String>>,
    /// Codes received over the server's whole life (set-up and warm-ups included).
    codes: Arc<AtomicUsize>,
    files: tempfile::TempDir,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Work {
    ApiImport,
    CliImport,
    Sweep,
}

impl Vault {
    /// The admin from the server's invite; `helpdesk` helpdesk operators and one provisioner
    /// invited by the admin over the API and registered with their passkeys; the reveal
    /// tokens (and `sweep` tokens to expire later) imported through the API.
    async fn set_up(server: &Server, helpdesk: usize, sweep: usize) -> Self {
        let started = Instant::now();
        let invite = server
            .admin_invite
            .as_deref()
            .expect("no admin invite in the server's output");
        let admin = User::register(&server.base, "admin", invite).await;
        let invite = |name: String, role: &'static str| {
            let admin = &admin;
            async move {
                let (status, body) = admin
                    .post(
                        "/api/v1/operators/invites",
                        &json!({ "name": name, "roles": [role] }),
                    )
                    .await
                    .unwrap();
                assert_eq!(status, StatusCode::CREATED, "{body}");
                let url = body["url"].as_str().unwrap();
                url.split_once("/invite/").unwrap().1.to_owned()
            }
        };
        let token = invite("provisioner".into(), "provisioner").await;
        let provisioner = User::register(&server.base, "provisioner", &token).await;
        let mut users = Vec::new();
        for i in 0..helpdesk {
            let name = format!("helpdesk{i:02}");
            let token = invite(name.clone(), "helpdesk").await;
            users.push(User::register(&server.base, &name, &token).await);
        }
        let files = tempfile::tempdir().unwrap();
        let reveal = seed_file(files.path(), "REV", REVEAL_TOKENS);
        let (status, body) = provisioner.import(&reveal, "reveal.csv").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        if sweep > 0 {
            let file = seed_file(files.path(), "SWP", sweep);
            let (status, body) = provisioner.import(&file, "sweep.csv").await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        println!(
            "\n(set-up: admin, provisioner, {helpdesk} helpdesk operators, {REVEAL_TOKENS} tokens{} in {:.1} s)",
            if sweep > 0 { format!(" + {sweep} to expire") } else { String::new() },
            started.elapsed().as_secs_f64()
        );
        Self {
            helpdesk: std::sync::Mutex::new(users),
            provisioner,
            serials: Arc::new((0..REVEAL_TOKENS).map(|i| format!("REV{i:06}")).collect()),
            codes: Arc::new(AtomicUsize::new(0)),
            files,
        }
    }

    /// Sends helpdesk user `i` to instance `i mod n` (their sessions live in the shared
    /// database, their cookies are for the one host name).
    fn spread_over(self, deployment: &Deployment) -> Self {
        {
            let mut users = self.helpdesk.lock().unwrap();
            for (i, user) in users.iter_mut().enumerate() {
                user.base = deployment.servers[i % deployment.servers.len()]
                    .base
                    .clone();
            }
        }
        self
    }

    /// A 100,000-row API import with nothing else running: its duration and CPU.
    async fn import_alone(&self, deployment: &Deployment) {
        let file = seed_file(self.files.path(), "IMP", IMPORT_ROWS);
        let (cpu0, db0) = (deployment.cpu(), deployment.database_cpu());
        let t = Instant::now();
        let (status, body) = self.provisioner.import(&file, "alone.csv").await;
        let took = t.elapsed();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (cpu1, db1) = (deployment.cpu(), deployment.database_cpu());
        println!(
            "import: API import of {IMPORT_ROWS} rows alone: {:.2} s ({:.0} rows/s); CPU per 1,000 rows {} (load {})",
            took.as_secs_f64(),
            IMPORT_ROWS as f64 / took.as_secs_f64(),
            deployment.cpu_per(IMPORT_ROWS / 1000, cpu1 - cpu0, db1 - db0),
            load_average()
        );
    }

    /// Closed-loop reveal pairs on `c` users until `stop`; each user's samples.
    fn spawn_reveals(
        &self,
        c: usize,
        started: Instant,
        stop: Arc<AtomicBool>,
    ) -> Vec<tokio::task::JoinHandle<(User, Vec<Sample>)>> {
        let mut pool = self.helpdesk.lock().unwrap();
        assert!(pool.len() >= c, "only {} helpdesk users", pool.len());
        let users: Vec<User> = pool.drain(..c).collect();
        drop(pool);
        users
            .into_iter()
            .enumerate()
            .map(|(w, mut user)| {
                let serials = self.serials.clone();
                let stop = stop.clone();
                let codes = self.codes.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut n = w;
                    while !stop.load(Ordering::Relaxed) {
                        let at = started.elapsed();
                        let t = Instant::now();
                        let result = user.reveal(&serials[(n * 7) % serials.len()]).await;
                        let took = t.elapsed();
                        if let Err(e) = &result {
                            eprintln!("reveal failed: {e}");
                        } else {
                            codes.fetch_add(1, Ordering::Relaxed);
                        }
                        samples.push(Sample {
                            at,
                            took,
                            ok: result.is_ok(),
                        });
                        n += c;
                    }
                    (user, samples)
                })
            })
            .collect()
    }

    async fn collect(
        &self,
        workers: Vec<tokio::task::JoinHandle<(User, Vec<Sample>)>>,
    ) -> Vec<Sample> {
        let mut all = Vec::new();
        let mut users = Vec::new();
        for w in workers {
            let (user, samples) = w.await.unwrap();
            users.push(user);
            all.extend(samples);
        }
        let mut pool = self.helpdesk.lock().unwrap();
        users.append(&mut pool);
        *pool = users;
        all
    }

    /// Reveal pairs at concurrency `c`: one second of warm-up, then `seconds` measured.
    async fn reveal_level(&self, deployment: &Deployment, c: usize, seconds: u64) {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = self.spawn_reveals(c, started, stop.clone());
        let warm = Duration::from_secs(1);
        tokio::time::sleep(warm).await;
        let (cpu0, db0) = (deployment.cpu(), deployment.database_cpu());
        let own0 = cpu_time(std::process::id());
        let t0 = started.elapsed();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu1, db1) = (deployment.cpu(), deployment.database_cpu());
        let own1 = cpu_time(std::process::id());
        let t1 = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let samples = self.collect(workers).await;
        let (pairs, errors, p50, p99) = window(&samples, t0, t1);
        let rate = pairs as f64 / (t1 - t0).as_secs_f64();
        // The generator's own CPU (passkey signatures, HTTP, JSON) shares the same cores.
        let generator = (own1 - own0).as_secs_f64() * 1e6 / pairs.max(1) as f64;
        println!(
            "reveal c={c:<3} {rate:>7.0} pairs/s  p50 {:>9}  p99 {:>9}  server CPU {}/pair  generator {generator:>5.0} µs/pair  ({pairs} pairs, {errors} errors, {:.1} s, load {})",
            ms(p50),
            ms(p99),
            deployment.cpu_per(pairs, cpu1 - cpu0, db1 - db0),
            (t1 - t0).as_secs_f64(),
            load_average()
        );
    }

    /// Sign-in ceremonies (login start + assertion + finish) at concurrency `c`.
    async fn sign_ins(&self, deployment: &Deployment, c: usize, seconds: u64) {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let users: Vec<User> = self.helpdesk.lock().unwrap().drain(..c).collect();
        let workers: Vec<_> = users
            .into_iter()
            .map(|mut user| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let at = started.elapsed();
                        let t = Instant::now();
                        let result = user.sign_in().await;
                        if let Err(e) = &result {
                            eprintln!("sign-in failed: {e}");
                        }
                        samples.push(Sample {
                            at,
                            took: t.elapsed(),
                            ok: result.is_ok(),
                        });
                    }
                    (user, samples)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, db0) = (deployment.cpu(), deployment.database_cpu());
        let t0 = started.elapsed();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu1, db1) = (deployment.cpu(), deployment.database_cpu());
        let t1 = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let samples = self.collect(workers).await;
        let (n, errors, p50, p99) = window(&samples, t0, t1);
        println!(
            "sign-in c={c:<3} {:>7.0} ceremonies/s  p50 {:>9}  p99 {:>9}  server CPU {}/ceremony  ({n}, {errors} errors, load {})",
            n as f64 / (t1 - t0).as_secs_f64(),
            ms(p50),
            ms(p99),
            deployment.cpu_per(n, cpu1 - cpu0, db1 - db0),
            load_average()
        );
    }

    /// Runs `work` while reveals run at concurrency 16; returns when it is done, with its
    /// window (since `started`) and a description.
    async fn run_work(
        &self,
        server: &Server,
        work: Work,
        started: Instant,
        tag: &str,
    ) -> (Duration, Duration, String) {
        match work {
            Work::ApiImport => {
                let file = seed_file(self.files.path(), &format!("API{tag}"), IMPORT_ROWS);
                let from = started.elapsed();
                let (status, body) = self.provisioner.import(&file, "busy.csv").await;
                let to = started.elapsed();
                assert_eq!(status, StatusCode::CREATED, "{body}");
                (from, to, format!("API import of {IMPORT_ROWS} rows"))
            }
            Work::CliImport => {
                let file = seed_file(self.files.path(), &format!("CLI{tag}"), IMPORT_ROWS);
                let from = started.elapsed();
                let bin = server.bin.clone();
                let data = server.data.clone();
                let status = tokio::task::spawn_blocking(move || {
                    Command::new(bin)
                        .arg("--data-dir")
                        .arg(data)
                        .arg("import")
                        .arg(file)
                        .env("SEEDVAULT_LOG", "warn")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .unwrap()
                })
                .await
                .unwrap();
                let to = started.elapsed();
                assert!(
                    status.success(),
                    "seedvault import beside the server failed"
                );
                (
                    from,
                    to,
                    format!("CLI import of {IMPORT_ROWS} rows beside the server"),
                )
            }
            Work::Sweep => {
                // The deadlines were moved into the past by `expire_sweep_tokens`; the
                // window runs from the first purge seen to the last.
                let db = server.database();
                let moved = SWEEP_TOKENS as i64;
                let remaining = || -> i64 {
                    db.query_row(
                        "SELECT COUNT(*) FROM tokens WHERE serial LIKE 'SWP%' AND state = 'escrowed'",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap()
                };
                let mut from = None;
                loop {
                    let left = remaining();
                    let now = started.elapsed();
                    if from.is_none() && left < moved {
                        from = Some(now.saturating_sub(Duration::from_millis(100)));
                    }
                    if left == 0 {
                        // The sweep's final checkpoint follows the last purge.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        return (
                            from.unwrap_or(now),
                            started.elapsed(),
                            format!("sweep of {moved} overdue tokens"),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Reveal p99 at concurrency 16 while `work` runs.
    async fn busy(&self, server: &Server, work: Work) {
        let c = BUSY_CONCURRENCY;
        if work == Work::Sweep {
            expire_sweep_tokens(server).await;
            // Start the reveals a few seconds before the sweeper's next tick.
            let wait = until_next_tick(server).saturating_sub(Duration::from_secs(3));
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = self.spawn_reveals(c, started, stop.clone());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu0 = server.cpu();
        let (from, to, what) = self.run_work(server, work, started, "").await;
        let cpu1 = server.cpu();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        let samples = self.collect(workers).await;
        let (quiet, _, qp50, qp99) =
            window(&samples, Duration::from_secs(1), Duration::from_secs(2));
        let (pairs, errors, p50, p99) = overlapping(&samples, from, to);
        let (done, _, _, _) = window(&samples, from, to);
        println!(
            "busy: {what}: {:.2} s; reveals c={c} in flight during it: {pairs} (p50 {} p99 {}, {errors} errors), {:.0} pairs/s completed; the second before it: p50 {} p99 {} ({quiet} pairs); server CPU {:.2} s; load {}",
            (to - from).as_secs_f64(),
            ms(p50),
            ms(p99),
            done as f64 / (to - from).as_secs_f64(),
            ms(qp50),
            ms(qp99),
            (cpu1 - cpu0).as_secs_f64(),
            load_average()
        );
    }

    /// #21's soak: reveals at concurrency 16 for `minutes`, with a 100,000-row API import
    /// in the first minute and a sweep of the overdue tokens at the sweeper's next ticks;
    /// per minute errors, p99, RSS and open files; at the end `audit verify` and every code
    /// received matched by its `reveal.granted` event.
    async fn soak(&self, mut server: Server, minutes: u64) {
        let c = BUSY_CONCURRENCY;
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = self.spawn_reveals(c, started, stop.clone());
        let pid = server.pid;
        let sampler = tokio::spawn(async move {
            let mut per_minute = vec![(rss_kib(pid), open_files(pid), cpu_time(pid))];
            for _ in 0..minutes {
                tokio::time::sleep(Duration::from_secs(60)).await;
                per_minute.push((rss_kib(pid), open_files(pid), cpu_time(pid)));
            }
            per_minute
        });
        // The import at 0:30, the sweep at the first sweeper tick after it.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let (ifrom, ito, iwhat) = self
            .run_work(&server, Work::ApiImport, started, "SOAK")
            .await;
        println!(
            "soak: {iwhat} from {:.1} s to {:.1} s",
            ifrom.as_secs_f64(),
            ito.as_secs_f64()
        );
        expire_sweep_tokens(&server).await;
        let (sfrom, sto, swhat) = self.run_work(&server, Work::Sweep, started, "").await;
        println!(
            "soak: {swhat} from {:.1} s to {:.1} s",
            sfrom.as_secs_f64(),
            sto.as_secs_f64()
        );
        let per_minute = sampler.await.unwrap();
        stop.store(true, Ordering::Relaxed);
        let samples = self.collect(workers).await;
        println!("\n| minute | pairs | errors | p50 | p99 | RSS | open files | server CPU |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for m in 0..minutes as usize {
            let from = Duration::from_secs(60 * m as u64);
            let (pairs, errors, p50, p99) = window(&samples, from, from + Duration::from_secs(60));
            let (rss, files, cpu) = per_minute[m + 1];
            println!(
                "| {} | {pairs} | {errors} | {} | {} | {:.1} MiB | {files} | {:.1} s |",
                m + 1,
                ms(p50),
                ms(p99),
                rss as f64 / 1024.0,
                (cpu - per_minute[m].2).as_secs_f64()
            );
        }
        let codes = self.codes.load(Ordering::Relaxed);
        let errors = samples.iter().filter(|s| !s.ok).count();
        server.terminate().await;
        let granted: i64 = server
            .database()
            .query_row(
                "SELECT COUNT(*) FROM audit_events WHERE action = 'reveal.granted'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let verify = Command::new(&server.bin)
            .arg("--data-dir")
            .arg(&server.data)
            .args(["audit", "verify"])
            .output()
            .unwrap();
        println!(
            "\nsoak end: {} pairs, {errors} errors; codes received {codes}, reveal.granted events {granted} ({}); audit verify: {} ({})",
            samples.len(),
            if codes as i64 == granted { "every code has its event" } else { "MISMATCH" },
            if verify.status.success() { "passed" } else { "FAILED" },
            String::from_utf8_lossy(&verify.stdout).lines().last().unwrap_or("").trim()
        );
        drop(server);
    }
}
