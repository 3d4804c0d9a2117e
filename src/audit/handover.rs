//! Audit signing key hand-overs (`seedvault audit rotate-signing-key`, docs/AUDIT.md §7).
//!
//! A hand-over is the event `audit.signing_key_rotated`, target `audit`, whose details are
//! `{"previous_public_key": HEX, "proof": HEX, "public_key": HEX}`. It is the last event
//! signed by the previous key; every event after it is signed by the new key, until the next
//! hand-over. `proof` is the new key's Ed25519 signature over
//! `"seedvault-audit-handover-v1" || u64be(seq) || prev_hash || previous_public_key || public_key`
//! (`seq` and `prev_hash` of the hand-over event itself), so the new key vouches for the whole
//! chain before it and the old key's signature on the hand-over vouches for the new key.
//!
//! A verifier that trusts any one key of the chain follows the hand-overs from it: each must
//! name as previous the key in force before it, carry a valid proof, and every event must be
//! signed by the key in force at its seq ([`KeySchedule`]).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::json;
use time::OffsetDateTime;

use super::chain::ChainBreak;
use super::{AuditError, NewEvent};
use crate::store::{meta, Store};
use crate::vault::Vault;

/// The hand-over's action.
pub const HANDOVER_ACTION: &str = "audit.signing_key_rotated";
const PROOF_TAG: &[u8] = b"seedvault-audit-handover-v1";

/// The bytes a hand-over's proof signs.
pub fn proof_message(seq: i64, prev_hash: &[u8], previous: &[u8; 32], next: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROOF_TAG.len() + 8 + prev_hash.len() + 64);
    out.extend_from_slice(PROOF_TAG);
    out.extend_from_slice(&(seq as u64).to_be_bytes());
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(previous);
    out.extend_from_slice(next);
    out
}

/// A hand-over read from the trail, its proof checked.
#[derive(Debug, Clone)]
pub struct HandOver {
    pub seq: i64,
    pub previous: VerifyingKey,
    pub next: VerifyingKey,
}

impl HandOver {
    /// Reads a hand-over event (`None` for any other action) and checks its proof.
    pub fn from_event(
        seq: i64,
        action: &str,
        details: &str,
        prev_hash: &[u8],
    ) -> Option<Result<Self, ChainBreak>> {
        if action != HANDOVER_ACTION {
            return None;
        }
        let broken = |why: &str| ChainBreak {
            seq,
            reason: format!("a signing key hand-over {why}"),
        };
        let parsed: Result<Self, ChainBreak> = (|| {
            let value: serde_json::Value = serde_json::from_str(details)
                .map_err(|_| broken("has details that are not JSON"))?;
            let key = |name: &str| -> Result<VerifyingKey, ChainBreak> {
                let bytes = value[name]
                    .as_str()
                    .and_then(|t| data_encoding::HEXLOWER.decode(t.as_bytes()).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| broken(&format!("lacks a valid {name}")))?;
                VerifyingKey::from_bytes(&bytes)
                    .map_err(|_| broken(&format!("has an invalid {name}")))
            };
            let previous = key("previous_public_key")?;
            let next = key("public_key")?;
            let proof = value["proof"]
                .as_str()
                .and_then(|t| data_encoding::HEXLOWER.decode(t.as_bytes()).ok())
                .and_then(|b| Signature::from_slice(&b).ok())
                .ok_or_else(|| broken("lacks a valid proof"))?;
            let message = proof_message(seq, prev_hash, previous.as_bytes(), next.as_bytes());
            next.verify_strict(&message, &proof)
                .map_err(|_| broken("has a proof the new key did not sign (forged)"))?;
            Ok(Self {
                seq,
                previous,
                next,
            })
        })();
        Some(parsed)
    }
}

/// Which key signs which events: the key before the first hand-over, and each hand-over's
/// new key from the event after it.
#[derive(Debug, Clone)]
pub struct KeySchedule {
    first: VerifyingKey,
    /// (last seq signed by the previous key, the key from the next seq on)
    changes: Vec<(i64, VerifyingKey)>,
}

impl KeySchedule {
    /// One key for the whole chain (no hand-over).
    pub fn single(key: VerifyingKey) -> Self {
        Self {
            first: key,
            changes: Vec::new(),
        }
    }

