//! Creating, unlocking and re-keying a vault against the store. Every change to the slots is
//! one transaction with its audit event.

use age::secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;

use super::slots::{self, WrappedSlot};
use super::{DataKey, SealedBlob, SlotKind, Unlocker, Vault, VaultError};
use crate::audit::{self, NewEvent};
use crate::store::{key_slots, meta, Store, WriteTx};

/// An unlock method to add as a slot.
pub enum SlotRequest {
    /// The unprotected development slot.
    Development,
    /// An age scrypt passphrase; `work_factor` lowers age's calibrated cost (tests only).
    Passphrase {
        passphrase: SecretString,
        work_factor: Option<u8>,
    },
    /// An `age1…` recipient; `kind` says whether seedvault generated its identity file
    /// ([`SlotKind::Identity`]) or the operator brought it ([`SlotKind::Recipient`]).
    Recipient { recipient: String, kind: SlotKind },
}

impl SlotRequest {
    fn kind(&self) -> SlotKind {
        match self {
            Self::Development => SlotKind::Development,
            Self::Passphrase { .. } => SlotKind::Passphrase,
            Self::Recipient { kind, .. } => *kind,
        }
    }

    fn wrap(self, key: &DataKey) -> Result<WrappedSlot, VaultError> {
        match self {
            Self::Development => slots::new_development_slot(key),
            Self::Passphrase {
                passphrase,
                work_factor,
            } => slots::wrap_for_passphrase(key, passphrase, work_factor),
            Self::Recipient { recipient, kind } => slots::wrap_for_recipient(key, &recipient, kind),
        }
    }
}

/// What `key list` shows of a slot: never key material.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotInfo {
    pub label: String,
    pub kind: String,
    pub recipient: Option<String>,
    pub created_at: i64,
}

/// The vault id, if this data directory holds a vault.
pub async fn existing_vault_id(store: &Store) -> Result<Option<String>, VaultError> {
    Ok(meta::get(store).await?.map(|m| m.vault_id))
}

/// Makes a new vault with the given slots (at least one). `actor` is recorded in the audit
/// trail's first event.
pub async fn create(
    store: &Store,
    now: OffsetDateTime,
    actor: &str,
    requests: Vec<(String, SlotRequest)>,
) -> Result<Vault, VaultError> {
    if requests.is_empty() {
        return Err(VaultError::ProductionNeedsSlot);
    }
    // A data directory that once held a vault whose database now holds none (a deleted WAL, a
    // replaced file) must not silently become a new, empty vault with a fresh admin invite.
    if let Some(existing) = meta::get(store).await? {
        return Err(VaultError::AlreadyInitialised(existing.vault_id));
    }
    if let Some(recorded) = store.recorded_vault_id()? {
        return Err(VaultError::VaultLost {
            vault_id: recorded,
            marker: store
                .vault_id_marker()
                .map(|m| m.display().to_string())
                .unwrap_or_default(),
        });
    }
    let key = DataKey::generate();
    let vault_id = uuid::Uuid::new_v4().to_string();
    let material = super::new_material(&vault_id, &key)?;
    let mut kinds = Vec::new();
    let mut wrapped = Vec::new();
    for (label, request) in requests {
        kinds.push(json!({ "label": label, "kind": request.kind().as_str() }));
        wrapped.push((label, request.wrap(&key)?));
    }
    let has_development_slot = wrapped
        .iter()
        .any(|(_, slot)| slot.kind == SlotKind::Development);

    let mut tx = store.begin_write().await?;
    if let Some(existing) = meta::get(&mut tx).await? {
        return Err(VaultError::AlreadyInitialised(existing.vault_id));
    }
    meta::insert(
        &mut tx,
        &meta::VaultMetaRow {
            vault_id: vault_id.clone(),
            created_at: now.unix_timestamp(),
            key_check: material.key_check.into_bytes(),
            audit_signing_key: material.sealed_signing_key.clone().into_bytes(),
            audit_public_key: material.public_key.to_vec(),
            key_generation: 0,
        },
    )
    .await?;
    for (label, slot) in &wrapped {
        insert_slot(&mut tx, label, slot, now).await?;
    }
    let signer = super::open_material(
        &vault_id,
        &key,
        &SealedBlob::from_stored(
            meta::get(&mut tx)
                .await?
                .map(|m| m.key_check)
                .unwrap_or_default(),
        ),
        &material.sealed_signing_key,
    )?;
    let vault = Vault::new(vault_id.clone(), key, signer, has_development_slot);
    let event = NewEvent::new(actor, "vault.init", format!("vault:{vault_id}"))
        .details(json!({ "slots": kinds, "audit_public_key": data_encoding::HEXLOWER.encode(&material.public_key) }));
    append(&mut tx, &vault, now, event).await?;
    tx.commit().await?;
    store.record_vault_id(&vault_id)?;
    Ok(vault)
}

