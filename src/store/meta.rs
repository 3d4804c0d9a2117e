//! `vault_meta`: the vault's id, key check and sealed audit signing key.

use super::{conn, Db, StoreError};

#[derive(sqlx::FromRow)]
pub struct VaultMetaRow {
    pub vault_id: String,
    pub created_at: i64,
    pub key_check: Vec<u8>,
    pub audit_signing_key: Vec<u8>,
    pub audit_public_key: Vec<u8>,
}

pub async fn get(db: impl Into<Db<'_>>) -> Result<Option<VaultMetaRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT vault_id, created_at, key_check, audit_signing_key, audit_public_key FROM vault_meta WHERE id = 1",
    )
    .fetch_optional(&mut *conn(db).await?)
    .await?)
}

pub async fn insert(db: impl Into<Db<'_>>, row: &VaultMetaRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO vault_meta (id, vault_id, created_at, key_check, audit_signing_key, audit_public_key)
         VALUES (1, ?, ?, ?, ?, ?)",
    )
    .bind(&row.vault_id)
    .bind(row.created_at)
    .bind(&row.key_check)
    .bind(&row.audit_signing_key)
    .bind(&row.audit_public_key)
    .execute(&mut *conn(db).await?)
    .await?;
    Ok(())
}