    /// The schedule the hand-overs (in seq order) describe, anchored at `trusted`, which must
    /// be one of its keys; each hand-over must name the key in force before it as previous.
    pub fn build(trusted: &VerifyingKey, handovers: &[HandOver]) -> Result<Self, ChainBreak> {
        let Some(first) = handovers.first() else {
            return Ok(Self::single(*trusted));
        };
        let mut schedule = Self {
            first: first.previous,
            changes: Vec::new(),
        };
        for handover in handovers {
            if handover.previous != schedule.newest() {
                return Err(ChainBreak {
                    seq: handover.seq,
                    reason: "a signing key hand-over names as previous a key that was not in force (forged or out of order)".into(),
                });
            }
            schedule.changes.push((handover.seq, handover.next));
        }
        let known = std::iter::once(&schedule.first).chain(schedule.changes.iter().map(|(_, k)| k));
        if !known.into_iter().any(|k| k == trusted) {
            let seq = handovers.last().map_or(1, |h| h.seq);
            return Err(ChainBreak {
                seq,
                reason: "the trusted verification key is none of the keys the signing key hand-overs name (forged hand-overs, or the wrong --public-key)".into(),
            });
        }
        Ok(schedule)
    }

    /// The key that signs event `seq`.
    pub fn key_for(&self, seq: i64) -> &VerifyingKey {
        self.changes
            .iter()
            .rev()
            .find(|(last_old, _)| seq > *last_old)
            .map_or(&self.first, |(_, key)| key)
    }

    /// The key in force after the last hand-over (signs new events and export trailers).
    pub fn newest(&self) -> VerifyingKey {
        self.changes.last().map_or(self.first, |(_, key)| *key)
    }

    /// Refuses a schedule whose first key is not the one event 1 (`vault.init`) published in
    /// its details (`audit_public_key`): a forged first hand-over would name its forger's key
    /// as the one in force.
    pub fn check_genesis_key(&self, init_details: &str) -> Result<(), String> {
        let Some(published) = serde_json::from_str::<serde_json::Value>(init_details)
            .ok()
            .and_then(|v| v["audit_public_key"].as_str().map(str::to_owned))
        else {
            return Ok(());
        };
        if self.changes.is_empty()
            || published == data_encoding::HEXLOWER.encode(self.first.as_bytes())
        {
            Ok(())
        } else {
            Err("the first signing key hand-over names as previous a key other than the one the vault was created with (forged)".into())
        }
    }

    /// The seqs of the hand-overs (each the last event of its key).
    pub fn handover_seqs(&self) -> impl Iterator<Item = i64> + '_ {
        self.changes.iter().map(|(seq, _)| *seq)
    }
}

/// What `audit rotate-signing-key` did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub seq: i64,
    pub previous: VerifyingKey,
    pub next: VerifyingKey,
}