async fn insert_slot(
    tx: &mut WriteTx,
    label: &str,
    slot: &WrappedSlot,
    now: OffsetDateTime,
) -> Result<(), VaultError> {
    if key_slots::label_exists(&mut *tx, label).await? {
        return Err(VaultError::DuplicateLabel(label.to_owned()));
    }
    key_slots::insert(
        tx,
        &key_slots::NewKeySlot {
            kind: slot.kind.as_str(),
            label,
            recipient: slot.recipient.as_deref(),
            wrapped_key: &slot.wrapped_key,
            development_identity: slot.development_identity.as_deref(),
            created_at: now.unix_timestamp(),
        },
    )
    .await?;
    Ok(())
}

async fn append(
    tx: &mut WriteTx,
    vault: &Vault,
    now: OffsetDateTime,
    event: NewEvent,
) -> Result<(), VaultError> {
    audit::append(tx, vault, now, event)
        .await
        .map_err(|e| VaultError::Audit(Box::new(e)))?;
    Ok(())
}

/// Unseals the vault with whatever the operator supplied.
pub async fn unlock(store: &Store, unlocker: &Unlocker) -> Result<Vault, VaultError> {
    let meta = meta::get(store).await?.ok_or(VaultError::NotInitialised)?;
    let rows = key_slots::list(store).await?;
    let has_development_slot = rows
        .iter()
        .any(|r| r.kind == SlotKind::Development.as_str());
    let mut tried_any = false;
    for row in &rows {
        let kind = SlotKind::parse(&row.kind)?;
        tried_any |= unlocker.fits(kind);
        let Some(key) =
            unlocker.try_unwrap(kind, &row.wrapped_key, row.development_identity.as_deref())?
        else {
            continue;
        };
        let key = key.with_generation(generation_of(meta.key_generation)?);
        let signer = super::open_material(
            &meta.vault_id,
            &key,
            &SealedBlob::from_stored(meta.key_check.clone()),
            &SealedBlob::from_stored(meta.audit_signing_key.clone()),
        )?;
        // Vaults made before the marker existed get it at their next unlock.
        if store.recorded_vault_id()?.is_none() {
            store.record_vault_id(&meta.vault_id)?;
        }
        let vault = Vault::new(meta.vault_id, key, signer, has_development_slot);
        // A rotation that stopped part-way: its new key opens the seeds already re-sealed.
        if let Some(pending) = meta::rotation(store).await? {
            super::rotate::learn_pending(&vault, &pending)?;
            tracing::warn!(
                generation = pending.generation,
                "a data key rotation is unfinished; run `seedvault key rotate` to finish it"
            );
        }
        return Ok(vault);
    }
    if !tried_any && matches!(unlocker, Unlocker::Development) {
        return Err(VaultError::NoKeySupplied);
    }
    Err(VaultError::WrongKey)
}

/// The slots, for `key list` and `status`.
pub async fn list_slots(store: &Store) -> Result<Vec<SlotInfo>, VaultError> {
    Ok(key_slots::list(store)
        .await?
        .into_iter()
        .map(|r| SlotInfo {
            label: r.label,
            kind: r.kind,
            recipient: r.recipient,
            created_at: r.created_at,
        })
        .collect())
}

