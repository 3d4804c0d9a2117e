//! `seedvault audit verify|head|export|public-key`. Verify, head and public-key need no vault
//! key (they read the stored public key) and work beside a running server; export unseals the
//! vault because the export is itself recorded in the signed trail.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::unlock::{unlock_vault, UnlockArgs};
use super::{cli_actor, Cli};
use crate::audit::export::{self, ExportFilter, Format};
use crate::audit::verify::{self, AnchoredHead, VerifyOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Overrides};
use crate::store::{meta, Store, DATABASE_FILE};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the live chain, or an export with --file; exits non-zero naming the first
    /// broken event.
    Verify(VerifyArgs),
    /// Print the newest event as SEQ:HASH, to anchor outside the vault (a ticket, a log).
    Head,
    /// Export events as JSON Lines or CSV (the export itself is recorded in the trail).
    Export(ExportArgs),
    /// Print the hex Ed25519 key that verifies the trail's signatures.
    PublicKey,
    /// Start a new Ed25519 audit signing key: a hand-over event signed by the old key (with
    /// the new key's proof) links them; verification follows it.
    RotateSigningKey {
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Check every event's signature (default: the newest one, which vouches for the rest).
    #[arg(long)]
    all_signatures: bool,
    /// Also fail unless this anchored head (from `audit head`, or an earlier export's
    /// trailer) is still in the chain; with --file, unless the export reaches it.
    #[arg(long, value_name = "SEQ:HASH")]
    expect_head: Option<String>,
    /// Verify an export (JSON Lines or CSV, with its signed trailer) instead of the live
    /// chain. Records with unknown keys or upper-case hex are refused.
    #[arg(long, value_name = "EXPORT")]
    file: Option<PathBuf>,
    /// With --file: the hex verification key (default: this data directory's vault).
    #[arg(long, value_name = "HEX", requires = "file")]
    public_key: Option<String>,
    /// With --file: the vault the export must come from (default: this data directory's
    /// vault; otherwise the vault its trailer names).
    #[arg(long, value_name = "ID", requires = "file")]
    vault_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// jsonl or csv.
    #[arg(long, default_value = "jsonl")]
    format: String,
    /// Only events at or after this time (RFC 3339, or a date meaning midnight UTC).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only events before this time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only events by this actor (e.g. operator:alice, cli:root, system).
    #[arg(long, value_name = "ACTOR")]
    actor: Option<String>,
    /// Only events about this token serial.
    #[arg(long, value_name = "SERIAL")]
    token: Option<String>,
    /// Only events with this action (e.g. reveal.granted).
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Only events with this outcome: success, denied or failure.
    #[arg(long, value_name = "OUTCOME")]
    outcome: Option<String>,
    /// Write to FILE instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    unlock: UnlockArgs,
}

pub async fn run(cli: &Cli, command: &AuditCommand) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    match command {
        AuditCommand::Verify(args) if args.file.is_some() => verify_file(&config, args).await,
        AuditCommand::Verify(args) => verify_live(&config, args).await,
        AuditCommand::Head => {
            let store = open_existing(&config).await?;
            let source = store.audit_source()?;
            let head = tokio::task::spawn_blocking(move || source.reader()?.head()).await??;
            let Some((seq, hash)) = head else {
                bail!("the audit trail is empty");
            };
            println!("{seq}:{}", data_encoding::HEXLOWER.encode(&hash));
            Ok(())
        }
        AuditCommand::PublicKey => {
            let store = open_existing(&config).await?;
            let meta = vault_meta(&store).await?;
            println!("{}", data_encoding::HEXLOWER.encode(&meta.audit_public_key));
            Ok(())
        }
        AuditCommand::Export(args) => export(&config, args).await,
        AuditCommand::RotateSigningKey { unlock } => {
            let store = open_existing(&config).await?;
            let vault = unlock_vault(&store, unlock).await?;
            let rotated = crate::audit::handover::rotate_signing_key(
                &store,
                &vault,
                SystemClock.now(),
                &cli_actor(),
            )
            .await?;
            let hex =
                |k: &ed25519_dalek::VerifyingKey| data_encoding::HEXLOWER.encode(k.as_bytes());
            println!(
                "hand-over at seq {}: previous key {}, new key {}",
                rotated.seq,
                hex(&rotated.previous),
                hex(&rotated.next)
            );
            println!("publish the new key (`seedvault audit public-key`) where you anchor heads");
            Ok(())
        }
    }
}

