//! One instance at a time for a scheduled job (PostgreSQL): a session-level advisory lock per
//! job, held on a connection of its own for as long as that connection lives. When the holder
//! dies (process killed, connection cut, backend terminated), PostgreSQL releases the lock and
//! another instance takes it on its next tick.

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection as _, PgPool};

use super::StoreError;

/// The advisory-lock class of scheduled jobs (the first key of the two-int form; the second
/// is `hashtext` of the job's name).
pub const JOB_LOCK_CLASS: i32 = 0x5356_0003;

/// A candidate for running `job`: [`Self::lead`] before each run.
pub struct Leader {
    job: String,
    options: PgConnectOptions,
    /// The dedicated connection (never the pool's: a pooled connection would carry the lock
    /// to whatever borrows it next, and a returned one would keep it after this holder ends).
    conn: Option<PgConnection>,
    held: bool,
}

impl Leader {
    /// A candidate for `job` on the database of `pool` (connects on the first [`Self::lead`]).
    pub fn new(pool: &PgPool, job: &str) -> Self {
        Self {
            job: job.to_owned(),
            options: (*pool.connect_options()).clone(),
            conn: None,
            held: false,
        }
    }

    /// Whether this instance holds the job's lock now: keeps it while its connection lives,
    /// else tries to take it (false while another instance holds it).
    pub async fn lead(&mut self) -> Result<bool, StoreError> {
        if let Some(conn) = &mut self.conn {
            let alive = sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok();
            if alive && self.held {
                return Ok(true);
            }
            if !alive {
                // Its lock (if it held one) went with its session.
                self.conn = None;
                self.held = false;
            }
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self
                .conn
                .insert(PgConnection::connect_with(&self.options).await?),
        };
        self.held = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(JOB_LOCK_CLASS)
            .bind(&self.job)
            .fetch_one(&mut *conn)
            .await?;
        Ok(self.held)
    }

    /// Lets the job go (closes the connection, and with it the lock).
    pub async fn resign(&mut self) {
        self.held = false;
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Ends the session holding `job`'s lock, as a crashed instance or a cut connection would.
    async fn kill_holder(pool: &PgPool, job: &str) {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objid::bigint = (hashtext($2)::bigint & 4294967295)",
        )
        .bind(JOB_LOCK_CLASS)
        .bind(job)
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(killed, vec![true], "exactly one holder of {job}");
    }

    /// `leader.lead()` until it leads (the killed backend releases its locks as it exits).
    async fn leads_soon(leader: &mut Leader) -> bool {
        for _ in 0..50 {
            if leader.lead().await.unwrap() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    }

    #[tokio::test]
    async fn when_the_leading_instance_dies_the_other_takes_the_job_on_its_next_tick() {
        let (a, b) = crate::shared::two_instances().await;
        let mut first = Leader::new(&a, "retention-sweep");
        let mut second = Leader::new(&b, "retention-sweep");
        assert!(first.lead().await.unwrap());
        assert!(!second.lead().await.unwrap());
        // Ticks later, the holder still holds and the other still waits.
        assert!(first.lead().await.unwrap());
        assert!(!second.lead().await.unwrap());

        kill_holder(&a, "retention-sweep").await;
        assert!(leads_soon(&mut second).await, "the survivor took over");
        // The dead one's next tick notices its lost session and does not run.
        assert!(!first.lead().await.unwrap());
        assert!(!first.lead().await.unwrap());

        // A holder that stops (its connection closed) hands over too.
        second.resign().await;
        assert!(leads_soon(&mut first).await);
        assert!(!second.lead().await.unwrap());
    }
}
