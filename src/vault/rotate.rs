//! `seedvault key rotate`: a new data key, every escrowed seed re-sealed under it in batches,
//! every slot re-wrapped, the old key gone — resumable at every step.
//!
//! 1. **Start** (one transaction): the new key, sealed under the current one, goes into
//!    `key_rotation` with `key.rotation_started`. From then on every process that holds the
//!    current key can learn the new one ([`learn_pending`]): the server when it meets a seed
//!    sealed under it ([`unseal_following`]) or within a second ([`follow`]), and any process
//!    that unlocks later ([`super::open::unlock`]).
//! 2. **Re-seal** in batches, each its own short transaction: a seed's blob is replaced only if
//!    it is still the one read, so each seed is readable under exactly one key, which its blob
//!    names, at every moment; reveals interleave between batches.
//! 3. **Finish** (one transaction): stragglers (seeds captured meanwhile under the old key)
//!    re-sealed, every slot re-wrapped, key check and audit signing key re-sealed, the
//!    generation bumped, the rotation record overwritten and deleted, `key.rotated`. After it
//!    no stored value is sealed under, or wraps, the old key.
//!
//! A crash anywhere leaves a vault that opens with its old slots and, through the record,
//! serves every seed; running `key rotate` again carries on from where it stopped.

use std::time::Duration;

use age::secrecy::SecretString;
use serde_json::json;
use time::OffsetDateTime;

use super::open::generation_of;
use super::slots::{self, SlotKind};
use super::{DataKey, RowBinding, SealedBlob, Unlocker, Vault, VaultError};
use crate::audit::{self, NewEvent};
use crate::secret::Seed;
use crate::store::meta::RotationRow;
use crate::store::{key_slots, meta, tokens, Inline, Store, WriteTx};

/// What the new key is sealed as in the rotation record.
const NEXT_KEY: &str = "next-data-key";

/// How a rotation runs.
pub struct RotateOptions<'a> {
    /// Seeds re-sealed per transaction.
    pub batch: usize,
    /// Pause after recording the new key, before the first batch: a running server learns
    /// the key within a second ([`follow`]), so its reveals never have to look it up.
    pub settle: Duration,
    /// The passphrase of the vault's passphrase slots, to re-wrap them; a passphrase slot it
    /// does not open is removed and listed as needing `key add passphrase`.
    pub passphrase: Option<&'a SecretString>,
    /// Called after each committed batch with the number of batches so far (the tests' kill
    /// switch).
    pub after_batch: &'a (dyn Fn(usize) + Send + Sync),
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub generation: u32,
    /// Whether it carried on with a rotation an earlier run had started.
    pub resumed: bool,
    pub resealed: u64,
    /// Labels of the slots re-wrapped under the new key.
    pub rewrapped: Vec<String>,
    /// Labels of the passphrase slots removed because no passphrase for them was given.
    pub need_passphrase: Vec<String>,
}

/// Opens a rotation record with the current key and adds its new key to `vault`.
pub fn learn_pending(vault: &Vault, pending: &RotationRow) -> Result<(), VaultError> {
    let generation = generation_of(pending.generation)?;
    if vault.holds_generation(generation) {
        return Ok(());
    }
    let sealed = SealedBlob::from_stored(pending.next_key.clone());
    let plaintext = vault
        .key_for(&sealed)?
        .unseal(&RowBinding::vault_value(vault.id(), NEXT_KEY), &sealed)?;
    vault.learn_key(DataKey::from_unwrapped(&plaintext)?.with_generation(generation));
    Ok(())
}

/// Opens a token's seed on a held connection; if it is sealed under a key this process has not
/// learned yet (a rotation running beside it), learns that key from the rotation record first.
pub fn unseal_following(
    vault: &Vault,
    c: &Inline<'_>,
    token_id: &str,
    serial: &str,
    sealed: &SealedBlob,
) -> Result<Seed, VaultError> {
    match vault.unseal_seed(token_id, serial, sealed) {
        Err(VaultError::KeyGenerationUnknown(generation)) => {
            match meta::rotation_on(c)? {
                Some(pending) => learn_pending(vault, &pending)?,
                None => return Err(VaultError::KeyGenerationUnknown(generation)),
            }
            vault.unseal_seed(token_id, serial, sealed)
        }
        other => other,
    }
}

/// Keeps a long-running process in step with rotations made beside it: learns a rotation's
/// new key, and once a rotation has finished, forgets the keys before it. Cheap; the server
/// calls it every second.
pub async fn follow(store: &Store, vault: &Vault) -> Result<(), VaultError> {
    if let Some(pending) = meta::rotation(store).await? {
        return learn_pending(vault, &pending);
    }
    let Some(stored) = meta::get(store).await? else {
        return Ok(());
    };
    let generation = generation_of(stored.key_generation)?;
    if vault.holds_generation(generation) {
        vault.forget_before(generation);
        Ok(())
    } else {
        Err(VaultError::KeyGenerationUnknown(generation))
    }
}

