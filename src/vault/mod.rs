//! The vault's keys: the data key (DEK), the age key slots that wrap it, the sealing of seeds
//! under it, and the audit signing key sealed under it (DESIGN §2).
//!
//! Use [`open::create`] once to make a vault and [`open::unlock`] at every start; both hand
//! back an unsealed [`Vault`] that seals and opens seeds and signs audit events.

mod data_key;
pub mod open;
pub mod rotate;
pub mod slots;

use std::sync::{Arc, PoisonError, RwLock};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

pub use data_key::{DataKey, RowBinding, SealedBlob};
pub use slots::{SlotKind, Unlocker};

use crate::secret::Seed;

/// Errors of the key layer. Messages say what to do; none carries key material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("could not seal the value (encryption failed)")]
    Seal,
    #[error("cannot open the sealed {what}: {reason}")]
    CorruptSealed { what: String, reason: String },
    #[error("a key slot is damaged: {reason} — unlock with another slot and re-add this one with `seedvault key add`")]
    CorruptSlot { reason: String },
    #[error("could not wrap the data key: {0}")]
    Wrap(String),
    #[error("the passphrase is empty — choose a passphrase of several words")]
    EmptyPassphrase,
    #[error("not an age recipient — expected a public key of the form age1… (from `age-keygen -y`) or age1<plugin>1… from an age plugin")]
    BadRecipient,
    #[error("the age plugin '{plugin}' cannot be used: {reason} — install age-plugin-{plugin} on PATH (e.g. age-plugin-yubikey for a YubiKey)")]
    PluginMissing { plugin: String, reason: String },
    #[error("cannot read identity file {path}: {reason} — pass the path of an age identity file (AGE-SECRET-KEY-1…) with --identity")]
    IdentityFile { path: String, reason: String },
    #[error("none of the key slots opens with the key supplied — check the passphrase or identity file (`seedvault key list` shows the slots)")]
    WrongKey,
    #[error("the vault is sealed and no key was supplied — set SEEDVAULT_PASSPHRASE, pass --passphrase-file FILE or --identity FILE, run on a terminal to be prompted, or (under systemd) provide the credential seedvault.identity or seedvault.passphrase (see docs/DEPLOY.md)")]
    NoKeySupplied,
    #[error("no vault exists in this data directory yet — run `seedvault init` (or `seedvault serve`, which creates a development vault)")]
    NotInitialised,
    #[error("a vault already exists in this data directory (vault id {0}) — use `seedvault key add` to add an unlock method")]
    AlreadyInitialised(String),
    #[error("this data directory held vault {vault_id} ({marker}), but its database holds no vault: the database file or its WAL was lost or replaced — restore the vault from a backup into an empty data directory; only if you mean to start over without it, move this data directory away (nothing is created here)")]
    VaultLost { vault_id: String, marker: String },
    #[error("a slot labelled '{0}' already exists — choose another --label")]
    DuplicateLabel(String),
    #[error("no key slot is labelled '{0}' — `seedvault key list` shows the labels")]
    UnknownSlot(String),
    #[error("'{0}' is the last key slot; removing it would lock the vault forever — add another slot first")]
    LastSlot(String),
    #[error("this vault still has a development key slot, which anyone with the data directory can open — add a protected slot (`seedvault key add passphrase` or `key add recipient`) and remove the development slot (`seedvault key remove development`) before running with --production")]
    DevelopmentSlotInProduction,
    #[error("a production vault needs a protected key slot — pass --passphrase-file FILE, --recipient age1… or --identity-out FILE")]
    ProductionNeedsSlot,
    #[error("this value is sealed under data key generation {0}, which this process does not hold: the key was rotated (`seedvault key rotate`) while it ran — restart it to unseal with the new key")]
    KeyGenerationUnknown(u32),
    #[error("a key rotation is already under way (to generation {0}) — run `seedvault key rotate` again to finish it")]
    RotationPending(u32),
    #[error("every remaining key slot is a passphrase slot this rotation cannot re-wrap — pass --passphrase-file with the passphrase of one of them (`seedvault key list`)")]
    RotationWouldLock,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] Box<crate::audit::AuditError>),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
}

