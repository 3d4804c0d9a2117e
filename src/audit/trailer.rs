//! The signed trailer that ends every export (docs/AUDIT.md §4): what the export selected,
//! how many events it holds, a digest over them and the head at export time, signed with the
//! audit key. Without it a reader cannot tell a complete export from one with records cut
//! out; with it, removing, adding or replacing any record fails verification.
//!
//! ```text
//! trailer = "seedvault-audit-export-v1" || lp(vault_id) || lp(filter)
//!           || u64be(first_seq) || u64be(last_seq) || u64be(count)
//!           || u64be(head_seq) || head_hash || digest
//! digest  = SHA-256(hash_1 || hash_2 || … )      over the events written, in order
//! sig     = Ed25519(audit key, trailer)
//! ```

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::chain::ChainHead;

const TRAILER_TAG: &[u8] = b"seedvault-audit-export-v1";

/// The `type` of an event record in an export.
pub const EVENT_TYPE: &str = "event";
/// The `type` of the trailer record.
pub const TRAILER_TYPE: &str = "export-trailer";

/// What a trailer states. `first_seq` and `last_seq` are the seqs of the first and last event
/// written (0 when the filter selected none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub vault_id: String,
    /// The filter as canonical JSON (keys sorted; `null` where not set), exactly as signed.
    pub filter: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: u64,
    /// The newest event when the export began (`0:` and the genesis hash for an empty trail).
    pub head: ChainHead,
    /// SHA-256 over the written events' hashes, in order.
    pub digest: [u8; 32],
}

impl Trailer {
    /// The bytes the signature covers: every field, length-prefixed or fixed-width, so no two
    /// trailers share an encoding.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            TRAILER_TAG.len() + 8 + self.vault_id.len() + self.filter.len() + 4 * 8 + 64,
        );
        out.extend_from_slice(TRAILER_TAG);
        for text in [&self.vault_id, &self.filter] {
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        for n in [
            self.first_seq as u64,
            self.last_seq as u64,
            self.count,
            self.head.seq as u64,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&self.head.hash);
        out.extend_from_slice(&self.digest);
        out
    }

    /// Whether `sig` is the audit key's signature over this trailer.
    pub fn signature_valid(&self, key: &VerifyingKey, sig: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        key.verify_strict(&self.canonical_bytes(), &sig).is_ok()
    }

    /// Whether the filter selects every event (an unfiltered, complete export).
    pub fn selects_everything(&self) -> Result<bool, String> {
        match serde_json::from_str::<serde_json::Value>(&self.filter) {
            Ok(serde_json::Value::Object(map)) => Ok(map.values().all(|v| v.is_null())),
            _ => Err("the trailer's filter is not a JSON object".into()),
        }
    }

    /// The record written at the end of an export.
    pub fn to_record(&self, sig: &[u8; 64]) -> TrailerRecord {
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        TrailerRecord {
            kind: TRAILER_TYPE.to_owned(),
            vault_id: self.vault_id.clone(),
            filter: self.filter.clone(),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            count: self.count,
            head: self.head.to_string(),
            digest: hex(&self.digest),
            sig: hex(sig),
        }
    }
}

/// The trailer as it appears in an export: a JSON line of its own, or in CSV the `details`
/// column of a row whose `type` is `export-trailer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrailerRecord {
    /// Always `export-trailer`.
    #[serde(rename = "type")]
    pub kind: String,
    pub vault_id: String,
    /// Canonical JSON text: `{"action":…,"actor":…,"since":…,"token":…,"until":…}`.
    pub filter: String,
    pub first_seq: i64,
    pub last_seq: i64,
    pub count: u64,
    /// `SEQ:HASH`, as `seedvault audit head` prints it.
    pub head: String,
    /// Hex SHA-256 over the events' hashes.
    pub digest: String,
    /// Hex Ed25519 signature over the trailer's canonical encoding.
    pub sig: String,
}

/// Decodes lower-case hex of exactly `len` bytes; the error names the field.
pub(crate) fn strict_hex(field: &str, text: &str, len: usize) -> Result<Vec<u8>, String> {
    let bytes = data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .map_err(|_| format!("{field} is not lower-case hex"))?;
    if bytes.len() != len {
        return Err(format!("{field} is not {len} bytes"));
    }
    Ok(bytes)
}

impl TrailerRecord {
    /// The trailer and its signature, every field checked for form.
    pub fn decode(&self) -> Result<(Trailer, Vec<u8>), String> {
        if self.kind != TRAILER_TYPE {
            return Err(format!("type is '{}', not '{TRAILER_TYPE}'", self.kind));
        }
        let (seq, hash) = self.head.split_once(':').ok_or("head is not SEQ:HASH")?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err("head is not SEQ:HASH".into());
        }
        let head_seq: i64 = seq.parse().map_err(|_| "head's seq is out of range")?;
        let head_hash = strict_hex("head's hash", hash, 32)?;
        let digest = strict_hex("digest", &self.digest, 32)?;
        let sig = strict_hex("sig", &self.sig, 64)?;
        if self.first_seq < 0 || self.last_seq < self.first_seq {
            return Err("first_seq and last_seq are not a range".into());
        }
        let trailer = Trailer {
            vault_id: self.vault_id.clone(),
            filter: self.filter.clone(),
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            count: self.count,
            head: ChainHead {
                seq: head_seq,
                hash: head_hash.try_into().map_err(|_| "head's hash")?,
            },
            digest: digest.try_into().map_err(|_| "digest")?,
        };
        trailer.selects_everything()?;
        Ok((trailer, sig))
    }
}

