//! `operators`, `credentials` and `invites`.

use super::{engine, inline, Db, Engine, Inline, On, StoreError};

#[derive(Clone)]
pub struct OperatorRow {
    pub id: i64,
    pub name: String,
    pub user_handle: String,
    pub roles: String,
    pub disabled: bool,
    pub created_at: i64,
}

type OperatorTuple = (i64, String, String, String, i64, i64);

fn operator(t: OperatorTuple) -> OperatorRow {
    OperatorRow {
        id: t.0,
        name: t.1,
        user_handle: t.2,
        roles: t.3,
        disabled: t.4 != 0,
        created_at: t.5,
    }
}

const OPERATOR_COLUMNS: &str = "id, name, user_handle, roles, disabled, created_at";

pub async fn count_operators(db: impl Into<Db<'_>>) -> Result<i64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM operators";
    Ok(on_either!(db, |conn| sqlx::query_scalar(SQL)
        .fetch_one(&mut *conn)
        .await?))
}

pub async fn list_operators(db: impl Into<Db<'_>>) -> Result<Vec<OperatorRow>, StoreError> {
    let sql = format!("SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY name");
    let rows: Vec<OperatorTuple> = match engine(db).await? {
        Engine::Sqlite(mut conn) => sqlx::query_as(&sql).fetch_all(&mut *conn).await?,
        // Bytewise, as SQLite orders text, whatever the database's collation.
        Engine::Postgres(mut conn) => {
            sqlx::query_as(&format!("{sql} COLLATE \"C\""))
                .fetch_all(&mut *conn)
                .await?
        }
    };
    Ok(rows.into_iter().map(operator).collect())
}

/// [`operator_by_id`] on a held connection (see [`crate::store::sessions::with_operator`]).
pub fn operator_by_id_on(c: &Inline<'_>, id: i64) -> Result<Option<OperatorRow>, StoreError> {
    use rusqlite::OptionalExtension;
    match c.on() {
        On::Sqlite(conn) => Ok(conn
            .prepare_cached(&format!(
                "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = ?1"
            ))?
            .query_row([id], |r| r.try_into().map(operator))
            .optional()?),
        On::Postgres(pg) => Ok(pg
            .optional(
                sqlx::query_as(&format!(
                    "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = $1"
                ))
                .bind(id),
            )?
            .map(operator)),
    }
}

