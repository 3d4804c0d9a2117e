//! `seedvault token add|assign`: capture and reassign from the command line. The secret is
//! read from a hidden prompt or standard input, never from argv.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::context::Unsealed;
use super::unlock::UnlockArgs;
use super::{cli_actor, Cli};
use crate::tokens::lifecycle::{self, CancelRequest, DeliveryRequest};
use crate::tokens::{self, CaptureRequest, TokenChange};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Escrow one seed; the secret is read from a prompt or standard input.
    Add(AddArgs),
    /// Confirm delivery with the code the user reads from the token; the seed is destroyed.
    Deliver {
        serial: String,
        /// The code on the token's display.
        #[arg(
            long,
            conflicts_with = "unverified",
            required_unless_present = "unverified"
        )]
        code: Option<String>,
        /// Confirm without a code (needs --reason).
        #[arg(long, requires = "reason")]
        unverified: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Cancel an escrowed token (lost in transit, wrong user); the seed is destroyed.
    Cancel {
        serial: String,
        #[arg(long, required = true)]
        reason: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Assign a token to its owner (a UPN such as user@example.org).
    Assign {
        serial: String,
        owner: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The serial printed on the token.
    #[arg(long)]
    serial: String,
    /// The user the token is for (UPN). Optional: without one the token is escrowed
    /// unassigned, and no code can be revealed until `token assign` names the owner.
    #[arg(long)]
    owner: Option<String>,
    /// How the secret is written: auto, base32, hex or otpauth.
    #[arg(long, default_value = "auto")]
    format: String,
    /// SHA1, SHA256 or SHA512 (default SHA1; an otpauth URI brings its own).
    #[arg(long)]
    algorithm: Option<String>,
    /// 6 or 8 (default 6).
    #[arg(long)]
    digits: Option<u32>,
    /// Seconds per step (default 30).
    #[arg(long)]
    period: Option<u32>,
    #[arg(long)]
    policy: Option<String>,
    #[arg(long)]
    display_name: Option<String>,
    #[arg(long)]
    manufacturer: Option<String>,
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    unlock: UnlockArgs,
}

/// Reads the secret: a hidden prompt on a terminal, otherwise all of standard input.
fn read_secret() -> anyhow::Result<Zeroizing<String>> {
    let secret = if std::io::stdin().is_terminal() {
        Zeroizing::new(
            rpassword::prompt_password("Secret (base32, hex or otpauth:// URI): ")
                .context("cannot read the secret")?,
        )
    } else {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the secret from standard input")?;
        text
    };
    Ok(Zeroizing::new(secret.trim().to_owned()))
}

pub async fn run(cli: &Cli, command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Add(args) => {
            let secret = read_secret()?;
            let vault = Unsealed::open(cli, &args.unlock).await?;
            let input = CaptureRequest {
                owner: args.owner.clone(),
                serial: args.serial.clone(),
                secret,
                format: Some(args.format.clone()),
                display_name: args.display_name.clone(),
                manufacturer: args.manufacturer.clone(),
                model: args.model.clone(),
                algorithm: args.algorithm.clone(),
                digits: args.digits,
                period: args.period,
                policy: args.policy.clone(),
            };
            let captured = tokens::capture(&vault.env(), &cli_actor(), input).await?;
            for warning in &captured.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "escrowed {} (the seed is sealed and will not be shown again)",
                captured.serial
            );
        }
        TokenCommand::Deliver {
            serial,
            code,
            unverified,
            reason,
            unlock,
        } => {
            let request = DeliveryRequest::new(
                code.clone().map(Zeroizing::new),
                *unverified,
                reason.as_deref(),
            )?;
            let vault = Unsealed::open(cli, unlock).await?;
            let purged = lifecycle::deliver(&vault.env(), &cli_actor(), serial, request).await?;
            match purged.drift_steps {
                Some(drift) => println!(
                    "delivered {} (code verified, drift {drift} steps); the seed is destroyed",
                    purged.serial
                ),
                None => println!(
                    "delivered {} (unverified); the seed is destroyed",
                    purged.serial
                ),
            }
        }
        TokenCommand::Cancel {
            serial,
            reason,
            unlock,
        } => {
            let request = CancelRequest::new(reason)?;
            let vault = Unsealed::open(cli, unlock).await?;
            let purged = lifecycle::cancel(&vault.env(), &cli_actor(), serial, request).await?;
            println!("cancelled {}; the seed is destroyed", purged.serial);
        }
        TokenCommand::Assign {
            serial,
            owner,
            unlock,
        } => {
            let vault = Unsealed::open(cli, unlock).await?;
            let change = TokenChange {
                owner: Some(owner.clone()),
                ..Default::default()
            };
            let token = tokens::update(&vault.env(), &cli_actor(), serial, change).await?;
            println!(
                "assigned {} to {}",
                token.serial,
                token.owner.unwrap_or_default()
            );
        }
    }
    Ok(())
}
