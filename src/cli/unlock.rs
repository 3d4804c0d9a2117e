//! How the CLI gets a key to unseal the vault: `--identity FILE`, `--passphrase-file FILE`,
//! `SEEDVAULT_PASSPHRASE`, the development slot, or a prompt on a terminal — never argv.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use age::secrecy::SecretString;
use anyhow::Context;
use clap::Args;
use zeroize::Zeroizing;

use crate::store::Store;
use crate::vault::open::{self, list_slots};
use crate::vault::{SlotKind, Unlocker, Vault, VaultError};

/// Environment variable holding the vault passphrase (for service managers).
pub const PASSPHRASE_ENV: &str = "SEEDVAULT_PASSPHRASE";

/// The passphrase the binary took out of its environment at start ([`keep_env_passphrase`]).
static ENV_PASSPHRASE: OnceLock<Option<Zeroizing<String>>> = OnceLock::new();

/// Keeps the passphrase the binary read from [`PASSPHRASE_ENV`] before it removed the variable
/// from its environment (so that it is not in `/proc/PID/environ` for the life of the server).
/// Called once by `main`; later calls are ignored.
pub fn keep_env_passphrase(passphrase: Option<Zeroizing<String>>) {
    let _ = ENV_PASSPHRASE.set(passphrase.filter(|p| !p.is_empty()));
}

/// The passphrase from the environment: the one `main` kept, or (for library callers that did
/// not go through `main`) the variable itself.
fn env_passphrase() -> Option<Zeroizing<String>> {
    match ENV_PASSPHRASE.get() {
        Some(kept) => kept.clone(),
        None => std::env::var(PASSPHRASE_ENV)
            .ok()
            .map(Zeroizing::new)
            .filter(|p| !p.is_empty()),
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct UnlockArgs {
    /// Unseal with the passphrase in FILE ("-" reads standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "identity")]
    pub passphrase_file: Option<PathBuf>,
    /// Unseal with an age identity file (AGE-SECRET-KEY-1…).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl UnlockArgs {
    /// The key the operator supplied explicitly, if any.
    pub fn supplied(&self) -> anyhow::Result<Option<Unlocker>> {
        if let Some(path) = &self.identity {
            return Ok(Some(Unlocker::from_identity_file(path)?));
        }
        if let Some(path) = &self.passphrase_file {
            return Ok(Some(Unlocker::Passphrase(read_passphrase_file(path)?)));
        }
        if let Some(value) = env_passphrase() {
            return Ok(Some(Unlocker::Passphrase(SecretString::from(
                value.to_string(),
            ))));
        }
        Ok(None)
    }
}

/// Reads a passphrase from a file (or stdin for "-"), dropping one trailing line ending.
pub fn read_passphrase_file(path: &Path) -> anyhow::Result<SecretString> {
    let mut text = Zeroizing::new(String::new());
    if path == Path::new("-") {
        std::io::stdin()
            .read_line(&mut text)
            .context("cannot read the passphrase from standard input")?;
    } else {
        *text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read passphrase file {} — check the path and its permissions",
                path.display()
            )
        })?;
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    if trimmed.is_empty() {
        anyhow::bail!("the passphrase in {} is empty", path.display());
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// Asks for a passphrase on the terminal, or says how to supply one when there is none.
pub fn prompt_passphrase(prompt: &str) -> anyhow::Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        return Err(VaultError::NoKeySupplied.into());
    }
    let entered =
        Zeroizing::new(rpassword::prompt_password(prompt).context("cannot read the passphrase")?);
    Ok(SecretString::from(entered.to_string()))
}

/// Unseals the vault: an explicit key first, then the development slot, then a prompt.
pub async fn unlock_vault(store: &Store, args: &UnlockArgs) -> anyhow::Result<Vault> {
    if let Some(unlocker) = args.supplied()? {
        return Ok(open::unlock(store, &unlocker).await?);
    }
    let slots = list_slots(store).await?;
    if slots
        .iter()
        .any(|s| s.kind == SlotKind::Development.as_str())
    {
        return Ok(open::unlock(store, &Unlocker::Development).await?);
    }
    if slots
        .iter()
        .any(|s| s.kind == SlotKind::Passphrase.as_str())
    {
        let passphrase = prompt_passphrase("Vault passphrase: ")?;
        return Ok(open::unlock(store, &Unlocker::Passphrase(passphrase)).await?);
    }
    Err(VaultError::NoKeySupplied.into())
}