/// The header every blob sealed under `key` starts with.
fn header_of(key: &DataKey) -> Result<Vec<u8>, VaultError> {
    Ok(key.header())
}

/// One slot's fate in the rotation.
enum SlotPlan {
    Rewrap {
        id: i64,
        label: String,
        kind: SlotKind,
        recipient: Option<String>,
        passphrase: Option<SecretString>,
    },
    Remove {
        id: i64,
        label: String,
    },
}

/// Decides, before anything changes, which slots can be re-wrapped; refuses a rotation that
/// would leave no slot.
async fn plan_slots(
    db: impl Into<crate::store::Db<'_>>,
    passphrase: Option<&SecretString>,
) -> Result<Vec<SlotPlan>, VaultError> {
    let mut plans = Vec::new();
    for row in key_slots::list(db).await? {
        let kind = SlotKind::parse(&row.kind)?;
        let plan = match kind {
            SlotKind::Passphrase => {
                let opens = match passphrase {
                    Some(p) => Unlocker::Passphrase(p.clone())
                        .try_unwrap(kind, &row.wrapped_key, None)?
                        .is_some(),
                    None => false,
                };
                if opens {
                    SlotPlan::Rewrap {
                        id: row.id,
                        label: row.label,
                        kind,
                        recipient: None,
                        passphrase: passphrase.cloned(),
                    }
                } else {
                    SlotPlan::Remove {
                        id: row.id,
                        label: row.label,
                    }
                }
            }
            _ => SlotPlan::Rewrap {
                id: row.id,
                label: row.label,
                kind,
                recipient: row.recipient,
                passphrase: None,
            },
        };
        plans.push(plan);
    }
    if !plans.iter().any(|p| matches!(p, SlotPlan::Rewrap { .. })) {
        return Err(VaultError::RotationWouldLock);
    }
    Ok(plans)
}

/// Rotates the data key (or finishes a rotation an earlier run started).
pub async fn rotate(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
    options: RotateOptions<'_>,
) -> Result<Rotated, VaultError> {
    plan_slots(store, options.passphrase).await?;
    let (new_key, resumed) = start(store, vault, now, actor).await?;
    if !resumed {
        tokio::time::sleep(options.settle).await;
    }
    let header = header_of(&new_key)?;
    let batch = i64::try_from(options.batch.max(1)).unwrap_or(i64::MAX);
    let mut resealed = 0u64;
    let mut after = 0i64;
    let mut batches = 0usize;
    loop {
        let rows = tokens::sealed_not_under(store, &header, after, batch).await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let resealed_rows = reseal_rows(vault, &new_key, &rows)?;
        let mut tx = store.begin_write().await?;
        resealed += reseal_in(&mut tx, &resealed_rows).await?;
        tx.commit().await?;
        batches += 1;
        (options.after_batch)(batches);
    }

    let mut tx = store.begin_write().await?;
    // Seeds captured under the old key while the batches ran (a process that had not learned
    // the new key yet), re-sealed inside the finishing transaction.
    loop {
        let rows = tokens::sealed_not_under(&mut tx, &header, 0, batch).await?;
        if rows.is_empty() {
            break;
        }
        let resealed_rows = reseal_rows(vault, &new_key, &rows)?;
        resealed += reseal_in(&mut tx, &resealed_rows).await?;
    }
    let plans = plan_slots(&mut tx, options.passphrase).await?;
    let mut rewrapped = Vec::new();
    let mut need_passphrase = Vec::new();
    for plan in plans {
        match plan {
            SlotPlan::Rewrap {
                id,
                label,
                kind,
                recipient,
                passphrase,
            } => {
                let wrapped = match (kind, recipient, passphrase) {
                    (SlotKind::Passphrase, _, Some(p)) => {
                        slots::wrap_for_passphrase(&new_key, p, None)?
                    }
                    (_, Some(recipient), _) => {
                        slots::wrap_for_recipient(&new_key, &recipient, kind)?
                    }
                    _ => {
                        return Err(VaultError::CorruptSlot {
                            reason: format!("slot '{label}' has no recipient to re-wrap for"),
                        })
                    }
                };
                key_slots::set_wrapped(&mut tx, id, &wrapped.wrapped_key).await?;
                rewrapped.push(label);
            }
            SlotPlan::Remove { id, label } => {
                key_slots::delete_id(&mut tx, id).await?;
                need_passphrase.push(label);
            }
        }
    }
    let stored = meta::get(&mut tx)
        .await?
        .ok_or(VaultError::NotInitialised)?;
    let old_check = SealedBlob::from_stored(stored.key_check);
    let old_signing = SealedBlob::from_stored(stored.audit_signing_key);
    let check_binding = RowBinding::vault_value(vault.id(), "key-check");
    let signing_binding = RowBinding::vault_value(vault.id(), "audit-signing-key");
    let check = vault
        .key_for(&old_check)?
        .unseal(&check_binding, &old_check)?;
    let signing = vault
        .key_for(&old_signing)?
        .unseal(&signing_binding, &old_signing)?;
    meta::finish_rotation(
        &mut tx,
        i64::from(new_key.generation()),
        new_key.seal(&check_binding, &check)?.as_bytes(),
        new_key.seal(&signing_binding, &signing)?.as_bytes(),
    )
    .await?;
    let event =
        NewEvent::new(actor, "key.rotated", format!("vault:{}", vault.id())).details(json!({
            "generation": new_key.generation(),
            "resealed": resealed,
            "resumed": resumed,
            "slots_rewrapped": rewrapped,
            "slots_removed_need_passphrase": need_passphrase,
        }));
    append(&mut tx, vault, now, event).await?;
    tx.commit().await?;
    vault.forget_before(new_key.generation());
    // The old slots and the rotation record were overwritten in pages the WAL still holds.
    store.scrub_freed_space().await?;
    Ok(Rotated {
        generation: new_key.generation(),
        resumed,
        resealed,
        rewrapped,
        need_passphrase,
    })
}

