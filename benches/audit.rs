//! Audit trail benchmark (BENCHMARKS.md, "Audit trail"): fills a development vault with
//! 1,000,000 signed events through the bench fixture, then times `audit verify` (in-process
//! and through the release binary) and `audit export` (through the binary, under
//! `/usr/bin/time -v` for its peak RSS).
//!
//! ```sh
//! cargo bench --bench audit                               # 1,000,000 events, 5 runs each
//! cargo bench --bench audit -- --events 100000 --runs 3
//! cargo bench --bench audit -- --keep /tmp/audit-bench    # reuse the filled vault next time
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use seedvault::audit::verify::{self, VerifyOptions};
use seedvault::store::Store;
use seedvault::vault::open::{self, SlotRequest};
use time::OffsetDateTime;

struct Args {
    events: u64,
    runs: usize,
    keep: Option<PathBuf>,
    all_signatures: bool,
}

fn args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        runs: 5,
        keep: None,
        all_signatures: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--events" => args.events = it.next().unwrap().parse().unwrap(),
            "--runs" => args.runs = it.next().unwrap().parse().unwrap(),
            "--keep" => args.keep = Some(it.next().unwrap().into()),
            "--all-signatures" => args.all_signatures = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    format!(
        "{:.3} (min {min:.3}, max {max:.3})",
        median(values.to_vec())
    )
}

/// Runs the release binary under `/usr/bin/time -v`: wall seconds, peak RSS in MiB, CPU
/// seconds (user + system, all threads) and standard output.
fn timed_cli(data: &Path, args: &[&str]) -> (f64, f64, f64, String) {
    let start = Instant::now();
    // SEEDVAULT_BENCH_BIN: a copy of the binary, when the target directory is shared with
    // builds of other branches that may replace target/release/seedvault mid-run.
    let binary = std::env::var("SEEDVAULT_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_seedvault").into());
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("USER", "bench")
        .output()
        .expect("/usr/bin/time is installed (apt-get install time)");
    let wall = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    let rss_kib: f64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let seconds = |label: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let cpu = seconds("User time (seconds): ") + seconds("System time (seconds): ");
    (
        wall,
        rss_kib / 1024.0,
        cpu,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let data = args
        .keep
        .clone()
        .unwrap_or_else(|| scratch.path().join("data"));
    let (store, vault_id, key) = runtime.block_on(async {
        let store = Store::open(&data).await.unwrap();
        let vault = match open::existing_vault_id(&store).await.unwrap() {
            Some(_) => open::unlock(&store, &seedvault::vault::Unlocker::Development)
                .await
                .unwrap(),
            None => open::create(
                &store,
                OffsetDateTime::now_utc(),
                "bench",
                vec![("development".into(), SlotRequest::Development)],
            )
            .await
            .unwrap(),
        };
        let have = seedvault::store::audit::count(store.pool().unwrap()).await.unwrap() as u64;
        if have < args.events {
            let start = Instant::now();
            seedvault::audit::fixture::fill(
                store.path().unwrap(),
                &vault,
                args.events - have,
                OffsetDateTime::now_utc(),
            )
            .unwrap();
            println!(
                "fixture: {} events appended in {:.1} s (signed on both cores, 20,000 per transaction)",
                args.events - have,
                start.elapsed().as_secs_f64()
            );
        }
        store.scrub_freed_space().await.unwrap();
        (
            store.clone(),
            vault.id().to_owned(),
            vault.audit_public_key(),
        )
    });
    let db_size = std::fs::metadata(store.path().unwrap()).map_or(0, |m| m.len());
    println!(
        "trail: {} events, database {:.0} MiB, {} cores",
        runtime
            .block_on(seedvault::store::audit::count(store.pool().unwrap()))
            .unwrap(),
        db_size as f64 / (1024.0 * 1024.0),
        std::thread::available_parallelism().map_or(1, usize::from)
    );

    // Verify in-process (the library call `seedvault audit verify` makes).
    let mut library = Vec::new();
    let mut single = Vec::new();
    for _ in 0..args.runs {
        for (threads, into) in [(0, &mut library), (1, &mut single)] {
            let start = Instant::now();
            let result = verify::verify_live(
                &store.audit_source().unwrap(),
                &vault_id,
                &key,
                &VerifyOptions {
                    threads,
                    ..Default::default()
                },
            )
            .unwrap();
            into.push(start.elapsed().as_secs_f64());
            assert!(result.ok(), "{:?}", result.broken);
        }
    }
    println!("verify, library, both cores:   {} s", spread(&library));
    println!("verify, library, one thread:   {} s", spread(&single));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average now: {}", load.trim());

    // Verify and export through the release binary, as an operator runs them.
    let mut verify_wall = Vec::new();
    let mut verify_rss = Vec::new();
    let mut verify_cpu = Vec::new();
    for _ in 0..args.runs {
        let (wall, rss, cpu, out) = timed_cli(&data, &["audit", "verify"]);
        assert!(out.starts_with("ok:"), "{out}");
        verify_wall.push(wall);
        verify_rss.push(rss);
        verify_cpu.push(cpu);
    }
    println!(
        "verify, CLI (process start to exit): {} s, CPU {} s, peak RSS {:.1} MiB",
        spread(&verify_wall),
        spread(&verify_cpu),
        median(verify_rss)
    );
    for format in ["jsonl", "csv"] {
        let out = scratch.path().join(format!("export.{format}"));
        let mut walls = Vec::new();
        let mut rss = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..args.runs {
            let (wall, peak, cpu, _) = timed_cli(
                &data,
                &[
                    "audit",
                    "export",
                    "--format",
                    format,
                    "-o",
                    out.to_str().unwrap(),
                ],
            );
            walls.push(wall);
            rss.push(peak);
            cpus.push(cpu);
        }
        let size = std::fs::metadata(&out).map_or(0, |m| m.len());
        println!(
            "export {format}, CLI: {} s, CPU {} s, peak RSS {:.1} MiB (max {:.1}), file {:.0} MiB",
            spread(&walls),
            spread(&cpus),
            median(rss.clone()),
            rss.iter().copied().fold(0.0, f64::max),
            size as f64 / (1024.0 * 1024.0)
        );
        if format == "jsonl" {
            let filtered = scratch.path().join("filtered.jsonl");
            let (wall, peak, _, _) = timed_cli(
                &data,
                &[
                    "audit",
                    "export",
                    "--actor",
                    "operator:bob",
                    "--action",
                    "reveal.granted",
                    "-o",
                    filtered.to_str().unwrap(),
                ],
            );
            println!(
                "export jsonl filtered (actor+action), CLI: {wall:.3} s, peak RSS {peak:.1} MiB"
            );
            let start = Instant::now();
            let result = verify::verify_export(
                std::io::BufReader::new(std::fs::File::open(&filtered).unwrap()),
                &verify::KeySchedule::single(key),
                &verify::ExportOptions {
                    vault_id: Some(vault_id.clone()),
                    expect_head: None,
                },
            )
            .unwrap();
            assert!(result.ok(), "{:?}", result.broken);
            println!(
                "verify --file of that filtered export ({} records, every signature): {:.3} s",
                result.events,
                start.elapsed().as_secs_f64()
            );
        }
    }
    if args.all_signatures {
        let start = Instant::now();
        let result = verify::verify_live(
            &store.audit_source().unwrap(),
            &vault_id,
            &key,
            &VerifyOptions {
                all_signatures: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(result.ok());
        println!(
            "verify --all-signatures, library: {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
}
