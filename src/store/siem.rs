//! `siem_cursors`: per SIEM sink, the last audit seq it acknowledged, and the lag behind the
//! head. Cursor writes are not audited: they are bookkeeping of the forwarding of the trail
//! itself (an event per acknowledged batch would feed the forwarder its own echo forever).

use sqlx::Row;

use super::{conn, Db, StoreError, WriteTx};

/// A sink's cursor as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub sink: String,
    /// The last seq the sink acknowledged; 0 before the first batch.
    pub acked_seq: i64,
    /// Unix time of the last acknowledgement.
    pub updated_at: i64,
}

/// The cursor of `sink`, if it ever acknowledged a batch (or was reset).
pub async fn cursor(db: impl Into<Db<'_>>, sink: &str) -> Result<Option<Cursor>, StoreError> {
    let row = sqlx::query("SELECT sink, acked_seq, updated_at FROM siem_cursors WHERE sink = ?")
        .bind(sink)
        .fetch_optional(&mut *conn(db).await?)
        .await?;
    Ok(row.map(|r| Cursor {
        sink: r.get(0),
        acked_seq: r.get(1),
        updated_at: r.get(2),
    }))
}

/// Every stored cursor, by sink name (also those of sinks no longer configured).
pub async fn list(db: impl Into<Db<'_>>) -> Result<Vec<Cursor>, StoreError> {
    let rows = sqlx::query("SELECT sink, acked_seq, updated_at FROM siem_cursors ORDER BY sink")
        .fetch_all(&mut *conn(db).await?)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Cursor {
            sink: r.get(0),
            acked_seq: r.get(1),
            updated_at: r.get(2),
        })
        .collect())
}

/// Sets `sink`'s cursor to `acked_seq` inside `tx`.
pub async fn set(tx: &mut WriteTx, sink: &str, acked_seq: i64, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO siem_cursors (sink, acked_seq, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (sink) DO UPDATE SET acked_seq = ?2, updated_at = ?3",
    )
    .bind(sink)
    .bind(acked_seq)
    .bind(now)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}

/// The time (as stored, RFC 3339) of the event at `seq`, if any: the oldest event a sink
/// still waits for, for the lag in seconds.
pub async fn event_time(db: impl Into<Db<'_>>, seq: i64) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT time FROM audit_events WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&mut *conn(db).await?)
            .await?,
    )
}
