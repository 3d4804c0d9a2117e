//! `seedvault migrate-to-postgres --from DATA_DIR --to URL`: copies a SQLite vault into an empty
//! PostgreSQL database and verifies it there before committing (see `transfer`). Progress goes
//! to stderr; no key slot is needed (sealed bytes are copied as they are).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use super::Cli;
use crate::config::Overrides;
use crate::store::engine::PostgresUrl;
use crate::store::postgres::CopyProgress;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Data directory of the SQLite vault to copy (stop `seedvault serve` on it first).
    #[arg(long, value_name = "DATA_DIR")]
    from: PathBuf,
    /// The empty PostgreSQL database: postgres://USER@HOST[:PORT]/DATABASE[?sslmode=verify-full].
    /// Keep the password out of it (it would show in the process list): use
    /// database_password_file, PGPASSWORD or PGPASSFILE.
    #[arg(long, value_name = "URL")]
    to: super::UrlArg,
}

pub async fn run(cli: &Cli, args: &MigrateArgs) -> anyhow::Result<()> {
    let url = PostgresUrl::parse(&args.to.0)
        .map_err(|e| anyhow::anyhow!("--to '{}': {}", e.shown, e.fix))?;
    let config = cli.config(Overrides::default())?;
    let started = Instant::now();
    let mut last_shown = Instant::now() - Duration::from_secs(1);
    let mut progress = |p: CopyProgress<'_>| {
        // One line per table start and end, a refreshed count at most once a second between.
        let edge = p.copied == 0 || p.copied == p.total;
        if edge || last_shown.elapsed() >= Duration::from_secs(1) {
            last_shown = Instant::now();
            eprintln!("copying {}: {}/{} rows", p.table, p.copied, p.total);
            let _ = std::io::stderr().flush();
        }
    };
    eprintln!("copying {} into {url}", args.from.display());
    let report = crate::transfer::migrate(
        &args.from,
        &url,
        config.database_password_file.as_deref(),
        &mut progress,
    )
    .await
    .context("migrate-to-postgres failed")?;
    let rows: u64 = report.tables.iter().map(|t| t.source_rows).sum();
    println!(
        "OK: vault {} copied to {url} in {:.1} s — {} tables, {rows} rows, row counts equal; audit chain verified on PostgreSQL ({} events, head {})",
        report.vault_id,
        started.elapsed().as_secs_f64(),
        report.tables.len(),
        report.events,
        report
            .head
            .as_ref()
            .map_or("empty".to_owned(), ToString::to_string)
    );
    println!(
        "To serve from it, set database_url to this URL (password in database_password_file) on every instance; {} is no longer read",
        args.from.display()
    );
    Ok(())
}
