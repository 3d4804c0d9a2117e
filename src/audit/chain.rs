//! The hash chain and signatures of the audit trail, as specified in `docs/AUDIT.md`.
//!
//! ```text
//! canonical = "seedvault-audit-v1" || u64be(seq) || lp(time) || lp(actor) || lp(action)
//!             || lp(target) || lp(outcome) || lp(details)        lp(x) = u32be(len(x)) || x
//! hash      = SHA-256(prev_hash || canonical)
//! sig       = Ed25519(audit key, "seedvault-audit-sig-v1" || u64be(seq) || hash)
//! genesis   = SHA-256("seedvault-audit-genesis-v1" || vault_id)   (prev_hash of seq 1)
//! ```

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::store::audit::{AuditRow, AuditRowRef};

const CANONICAL_TAG: &[u8] = b"seedvault-audit-v1";
const SIGNATURE_TAG: &[u8] = b"seedvault-audit-sig-v1";
const GENESIS_TAG: &[u8] = b"seedvault-audit-genesis-v1";

/// The `prev_hash` of the first event.
pub fn genesis_hash(vault_id: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(GENESIS_TAG);
    hasher.update(vault_id.as_bytes());
    hasher.finalize().into()
}

/// The fields an event's hash covers, in order.
pub struct EventFields<'a> {
    pub seq: i64,
    pub time: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub details: &'a str,
}

impl<'a> EventFields<'a> {
    pub fn of(row: &'a AuditRow) -> Self {
        Self {
            seq: row.seq,
            time: &row.time,
            actor: &row.actor,
            action: &row.action,
            target: &row.target,
            outcome: &row.outcome,
            details: &row.details,
        }
    }

    pub fn of_ref(row: &AuditRowRef<'a>) -> Self {
        Self {
            seq: row.seq,
            time: row.time,
            actor: row.actor,
            action: row.action,
            target: row.target,
            outcome: row.outcome,
            details: row.details,
        }
    }

    /// The text fields in canonical order.
    fn texts(&self) -> [&'a str; 6] {
        [
            self.time,
            self.actor,
            self.action,
            self.target,
            self.outcome,
            self.details,
        ]
    }

    /// The canonical byte encoding: unambiguous (every text field is length-prefixed), so a
    /// verifier in any language rebuilds it from the exported fields.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let texts = self.texts();
        let mut out = Vec::with_capacity(
            CANONICAL_TAG.len() + 8 + texts.iter().map(|t| 4 + t.len()).sum::<usize>(),
        );
        out.extend_from_slice(CANONICAL_TAG);
        out.extend_from_slice(&(self.seq as u64).to_be_bytes());
        for text in texts {
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out
    }

    /// SHA-256 of `prev_hash || canonical`, fed piece by piece (verify hashes a million events;
    /// building each canonical buffer first cost an allocation and a copy per event).
    pub fn hash(&self, prev_hash: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(prev_hash);
        hasher.update(CANONICAL_TAG);
        hasher.update((self.seq as u64).to_be_bytes());
        for text in self.texts() {
            hasher.update((text.len() as u32).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.finalize().into()
    }
}

/// The bytes an event's signature covers.
pub fn signed_message(seq: i64, hash: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGNATURE_TAG.len() + 8 + hash.len());
    out.extend_from_slice(SIGNATURE_TAG);
    out.extend_from_slice(&(seq as u64).to_be_bytes());
    out.extend_from_slice(hash);
    out
}

/// Whether `sig` is the vault's signature over `seq || hash`.
pub fn signature_valid_for(key: &VerifyingKey, seq: i64, hash: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = Signature::from_slice(sig) else {
        return false;
    };
    // verify_strict: rejects small-order keys and non-canonical signatures (RFC 8032 §5.1.7
    // leaves them to the implementation), so one event has exactly one valid signature form.
    key.verify_strict(&signed_message(seq, hash), &sig).is_ok()
}

/// Why an event at `seq` does not belong where it is, or `Ok(hash)` (its recomputed hash)
/// when it does: its position (`expected_seq`), its link (`expected_prev`, when known) and its
/// own hash. Signatures are checked separately.
pub fn check_event(
    event: &AuditRowRef<'_>,
    expected_seq: i64,
    expected_prev: Option<&[u8]>,
) -> Result<[u8; 32], ChainBreak> {
    if event.seq != expected_seq {
        return Err(ChainBreak {
            seq: expected_seq,
            reason: if event.seq > expected_seq {
                format!(
                    "event {expected_seq} is missing (the next event is {}): deleted, or the rows were renumbered",
                    event.seq
                )
            } else {
                format!(
                    "event {} appears where {expected_seq} was expected (rows reordered or duplicated)",
                    event.seq
                )
            },
        });
    }
    if let Some(prev) = expected_prev {
        if event.prev_hash != prev {
            return Err(ChainBreak {
                seq: event.seq,
                reason: "prev_hash does not match the previous event's hash (an event before it was removed, inserted or swapped)".into(),
            });
        }
    }
    let hash = EventFields::of_ref(event).hash(event.prev_hash);
    if event.hash != hash {
        return Err(ChainBreak {
            seq: event.seq,
            reason: "hash does not match the event's content (the event was edited)".into(),
        });
    }
    Ok(hash)
}

/// The reason given for an event whose signature fails.
pub const BAD_SIGNATURE: &str = "signature is not valid for this vault's audit key (the chain from here on was written or rewritten without the signing key)";

/// Where and why a chain stops being trustworthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "audit chain broken at seq {}: {}", self.seq, self.reason)
    }
}