pub async fn operator_by_id(
    db: impl Into<Db<'_>>,
    id: i64,
) -> Result<Option<OperatorRow>, StoreError> {
    let row: Option<OperatorTuple> = on_either!(db, |conn| sqlx::query_as(&format!(
        "SELECT {OPERATOR_COLUMNS} FROM operators WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?);
    Ok(row.map(operator))
}

pub async fn operator_by_name(
    db: impl Into<Db<'_>>,
    name: &str,
) -> Result<Option<OperatorRow>, StoreError> {
    let row: Option<OperatorTuple> = on_either!(db, |conn| sqlx::query_as(&format!(
        "SELECT {OPERATOR_COLUMNS} FROM operators WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?);
    Ok(row.map(operator))
}

pub async fn operator_by_handle(
    db: impl Into<Db<'_>>,
    handle: &str,
) -> Result<Option<OperatorRow>, StoreError> {
    let row: Option<OperatorTuple> = on_either!(db, |conn| sqlx::query_as(&format!(
        "SELECT {OPERATOR_COLUMNS} FROM operators WHERE user_handle = $1"
    ))
    .bind(handle)
    .fetch_optional(&mut *conn)
    .await?);
    Ok(row.map(operator))
}

pub async fn insert_operator(
    db: impl Into<Db<'_>>,
    name: &str,
    user_handle: &str,
    roles: &str,
    now: i64,
) -> Result<i64, StoreError> {
    let id = on_either!(db, |conn| {
        sqlx::query_scalar(
        "INSERT INTO operators (name, user_handle, roles, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(name)
    .bind(user_handle)
    .bind(roles)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?
    });
    Ok(id)
}

pub async fn set_roles(db: impl Into<Db<'_>>, id: i64, roles: &str) -> Result<(), StoreError> {
    on_either!(db, |conn| sqlx::query(
        "UPDATE operators SET roles = $1 WHERE id = $2"
    )
    .bind(roles)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn set_disabled(
    db: impl Into<Db<'_>>,
    id: i64,
    disabled: bool,
) -> Result<(), StoreError> {
    on_either!(db, |conn| sqlx::query(
        "UPDATE operators SET disabled = $1 WHERE id = $2"
    )
    .bind(i64::from(disabled))
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(())
}

#[derive(Clone)]
pub struct CredentialRow {
    pub id: i64,
    pub operator_id: i64,
    pub credential_id: Vec<u8>,
    pub label: String,
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

type CredentialTuple = (i64, i64, Vec<u8>, String, String, i64, Option<i64>);

fn credential(t: CredentialTuple) -> CredentialRow {
    CredentialRow {
        id: t.0,
        operator_id: t.1,
        credential_id: t.2,
        label: t.3,
        passkey: t.4,
        created_at: t.5,
        last_used_at: t.6,
    }
}

const CREDENTIAL_COLUMNS: &str =
    "id, operator_id, credential_id, label, passkey, created_at, last_used_at";

pub async fn credentials_of(
    db: impl Into<Db<'_>>,
    operator_id: i64,
) -> Result<Vec<CredentialRow>, StoreError> {
    inline(db, |c| credentials_of_on(c, operator_id)).await?
}

/// [`credentials_of`] on a connection held for a run of statements (the reveal path: no
/// hand-off per statement).
pub fn credentials_of_on(
    c: &Inline<'_>,
    operator_id: i64,
) -> Result<Vec<CredentialRow>, StoreError> {
    credentials_where_on(c, "operator_id = $1 ORDER BY id", operator_id, None)
}

/// The operator's credential whose WebAuthn id is `credential_id`, if it is theirs (an
/// assertion's signer: one row, read by the unique index).
pub fn credential_of_on(
    c: &Inline<'_>,
    operator_id: i64,
    credential_id: &[u8],
) -> Result<Option<CredentialRow>, StoreError> {
    Ok(credentials_where_on(
        c,
        "operator_id = $1 AND credential_id = $2",
        operator_id,
        Some(credential_id),
    )?
    .pop())
}

fn credentials_where_on(
    c: &Inline<'_>,
    filter: &str,
    operator_id: i64,
    credential_id: Option<&[u8]>,
) -> Result<Vec<CredentialRow>, StoreError> {
    let sql = format!("SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE {filter}");
    let rows: Vec<CredentialTuple> = match c.on() {
        On::Sqlite(conn) => {
            let mut statement = conn.prepare_cached(&sql)?;
            let read = |r: &rusqlite::Row<'_>| CredentialTuple::try_from(r);
            let rows = match credential_id {
                Some(id) => statement.query_map(rusqlite::params![operator_id, id], read)?,
                None => statement.query_map([operator_id], read)?,
            };
            rows.collect::<Result<_, _>>()?
        }
        On::Postgres(pg) => {
            let query = sqlx::query_as(&sql).bind(operator_id);
            pg.all(match credential_id {
                Some(id) => query.bind(id),
                None => query,
            })?
        }
    };
    Ok(rows.into_iter().map(credential).collect())
}

pub async fn credential_counts(db: impl Into<Db<'_>>) -> Result<Vec<(i64, i64)>, StoreError> {
    Ok(on_either!(db, |conn| sqlx::query_as(
        "SELECT operator_id, COUNT(*) FROM credentials GROUP BY operator_id"
    )
    .fetch_all(&mut *conn)
    .await?))
}

pub async fn insert_credential(
    db: impl Into<Db<'_>>,
    operator_id: i64,
    credential_id: &[u8],
    label: &str,
    passkey: &str,
    now: i64,
) -> Result<i64, StoreError> {
    let id = on_either!(db, |conn| {
        sqlx::query_scalar(
        "INSERT INTO credentials (operator_id, credential_id, label, passkey, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(operator_id)
    .bind(credential_id)
    .bind(label)
    .bind(passkey)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?
    });
    Ok(id)
}

/// Stores a credential's passkey after use (its new signature counter) and when it was used.
pub async fn update_credential_use(
    db: impl Into<Db<'_>>,
    id: i64,
    passkey: &str,
    now: i64,
) -> Result<(), StoreError> {
    inline(db, |c| update_credential_use_on(c, id, passkey, now)).await?
}

/// [`update_credential_use`] on a held connection.
pub fn update_credential_use_on(
    c: &Inline<'_>,
    id: i64,
    passkey: &str,
    now: i64,
) -> Result<(), StoreError> {
    const SQL: &str = "UPDATE credentials SET passkey = ?1, last_used_at = ?2 WHERE id = ?3";
    match c.on() {
        On::Sqlite(conn) => {
            conn.prepare_cached(SQL)?
                .execute(rusqlite::params![passkey, now, id])?;
        }
        On::Postgres(pg) => {
            pg.execute(
                sqlx::query(&super::dollars(SQL))
                    .bind(passkey)
                    .bind(now)
                    .bind(id),
            )?;
        }
    }
    Ok(())
}

pub async fn delete_credential(
    db: impl Into<Db<'_>>,
    operator_id: i64,
    id: i64,
) -> Result<bool, StoreError> {
    let done = on_either!(db, |conn| sqlx::query(
        "DELETE FROM credentials WHERE id = $1 AND operator_id = $2"
    )
    .bind(id)
    .bind(operator_id)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(done == 1)
}

pub struct InviteRow {
    pub id: i64,
    pub name: String,
    pub roles: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

pub async fn insert_invite(
    db: impl Into<Db<'_>>,
    token_hash: &[u8],
    name: &str,
    roles: &str,
    created_by: &str,
    now: i64,
    expires_at: i64,
) -> Result<i64, StoreError> {
    let id = on_either!(db, |conn| {
        sqlx::query_scalar(
        "INSERT INTO invites (token_hash, name, roles, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(token_hash)
    .bind(name)
    .bind(roles)
    .bind(created_by)
    .bind(now)
    .bind(expires_at)
    .fetch_one(&mut *conn)
    .await?
    });
    Ok(id)
}

pub async fn invite_by_hash(
    db: impl Into<Db<'_>>,
    token_hash: &[u8],
) -> Result<Option<InviteRow>, StoreError> {
    let row: Option<(i64, String, String, i64, Option<i64>)> =
        on_either!(db, |conn| sqlx::query_as(
            "SELECT id, name, roles, expires_at, used_at FROM invites WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *conn)
        .await?);
    Ok(row.map(|(id, name, roles, expires_at, used_at)| InviteRow {
        id,
        name,
        roles,
        expires_at,
        used_at,
    }))
}

/// Marks an invite used; false when it was used meanwhile (a concurrent registration).
pub async fn consume_invite(
    db: impl Into<Db<'_>>,
    id: i64,
    operator_id: i64,
    now: i64,
) -> Result<bool, StoreError> {
    let done = on_either!(db, |conn| sqlx::query(
        "UPDATE invites SET used_at = $1, used_by = $2 WHERE id = $3 AND used_at IS NULL"
    )
    .bind(now)
    .bind(operator_id)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected());
    Ok(done == 1)
}

/// Whether an unused, unexpired invite exists for `name` (a second one would be confusing).
pub async fn open_invite_for(
    db: impl Into<Db<'_>>,
    name: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let found: Option<i64> = on_either!(db, |conn| {
        sqlx::query_scalar(
        "SELECT id FROM invites WHERE name = $1 AND used_at IS NULL AND expires_at > $2 LIMIT 1",
    )
    .bind(name)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?
    });
    Ok(found.is_some())
}

/// Ends every open invite for `name` now.
pub async fn expire_open_invites(
    db: impl Into<Db<'_>>,
    name: &str,
    now: i64,
) -> Result<(), StoreError> {
    on_either!(db, |conn| {
        sqlx::query(
        "UPDATE invites SET expires_at = $1 WHERE name = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(now)
    .bind(name)
    .bind(now)
    .execute(&mut *conn)
    .await?.rows_affected()
    });
    Ok(())
}
