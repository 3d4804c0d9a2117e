//! `seedvault directory sync FILE.csv | --ldap [--dry-run]`: replace the directory of record
//! from an HR export or from `[directory.ldap]`, all entries or none. Works beside a running
//! server.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::context::Unsealed;
use super::unlock::UnlockArgs;
use super::{cli_actor, Cli};
use crate::clock::{Clock, SystemClock};
use crate::directory::{self, DirectoryError, SyncEnv, SyncReport};

#[derive(Debug, Subcommand)]
pub enum DirectoryCommand {
    /// Replace the directory from a CSV file or from LDAP; a dry run shows the diff and
    /// changes nothing.
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The CSV file (header: owner,display_name,phone,mobile,manager,manager_phone,department,mail).
    #[arg(required_unless_present = "ldap", conflicts_with = "ldap")]
    file: Option<PathBuf>,
    /// Read the directory from the configured [directory.ldap] server instead of a file.
    #[arg(long)]
    ldap: bool,
    /// Show what would be added, changed and removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    unlock: UnlockArgs,
}

pub async fn run(cli: &Cli, command: &DirectoryCommand) -> anyhow::Result<()> {
    let DirectoryCommand::Sync(args) = command;
    let vault = Unsealed::open(cli, &args.unlock).await?;
    let env = SyncEnv {
        store: &vault.store,
        vault: &vault.vault,
        now: SystemClock.now(),
    };
    let outcome = match &args.file {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path
                .file_name()
                .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
            directory::sync_csv(&env, &cli_actor(), &name, &bytes, args.dry_run).await
        }
        None => {
            let settings = vault
                .config
                .directory
                .as_ref()
                .ok_or(DirectoryError::LdapNotConfigured)?;
            directory::sync_ldap(&env, &cli_actor(), settings, args.dry_run).await
        }
    };
    let report = outcome?;
    print_report(&report);
    Ok(())
}

/// The diff, one line per owner, then the counts.
fn print_report(report: &SyncReport) {
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for e in &report.added {
        println!("+ {} {}", e.owner, e.phones.join(" "));
    }
    for c in &report.changed {
        println!(
            "~ {} {} → {}",
            c.after.owner,
            c.before.phones.join(" "),
            c.after.phones.join(" ")
        );
    }
    for e in &report.removed {
        println!("- {}", e.owner);
    }
    if report.dry_run {
        println!(
            "dry run: {} from {} ({} entries); nothing was changed",
            report.counts(),
            report.origin,
            report.total
        );
    } else {
        println!(
            "directory synced from {}: {} ({} {} entries)",
            report.origin,
            report.counts(),
            report.total,
            report.source
        );
    }
}
