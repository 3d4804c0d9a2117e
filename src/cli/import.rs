//! `seedvault import FILE`: escrow every seed of a vendor, Entra, privacyIDEA, PSKC or
//! otpauth file — all rows or none. Works beside a running server. The file is only read.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use zeroize::Zeroizing;

use super::context::Unsealed;
use super::unlock::UnlockArgs;
use super::{cli_actor, Cli};
use crate::import::{self, ImportOptions};
use crate::tokens::import::store;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The seed file.
    file: PathBuf,
    /// auto (detect), entra, vendor, privacyidea, pskc or otpauth.
    #[arg(long, default_value = "auto")]
    format: String,
    /// How secrets are written: auto, base32 or hex.
    #[arg(long, default_value = "auto")]
    secret_encoding: String,
    /// Policy for every imported token (default: the default policy).
    #[arg(long)]
    policy: Option<String>,
    /// PSKC pre-shared key as hex (prefer --psk-file: argv is visible to other users).
    #[arg(long, value_name = "HEX", conflicts_with = "psk_file")]
    psk_hex: Option<String>,
    /// File holding the PSKC pre-shared key as hex.
    #[arg(long, value_name = "FILE")]
    psk_file: Option<PathBuf>,
    /// File holding the password of a password-protected PSKC file (PBKDF2); without it,
    /// seedvault asks on a terminal.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Import the TOTP keys of a PSKC file that also holds HOTP, OCRA or vendor keys; the
    /// others are listed as not escrowed.
    #[arg(long)]
    skip_unsupported: bool,
    /// Validate and report; store nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    unlock: UnlockArgs,
}

/// The PSKC key's hex text, from `--psk-hex` or `--psk-file`.
fn psk_hex(args: &ImportArgs) -> anyhow::Result<Option<Zeroizing<String>>> {
    Ok(match (&args.psk_hex, &args.psk_file) {
        (Some(hex), _) => Some(Zeroizing::new(hex.clone())),
        (None, Some(path)) => Some(Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read PSK file {}", path.display()))?,
        )),
        (None, None) => None,
    })
}

/// The password from `--password-file` (its first line, as files end with a newline), or
/// typed on a terminal when the file needs one; `None` otherwise.
fn password(args: &ImportArgs, bytes: &[u8]) -> anyhow::Result<Option<Zeroizing<String>>> {
    if let Some(path) = &args.password_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read password file {}", path.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        return Ok(Some(Zeroizing::new(line.to_owned())));
    }
    if !import::needs_password(bytes) || !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let typed = rpassword::prompt_password(format!(
        "password for {} (the file's secrets are protected with one): ",
        args.file.display()
    ))
    .context("cannot read the password from the terminal")?;
    Ok(Some(Zeroizing::new(typed)))
}

pub async fn run(cli: &Cli, args: &ImportArgs) -> anyhow::Result<()> {
    let psk_hex = psk_hex(args)?;
    let mut options = ImportOptions::from_text(
        Some(&args.format),
        Some(&args.secret_encoding),
        psk_hex.as_deref().map(String::as_str),
    )?;
    drop(psk_hex);
    let bytes = Zeroizing::new(
        std::fs::read(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?,
    );
    options.password = password(args, &bytes)?;
    options.skip_unsupported = args.skip_unsupported;
    let vault = Unsealed::open(cli, &args.unlock).await?;
    let parsed = import::parse(&bytes, &options);
    drop(bytes);
    eprintln!(
        "{}: read as {}",
        args.file.display(),
        parsed.format.describe()
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(parsed.rows.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} tokens sealed and stored ({eta} left)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |done: usize, _total: usize| {
        if let Some(bar) = &bar {
            bar.set_position(done as u64);
        }
    };
    let name = args
        .file
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let report = store(
        &vault.env(),
        &cli_actor(),
        &name,
        parsed,
        args.policy.as_deref(),
        args.dry_run,
        // A server may be running on the same data directory: leave its writes room.
        crate::tokens::import::PAUSE_BESIDE_A_SERVER,
        &progress,
    )
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for warning in &report.warnings {
        eprintln!("warning: {}", warning.to_line());
    }
    if report.warnings_omitted > 0 {
        eprintln!("… and {} more warning(s)", report.warnings_omitted);
    }
    if report.skipped > 0 {
        eprintln!(
            "{} key(s) that are not TOTP were skipped (--skip-unsupported) and not escrowed",
            report.skipped
        );
    }
    if !report.ok() {
        for error in &report.errors {
            eprintln!("{}", error.to_line());
        }
        if report.errors_omitted > 0 {
            eprintln!("… and {} more error(s), not listed", report.errors_omitted);
        }
        anyhow::bail!(
            "{} problem(s) in {} — nothing was imported; fix them and run the import again",
            report.errors.len() + report.errors_omitted,
            args.file.display()
        );
    }
    if args.dry_run {
        println!(
            "dry run: {} token(s) would be imported from {} ({}); nothing was stored",
            report.rows,
            args.file.display(),
            report.format.as_str()
        );
    } else {
        println!(
            "imported {} token(s) from {} ({}); their seeds are sealed",
            report.imported,
            args.file.display(),
            report.format.as_str()
        );
    }
    Ok(())
}
