//! `vault_meta`: the vault's id, key check, data key generation and sealed audit signing key;
//! `key_rotation`: a data key rotation under way.

use super::{inline, Db, Inline, On, StoreError, WriteTx};

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct VaultMetaRow {
    pub vault_id: String,
    pub created_at: i64,
    pub key_check: Vec<u8>,
    pub audit_signing_key: Vec<u8>,
    pub audit_public_key: Vec<u8>,
    pub key_generation: i64,
}

pub async fn get(db: impl Into<Db<'_>>) -> Result<Option<VaultMetaRow>, StoreError> {
    const SQL: &str = "SELECT vault_id, created_at, key_check, audit_signing_key, audit_public_key, key_generation FROM vault_meta WHERE id = 1";
    Ok(on_either!(db, |conn| sqlx::query_as(SQL)
        .fetch_optional(&mut *conn)
        .await?))
}

pub async fn insert(db: impl Into<Db<'_>>, row: &VaultMetaRow) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO vault_meta (id, vault_id, created_at, key_check, audit_signing_key, audit_public_key, key_generation)
         VALUES (1, $1, $2, $3, $4, $5, $6)";
    on_either!(db, |conn| {
        sqlx::query(SQL)
            .bind(&row.vault_id)
            .bind(row.created_at)
            .bind(&row.key_check)
            .bind(&row.audit_signing_key)
            .bind(&row.audit_public_key)
            .bind(row.key_generation)
            .execute(&mut *conn)
            .await?;
    });
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
    const SQL: &str = "SELECT audit_signing_key, audit_public_key FROM vault_meta WHERE id = 1";
    match c.on() {
        On::Sqlite(conn) => {
            let mut stmt = conn.prepare_cached(SQL)?;
            let mut rows = stmt.query([])?;
            Ok(match rows.next()? {
                Some(row) => Some(SigningKeyRow {
                    sealed: row.get(0)?,
                    public: row.get(1)?,
                }),
                None => None,
            })
        }
        On::Postgres(pg) => Ok(pg
            .optional(sqlx::query_as::<_, (Vec<u8>, Vec<u8>)>(SQL))?
            .map(|(sealed, public)| SigningKeyRow { sealed, public })),
    }
}

/// Just the stored public half, for the per-append comparison.
pub fn signing_public_key_on(c: &Inline<'_>) -> Result<Option<Vec<u8>>, StoreError> {
    const SQL: &str = "SELECT audit_public_key FROM vault_meta WHERE id = 1";
    match c.on() {
        On::Sqlite(conn) => {
            let mut stmt = conn.prepare_cached(SQL)?;
            let mut rows = stmt.query([])?;
            Ok(match rows.next()? {
                Some(row) => Some(row.get(0)?),
                None => None,
            })
        }
        On::Postgres(pg) => Ok(pg
            .optional(sqlx::query_as::<_, (Vec<u8>,)>(SQL))?
            .map(|(public,)| public)),
    }
}

/// Replaces the audit signing key (`audit rotate-signing-key`).
pub async fn set_signing_key(
    tx: &mut WriteTx,
    sealed: &[u8],
    public: &[u8],
) -> Result<(), StoreError> {
    const SQL: &str =
        "UPDATE vault_meta SET audit_signing_key = $1, audit_public_key = $2 WHERE id = 1";
    on_either!(tx, |conn| {
        sqlx::query(SQL)
            .bind(sealed)
            .bind(public)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// A data key rotation under way.
#[derive(Debug, PartialEq, Eq)]
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
    const SQL: &str =
        "SELECT generation, next_key, started_at, started_by FROM key_rotation WHERE id = 1";
    match c.on() {
        On::Sqlite(conn) => {
            let mut stmt = conn.prepare_cached(SQL)?;
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
        On::Postgres(pg) => Ok(pg
            .optional(sqlx::query_as::<_, (i64, Vec<u8>, i64, String)>(SQL))?
            .map(
                |(generation, next_key, started_at, started_by)| RotationRow {
                    generation,
                    next_key,
                    started_at,
                    started_by,
                },
            )),
    }
}

pub async fn insert_rotation(tx: &mut WriteTx, row: &RotationRow) -> Result<(), StoreError> {
    const SQL: &str = "INSERT INTO key_rotation (id, generation, next_key, started_at, started_by) VALUES (1, $1, $2, $3, $4)";
    on_either!(tx, |conn| {
        sqlx::query(SQL)
            .bind(row.generation)
            .bind(&row.next_key)
            .bind(row.started_at)
            .bind(&row.started_by)
            .execute(&mut *conn)
            .await?;
    });
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
    const META: &str =
        "UPDATE vault_meta SET key_generation = $1, key_check = $2, audit_signing_key = $3 WHERE id = 1";
    const DELETE: &str = "DELETE FROM key_rotation";
    on_either!(&mut *tx, |conn| {
        sqlx::query(META)
            .bind(generation)
            .bind(key_check)
            .bind(audit_signing_key)
            .execute(&mut *conn)
            .await?;
    });
    match super::engine(&mut *tx).await? {
        super::Engine::Sqlite(mut conn) => {
            sqlx::query("UPDATE key_rotation SET next_key = zeroblob(length(next_key))")
                .execute(&mut *conn)
                .await?;
            sqlx::query(DELETE).execute(&mut *conn).await?;
        }
        super::Engine::Postgres(mut conn) => {
            sqlx::query(
                "UPDATE key_rotation SET next_key = decode(repeat('00', length(next_key)), 'hex')",
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query(DELETE).execute(&mut *conn).await?;
        }
    }
    Ok(())
}
