//! Where the state that instances must agree on lives (issue #20). On SQLite there is one
//! serving process by construction (the CLI beside it does no reveals or sign-ins), so
//! ceremonies in flight, rate limits and the right to run a scheduled job stay in that
//! process's memory and cost no write. On PostgreSQL several instances share one database,
//! so the same state lives in it (`store::transient`, `store::leader`, the sessions table).

use sqlx::PgPool;

use crate::store::leader::Leader;

/// The backing of the state shared by instances.
#[derive(Clone, Default)]
pub enum Shared {
    /// One process (SQLite): in memory.
    #[default]
    Memory,
    /// Instances on one PostgreSQL database: in its `transient` schema and advisory locks.
    Postgres(PgPool),
}

impl Shared {
    /// The backing that goes with `store`'s engine: memory for SQLite's one serving process,
    /// the store's own pool on PostgreSQL.
    pub fn for_store(store: &crate::store::Store) -> Self {
        match store.postgres_pool() {
            None => Self::Memory,
            Some(pool) => Self::Postgres(pool.clone()),
        }
    }

    /// The gate of scheduled job `job` for this instance.
    pub fn job_lock(&self, job: &str) -> JobLock {
        match self {
            Self::Memory => JobLock::Single,
            Self::Postgres(pool) => JobLock::Postgres(Box::new(Leader::new(pool, job))),
        }
    }
}

/// Whether this instance runs a scheduled job now: ask [`Self::may_run`] before each run.
pub enum JobLock {
    /// The only serving process: always.
    Single,
    /// While this instance holds the job's advisory lock.
    Postgres(Box<Leader>),
}

impl JobLock {
    /// True when this instance should run the job now. A database failure counts as "not
    /// now" (logged): another instance, or the next tick, runs it.
    pub async fn may_run(&mut self) -> bool {
        match self {
            Self::Single => true,
            Self::Postgres(leader) => match leader.lead().await {
                Ok(leads) => leads,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot ask the database which instance runs a scheduled job; skipping this run");
                    false
                }
            },
        }
    }
}

/// Two instances for the tests: two pools on one fresh, migrated database of the test cluster.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) async fn two_instances() -> (PgPool, PgPool) {
    use std::str::FromStr as _;
    let url = crate::store::pg_cluster::fresh_database().await.unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&url).unwrap();
    let pool = || {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(6)
            .connect_with(options.clone())
    };
    let a = pool().await.unwrap();
    crate::store::postgres::MIGRATOR.run(&a).await.unwrap();
    (a, pool().await.unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_one_sqlite_process_always_runs_its_jobs() {
        let mut lock = Shared::Memory.job_lock("retention-sweep");
        assert!(lock.may_run().await);
        assert!(lock.may_run().await);
    }

    #[tokio::test]
    async fn of_two_postgres_instances_one_runs_a_job_and_each_job_has_its_own_lock() {
        let (a, b) = two_instances().await;
        let (shared_a, shared_b) = (Shared::Postgres(a), Shared::Postgres(b));
        let mut sweep_a = shared_a.job_lock("retention-sweep");
        let mut sweep_b = shared_b.job_lock("retention-sweep");
        assert!(sweep_a.may_run().await);
        assert!(!sweep_b.may_run().await);
        // Another job is free: B can run it while A sweeps.
        let mut sync_b = shared_b.job_lock("directory-sync");
        assert!(sync_b.may_run().await);
        assert!(!shared_a.job_lock("directory-sync").may_run().await);
    }
}
