//! `seedvault backup` and `seedvault restore`: a whole-vault age-encrypted backup, taken while
//! the server runs, and a restore that is checked before it is put in place.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::unlock::{unlock_vault, UnlockArgs};
use super::{cli_actor, Cli};
use crate::backup::{self, RestoreRequest, TempFile};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::store::Store;
use crate::vault::Unlocker;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the backup (must not exist yet).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Encrypt to this age recipient (repeatable; default: the vault's recipient and identity
    /// slots).
    #[arg(long, value_name = "AGE1…")]
    recipient: Vec<String>,
    #[command(flatten)]
    unlock: UnlockArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (from `seedvault backup`).
    file: PathBuf,
    /// Decrypt with this age identity file (one of the backup's recipients).
    #[arg(long, value_name = "FILE")]
    identity: PathBuf,
    /// Unseal the restored vault with the passphrase in FILE instead of the identity (only
    /// needed with --replay-purges, whose purges are audited).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// A later audit export (JSON Lines) of the original vault: purge again every token it
    /// shows delivered, cancelled, expired or purged after the backup.
    #[arg(long, value_name = "EXPORT.jsonl")]
    replay_purges: Option<PathBuf>,
}

pub async fn run_backup(cli: &Cli, args: &BackupArgs) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = Store::open_with(&config.data_dir, config.busy_timeout()).await?;
    let vault = unlock_vault(&store, &args.unlock).await?;
    let recipients = backup::recipients(&store, &args.recipient).await?;
    if args.out.exists() {
        anyhow::bail!(
            "{} already exists — choose a new file for --out (a backup never overwrites one)",
            args.out.display()
        );
    }
    let partial = PathBuf::from(format!("{}.partial", args.out.display()));
    let (temp, file) = TempFile::create(partial)?;
    let created = backup::create(
        &store,
        &vault,
        SystemClock.now(),
        &cli_actor(),
        recipients,
        file,
    )
    .await?;
    temp.persist(&args.out)?;
    println!(
        "backup {} written: {} bytes, vault {}, audit head {}",
        args.out.display(),
        created.bytes,
        created.manifest.vault_id,
        if created.manifest.audit_head.is_empty() {
            "(empty)"
        } else {
            &created.manifest.audit_head
        }
    );
    Ok(())
}

pub async fn run_restore(cli: &Cli, args: &RestoreArgs) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let identities = match Unlocker::from_identity_file(&args.identity)? {
        Unlocker::Identities(ids) => ids,
        _ => Vec::new(),
    };
    let mut unlockers = vec![Unlocker::from_identity_file(&args.identity)?];
    if let Some(path) = &args.passphrase_file {
        unlockers.push(Unlocker::Passphrase(super::unlock::read_passphrase_file(
            path,
        )?));
    }
    let restored = backup::restore(RestoreRequest {
        backup: &args.file,
        identities,
        unlockers,
        data_dir: &config.data_dir,
        replay_purges: args.replay_purges.as_deref(),
        now: SystemClock.now(),
        actor: &cli_actor(),
    })
    .await
    .with_context(|| format!("restore of {} refused", args.file.display()))?;
    println!(
        "OK: restored vault {} into {}: integrity ok, {} audit events verified, head {} as recorded",
        restored.manifest.vault_id,
        config.data_dir.display(),
        restored.events,
        restored.manifest.audit_head
    );
    if args.replay_purges.is_some() {
        println!("replayed purges: {} token(s)", restored.purged.len());
        for serial in &restored.purged {
            println!("  purged {serial}");
        }
    }
    Ok(())
}
