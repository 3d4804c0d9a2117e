//! High availability with the real binary (issue #20): two `seedvault serve` processes on one
//! PostgreSQL database, as two hosts behind one reverse proxy (one `--origin`, each process its
//! own loopback port and data directory). Reveals start on one and finish on the other; helpdesk
//! clients reveal through both at once until every limit is reached; one process is killed
//! (SIGKILL) mid-load and its clients move to the other. Afterwards the one audit chain verifies
//! (`seedvault audit verify`), has no fork or gap, holds a grant for every code a client
//! received and no limit was passed.
//!
//! It starts its own database whatever `SEEDVAULT_TEST_ENGINE` says. It takes under two seconds,
//! so it runs in both passes of `.ci/run` rather than being skipped in one.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use url::Url;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

use crate::common::postgres::Database;
use crate::common::totp::totp;

/// Tokens and their limit per day, helpdesk operators and theirs per hour: both capacities are
/// 24 reveals, so the load ends with every token's and every operator's limit reached.
const TOKENS: usize = 8;
const TOKEN_LIMIT: usize = 3;
const DESKS: usize = 6;
const OPERATOR_LIMIT: usize = 4;
/// Codes received before the first instance is killed (of the 24).
const KILL_AFTER: usize = 8;
/// The most any single wait may take before the test fails instead of hanging CI.
const WAIT: Duration = Duration::from_secs(60);

/// The shipped standard policy with small limits, so that the load reaches them.
fn small_limit_policies(dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/standard.toml"),
    )
    .unwrap();
    let small = shipped
        .replace(
            "reveals_per_token_per_day = 3",
            &format!("reveals_per_token_per_day = {TOKEN_LIMIT}"),
        )
        .replace(
            "reveals_per_operator_per_hour = 20",
            &format!("reveals_per_operator_per_hour = {OPERATOR_LIMIT}"),
        );
    assert!(
        small.contains(&format!("reveals_per_operator_per_hour = {OPERATOR_LIMIT}")),
        "the shipped policy's limits have moved"
    );
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("standard.toml"), small).unwrap();
    policies
}

/// The configuration both processes share: the database (password from a file, as the
/// README's PostgreSQL section says), the policies, the origin of the proxy in front.
struct Deployment {
    dir: tempfile::TempDir,
    database_url: String,
    password_file: PathBuf,
    policies: PathBuf,
    origin: String,
}

impl Deployment {
    fn command(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_seedvault"));
        for (name, _) in std::env::vars() {
            if name.starts_with("SEEDVAULT_") {
                command.env_remove(name);
            }
        }
        command
            .arg("--data-dir")
            .arg(data_dir)
            .env("SEEDVAULT_DATABASE_URL", &self.database_url)
            .env("SEEDVAULT_DATABASE_PASSWORD_FILE", &self.password_file)
            .env("SEEDVAULT_POLICIES_DIR", &self.policies)
            .env("SEEDVAULT_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    /// Runs a command of the CLI to its end (at most [`WAIT`]); its exit status and output.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = self.dir.path().join("cli-output");
        let mut child = self
            .command(&self.dir.path().join("cli"))
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&out).unwrap(),
            ))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`seedvault {}` did not finish within {WAIT:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status.success(), std::fs::read_to_string(&out).unwrap())
    }
}

/// One `seedvault serve` process; killed when dropped, so a failing test leaves none behind.
struct Instance {
    base: String,
    child: Mutex<Child>,
    stderr: PathBuf,
    /// The one-time admin invite it printed, if it made one.
    admin_invite: Option<String>,
}

