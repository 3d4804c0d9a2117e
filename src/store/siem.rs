//! `siem_cursors`: per SIEM sink, the last audit seq it acknowledged, and the lag behind the
//! head. Cursor writes are not audited: they are bookkeeping of the forwarding of the trail
//! itself (an event per acknowledged batch would feed the forwarder its own echo forever).
//!
//! The first module that runs on either engine (issue #20): each function takes a [`Db`] of
//! SQLite or PostgreSQL and picks the SQL of its dialect only where the two differ (here, the
//! placeholders); the pattern for porting the others.

use sqlx::Row;

use super::{engine, Db, Engine, StoreError};

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
    const COLUMNS: &str = "SELECT sink, acked_seq, updated_at FROM siem_cursors WHERE sink = ";
    Ok(match engine(db).await? {
        Engine::Sqlite(mut conn) => sqlx::query(&format!("{COLUMNS}?1"))
            .bind(sink)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| cursor_of(&r)),
        Engine::Postgres(mut conn) => sqlx::query(&format!("{COLUMNS}$1"))
            .bind(sink)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| cursor_of(&r)),
    })
}

fn cursor_of<R: Row>(row: &R) -> Cursor
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    Cursor {
        sink: row.get(0),
        acked_seq: row.get(1),
        updated_at: row.get(2),
    }
}

/// Every stored cursor, by sink name (also those of sinks no longer configured).
pub async fn list(db: impl Into<Db<'_>>) -> Result<Vec<Cursor>, StoreError> {
    const SQL: &str = "SELECT sink, acked_seq, updated_at FROM siem_cursors ORDER BY sink";
    Ok(match engine(db).await? {
        Engine::Sqlite(mut conn) => {
            let rows = sqlx::query(SQL).fetch_all(&mut *conn).await?;
            rows.iter().map(cursor_of).collect()
        }
        // Bytewise, as SQLite compares text, whatever the database's collation.
        Engine::Postgres(mut conn) => {
            let rows = sqlx::query(&format!("{SQL} COLLATE \"C\""))
                .fetch_all(&mut *conn)
                .await?;
            rows.iter().map(cursor_of).collect()
        }
    })
}

/// Sets `sink`'s cursor to `acked_seq` inside the write transaction `tx` (`&mut WriteTx`, or
/// a PostgreSQL transaction).
pub async fn set(
    tx: impl Into<Db<'_>>,
    sink: &str,
    acked_seq: i64,
    now: i64,
) -> Result<(), StoreError> {
    // `excluded.` names the refused row's values on both engines.
    const UPSERT: &str = "INSERT INTO siem_cursors (sink, acked_seq, updated_at) VALUES ";
    const ON_CONFLICT: &str = " ON CONFLICT (sink) DO UPDATE SET acked_seq = excluded.acked_seq, updated_at = excluded.updated_at";
    match engine(tx).await? {
        Engine::Sqlite(mut conn) => {
            sqlx::query(&format!("{UPSERT}(?1, ?2, ?3){ON_CONFLICT}"))
                .bind(sink)
                .bind(acked_seq)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
        Engine::Postgres(mut conn) => {
            sqlx::query(&format!("{UPSERT}($1, $2, $3){ON_CONFLICT}"))
                .bind(sink)
                .bind(acked_seq)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// The time (as stored, RFC 3339) of the event at `seq`, if any: the oldest event a sink
/// still waits for, for the lag in seconds.
pub async fn event_time(db: impl Into<Db<'_>>, seq: i64) -> Result<Option<String>, StoreError> {
    const SQL: &str = "SELECT time FROM audit_events WHERE seq = ";
    Ok(match engine(db).await? {
        Engine::Sqlite(mut conn) => {
            sqlx::query_scalar(&format!("{SQL}?1"))
                .bind(seq)
                .fetch_optional(&mut *conn)
                .await?
        }
        Engine::Postgres(mut conn) => {
            sqlx::query_scalar(&format!("{SQL}$1"))
                .bind(seq)
                .fetch_optional(&mut *conn)
                .await?
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::str::FromStr as _;

    use super::*;
    use crate::store::postgres::{PgTx, MIGRATOR};
    use crate::store::{pg_cluster, Store};

    /// The same calls, the same answers, on SQLite (a `WriteTx`) and on PostgreSQL (a `PgTx`).
    #[tokio::test]
    async fn cursors_are_set_read_and_listed_alike_on_both_engines() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let url = pg_cluster::fresh_database().await.unwrap();
        let pool =
            sqlx::PgPool::connect_with(sqlx::postgres::PgConnectOptions::from_str(&url).unwrap())
                .await
                .unwrap();
        MIGRATOR.run(&pool).await.unwrap();

        let mut tx = store.begin_write().await.unwrap();
        set(&mut tx, "splunk", 7, 100).await.unwrap();
        set(&mut tx, "elastic", 3, 100).await.unwrap();
        set(&mut tx, "splunk", 9, 200).await.unwrap();
        tx.commit().await.unwrap();
        let mut pg = PgTx::write(&pool).await.unwrap();
        set(&mut pg, "splunk", 7, 100).await.unwrap();
        set(&mut pg, "elastic", 3, 100).await.unwrap();
        set(&mut pg, "splunk", 9, 200).await.unwrap();
        pg.commit().await.unwrap();

        let on_sqlite = (
            cursor(&store, "splunk").await.unwrap(),
            cursor(&store, "absent").await.unwrap(),
            list(&store).await.unwrap(),
        );
        let on_postgres = (
            cursor(&pool, "splunk").await.unwrap(),
            cursor(&pool, "absent").await.unwrap(),
            list(&pool).await.unwrap(),
        );
        assert_eq!(
            on_sqlite.0,
            Some(Cursor {
                sink: "splunk".into(),
                acked_seq: 9,
                updated_at: 200
            })
        );
        assert_eq!(on_sqlite.1, None);
        assert_eq!(
            on_sqlite
                .2
                .iter()
                .map(|c| c.sink.as_str())
                .collect::<Vec<_>>(),
            ["elastic", "splunk"]
        );
        assert_eq!(on_postgres, on_sqlite);
        assert_eq!(event_time(&pool, 1).await.unwrap(), None);
        assert_eq!(event_time(&store, 1).await.unwrap(), None);
        // The token tables run there too (issue #20): an empty vault has no tokens.
        assert!(crate::store::tokens::count_by_state(&pool)
            .await
            .unwrap()
            .is_empty());
    }
}
