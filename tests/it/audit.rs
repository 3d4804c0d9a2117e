//! The audit trail as an auditor and a tamperer meet it: verify (live and from an export),
//! tampering on a stopped vault caught at the exact seq, filtered and CSV exports, the API's
//! role gate, and the third-party Python verifier of docs/AUDIT.md.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{TestServer, T0};
use reqwest::StatusCode;
use seedvault::audit::chain::EventFields;
use seedvault::audit::export::ExportRecord;
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
    seedvault::audit::fixture::fill(
        srv.state.store.path(),
        &srv.state.vault,
        FIXTURE_EVENTS,
        start,
    )
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

fn records(jsonl: &str) -> Vec<ExportRecord> {
    jsonl
        .lines()
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
        stdout(&output).contains("verified from the genesis"),
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
    assert_eq!(
        table[0],
        [
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
            seq: f[0].parse().unwrap(),
            time: f[1].clone(),
            actor: f[2].clone(),
            action: f[3].clone(),
            target: f[4].clone(),
            outcome: f[5].clone(),
            details: f[6].clone(),
            prev_hash: f[7].clone(),
            hash: f[8].clone(),
            sig: f[9].clone(),
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

/// The Python verifier printed in docs/AUDIT.md, run against a real export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_verifier_in_the_docs_accepts_an_export_and_rejects_an_edit() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 is not installed; skipping");
        return;
    }
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/AUDIT.md"))
        .unwrap();
    let script = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/AUDIT.md has a ```python block");
    let srv = server_with_trail().await;
    let auditor = srv.operator("alma", "auditor").await;
    let (_, body, _) = api_export(&auditor, "").await;
    let key = data_encoding::HEXLOWER.encode(srv.state.vault.audit_public_key().as_bytes());
    let vault_id = srv.state.vault.id().to_owned();
    let files = tempfile::tempdir().unwrap();
    let script_path = write_temp(files.path(), "verify_export.py", script);
    let run = |file: &Path| {
        Command::new("python3")
            .arg(&script_path)
            .arg(file)
            .args(["--public-key", &key, "--vault-id", &vault_id])
            .output()
            .unwrap()
    };
    let good = write_temp(files.path(), "good.jsonl", &body);
    let output = run(&good);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("OK"), "{}", stdout(&output));

    let mut lines: Vec<&str> = body.lines().collect();
    let edited = lines[10].replace("operator:", "operator:x");
    lines[10] = &edited;
    let bad = write_temp(files.path(), "bad.jsonl", &(lines.join("\n") + "\n"));
    let output = run(&bad);
    assert!(!output.status.success());
    assert!(stdout(&output).contains("seq 11"), "{}", stdout(&output));
    srv.stop_and_check().await;
}
