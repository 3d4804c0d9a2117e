//! Verifying the trail: the live chain in the database ([`verify_live`]) and an export file
//! ([`verify_export`], in `verify_file.rs`). Both name the first broken event and why.
//!
//! How the live check stays under a second for a million events (docs/AUDIT.md, "Verifying"):
//!
//! 1. **Links and hashes, in parallel.** The seq range `1..=head` is cut into one contiguous
//!    segment per core. Each thread walks its segment on its own connection, recomputing every
//!    hash and checking every link inside the segment; the seams are checked afterwards (the
//!    first `prev_hash` of segment *i+1* against the last hash of segment *i*). The first
//!    break in seq order wins.
//! 2. **Signatures, smartly.** Each event is signed over `seq || hash`, and each hash covers
//!    the previous one, so once the links up to event *n* are sound, a valid signature on *n*
//!    vouches for every event before it (forging an earlier event means finding a SHA-256
//!    collision). So only the last soundly linked event's signature is checked. If it fails,
//!    the chain was rewritten from some *k* on by someone without the key: every event from
//!    *k* on carries a new hash its old signature does not cover, and every event before *k*
//!    kept its valid signature. Validity is monotone in seq, so a binary search (≈20 checks for
//!    a million events) finds *k*. `all_signatures` checks every one instead.
//! 3. **Truncation.** Deleting the newest events leaves a shorter, valid chain; only a head
//!    anchored elsewhere ([`AnchoredHead`]) catches it.

use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use super::chain::{
    check_event, genesis_hash, signature_valid_for, ChainBreak, ChainHead, BAD_SIGNATURE,
};
pub use super::handover::KeySchedule;
use super::handover::{HandOver, HANDOVER_ACTION};
pub use super::verify_file::{
    export_schedule, verify_export, ExportBreak, ExportOptions, ExportVerification,
};
use crate::store::audit::{AuditFilter, AuditReader, AuditRowRef, AuditSource};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the audit trail: {0}")]
    Store(#[from] StoreError),
    #[error("'{0}' is not a head — expected SEQ:HASH as printed by `seedvault audit head`, e.g. 42:9f86d081…")]
    BadHead(String),
    #[error("not an Ed25519 public key: {0} — pass the 64 hex digits printed by `seedvault audit public-key`")]
    BadPublicKey(String),
    #[error("cannot read the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("a verification thread failed: {0}")]
    Thread(String),
}

/// A head written down outside the vault (`seedvault audit head`): `SEQ:HASH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchoredHead {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl FromStr for AnchoredHead {
    type Err = VerifyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || VerifyError::BadHead(text.to_owned());
        let (seq, hash) = text.trim().split_once(':').ok_or_else(bad)?;
        let seq: i64 = seq.parse().map_err(|_| bad())?;
        let hash = data_encoding::HEXLOWER_PERMISSIVE
            .decode(hash.as_bytes())
            .map_err(|_| bad())?;
        Ok(Self {
            seq,
            hash: hash.try_into().map_err(|_| bad())?,
        })
    }
}

/// Parses a hex Ed25519 verification key (as `seedvault audit public-key` prints it).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, VerifyError> {
    let bad = |why: &str| VerifyError::BadPublicKey(why.to_owned());
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .map_err(|_| bad("not hex"))?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not a point on the curve"))
}

/// What to check beyond links, hashes and the head's signature.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Check every event's signature, not only the newest soundly linked one.
    pub all_signatures: bool,
    /// Fail unless this event is still in the chain with this hash.
    pub expect_head: Option<AnchoredHead>,
    /// Threads for the hash walk (0: one per core).
    pub threads: usize,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Events verified: all of them when sound, those before the first break otherwise.
    pub events: u64,
    /// The newest stored event (`None` for an empty trail).
    pub head: Option<ChainHead>,
    /// The first broken event, if any.
    pub broken: Option<ChainBreak>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// What one thread learned about its contiguous seq range.
struct Segment {
    start: i64,
    end: i64,
    /// `prev_hash` of the segment's first event (checked at the seam).
    first_prev: Option<Vec<u8>>,
    last_hash: Option<[u8; 32]>,
    broken: Option<ChainBreak>,
}