/// An unsealed vault: the data key and the audit signing key, in memory only.
/// Deliberately not `Debug` or `Clone`; share it behind an `Arc`.
///
/// Both keys can change under a running process: `seedvault key rotate` adds a data key
/// generation (which this process learns from the rotation record, see [`rotate`]) and
/// `seedvault audit rotate-signing-key` replaces the signing key (which [`crate::audit::append`]
/// notices and adopts). So they sit behind locks, read on every seal and signature; writers are
/// rare.
pub struct Vault {
    id: String,
    /// Every data key generation this process holds, oldest first; the newest seals.
    keys: RwLock<Vec<Arc<DataKey>>>,
    signer: RwLock<Arc<SigningKey>>,
    has_development_slot: bool,
}

impl Vault {
    pub(crate) fn new(
        id: String,
        key: DataKey,
        signer: SigningKey,
        has_development_slot: bool,
    ) -> Self {
        Self {
            id,
            keys: RwLock::new(vec![Arc::new(key)]),
            signer: RwLock::new(Arc::new(signer)),
            has_development_slot,
        }
    }

    /// The newest data key this process holds.
    pub(crate) fn current_key(&self) -> Arc<DataKey> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        // Never empty: made with one key, and `forget_before` keeps the newest.
        keys.last()
            .cloned()
            .unwrap_or_else(|| Arc::new(DataKey::generate()))
    }

    /// The key of `generation`, if this process holds it.
    fn key_of(&self, generation: u32) -> Option<Arc<DataKey>> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter().find(|k| k.generation() == generation).cloned()
    }

    /// Whether this process holds the data key of `generation`.
    pub fn holds_generation(&self, generation: u32) -> bool {
        self.key_of(generation).is_some()
    }

    /// The key that opens `sealed`, or why none does.
    pub(crate) fn key_for(&self, sealed: &SealedBlob) -> Result<Arc<DataKey>, VaultError> {
        let generation = sealed.generation().unwrap_or(0);
        self.key_of(generation)
            .ok_or(VaultError::KeyGenerationUnknown(generation))
    }

    /// Adds a newer data key generation (a rotation's new key); it seals from now on.
    pub(crate) fn learn_key(&self, key: DataKey) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.iter().all(|k| k.generation() != key.generation()) {
            keys.push(Arc::new(key));
            keys.sort_by_key(|k| k.generation());
        }
    }

    /// Drops every generation older than `generation` (a finished rotation): their keys are
    /// zeroized once no seal or unseal still uses them.
    pub(crate) fn forget_before(&self, generation: u32) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if keys.iter().any(|k| k.generation() >= generation) {
            keys.retain(|k| k.generation() >= generation);
        }
    }

    /// Adopts a new audit signing key (after `audit rotate-signing-key`).
    pub(crate) fn replace_signer(&self, signer: SigningKey) {
        *self.signer.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(signer);
    }

    /// Seals an audit signing key under the current data key, as `vault_meta` stores it.
    pub(crate) fn seal_signing_key(&self, signer: &SigningKey) -> Result<SealedBlob, VaultError> {
        let secret = Zeroizing::new(signer.to_bytes());
        self.current_key().seal(
            &RowBinding::vault_value(&self.id, "audit-signing-key"),
            secret.as_ref(),
        )
    }

    /// Opens a stored audit signing key and signs with it from now on; `public` must be its
    /// public half.
    pub(crate) fn adopt_signing_key(&self, sealed: &[u8], public: &[u8]) -> Result<(), VaultError> {
        let sealed = SealedBlob::from_stored(sealed.to_vec());
        let secret = self.key_for(&sealed)?.unseal(
            &RowBinding::vault_value(&self.id, "audit-signing-key"),
            &sealed,
        )?;
        let bytes: Zeroizing<[u8; 32]> =
            Zeroizing::new(secret.as_slice().try_into().map_err(|_| {
                VaultError::CorruptSealed {
                    what: "audit signing key".into(),
                    reason: "wrong length".into(),
                }
            })?);
        let signer = SigningKey::from_bytes(&bytes);
        if signer.verifying_key().as_bytes().as_slice() != public {
            return Err(VaultError::CorruptSealed {
                what: "audit signing key".into(),
                reason: "it does not match the stored public key".into(),
            });
        }
        self.replace_signer(signer);
        Ok(())
    }

    fn signer(&self) -> Arc<SigningKey> {
        self.signer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The vault's random id; the audit chain's genesis derives from it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether an unprotected development slot exists (the UI shows a banner while it does).
    pub fn has_development_slot(&self) -> bool {
        self.has_development_slot
    }

    /// Seals a token's seed, bound to the token's id and serial.
    pub fn seal_seed(
        &self,
        token_id: &str,
        serial: &str,
        seed: &Seed,
    ) -> Result<SealedBlob, VaultError> {
        self.current_key()
            .seal(&RowBinding::token_seed(token_id, serial), seed.expose())
    }

    /// Opens a token's sealed seed; fails if the blob belongs to another row or was altered.
    pub fn unseal_seed(
        &self,
        token_id: &str,
        serial: &str,
        sealed: &SealedBlob,
    ) -> Result<Seed, VaultError> {
        let plaintext = self
            .key_for(sealed)?
            .unseal(&RowBinding::token_seed(token_id, serial), sealed)?;
        Ok(Seed::from_bytes(plaintext.to_vec())?)
    }

    /// Signs an audit message (`seq || hash`) with the vault's Ed25519 audit key.
    pub fn sign_audit(&self, message: &[u8]) -> [u8; 64] {
        self.signer().sign(message).to_bytes()
    }

    /// The audit verification key, published with `seedvault audit public-key`.
    pub fn audit_public_key(&self) -> VerifyingKey {
        self.signer().verifying_key()
    }
}