/// Starts a new audit signing key: appends the hand-over (signed by the current key, with the
/// new key's proof), stores the new key sealed under the data key, and signs with it from then
/// on — one transaction.
pub async fn rotate_signing_key(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
) -> Result<Rotated, AuditError> {
    let next = SigningKey::generate(&mut rand::rngs::OsRng);
    let sealed = vault
        .seal_signing_key(&next)
        .map_err(|e| AuditError::Key(e.to_string()))?;
    let mut tx = store.begin_write().await?;
    let actor = actor.to_owned();
    let next_for_proof = next.clone();
    let row = tx
        .inline(|c| {
            // Adopt a key another process rotated to, so the previous key is the stored one.
            super::follow_signing_key(c, vault)?;
            let previous = vault.audit_public_key();
            let head = crate::store::audit::head_on(c)?;
            let (seq, prev_hash) = match head {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, super::chain::genesis_hash(vault.id()).to_vec()),
            };
            let next_public = next_for_proof.verifying_key();
            let proof = next_for_proof.sign(&proof_message(
                seq,
                &prev_hash,
                previous.as_bytes(),
                next_public.as_bytes(),
            ));
            let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
            let event = NewEvent::new(actor, HANDOVER_ACTION, "audit").details(json!({
                "previous_public_key": hex(previous.as_bytes()),
                "public_key": hex(next_public.as_bytes()),
                "proof": hex(&proof.to_bytes()),
            }));
            let row = super::append_on(c, vault, now, event)?;
            Ok::<_, AuditError>((row.seq, previous))
        })
        .await??;
    meta::set_signing_key(&mut tx, sealed.as_bytes(), next.verifying_key().as_bytes()).await?;
    tx.commit().await?;
    let next_public = next.verifying_key();
    vault.replace_signer(next);
    Ok(Rotated {
        seq: row.0,
        previous: row.1,
        next: next_public,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::verify::{verify_live, VerifyOptions};
    use crate::vault::{open, DataKey};

    fn verify(store: &Store, vault_id: &str, key: &VerifyingKey) -> Option<ChainBreak> {
        let options = VerifyOptions {
            all_signatures: false,
            ..Default::default()
        };
        let quick = verify_live(&store.audit_source().unwrap(), vault_id, key, &options)
            .unwrap()
            .broken;
        let options = VerifyOptions {
            all_signatures: true,
            ..Default::default()
        };
        let all = verify_live(&store.audit_source().unwrap(), vault_id, key, &options)
            .unwrap()
            .broken;
        assert_eq!(quick.is_some(), all.is_some(), "{quick:?} / {all:?}");
        all
    }

    async fn events(store: &Store, vault: &Vault, n: usize) {
        let mut tx = store.begin_write().await.unwrap();
        for _ in 0..n {
            crate::audit::append(
                &mut tx,
                vault,
                OffsetDateTime::UNIX_EPOCH,
                NewEvent::new("t", "test.event", "t"),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_real_hand_over_verifies_under_either_key_and_a_forged_one_is_rejected() {
        let (_dir, store, vault) = open::temporary().await;
        events(&store, &vault, 3).await;
        let original = vault.audit_public_key();
        let rotated = rotate_signing_key(&store, &vault, OffsetDateTime::UNIX_EPOCH, "t")
            .await
            .unwrap();
        assert_eq!(rotated.seq, 5);
        events(&store, &vault, 3).await;
        assert_eq!(verify(&store, vault.id(), &rotated.next), None);
        assert_eq!(verify(&store, vault.id(), &original), None);

        // A forger with write access to the database but no key: a hand-over from a key of
        // theirs to another, signed by theirs, with their key stored as the vault's.
        let forger_key = SigningKey::from_bytes(&[42; 32]);
        let forger = Vault::new(
            vault.id().to_owned(),
            DataKey::generate(),
            forger_key.clone(),
            false,
        );
        let mut tx = store.begin_write().await.unwrap();
        meta::set_signing_key(
            &mut tx,
            forger.seal_signing_key(&forger_key).unwrap().as_bytes(),
            forger_key.verifying_key().as_bytes(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let forged = rotate_signing_key(&store, &forger, OffsetDateTime::UNIX_EPOCH, "t")
            .await
            .unwrap();
        events(&store, &forger, 2).await;
        for trusted in [forged.next, rotated.next, original] {
            let broken = verify(&store, vault.id(), &trusted).expect("the forgery must be caught");
            assert_eq!(broken.seq, forged.seq, "{broken}");
        }
    }

    #[test]
    fn a_schedule_gives_each_event_the_key_in_force_and_refuses_a_broken_succession() {
        let k = |n: u8| SigningKey::from_bytes(&[n; 32]).verifying_key();
        let handovers = [
            HandOver {
                seq: 5,
                previous: k(1),
                next: k(2),
            },
            HandOver {
                seq: 9,
                previous: k(2),
                next: k(3),
            },
        ];
        let schedule = KeySchedule::build(&k(3), &handovers).unwrap();
        assert_eq!(schedule.key_for(1), &k(1));
        assert_eq!(
            schedule.key_for(5),
            &k(1),
            "a hand-over is signed by the old key"
        );
        assert_eq!(schedule.key_for(6), &k(2));
        assert_eq!(schedule.key_for(10), &k(3));
        assert!(
            KeySchedule::build(&k(1), &handovers).is_ok(),
            "the first key anchors too"
        );
        assert!(KeySchedule::build(&k(4), &handovers).is_err());
        let out_of_line = [
            handovers[0].clone(),
            HandOver {
                previous: k(1),
                ..handovers[1].clone()
            },
        ];
        assert_eq!(KeySchedule::build(&k(3), &out_of_line).unwrap_err().seq, 9);
    }
}
