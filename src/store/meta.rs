//! `vault_meta`: the vault's id, key check, data key generation and sealed audit signing key;
//! `key_rotation`: a data key rotation under way.

use super::{conn, inline, Db, Inline, StoreError, WriteTx};

#[derive(sqlx::FromRow)]
pub struct VaultMetaRow {
    pub vault_id: String,
    pub created_at: i64,
    pub key_check: Vec<u8>,
    pub audit_signing_key: Vec<u8>,
    pub audit_public_key: Vec<u8>,
    pub key_generation: i64,
}

pub async fn get(db: impl Into<Db<'_>>) -> Result<Option<VaultMetaRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT vault_id, created_at, key_check, audit_signing_key, audit_public_key, key_generation FROM vault_meta WHERE id = 1",
    )
    .fetch_optional(&mut *conn(db).await?)
    .await?)
}

pub async fn insert(db: impl Into<Db<'_>>, row: &VaultMetaRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO vault_meta (id, vault_id, created_at, key_check, audit_signing_key, audit_public_key, key_generation)
         VALUES (1, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&row.vault_id)
    .bind(row.created_at)
    .bind(&row.key_check)
    .bind(&row.audit_signing_key)
    .bind(&row.audit_public_key)
    .bind(row.key_generation)
    .execute(&mut *conn(db).await?)
    .await?;
    Ok(())
}

/// The audit signing key as stored: sealed secret half and public half.
pub struct SigningKeyRow {
    pub sealed: Vec<u8>,
    pub public: Vec<u8>,
}

/// The stored audit signing key, read on the caller's held connection (every audit append
/// compares it with the key in memory).
pub fn signing_key_on(c: &Inline<'_>) -> Result<Option<SigningKeyRow>, StoreError> {
    let mut stmt = c.conn.prepare_cached(
        "SELECT audit_signing_key, audit_public_key FROM vault_meta WHERE id = 1",
    )?;
    let mut rows = stmt.query([])?;
    Ok(match rows.next()? {
        Some(row) => Some(SigningKeyRow {
            sealed: row.get(0)?,
            public: row.get(1)?,
        }),
        None => None,
    })
}

/// Just the stored public half, for the per-append comparison.
pub fn signing_public_key_on(c: &Inline<'_>) -> Result<Option<Vec<u8>>, StoreError> {
    let mut stmt = c
        .conn
        .prepare_cached("SELECT audit_public_key FROM vault_meta WHERE id = 1")?;
    let mut rows = stmt.query([])?;
    Ok(match rows.next()? {
        Some(row) => Some(row.get(0)?),
        None => None,
    })
}

/// Replaces the audit signing key (`audit rotate-signing-key`).
pub async fn set_signing_key(
    tx: &mut WriteTx,
    sealed: &[u8],
    public: &[u8],
) -> Result<(), StoreError> {
    sqlx::query("UPDATE vault_meta SET audit_signing_key = ?, audit_public_key = ? WHERE id = 1")
        .bind(sealed)
        .bind(public)
        .execute(&mut *tx.tx)
        .await?;
    Ok(())
}

/// A data key rotation under way.
pub struct RotationRow {
    pub generation: i64,
    /// The new data key, sealed under the current one.
    pub next_key: Vec<u8>,
    pub started_at: i64,
    pub started_by: String,
}

pub async fn rotation(db: impl Into<Db<'_>>) -> Result<Option<RotationRow>, StoreError> {
    inline(db, rotation_on).await?
}

/// [`rotation`] on a held connection (a grant that met a seed sealed under the new key).
pub fn rotation_on(c: &Inline<'_>) -> Result<Option<RotationRow>, StoreError> {
    let mut stmt = c.conn.prepare_cached(
        "SELECT generation, next_key, started_at, started_by FROM key_rotation WHERE id = 1",
    )?;
    let mut rows = stmt.query([])?;
    Ok(match rows.next()? {
        Some(row) => Some(RotationRow {
            generation: row.get(0)?,
            next_key: row.get(1)?,
            started_at: row.get(2)?,
            started_by: row.get(3)?,
        }),
        None => None,
    })
}

pub async fn insert_rotation(tx: &mut WriteTx, row: &RotationRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO key_rotation (id, generation, next_key, started_at, started_by) VALUES (1, ?, ?, ?, ?)",
    )
    .bind(row.generation)
    .bind(&row.next_key)
    .bind(row.started_at)
    .bind(&row.started_by)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}

/// Ends a rotation: the key check and signing key sealed under the new key, its generation,
/// and the rotation record gone (its bytes overwritten first, as a purge does).
pub async fn finish_rotation(
    tx: &mut WriteTx,
    generation: i64,
    key_check: &[u8],
    audit_signing_key: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE vault_meta SET key_generation = ?, key_check = ?, audit_signing_key = ? WHERE id = 1",
    )
    .bind(generation)
    .bind(key_check)
    .bind(audit_signing_key)
    .execute(&mut *tx.tx)
    .await?;
    sqlx::query("UPDATE key_rotation SET next_key = zeroblob(length(next_key))")
        .execute(&mut *tx.tx)
        .await?;
    sqlx::query("DELETE FROM key_rotation")
        .execute(&mut *tx.tx)
        .await?;
    Ok(())
}
