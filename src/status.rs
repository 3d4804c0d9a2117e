//! What a data directory holds, for `seedvault status` and the dashboard. Reads only.

use crate::store::{self, Store, StoreError};
use crate::vault::open::SlotInfo;

pub struct StatusReport {
    pub vault_id: Option<String>,
    pub slots: Vec<SlotInfo>,
    /// Every lifecycle state with its count (zero included), in lifecycle order.
    pub tokens_by_state: Vec<(&'static str, i64)>,
    pub audit_events: i64,
    /// Escrowed tokens whose retention deadline falls within a week: (serial, owner, deadline).
    pub due_soon: Vec<(String, Option<String>, i64)>,
    /// Escrowed tokens in the post: in transit, delivered late (their expected date passed),
    /// and seeds reaching their retention deadline within [`DUE_SOON_SECONDS`] meanwhile.
    pub in_transit: store::tokens::InTransit,
}

/// How far ahead `status` and the dashboard look for retention deadlines.
pub const DUE_SOON_SECONDS: i64 = 7 * 86_400;

pub const TOKEN_STATES: [&str; 6] = [
    "programming",
    "escrowed",
    "delivered",
    "cancelled",
    "expired",
    "purged",
];

pub async fn collect(store: &Store, now: i64) -> Result<StatusReport, StoreError> {
    let vault_id = store::meta::get(store).await?.map(|m| m.vault_id);
    let slots = store::key_slots::list(store)
        .await?
        .into_iter()
        .map(|r| SlotInfo {
            label: r.label,
            kind: r.kind,
            recipient: r.recipient,
            created_at: r.created_at,
        })
        .collect();
    let counts = store::tokens::count_by_state(store).await?;
    let tokens_by_state = TOKEN_STATES
        .iter()
        .map(|state| {
            (
                *state,
                counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n),
            )
        })
        .collect();
    let filter = store::tokens::TokenFilter {
        due_before: Some(now + DUE_SOON_SECONDS),
        limit: 50,
        ..Default::default()
    };
    let due_soon = store::tokens::search(store, &filter)
        .await?
        .into_iter()
        .map(|t| (t.serial, t.owner, t.retention_deadline))
        .collect();
    let today = time::OffsetDateTime::from_unix_timestamp(now)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    let in_transit = store::tokens::in_transit(store, &today, now + DUE_SOON_SECONDS).await?;
    Ok(StatusReport {
        in_transit,
        vault_id,
        slots,
        tokens_by_state,
        audit_events: store::audit::count(store).await?,
        due_soon,
    })
}