/// Value sealed as the key check: opening it proves the unwrapped key is this vault's.
const KEY_CHECK: &[u8] = b"seedvault key check v1";

/// Makes the sealed values a new vault stores beside its slots.
pub(crate) struct NewVaultMaterial {
    pub key_check: SealedBlob,
    pub sealed_signing_key: SealedBlob,
    pub public_key: [u8; 32],
}

pub(crate) fn new_material(vault_id: &str, key: &DataKey) -> Result<NewVaultMaterial, VaultError> {
    let signer = SigningKey::generate(&mut rand::rngs::OsRng);
    let secret = Zeroizing::new(signer.to_bytes());
    Ok(NewVaultMaterial {
        key_check: key.seal(&RowBinding::vault_value(vault_id, "key-check"), KEY_CHECK)?,
        sealed_signing_key: key.seal(
            &RowBinding::vault_value(vault_id, "audit-signing-key"),
            secret.as_ref(),
        )?,
        public_key: signer.verifying_key().to_bytes(),
    })
}

/// Checks the key against the stored key check and opens the audit signing key.
pub(crate) fn open_material(
    vault_id: &str,
    key: &DataKey,
    key_check: &SealedBlob,
    sealed_signing_key: &SealedBlob,
) -> Result<SigningKey, VaultError> {
    key.unseal(&RowBinding::vault_value(vault_id, "key-check"), key_check)
        .map_err(|_| VaultError::WrongKey)?;
    let secret = key.unseal(
        &RowBinding::vault_value(vault_id, "audit-signing-key"),
        sealed_signing_key,
    )?;
    let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(secret.as_slice().try_into().map_err(
        |_| VaultError::CorruptSealed {
            what: "audit signing key".into(),
            reason: "wrong length".into(),
        },
    )?);
    Ok(SigningKey::from_bytes(&bytes))
}
