//! Group commit: concurrent write jobs share one transaction and so one `fsync`.
//!
//! With `synchronous=FULL` every commit waits for the disk, and SQLite has one writer: one
//! commit per action caps throughput at the disk's flush rate, whatever the CPU could do.
//! [`Store::begin_grouped`](super::Store::begin_grouped) hands out a [`GroupTx`]: the job
//! runs alone (it holds the batch lock) inside a savepoint of the shared transaction, so it is
//! atomic on its own — [`GroupTx::rollback`] undoes exactly its writes — and
//! [`GroupTx::commit`] returns only once the shared transaction, with the job's writes and its
//! audit event, is durably committed. Nothing a job produces (a code) may leave before that.
//!
//! Batches form by themselves: the lock is fair (FIFO), and the commit of a batch is queued
//! behind the jobs that were already waiting, so while one batch is being flushed the next
//! one gathers. An idle server commits a lone job at once; no timer adds latency.
//!
//! Every job of a batch succeeds or fails together at commit: if the commit fails, or a job is
//! cancelled half-way (its future dropped), the whole shared transaction is rolled back and
//! every job in it reports an error — it fails closed, never half-recorded.

use std::sync::Arc;

use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use super::{Inline, Store, StoreError, WriteTx};

/// The result a committed batch reports to each of its jobs.
type Verdict = Result<(), StoreError>;

/// The shared, not yet committed transaction and the jobs waiting for its commit.
#[derive(Default)]
pub(super) struct Batch {
    tx: Option<WriteTx>,
    waiting: Vec<oneshot::Sender<Verdict>>,
}

impl Batch {
    /// Abandons the shared transaction (dropping it rolls it back, or replaces the write
    /// connection if that fails) and tells every job in it.
    fn abort(&mut self, cause: &StoreError) {
        self.tx = None;
        for job in self.waiting.drain(..) {
            let _ = job.send(Err(cause.shared()));
        }
    }
}

pub(super) type Group = Arc<Mutex<Batch>>;

/// One job's part of a shared write transaction. Dereferences to the [`WriteTx`], so domain
/// code runs on it exactly as on a transaction of its own (`&mut *tx`, `tx.inline(…)`); end
/// it with [`commit`](Self::commit) or [`rollback`](Self::rollback).
///
/// On PostgreSQL, which takes concurrent writers, a `GroupTx` is a transaction of its own
/// ([`GroupTx::solo`]): the same API, no batch.
pub struct GroupTx {
    /// `None`: a job alone in its own transaction (PostgreSQL).
    group: Option<Group>,
    batch: Option<OwnedMutexGuard<Batch>>,
    tx: Option<WriteTx>,
}

const SAVEPOINT: &str = "SAVEPOINT grouped_job";
const RELEASE: &str = "RELEASE grouped_job";
const ROLLBACK_TO: &str = "ROLLBACK TO grouped_job";
/// [`ROLLBACK_TO`] then [`RELEASE`], in one call.
const UNDO: &str = "ROLLBACK TO grouped_job; RELEASE grouped_job";

async fn exec(tx: &mut WriteTx, sql: &'static str) -> Result<(), StoreError> {
    sqlx::query(sql).execute(tx.sqlite()?).await?;
    Ok(())
}

impl GroupTx {
    /// Waits for the batch, joins (or opens) its transaction and starts this job's savepoint.
    pub(super) async fn begin(group: &Group, store: &Store) -> Result<Self, StoreError> {
        let mut job = Self::join(group, store).await?;
        if let Err(e) = exec(job.tx_mut()?, SAVEPOINT).await {
            job.abort(&e);
            return Err(e);
        }
        Ok(job)
    }

    /// Waits for the batch and joins (or opens) its transaction, with no savepoint yet: for
    /// [`Self::run`], which opens it in the same call as the job's statements.
    pub(super) async fn join(group: &Group, store: &Store) -> Result<Self, StoreError> {
        let mut batch = group.clone().lock_owned().await;
        let tx = match batch.tx.take() {
            Some(tx) => tx,
            None => store.begin_write().await?,
        };
        Ok(Self {
            group: Some(group.clone()),
            batch: Some(batch),
            tx: Some(tx),
        })
    }

