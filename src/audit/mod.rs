//! The tamper-evident audit trail (DESIGN §7): events appended inside the caller's
//! transaction, hash-chained and signed with the vault's audit key.
//!
//! Every action that matters calls [`append`] with the same [`WriteTx`] that makes its change,
//! so the change and its event commit together or not at all.

pub mod chain;
pub mod export;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixture;
pub mod handover;
pub mod trailer;
pub mod verify;
mod verify_file;

use time::OffsetDateTime;

use crate::store::audit::AuditRow;
use crate::store::{Inline, StoreError, WriteTx};
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("could not write the audit event, so the action was not carried out: {0}")]
    Store(#[from] StoreError),
    #[error("the audit trail's newest event is damaged ({0}) — run `seedvault audit verify`")]
    CorruptHead(String),
    #[error("cannot format the event time: {0}")]
    Time(String),
    #[error("cannot use the audit signing key: {0}")]
    Key(String),
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Self::Success, Self::Denied, Self::Failure];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text.trim())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }
}

/// An event to append. `details` must never hold a seed, a code, an invite token, a challenge
/// or key material: it is exported in clear.
pub struct NewEvent {
    pub actor: String,
    pub action: &'static str,
    pub target: String,
    pub outcome: Outcome,
    pub details: serde_json::Value,
}