/// Records a new rotation, or picks up the one under way. Returns the new key and whether it
/// was resumed.
async fn start(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
) -> Result<(std::sync::Arc<DataKey>, bool), VaultError> {
    let mut tx = store.begin_write().await?;
    if let Some(pending) = meta::rotation(&mut tx).await? {
        drop(tx);
        learn_pending(vault, &pending)?;
        let generation = generation_of(pending.generation)?;
        let key = vault
            .key_of(generation)
            .ok_or(VaultError::KeyGenerationUnknown(generation))?;
        return Ok((key, true));
    }
    let stored = meta::get(&mut tx)
        .await?
        .ok_or(VaultError::NotInitialised)?;
    let current = generation_of(stored.key_generation)?;
    let old = vault
        .key_of(current)
        .ok_or(VaultError::KeyGenerationUnknown(current))?;
    let generation = current + 1;
    let new_key = DataKey::generate_for(generation);
    let sealed_next = old.seal(
        &RowBinding::vault_value(vault.id(), NEXT_KEY),
        new_key.expose(),
    )?;
    meta::insert_rotation(
        &mut tx,
        &RotationRow {
            generation: i64::from(generation),
            next_key: sealed_next.into_bytes(),
            started_at: now.unix_timestamp(),
            started_by: actor.to_owned(),
        },
    )
    .await?;
    let event = NewEvent::new(
        actor,
        "key.rotation_started",
        format!("vault:{}", vault.id()),
    )
    .details(json!({ "generation": generation }));
    append(&mut tx, vault, now, event).await?;
    tx.commit().await?;
    vault.learn_key(new_key);
    let key = vault
        .key_of(generation)
        .ok_or(VaultError::KeyGenerationUnknown(generation))?;
    Ok((key, false))
}

/// A seed to replace: row id, the blob read, the blob sealed under the new key.
type Resealed = (i64, Vec<u8>, Vec<u8>);

/// The rows' seeds opened with whichever key sealed them and sealed under `new_key`.
fn reseal_rows(
    vault: &Vault,
    new_key: &DataKey,
    rows: &[tokens::SealedSeedRow],
) -> Result<Vec<Resealed>, VaultError> {
    rows.iter()
        .map(|row| {
            let binding = RowBinding::token_seed(&row.token_id, &row.serial);
            let old = SealedBlob::from_stored(row.sealed_seed.clone());
            let plaintext = vault.key_for(&old)?.unseal(&binding, &old)?;
            let new = new_key.seal(&binding, &plaintext)?;
            Ok((row.id, row.sealed_seed.clone(), new.into_bytes()))
        })
        .collect()
}

async fn reseal_in(tx: &mut WriteTx, rows: &[(i64, Vec<u8>, Vec<u8>)]) -> Result<u64, VaultError> {
    let borrowed: Vec<(i64, &[u8], &[u8])> = rows
        .iter()
        .map(|(id, old, new)| (*id, old.as_slice(), new.as_slice()))
        .collect();
    Ok(tokens::reseal(tx, &borrowed).await?)
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
