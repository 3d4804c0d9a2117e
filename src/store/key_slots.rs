//! `key_slots`: the data key wrapped once per unlock method.

use super::{Db, StoreError, WriteTx};

#[derive(Debug, PartialEq, Eq)]
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
    const SQL: &str = "SELECT id, kind, label, recipient, wrapped_key, development_identity, created_at FROM key_slots ORDER BY id";
    let rows: Vec<Tuple> = on_either!(db, |conn| sqlx::query_as(SQL).fetch_all(&mut *conn).await?);
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
    // RETURNING on both engines (SQLite since 3.35) instead of SQLite's last_insert_rowid.
    const SQL: &str = "INSERT INTO key_slots (kind, label, recipient, wrapped_key, development_identity, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
    Ok(on_either!(db, |conn| sqlx::query_scalar(SQL)
        .bind(slot.kind)
        .bind(slot.label)
        .bind(slot.recipient)
        .bind(slot.wrapped_key)
        .bind(slot.development_identity)
        .bind(slot.created_at)
        .fetch_one(&mut *conn)
        .await?))
}

pub async fn label_exists(db: impl Into<Db<'_>>, label: &str) -> Result<bool, StoreError> {
    const SQL: &str = "SELECT id FROM key_slots WHERE label = $1";
    let found: Option<i64> = on_either!(db, |conn| sqlx::query_scalar(SQL)
        .bind(label)
        .fetch_optional(&mut *conn)
        .await?);
    Ok(found.is_some())
}

pub async fn delete(db: impl Into<Db<'_>>, label: &str) -> Result<bool, StoreError> {
    const SQL: &str = "DELETE FROM key_slots WHERE label = $1";
    let deleted = on_either!(db, |conn| sqlx::query(SQL)
        .bind(label)
        .execute(&mut *conn)
        .await?
        .rows_affected());
    Ok(deleted == 1)
}

/// Replaces a slot's wrapped key (a rotation re-wraps every slot it can).
pub async fn set_wrapped(tx: &mut WriteTx, id: i64, wrapped_key: &[u8]) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE key_slots SET wrapped_key = $1 WHERE id = $2";
    on_either!(tx, |conn| {
        sqlx::query(SQL)
            .bind(wrapped_key)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// Removes a slot by id (a passphrase slot a rotation could not re-wrap).
pub async fn delete_id(tx: &mut WriteTx, id: i64) -> Result<(), StoreError> {
    const SQL: &str = "DELETE FROM key_slots WHERE id = $1";
    on_either!(tx, |conn| {
        sqlx::query(SQL).bind(id).execute(&mut *conn).await?;
    });
    Ok(())
}