    /// Runs a whole job in one call on the calling thread — its savepoint, `work`'s statements
    /// and the savepoint's release (or, when `work` fails, its rollback) — then waits for the
    /// durable commit as [`Self::commit`] does, or leaves the batch as [`Self::rollback`]
    /// does. One hand-off to the write connection's thread per job instead of one per
    /// statement. The outer error is the store's (the job's writes are then not kept, and the
    /// batch's other jobs fail with it); the inner one is `work`'s own refusal.
    pub async fn run<T, E>(
        mut self,
        work: impl FnOnce(&Inline<'_>) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        if self.group.is_none() {
            let outcome = self.tx_mut()?.inline(work).await?;
            return match outcome {
                Ok(value) => self.commit().await.map(|()| Ok(value)),
                Err(refusal) => {
                    self.rollback().await;
                    Ok(Err(refusal))
                }
            };
        }
        let ran = self
            .tx_mut()?
            .inline(|c| -> Result<Result<T, E>, StoreError> {
                c.execute_sqlite(SAVEPOINT)?;
                let outcome = work(c);
                c.execute_sqlite(match outcome {
                    Ok(_) => RELEASE,
                    Err(_) => UNDO,
                })?;
                Ok(outcome)
            })
            .await
            .and_then(|ran| ran);
        match ran {
            Ok(Ok(value)) => self.queue_commit().await.map(|()| Ok(value)),
            Ok(Err(refusal)) => {
                self.leave_undone().await;
                Ok(Err(refusal))
            }
            Err(e) => {
                self.abort(&e);
                Err(e)
            }
        }
    }

    fn tx_mut(&mut self) -> Result<&mut WriteTx, StoreError> {
        self.tx
            .as_mut()
            .ok_or_else(|| StoreError::Batch("the job was already ended".into()))
    }

    /// Abandons the whole batch (see [`Batch::abort`]).
    fn abort(&mut self, cause: &StoreError) {
        self.tx = None;
        if let Some(mut batch) = self.batch.take() {
            batch.abort(cause);
        }
    }

    /// A job in a transaction of its own (PostgreSQL).
    pub(super) fn solo(tx: WriteTx) -> Self {
        Self {
            group: None,
            batch: None,
            tx: Some(tx),
        }
    }

    /// Keeps this job's writes and waits until the shared transaction holding them is
    /// durably committed.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        if self.group.is_some() {
            if let Err(e) = exec(self.tx_mut()?, RELEASE).await {
                self.abort(&e);
                return Err(e);
            }
        }
        self.queue_commit().await
    }

    /// Hands the released job's transaction back to the batch and waits for the batch's
    /// durable commit (on PostgreSQL: commits its own transaction).
    async fn queue_commit(mut self) -> Result<(), StoreError> {
        let Some(group) = self.group.clone() else {
            return match self.tx.take() {
                Some(tx) => tx.commit().await,
                None => Err(StoreError::Batch("the job was already ended".into())),
            };
        };
        let (Some(mut batch), Some(tx)) = (self.batch.take(), self.tx.take()) else {
            return Err(StoreError::Batch("the job was already ended".into()));
        };
        let (done, verdict) = oneshot::channel();
        batch.tx = Some(tx);
        batch.waiting.push(done);
        drop(batch);
        // Queued behind the jobs already waiting for the lock, so they join this batch. A task
        // of its own, so a caller that goes away cannot leave the transaction open.
        tokio::spawn(flush(group));
        match verdict.await {
            Ok(verdict) => verdict,
            Err(_) => Err(StoreError::Batch("the shared commit was abandoned".into())),
        }
    }

    /// Undoes this job's writes, leaving the other jobs of the batch untouched.
    pub async fn rollback(mut self) {
        if self.group.is_none() {
            if let Some(tx) = self.tx.take() {
                let _ = tx.rollback().await;
            }
            return;
        }
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        let undone = match exec(tx, ROLLBACK_TO).await {
            Ok(()) => exec(tx, RELEASE).await,
            Err(e) => Err(e),
        };
        match undone {
            Ok(()) => self.leave_undone().await,
            Err(e) => self.abort(&e),
        }
    }

    /// Leaves the batch once this job's savepoint is rolled back and released: its
    /// transaction goes back to the batch, or ends now if no other job is in it.
    async fn leave_undone(mut self) {
        let (Some(mut batch), Some(tx)) = (self.batch.take(), self.tx.take()) else {
            return;
        };
        if batch.waiting.is_empty() {
            // Nothing of anyone else's is in it: end it now and free the write connection.
            let _ = tx.rollback().await;
        } else {
            batch.tx = Some(tx);
        }
    }
}