fn walk_segment(
    source: &AuditSource,
    keys: &KeySchedule,
    start: i64,
    end: i64,
    genesis: Option<[u8; 32]>,
    all_signatures: bool,
) -> Result<Segment, StoreError> {
    let reader = source.reader()?.mapped()?;
    let mut segment = Segment {
        start,
        end,
        first_prev: None,
        last_hash: None,
        broken: None,
    };
    let mut expected_seq = start;
    let mut prev: Option<[u8; 32]> = genesis;
    reader.scan(&AuditFilter::default(), start, end, |event| {
        if event.seq == start {
            segment.first_prev = Some(event.prev_hash.to_vec());
        }
        let checked = check_event(event, expected_seq, prev.as_ref().map(|p| p.as_slice()))
            .and_then(|hash| {
                if all_signatures
                    && !signature_valid_for(
                        keys.key_for(event.seq),
                        event.seq,
                        event.hash,
                        event.sig,
                    )
                {
                    Err(ChainBreak {
                        seq: event.seq,
                        reason: BAD_SIGNATURE.into(),
                    })
                } else {
                    Ok(hash)
                }
            });
        match checked {
            Ok(hash) => {
                prev = Some(hash);
                segment.last_hash = Some(hash);
                expected_seq += 1;
                true
            }
            Err(broken) => {
                segment.broken = Some(broken);
                false
            }
        }
    })?;
    if segment.broken.is_none() && expected_seq <= end {
        segment.broken = Some(ChainBreak {
            seq: expected_seq,
            reason: format!("event {expected_seq} is missing (deleted)"),
        });
    }
    Ok(segment)
}

/// The key schedule of the live trail: its hand-over events, proofs checked, anchored at
/// `trusted`.
fn live_schedule(reader: &AuditReader, trusted: &VerifyingKey) -> Result<KeySchedule, ChainBreak> {
    let rows = reader
        .with_action(HANDOVER_ACTION)
        .map_err(|e| ChainBreak {
            seq: 1,
            reason: format!("cannot read the signing key hand-overs: {e}"),
        })?;
    let handovers = rows
        .iter()
        .filter_map(|row| HandOver::from_event(row.seq, &row.action, &row.details, &row.prev_hash))
        .collect::<Result<Vec<_>, _>>()?;
    let schedule = KeySchedule::build(trusted, &handovers)?;
    if let (Some(first), Some(init)) = (handovers.first(), reader.get(1).ok().flatten()) {
        if init.action == "vault.init" {
            schedule
                .check_genesis_key(&init.details)
                .map_err(|reason| ChainBreak {
                    seq: first.seq,
                    reason,
                })?;
        }
    }
    Ok(schedule)
}

