//! `seedvault key list|add|remove`: manage the slots that unseal the vault. Never prints key
//! material; adding or removing a slot needs an existing key and is audited.

use std::io::Write;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret;
use anyhow::Context;
use clap::{Args, Subcommand};

use super::unlock::{prompt_passphrase, read_passphrase_file, unlock_vault, UnlockArgs};
use super::{cli_actor, Cli};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::store::Store;
use crate::vault::open::{self, SlotRequest};
use crate::vault::SlotKind;

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key slots (kind, label, recipient, created).
    List,
    /// Add a key slot.
    Add(AddArgs),
    /// Remove a key slot by label (never the last one).
    Remove {
        label: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Make a new data key: re-seal every seed under it in batches (reveals go on), re-wrap
    /// every slot, forget the old key. Run it again to finish one that was interrupted.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// Seeds re-sealed per transaction.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// The passphrase of the passphrase slots, to re-wrap them (default: the unlocking
    /// passphrase, if one was used). Without it they are removed and listed, to be added again
    /// with `seedvault key add passphrase`.
    #[arg(long, value_name = "FILE")]
    slot_passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    unlock: UnlockArgs,
}

/// Test hook: `seedvault key rotate` aborts the process (as a crash or `kill -9` would) after
/// this many committed batches. Only the tests set it.
const ABORT_AFTER_BATCHES_ENV: &str = "SEEDVAULT_TEST_ROTATION_ABORT_AFTER_BATCHES";

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(subcommand)]
    kind: AddKind,
    /// Label of the new slot (default: its kind).
    #[arg(long, global = true)]
    label: Option<String>,
    #[command(flatten)]
    unlock: UnlockArgs,
}

#[derive(Debug, Subcommand)]
enum AddKind {
    /// A passphrase slot (prompted twice on a terminal, or read from --new-passphrase-file).
    Passphrase {
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// A slot for an age recipient (age1…), e.g. a break-glass key kept offline.
    Recipient { recipient: String },
    /// Generate an age identity into FILE (mode 0600) and add a slot for it.
    Identity {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub async fn run(cli: &Cli, command: &KeyCommand) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = super::open_store(&config).await?;
    match command {
        KeyCommand::List => {
            let slots = open::list_slots(&store).await?;
            if slots.is_empty() {
                println!("no vault in {}", config.data_dir.display());
            }
            for slot in slots {
                println!(
                    "{:<20} {:<12} created {}  {}",
                    slot.label,
                    slot.kind,
                    crate::cli::status::format_unix(slot.created_at),
                    slot.recipient.unwrap_or_default()
                );
            }
        }
        KeyCommand::Add(args) => {
            let vault = unlock_vault(&store, &args.unlock).await?;
            let (kind, request) = match &args.kind {
                AddKind::Passphrase {
                    new_passphrase_file,
                } => {
                    let passphrase = match new_passphrase_file {
                        Some(path) => read_passphrase_file(path)?,
                        None => {
                            let first = prompt_passphrase("New passphrase: ")?;
                            let again = prompt_passphrase("Repeat the new passphrase: ")?;
                            if first.expose_secret() != again.expose_secret() {
                                anyhow::bail!("the two passphrases differ — nothing was changed");
                            }
                            first
                        }
                    };
                    (
                        SlotKind::Passphrase,
                        SlotRequest::Passphrase {
                            passphrase,
                            work_factor: None,
                        },
                    )
                }
                AddKind::Recipient { recipient } => (
                    SlotKind::Recipient,
                    SlotRequest::Recipient {
                        recipient: recipient.clone(),
                        kind: SlotKind::Recipient,
                    },
                ),
                AddKind::Identity { out } => {
                    let recipient = write_new_identity(out)?;
                    (
                        SlotKind::Identity,
                        SlotRequest::Recipient {
                            recipient,
                            kind: SlotKind::Identity,
                        },
                    )
                }
            };
            let label = match &args.label {
                Some(label) => label.clone(),
                None => free_label(&store, kind.as_str()).await?,
            };
            open::add_slot(
                &store,
                &vault,
                SystemClock.now(),
                &cli_actor(),
                &label,
                request,
            )
            .await?;
            println!("added {} slot '{label}'", kind.as_str());
        }
        KeyCommand::Rotate(args) => rotate(&store, args).await?,
        KeyCommand::Remove { label, unlock } => {
            let vault = unlock_vault(&store, unlock).await?;
            open::remove_slot(&store, &vault, SystemClock.now(), &cli_actor(), label).await?;
            // Push the freed pages out of the WAL so the removed slot's bytes do not linger.
            store.scrub_freed_space().await?;
            println!("removed slot '{label}'");
        }
    }
    Ok(())
}

async fn rotate(store: &Store, args: &RotateArgs) -> anyhow::Result<()> {
    let vault = unlock_vault(store, &args.unlock).await?;
    let passphrase = match (&args.slot_passphrase_file, args.unlock.supplied()?) {
        (Some(path), _) => Some(read_passphrase_file(path)?),
        (None, Some(crate::vault::Unlocker::Passphrase(p))) => Some(p),
        _ => None,
    };
    let abort_after: Option<usize> = std::env::var(ABORT_AFTER_BATCHES_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let after_batch = move |batches: usize| {
        if abort_after == Some(batches) {
            std::process::abort();
        }
    };
    let rotated = crate::vault::rotate::rotate(
        store,
        &vault,
        SystemClock.now(),
        &cli_actor(),
        crate::vault::rotate::RotateOptions {
            batch: args.batch,
            settle: std::time::Duration::from_secs(2),
            passphrase: passphrase.as_ref(),
            after_batch: &after_batch,
        },
    )
    .await?;
    println!(
        "{} data key generation {}: {} seeds re-sealed, slots re-wrapped: {}",
        if rotated.resumed {
            "finished the rotation to"
        } else {
            "rotated to"
        },
        rotated.generation,
        rotated.resealed,
        rotated.rewrapped.join(", ")
    );
    for label in &rotated.need_passphrase {
        println!(
            "passphrase slot '{label}' was removed (its passphrase was not given): add it again with `seedvault key add passphrase --label {label}`"
        );
    }
    Ok(())
}

async fn free_label(store: &Store, base: &str) -> anyhow::Result<String> {
    let taken: Vec<String> = open::list_slots(store)
        .await?
        .into_iter()
        .map(|s| s.label)
        .collect();
    Ok(std::iter::once(base.to_owned())
        .chain((2..).map(|n| format!("{base}-{n}")))
        .find(|label| !taken.contains(label))
        .unwrap_or_else(|| base.to_owned()))
}

/// Generates an age identity, writes it to `path` (refusing to overwrite, mode 0600) and
/// returns its public recipient.
pub fn write_new_identity(path: &Path) -> anyhow::Result<String> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let mut options = crate::store::private_file_options();
    options.create_new(true);
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create identity file {} (it must not exist yet)",
            path.display()
        )
    })?;
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    writeln!(
        file,
        "# seedvault key slot identity, created {created}\n# public key: {recipient}"
    )
    .and_then(|()| writeln!(file, "{}", identity.to_string().expose_secret()))
    .with_context(|| format!("cannot write identity file {}", path.display()))?;
    Ok(recipient)
}
