//! `seedvault init`: make a vault and its first key slots.

use std::path::PathBuf;

use clap::Args;

use super::unlock::read_passphrase_file;
use super::{cli_actor, Cli};
use crate::clock::{Clock, SystemClock};
use crate::config::Overrides;
use crate::vault::open::{self, SlotRequest};
use crate::vault::{SlotKind, VaultError};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Create no development slot; at least one protected slot is then required.
    #[arg(long)]
    production: bool,
    /// Add a passphrase slot with the passphrase in FILE ("-" reads standard input).
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    /// Add a slot for this age recipient (age1…); repeat for several, e.g. break-glass keys.
    #[arg(long, value_name = "AGE1…")]
    recipient: Vec<String>,
    /// Generate an age identity, write it to FILE (mode 0600) and add a slot for it.
    #[arg(long, value_name = "FILE")]
    identity_out: Option<PathBuf>,
}

pub async fn run(cli: &Cli, args: &InitArgs) -> anyhow::Result<()> {
    let config = cli.config(Overrides::default())?;
    let store = super::open_store(&config).await?;
    if let Some(id) = open::existing_vault_id(&store).await? {
        return Err(VaultError::AlreadyInitialised(id).into());
    }
    let mut requests = Vec::new();
    if let Some(path) = &args.passphrase_file {
        requests.push((
            "passphrase".to_owned(),
            SlotRequest::Passphrase {
                passphrase: read_passphrase_file(path)?,
                work_factor: None,
            },
        ));
    }
    for (i, recipient) in args.recipient.iter().enumerate() {
        let label = if i == 0 {
            "recipient".to_owned()
        } else {
            format!("recipient-{}", i + 1)
        };
        requests.push((
            label,
            SlotRequest::Recipient {
                recipient: recipient.clone(),
                kind: SlotKind::Recipient,
            },
        ));
    }
    if let Some(path) = &args.identity_out {
        let recipient = super::key::write_new_identity(path)?;
        requests.push((
            "identity".to_owned(),
            SlotRequest::Recipient {
                recipient,
                kind: SlotKind::Identity,
            },
        ));
    }
    if requests.is_empty() {
        if args.production {
            return Err(VaultError::ProductionNeedsSlot.into());
        }
        requests.push(("development".to_owned(), SlotRequest::Development));
    }
    let labels: Vec<String> = requests.iter().map(|(label, _)| label.clone()).collect();
    let vault = open::create(&store, SystemClock.now(), &cli_actor(), requests).await?;
    println!(
        "created vault {} in {}",
        vault.id(),
        config.data_dir.display()
    );
    println!("key slots: {}", labels.join(", "));
    if vault.has_development_slot() {
        eprintln!("{}", super::development_warning(&config.data_dir));
    }
    Ok(())
}
