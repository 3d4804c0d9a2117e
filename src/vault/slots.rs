//! Key slots: the data key wrapped with `age`, one slot per unlock method (like LUKS).
//!
//! - `passphrase`: age scrypt recipient; unlocked with `SEEDVAULT_PASSPHRASE`, a file or a prompt.
//! - `identity`: an X25519 identity file seedvault generated and wrote outside the vault.
//! - `recipient`: any X25519 age recipient supplied by the operator (break-glass key kept offline).
//! - `development`: unprotected: the identity sits next to the wrapped key. Only for trying
//!   seedvault out; `--production` refuses it.

use std::io::Read;
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};

use super::{DataKey, VaultError};

/// How a slot is unlocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Development,
    Passphrase,
    Identity,
    Recipient,
}

impl SlotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Passphrase => "passphrase",
            Self::Identity => "identity",
            Self::Recipient => "recipient",
        }
    }

    pub fn parse(stored: &str) -> Result<Self, VaultError> {
        match stored {
            "development" => Ok(Self::Development),
            "passphrase" => Ok(Self::Passphrase),
            "identity" => Ok(Self::Identity),
            "recipient" => Ok(Self::Recipient),
            other => Err(VaultError::CorruptSlot {
                reason: format!("unknown slot kind '{other}'"),
            }),
        }
    }
}

/// A slot ready to be stored: holds only wrapped key material (and, for a development slot,
/// its deliberately unprotected identity).
pub struct WrappedSlot {
    pub kind: SlotKind,
    /// The public recipient for identity/recipient slots, shown by `key list`.
    pub recipient: Option<String>,
    pub wrapped_key: Vec<u8>,
    pub development_identity: Option<String>,
}

/// Wraps the data key for a passphrase. `work_factor` overrides age's calibrated scrypt cost
/// (about one second); only tests should lower it.
pub fn wrap_for_passphrase(
    key: &DataKey,
    passphrase: SecretString,
    work_factor: Option<u8>,
) -> Result<WrappedSlot, VaultError> {
    if passphrase.expose_secret().trim().is_empty() {
        return Err(VaultError::EmptyPassphrase);
    }
    let mut recipient = age::scrypt::Recipient::new(passphrase);
    if let Some(log_n) = work_factor {
        recipient.set_work_factor(log_n);
    }
    let wrapped_key =
        age::encrypt(&recipient, key.expose()).map_err(|e| VaultError::Wrap(e.to_string()))?;
    Ok(WrappedSlot {
        kind: SlotKind::Passphrase,
        recipient: None,
        wrapped_key,
        development_identity: None,
    })
}

/// Wraps the data key for an `age1…` X25519 recipient.
pub fn wrap_for_recipient(
    key: &DataKey,
    recipient: &str,
    kind: SlotKind,
) -> Result<WrappedSlot, VaultError> {
    let (text, parsed) = parse_recipient(recipient)?;
    let wrapped_key = encrypt_to(parsed.as_ref(), key.expose())?;
    Ok(WrappedSlot {
        kind,
        recipient: Some(text),
        wrapped_key,
        development_identity: None,
    })
}

/// Parses an age recipient: X25519 (`age1…`) or an age plugin's (`age1<plugin>1…`, e.g.
/// age-plugin-yubikey), which needs the plugin's binary on `PATH`. Returns its text form and
/// the recipient.
pub fn parse_recipient(
    text: &str,
) -> Result<(String, Box<dyn age::Recipient + Send + Sync>), VaultError> {
    let text = text.trim();
    if let Ok(x25519) = age::x25519::Recipient::from_str(text) {
        return Ok((x25519.to_string(), Box::new(x25519)));
    }
    let plugin = age::plugin::Recipient::from_str(text).map_err(|_| VaultError::BadRecipient)?;
    let wrapper = age::plugin::RecipientPluginV1::new(
        plugin.plugin(),
        std::slice::from_ref(&plugin),
        &[],
        age::NoCallbacks,
    )
    .map_err(|e| VaultError::PluginMissing {
        plugin: plugin.plugin().to_owned(),
        reason: match e {
            age::plugin::ResolveError::MissingPlugin { binary_name } => {
                format!("{binary_name} is not on PATH")
            }
            // age's own messages span lines and carry bidi isolation marks: keep one line.
            other => other
                .to_string()
                .replace(['\u{2068}', '\u{2069}'], "")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        },
    })?;
    Ok((plugin.to_string(), Box::new(wrapper)))
}

