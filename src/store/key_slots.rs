//! `key_slots`: the data key wrapped once per unlock method.

use super::{conn, Db, StoreError, WriteTx};

pub struct KeySlotRow {
    pub id: i64,
    pub kind: String,
    pub label: String,
    pub recipient: Option<String>,
    pub wrapped_key: Vec<u8>,
    pub development_identity: Option<String>,
    pub created_at: i64,
}

type Tuple = (
    i64,
    String,
    String,
    Option<String>,
    Vec<u8>,
    Option<String>,
    i64,
);

fn from_tuple(t: Tuple) -> KeySlotRow {
    KeySlotRow {
        id: t.0,
        kind: t.1,
        label: t.2,
        recipient: t.3,
        wrapped_key: t.4,
        development_identity: t.5,
        created_at: t.6,
    }
}

pub async fn list(db: impl Into<Db<'_>>) -> Result<Vec<KeySlotRow>, StoreError> {
    let rows: Vec<Tuple> = sqlx::query_as(
        "SELECT id, kind, label, recipient, wrapped_key, development_identity, created_at FROM key_slots ORDER BY id",
    )
    .fetch_all(&mut *conn(db).await?)
    .await?;
    Ok(rows.into_iter().map(from_tuple).collect())
}

pub struct NewKeySlot<'a> {
    pub kind: &'a str,
    pub label: &'a str,
    pub recipient: Option<&'a str>,
    pub wrapped_key: &'a [u8],
    pub development_identity: Option<&'a str>,
    pub created_at: i64,
}

pub async fn insert(db: impl Into<Db<'_>>, slot: &NewKeySlot<'_>) -> Result<i64, StoreError> {
    let done = sqlx::query(
        "INSERT INTO key_slots (kind, label, recipient, wrapped_key, development_identity, created_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(slot.kind)
    .bind(slot.label)
    .bind(slot.recipient)
    .bind(slot.wrapped_key)
    .bind(slot.development_identity)
    .bind(slot.created_at)
    .execute(&mut *conn(db).await?)
    .await?;
    Ok(done.last_insert_rowid())
}

pub async fn label_exists(db: impl Into<Db<'_>>, label: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM key_slots WHERE label = ?")
        .bind(label)
        .fetch_optional(&mut *conn(db).await?)
        .await?;
    Ok(found.is_some())
}

pub async fn delete(db: impl Into<Db<'_>>, label: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM key_slots WHERE label = ?")
        .bind(label)
        .execute(&mut *conn(db).await?)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces a slot's wrapped key (a rotation re-wraps every slot it can).
pub async fn set_wrapped(tx: &mut WriteTx, id: i64, wrapped_key: &[u8]) -> Result<(), StoreError> {
    sqlx::query("UPDATE key_slots SET wrapped_key = ? WHERE id = ?")
        .bind(wrapped_key)
        .bind(id)
        .execute(&mut *tx.tx)
        .await?;
    Ok(())
}

/// Removes a slot by id (a passphrase slot a rotation could not re-wrap).
pub async fn delete_id(tx: &mut WriteTx, id: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM key_slots WHERE id = ?")
        .bind(id)
        .execute(&mut *tx.tx)
        .await?;
    Ok(())
}
