//! Slow and hostile clients, and what a data directory keeps private (issue #21): connections
//! that trickle or stall are cut off, a full house of them does not stop the server answering,
//! shutdown is bounded, files are the owner's alone, and a lost database never bootstraps a new
//! vault in its place.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::TestServer;
use seedvault::config::Overrides;
use seedvault::server::ConnectionLimits;

fn tight_limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read: Duration::from_millis(800),
        body_read: Duration::from_millis(800),
        max_connections: 4,
        shutdown_grace: Duration::from_millis(800),
    }
}

fn connect(srv: &TestServer) -> TcpStream {
    let addr = srv.base.trim_start_matches("http://localhost:");
    let stream = TcpStream::connect(("127.0.0.1", addr.parse::<u16>().unwrap())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection (or the read timeout of 10 s passes, which
/// fails the test): returns what it sent.
fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&received).into_owned()
            }
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_header_is_disconnected() {
    let srv = TestServer::start_with_limits(Overrides::default(), tight_limits()).await;
    let mut stream = connect(&srv);
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        // One header line every 200 ms, for at most 10 s: a slowloris client.
        for i in 0..50 {
            std::thread::sleep(Duration::from_millis(200));
            if stream
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .is_err()
            {
                return true;
            }
            let mut probe = [0u8; 1];
            stream.set_nonblocking(true).unwrap();
            let eof = matches!(stream.read(&mut probe), Ok(0));
            stream.set_nonblocking(false).unwrap();
            if eof {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(closed, "a trickled header kept its connection for 10 s");
    assert!(started.elapsed() < Duration::from_secs(8));
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let srv = TestServer::start_with_limits(Overrides::default(), tight_limits()).await;
    let mut stream = connect(&srv);
    let received = tokio::task::spawn_blocking(move || read_until_closed(&mut stream))
        .await
        .unwrap();
    // hyper answers a header that never came with 408 or simply closes; either frees the slot.
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_body_is_cut_off() {
    let srv = TestServer::start_with_limits(Overrides::default(), tight_limits()).await;
    let mut stream = connect(&srv);
    let received = tokio::task::spawn_blocking(move || {
        stream
            .write_all(
                b"POST /api/v1/auth/login/start HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":",
            )
            .unwrap();
        read_until_closed(&mut stream)
    })
    .await
    .unwrap();
    let status_line = received.lines().next().unwrap_or_default();
    assert!(
        status_line.starts_with("HTTP/1.1 4"),
        "a stalled body got {status_line:?}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_still_answers_when_silent_clients_hold_every_connection_slot() {
    let srv = TestServer::start_with_limits(Overrides::default(), tight_limits()).await;
    // Twice the cap of silent connections: the first four take every slot, the rest wait in
    // the backlog; each is dropped after the header timeout, so a real request gets through.
    let hogs: Vec<TcpStream> = (0..8).map(|_| connect(&srv)).collect();
    let started = Instant::now();
    let (status, _) = srv.get("/healthz").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "healthz waited {:?} behind silent connections",
        started.elapsed()
    );
    drop(hogs);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_even_with_a_half_sent_request() {
    let srv = TestServer::start_with_limits(
        Overrides::default(),
        ConnectionLimits {
            header_read: Duration::from_secs(60),
            body_read: Duration::from_secs(60),
            max_connections: 16,
            shutdown_grace: Duration::from_millis(500),
        },
    )
    .await;
    let mut stream = connect(&srv);
    stream
        .write_all(b"POST /api/v1/auth/login/start HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    srv.stop_and_check().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    drop(stream);
}

/// Sends `head` and then `body_len` bytes of body in 64 KiB writes 5 ms apart (as a client on
/// a real link: the server answers while it is still sending), and reads the answer.
/// Returns the answer, or the error a write or read failed with (a reset, typically).
fn send_then_read(stream: &mut TcpStream, head: &str, body_len: usize) -> Result<String, String> {
    stream
        .write_all(head.as_bytes())
        .map_err(|e| e.to_string())?;
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        stream
            .write_all(&chunk[..n])
            .map_err(|e| format!("after {sent} bytes: {e}"))?;
        sent += n;
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if received.windows(4).any(|w| w == b"\r\n\r\n") && received.ends_with(b"}") {
                    break;
                }
            }
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_over_the_limit_gets_a_json_413_naming_the_limit_once_it_is_sent() {
    let srv = TestServer::start().await;
    let mut stream = connect(&srv);
    // 3 MiB of JSON (spaces) to an ordinary route: over the 2 MiB every route has by default.
    let length = 3 * 1024 * 1024;
    let head = format!(
        "POST /api/v1/auth/login/start HTTP/1.1\r\nHost: localhost\r\nOrigin: {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        srv.base
    );
    let answer = tokio::task::spawn_blocking(move || send_then_read(&mut stream, &head, length))
        .await
        .unwrap();
    let answer = answer.unwrap_or_else(|e| panic!("the client did not get the 413: {e}"));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "payload_too_large");
    assert!(
        body["message"].as_str().unwrap().contains("limit of 2 MiB"),
        "{body}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_form_over_the_limit_gets_the_same_json_413() {
    let srv = TestServer::start().await;
    let pat = srv.operator("pat", "provisioner").await;
    let form = format!("serial=S1&secret={}", "A".repeat(3 * 1024 * 1024));
    let (status, body) = crate::common::post_form(
        &pat,
        "/tokens/new",
        (
            "application/x-www-form-urlencoded".into(),
            form.into_bytes(),
        ),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "payload_too_large");
    assert!(
        body["message"].as_str().unwrap().contains("limit of 2 MiB"),
        "{body}"
    );
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_closes_a_silent_connection_after_the_header_timeout() {
    let srv = TestServer::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let metrics =
        seedvault::server::spawn_metrics_listener(srv.state.clone(), listener, tight_limits());
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let received = tokio::task::spawn_blocking(move || read_until_closed(&mut stream))
        .await
        .unwrap();
    assert!(
        received.is_empty() || received.starts_with("HTTP/1.1 408"),
        "{received}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // And it still serves the scraper.
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    assert_eq!(text.status(), reqwest::StatusCode::OK);
    metrics.abort();
    srv.stop_and_check().await;
}

/// What hyper answers by itself (it never reaches the router) to `request`, read to the end.
async fn raw_answer(srv: &TestServer, request: Vec<u8>) -> String {
    let mut stream = connect(srv);
    tokio::task::spawn_blocking(move || {
        let _ = stream.write_all(&request);
        read_until_closed(&mut stream)
    })
    .await
    .unwrap()
}

fn assert_security_headers(answer: &str) {
    let head = answer.to_ascii_lowercase();
    for header in [
        "content-security-policy: default-src 'none'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "cache-control: no-store",
    ] {
        assert!(head.contains(header), "no {header} in {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_own_431_for_an_oversized_header_carries_the_security_headers() {
    let srv = TestServer::start().await;
    // More header lines than hyper parses (100): it answers 431 before any router runs.
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..200 {
        request.push_str(&format!("X-Filler-{i}: a\r\n"));
    }
    request.push_str("\r\n");
    let answer = raw_answer(&srv, request.into_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_security_headers(&answer);
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypers_own_400_for_garbage_carries_the_security_headers() {
    let srv = TestServer::start().await;
    let answer = raw_answer(
        &srv,
        b"\x16\x03\x01garbage that is no request\r\n\r\n".to_vec(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_security_headers(&answer);
    srv.stop_and_check().await;
}