/// Adds an unlock method.
pub async fn add_slot(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
    label: &str,
    request: SlotRequest,
) -> Result<(), VaultError> {
    let kind = request.kind();
    let slot = request.wrap(&vault.current_key())?;
    let mut tx = store.begin_write().await?;
    refuse_during_rotation(&mut tx).await?;
    insert_slot(&mut tx, label, &slot, now).await?;
    let event = NewEvent::new(actor, "key.slot_added", format!("key-slot:{label}"))
        .details(json!({ "kind": kind.as_str(), "recipient": slot.recipient }));
    append(&mut tx, vault, now, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes an unlock method; never the last one.
pub async fn remove_slot(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
    label: &str,
) -> Result<(), VaultError> {
    let mut tx = store.begin_write().await?;
    refuse_during_rotation(&mut tx).await?;
    let rows = key_slots::list(&mut tx).await?;
    let Some(row) = rows.iter().find(|r| r.label == label) else {
        return Err(VaultError::UnknownSlot(label.to_owned()));
    };
    if rows.len() == 1 {
        return Err(VaultError::LastSlot(label.to_owned()));
    }
    let kind = row.kind.clone();
    key_slots::delete(&mut tx, label).await?;
    let event = NewEvent::new(actor, "key.slot_removed", format!("key-slot:{label}"))
        .details(json!({ "kind": kind }));
    append(&mut tx, vault, now, event).await?;
    tx.commit().await?;
    Ok(())
}

/// The slots wrap the old key until a rotation ends; a slot added or removed meanwhile would be
/// lost or wrap the wrong key.
async fn refuse_during_rotation(tx: &mut WriteTx) -> Result<(), VaultError> {
    match meta::rotation(&mut *tx).await? {
        Some(pending) => Err(VaultError::RotationPending(generation_of(
            pending.generation,
        )?)),
        None => Ok(()),
    }
}

/// A stored generation as the key's type.
pub(crate) fn generation_of(stored: i64) -> Result<u32, VaultError> {
    u32::try_from(stored).map_err(|_| VaultError::CorruptSlot {
        reason: format!("data key generation {stored} is out of range"),
    })
}

/// A development vault in a fresh temporary directory: the fixture of the unit tests that need
/// a real store and vault.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) async fn temporary() -> (tempfile::TempDir, Store, Vault) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let vault = create(
        &store,
        OffsetDateTime::UNIX_EPOCH,
        "test",
        vec![("dev".into(), SlotRequest::Development)],
    )
    .await
    .unwrap();
    (dir, store, vault)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn pass(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[tokio::test]
    async fn a_vault_unlocks_with_each_of_its_slots_and_refuses_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let passphrase = SlotRequest::Passphrase {
            passphrase: pass("right"),
            work_factor: Some(2),
        };
        let created = create(&store, now, "test", vec![("pass".into(), passphrase)])
            .await
            .unwrap();
        let seed = crate::secret::Seed::from_bytes(b"12345678901234567890".to_vec()).unwrap();
        let sealed = created.seal_seed("id-1", "S1", &seed).unwrap();

        let vault = unlock(&store, &Unlocker::Passphrase(pass("right")))
            .await
            .unwrap();
        assert_eq!(vault.id(), created.id());
        assert_eq!(
            vault.unseal_seed("id-1", "S1", &sealed).unwrap().expose(),
            seed.expose()
        );
        assert!(!vault.has_development_slot());

        let err = unlock(&store, &Unlocker::Passphrase(pass("wrong")))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, VaultError::WrongKey), "{err}");
        let err = unlock(&store, &Unlocker::Development).await.err().unwrap();
        assert!(matches!(err, VaultError::NoKeySupplied), "{err}");

        let again = create(
            &store,
            now,
            "test",
            vec![("dev".into(), SlotRequest::Development)],
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(again, VaultError::AlreadyInitialised(_)));
    }

    #[tokio::test]
    async fn slots_can_be_added_and_removed_but_not_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = OffsetDateTime::UNIX_EPOCH;
        let vault = create(
            &store,
            now,
            "t",
            vec![("development".into(), SlotRequest::Development)],
        )
        .await
        .unwrap();
        assert!(vault.has_development_slot());
        let identity = age::x25519::Identity::generate();
        let request = SlotRequest::Recipient {
            recipient: identity.to_public().to_string(),
            kind: SlotKind::Recipient,
        };
        add_slot(&store, &vault, now, "t", "break-glass", request)
            .await
            .unwrap();
        let dup = SlotRequest::Recipient {
            recipient: identity.to_public().to_string(),
            kind: SlotKind::Recipient,
        };
        assert!(matches!(
            add_slot(&store, &vault, now, "t", "break-glass", dup).await,
            Err(VaultError::DuplicateLabel(_))
        ));
        remove_slot(&store, &vault, now, "t", "development")
            .await
            .unwrap();
        let unlocked = unlock(&store, &Unlocker::Identities(vec![Box::new(identity)]))
            .await
            .unwrap();
        assert!(!unlocked.has_development_slot());
        assert!(matches!(
            remove_slot(&store, &vault, now, "t", "break-glass").await,
            Err(VaultError::LastSlot(_))
        ));
        assert!(matches!(
            remove_slot(&store, &vault, now, "t", "nope").await,
            Err(VaultError::UnknownSlot(_))
        ));
    }
}