/// Verifies the live trail `source` ([`crate::store::Store::audit_source`]: the SQLite file or
/// the PostgreSQL pool) against the vault's id and audit public key. Blocking and read-only; safe beside a running server
/// (it checks the chain up to the head it finds when it starts).
pub fn verify_live(
    source: &AuditSource,
    vault_id: &str,
    key: &VerifyingKey,
    options: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let reader = source.reader()?;
    let Some((head_seq, head_hash)) = reader.head()? else {
        let broken = options.expect_head.map(|anchor| ChainBreak {
            seq: 1,
            reason: format!(
                "the trail is empty, but the anchored head is event {}: the trail was truncated",
                anchor.seq
            ),
        });
        return Ok(Verification {
            events: 0,
            head: None,
            broken,
        });
    };
    let head = head_hash.as_slice().try_into().ok().map(|hash| ChainHead {
        seq: head_seq,
        hash,
    });

    // The keys in force: the trusted key, followed across the signing key hand-overs.
    let keys = match live_schedule(&reader, key) {
        Ok(keys) => keys,
        Err(broken) => {
            return Ok(Verification {
                events: 0,
                head,
                broken: Some(broken),
            })
        }
    };
    let keys = &keys;

    // 1. Links and hashes, one segment per thread.
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let threads = threads.clamp(1, usize::try_from(head_seq).unwrap_or(1).max(1));
    let per = (head_seq + threads as i64 - 1) / threads as i64;
    let genesis = genesis_hash(vault_id);
    let segments: Vec<Result<Segment, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads as i64)
            .map(|i| {
                let start = 1 + i * per;
                let end = ((i + 1) * per).min(head_seq);
                let first = (i == 0).then_some(genesis);
                scope.spawn(move || {
                    walk_segment(source, keys, start, end, first, options.all_signatures)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StoreError::Corrupt("verify thread panicked".into())))
            })
            .collect()
    });
    let mut structural: Option<ChainBreak> = None;
    let mut last_hash: Option<[u8; 32]> = None;
    for segment in segments {
        let segment = segment?;
        if segment.start > segment.end {
            continue;
        }
        if let (Some(previous), Some(first_prev)) = (last_hash, &segment.first_prev) {
            if first_prev.as_slice() != previous {
                structural = Some(ChainBreak {
                    seq: segment.start,
                    reason: "prev_hash does not match the previous event's hash (an event before it was removed, inserted or swapped)".into(),
                });
                break;
            }
        }
        if let Some(broken) = segment.broken {
            structural = Some(broken);
            break;
        }
        last_hash = segment.last_hash;
    }

    // 2. Signatures: the newest soundly linked event vouches for those before it.
    let sound_through = structural.as_ref().map_or(head_seq, |b| b.seq - 1);
    let mut broken = structural;
    if !options.all_signatures && sound_through >= 1 {
        let valid = |seq: i64| -> Result<bool, VerifyError> {
            Ok(reader.get(seq)?.is_some_and(|row| {
                signature_valid_for(keys.key_for(row.seq), row.seq, &row.hash, &row.sig)
            }))
        };
        // The newest sound event vouches for all before it; each hand-over's signature by the
        // previous key vouches for the next key (what a verifier trusting an older key needs).
        let mut failing = None;
        for seq in keys
            .handover_seqs()
            .filter(|s| *s <= sound_through)
            .chain(std::iter::once(sound_through))
        {
            if !valid(seq)? {
                failing = Some(seq);
                break;
            }
        }
        if let Some(sound_through) = failing {
            // Invariant: `hi` fails; every seq below `lo` passes.
            let (mut lo, mut hi) = (1, sound_through);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if valid(mid)? {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            broken = Some(ChainBreak {
                seq: hi,
                reason: BAD_SIGNATURE.into(),
            });
        }
    }

    // 3. The anchored head.
    if let Some(anchor) = options.expect_head {
        let anchored = if anchor.seq > head_seq {
            Some(ChainBreak {
                seq: head_seq + 1,
                reason: format!(
                    "the trail ends at event {head_seq}, but the anchored head is event {}: events {}..={} were removed (truncated)",
                    anchor.seq,
                    head_seq + 1,
                    anchor.seq
                ),
            })
        } else {
            match reader.get(anchor.seq)? {
                Some(row) if row.hash == anchor.hash => None,
                Some(_) => Some(ChainBreak {
                    seq: anchor.seq,
                    reason: "hash differs from the anchored head: the chain was rewritten at or before this event".into(),
                }),
                None => Some(ChainBreak {
                    seq: anchor.seq,
                    reason: "the anchored event is missing".into(),
                }),
            }
        };
        if let Some(anchored) = anchored {
            if broken.as_ref().is_none_or(|b| anchored.seq < b.seq) {
                broken = Some(anchored);
            }
        }
    }
    let events = broken.as_ref().map_or(head_seq, |b| b.seq - 1).max(0) as u64;
    Ok(Verification {
        events,
        head,
        broken,
    })
}

/// Verifies a trail handed over event by event in seq order from anywhere but the live SQLite
/// file (the PostgreSQL copy `migrate-to-postgres` makes): every event's position, link and
/// hash as it arrives, then, as [`verify_live`] decides them, the signing key hand-overs
/// (proofs, and the genesis key `vault.init` published), the signature of each hand-over and
/// of the newest event, which vouch for every event before them.
pub struct StreamVerifier {
    expected_seq: i64,
    prev: [u8; 32],
    broken: Option<ChainBreak>,
    init_details: Option<String>,
    handovers: Vec<Result<HandOver, ChainBreak>>,
    /// (seq, hash, sig) of each hand-over and of the newest event so far.
    signed: Vec<(i64, [u8; 32], Vec<u8>)>,
    newest: Option<(i64, [u8; 32], Vec<u8>)>,
}