impl NewEvent {
    pub fn new(actor: impl Into<String>, action: &'static str, target: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            action,
            target: target.into(),
            outcome: Outcome::Success,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Formats an event time: RFC 3339 in UTC with exactly three fractional digits
/// (`2026-11-22T23:58:39.515Z`), so that times sort and compare as text.
pub fn format_time(at: OffsetDateTime) -> Result<String, AuditError> {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .map_err(|e| AuditError::Time(e.to_string()))
}

/// Compact JSON with object keys sorted at every level, whatever serde_json's map order is
/// (a dependency can switch it to insertion order through the `preserve_order` feature).
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let ordered: std::collections::BTreeMap<&String, serde_json::Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::to_value(ordered).unwrap_or(serde_json::Value::Null)
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    match value {
        serde_json::Value::Object(map) => {
            let ordered: std::collections::BTreeMap<&String, serde_json::Value> =
                map.iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::to_string(&ordered).unwrap_or_else(|_| "{}".into())
        }
        other => sorted(other).to_string(),
    }
}

/// Appends `event` inside `tx`: links it to the current head, hashes and signs it.
pub async fn append(
    tx: &mut WriteTx,
    vault: &Vault,
    now: OffsetDateTime,
    event: NewEvent,
) -> Result<AuditRow, AuditError> {
    tx.inline(|c| append_on(c, vault, now, event)).await?
}

/// [`append`] for a caller that already holds its transaction's connection for a run of
/// statements (the reveal grant, see [`WriteTx::inline`]).
pub fn append_on(
    c: &Inline<'_>,
    vault: &Vault,
    now: OffsetDateTime,
    event: NewEvent,
) -> Result<AuditRow, AuditError> {
    follow_signing_key(c, vault)?;
    let head = crate::store::audit::head_on(c)?;
    let row = next_row(head, vault, now, event)?;
    crate::store::audit::insert_on(c, &row)?;
    Ok(row)
}

/// Adopts the stored audit signing key when another process rotated it
/// (`audit rotate-signing-key` beside the server): every event after a hand-over must be
/// signed by the new key. One indexed read per append.
pub(crate) fn follow_signing_key(c: &Inline<'_>, vault: &Vault) -> Result<(), AuditError> {
    let Some(stored) = crate::store::meta::signing_public_key_on(c)? else {
        return Ok(());
    };
    if stored.as_slice() == vault.audit_public_key().as_bytes() {
        return Ok(());
    }
    let Some(row) = crate::store::meta::signing_key_on(c)? else {
        return Ok(());
    };
    vault
        .adopt_signing_key(&row.sealed, &row.public)
        .map_err(|e| AuditError::Key(e.to_string()))
}

/// The event after `head` (the chain's last `seq` and hash), hashed and signed.
fn next_row(
    head: Option<(i64, Vec<u8>)>,
    vault: &Vault,
    now: OffsetDateTime,
    event: NewEvent,
) -> Result<AuditRow, AuditError> {
    let (seq, prev_hash) = match head {
        Some((seq, hash)) if hash.len() == 32 => (seq + 1, hash),
        Some((seq, _)) => {
            return Err(AuditError::CorruptHead(format!(
                "event {seq} has a malformed hash"
            )))
        }
        None => (1, chain::genesis_hash(vault.id()).to_vec()),
    };
    let details = canonical_json(&event.details);
    let time = format_time(now)?;
    let fields = chain::EventFields {
        seq,
        time: &time,
        actor: &event.actor,
        action: event.action,
        target: &event.target,
        outcome: event.outcome.as_str(),
        details: &details,
    };
    let hash = fields.hash(&prev_hash);
    let sig = vault.sign_audit(&chain::signed_message(seq, &hash));
    let row = AuditRow {
        seq,
        time,
        actor: event.actor,
        action: event.action.to_owned(),
        target: event.target,
        outcome: event.outcome.as_str().to_owned(),
        details,
        prev_hash,
        hash: hash.to_vec(),
        sig: sig.to_vec(),
    };
    Ok(row)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::chain::{ChainVerifier, EventFields};
    use super::*;
    use crate::store::Store;
    use crate::vault::open;

    async fn vault() -> (tempfile::TempDir, Store, Vault) {
        open::temporary().await
    }

    async fn all(store: &Store) -> Vec<AuditRow> {
        crate::store::audit::page_after(store, 0, 1000)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn appended_events_form_a_signed_chain_that_verifies() {
        let (_dir, store, vault) = vault().await;
        let mut tx = store.begin_write().await.unwrap();
        for i in 0..3 {
            let event = NewEvent::new("operator:alice", "test.event", format!("token:T{i}"))
                .details(serde_json::json!({ "b": 2, "a": i }));
            append(&mut tx, &vault, OffsetDateTime::UNIX_EPOCH, event)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let rows = all(&store).await;
        assert_eq!(rows.len(), 4, "vault.init plus three");
        assert_eq!(rows[0].prev_hash, chain::genesis_hash(vault.id()).to_vec());
        assert_eq!(
            rows[3].details, r#"{"a":2,"b":2}"#,
            "details are stored with sorted keys"
        );
        let mut verifier = ChainVerifier::new(vault.id(), vault.audit_public_key());
        for row in &rows {
            verifier.push(row).unwrap();
        }
        assert_eq!(verifier.count(), 4);
        assert_eq!(verifier.head().unwrap().seq, 4);
    }

    #[tokio::test]
    async fn an_edited_or_rehashed_event_is_caught_at_its_seq() {
        let (_dir, store, vault) = vault().await;
        let mut tx = store.begin_write().await.unwrap();
        for _ in 0..3 {
            append(
                &mut tx,
                &vault,
                OffsetDateTime::UNIX_EPOCH,
                NewEvent::new("a", "x", "t"),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
        let rows = all(&store).await;
        let check = |rows: &[AuditRow]| {
            let mut verifier = ChainVerifier::new(vault.id(), vault.audit_public_key());
            rows.iter().try_for_each(|r| verifier.push(r))
        };
        let mut edited = rows.clone();
        edited[2].actor = "someone else".into();
        assert_eq!(check(&edited).unwrap_err().seq, 3);
        // Recomputing the hashes without the key leaves the signatures wrong.
        let mut rehashed = edited.clone();
        for i in 2..rehashed.len() {
            if i > 2 {
                rehashed[i].prev_hash = rehashed[i - 1].hash.clone();
            }
            rehashed[i].hash = EventFields::of(&rehashed[i])
                .hash(&rehashed[i].prev_hash)
                .to_vec();
        }
        let err = check(&rehashed).unwrap_err();
        assert_eq!(err.seq, 3);
        assert!(err.reason.contains("signature"), "{err}");
        let mut gap = rows.clone();
        gap.remove(1);
        assert_eq!(check(&gap).unwrap_err().seq, 2);
    }

    #[tokio::test]
    async fn the_trail_refuses_updates_and_deletes() {
        let (_dir, store, _vault) = vault().await;
        let update = crate::store::execute(&store, "UPDATE audit_events SET actor = 'x'").await;
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = crate::store::execute(&store, "DELETE FROM audit_events").await;
        assert!(delete.unwrap_err().to_string().contains("append-only"));
    }
}