/// The running digest over the events of an export, and their first and last seq.
#[derive(Default)]
pub struct ExportDigest {
    hasher: Sha256,
    pub count: u64,
    pub first_seq: i64,
    pub last_seq: i64,
}

impl ExportDigest {
    pub fn push(&mut self, seq: i64, hash: &[u8]) {
        if self.count == 0 {
            self.first_seq = seq;
        }
        self.last_seq = seq;
        self.count += 1;
        self.hasher.update(hash);
    }

    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn trailer() -> Trailer {
        let mut digest = ExportDigest::default();
        digest.push(4, &[1; 32]);
        digest.push(9, &[2; 32]);
        Trailer {
            vault_id: "6f1c2d3e-0000-4000-8000-000000000001".into(),
            filter:
                r#"{"action":null,"actor":"operator:bob","since":null,"token":null,"until":null}"#
                    .into(),
            first_seq: digest.first_seq,
            last_seq: digest.last_seq,
            count: digest.count,
            head: ChainHead {
                seq: 12,
                hash: [3; 32],
            },
            digest: digest.finish(),
        }
    }

    #[test]
    fn a_trailer_round_trips_through_its_record_and_its_signature_covers_every_field() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let trailer = trailer();
        let sig = key.sign(&trailer.canonical_bytes()).to_bytes();
        let record = trailer.to_record(&sig);
        let line = serde_json::to_string(&record).unwrap();
        let (back, back_sig) = serde_json::from_str::<TrailerRecord>(&line)
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(back, trailer);
        assert!(back.signature_valid(&key.verifying_key(), &back_sig));
        assert!(!back.selects_everything().unwrap());
        let changed = [
            Trailer {
                count: 3,
                ..trailer.clone()
            },
            Trailer {
                first_seq: 5,
                ..trailer.clone()
            },
            Trailer {
                filter: trailer.filter.replace("bob", "bo"),
                ..trailer.clone()
            },
            Trailer {
                head: ChainHead {
                    seq: 13,
                    hash: [3; 32],
                },
                ..trailer.clone()
            },
        ];
        for other in changed {
            assert!(
                !other.signature_valid(&key.verifying_key(), &sig),
                "{other:?}"
            );
        }
    }

    #[test]
    fn a_trailer_with_unknown_keys_or_upper_case_hex_is_refused() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let trailer = trailer();
        let line = serde_json::to_string(
            &trailer.to_record(&key.sign(&trailer.canonical_bytes()).to_bytes()),
        )
        .unwrap();
        let extra = line.replacen('{', r#"{"note":"x","#, 1);
        assert!(serde_json::from_str::<TrailerRecord>(&extra).is_err());
        let record: TrailerRecord = serde_json::from_str(&line).unwrap();
        let upper = TrailerRecord {
            digest: record.digest.to_uppercase(),
            ..record.clone()
        };
        assert!(upper.decode().unwrap_err().contains("lower-case hex"));
        let duplicate = line.replacen('{', r#"{"count":0,"#, 1);
        assert!(serde_json::from_str::<TrailerRecord>(&duplicate).is_err());
    }

    #[test]
    fn the_worked_trailer_in_docs_audit_md_holds() {
        let doc = include_str!("../../docs/AUDIT.md");
        let flat: String = doc.split_whitespace().collect();
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let hash: [u8; 32] = data_encoding::HEXLOWER
            .decode(b"a0254cac056c4c7c9cf474e32efeed924f3810c2586f0677f12048966c455c75")
            .unwrap()
            .try_into()
            .unwrap();
        let mut digest = ExportDigest::default();
        digest.push(1, &hash);
        let trailer = Trailer {
            vault_id: "6f1c2d3e-0000-4000-8000-000000000001".into(),
            filter: crate::audit::canonical_json(&serde_json::json!({
                "since": null, "until": null, "actor": null, "token": null, "action": null,
            })),
            first_seq: 1,
            last_seq: 1,
            count: 1,
            head: ChainHead { seq: 1, hash },
            digest: digest.finish(),
        };
        assert!(trailer.selects_everything().unwrap());
        let bytes = trailer.canonical_bytes();
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        for value in [
            trailer.filter.clone(),
            hex(&trailer.digest),
            hex(&bytes),
            hex(&key.sign(&bytes).to_bytes()),
            format!("trailer(hex;{}bytes)", bytes.len()),
        ] {
            assert!(flat.contains(&value), "docs/AUDIT.md lacks {value}");
        }
    }
}