/// `age::encrypt` for a recipient behind a trait object.
fn encrypt_to(recipient: &dyn age::Recipient, plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    use std::io::Write;
    let wrap = |e: &dyn std::fmt::Display| VaultError::Wrap(e.to_string());
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient)).map_err(|e| wrap(&e))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| wrap(&e))?;
    writer.write_all(plaintext).map_err(|e| wrap(&e))?;
    writer.finish().map_err(|e| wrap(&e))?;
    Ok(out)
}

/// Makes a new X25519 identity and a slot for it. The caller writes the identity file; the
/// vault keeps only the recipient.
pub fn new_identity_slot(key: &DataKey) -> Result<(SecretString, WrappedSlot), VaultError> {
    let identity = age::x25519::Identity::generate();
    let slot = wrap_for_recipient(key, &identity.to_public().to_string(), SlotKind::Identity)?;
    Ok((identity.to_string(), slot))
}

/// Makes the unprotected development slot.
pub fn new_development_slot(key: &DataKey) -> Result<WrappedSlot, VaultError> {
    let (identity, mut slot) = new_identity_slot(key)?;
    slot.kind = SlotKind::Development;
    slot.development_identity = Some(identity.expose_secret().to_owned());
    Ok(slot)
}

/// What the operator supplied to unseal the vault.
pub enum Unlocker {
    Passphrase(SecretString),
    /// Identities read from an age identity file (for identity and recipient slots).
    Identities(Vec<Box<dyn age::Identity + Send + Sync>>),
    /// Use the development slot's stored identity.
    Development,
}