impl Instance {
    /// Starts `serve` and waits (at most [`WAIT`]) until it says it is listening.
    fn start(deployment: &Deployment, name: &'static str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stderr = deployment.dir.path().join(format!("{name}.stderr"));
        let mut child = deployment
            .command(&deployment.dir.path().join(name))
            .args([
                "serve",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--origin",
                &deployment.origin,
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut instance = Self {
            base: format!("http://localhost:{port}"),
            child: Mutex::new(child),
            stderr,
            admin_invite: None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut invite = None;
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some((_, token)) = line.trim().split_once("/invite/") {
                    invite = Some(token.to_owned());
                }
                if line.contains(" listening on ") {
                    let _ = tx.send(invite.take());
                    // Keep reading so the child never blocks on a full pipe.
                    for _ in lines.by_ref() {}
                    return;
                }
            }
        });
        match rx.recv_timeout(WAIT) {
            Ok(admin_invite) => {
                instance.admin_invite = admin_invite;
                instance
            }
            Err(_) => panic!(
                "instance {name} did not start listening within {WAIT:?}:\n{}",
                instance.log()
            ),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGKILL: no graceful shutdown, requests in flight are cut.
    fn kill(&self) {
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    fn running(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(None))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A helpdesk client as a browser would be one: its own cookie jar (sent to both instances,
/// which share the host name), a software passkey for the one origin, a timeout on every request.
struct Client {
    name: String,
    http: reqwest::Client,
    authenticator: WebauthnAuthenticator<SoftPasskey>,
    origin: Url,
}

/// A request that got no answer: the instance died with it (or never took it).
#[derive(Debug)]
struct Cut(String);

impl Client {
    fn new(name: &str, origin: &str) -> Self {
        Self {
            name: name.to_owned(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            authenticator: WebauthnAuthenticator::new(SoftPasskey::new(true)),
            origin: Url::parse(origin).unwrap(),
        }
    }

    async fn post(&self, base: &str, path: &str, body: &Value) -> Result<(StatusCode, Value), Cut> {
        let response = self
            .http
            .post(format!("{base}{path}"))
            .header("Origin", self.origin.origin().ascii_serialization())
            .json(body)
            .send()
            .await
            .map_err(|e| Cut(e.to_string()))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| Cut(e.to_string()))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Registers through an invite (start and finish on `base`).
    async fn register(base: &str, origin: &str, name: &str, invite: &str) -> Self {
        let mut client = Self::new(name, origin);
        let (status, challenge) = client
            .post(
                base,
                "/api/v1/auth/register/start",
                &json!({ "invite": invite }),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let challenge: CreationChallengeResponse = serde_json::from_value(challenge).unwrap();
        let credential = client
            .authenticator
            .do_registration(client.origin.clone(), challenge)
            .unwrap();
        let (status, body) = client
            .post(
                base,
                "/api/v1/auth/register/finish",
                &serde_json::to_value(&credential).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        client
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

    async fn start_reveal(
        &self,
        base: &str,
        serial: &str,
        ticket: &str,
    ) -> Result<(StatusCode, Value), Cut> {
        self.post(
            base,
            &format!("/api/v1/tokens/{serial}/reveal/start"),
            &json!({ "checks": ["callback", "video-id"], "ticket": ticket }),
        )
        .await
    }

    async fn finish_reveal(
        &self,
        base: &str,
        serial: &str,
        assertion: &Value,
    ) -> Result<(StatusCode, Value), Cut> {
        self.post(
            base,
            &format!("/api/v1/tokens/{serial}/reveal/finish"),
            assertion,
        )
        .await
    }
}

fn serial(i: usize) -> String {
    format!("HA-{i}")
}

/// Each token its own seed, so a code names the token it came from.
fn seed(i: usize) -> Vec<u8> {
    (0..20u8)
        .map(|b| b.wrapping_mul(31).wrapping_add(i as u8 + 1))
        .collect()
}

/// A code a client received, with what names its grant.
#[derive(Debug, Clone)]
struct Received {
    operator: String,
    serial: String,
    ticket: String,
    code: String,
    /// Whether the instance killed later had already died when this code came.
    after_kill: bool,
}

/// What the load saw, shared by its clients.
#[derive(Default)]
struct Tally {
    received: Mutex<Vec<Received>>,
    /// Requests cut by the kill (no answer), finishes among them (their grant may or may not
    /// have committed before the process died).
    cut: AtomicUsize,
    cut_finishes: AtomicUsize,
    /// Requests sent to the first instance and not yet answered.
    in_flight_on_first: AtomicUsize,
    /// Set once the first instance is dead.
    killed: std::sync::atomic::AtomicBool,
}

impl Tally {
    fn codes(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// Why a client stopped or moved on.
enum Refusal {
    TokenFull,
    OperatorFull,
}

fn refusal(status: StatusCode, body: &Value) -> Refusal {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    if message.contains("this token's daily reveal limit") {
        Refusal::TokenFull
    } else if message.contains("your hourly reveal limit") {
        Refusal::OperatorFull
    } else {
        panic!("an unexpected refusal: {body}")
    }
}

/// One helpdesk client's load: reveals over the tokens in one order shared by every client (so
/// that they race for each token's last slots), each ceremony
/// started on one instance and finished on the other, until its own limit is reached or every
/// token's is. A request the first instance does not answer marks it down for this client (as
/// a proxy's `max_fails` would) and the ceremony goes on or starts again on the second.
async fn desk_load(
    mut client: Client,
    index: usize,
    bases: [String; 2],
    tally: Arc<Tally>,
) -> Client {
    let mut first_down = false;
    let mut full = [false; TOKENS];
    let mut attempt = 0usize;
    'tokens: loop {
        let Some(token) = (0..TOKENS).find(|&t| !full[t]) else {
            return client;
        };
        let serial = serial(token);
        attempt += 1;
        let ticket = format!("INC-{index}-{attempt}");
        // Alternate which instance starts; with the first down, the second does both.
        let (start_on, finish_on) = match (first_down, attempt % 2) {
            (true, _) => (1, 1),
            (false, 0) => (0, 1),
            (false, _) => (1, 0),
        };
        let started = send(&tally, start_on, || {
            client.start_reveal(&bases[start_on], &serial, &ticket)
        })
        .await;
        let challenge = match started {
            Err(Cut(why)) => {
                assert_eq!(start_on, 0, "the surviving instance cut a request: {why}");
                first_down = true;
                continue 'tokens;
            }
            Ok((StatusCode::OK, challenge)) => challenge,
            Ok((status, body)) => match refusal(status, &body) {
                Refusal::TokenFull => {
                    full[token] = true;
                    continue 'tokens;
                }
                Refusal::OperatorFull => return client,
            },
        };
        let assertion = client.assert(challenge);
        let mut finish_on = finish_on;
        let finished = loop {
            match send(&tally, finish_on, || {
                client.finish_reveal(&bases[finish_on], &serial, &assertion)
            })
            .await
            {
                Ok(answer) => break answer,
                Err(Cut(why)) => {
                    assert_eq!(finish_on, 0, "the surviving instance cut a request: {why}");
                    tally.cut_finishes.fetch_add(1, Ordering::SeqCst);
                    first_down = true;
                    // The same assertion on the survivor: it grants if the dead instance had
                    // not committed, and is refused if it had — never both.
                    finish_on = 1;
                }
            }
        };
        match finished {
            (StatusCode::OK, body) => {
                tally.received.lock().unwrap().push(Received {
                    operator: client.name.clone(),
                    serial: serial.clone(),
                    ticket,
                    code: body["code"].as_str().unwrap().to_owned(),
                    after_kill: tally.killed.load(Ordering::SeqCst),
                });
            }
            // The ceremony was used by the instance that died after granting it.
            (StatusCode::BAD_REQUEST, _) if finish_on == 1 && first_down => {}
            (status, body) => match refusal(status, &body) {
                Refusal::TokenFull => full[token] = true,
                Refusal::OperatorFull => return client,
            },
        }
    }
}

/// Sends one request to instance `on`, counting it in flight on the first and cut if unanswered.
async fn send<F, Fut>(tally: &Tally, on: usize, request: F) -> Result<(StatusCode, Value), Cut>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, Value), Cut>>,
{
    if on == 0 {
        tally.in_flight_on_first.fetch_add(1, Ordering::SeqCst);
    }
    let answer = request().await;
    if on == 0 {
        tally.in_flight_on_first.fetch_sub(1, Ordering::SeqCst);
    }
    if answer.is_err() {
        tally.cut.fetch_add(1, Ordering::SeqCst);
    }
    answer
}

/// One audit event as the database holds it.
#[derive(Debug, sqlx::FromRow)]
struct Event {
    seq: i64,
    time: String,
    actor: String,
    action: String,
    target: String,
    details: String,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

fn unix(time: &str) -> i64 {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres_share_reveals_survive_a_kill_and_leave_one_chain() {
    let began = Instant::now();
    let db = Database::fresh().await;
    let dir = tempfile::tempdir().unwrap();
    // The proxy's origin: one port nobody serves on, signed by every passkey.
    let proxy_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let deployment = Deployment {
        database_url: db.url_without_password(),
        password_file: Database::password_file(dir.path()),
        policies: small_limit_policies(dir.path()),
        origin: format!("http://localhost:{proxy_port}"),
        dir,
    };

    // The first instance creates the vault on the empty database and invites the admin; the
    // second, started once the admin has registered, unseals the same vault.
    let first = Arc::new(Instance::start(&deployment, "first"));
    let invite = first.admin_invite.clone().expect("no admin invite printed");
    let origin = deployment.origin.clone();
    let admin = Client::register(&first.base, &origin, "admin", &invite).await;
    let second = Instance::start(&deployment, "second");
    assert!(
        second.admin_invite.is_none(),
        "the second instance invited an admin again"
    );
    let bases = [first.base.clone(), second.base.clone()];

    // Operators invited through one instance register through the other.
    let invite = |name: String, role: &'static str, at: usize| {
        let admin = &admin;
        let bases = &bases;
        let origin = &origin;
        async move {
            let (status, body) = admin
                .post(
                    &bases[at],
                    "/api/v1/operators/invites",
                    &json!({ "name": name, "roles": [role] }),
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let token = body["url"]
                .as_str()
                .unwrap()
                .split_once("/invite/")
                .unwrap()
                .1;
            Client::register(&bases[1 - at], origin, &name, token).await
        }
    };
    let provisioner = invite("pat".into(), "provisioner", 0).await;
    let mut desks = Vec::new();
    for i in 0..DESKS {
        desks.push(invite(format!("hal{i}"), "helpdesk", i % 2).await);
    }
    for i in 0..TOKENS {
        let (status, body) = provisioner
            .post(
                &bases[i % 2],
                "/api/v1/tokens",
                &json!({
                    "owner": format!("user{i}@example.org"),
                    "serial": serial(i),
                    "secret": data_encoding::BASE32_NOPAD.encode(&seed(i)),
                }),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // A reveal started on each instance finishes on the other, and once only.
    let tally = Arc::new(Tally::default());
    for (token, (start_on, finish_on)) in [(0, 1), (1, 0)].into_iter().enumerate() {
        let desk = &mut desks[0];
        let ticket = format!("INC-across-{token}");
        let (status, challenge) = desk
            .start_reveal(&bases[start_on], &serial(token), &ticket)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{challenge}");
        let assertion = desk.assert(challenge);
        let (status, body) = desk
            .finish_reveal(&bases[finish_on], &serial(token), &assertion)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        tally.received.lock().unwrap().push(Received {
            operator: desk.name.clone(),
            serial: serial(token),
            ticket,
            code: body["code"].as_str().unwrap().to_owned(),
            after_kill: false,
        });
        for base in &bases {
            let (status, body) = desk
                .finish_reveal(base, &serial(token), &assertion)
                .await
                .unwrap();
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "a used ceremony finished again: {body}"
            );
        }
    }

    // Every desk at once through both instances; the first killed once KILL_AFTER codes have
    // come back and it has requests in flight.
    let load_began = Instant::now();
    let killer = {
        let tally = tally.clone();
        let first = first.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + WAIT;
            while tally.codes() < KILL_AFTER || tally.in_flight_on_first.load(Ordering::SeqCst) == 0
            {
                assert!(
                    Instant::now() < deadline,
                    "the load never reached the kill point"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let in_flight = tally.in_flight_on_first.load(Ordering::SeqCst);
            first.kill();
            tally.killed.store(true, Ordering::SeqCst);
            in_flight
        })
    };
    let load = desks
        .into_iter()
        .enumerate()
        .map(|(i, desk)| tokio::spawn(desk_load(desk, i, bases.clone(), tally.clone())));
    let load: Vec<_> = load.collect();
    let finished = tokio::time::timeout(WAIT * 2, async {
        for desk in load {
            desk.await.unwrap();
        }
    })
    .await;
    assert!(
        finished.is_ok(),
        "the load did not finish within {:?}",
        WAIT * 2
    );
    let in_flight_at_kill = tokio::time::timeout(WAIT, killer)
        .await
        .expect("the killer never fired")
        .unwrap();
    let load_took = load_began.elapsed();
    assert!(!first.running(), "the first instance is still running");
    assert!(
        second.running(),
        "the second instance died:\n{}",
        second.log()
    );

    let received = tally.received.lock().unwrap().clone();
    let after_kill = received.iter().filter(|r| r.after_kill).count();
    assert!(
        after_kill > 0,
        "no client got a code from the survivor after the kill"
    );
    // The survivor serves every desk on: each one's session, made on either instance, holds.
    for client in [&admin, &provisioner] {
        let response = client
            .http
            .get(format!("{}/api/v1/operators", bases[1]))
            .send()
            .await
            .unwrap();
        assert_ne!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{}",
            client.name
        );
    }

    // `audit verify`, the CLI on the database, beside the survivor still serving.
    let (ok, output) = deployment.run(&["audit", "verify", "--all-signatures"]);
    assert!(ok, "audit verify failed:\n{output}");

    // The chain, read from the database: one line, seq contiguous, each linked to the last.
    let pool = db.pool().await;
    let events: Vec<Event> = sqlx::query_as(
        "SELECT seq, time, actor, action, target, details, prev_hash, hash
         FROM audit_events ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for pair in events.windows(2) {
        assert_eq!(
            pair[1].seq,
            pair[0].seq + 1,
            "a gap in the chain after {}",
            pair[0].seq
        );
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "a fork: event {} does not follow {}",
            pair[1].seq, pair[0].seq
        );
    }

    // Grants: at most one per ceremony (tickets are unique per ceremony), no limit passed,
    // and both reached.
    let grants: Vec<&Event> = events
        .iter()
        .filter(|e| e.action == "reveal.granted")
        .collect();
    let mut by_ticket: HashMap<String, &Event> = HashMap::new();
    let mut by_token: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_operator: BTreeMap<&str, usize> = BTreeMap::new();
    for grant in &grants {
        let details: Value = serde_json::from_str(&grant.details).unwrap();
        let ticket = details["ticket"].as_str().unwrap().to_owned();
        assert!(
            by_ticket.insert(ticket.clone(), grant).is_none(),
            "one ceremony ({ticket}) granted twice"
        );
        *by_token.entry(&grant.target).or_default() += 1;
        *by_operator.entry(&grant.actor).or_default() += 1;
    }
    assert!(by_token.values().all(|&n| n <= TOKEN_LIMIT), "{by_token:?}");
    assert!(
        by_operator.values().all(|&n| n <= OPERATOR_LIMIT),
        "{by_operator:?}"
    );
    assert_eq!(
        grants.len(),
        TOKENS * TOKEN_LIMIT,
        "{by_token:?} {by_operator:?}"
    );
    assert_eq!(grants.len(), DESKS * OPERATOR_LIMIT, "{by_operator:?}");

    // Every code a client received is the code at its grant's time for the token it names.
    for code in &received {
        let grant = by_ticket
            .get(&code.ticket)
            .unwrap_or_else(|| panic!("a code with no grant: {code:?}"));
        assert_eq!(grant.target, format!("token:{}", code.serial), "{code:?}");
        assert_eq!(
            grant.actor,
            format!("operator:{}", code.operator),
            "{code:?}"
        );
        let token: usize = code.serial.trim_start_matches("HA-").parse().unwrap();
        assert_eq!(
            totp(&seed(token), "SHA1", 6, 30, unix(&grant.time)),
            code.code,
            "the code received is not the one granted: {code:?}"
        );
    }
    // A grant with no code received is one whose answer the kill cut.
    let cut_finishes = tally.cut_finishes.load(Ordering::SeqCst);
    assert!(
        grants.len() <= received.len() + cut_finishes,
        "{} grants, {} codes received, {cut_finishes} finishes cut",
        grants.len(),
        received.len()
    );

    eprintln!(
        "HA: {} codes ({after_kill} after the kill), {} requests cut ({cut_finishes} finishes, \
         {in_flight_at_kill} in flight on the killed instance), load {load_took:?}, whole test {:?}",
        received.len(),
        tally.cut.load(Ordering::SeqCst),
        began.elapsed()
    );
    drop(second);
}