impl std::ops::Deref for GroupTx {
    type Target = WriteTx;

    fn deref(&self) -> &WriteTx {
        match &self.tx {
            Some(tx) => tx,
            None => unreachable!(
                "a GroupTx's transaction is taken only by commit or rollback, which consume it"
            ),
        }
    }
}

impl std::ops::DerefMut for GroupTx {
    fn deref_mut(&mut self) -> &mut WriteTx {
        match &mut self.tx {
            Some(tx) => tx,
            None => unreachable!(
                "a GroupTx's transaction is taken only by commit or rollback, which consume it"
            ),
        }
    }
}

impl Drop for GroupTx {
    /// A job dropped half-way (its request cancelled) may have left partial writes in the
    /// shared transaction: the whole batch is rolled back and its other jobs fail.
    fn drop(&mut self) {
        if let Some(mut batch) = self.batch.take() {
            self.tx = None;
            batch.abort(&StoreError::Batch(
                "another write sharing this transaction was cancelled".into(),
            ));
        }
    }
}

/// Commits the open batch, if any (its jobs were queued before this), and reports to each job.
async fn flush(group: Group) {
    let mut batch = group.lock_owned().await;
    let Some(tx) = batch.tx.take() else {
        return;
    };
    let waiting = std::mem::take(&mut batch.waiting);
    crate::telemetry::group_commit_batch(waiting.len());
    // On failure every job hears it (none of their results may leave); the connection is
    // cleaned up or replaced as the transaction is dropped, so the next batch starts afresh.
    let verdict = tx.commit().await;
    for job in waiting {
        let _ = job.send(match &verdict {
            Ok(()) => Ok(()),
            Err(e) => Err(e.shared()),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use crate::store::{Store, StoreError, WriteTx};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        sqlx::query("CREATE TABLE scratch (n INTEGER NOT NULL)")
            .execute(store.writer().unwrap())
            .await
            .unwrap();
        (dir, store)
    }

    async fn insert(store: &Store, n: i64, keep: bool) -> bool {
        let mut tx = store.begin_grouped().await.unwrap();
        let job: &mut WriteTx = &mut tx;
        sqlx::query("INSERT INTO scratch (n) VALUES (?)")
            .bind(n)
            .execute(job.sqlite().unwrap())
            .await
            .unwrap();
        if keep {
            tx.commit().await.is_ok()
        } else {
            tx.rollback().await;
            false
        }
    }

    async fn rows(store: &Store) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM scratch ORDER BY n")
            .fetch_all(store.pool().unwrap())
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_jobs_commit_together_and_a_rolled_back_one_leaves_no_trace() {
        let (_dir, store) = store().await;
        let jobs = (1..=40).map(|n| insert(&store, n, n % 4 != 0));
        let committed = futures::future::join_all(jobs).await;
        assert_eq!(committed.iter().filter(|c| **c).count(), 30);
        let expected: Vec<i64> = (1..=40).filter(|n| n % 4 != 0).collect();
        assert_eq!(rows(&store).await, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_dropped_half_way_commits_nothing_and_later_jobs_still_commit() {
        let (_dir, store) = store().await;
        let mut tx = store.begin_grouped().await.unwrap();
        let job: &mut WriteTx = &mut tx;
        sqlx::query("INSERT INTO scratch (n) VALUES (1)")
            .execute(job.sqlite().unwrap())
            .await
            .unwrap();
        drop(tx);
        assert!(insert(&store, 2, true).await);
        assert_eq!(rows(&store).await, vec![2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_write_transactions_still_run_beside_grouped_ones() {
        let (_dir, store) = store().await;
        assert!(!insert(&store, 1, false).await);
        let mut tx = store.begin_write().await.unwrap();
        sqlx::query("INSERT INTO scratch (n) VALUES (3)")
            .execute(tx.sqlite().unwrap())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(insert(&store, 4, true).await);
        assert_eq!(rows(&store).await, vec![3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_whose_commit_finds_the_disk_full_fails_every_job_and_the_next_batch_commits() {
        let (_dir, store) = store().await;
        store.simulate_full_disk(true);
        let jobs = (1..=8).map(|n| {
            let store = store.clone();
            async move {
                let mut tx = store.begin_grouped().await.unwrap();
                let job: &mut WriteTx = &mut tx;
                sqlx::query("INSERT INTO scratch (n) VALUES (?)")
                    .bind(n)
                    .execute(job.sqlite().unwrap())
                    .await
                    .unwrap();
                tx.commit().await
            }
        });
        let verdicts = futures::future::join_all(jobs).await;
        assert!(
            verdicts
                .iter()
                .all(|v| matches!(v, Err(StoreError::DiskFull(_)))),
            "{verdicts:?}"
        );
        assert_eq!(rows(&store).await, Vec::<i64>::new());
        store.simulate_full_disk(false);
        assert!(insert(&store, 9, true).await);
        assert_eq!(rows(&store).await, vec![9]);
    }

    /// `write_grouped` (the reveal's grant): one call per job. A refusing job leaves nothing,
    /// even when it wrote before refusing, and its batch's other jobs commit; every kept job
    /// is committed when its call returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whole_jobs_in_one_call_keep_or_undo_each_job_alone() {
        let (_dir, store) = store().await;
        let jobs = (1..=40).map(|n| {
            let store = store.clone();
            async move {
                let outcome = store
                    .write_grouped(|c| -> Result<i64, String> {
                        c.execute_sqlite(&format!("INSERT INTO scratch (n) VALUES ({n})"))
                            .unwrap();
                        if n % 4 == 0 {
                            Err(format!("job {n} refuses after writing"))
                        } else {
                            Ok(n)
                        }
                    })
                    .await
                    .unwrap();
                if let Ok(n) = outcome {
                    assert!(
                        rows(&store).await.contains(&n),
                        "job {n} answered before its commit"
                    );
                }
                outcome
            }
        });
        let outcomes = futures::future::join_all(jobs).await;
        assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 10);
        let expected: Vec<i64> = (1..=40).filter(|n| n % 4 != 0).collect();
        assert_eq!(rows(&store).await, expected);
        assert!(
            insert(&store, 41, true).await,
            "the write connection was left in a transaction"
        );
    }

    /// A job whose statement fails at the store (not a refusal of its own) fails, and so does
    /// nothing else afterwards: the next job commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_whole_job_failing_in_the_store_keeps_nothing_and_the_next_commits() {
        let (_dir, store) = store().await;
        let failed = store
            .write_grouped(|c| -> Result<(), StoreError> {
                c.execute_sqlite("INSERT INTO scratch (n) VALUES (1)")?;
                c.execute_sqlite("INSERT INTO no_such_table (n) VALUES (2)")
            })
            .await
            .unwrap();
        assert!(failed.is_err());
        assert!(insert(&store, 3, true).await);
        assert_eq!(rows(&store).await, vec![3]);
    }
}
