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

pub async fn run(cli: &Cli, args: &ImportArgs) -> anyhow::Result<()> {
    let psk_hex = psk_hex(args)?;
    let options = ImportOptions::from_text(
        Some(&args.format),
        Some(&args.secret_encoding),
        psk_hex.as_deref().map(String::as_str),
    )?;
    drop(psk_hex);
    let bytes = Zeroizing::new(
        std::fs::read(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?,
    );
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
        &progress,
    )
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for warning in &report.warnings {
        eprintln!("warning: {}", warning.to_line());
    }
    if !report.ok() {
        for error in &report.errors {
            eprintln!("{}", error.to_line());
        }
        anyhow::bail!(
            "{} bad row(s) in {} — nothing was imported; fix them and run the import again",
            report.errors.len(),
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
