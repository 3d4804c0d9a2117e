//! Screens at volume (issue #26): what the token list and the audit page cost at 100,000 and
//! 1,000,000 tokens and 10,000,000 audit events. A plain bench binary (no criterion).
//!
//! ```text
//! cargo bench --bench screens                          # 100,000 and 1,000,000 tokens, 10,000,000 events
//! cargo bench --bench screens -- --tokens 100000 --events 1000000
//! ```
//!
//! Rows are written straight into a fresh vault's tables (the real schema, migrations and
//! indexes; seeds are random bytes and events carry random hashes, which neither page reads),
//! then each query of the two pages runs through the store exactly as the handlers call it,
//! 21 times; the median and the slowest are printed. Method and figures: BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rand::RngCore;
use seedvault::store::audit::{AuditCursor, AuditFilter};
use seedvault::store::token_pages::{self, Cursor, PageRequest, TokenSort};
use seedvault::store::Store;

const RUNS: usize = 21;

fn median(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

async fn time<F, Fut>(label: &str, mut run: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let mut samples = Vec::with_capacity(RUNS);
    let mut rows = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        rows = run().await;
        samples.push(started.elapsed());
    }
    let (median, worst) = median(samples);
    println!(
        "  {label:<48} median {:>8.2} ms   max {:>8.2} ms   ({rows} rows)",
        median.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
}

fn fill_tokens(path: &std::path::Path, count: usize) {
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
            // One token in ten already delivered and purged; imports of 10,000 share a time.
            let purged = i % 10 == 0;
            let captured = 1_780_000_000 + (i / 10_000) as i64 * 60;
            insert
                .execute(rusqlite::params![
                    format!("{i:032x}"),
                    format!("T2-{:08}", i * 7 % 100_000_000),
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

fn fill_events(path: &std::path::Path, count: usize) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    let actions = [
        "reveal.granted",
        "token.captured",
        "auth.sign_in",
        "token.delivered",
        "audit.exported",
    ];
    let mut done = 0;
    let mut filler = [0u8; 128];
    while done < count {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO audit_events (seq, time, actor, action, target, outcome, details, prev_hash, hash, sig) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .unwrap();
            for seq in done + 1..=(done + 1_000_000).min(count) {
                rand::thread_rng().fill_bytes(&mut filler);
                // One event a second from 2026-01-01; operator:rare acts once in 100,000.
                let at = time::OffsetDateTime::from_unix_timestamp(1_767_225_600 + seq as i64)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap();
                let actor = if seq % 100_000 == 0 {
                    "operator:rare".to_owned()
                } else {
                    format!("operator:op{}", seq % 40)
                };
                insert
                    .execute(rusqlite::params![
                        seq as i64,
                        at,
                        actor,
                        actions[seq % actions.len()],
                        format!("token:T2-{:08}", seq % 1_000_000),
                        if seq % 1_000 == 0 {
                            "denied"
                        } else {
                            "success"
                        },
                        r#"{"checks":["callback","video-id"],"ticket":"INC-1","next_code":true}"#,
                        &filler[..32],
                        &filler[32..64],
                        &filler[64..128],
                    ])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        done = (done + 1_000_000).min(count);
        eprint!("\r  {done} events written");
    }
    eprintln!();
}

async fn token_list(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let started = Instant::now();
    fill_tokens(store.path().unwrap(), count);
    println!(
        "token list at {count} tokens (written in {:.1} s):",
        started.elapsed().as_secs_f64()
    );
    let page = |request: PageRequest| {
        let store = store.clone();
        async move {
            token_pages::page(&store, &request)
                .await
                .unwrap()
                .rows
                .len()
        }
    };
    let request = |query: Option<&str>, sort: TokenSort, cursor: Option<Cursor>| PageRequest {
        query: query.map(str::to_owned),
        sort,
        descending: sort == TokenSort::Captured,
        cursor,
        limit: 50,
        ..Default::default()
    };
    let middle = format!("T2-{:08}", (count / 2) * 7 % 100_000_000);
    time("first page, newest first", || {
        page(request(None, TokenSort::Captured, None))
    })
    .await;
    time("search: one owner (user12345)", || {
        page(request(Some("user12345"), TokenSort::Captured, None))
    })
    .await;
    time("search: broad prefix (u)", || {
        page(request(Some("u"), TokenSort::Captured, None))
    })
    .await;
    time("search: serial prefix (t2-0000)", || {
        page(request(Some("t2-0000"), TokenSort::Captured, None))
    })
    .await;
    time("search: no match (zzz)", || {
        page(request(Some("zzz"), TokenSort::Captured, None))
    })
    .await;
    time("sorted by owner, page after the middle token", || {
        page(request(
            None,
            TokenSort::Owner,
            Some(Cursor::After(middle.clone())),
        ))
    })
    .await;
    time("sorted by state, page after the middle token", || {
        page(request(
            None,
            TokenSort::State,
            Some(Cursor::After(middle.clone())),
        ))
    })
    .await;
    time("newest first, page before the middle token", || {
        page(request(
            None,
            TokenSort::Captured,
            Some(Cursor::Before(middle.clone())),
        ))
    })
    .await;
    time("counts per state and policy", || {
        let store = store.clone();
        async move { token_pages::counts(&store).await.unwrap().len() }
    })
    .await;
}

async fn audit_page(count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let started = Instant::now();
    fill_events(store.path().unwrap(), count);
    println!(
        "audit page at {count} events (written in {:.1} s):",
        started.elapsed().as_secs_f64()
    );
    let page = |filter: AuditFilter, cursor: Option<AuditCursor>| {
        let store = store.clone();
        async move {
            seedvault::store::audit::page(&store, &filter, cursor, 50)
                .await
                .unwrap()
                .rows
                .len()
        }
    };
    let middle = (count / 2) as i64;
    let at = |seq: i64| {
        time::OffsetDateTime::from_unix_timestamp(1_767_225_600 + seq)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    time("newest 50", || page(AuditFilter::default(), None)).await;
    time("older than the middle event", || {
        page(AuditFilter::default(), Some(AuditCursor::Older(middle)))
    })
    .await;
    time("one actor of 40 (operator:op7)", || {
        page(
            AuditFilter {
                actor: Some("operator:op7".into()),
                ..Default::default()
            },
            None,
        )
    })
    .await;
    time("a rare actor (1 event in 100,000)", || {
        page(
            AuditFilter {
                actor: Some("operator:rare".into()),
                ..Default::default()
            },
            None,
        )
    })
    .await;
    time("outcome denied (1 in 1,000)", || {
        page(
            AuditFilter {
                outcome: Some("denied".into()),
                ..Default::default()
            },
            None,
        )
    })
    .await;
    time("one token", || {
        page(
            AuditFilter {
                target: Some("token:T2-00012345".into()),
                ..Default::default()
            },
            None,
        )
    })
    .await;
    time("an hour in the middle of the trail", || {
        page(
            AuditFilter {
                since: Some(at(middle)),
                until: Some(at(middle + 3_600)),
                ..Default::default()
            },
            None,
        )
    })
    .await;
    time("an hour in the middle, action reveal.granted", || {
        page(
            AuditFilter {
                since: Some(at(middle)),
                until: Some(at(middle + 3_600)),
                action: Some("reveal.granted".into()),
                ..Default::default()
            },
            None,
        )
    })
    .await;
}

#[tokio::main]
async fn main() {
    let mut tokens = vec![100_000, 1_000_000];
    let mut events = 10_000_000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tokens" => tokens = vec![args.next().unwrap().parse().unwrap()],
            "--events" => events = args.next().unwrap().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}: use --tokens N, --events N"),
        }
    }
    for count in tokens {
        token_list(count).await;
    }
    audit_page(events).await;
}
