//! Backup, restore and rotation benchmark helper (BENCHMARKS.md, "Backup, restore and key
//! rotation"). Two modes, driven by `benches/backup.sh`:
//!
//! ```sh
//! cargo bench --bench backup -- seed DIR [--tokens 100000] [--events 1000000]
//! cargo bench --bench backup -- probe DIR SECONDS   # reveal-shaped writes; prints latencies
//! ```
//!
//! `seed` makes a development vault in DIR, imports the tokens through the release binary
//! (an Entra CSV) and appends the synthetic audit events with `audit::fixture::fill`. `probe`
//! runs, every 5 ms, what a reveal grant does to the database — read a token and its sealed
//! seed, open the seed, append an audit event, commit durably — and prints how many it ran and
//! their p50, p99 and longest latency: the stall a reveal sees while a backup, restore or
//! rotation runs beside it in another process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use seedvault::audit::{self, NewEvent};
use seedvault::store::Store;
use seedvault::vault::open::{self, SlotRequest};
use seedvault::vault::{SealedBlob, Unlocker};
use time::OffsetDateTime;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match args.first().map(String::as_str) {
        Some("seed") => {
            let dir = PathBuf::from(&args[1]);
            let flag = |name: &str, default: u64| {
                args.iter()
                    .position(|a| a == name)
                    .map_or(default, |i| args[i + 1].parse().unwrap())
            };
            runtime.block_on(seed(
                &dir,
                flag("--tokens", 100_000),
                flag("--events", 1_000_000),
            ));
        }
        Some("probe") => {
            let dir = PathBuf::from(&args[1]);
            let seconds: u64 = args[2].parse().unwrap();
            runtime.block_on(probe(&dir, Duration::from_secs(seconds)));
        }
        _ => panic!("usage: seed DIR [--tokens N] [--events N] | probe DIR SECONDS"),
    }
}

async fn seed(dir: &Path, tokens: u64, events: u64) {
    let data = dir.join("data");
    let store = Store::open(&data).await.unwrap();
    open::create(
        &store,
        OffsetDateTime::now_utc(),
        "bench",
        vec![("development".into(), SlotRequest::Development)],
    )
    .await
    .unwrap();
    store.close().await;
    let csv = dir.join("seeds.csv");
    let mut text = String::from("upn,serial number,secret key,time interval,manufacturer,model\n");
    for i in 0..tokens {
        let secret = data_encoding::BASE32_NOPAD.encode(&seedvault_bench_secret(i));
        text.push_str(&format!(
            "u{i}@example.org,BK-{i:07},{secret},30,Token2,C202\n"
        ));
    }
    std::fs::write(&csv, text).unwrap();
    let start = Instant::now();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_seedvault"))
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "import",
            csv.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "import: {tokens} tokens in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let store = Store::open(&data).await.unwrap();
    let vault = open::unlock(&store, &Unlocker::Development).await.unwrap();
    let start = Instant::now();
    audit::fixture::fill(
        store.path().unwrap(),
        &vault,
        events,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    store.scrub_freed_space().await.unwrap();
    println!(
        "fixture: {events} events in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    store.close().await;
}

/// A distinct 20-byte seed per token.
fn seedvault_bench_secret(i: u64) -> [u8; 20] {
    let mut seed = [0x5au8; 20];
    seed[..8].copy_from_slice(&i.to_be_bytes());
    seed
}

async fn probe(dir: &Path, duration: Duration) {
    let store = Store::open(&dir.join("data")).await.unwrap();
    let vault = open::unlock(&store, &Unlocker::Development).await.unwrap();
    let mut latencies = Vec::new();
    let deadline = Instant::now() + duration;
    let mut i = 0u64;
    while Instant::now() < deadline {
        let serial = format!("BK-{:07}", (i * 7919) % 100_000);
        i += 1;
        let start = Instant::now();
        let mut tx = store.begin_write().await.unwrap();
        let row = seedvault::store::tokens::by_serial(&mut tx, &serial)
            .await
            .unwrap()
            .unwrap();
        let sealed = seedvault::store::tokens::sealed_seed(&mut tx, row.id)
            .await
            .unwrap()
            .unwrap();
        let sealed = SealedBlob::from_stored(sealed);
        if vault
            .unseal_seed(&row.token_id, &row.serial, &sealed)
            .is_err()
        {
            // A rotation beside it: learn the new key as the server does, then open.
            seedvault::vault::rotate::follow(&store, &vault)
                .await
                .unwrap();
            vault
                .unseal_seed(&row.token_id, &row.serial, &sealed)
                .unwrap();
        }
        audit::append(
            &mut tx,
            &vault,
            OffsetDateTime::now_utc(),
            NewEvent::new("bench", "bench.probe", format!("token:{serial}")),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        latencies.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "probe: {} reveal-shaped writes, p50 {:.2} ms, p99 {:.2} ms, longest {:.1} ms",
        latencies.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    store.close().await;
}