impl StreamVerifier {
    /// A verifier expecting event 1 of vault `vault_id`'s trail.
    pub fn new(vault_id: &str) -> Self {
        Self {
            expected_seq: 1,
            prev: genesis_hash(vault_id),
            broken: None,
            init_details: None,
            handovers: Vec::new(),
            signed: Vec::new(),
            newest: None,
        }
    }

    /// Checks the next event; `false` once the chain is broken (later events are not needed).
    pub fn push(&mut self, event: &AuditRowRef<'_>) -> bool {
        if self.broken.is_some() {
            return false;
        }
        match check_event(event, self.expected_seq, Some(&self.prev)) {
            Ok(hash) => {
                if event.seq == 1 && event.action == "vault.init" {
                    self.init_details = Some(event.details.to_owned());
                }
                if let Some(handover) =
                    HandOver::from_event(event.seq, event.action, event.details, event.prev_hash)
                {
                    self.handovers.push(handover);
                    self.signed.push((event.seq, hash, event.sig.to_vec()));
                }
                self.newest = Some((event.seq, hash, event.sig.to_vec()));
                self.prev = hash;
                self.expected_seq += 1;
                true
            }
            Err(broken) => {
                self.broken = Some(broken);
                false
            }
        }
    }

    /// The verdict, with `trusted` (the vault's audit public key) anchoring the signatures.
    pub fn finish(self, trusted: &VerifyingKey) -> Verification {
        let events = u64::try_from(self.expected_seq - 1).unwrap_or(0);
        let head = self.newest.as_ref().map(|(seq, hash, _)| ChainHead {
            seq: *seq,
            hash: *hash,
        });
        let verdict = |broken| Verification {
            events,
            head: head.clone(),
            broken,
        };
        if self.broken.is_some() {
            return verdict(self.broken);
        }
        let schedule = match self
            .handovers
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .and_then(|handovers| {
                let schedule = KeySchedule::build(trusted, &handovers)?;
                if let (Some(first), Some(details)) = (handovers.first(), &self.init_details) {
                    schedule
                        .check_genesis_key(details)
                        .map_err(|reason| ChainBreak {
                            seq: first.seq,
                            reason,
                        })?;
                }
                Ok(schedule)
            }) {
            Ok(schedule) => schedule,
            Err(broken) => return verdict(Some(broken)),
        };
        for (seq, hash, sig) in self.signed.iter().chain(self.newest.iter()) {
            if !signature_valid_for(schedule.key_for(*seq), *seq, hash, sig) {
                return verdict(Some(ChainBreak {
                    seq: *seq,
                    reason: BAD_SIGNATURE.into(),
                }));
            }
        }
        verdict(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::audit::chain::EventFields;
    use crate::store::Store;
    use crate::vault::open;
    use crate::vault::Vault;
    use time::OffsetDateTime;

    async fn trail(events: u64) -> (tempfile::TempDir, Store, Vault) {
        let (dir, store, vault) = open::temporary().await;
        crate::audit::fixture::fill(
            store.path().unwrap(),
            &vault,
            events,
            OffsetDateTime::UNIX_EPOCH,
        )
        .unwrap();
        (dir, store, vault)
    }

    fn verify(store: &Store, vault: &Vault, options: &VerifyOptions) -> Verification {
        verify_live(
            &store.audit_source().unwrap(),
            vault.id(),
            &vault.audit_public_key(),
            options,
        )
        .unwrap()
    }

    /// Runs SQL with the append-only triggers dropped, as a tamperer with the file would.
    async fn tamper(store: &Store, sql: &[&str]) {
        let drop_triggers = [
            "DROP TRIGGER IF EXISTS audit_events_no_update",
            "DROP TRIGGER IF EXISTS audit_events_no_delete",
        ];
        for statement in drop_triggers.iter().chain(sql) {
            crate::store::execute(store, statement).await.unwrap();
        }
    }

    /// Rewrites events `from..` with recomputed hashes and links, keeping the old signatures
    /// (what someone without the signing key can do).
    async fn rehash_from(store: &Store, from: i64) {
        let rows = crate::store::audit::page_after(store, from - 1, 1_000_000)
            .await
            .unwrap();
        let mut prev = crate::store::audit::page_after(store, from - 2, 1)
            .await
            .unwrap()[0]
            .hash
            .clone();
        for row in rows {
            let mut row = row;
            row.prev_hash = prev;
            row.hash = EventFields::of(&row).hash(&row.prev_hash).to_vec();
            crate::store::audit::set_hashes(store, row.seq, &row.prev_hash, &row.hash)
                .await
                .unwrap();
            prev = row.hash;
        }
    }

    #[tokio::test]
    async fn an_untouched_trail_verifies_with_any_number_of_threads() {
        let (_dir, store, vault) = trail(99).await;
        for threads in [1, 2, 3, 7, 200] {
            for all_signatures in [false, true] {
                let result = verify(
                    &store,
                    &vault,
                    &VerifyOptions {
                        threads,
                        all_signatures,
                        ..Default::default()
                    },
                );
                assert!(result.ok(), "{threads} threads: {:?}", result.broken);
                assert_eq!(result.events, 100);
                assert_eq!(result.head.unwrap().seq, 100);
            }
        }
    }

    #[tokio::test]
    async fn a_rewrite_without_the_key_is_found_by_binary_search_at_its_first_seq() {
        for first in [2, 37, 50, 51, 100] {
            let (_dir, store, vault) = trail(99).await;
            tamper(
                &store,
                &[&format!(
                    "UPDATE audit_events SET actor = 'mallory' WHERE seq = {first}"
                )],
            )
            .await;
            rehash_from(&store, first).await;
            for threads in [1, 2, 3] {
                let result = verify(
                    &store,
                    &vault,
                    &VerifyOptions {
                        threads,
                        ..Default::default()
                    },
                );
                let broken = result.broken.unwrap();
                assert_eq!(broken.seq, first, "{threads} threads");
                assert!(broken.reason.contains("signature"), "{}", broken.reason);
                assert_eq!(result.events, first as u64 - 1);
            }
        }
    }

    #[tokio::test]
    async fn a_break_on_a_segment_seam_is_caught() {
        let (_dir, store, vault) = trail(99).await;
        // With two threads the seam is between 50 and 51.
        tamper(&store, &["DELETE FROM audit_events WHERE seq = 51"]).await;
        for threads in [1, 2, 4] {
            let result = verify(
                &store,
                &vault,
                &VerifyOptions {
                    threads,
                    ..Default::default()
                },
            );
            assert_eq!(result.broken.unwrap().seq, 51, "{threads} threads");
        }
    }

    #[tokio::test]
    async fn an_anchored_head_catches_truncation_and_a_rewritten_head() {
        let (_dir, store, vault) = trail(9).await;
        let anchor = verify(&store, &vault, &VerifyOptions::default())
            .head
            .unwrap();
        let anchored: AnchoredHead = anchor.to_string().parse().unwrap();
        assert_eq!(anchored.seq, 10);
        let with_anchor = VerifyOptions {
            expect_head: Some(anchored),
            ..Default::default()
        };
        assert!(verify(&store, &vault, &with_anchor).ok());
        tamper(&store, &["DELETE FROM audit_events WHERE seq >= 8"]).await;
        assert!(verify(&store, &vault, &VerifyOptions::default()).ok());
        let broken = verify(&store, &vault, &with_anchor).broken.unwrap();
        assert_eq!(broken.seq, 8);
        assert!(broken.reason.contains("truncated"), "{}", broken.reason);
        let other: AnchoredHead = format!("5:{}", "ab".repeat(32)).parse().unwrap();
        let broken = verify(
            &store,
            &vault,
            &VerifyOptions {
                expect_head: Some(other),
                ..Default::default()
            },
        )
        .broken
        .unwrap();
        assert_eq!(broken.seq, 5);
    }

    #[test]
    fn a_bad_head_or_key_names_the_expected_form() {
        for bad in ["", "12", "x:ab", "3:zz", "3:abcd"] {
            let err = bad.parse::<AnchoredHead>().unwrap_err().to_string();
            assert!(err.contains("SEQ:HASH"), "{bad}: {err}");
        }
        let err = parse_public_key("abcd").unwrap_err().to_string();
        assert!(err.contains("audit public-key"), "{err}");
    }
}
