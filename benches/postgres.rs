//! `seedvault migrate-to-postgres` at volume (issue #20): a 100,000-token vault with 1,000,000
//! audit events copied into an empty database on a throwaway PostgreSQL cluster and verified
//! there. A plain bench binary (no criterion).
//!
//! ```text
//! cargo bench --bench postgres                                  # 100,000 tokens, 1,000,000 events
//! cargo bench --bench postgres -- --tokens 10000 --events 100000 --runs 1
//! ```
//!
//! The vault is real (development slot, migrations, a signed and chained audit trail from
//! `audit::fixture`); tokens are written straight into `tokens` with random sealed bytes (the
//! copy never opens them). Each run copies into a fresh database through the library call the
//! command makes (`transfer::copy`, `verify`, `commit`), timing the copy (COPY of every table
//! in one transaction) and the verification (row counts, audit chain and head) apart. The
//! cluster is durable (`SEEDVAULT_PG_DURABLE`: fsync on, as a real server; see
//! `store::pg_cluster`). Figures: BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rand::RngCore;
use seedvault::store::pg_cluster;
use seedvault::store::Store;
use seedvault::vault::open::{self, SlotRequest};
use time::OffsetDateTime;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().unwrap())
}

fn fill_tokens(path: &std::path::Path, count: u64) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO tokens (token_id, serial, owner, display_name, algorithm, digits, period, policy, state, \
                 sealed_seed, captured_by, captured_at, retention_deadline, purged_at, purge_reason) \
                 VALUES (?1, ?2, ?3, ?4, 'SHA1', 6, 30, ?5, ?6, ?7, 'cli:bench', ?8, ?9, ?10, ?11)",
            )
            .unwrap();
        let mut seed = [0u8; 72];
        for i in 0..count {
            rand::thread_rng().fill_bytes(&mut seed);
            let purged = i % 10 == 0;
            let captured = 1_780_000_000 + (i / 10_000) as i64 * 60;
            insert
                .execute(rusqlite::params![
                    format!("{i:032x}"),
                    format!("PG-{i:08}"),
                    format!("user{i}@example.org"),
                    format!("User {i}"),
                    if i % 5 == 0 { "high-risk" } else { "standard" },
                    if purged { "purged" } else { "escrowed" },
                    if purged { None } else { Some(&seed[..]) },
                    captured,
                    captured + 60 * 86_400,
                    if purged { Some(captured + 3_600) } else { None },
                    if purged { Some("delivered") } else { None },
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn main() {
    let tokens = arg("--tokens", 100_000);
    let events = arg("--events", 1_000_000);
    let runs = arg("--runs", 3);
    std::env::set_var("SEEDVAULT_PG_DURABLE", "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    runtime.block_on(async {
        let started = Instant::now();
        let store = Store::open(&data).await.unwrap();
        let vault = open::create(
            &store,
            OffsetDateTime::now_utc(),
            "bench",
            vec![("development".into(), SlotRequest::Development)],
        )
        .await
        .unwrap();
        fill_tokens(store.path().unwrap(), tokens);
        seedvault::audit::fixture::fill(
            store.path().unwrap(),
            &vault,
            events.saturating_sub(1),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        store.scrub_freed_space().await.unwrap();
        store.close().await;
        let size = std::fs::metadata(data.join("seedvault.db")).map_or(0, |m| m.len());
        println!(
            "vault: {tokens} tokens, {events} audit events, {:.0} MiB, made in {:.1} s; {} cores",
            size as f64 / (1024.0 * 1024.0),
            started.elapsed().as_secs_f64(),
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        let cluster = pg_cluster::cluster().unwrap();
        for run in 1..=runs {
            let name = pg_cluster::fresh_database_name().await.unwrap();
            let url = seedvault::store::engine::PostgresUrl::parse(&cluster.url(&name)).unwrap();
            let pool = seedvault::store::postgres::connect(&url, None).await.unwrap();
            let started = Instant::now();
            let mut quiet = |_: seedvault::store::postgres::CopyProgress<'_>| {};
            let mut transfer = seedvault::transfer::copy(&data, &pool, &mut quiet)
                .await
                .unwrap();
            let copied = started.elapsed().as_secs_f64();
            let report = transfer.verify().await.unwrap();
            let verified = started.elapsed().as_secs_f64() - copied;
            transfer.commit().await.unwrap();
            let total = started.elapsed().as_secs_f64();
            let rows: u64 = report.tables.iter().map(|t| t.source_rows).sum();
            println!(
                "run {run}: copy {copied:.2} s, verify {verified:.2} s, total with commit {total:.2} s ({rows} rows, {} events, head {})",
                report.events,
                report.head.map_or("empty".into(), |h| h.to_string())
            );
            pool.close().await;
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("load average now: {}", load.trim());
    });
}
