//! Synthetic, validly chained and signed events in bulk — the fixture behind the audit tests
//! and the 1,000,000-event benchmark. The product never calls it; it appends only what the
//! vault's own key signs, exactly as [`super::append`] would, just many events per
//! transaction.

use time::OffsetDateTime;

use super::chain::{self, EventFields};
use super::{format_time, AuditError};
use crate::store::audit::{AuditReader, AuditRow};
use crate::vault::Vault;

/// Events per transaction (and per signing batch).
const BATCH: u64 = 20_000;

const ACTORS: [&str; 5] = [
    "operator:alice",
    "operator:bob",
    "operator:carol",
    "cli:root",
    "system",
];
const ACTIONS: [&str; 5] = [
    "auth.sign_in",
    "token.captured",
    "reveal.granted",
    "token.delivered",
    "reveal.denied",
];

/// The fixture's target for event `seq`: one of 5,000 tokens `FX-0` … `FX-4999`.
pub fn target_of(seq: i64) -> String {
    format!("token:FX-{}", seq % 5000)
}

/// The fixture's actor for event `seq`.
pub fn actor_of(seq: i64) -> &'static str {
    ACTORS[(seq % ACTORS.len() as i64) as usize]
}

/// The fixture's action for event `seq`.
pub fn action_of(seq: i64) -> &'static str {
    ACTIONS[(seq / 7 % ACTIONS.len() as i64) as usize]
}

/// Appends `count` synthetic events after the current head of the database at `db_path`
/// ([`crate::store::Store::path`]), one second apart from `start`. Blocking. Returns the new
/// head's seq.
pub fn fill(
    db_path: &std::path::Path,
    vault: &Vault,
    count: u64,
    start: OffsetDateTime,
) -> Result<i64, AuditError> {
    let (mut seq, mut prev) = match AuditReader::open(db_path)?.head()? {
        Some((seq, hash)) => (seq, hash),
        None => (0, chain::genesis_hash(vault.id()).to_vec()),
    };
    let mut remaining = count;
    while remaining > 0 {
        let n = remaining.min(BATCH);
        remaining -= n;
        let rows = next_batch(vault, n, start, &mut seq, &mut prev)?;
        crate::store::audit::insert_many(db_path, &rows)?;
    }
    Ok(seq)
}

/// [`fill`] on either engine: on PostgreSQL the rows go in through the store, one transaction
/// per batch (the integration suite's PostgreSQL run).
pub async fn fill_store(
    store: &crate::store::Store,
    vault: &Vault,
    count: u64,
    start: OffsetDateTime,
) -> Result<i64, AuditError> {
    if let Ok(path) = store.path() {
        return fill(path, vault, count, start);
    }
    let (mut seq, mut prev) = match crate::store::audit::head(store).await? {
        Some((seq, hash)) => (seq, hash),
        None => (0, chain::genesis_hash(vault.id()).to_vec()),
    };
    let mut remaining = count;
    while remaining > 0 {
        let n = remaining.min(BATCH);
        remaining -= n;
        let rows = next_batch(vault, n, start, &mut seq, &mut prev)?;
        let mut tx = store.begin_write().await?;
        for row in &rows {
            crate::store::audit::insert(&mut tx, row).await?;
        }
        tx.commit().await?;
    }
    Ok(seq)
}

/// The `n` signed events after `seq` and `prev` (the chain's head so far), which it advances.
fn next_batch(
    vault: &Vault,
    n: u64,
    start: OffsetDateTime,
    seq: &mut i64,
    prev: &mut Vec<u8>,
) -> Result<Vec<AuditRow>, AuditError> {
    let mut rows = Vec::with_capacity(n as usize);
    for _ in 0..n {
        *seq += 1;
        let row = synthetic(*seq, start, std::mem::take(prev))?;
        prev.clone_from(&row.hash);
        rows.push(row);
    }
    sign_all(vault, &mut rows);
    Ok(rows)
}

fn synthetic(seq: i64, start: OffsetDateTime, prev_hash: Vec<u8>) -> Result<AuditRow, AuditError> {
    let time = format_time(start + time::Duration::seconds(seq))?;
    let outcome = if action_of(seq) == "reveal.denied" {
        "denied"
    } else {
        "success"
    };
    // What `append` would store for these details (keys sorted), built without a `Value`.
    let details = format!(
        r#"{{"checks":["callback","video-id"],"note":"synthetic \"fixture\" event, with, commas","policy":"standard","ticket":"INC-{seq:07}"}}"#
    );
    let mut row = AuditRow {
        seq,
        time,
        actor: actor_of(seq).to_owned(),
        action: action_of(seq).to_owned(),
        target: target_of(seq),
        outcome: outcome.to_owned(),
        details,
        prev_hash,
        hash: Vec::new(),
        sig: Vec::new(),
    };
    row.hash = EventFields::of(&row).hash(&row.prev_hash).to_vec();
    Ok(row)
}

/// Signs a batch on both cores (Ed25519 signing dominates the fixture's cost).
fn sign_all(vault: &Vault, rows: &mut [AuditRow]) {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = rows.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for part in rows.chunks_mut(chunk) {
            scope.spawn(move || {
                for row in part {
                    row.sig = vault
                        .sign_audit(&chain::signed_message(row.seq, &row.hash))
                        .to_vec();
                }
            });
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fixture_details_are_what_append_would_store() {
        let row = synthetic(42, OffsetDateTime::UNIX_EPOCH, vec![0; 32]).unwrap();
        let value: serde_json::Value = serde_json::from_str(&row.details).unwrap();
        assert_eq!(value.to_string(), row.details);
        assert_eq!(value["ticket"], "INC-0000042");
    }
}
