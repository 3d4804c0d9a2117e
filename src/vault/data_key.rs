//! The data key (DEK) and the sealing of seeds under it.
//!
//! Seeds are sealed with XChaCha20-Poly1305 under the 32-byte data key, with a random 24-byte
//! nonce and associated data that binds the ciphertext to its row, so a sealed blob copied onto
//! another row fails to open. Stored form: `1 || nonce || ciphertext+tag` under the vault's
//! first data key (generation 0), and `2 || u32be(generation) || nonce || ciphertext+tag` under
//! a key made by `seedvault key rotate`: a blob names the key that opens it, so during a
//! rotation each seed is readable under exactly one known key, and the generation is bound into
//! the associated data too.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use super::VaultError;

/// Format version byte of a blob sealed under generation 0.
const SEALED_V1: u8 = 1;
/// Format version byte of a blob that names its key's generation.
const SEALED_V2: u8 = 2;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The vault's 32-byte data key and its generation (0 for the key made at `init`, one more at
/// each `key rotate`). Zeroized on drop; deliberately not `Debug` or `Clone`.
pub struct DataKey {
    key: Zeroizing<[u8; 32]>,
    generation: u32,
}

impl DataKey {
    /// A fresh random data key of generation 0, made once at `seedvault init`.
    pub fn generate() -> Self {
        Self::generate_for(0)
    }

    /// A fresh random data key of `generation` (a rotation's new key).
    pub fn generate_for(generation: u32) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self { key, generation }
    }

    /// Rebuilds the key from the plaintext an age key slot unwrapped (or a rotation record
    /// opened); the vault says which generation it is.
    pub fn from_unwrapped(bytes: &[u8]) -> Result<Self, VaultError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| VaultError::CorruptSlot {
            reason: format!("unwrapped data key is {} bytes, expected 32", bytes.len()),
        })?;
        Ok(Self {
            key: Zeroizing::new(array),
            generation: 0,
        })
    }

    /// The same key, told its generation.
    pub fn with_generation(mut self, generation: u32) -> Self {
        self.generation = generation;
        self
    }

    /// Which generation of the vault's data key this is.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The raw key, only for wrapping it into an age key slot.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.key
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.key[..]))
    }

    /// The blob's header for this key: version, and the generation from version 2 on.
    pub(crate) fn header(&self) -> Vec<u8> {
        if self.generation == 0 {
            vec![SEALED_V1]
        } else {
            let mut header = vec![SEALED_V2];
            header.extend_from_slice(&self.generation.to_be_bytes());
            header
        }
    }

    /// Seals `plaintext` for the row described by `binding`.
    pub fn seal(
        &self,
        binding: &RowBinding<'_>,
        plaintext: &[u8],
    ) -> Result<SealedBlob, VaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let header = self.header();
        let aad = binding.associated_data(&header);
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
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&header);
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
        let header_len = sealed
            .header_len()
            .map_err(|reason| VaultError::CorruptSealed {
                what: binding.describe(),
                reason,
            })?;
        if bytes.len() < header_len + NONCE_LEN + TAG_LEN {
            return Err(VaultError::CorruptSealed {
                what: binding.describe(),
                reason: "too short to be a sealed value".into(),
            });
        }
        let (header, rest) = bytes.split_at(header_len);
        if sealed.generation() != Some(self.generation) {
            return Err(VaultError::CorruptSealed {
                what: binding.describe(),
                reason: "authentication failed: the value was sealed under another data key".into(),
            });
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = binding.associated_data(header);
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

    /// `header` is the blob's version byte and, from version 2, its key generation.
    fn associated_data(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(36 + self.id.len() + self.name.len());
        aad.extend_from_slice(b"seedvault");
        aad.extend_from_slice(header);
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

    /// The generation of the data key that sealed this blob (`None`: not a sealed value).
    pub fn generation(&self) -> Option<u32> {
        match self.0.first() {
            Some(&SEALED_V1) => Some(0),
            Some(&SEALED_V2) => self
                .0
                .get(1..5)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes),
            _ => None,
        }
    }

    fn header_len(&self) -> Result<usize, String> {
        match self.0.first() {
            Some(&SEALED_V1) => Ok(1),
            Some(&SEALED_V2) => Ok(5),
            Some(other) => Err(format!("unknown format version {other}")),
            None => Err("too short to be a sealed value".into()),
        }
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
    fn a_rotated_key_names_its_generation_and_neither_key_opens_the_others_blobs() {
        let binding = RowBinding::token_seed("t-1", "S");
        let old = DataKey::generate();
        let new = DataKey::generate_for(7);
        let sealed = new.seal(&binding, b"seed").unwrap();
        assert_eq!(sealed.generation(), Some(7));
        assert_eq!(&new.unseal(&binding, &sealed).unwrap()[..], b"seed");
        assert!(old.unseal(&binding, &sealed).is_err());
        // Even the same key bytes told another generation refuse: the generation is bound.
        let mut relabelled = sealed.clone().into_bytes();
        relabelled[4] = 8;
        let same_bytes = DataKey::from_unwrapped(new.expose())
            .unwrap()
            .with_generation(8);
        assert!(same_bytes
            .unseal(&binding, &SealedBlob::from_stored(relabelled))
            .is_err());
        let first = old.seal(&binding, b"seed").unwrap();
        assert_eq!(first.generation(), Some(0));
        assert!(new.unseal(&binding, &first).is_err());
    }

    #[test]
    fn bindings_with_shifted_boundaries_differ() {
        let a = RowBinding::token_seed("ab", "c").associated_data(&[1]);
        let b = RowBinding::token_seed("a", "bc").associated_data(&[1]);
        assert_ne!(a, b);
    }
}
