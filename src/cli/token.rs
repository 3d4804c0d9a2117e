//! `seedvault token add|generate|programmed|verify|ship|deliver|cancel|assign`: capture (typed or from a QR
//! image), generation shown once, and the lifecycle from the command line. A typed secret is
//! read from a hidden prompt or standard input, never from argv.

use std::io::{IsTerminal, Read};

use anyhow::Context;
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::context::Unsealed;
use super::unlock::UnlockArgs;
use super::{cli_actor, Cli};
use crate::tokens::lifecycle::{self, CancelRequest, DeliveryRequest};
use crate::tokens::programming::{self, GenerateRequest, Show};
use crate::tokens::shipping::{self, ShipmentRequest};
use crate::tokens::{self, CaptureRequest, SecretInput, TokenChange};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Escrow one seed; the secret is read from a prompt or standard input, or from the QR
    /// code in a PNG or JPEG image (--qr).
    Add(AddArgs),
    /// Generate a 160-bit seed for a programmable token or an authenticator app: its QR code
    /// is drawn on the terminal and its text printed, once. The token is `programming` until
    /// `token programmed` confirms a code from the device (or `token cancel` abandons it).
    Generate {
        /// The serial of the token being programmed.
        #[arg(long)]
        serial: String,
        /// The user the token is for (UPN).
        #[arg(long)]
        owner: Option<String>,
        /// 6 or 8 (default 6).
        #[arg(long)]
        digits: Option<u32>,
        /// Seconds per step (default 30).
        #[arg(long)]
        period: Option<u32>,
        /// SHA1 (default), SHA256 or SHA512.
        #[arg(long)]
        algorithm: Option<String>,
        /// Shown by the authenticator app above the account.
        #[arg(long)]
        issuer: Option<String>,
        /// The account name in the authenticator app (default: the owner, else the serial).
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Confirm a generated token with a code from the programmed device: it becomes escrowed.
    Programmed {
        serial: String,
        /// The code the programmed device shows now.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
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
    /// Check the escrowed seed against the code the physical token shows, before shipping it:
    /// the drift found is recorded and applied to later reveals; the token stays escrowed.
    Verify {
        serial: String,
        /// The code the token shows now.
        #[arg(long)]
        code: String,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// Record that a token (or, with --csv, every serial in a CSV file's first column) left for
    /// its owner. Bad rows of a file are reported by line; the others are shipped.
    Ship {
        /// The token's serial (or give --csv).
        #[arg(required_unless_present = "csv", conflicts_with = "csv")]
        serial: Option<String>,
        /// A CSV file of serials, one per line (a `serial` header is skipped).
        #[arg(long, value_name = "FILE")]
        csv: Option<std::path::PathBuf>,
        /// Who carries the parcel.
        #[arg(long)]
        carrier: Option<String>,
        /// The carrier's tracking reference.
        #[arg(long)]
        tracking: Option<String>,
        /// The expected delivery date, YYYY-MM-DD (today or later).
        #[arg(long, value_name = "DATE")]
        expected: Option<String>,
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
    /// Read the secret from the otpauth://totp/ QR code in this PNG or JPEG image (e.g. a
    /// screenshot of the MFA setup page) instead of a prompt.
    #[arg(long, value_name = "FILE")]
    qr: Option<std::path::PathBuf>,
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

/// Reads a QR image, refusing a file over the decoder's byte limit before reading it.
fn read_image(path: &std::path::Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > crate::qr::MAX_IMAGE_BYTES as u64 {
        return Err(crate::qr::QrError::TooManyBytes {
            bytes: usize::try_from(size).unwrap_or(usize::MAX),
            limit: crate::qr::MAX_IMAGE_BYTES,
        }
        .into());
    }
    Ok(Zeroizing::new(std::fs::read(path).with_context(|| {
        format!("cannot read {}", path.display())
    })?))
}

pub async fn run(cli: &Cli, command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Add(args) => {
            let source = match &args.qr {
                Some(path) => SecretInput::new(None, Some(read_image(path)?))?,
                None => SecretInput::new(Some(read_secret()?), None)?,
            };
            let (secret, qr_format) = source.read().await?;
            if qr_format.is_some() {
                let found = tokens::preview_otpauth(&secret)?;
                eprintln!(
                    "QR code: issuer {}, account {}, {} digits every {} s, {}, {}-bit seed",
                    found.issuer.as_deref().unwrap_or("(none)"),
                    found.account.as_deref().unwrap_or("(none)"),
                    found.digits,
                    found.period,
                    found.algorithm.as_str(),
                    found.seed_bits
                );
            }
            let vault = Unsealed::open(cli, &args.unlock).await?;
            let input = CaptureRequest {
                owner: args.owner.clone(),
                serial: args.serial.clone(),
                secret,
                format: qr_format.or_else(|| Some(args.format.clone())),
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
        TokenCommand::Generate {
            serial,
            owner,
            digits,
            period,
            algorithm,
            issuer,
            label,
            unlock,
        } => {
            let vault = Unsealed::open(cli, unlock).await?;
            let request = GenerateRequest {
                owner: owner.clone(),
                serial: serial.clone(),
                digits: *digits,
                period: *period,
                algorithm: algorithm.clone(),
                issuer: issuer.clone(),
                label: label.clone(),
            };
            let shown = programming::generate(&vault.env(), &cli_actor(), request, Show::Now)
                .await?
                .context("the generated seed was not returned")?;
            let drawing = crate::qr::terminal(&shown.uri)
                .map_err(|e| anyhow::anyhow!("cannot draw the QR code: {e}"))?;
            println!("{}", *drawing);
            println!(
                "Scan this QR code with the burner app or authenticator, or type the secret:\n\n  {}\n\n\
                 {} digits every {} s, {}. This is shown once: seedvault will never show it again.\n\
                 Token {} is programming; confirm it with `seedvault token programmed {} --code CODE`.",
                *shown.base32,
                shown.digits,
                shown.period,
                shown.algorithm.as_str(),
                shown.serial,
                shown.serial
            );
        }
        TokenCommand::Programmed {
            serial,
            code,
            unlock,
        } => {
            let vault = Unsealed::open(cli, unlock).await?;
            let done = programming::confirm(
                &vault.env(),
                &cli_actor(),
                serial,
                Zeroizing::new(code.clone()),
            )
            .await?;
            println!(
                "{} is escrowed (code verified, drift {} steps)",
                done.serial, done.drift_steps
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
        TokenCommand::Verify {
            serial,
            code,
            unlock,
        } => {
            let vault = Unsealed::open(cli, unlock).await?;
            let done = shipping::verify(
                &vault.env(),
                &cli_actor(),
                serial,
                Zeroizing::new(code.clone()),
            )
            .await?;
            println!(
                "verified {} against its device (drift {} steps, applied to later codes); it stays escrowed",
                done.serial, done.drift_steps
            );
        }
        TokenCommand::Ship {
            serial,
            csv,
            carrier,
            tracking,
            expected,
            unlock,
        } => {
            let today = crate::clock::Clock::now(&crate::clock::SystemClock).date();
            let request = ShipmentRequest::new(
                carrier.as_deref(),
                tracking.as_deref(),
                expected.as_deref(),
                today,
            )?;
            let rows = match csv {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Some(shipping::read_csv(&text)?)
                }
                None => None,
            };
            let vault = Unsealed::open(cli, unlock).await?;
            match (rows, serial) {
                (Some(rows), _) => {
                    let report =
                        shipping::ship_batch(&vault.env(), &cli_actor(), &rows, &request).await?;
                    for line in &report.succeeded {
                        println!("line {}: {} shipped", line.line, line.serial);
                    }
                    for line in &report.failed {
                        eprintln!("line {}: {}: {}", line.line, line.serial, line.message);
                    }
                    println!(
                        "{} shipped, {} refused",
                        report.succeeded.len(),
                        report.failed.len()
                    );
                    if !report.failed.is_empty() {
                        anyhow::bail!(
                            "{} lines were not shipped (listed above); the others were",
                            report.failed.len()
                        );
                    }
                }
                (None, Some(serial)) => {
                    let shipped =
                        shipping::ship(&vault.env(), &cli_actor(), serial, &request).await?;
                    println!(
                        "shipped {}{}{}{}",
                        shipped.serial,
                        shipped
                            .carrier
                            .map(|c| format!(" with {c}"))
                            .unwrap_or_default(),
                        shipped
                            .tracking
                            .map(|t| format!(", tracking {t}"))
                            .unwrap_or_default(),
                        shipped
                            .expected
                            .map(|e| format!(", expected {e}"))
                            .unwrap_or_default(),
                    );
                }
                (None, None) => anyhow::bail!("give a serial or --csv FILE"),
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
            println!("{} {}; the seed is destroyed", purged.reason, purged.serial);
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