/// The last verified event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl std::fmt::Display for ChainHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}",
            self.seq,
            data_encoding::HEXLOWER.encode(&self.hash)
        )
    }
}

/// Walks a complete chain event by event (oldest first) with constant memory.
pub struct ChainVerifier {
    key: VerifyingKey,
    expected_seq: i64,
    expected_prev: [u8; 32],
    count: u64,
}

impl ChainVerifier {
    pub fn new(vault_id: &str, key: VerifyingKey) -> Self {
        Self {
            key,
            expected_seq: 1,
            expected_prev: genesis_hash(vault_id),
            count: 0,
        }
    }

    /// Checks the next event: its position, its link to the previous one, its own hash and
    /// its signature.
    pub fn push(&mut self, row: &AuditRow) -> Result<(), ChainBreak> {
        self.push_ref(&row.as_ref())
    }

    /// [`Self::push`] for a borrowed event.
    pub fn push_ref(&mut self, row: &AuditRowRef<'_>) -> Result<(), ChainBreak> {
        let hash = check_event(row, self.expected_seq, Some(&self.expected_prev))?;
        if !signature_valid_for(&self.key, row.seq, row.hash, row.sig) {
            return Err(ChainBreak {
                seq: row.seq,
                reason: BAD_SIGNATURE.into(),
            });
        }
        self.expected_seq += 1;
        self.expected_prev = hash;
        self.count += 1;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The head reached so far (`None` for an empty chain).
    pub fn head(&self) -> Option<ChainHead> {
        (self.count > 0).then(|| ChainHead {
            seq: self.expected_seq - 1,
            hash: self.expected_prev,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// The worked example of docs/AUDIT.md: a fixed vault id, signing key and event.
    pub(super) struct Example {
        canonical_len: usize,
        details_len: usize,
        canonical: String,
        genesis: String,
        hash: String,
        message: String,
        public_key: String,
        sig: String,
    }

    const VAULT_ID: &str = "6f1c2d3e-0000-4000-8000-000000000001";

    fn example() -> Example {
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let details = crate::audit::canonical_json(&serde_json::json!({
            "slots": [{ "label": "ops", "kind": "passphrase" }],
            "audit_public_key": hex(key.verifying_key().as_bytes()),
        }));
        let fields = EventFields {
            seq: 1,
            time: "2026-11-22T09:30:00.000Z",
            actor: "cli:root",
            action: "vault.init",
            target: "vault:6f1c2d3e-0000-4000-8000-000000000001",
            outcome: "success",
            details: &details,
        };
        let genesis = genesis_hash(VAULT_ID);
        let hash = fields.hash(&genesis);
        let message = signed_message(1, &hash);
        Example {
            canonical_len: fields.canonical_bytes().len(),
            details_len: details.len(),
            canonical: hex(&fields.canonical_bytes()),
            genesis: hex(&genesis),
            hash: hex(&hash),
            message: hex(&message),
            public_key: hex(key.verifying_key().as_bytes()),
            sig: hex(&key.sign(&message).to_bytes()),
        }
    }

    #[test]
    fn the_worked_example_in_docs_audit_md_holds() {
        let doc = include_str!("../../docs/AUDIT.md");
        let e = example();
        for (name, value) in [
            ("canonical", &e.canonical),
            ("genesis", &e.genesis),
            ("hash", &e.hash),
            ("message", &e.message),
            ("public key", &e.public_key),
            ("sig", &e.sig),
        ] {
            // Long values are wrapped in the doc; compare without whitespace.
            let flat: String = doc.split_whitespace().collect();
            assert!(
                flat.contains(value.as_str()),
                "docs/AUDIT.md lacks the {name}: {value}"
            );
        }
        for stated in [
            format!("canonical (hex; {} bytes)", e.canonical_len),
            format!("lp(details), {} bytes", e.details_len),
        ] {
            assert!(doc.contains(&stated), "docs/AUDIT.md should state {stated}");
        }
    }

    #[test]
    fn canonical_bytes_are_length_prefixed_so_fields_cannot_shift() {
        let a = EventFields {
            seq: 1,
            time: "t",
            actor: "ab",
            action: "c",
            target: "",
            outcome: "",
            details: "",
        };
        let b = EventFields {
            actor: "a",
            action: "bc",
            ..a
        };
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
        assert_ne!(a.hash(&[0; 32]), b.hash(&[0; 32]));
    }

    #[test]
    fn the_streamed_hash_is_the_hash_of_the_canonical_bytes() {
        let fields = EventFields {
            seq: 300_000_000_001,
            time: "2026-11-22T09:30:00.000Z",
            actor: "operator:zoë",
            action: "reveal.granted",
            target: "token:T2-1",
            outcome: "success",
            details: r#"{"checks":["callback"]}"#,
        };
        let prev = [9u8; 32];
        let mut whole = prev.to_vec();
        whole.extend(fields.canonical_bytes());
        let expected: [u8; 32] = Sha256::digest(&whole).into();
        assert_eq!(fields.hash(&prev), expected);
    }
}