/// Opens the store only when a database exists (so verifying an export elsewhere does not
/// create an empty data directory).
async fn open_existing(config: &Config) -> anyhow::Result<Store> {
    let data_dir = &config.data_dir;
    if !config.database_url.is_postgres() && !data_dir.join(DATABASE_FILE).exists() {
        bail!(
            "no vault in {} — pass --data-dir (or SEEDVAULT_DATA_DIR) for the vault's data directory",
            data_dir.display()
        );
    }
    super::open_store(config).await
}

async fn vault_meta(store: &Store) -> anyhow::Result<meta::VaultMetaRow> {
    meta::get(store).await?.context(
        "this data directory has no vault yet — run `seedvault init` or point --data-dir at the vault",
    )
}

async fn verify_live(config: &Config, args: &VerifyArgs) -> anyhow::Result<()> {
    let store = open_existing(config).await?;
    let meta = vault_meta(&store).await?;
    let key = verify::parse_public_key(&data_encoding::HEXLOWER.encode(&meta.audit_public_key))?;
    let options = VerifyOptions {
        all_signatures: args.all_signatures,
        expect_head: args
            .expect_head
            .as_deref()
            .map(str::parse::<AnchoredHead>)
            .transpose()?,
        threads: 0,
    };
    let source = store.audit_source()?;
    let result = tokio::task::spawn_blocking(move || {
        verify::verify_live(&source, &meta.vault_id, &key, &options)
    })
    .await??;
    match (&result.broken, &result.head) {
        (None, Some(head)) => {
            println!("ok: {} events verified; head {head}", result.events);
            Ok(())
        }
        (None, None) => {
            println!("ok: the audit trail is empty");
            Ok(())
        }
        (Some(broken), _) => {
            println!(
                "BROKEN at seq {}: {} ({} events before it verified)",
                broken.seq, broken.reason, result.events
            );
            bail!("{broken}")
        }
    }
}

