//! How the CLI gets a key to unseal the vault: `--identity FILE`, `--passphrase-file FILE`,
//! `SEEDVAULT_PASSPHRASE`, a systemd credential, the development slot, or a prompt on a
//! terminal — never argv.

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

/// The systemd credential holding an age identity file (`LoadCredentialEncrypted=` in the
/// packaged unit), read from `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_IDENTITY: &str = "seedvault.identity";
/// The systemd credential holding the vault passphrase, read from `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_PASSPHRASE: &str = "seedvault.passphrase";

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
        credential_unlocker(std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from))
    }
}

/// The key systemd passed as a credential (`$CREDENTIALS_DIRECTORY`, set only for a unit with
/// `LoadCredential*=`): [`CREDENTIAL_IDENTITY`] if present, else [`CREDENTIAL_PASSPHRASE`].
/// The identity wins when both are there because it unwraps without scrypt's second of work.
pub fn credential_unlocker(directory: Option<PathBuf>) -> anyhow::Result<Option<Unlocker>> {
    let Some(directory) = directory.filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(None);
    };
    let identity = directory.join(CREDENTIAL_IDENTITY);
    if identity.is_file() {
        return Ok(Some(Unlocker::from_identity_file(&identity)?));
    }
    let passphrase = directory.join(CREDENTIAL_PASSPHRASE);
    if passphrase.is_file() {
        return Ok(Some(Unlocker::Passphrase(read_passphrase_file(
            &passphrase,
        )?)));
    }
    Ok(None)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn a_systemd_credential_unseals_identity_first_then_passphrase_and_nothing_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let unlocker = |d: &Path| credential_unlocker(Some(d.to_path_buf())).unwrap();
        assert!(credential_unlocker(None).unwrap().is_none());
        assert!(
            unlocker(dir.path()).is_none(),
            "an empty credentials directory"
        );

        std::fs::write(dir.path().join(CREDENTIAL_PASSPHRASE), "tr0ub4dor &3\n").unwrap();
        match unlocker(dir.path()) {
            Some(Unlocker::Passphrase(p)) => assert_eq!(p.expose_secret(), "tr0ub4dor &3"),
            _ => panic!("the passphrase credential should be used"),
        }

        let identity = age::x25519::Identity::generate();
        std::fs::write(
            dir.path().join(CREDENTIAL_IDENTITY),
            format!("{}\n", identity.to_string().expose_secret()),
        )
        .unwrap();
        assert!(matches!(
            unlocker(dir.path()),
            Some(Unlocker::Identities(ids)) if ids.len() == 1
        ));
    }
}
