//! The `sessions` table (tower-sessions' schema, created by `web::session::SessionTable`): the
//! row a completed sign-in writes inside its own transaction, so that the sign-in, its audit
//! event and the new session are one durable commit.

use time::OffsetDateTime;

use super::{dollars, On, StoreError, WriteTx};

/// A session row as tower-sessions' SQLite store writes it: the id as text, the whole record
/// encoded (MessagePack), and the expiry bound as sqlx binds an `OffsetDateTime`, which is
/// what the store's load and expiry sweep compare against.
pub struct SessionRow {
    pub id: String,
    pub data: Vec<u8>,
    pub expiry: OffsetDateTime,
    /// The session this one replaces (the id is cycled at sign-in): deleted in the same
    /// transaction.
    pub replaces: Option<String>,
}

/// Writes `row` (and deletes the session it replaces) inside `tx`.
pub async fn insert(tx: &mut WriteTx, row: &SessionRow) -> Result<(), StoreError> {
    if let Some(old) = &row.replaces {
        const DELETE: &str = "DELETE FROM sessions WHERE id = $1";
        on_either!(&mut *tx, |conn| {
            sqlx::query(DELETE).bind(old).execute(&mut *conn).await?;
        });
    }
    const INSERT: &str = "INSERT INTO sessions (id, data, expiry_date) VALUES ($1, $2, $3)";
    on_either!(&mut *tx, |conn| {
        sqlx::query(INSERT)
            .bind(&row.id)
            .bind(&row.data)
            .bind(row.expiry)
            .execute(&mut *conn)
            .await?;
    });
    Ok(())
}

/// A session's stored record and, in the same round trip (one pooled read connection held on
/// the calling thread), the operator it is signed in as: `operator_of` reads the operator id
/// out of the record (the store does not know its encoding). `None` when no such session row
/// exists. The operator is read fresh each time: nothing is cached across requests.
pub async fn with_operator(
    store: &super::Store,
    id: &str,
    operator_of: impl FnOnce(&[u8]) -> Option<i64>,
) -> Result<Option<(Vec<u8>, Option<super::operators::OperatorRow>)>, StoreError> {
    use rusqlite::OptionalExtension;
    store
        .inline(|c| -> Result<_, StoreError> {
            const SQL: &str = "SELECT data FROM sessions WHERE id = ?1";
            let data: Option<Vec<u8>> = match c.on() {
                On::Sqlite(conn) => conn
                    .prepare_cached(SQL)?
                    .query_row([id], |r| r.get(0))
                    .optional()?,
                On::Postgres(pg) => pg
                    .optional(sqlx::query_as::<_, (Vec<u8>,)>(&dollars(SQL)).bind(id))?
                    .map(|(data,)| data),
            };
            let Some(data) = data else {
                return Ok(None);
            };
            let operator = match operator_of(&data) {
                Some(operator_id) => super::operators::operator_by_id_on(c, operator_id)?,
                None => None,
            };
            Ok(Some((data, operator)))
        })
        .await?
}