impl Unlocker {
    /// Reads an age identity file (`AGE-SECRET-KEY-1…` lines, comments allowed).
    pub fn from_identity_file(path: &std::path::Path) -> Result<Self, VaultError> {
        let shown = path.display().to_string();
        let file =
            age::IdentityFile::from_file(shown.clone()).map_err(|e| VaultError::IdentityFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        let identities = file
            .into_identities()
            .map_err(|e| VaultError::IdentityFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if identities.is_empty() {
            return Err(VaultError::IdentityFile {
                path: shown,
                reason: "it holds no age identity".into(),
            });
        }
        Ok(Self::Identities(identities))
    }

    /// Whether this unlocker can try a slot of `kind`.
    pub fn fits(&self, kind: SlotKind) -> bool {
        matches!(
            (self, kind),
            (Self::Passphrase(_), SlotKind::Passphrase)
                | (
                    Self::Identities(_),
                    SlotKind::Identity | SlotKind::Recipient
                )
                | (Self::Development, SlotKind::Development)
        )
    }

    /// Unwraps a slot's data key; `None` when this unlocker does not open the slot.
    pub fn try_unwrap(
        &self,
        kind: SlotKind,
        wrapped_key: &[u8],
        development_identity: Option<&str>,
    ) -> Result<Option<DataKey>, VaultError> {
        if !self.fits(kind) {
            return Ok(None);
        }
        let decryptor =
            age::Decryptor::new_buffered(wrapped_key).map_err(|e| VaultError::CorruptSlot {
                reason: e.to_string(),
            })?;
        let reader = match self {
            Self::Passphrase(passphrase) => {
                let identity = age::scrypt::Identity::new(passphrase.clone());
                decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity))
            }
            Self::Identities(identities) => {
                decryptor.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            }
            Self::Development => {
                let stored = development_identity.ok_or_else(|| VaultError::CorruptSlot {
                    reason: "development slot without its identity".into(),
                })?;
                let identity = age::x25519::Identity::from_str(stored).map_err(|e| {
                    VaultError::CorruptSlot {
                        reason: e.to_string(),
                    }
                })?;
                decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity))
            }
        };
        let mut reader = match reader {
            Ok(reader) => reader,
            Err(age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed) => return Ok(None),
            Err(age::DecryptError::ExcessiveWork { required, target }) => {
                return Err(VaultError::CorruptSlot {
                    reason: format!("passphrase slot asks for scrypt work factor {required}, above this machine's limit {target}"),
                })
            }
            Err(e) => return Err(VaultError::CorruptSlot { reason: e.to_string() }),
        };
        let mut plaintext = zeroize::Zeroizing::new(Vec::with_capacity(32));
        reader
            .read_to_end(&mut plaintext)
            .map_err(|e| VaultError::CorruptSlot {
                reason: e.to_string(),
            })?;
        DataKey::from_unwrapped(&plaintext).map(Some)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A well-formed recipient of the age plugin `name` (bech32, HRP `age1NAME`).
    pub(crate) fn plugin_recipient(name: &str) -> String {
        let hrp = bech32::Hrp::parse(&format!("age1{name}")).unwrap();
        bech32::encode::<bech32::Bech32>(hrp, &[7u8; 33]).unwrap()
    }

    #[test]
    fn a_plugin_recipient_whose_binary_is_missing_is_refused_naming_the_binary() {
        let recipient = plugin_recipient("seedvaultnone");
        let err = wrap_for_recipient(&DataKey::generate(), &recipient, SlotKind::Recipient)
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(message.contains("age-plugin-seedvaultnone"), "{message}");
        assert!(matches!(err, VaultError::PluginMissing { .. }), "{message}");
    }

    fn same_key(a: &DataKey, b: &DataKey) -> bool {
        a.expose() == b.expose()
    }

    #[test]
    fn a_passphrase_slot_opens_with_its_passphrase_only() {
        let key = DataKey::generate();
        let slot = wrap_for_passphrase(
            &key,
            SecretString::from("correct horse".to_owned()),
            Some(2),
        )
        .unwrap();
        let right = Unlocker::Passphrase(SecretString::from("correct horse".to_owned()));
        let wrong = Unlocker::Passphrase(SecretString::from("wrong".to_owned()));
        let opened = right
            .try_unwrap(slot.kind, &slot.wrapped_key, None)
            .unwrap()
            .unwrap();
        assert!(same_key(&key, &opened));
        assert!(wrong
            .try_unwrap(slot.kind, &slot.wrapped_key, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_identity_slot_opens_with_its_identity_only() {
        let key = DataKey::generate();
        let (identity, slot) = new_identity_slot(&key).unwrap();
        let parsed = age::x25519::Identity::from_str(identity.expose_secret()).unwrap();
        let unlocker = Unlocker::Identities(vec![Box::new(parsed)]);
        let opened = unlocker
            .try_unwrap(slot.kind, &slot.wrapped_key, None)
            .unwrap()
            .unwrap();
        assert!(same_key(&key, &opened));
        let stranger = Unlocker::Identities(vec![Box::new(age::x25519::Identity::generate())]);
        assert!(stranger
            .try_unwrap(slot.kind, &slot.wrapped_key, None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_development_slot_opens_without_any_secret_from_the_operator() {
        let key = DataKey::generate();
        let slot = new_development_slot(&key).unwrap();
        let opened = Unlocker::Development
            .try_unwrap(
                slot.kind,
                &slot.wrapped_key,
                slot.development_identity.as_deref(),
            )
            .unwrap()
            .unwrap();
        assert!(same_key(&key, &opened));
    }

    #[test]
    fn a_bad_recipient_is_refused_with_the_expected_form() {
        let err = wrap_for_recipient(&DataKey::generate(), "age1nope", SlotKind::Recipient)
            .err()
            .unwrap();
        assert!(err.to_string().contains("age1"), "{err}");
    }

    #[test]
    fn an_empty_passphrase_is_refused() {
        let err = wrap_for_passphrase(
            &DataKey::generate(),
            SecretString::from("  ".to_owned()),
            Some(2),
        );
        assert!(matches!(err, Err(VaultError::EmptyPassphrase)));
    }
}
