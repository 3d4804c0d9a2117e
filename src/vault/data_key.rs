//! The data key (DEK) and the sealing of seeds under it.
//!
//! Seeds are sealed with XChaCha20-Poly1305 under the 32-byte data key, with a random 24-byte
//! nonce and associated data that binds the ciphertext to its row, so a sealed blob copied onto
//! another row fails to open. Stored form: `version || nonce || ciphertext+tag`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use super::VaultError;

/// Format version byte at the start of every sealed blob.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The vault's 32-byte data key. Zeroized on drop; deliberately not `Debug` or `Clone`.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// A fresh random data key, made once at `seedvault init` (or on rotation).
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    /// Rebuilds the key from the plaintext an age key slot unwrapped.
    pub fn from_unwrapped(bytes: &[u8]) -> Result<Self, VaultError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| VaultError::CorruptSlot {
            reason: format!("unwrapped data key is {} bytes, expected 32", bytes.len()),
        })?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The raw key, only for wrapping it into an age key slot.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.0[..]))
    }

    /// Seals `plaintext` for the row described by `binding`.
    pub fn seal(
        &self,
        binding: &RowBinding<'_>,
        plaintext: &[u8],
    ) -> Result<SealedBlob, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = binding.associated_data(SEALED_V1);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(SealedBlob(out))
    }

    /// Opens a blob sealed for the row described by `binding`. Fails when the blob was sealed
    /// under another key, for another row, or was altered.
    pub fn unseal(
        &self,
        binding: &RowBinding<'_>,
        sealed: &SealedBlob,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        let bytes = sealed.as_bytes();
        if bytes.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(VaultError::CorruptSealed {
                what: binding.describe(),
                reason: "too short to be a sealed value".into(),
            });
        }
        if bytes[0] != SEALED_V1 {
            return Err(VaultError::CorruptSealed {
                what: binding.describe(),
                reason: format!("unknown format version {}", bytes[0]),
            });
        }
        let (nonce, ciphertext) = bytes[1..].split_at(NONCE_LEN);
        let aad = binding.associated_data(bytes[0]);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| VaultError::CorruptSealed {
                what: binding.describe(),
                reason: "authentication failed: the value was altered, belongs to another row, \
                         or was sealed under another data key"
                    .into(),
            })
    }
}

/// What a sealed value is bound to. The associated data is
/// `"seedvault" || version || kind || len(id) || id || len(name) || name` so that no two
/// different bindings produce the same bytes.
pub struct RowBinding<'a> {
    kind: &'static str,
    id: &'a str,
    name: &'a str,
}

impl<'a> RowBinding<'a> {
    /// A token's seed: bound to the token's id and serial.
    pub fn token_seed(token_id: &'a str, serial: &'a str) -> Self {
        Self {
            kind: "token-seed",
            id: token_id,
            name: serial,
        }
    }

    /// A value that belongs to the vault as a whole (key check, audit signing key).
    pub fn vault_value(vault_id: &'a str, name: &'a str) -> Self {
        Self {
            kind: "vault-value",
            id: vault_id,
            name,
        }
    }

    fn associated_data(&self, version: u8) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + self.id.len() + self.name.len());
        aad.extend_from_slice(b"seedvault");
        aad.push(version);
        for part in [self.kind, self.id, self.name] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        aad
    }

    fn describe(&self) -> String {
        format!("{} {}", self.kind, self.name)
    }
}

/// A value sealed under the data key, as stored. Holds no plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob(Vec<u8>);

impl SealedBlob {
    pub fn from_stored(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_unseal_returns_the_plaintext() {
        let key = DataKey::generate();
        let binding = RowBinding::token_seed("t-1", "SERIAL-1");
        let sealed = key.seal(&binding, b"12345678901234567890").unwrap();
        assert_eq!(
            &key.unseal(&binding, &sealed).unwrap()[..],
            b"12345678901234567890"
        );
    }

    #[test]
    fn sealing_twice_gives_different_blobs() {
        let key = DataKey::generate();
        let binding = RowBinding::token_seed("t-1", "SERIAL-1");
        let a = key.seal(&binding, b"same").unwrap();
        let b = key.seal(&binding, b"same").unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn a_sealed_seed_moved_to_another_row_fails_to_open() {
        let key = DataKey::generate();
        let sealed = key
            .seal(&RowBinding::token_seed("t-1", "SERIAL-1"), b"seed")
            .unwrap();
        for other in [
            RowBinding::token_seed("t-2", "SERIAL-1"),
            RowBinding::token_seed("t-1", "SERIAL-2"),
            RowBinding::vault_value("t-1", "SERIAL-1"),
        ] {
            let Err(err) = key.unseal(&other, &sealed) else {
                panic!("must fail")
            };
            assert!(err.to_string().contains("authentication failed"), "{err}");
        }
    }

    #[test]
    fn a_blob_sealed_under_another_key_fails_to_open() {
        let binding = RowBinding::token_seed("t-1", "S");
        let sealed = DataKey::generate().seal(&binding, b"seed").unwrap();
        assert!(DataKey::generate().unseal(&binding, &sealed).is_err());
    }

    #[test]
    fn a_tampered_or_truncated_blob_fails_with_a_clear_error() {
        let key = DataKey::generate();
        let binding = RowBinding::token_seed("t-1", "S");
        let mut bytes = key.seal(&binding, b"seed").unwrap().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(key
            .unseal(&binding, &SealedBlob::from_stored(bytes.clone()))
            .is_err());
        let err = key
            .unseal(&binding, &SealedBlob::from_stored(bytes[..10].to_vec()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("too short"));
        bytes[0] = 9;
        let err = key
            .unseal(&binding, &SealedBlob::from_stored(bytes))
            .err()
            .unwrap();
        assert!(err.to_string().contains("version 9"));
    }

    #[test]
    fn bindings_with_shifted_boundaries_differ() {
        let a = RowBinding::token_seed("ab", "c").associated_data(1);
        let b = RowBinding::token_seed("a", "bc").associated_data(1);
        assert_ne!(a, b);
    }
}