async fn verify_file(config: &Config, args: &VerifyArgs) -> anyhow::Result<()> {
    let data_dir = &config.data_dir;
    let Some(file) = &args.file else {
        bail!("--file is missing");
    };
    let local = if config.database_url.is_postgres() || data_dir.join(DATABASE_FILE).exists() {
        Some(vault_meta(&open_existing(config).await?).await?)
    } else {
        None
    };
    let key = match (&args.public_key, &local) {
        (Some(hex), _) => verify::parse_public_key(hex)?,
        (None, Some(meta)) => {
            verify::parse_public_key(&data_encoding::HEXLOWER.encode(&meta.audit_public_key))?
        }
        (None, None) => bail!(
            "no verification key — pass --public-key HEX (printed by `seedvault audit public-key` on the vault's host)"
        ),
    };
    let vault_id = args
        .vault_id
        .clone()
        .or_else(|| local.as_ref().map(|m| m.vault_id.clone()));
    let input = std::fs::File::open(file)
        .with_context(|| format!("cannot open {} — check the path", file.display()))?;
    // Checking every signature of a large export takes a while: show how far it got.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(input.metadata().map_or(0, |m| m.len()));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} verifying [{bar:30}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    });
    let reader: Box<dyn std::io::Read + Send> = match &bar {
        Some(bar) => Box::new(bar.wrap_read(input)),
        None => Box::new(input),
    };
    let options = verify::ExportOptions {
        vault_id,
        expect_head: args
            .expect_head
            .as_deref()
            .map(str::parse::<AnchoredHead>)
            .transpose()?,
    };
    let scan_path = file.clone();
    let keys = tokio::task::spawn_blocking(move || {
        let input = std::fs::File::open(&scan_path)?;
        verify::export_schedule(std::io::BufReader::new(input), &key)
    })
    .await??;
    let keys = match keys {
        Ok(keys) => keys,
        Err(broken) => {
            println!("BROKEN at {broken} (0 events before it verified)");
            bail!("the export does not verify: {broken}");
        }
    };
    let result = tokio::task::spawn_blocking(move || {
        verify::verify_export(std::io::BufReader::new(reader), &keys, &options)
    })
    .await??;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let trailer = match (&result.broken, &result.trailer) {
        (None, Some(trailer)) => trailer,
        (broken, _) => {
            let broken = broken
                .clone()
                .map_or_else(|| "no verdict".to_owned(), |b| b.to_string());
            println!(
                "BROKEN at {broken} ({} events before it verified)",
                result.events
            );
            bail!("the export does not verify: {broken}");
        }
    };
    let scope = if result.complete {
        "complete export: every event from the genesis to the head at export time, each hash, link and signature verified".to_owned()
    } else {
        format!(
            "filtered export ({}): every hash and signature verified, and the signed trailer's count and digest show nothing it selected was removed",
            trailer.filter
        )
    };
    println!(
        "ok: {} events; {scope}; head at export {}",
        result.events, trailer.head
    );
    Ok(())
}

async fn export(config: &Config, args: &ExportArgs) -> anyhow::Result<()> {
    let format: Format = args.format.parse()?;
    let filter = ExportFilter {
        since: args
            .since
            .as_deref()
            .map(|t| export::parse_time("--since", t))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| export::parse_time("--until", t))
            .transpose()?,
        actor: args.actor.clone(),
        token: args.token.clone(),
        action: args.action.clone(),
        outcome: args.outcome.clone(),
    };
    let store = open_existing(config).await?;
    let vault = unlock_vault(&store, &args.unlock).await?;
    let mut out: Box<dyn Write + Send> = match &args.output {
        // 0600: an export names operators, owners and tickets; it is not for every local user.
        Some(path) => Box::new(
            crate::store::private_file_options()
                .open(path)
                .with_context(|| {
                    format!(
                        "cannot create {} — check the directory exists and is writable",
                        path.display()
                    )
                })?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let plan = export::begin(
        &store,
        &vault,
        SystemClock.now(),
        &cli_actor(),
        format,
        &filter,
    )
    .await?;
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| progress_bar(plan.count));
    let source = store.audit_source()?;
    let job_plan = plan.clone();
    let job_bar = bar.clone();
    // Reading and encoding on one thread, writing on another: the two halves of the work
    // overlap on two cores. At most `IN_FLIGHT` chunks (64 KiB each) wait in between.
    const IN_FLIGHT: usize = 4;
    let (chunks, pending) = std::sync::mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        for chunk in pending {
            out.write_all(&chunk)?;
        }
        out.flush()
    });
    let written = tokio::task::spawn_blocking(move || {
        export::write(
            &source,
            &job_plan,
            &vault,
            |chunk| {
                chunks.send(chunk).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the writer stopped")
                })
            },
            |n| {
                if let Some(bar) = &job_bar {
                    bar.set_position(n);
                }
            },
        )
    })
    .await?;
    let wrote = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the export writer thread panicked"))?;
    // A write error explains a broken pipe on the reading side, so report it first.
    wrote.context("cannot write the export")?;
    let written = written?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    eprintln!(
        "exported {written} events (seq 1..={}, head {}, {}){}; recorded as audit event {}",
        plan.through,
        plan.head,
        format.as_str(),
        args.output
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default(),
        plan.recorded_as
    );
    Ok(())
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} exporting [{bar:30}] {pos}/{len} events ({per_sec}, {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
