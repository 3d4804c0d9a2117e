//! The audit trail as an auditor and a tamperer meet it: verify (live and from an export),
//! tampering on a stopped vault caught at the exact seq, tampering with export files caught
//! at the exact record by `audit verify --file` and by the third-party Python verifier of
//! docs/AUDIT.md, filtered and CSV exports, and the API's role gate.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{TestServer, T0};
use reqwest::StatusCode;
use seedvault::audit::chain::signed_message;
use seedvault::audit::chain::EventFields;
use seedvault::audit::export::{ExportRecord, Format, CSV_HEADER};
use seedvault::audit::trailer::TrailerRecord;
use seedvault::store::audit::AuditRow;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;

/// Which exported records a filter keeps.
type Keep = Box<dyn Fn(&ExportRecord) -> bool>;

/// Synthetic events added on top of the real ones each test makes.
const FIXTURE_EVENTS: u64 = 300;

fn seedvault(data_dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_seedvault"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("USER", "tester")
        .stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("SEEDVAULT_") {
            command.env_remove(name);
        }
    }
    if let Some(url) = data_dir.parent().and_then(crate::common::database_url_of) {
        command.env("SEEDVAULT_DATABASE_URL", url);
    }
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A server with real events (an operator's invite, registration and sign-in) plus fixture
/// events, one second apart from T0.
async fn server_with_trail() -> TestServer {
    let srv = TestServer::start().await;
    srv.operator("aud", "auditor").await;
    let start = time::OffsetDateTime::from_unix_timestamp(T0).unwrap();
    seedvault::audit::fixture::fill_store(
        &srv.state.store,
        &srv.state.vault,
        FIXTURE_EVENTS,
        start,
    )
    .await
    .unwrap();
    srv
}

/// The database of a stopped vault, opened directly with the append-only triggers dropped:
/// what someone with write access to the file can do.
async fn tamperer(data_dir: &Path) -> SqlitePool {
    let options =
        SqliteConnectOptions::new().filename(data_dir.join(seedvault::store::DATABASE_FILE));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    for trigger in ["audit_events_no_update", "audit_events_no_delete"] {
        sqlx::query(&format!("DROP TRIGGER {trigger}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool
}

async fn rows(pool: &SqlitePool) -> Vec<AuditRow> {
    seedvault::store::audit::page_after(pool, 0, i64::MAX)
        .await
        .unwrap()
}

async fn set_hashes(pool: &SqlitePool, seq: i64, prev_hash: &[u8], hash: &[u8]) {
    sqlx::query("UPDATE audit_events SET prev_hash = ?, hash = ? WHERE seq = ?")
        .bind(prev_hash)
        .bind(hash)
        .bind(seq)
        .execute(pool)
        .await
        .unwrap();
}

/// Moves event `from` to `to` (a free seq).
async fn renumber(pool: &SqlitePool, from: i64, to: i64) {
    sqlx::query("UPDATE audit_events SET seq = ? WHERE seq = ?")
        .bind(to)
        .bind(from)
        .execute(pool)
        .await
        .unwrap();
}

/// Recomputes every hash and link from `from` on, keeping the old signatures (the tamperer
/// has no signing key).
async fn rehash_from(pool: &SqlitePool, from: i64) {
    let all = rows(pool).await;
    let mut prev = all.iter().find(|r| r.seq == from - 1).unwrap().hash.clone();
    for mut row in all.into_iter().filter(|r| r.seq >= from) {
        row.prev_hash = prev;
        row.hash = EventFields::of(&row).hash(&row.prev_hash).to_vec();
        set_hashes(pool, row.seq, &row.prev_hash, &row.hash).await;
        prev = row.hash;
    }
}

#[derive(Debug, Clone, Copy)]
enum Tamper {
    Edit,
    Delete,
    Swap,
    Insert,
    RecomputeWithoutKey,
    AppendForged,
    TruncateAfterAnchoredHead,
}

impl Tamper {
    /// Tampers around event `k`; returns the seq verify must name.
    async fn apply(self, pool: &SqlitePool, k: i64, head: i64) -> i64 {
        match self {
            Self::Edit => {
                sqlx::query(
                    "UPDATE audit_events SET details = '{\"ticket\":\"nothing to see\"}' WHERE seq = ?",
                )
                .bind(k)
                .execute(pool)
                .await
                .unwrap();
                k
            }
            Self::Delete => {
                sqlx::query("DELETE FROM audit_events WHERE seq = ?")
                    .bind(k)
                    .execute(pool)
                    .await
                    .unwrap();
                k
            }
            Self::Swap => {
                renumber(pool, k, -1).await;
                renumber(pool, k + 1, k).await;
                renumber(pool, -1, k + 1).await;
                k
            }
            Self::Insert => {
                // Make room: shift k.. up by one, newest first.
                for seq in (k..=head).rev() {
                    renumber(pool, seq, seq + 1).await;
                }
                let prev = rows(pool)
                    .await
                    .into_iter()
                    .find(|r| r.seq == k - 1)
                    .unwrap();
                let mut forged = AuditRow {
                    seq: k,
                    time: prev.time.clone(),
                    actor: "operator:mallory".into(),
                    action: "reveal.granted".into(),
                    target: "token:FX-1".into(),
                    outcome: "success".into(),
                    details: "{}".into(),
                    prev_hash: prev.hash.clone(),
                    hash: Vec::new(),
                    sig: vec![7; 64],
                };
                forged.hash = EventFields::of(&forged).hash(&forged.prev_hash).to_vec();
                seedvault::store::audit::insert(pool, &forged)
                    .await
                    .unwrap();
                k
            }
            Self::RecomputeWithoutKey => {
                sqlx::query("UPDATE audit_events SET actor = 'operator:mallory' WHERE seq = ?")
                    .bind(k)
                    .execute(pool)
                    .await
                    .unwrap();
                rehash_from(pool, k).await;
                k
            }
            Self::AppendForged => {
                let last = rows(pool).await.pop().unwrap();
                let mut forged = last.clone();
                forged.seq = head + 1;
                forged.prev_hash = last.hash.clone();
                forged.hash = EventFields::of(&forged).hash(&forged.prev_hash).to_vec();
                seedvault::store::audit::insert(pool, &forged)
                    .await
                    .unwrap();
                head + 1
            }
            Self::TruncateAfterAnchoredHead => {
                sqlx::query("DELETE FROM audit_events WHERE seq >= ?")
                    .bind(k)
                    .execute(pool)
                    .await
                    .unwrap();
                k
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_tampering_is_caught_at_its_exact_seq() {
    if crate::common::sqlite_only("the tamperer edits the SQLite file with its triggers dropped") {
        return;
    }
    for (tamper, offset) in [
        (Tamper::Edit, 0),
        (Tamper::Edit, 200),
        (Tamper::Delete, 150),
        (Tamper::Delete, -1),
        (Tamper::Swap, 3),
        (Tamper::Insert, 100),
        (Tamper::RecomputeWithoutKey, 1),
        (Tamper::RecomputeWithoutKey, 250),
        (Tamper::AppendForged, 0),
        (Tamper::TruncateAfterAnchoredHead, 280),
    ] {
        let srv = server_with_trail().await;
        let dir = srv.stop_keep_dir().await;
        let data = dir.path().join("data");
        let clean = seedvault(&data, &["audit", "verify"]);
        assert!(clean.status.success(), "{}", stderr(&clean));
        let anchor = stdout(&seedvault(&data, &["audit", "head"]))
            .trim()
            .to_owned();
        let head: i64 = anchor.split(':').next().unwrap().parse().unwrap();
        assert!(stdout(&clean).contains(&format!("{head} events verified; head {anchor}")));
        // Seqs counted from the first fixture event (real events come first).
        let first_fixture = head - FIXTURE_EVENTS as i64 + 1;
        // Offset -1: the first event of the second verify thread's range (a seam).
        let k = if offset < 0 {
            head / 2 + 1
        } else {
            first_fixture + offset
        };

        let pool = tamperer(&data).await;
        let expected = tamper.apply(&pool, k, head).await;
        pool.close().await;

        let mut args = vec!["audit", "verify"];
        if matches!(tamper, Tamper::TruncateAfterAnchoredHead) {
            let plain = seedvault(&data, &args);
            assert!(
                plain.status.success(),
                "a truncated chain is internally sound; only the anchor tells: {}",
                stdout(&plain)
            );
            args.extend(["--expect-head", &anchor]);
        }
        for extra in [None, Some("--all-signatures")] {
            let mut args = args.clone();
            args.extend(extra);
            let output = seedvault(&data, &args);
            assert!(!output.status.success(), "{tamper:?} at {k} went unnoticed");
            let text = stdout(&output);
            assert!(
                text.contains(&format!("BROKEN at seq {expected}:")),
                "{tamper:?} at {k} ({extra:?}): {text}"
            );
            assert!(stderr(&output).contains(&format!("seq {expected}")));
        }
    }
}

async fn api_export(
    op: &common::Operator,
    query: &str,
) -> (StatusCode, String, reqwest::header::HeaderMap) {
    let response = op
        .http
        .get(format!("{}/api/v1/audit{query}", op.base))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    op.canary
        .record_response(&format!("audit export {query}"), &body);
    (status, String::from_utf8(body.to_vec()).unwrap(), headers)
}

/// The event records of a JSON Lines export (every line but the trailer).
fn records(jsonl: &str) -> Vec<ExportRecord> {
    let lines: Vec<&str> = jsonl.lines().collect();
    let (trailer, events) = lines.split_last().unwrap();
    assert!(
        trailer.starts_with(r#"{"type":"export-trailer""#),
        "{trailer}"
    );
    events
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// RFC 4180: fields separated by commas, quoted fields may hold commas, doubled quotes and
/// line breaks; records end with CRLF.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    out
}

fn write_temp(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_trail_verifies_live_and_from_its_exports_whole_or_filtered() {
    let srv = server_with_trail().await;
    let auditor = srv.operator("alma", "auditor").await;
    let key = data_encoding::HEXLOWER.encode(srv.state.vault.audit_public_key().as_bytes());
    let vault_id = srv.state.vault.id().to_owned();
    let files = tempfile::tempdir().unwrap();

    let (status, verify) = auditor.get("/api/v1/audit/verify").await;
    assert_eq!(status, StatusCode::OK, "{verify}");
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["broken"], Value::Null);
    let head = verify["head"]["seq"].as_i64().unwrap();
    assert_eq!(verify["events"].as_i64().unwrap(), head);

    let (status, whole, headers) = api_export(&auditor, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let all = records(&whole);
    assert_eq!(
        all.len() as i64,
        head,
        "the export covers the trail up to the head"
    );
    assert_eq!(headers["x-audit-through-seq"], head.to_string().as_str());
    let path = write_temp(files.path(), "all.jsonl", &whole);
    let elsewhere = files.path().join("no-vault-here");
    let output = seedvault(
        &elsewhere,
        &[
            "audit",
            "verify",
            "--file",
            path.to_str().unwrap(),
            "--public-key",
            &key,
            "--vault-id",
            &vault_id,
        ],
    );
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("complete export"),
        "{}",
        stdout(&output)
    );
    assert!(
        !elsewhere.exists(),
        "verifying a file creates no data directory"
    );

    // The export was recorded before it was sent: who, format, filters, count.
    let (_, again) = auditor.get("/api/v1/audit/verify").await;
    assert_eq!(again["head"]["seq"].as_i64().unwrap(), head + 1);
    let (_, newest, _) = api_export(&auditor, "?action=audit.exported").await;
    let recorded = records(&newest).pop().unwrap();
    assert_eq!(recorded.seq, head + 1);
    assert_eq!(recorded.actor, "operator:alma");
    let details: Value = serde_json::from_str(&recorded.details).unwrap();
    assert_eq!(details["count"], head);
    assert_eq!(details["format"], "jsonl");
    assert_eq!(details["through_seq"], head);

    // Filters: each one alone and combined, each verified offline.
    let first_fixture = head - FIXTURE_EVENTS as i64 + 1;
    let since = time::OffsetDateTime::from_unix_timestamp(T0 + first_fixture + 100).unwrap();
    let since_text = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let until_text = (since + time::Duration::seconds(50))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let cases: Vec<(String, Keep)> = vec![
        (
            "?actor=operator:bob".into(),
            Box::new(|r| r.actor == "operator:bob"),
        ),
        ("?token=FX-7".into(), Box::new(|r| r.target == "token:FX-7")),
        (
            "?action=reveal.denied".into(),
            Box::new(|r| r.action == "reveal.denied"),
        ),
        (
            format!("?since={since_text}&until={until_text}"),
            Box::new(move |r| {
                let at = time::OffsetDateTime::parse(
                    &r.time,
                    &time::format_description::well_known::Rfc3339,
                )
                .unwrap();
                at >= since && at < since + time::Duration::seconds(50)
            }),
        ),
        (
            "?actor=operator:alice&action=token.captured".into(),
            Box::new(|r| r.actor == "operator:alice" && r.action == "token.captured"),
        ),
    ];
    for (query, keep) in &cases {
        let (status, body, _) = api_export(&auditor, query).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        let got = records(&body);
        let expected: Vec<&ExportRecord> = all.iter().filter(|r| keep(r)).collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{query}");
        if query.starts_with("?since") {
            assert_eq!(got.len(), 50, "since inclusive, until exclusive: {query}");
        }
        assert!(!got.is_empty(), "{query} matched nothing");
        let path = write_temp(files.path(), "filtered.jsonl", &body);
        let output = seedvault(
            &elsewhere,
            &[
                "audit",
                "verify",
                "--file",
                path.to_str().unwrap(),
                "--public-key",
                &key,
            ],
        );
        assert!(
            output.status.success(),
            "{query}: {}{}",
            stdout(&output),
            stderr(&output)
        );
        assert!(
            stdout(&output).contains("filtered export"),
            "{}",
            stdout(&output)
        );
    }

    // CSV carries the same events, field for field.
    let (status, csv, headers) = api_export(&auditor, "?format=csv&actor=operator:carol").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let (_, jsonl, _) = api_export(&auditor, "?format=jsonl&actor=operator:carol").await;
    let table = parse_csv(&csv);
    let (trailer_row, table) = table.split_last().unwrap();
    assert_eq!(trailer_row[0], "export-trailer");
    assert_eq!(
        table[0],
        [
            "type",
            "seq",
            "time",
            "actor",
            "action",
            "target",
            "outcome",
            "details",
            "prev_hash",
            "hash",
            "sig"
        ]
    );
    let from_csv: Vec<ExportRecord> = table[1..]
        .iter()
        .map(|f| ExportRecord {
            kind: f[0].clone(),
            seq: f[1].parse().unwrap(),
            time: f[2].clone(),
            actor: f[3].clone(),
            action: f[4].clone(),
            target: f[5].clone(),
            outcome: f[6].clone(),
            details: f[7].clone(),
            prev_hash: f[8].clone(),
            hash: f[9].clone(),
            sig: f[10].clone(),
        })
        .collect();
    assert_eq!(from_csv, records(&jsonl));
    assert!(from_csv.len() > 10);

    let (status, body) = auditor.get("/api/v1/audit?format=xml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`jsonl` or `csv`"),
        "{body}"
    );
    let (status, body) = auditor.get("/api/v1/audit?since=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // The CLI export (it unseals the dev vault) matches and verifies too.
    let dir = srv.stop_keep_dir().await;
    let data = dir.path().join("data");
    let out = files.path().join("cli.jsonl");
    let output = seedvault(
        &data,
        &[
            "audit",
            "export",
            "--format",
            "jsonl",
            "--token",
            "FX-7",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("exported"), "{}", stderr(&output));
    let cli_records = records(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        cli_records,
        all.iter()
            .filter(|r| r.target == "token:FX-7")
            .cloned()
            .collect::<Vec<_>>()
    );
    let output = seedvault(&data, &["audit", "verify", "--file", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stdout(&output));
    let output = seedvault(&data, &["audit", "public-key"]);
    assert_eq!(stdout(&output).trim(), key);
    let output = seedvault(&data, &["audit", "verify"]);
    assert!(output.status.success(), "{}", stdout(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_admins_may_export_or_verify() {
    let srv = TestServer::start().await;
    let mut operators = Vec::new();
    for (name, roles, allowed) in [
        ("ada", "admin", true),
        ("aud", "auditor", true),
        ("pat", "provisioner", false),
        ("hal", "helpdesk", false),
        ("mix", "provisioner,helpdesk", false),
        ("two", "helpdesk,auditor", true),
    ] {
        operators.push((srv.operator(name, roles).await, allowed));
    }
    for path in [
        "/api/v1/audit",
        "/api/v1/audit?format=csv",
        "/api/v1/audit/verify",
    ] {
        let (status, _) = srv.get(path).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "anonymous {path}");
        for (op, allowed) in &operators {
            let (status, _, _) = api_export(op, path.trim_start_matches("/api/v1/audit")).await;
            let expected = if *allowed {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(status, expected, "{} {path}", op.name);
        }
    }
    // Refused exports are not recorded as exports; allowed ones are, once each.
    let exports: Vec<_> = srv
        .audit_actions()
        .await
        .into_iter()
        .filter(|(action, _, _)| action == "audit.exported")
        .collect();
    assert_eq!(exports.len(), 6, "{exports:?}");
    srv.stop_and_check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_audit_queries_are_answered_with_the_json_error_shape() {
    let srv = TestServer::start().await;
    let auditor = srv.operator("aq", "auditor").await;
    for path in [
        "/api/v1/audit?format=csv&format=jsonl",
        "/api/v1/audit/verify?all_signatures=maybe",
    ] {
        let (status, body) = auditor.get(path).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(body["error"], "unprocessable", "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("the query string is not valid"),
            "{path}: {body}"
        );
    }
    srv.stop_and_check().await;
}

/// The Python verifier printed in docs/AUDIT.md, written to `dir` (None without python3 and
/// its `cryptography` package).
pub(crate) fn python_verifier(dir: &Path) -> Option<PathBuf> {
    let ready = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        // CI installs it (.ci/run); a developer machine without it still runs the Rust side.
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with the cryptography package is missing on CI: .ci/run installs python3-cryptography"
        );
        eprintln!("python3 with the cryptography package is not installed; skipping its runs");
        return None;
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/AUDIT.md"))
        .unwrap();
    let script = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/AUDIT.md has a ```python block");
    Some(write_temp(dir, "verify_export.py", script))
}

/// An export taken apart into its event records and its trailer, to tamper with and put back
/// together in the same format (hashes and signatures as they were unless a case recomputes
/// them).
#[derive(Clone)]
struct Parts {
    format: Format,
    events: Vec<ExportRecord>,
    trailer: Option<TrailerRecord>,
}

impl Parts {
    fn parse(format: Format, text: &str) -> Self {
        let mut parts = Self {
            format,
            events: Vec::new(),
            trailer: None,
        };
        match format {
            Format::Jsonl => {
                for line in text.lines() {
                    if line.starts_with(r#"{"type":"export-trailer""#) {
                        parts.trailer = Some(serde_json::from_str(line).unwrap());
                    } else {
                        parts.events.push(serde_json::from_str(line).unwrap());
                    }
                }
            }
            Format::Csv => {
                for f in &parse_csv(text)[1..] {
                    if f[0] == "export-trailer" {
                        parts.trailer = Some(serde_json::from_str(&f[7]).unwrap());
                        continue;
                    }
                    parts.events.push(ExportRecord {
                        kind: f[0].clone(),
                        seq: f[1].parse().unwrap(),
                        time: f[2].clone(),
                        actor: f[3].clone(),
                        action: f[4].clone(),
                        target: f[5].clone(),
                        outcome: f[6].clone(),
                        details: f[7].clone(),
                        prev_hash: f[8].clone(),
                        hash: f[9].clone(),
                        sig: f[10].clone(),
                    });
                }
            }
        }
        assert!(
            parts.trailer.is_some(),
            "every export ends with its trailer"
        );
        parts
    }

    fn render(&self) -> String {
        let mut out = Vec::new();
        if self.format == Format::Csv {
            out.extend_from_slice(CSV_HEADER.as_bytes());
        }
        for record in &self.events {
            let row = row_of(record);
            match self.format {
                Format::Jsonl => seedvault::audit::export::write_jsonl(&row.as_ref(), &mut out),
                Format::Csv => seedvault::audit::export::write_csv(&row.as_ref(), &mut out),
            }
        }
        if let Some(record) = &self.trailer {
            let (trailer, sig) = record.decode().unwrap();
            let sig: [u8; 64] = sig.try_into().unwrap();
            seedvault::audit::export::write_trailer(self.format, &trailer, &sig, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    /// The line of the `index`th event (the CSV header is line 1).
    fn line_of(&self, index: usize) -> u64 {
        index as u64 + 1 + u64::from(self.format == Format::Csv)
    }

    /// The line after the last event: the trailer's, or where it is missing.
    fn end_line(&self) -> u64 {
        self.line_of(self.events.len())
    }

    /// Recomputes the hash of the `index`th event from its fields and `prev_hash`, as someone
    /// without the signing key can.
    fn rehash(&mut self, index: usize) {
        let mut row = row_of(&self.events[index]);
        row.hash = EventFields::of(&row).hash(&row.prev_hash).to_vec();
        self.events[index].hash = data_encoding::HEXLOWER.encode(&row.hash);
    }
}

fn row_of(record: &ExportRecord) -> AuditRow {
    let hex = |text: &str| data_encoding::HEXLOWER.decode(text.as_bytes()).unwrap();
    AuditRow {
        seq: record.seq,
        time: record.time.clone(),
        actor: record.actor.clone(),
        action: record.action.clone(),
        target: record.target.clone(),
        outcome: record.outcome.clone(),
        details: record.details.clone(),
        prev_hash: hex(&record.prev_hash),
        hash: hex(&record.hash),
        sig: hex(&record.sig),
    }
}

#[derive(Debug, Clone, Copy)]
enum FileTamper {
    EditField,
    DeleteFirst,
    DeleteMiddle,
    DeleteLast,
    Swap,
    InsertForged,
    RecomputeWithoutKey,
    TruncateTail,
    DropTrailer,
    AlterTrailer,
    Empty,
}

impl FileTamper {
    /// Tampers with `parts` (a complete export, or a filtered one for the deletions); returns
    /// the file and where verification must report the break: line, and seq when the break
    /// is at an event (for a removed one, the seq that is missing).
    fn apply(self, mut parts: Parts, complete: bool) -> (String, u64, Option<i64>) {
        let m = parts.events.len() / 2;
        let seq_at = |parts: &Parts, i: usize| parts.events[i].seq;
        let (line, seq) = match self {
            Self::EditField => {
                parts.events[m].actor = "operator:mallory".into();
                (parts.line_of(m), Some(seq_at(&parts, m)))
            }
            Self::DeleteFirst => {
                let removed = parts.events.remove(0);
                (parts.line_of(0), Some(removed.seq))
            }
            Self::DeleteMiddle => {
                let removed = parts.events.remove(m);
                if complete {
                    (parts.line_of(m), Some(removed.seq))
                } else {
                    // The gap is expected; only the trailer's count and digest tell.
                    (parts.end_line(), None)
                }
            }
            Self::DeleteLast => {
                let removed = parts.events.pop().unwrap();
                (parts.end_line(), Some(removed.seq))
            }
            Self::Swap => {
                parts.events.swap(m, m + 1);
                (parts.line_of(m), Some(seq_at(&parts, m + 1)))
            }
            Self::InsertForged => {
                let mut forged = parts.events[m].clone();
                forged.actor = "operator:mallory".into();
                forged.action = "reveal.granted".into();
                parts.events.insert(m, forged);
                parts.rehash(m);
                (parts.line_of(m), Some(seq_at(&parts, m)))
            }
            Self::RecomputeWithoutKey => {
                parts.events[m].details = "{}".into();
                for i in m..parts.events.len() {
                    if i > m {
                        parts.events[i].prev_hash = parts.events[i - 1].hash.clone();
                    }
                    parts.rehash(i);
                }
                (parts.line_of(m), Some(seq_at(&parts, m)))
            }
            Self::TruncateTail => {
                parts.events.truncate(parts.events.len() - 10);
                parts.trailer = None;
                (parts.end_line(), None)
            }
            Self::DropTrailer => {
                parts.trailer = None;
                (parts.end_line(), None)
            }
            Self::AlterTrailer => {
                if let Some(trailer) = parts.trailer.as_mut() {
                    trailer.count -= 1;
                }
                (parts.end_line(), None)
            }
            Self::Empty => return (String::new(), 1, None),
        };
        (parts.render(), line, seq)
    }
}

/// A tampered export file and where both verifiers must report its first break.
struct FileCase {
    name: String,
    text: String,
    line: u64,
    seq: Option<i64>,
    anchor: Option<String>,
}

fn verify_file(file: &Path, key: &str, vault_id: &str, expect_head: Option<&str>) -> Output {
    let elsewhere = file.with_extension("no-vault");
    let mut args = vec![
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
        "--public-key",
        key,
        "--vault-id",
        vault_id,
    ];
    args.extend(
        expect_head
            .map(|head| ["--expect-head", head])
            .into_iter()
            .flatten(),
    );
    seedvault(&elsewhere, &args)
}

pub(crate) fn verify_with_python(
    script: &Path,
    file: &Path,
    key: &str,
    vault_id: &str,
    expect_head: Option<&str>,
) -> Output {
    Command::new("python3")
        .arg(script)
        .arg(file)
        .args(["--public-key", key, "--vault-id", vault_id])
        .args(
            expect_head
                .map(|head| ["--expect-head", head])
                .into_iter()
                .flatten(),
        )
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampering_with_an_export_file_is_refused_at_its_record_by_both_verifiers() {
    let srv = server_with_trail().await;
    let auditor = srv.operator("alma", "auditor").await;
    let key = data_encoding::HEXLOWER.encode(srv.state.vault.audit_public_key().as_bytes());
    let vault_id = srv.state.vault.id().to_owned();
    let files = tempfile::tempdir().unwrap();
    let python = python_verifier(files.path());
    let mut exports = Vec::new();
    for (format, query) in [(Format::Jsonl, "jsonl"), (Format::Csv, "csv")] {
        let (status, whole, _) = api_export(&auditor, &format!("?format={query}")).await;
        assert_eq!(status, StatusCode::OK);
        let (_, filtered, _) =
            api_export(&auditor, &format!("?format={query}&actor=operator:bob")).await;
        exports.push((format, whole, filtered));
    }
    // Each export was recorded, so the head now is newer than the one the exports reached.
    let (_, verify) = auditor.get("/api/v1/audit/verify").await;
    let newer = format!(
        "{}:{}",
        verify["head"]["seq"],
        verify["head"]["hash"].as_str().unwrap()
    );

    let run = |name: &str, text: &str, expect_head: Option<&str>| {
        let file = write_temp(files.path(), name, text);
        let cli = verify_file(&file, &key, &vault_id, expect_head);
        let py = python
            .as_ref()
            .map(|script| verify_with_python(script, &file, &key, &vault_id, expect_head));
        (cli, py)
    };
    for (format, whole, filtered) in &exports {
        let complete = Parts::parse(*format, whole);
        let selected = Parts::parse(*format, filtered);
        assert!(selected.events.iter().all(|r| r.actor == "operator:bob"));
        assert!(selected.events.len() > 20);
        // The round trip through Parts is exact, so the cases below change only what they say.
        assert_eq!(&complete.render(), whole);
        assert_eq!(&selected.render(), filtered);

        for (name, text, expected) in [
            ("complete", whole, "complete export"),
            ("filtered", filtered, "filtered export"),
        ] {
            let (cli, py) = run(&format!("{name}.{}", format.as_str()), text, None);
            assert!(
                cli.status.success(),
                "{format:?} {name}: {}{}",
                stdout(&cli),
                stderr(&cli)
            );
            assert!(stdout(&cli).contains(expected), "{}", stdout(&cli));
            if let Some(py) = py {
                assert!(
                    py.status.success(),
                    "python, {format:?} {name}: {}{}",
                    stdout(&py),
                    stderr(&py)
                );
                assert!(stdout(&py).contains(expected), "{}", stdout(&py));
            }
        }

        let mut cases: Vec<FileCase> = Vec::new();
        for tamper in [
            FileTamper::EditField,
            FileTamper::DeleteFirst,
            FileTamper::DeleteMiddle,
            FileTamper::DeleteLast,
            FileTamper::Swap,
            FileTamper::InsertForged,
            FileTamper::RecomputeWithoutKey,
            FileTamper::TruncateTail,
            FileTamper::DropTrailer,
            FileTamper::AlterTrailer,
            FileTamper::Empty,
        ] {
            let (text, line, seq) = tamper.apply(complete.clone(), true);
            cases.push(FileCase {
                name: format!("{tamper:?}"),
                text,
                line,
                seq,
                anchor: None,
            });
        }
        for tamper in [
            FileTamper::DeleteFirst,
            FileTamper::DeleteMiddle,
            FileTamper::DeleteLast,
        ] {
            let (text, line, seq) = tamper.apply(selected.clone(), false);
            cases.push(FileCase {
                name: format!("filtered, {tamper:?}"),
                text,
                line,
                seq,
                anchor: None,
            });
        }
        // An untouched export that does not reach a head anchored after it was taken.
        let head_seq = complete.events.last().unwrap().seq;
        cases.push(FileCase {
            name: "older than the anchored head".into(),
            text: whole.clone(),
            line: complete.end_line(),
            seq: Some(head_seq + 1),
            anchor: Some(newer.clone()),
        });

        for FileCase {
            name,
            text,
            line,
            seq,
            anchor,
        } in &cases
        {
            let at = match seq {
                Some(seq) => format!("BROKEN at line {line} (seq {seq}):"),
                None => format!("BROKEN at line {line}:"),
            };
            let (cli, py) = run(
                &format!("tampered.{}", format.as_str()),
                text,
                anchor.as_deref(),
            );
            assert!(
                !cli.status.success(),
                "{format:?} {name} went unnoticed: {}",
                stdout(&cli)
            );
            assert!(
                stdout(&cli).contains(&at),
                "{format:?} {name}: expected {at}\n{}",
                stdout(&cli)
            );
            if let Some(py) = py {
                assert_eq!(
                    py.status.code(),
                    Some(1),
                    "python, {format:?} {name}: {}{}",
                    stdout(&py),
                    stderr(&py)
                );
                assert!(
                    stdout(&py).contains(&at),
                    "python, {format:?} {name}: expected {at}\n{}{}",
                    stdout(&py),
                    stderr(&py)
                );
            }
        }
    }
    srv.stop_and_check().await;
}

#[test]
fn a_record_with_an_unknown_key_or_upper_case_hex_is_refused_by_both_verifiers() {
    // A one-event chain signed with a fixed key, exported whole.
    let signer = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let key = data_encoding::HEXLOWER.encode(signer.verifying_key().as_bytes());
    let vault_id = "6f1c2d3e-0000-4000-8000-000000000001";
    let mut row = AuditRow {
        seq: 1,
        time: "2026-11-22T09:30:00.000Z".into(),
        actor: "cli:root".into(),
        action: "vault.init".into(),
        target: format!("vault:{vault_id}"),
        outcome: "success".into(),
        details: "{}".into(),
        prev_hash: seedvault::audit::chain::genesis_hash(vault_id).to_vec(),
        hash: Vec::new(),
        sig: Vec::new(),
    };
    row.hash = EventFields::of(&row).hash(&row.prev_hash).to_vec();
    use ed25519_dalek::Signer;
    row.sig = signer
        .sign(&signed_message(1, &row.hash))
        .to_bytes()
        .to_vec();
    let mut digest = seedvault::audit::trailer::ExportDigest::default();
    digest.push(1, &row.hash);
    let trailer = seedvault::audit::trailer::Trailer {
        vault_id: vault_id.into(),
        filter: r#"{"action":null,"actor":null,"since":null,"token":null,"until":null}"#.into(),
        first_seq: 1,
        last_seq: 1,
        count: 1,
        head: seedvault::audit::chain::ChainHead {
            seq: 1,
            hash: row.hash.as_slice().try_into().unwrap(),
        },
        digest: digest.finish(),
    };
    let trailer_sig = signer.sign(&trailer.canonical_bytes()).to_bytes();
    let mut good = Vec::new();
    seedvault::audit::export::write_jsonl(&row.as_ref(), &mut good);
    seedvault::audit::export::write_trailer(Format::Jsonl, &trailer, &trailer_sig, &mut good);
    let good = String::from_utf8(good).unwrap();
    let files = tempfile::tempdir().unwrap();
    let python = python_verifier(files.path());
    let hash = data_encoding::HEXLOWER.encode(&row.hash);
    for (name, text, ok) in [
        ("untouched", good.clone(), true),
        (
            "unknown key",
            good.replacen('{', r#"{"note":"","#, 1),
            false,
        ),
        (
            "upper-case hex",
            good.replacen(&hash, &hash.to_uppercase(), 1),
            false,
        ),
        (
            "duplicate key",
            good.replacen('{', r#"{"seq":1,"#, 1),
            false,
        ),
        ("not JSON", format!("{{oops\n{good}"), false),
        (
            "not UTF-8",
            good.replacen("cli:root", "cli:r\u{fffd}t", 1),
            false,
        ),
    ] {
        // The replacement character stands for a byte that is not UTF-8 at all.
        let bytes = text.replacen('\u{fffd}', "\u{1}", 1).into_bytes();
        let bytes: Vec<u8> = bytes
            .into_iter()
            .map(|b| if b == 1 { 0xff } else { b })
            .collect();
        let file = files.path().join("one.jsonl");
        std::fs::write(&file, bytes).unwrap();
        let cli = verify_file(&file, &key, vault_id, None);
        assert_eq!(
            cli.status.success(),
            ok,
            "{name}: {}{}",
            stdout(&cli),
            stderr(&cli)
        );
        if !ok {
            assert!(
                stdout(&cli).contains("BROKEN at line 1:"),
                "{name}: {}",
                stdout(&cli)
            );
        }
        if let Some(script) = &python {
            let py = verify_with_python(script, &file, &key, vault_id, None);
            assert_eq!(
                py.status.success(),
                ok,
                "python, {name}: {}{}",
                stdout(&py),
                stderr(&py)
            );
            if !ok {
                assert_eq!(
                    py.status.code(),
                    Some(1),
                    "python, {name}: no traceback: {}",
                    stderr(&py)
                );
                assert!(
                    stdout(&py).contains("BROKEN at line 1:"),
                    "python, {name}: {}",
                    stdout(&py)
                );
            }
        }
    }
}
