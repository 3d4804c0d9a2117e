//! Observability: `/metrics` parsed as Prometheus text, `/readyz`, JSON logs with request ids,
//! and SIEM forwarding to sinks written here on loopback (an HTTP listener on hyper, a
//! syslog listener over TCP and over TLS with a CA made by the openssl CLI), including a sink
//! killed mid-stream while the server restarts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use seedvault::audit::export::ExportRecord;
use seedvault::config::{Config, Overrides};
use seedvault::siem::SinkSettings;
use seedvault::store::Store;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::common::{self, Desk, TestServer};

const TOKEN: &str = "0123456789abcdef0123456789abcdef-metrics";

/// One sample line of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text exposition format (0.0.4) strictly enough to fail on anything
/// malformed: comments are `# HELP`/`# TYPE`, every other line `name{l="v",…} value`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").unwrap();
                    labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line}"
        );
        samples.push((name, labels, value));
    }
    samples
}

fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(srv: &TestServer) -> Vec<Sample> {
    let response = srv
        .client
        .get(srv.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    srv.canary.record_response("/metrics", text.as_bytes());
    parse_prometheus(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_the_counters_move_with_the_actions() {
    let srv = TestServer::start_with(Overrides {
        metrics_token: Some(TOKEN.into()),
        ..Default::default()
    })
    .await;
    let anonymous = srv.client.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = srv
        .client
        .get(srv.url("/metrics"))
        .bearer_auth("0123456789abcdef0123456789abcdef-metricz")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The recorder is process-wide and other tests run beside this one: compare deltas.
    let before = scrape(&srv).await;
    let provisioner = srv.operator("pat", "provisioner").await;
    let mut helpdesk = srv.operator("hal", "helpdesk").await;
    let (status, body) = common::capture(
        &provisioner,
        "alice@example.org",
        "MET-1",
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = helpdesk
        .reveal("MET-1", &["callback", "video-id"], Some("INC-7"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = helpdesk.reveal("MET-1", &[], None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = helpdesk.sign_in_fresh().await;
    assert_eq!(status, StatusCode::OK);
    let after = scrape(&srv).await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert!(
        delta("seedvault_sign_ins_total", &[("outcome", "success")]) >= 1.0,
        "{after:?}"
    );
    assert!(delta("seedvault_reveals_total", &[("outcome", "granted")]) >= 1.0);
    assert!(
        delta(
            "seedvault_reveals_total",
            &[("outcome", "refused"), ("reason", "checklist")]
        ) >= 1.0
    );
    assert!(sample(&after, "seedvault_escrowed_tokens", &[]) >= 1.0);
    assert!(sample(&after, "seedvault_audit_head_seq", &[]) >= 5.0);
    assert!(
        sample(
            &after,
            "seedvault_http_request_duration_seconds_count",
            &[
                ("route", "/api/v1/tokens/{serial}/reveal/finish"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    // Group commit is SQLite's answer to its one writer; PostgreSQL commits each grant alone.
    if !crate::common::on_postgres() {
        assert!(sample(&after, "seedvault_group_commit_batch_size_count", &[]) >= 1.0);
    }
    // No owner, serial, operator name or ticket in any label.
    for (name, labels, _) in &after {
        for value in labels.values() {
            for secretish in ["alice", "MET-1", "pat", "hal", "INC-7"] {
                assert!(
                    !value.contains(secretish),
                    "{name} has a label value {value}"
                );
            }
        }
    }
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_absent_from_the_main_listener_without_a_token() {
    let srv = TestServer::start().await;
    let response = srv.client.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_ready_until_another_writer_holds_the_database_lock() {
    if crate::common::sqlite_only("SQLite's write lock held by another process") {
        return;
    }
    let srv = TestServer::start().await;
    let (status, body) = srv.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");
    let path = srv.state.store.path().unwrap().to_owned();
    let lock = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(Duration::from_secs(4));
        conn.execute_batch("ROLLBACK").unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = srv.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "not_ready", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("write"),
        "{body}"
    );
    let (status, _) = srv.get("/healthz").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on the lock"
    );
    lock.join().unwrap();
    srv.stop_and_check().await;
}

#[test]
fn json_logs_parse_line_by_line_and_every_request_line_carries_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = crate::cli::start_serve(
        dir.path(),
        &[],
        &[
            ("SEEDVAULT_LOG_FORMAT", "json"),
            (
                "SEEDVAULT_LOG",
                "debug,sqlx=warn,hyper=warn,tower_sessions=warn",
            ),
        ],
    );
    let mut ids = Vec::new();
    for path in ["/healthz", "/readyz", "/api/v1/me", "/nowhere"] {
        let response = raw_http::request_id_of_get(&format!("http://{addr}{path}"));
        ids.push(response);
    }
    let output = crate::cli::stop(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut request_lines = 0;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
        if value["target"] == "seedvault::access" {
            request_lines += 1;
            let id = value["span"]["request_id"]
                .as_str()
                .unwrap_or_else(|| panic!("an access line without request_id: {line}"));
            assert!(ids.iter().any(|i| i == id), "{id} not among {ids:?}");
        }
    }
    assert_eq!(request_lines, 4, "{stderr}");
}

/// A GET with a plain TCP client (the test's reqwest is async): the `X-Request-Id` it got.
mod raw_http {
    pub fn request_id_of_get(url: &str) -> String {
        let url = url::Url::parse(url).unwrap();
        let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            url.path()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("no x-request-id in {answer}"))
            .trim()
            .to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// SIEM sinks written for the tests.

/// What a sink received: every event object, in arrival order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportRecord>>>);

impl Received {
    fn push_line(&self, json: &[u8]) {
        let record: ExportRecord = serde_json::from_slice(json).unwrap_or_else(|e| {
            panic!(
                "not an export record ({e}): {}",
                String::from_utf8_lossy(json)
            )
        });
        self.0.lock().unwrap().push(record);
    }

    fn seqs(&self) -> Vec<i64> {
        self.0.lock().unwrap().iter().map(|r| r.seq).collect()
    }

    /// Waits until every seq up to `head` arrived.
    async fn wait_for(&self, head: i64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let seqs = self.seqs();
            if seqs.iter().copied().max().unwrap_or(0) >= head
                && distinct_in_order(&seqs).len() as i64 >= head
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {head} events arrived",
                distinct_in_order(&seqs).len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The seqs in order of first arrival. At-least-once allows a batch to arrive twice (after a
/// failure it is sent again), never an event before one that precedes it.
fn distinct_in_order(seqs: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::BTreeSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

fn assert_complete_and_in_order(received: &Received, head: i64) {
    let seqs = received.seqs();
    let first = distinct_in_order(&seqs);
    assert_eq!(
        first,
        (1..=head).collect::<Vec<_>>(),
        "every event, in seq order"
    );
    // A resend starts again at an earlier seq and then climbs without gaps.
    for pair in seqs.windows(2) {
        assert!(
            pair[1] == pair[0] + 1 || pair[1] <= pair[0],
            "a gap between {} and {}",
            pair[0],
            pair[1]
        );
    }
}

/// How the HTTP sink answers.
const ACCEPT: u8 = 0;
const FAIL_500: u8 = 1;
const STALL: u8 = 2;

/// An HTTP sink on hyper: records each POSTed JSON line, or answers 500, or never answers.
struct HttpSink {
    addr: SocketAddr,
    received: Received,
    task: JoinHandle<()>,
}

impl HttpSink {
    async fn start(received: Received, mode: Arc<AtomicU8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (r, m) = (received.clone(), mode.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (r, m) = (r.clone(), m.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (r, m) = (r.clone(), m.clone());
                            async move {
                                use http_body_util::BodyExt;
                                assert_eq!(request.headers()["x-api-key"], "sink-key");
                                let body = request.into_body().collect().await?.to_bytes();
                                let status = match m.load(Ordering::SeqCst) {
                                    ACCEPT => {
                                        for line in body.split(|b| *b == b'\n') {
                                            if !line.is_empty() {
                                                r.push_line(line);
                                            }
                                        }
                                        200
                                    }
                                    FAIL_500 => 500,
                                    _ => {
                                        std::future::pending::<()>().await;
                                        500
                                    }
                                };
                                let mut response = hyper::Response::new(http_body_util::Full::new(
                                    hyper::body::Bytes::new(),
                                ));
                                *response.status_mut() =
                                    hyper::StatusCode::from_u16(status).unwrap();
                                Ok::<_, hyper::Error>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    fn settings(&self, name: &str) -> SinkSettings {
        SinkSettings {
            name: Some(name.into()),
            kind: Some("http".into()),
            url: Some(format!("http://{}/ingest?source=seedvault", self.addr)),
            header: Some("X-Api-Key: sink-key".into()),
            batch_events: Some(500),
            timeout_seconds: Some(2),
            ..Default::default()
        }
    }
}

/// A syslog sink (RFC 6587 octet counting) over TCP, or TLS when given an acceptor; killed
/// by [`SyslogSink::kill`] (listener and every connection dropped) and started again on the
/// same port.
struct SyslogSink {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl SyslogSink {
    async fn start(
        at: Option<SocketAddr>,
        received: Received,
        tls: Option<tokio_native_tls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind(at.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let t = tasks.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let received = received.clone();
                let tls = tls.clone();
                t.lock().unwrap().push(tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                read_frames(stream, received).await;
                            }
                        }
                        None => read_frames(stream, received).await,
                    }
                }));
            }
        });
        tasks.lock().unwrap().push(accept);
        Self { addr, tasks }
    }

    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Reads `LEN SP MSG` frames; MSG is an RFC 5424 message whose MSG part is the event's JSON.
async fn read_frames(mut stream: impl tokio::io::AsyncRead + Unpin, received: Received) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        while let Some(space) = buffer.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&buffer[..space])
                .unwrap()
                .parse()
                .unwrap();
            if buffer.len() < space + 1 + len {
                break;
            }
            let message = buffer[space + 1..space + 1 + len].to_vec();
            buffer.drain(..space + 1 + len);
            let text = String::from_utf8(message).unwrap();
            assert!(text.starts_with("<8"), "{text}");
            let fields: Vec<&str> = text.splitn(8, ' ').collect();
            assert_eq!(fields[0].split('>').nth(1), Some("1"), "{text}");
            assert_eq!(fields[3], "seedvault");
            assert_eq!(fields[6], "-", "no structured data");
            received.push_line(fields[7].as_bytes());
            assert_eq!(
                fields[5],
                received.0.lock().unwrap().last().unwrap().action,
                "MSGID is the action"
            );
        }
    }
}

fn config_with(sinks: Vec<SinkSettings>) -> Config {
    Config::validate(Overrides {
        siem: Some(sinks),
        ..Default::default()
    })
    .unwrap()
}

/// A fresh vault with `count` signed events from the audit fixture.
async fn vault_with_events(count: u64) -> (tempfile::TempDir, Store, Arc<seedvault::vault::Vault>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let vault = seedvault::vault::open::create(
        &store,
        time::OffsetDateTime::from_unix_timestamp(common::T0).unwrap(),
        "system",
        vec![(
            "development".into(),
            seedvault::vault::open::SlotRequest::Development,
        )],
    )
    .await
    .unwrap();
    let path = store.path().unwrap().to_owned();
    let vault = Arc::new(vault);
    let v = vault.clone();
    tokio::task::spawn_blocking(move || {
        seedvault::audit::fixture::fill(
            &path,
            &v,
            count,
            time::OffsetDateTime::from_unix_timestamp(common::T0).unwrap(),
        )
        .unwrap()
    })
    .await
    .unwrap();
    (dir, store, vault)
}

async fn head(store: &Store) -> i64 {
    seedvault::store::audit::head(store)
        .await
        .unwrap()
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_reach_an_http_sink_in_order_as_export_records() {
    let (_dir, store, _vault) = vault_with_events(10_000).await;
    let sink = HttpSink::start(Received::default(), Arc::new(AtomicU8::new(ACCEPT))).await;
    let config = config_with(vec![sink.settings("webhook")]);
    let forwarding = seedvault::siem::spawn(&store, &config.siem);
    let head = head(&store).await;
    sink.received.wait_for(head, Duration::from_secs(60)).await;
    assert_complete_and_in_order(&sink.received, head);
    // Exactly the export's objects: the same fields, byte for byte after a round trip.
    let stored = seedvault::store::audit::page_after(&store, 0, 3)
        .await
        .unwrap();
    let received = sink.received.0.lock().unwrap()[..3].to_vec();
    for (row, got) in stored.iter().zip(received) {
        assert_eq!(ExportRecord::of(&row.as_ref()), got);
    }
    let lag = seedvault::siem::lag(&store, &config.siem, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!((lag[0].acked_seq, lag[0].events), (head, 0));
    forwarding.stop().await;
    sink.task.abort();
}

/// On PostgreSQL the forwarder reads the trail through the pool, and events another instance
/// commits (which this process's commit watch never sees) reach the sink too, by the poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_forwarder_sends_the_trail_and_what_another_instance_appends() {
    let db = common::postgres::Database::fresh().await;
    let url = seedvault::store::engine::PostgresUrl::parse(&db.url()).unwrap();
    let a = Store::open_postgres(&url, None, 4).await.unwrap();
    let b = Store::open_postgres(&url, None, 4).await.unwrap();
    let start = time::OffsetDateTime::from_unix_timestamp(common::T0).unwrap();
    let vault = seedvault::vault::open::create(
        &a,
        start,
        "system",
        vec![(
            "development".into(),
            seedvault::vault::open::SlotRequest::Development,
        )],
    )
    .await
    .unwrap();
    seedvault::audit::fixture::fill_store(&a, &vault, 500, start)
        .await
        .unwrap();
    let sink = HttpSink::start(Received::default(), Arc::new(AtomicU8::new(ACCEPT))).await;
    let config = config_with(vec![sink.settings("webhook")]);
    let shared = seedvault::shared::Shared::for_store(&a);
    let forwarding = seedvault::siem::forward::spawn_with(&a, &config.siem, &shared);
    sink.received
        .wait_for(head(&a).await, Duration::from_secs(30))
        .await;
    seedvault::audit::fixture::fill_store(&b, &vault, 20, start)
        .await
        .unwrap();
    let head = head(&b).await;
    assert_eq!(head, 521);
    sink.received.wait_for(head, Duration::from_secs(30)).await;
    assert_complete_and_in_order(&sink.received, head);
    forwarding.stop().await;
    sink.task.abort();
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_sink_answering_500_lags_and_then_receives_everything() {
    let (_dir, store, _vault) = vault_with_events(1_200).await;
    let mode = Arc::new(AtomicU8::new(FAIL_500));
    let sink = HttpSink::start(Received::default(), mode.clone()).await;
    let config = config_with(vec![sink.settings("flaky")]);
    let forwarding = seedvault::siem::spawn(&store, &config.siem);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let health = forwarding.health();
    assert!(
        health["flaky"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("HTTP 500"),
        "{health:?}"
    );
    let lag = seedvault::siem::lag(&store, &config.siem, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        lag[0].acked_seq, 0,
        "nothing acknowledged while the sink refuses"
    );
    assert_eq!(lag[0].events, lag[0].head_seq);
    mode.store(ACCEPT, Ordering::SeqCst);
    let head = head(&store).await;
    sink.received.wait_for(head, Duration::from_secs(40)).await;
    assert_complete_and_in_order(&sink.received, head);
    forwarding.stop().await;
    sink.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syslog_sink_killed_mid_stream_while_the_server_restarts_gets_every_event_in_order() {
    let (dir, store, vault) = vault_with_events(20_000).await;
    let received = Received::default();
    let sink = SyslogSink::start(None, received.clone(), None).await;
    let settings = SinkSettings {
        name: Some("rsyslog".into()),
        kind: Some("syslog-tcp".into()),
        address: Some(sink.addr.to_string()),
        batch_events: Some(200),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let config = config_with(vec![settings]);
    let forwarding = seedvault::siem::spawn(&store, &config.siem);
    // Kill the sink mid-stream…
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.seqs().len() < 3_000 {
        assert!(Instant::now() < deadline, "forwarding did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink.kill();
    // …then stop the server while the sink is down, append more, and start it again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    forwarding.stop().await;
    store.close().await;
    let store = Store::open(dir.path()).await.unwrap();
    let path = store.path().unwrap().to_owned();
    let more = tokio::task::spawn_blocking(move || {
        seedvault::audit::fixture::fill(
            &path,
            &vault,
            500,
            time::OffsetDateTime::from_unix_timestamp(common::T0 + 100_000).unwrap(),
        )
        .unwrap()
    })
    .await
    .unwrap();
    let forwarding = seedvault::siem::spawn(&store, &config.siem);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let lag = seedvault::siem::lag(&store, &config.siem, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(lag[0].events > 0 && lag[0].seconds > 0.0, "{lag:?}");
    // The sink comes back on the same port.
    let _back = SyslogSink::start(Some(sink.addr), received.clone(), None).await;
    received.wait_for(more, Duration::from_secs(60)).await;
    assert_complete_and_in_order(&received, more);
    forwarding.stop().await;
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}");
}

/// A test CA and a server certificate for `localhost` it signed, made by the openssl CLI.
fn test_pki(dir: &std::path::Path) -> tokio_native_tls::TlsAcceptor {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=seedvault test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "server.key",
            "-out",
            "server.pk8",
        ],
    );
    let identity = native_tls::Identity::from_pkcs8(
        &std::fs::read(dir.join("server.pem")).unwrap(),
        &std::fs::read(dir.join("server.pk8")).unwrap(),
    )
    .unwrap();
    tokio_native_tls::TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syslog_sink_over_tls_receives_every_event_and_an_untrusted_certificate_is_refused() {
    let pki = tempfile::tempdir().unwrap();
    let acceptor = test_pki(pki.path());
    let (_dir, store, _vault) = vault_with_events(2_000).await;
    let received = Received::default();
    let sink = SyslogSink::start(None, received.clone(), Some(acceptor)).await;
    let settings = |name: &str, ca: &str| SinkSettings {
        name: Some(name.into()),
        kind: Some("syslog-tls".into()),
        address: Some(sink.addr.to_string()),
        server_name: Some("localhost".into()),
        ca_file: Some(pki.path().join(ca)),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    // A second CA the sink's certificate does not chain to.
    let other = tempfile::tempdir().unwrap();
    openssl(
        other.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other CA",
        ],
    );
    std::fs::copy(other.path().join("ca.pem"), pki.path().join("other.pem")).unwrap();
    let config = config_with(vec![
        settings("tls", "ca.pem"),
        settings("untrusted", "other.pem"),
    ]);
    let forwarding = seedvault::siem::spawn(&store, &config.siem);
    let head = head(&store).await;
    received.wait_for(head, Duration::from_secs(60)).await;
    assert_complete_and_in_order(&received, head);
    let health = forwarding.health();
    assert!(
        health["untrusted"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("TLS"),
        "{health:?}"
    );
    let lag = seedvault::siem::lag(&store, &config.siem, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(
        lag[1].acked_seq, 0,
        "nothing goes to a sink whose certificate fails"
    );
    forwarding.stop().await;
    sink.kill();
}

/// The slowest of five reveals.
async fn timed_reveals(helpdesk: &mut common::Operator, first: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for i in first..first + 5 {
        let started = Instant::now();
        let (status, body) = helpdesk
            .reveal(
                &format!("STALL-{i}"),
                &["callback", "video-id"],
                Some(&format!("INC-{i}")),
            )
            .await;
        worst = worst.max(started.elapsed());
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reveals_keep_their_latency_while_the_siem_sink_stalls() {
    let Desk {
        srv,
        provisioner,
        mut helpdesk,
    } = Desk::start().await;
    // A token per reveal: the policy allows three reveals of one token a day.
    for i in 0..10 {
        let (status, body) = common::capture(
            &provisioner,
            "bob@example.org",
            &format!("STALL-{i}"),
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            serde_json::json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let baseline = timed_reveals(&mut helpdesk, 0).await;
    let sink = HttpSink::start(Received::default(), Arc::new(AtomicU8::new(STALL))).await;
    let config = config_with(vec![sink.settings("stalled")]);
    let forwarding = seedvault::siem::spawn(&srv.state.store, &config.siem);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stalled = timed_reveals(&mut helpdesk, 5).await;
    assert!(
        stalled < baseline * 3 + Duration::from_millis(250),
        "a reveal took {stalled:?} with a stalled sink, {baseline:?} without"
    );
    let lag = seedvault::siem::lag(
        &srv.state.store,
        &config.siem,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    assert!(lag[0].events > 0, "the sink lags instead: {lag:?}");
    forwarding.stop().await;
    sink.task.abort();

    // What a SIEM holds after these reveals carries no seed and no code: the canary (which
    // watches every revealed code) scans each forwarded event.
    let siem = HttpSink::start(Received::default(), Arc::new(AtomicU8::new(ACCEPT))).await;
    let config = config_with(vec![siem.settings("siem")]);
    let forwarding = seedvault::siem::spawn(&srv.state.store, &config.siem);
    let head = head(&srv.state.store).await;
    siem.received.wait_for(head, Duration::from_secs(30)).await;
    forwarding.stop().await;
    siem.task.abort();
    let records = siem.received.0.lock().unwrap().clone();
    assert!(records.iter().any(|r| r.action == "reveal.granted"));
    for record in records {
        srv.canary.record_response(
            "a forwarded SIEM event",
            serde_json::to_string(&record).unwrap().as_bytes(),
        );
    }
    assert!(srv.canary.watched() >= 10, "the canary watches the codes");
    srv.stop_and_check().await;
}

#[test]
fn a_malformed_sink_is_refused_at_start_naming_the_sink_the_field_and_the_fix() {
    let http = |f: fn(&mut SinkSettings)| {
        let mut s = SinkSettings {
            name: Some("splunk".into()),
            kind: Some("http".into()),
            url: Some("https://siem.example.org/ingest".into()),
            ..Default::default()
        };
        f(&mut s);
        s
    };
    let cases: Vec<(Vec<SinkSettings>, &str)> = vec![
        (vec![http(|s| s.name = None)], "name is missing"),
        (
            vec![http(|s| s.kind = Some("kafka".into()))],
            "kind = 'kafka' is invalid: use http, syslog-tcp or syslog-tls",
        ),
        (
            vec![http(|s| s.url = Some("ftp://x/y".into()))],
            "use http:// or https://",
        ),
        (
            vec![http(|s| s.header = Some("no colon here".into()))],
            "header is invalid",
        ),
        (
            vec![http(|s| s.ca_file = Some("/nonexistent/ca.pem".into()))],
            "ca_file = '/nonexistent/ca.pem' cannot be read",
        ),
        (vec![http(|_| {}), http(|_| {})], "name is used by another"),
        (
            vec![SinkSettings {
                name: Some("rsyslog".into()),
                kind: Some("syslog-tcp".into()),
                address: Some("logs.example.org".into()),
                ..Default::default()
            }],
            "address = 'logs.example.org' is invalid: expected host:port",
        ),
    ];
    for (sinks, expected) in cases {
        let err = Config::validate(Overrides {
            siem: Some(sinks),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("[[siem]] sink #"), "{err}");
        assert!(err.contains(expected), "{err} should say {expected}");
    }
    // A header's value may be a credential: never echoed.
    let err = Config::validate(Overrides {
        siem: Some(vec![http(|s| {
            s.header = Some("Authorization Splunk s3cr3t".into())
        })]),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(!err.contains("s3cr3t"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_ahead_of_the_head_stops_its_sink_until_a_reset_and_then_the_reset_is_sent() {
    let (_dir, store, vault) = vault_with_events(100).await;
    let sink = HttpSink::start(Received::default(), Arc::new(AtomicU8::new(ACCEPT))).await;
    let config = config_with(vec![sink.settings("restored")]);
    // As after restoring a backup older than what the sink holds.
    let mut tx = store.begin_write().await.unwrap();
    seedvault::store::siem::set(&mut tx, "restored", 5_000, 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let forwarding = seedvault::siem::spawn(&store, &config.siem);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lag = seedvault::siem::lag(&store, &config.siem, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(lag[0].cursor_ahead && lag[0].events == 0, "{lag:?}");
    let health = forwarding.health();
    assert!(
        health["restored"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("seedvault siem reset restored"),
        "{health:?}"
    );
    assert!(sink.received.seqs().is_empty(), "nothing is sent meanwhile");

    let err = seedvault::siem::reset(
        &store,
        &vault,
        &config.siem,
        "cli:test",
        "nope",
        None,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no [[siem]] sink is named 'nope'"), "{err}");
    let head = head(&store).await;
    let to = seedvault::siem::reset(
        &store,
        &vault,
        &config.siem,
        "cli:test",
        "restored",
        None,
        time::OffsetDateTime::now_utc(),
    )
    .await
    .unwrap();
    assert_eq!(to, head);
    // The reset's own event is the next one the sink receives.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.received.seqs().is_empty() {
        assert!(Instant::now() < deadline, "the reset event never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = sink.received.0.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].action, "siem.cursor_reset");
    assert_eq!(received[0].seq, head + 1);
    forwarding.stop().await;
    sink.task.abort();
}
