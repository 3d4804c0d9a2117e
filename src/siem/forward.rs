//! One forwarder task per sink: read after the cursor, send, acknowledge, repeat; back off
//! when the sink fails; sleep until the next commit when caught up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::transport::{frame_syslog, Connection, SyslogHeader};
use super::{Kind, Sink};
use crate::store::audit::{AuditFilter, AuditReader};
use crate::store::{self, Store, StoreError};

/// First wait after a failure; doubled per failure up to [`BACKOFF_CAP`].
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// The longest wait between retries: a sink that comes back is used again within this.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How often a caught-up forwarder looks for events written by another process (the CLI, or
/// on PostgreSQL the other instances); this process's own commits wake it at once. A poll
/// rather than PostgreSQL's `LISTEN`: it costs one indexed head read per sink every two
/// seconds, needs no dedicated connection to keep alive and re-listen after a cut, and is the
/// same code on both engines; a SIEM two seconds behind another instance's commit is on time.
const POLL: Duration = Duration::from_secs(2);

/// What a forwarder last saw, for the dashboard and the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkHealth {
    /// The last failure, cleared by the next acknowledged batch.
    pub last_error: Option<String>,
    /// Consecutive failures.
    pub failures: u32,
    /// Events acknowledged since start.
    pub forwarded: u64,
}

/// The running forwarders and their health; stopping (or dropping) it ends them.
#[derive(Default)]
pub struct Forwarding {
    tasks: Vec<JoinHandle<()>>,
    health: Arc<Mutex<BTreeMap<String, SinkHealth>>>,
}

impl Forwarding {
    /// Each sink's health, by name.
    pub fn health(&self) -> BTreeMap<String, SinkHealth> {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// A cheap handle on the health table (for the web state).
    pub fn health_table(&self) -> Arc<Mutex<BTreeMap<String, SinkHealth>>> {
        self.health.clone()
    }

    /// Ends every forwarder. What a sink acknowledged is in its cursor; a batch in flight is
    /// sent again by the next start (at least once).
    pub async fn stop(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts one forwarder per sink. Call within a Tokio runtime.
pub fn spawn(store: &Store, sinks: &[Sink]) -> Forwarding {
    spawn_with(store, sinks, &crate::shared::Shared::Memory)
}

/// [`spawn`] for one of several instances: each sink's forwarder sends only while this
/// instance holds the sink's job lock (`siem:<name>`), so no two instances send one batch
/// twice; another takes over when the holder dies.
pub fn spawn_with(store: &Store, sinks: &[Sink], shared: &crate::shared::Shared) -> Forwarding {
    let mut forwarding = Forwarding::default();
    for sink in sinks {
        if let Ok(mut health) = forwarding.health.lock() {
            health.insert(sink.name.clone(), SinkHealth::default());
        }
        forwarding.tasks.push(tokio::spawn(run(
            store.clone(),
            sink.clone(),
            forwarding.health.clone(),
            shared.job_lock(&format!("siem:{}", sink.name)),
        )));
    }
    forwarding
}

/// A batch read from the trail, framed for its sink.
struct Batch {
    bytes: Vec<u8>,
    last: i64,
    count: u64,
}

/// Reads the events after `after` (at most `limit`) and frames them: JSON Lines for HTTP, one
/// octet-counted RFC 5424 message per event for syslog. Blocking.
fn read_batch(
    reader: &AuditReader,
    after: i64,
    head: i64,
    limit: usize,
    syslog: Option<&SyslogHeader>,
) -> Result<Batch, StoreError> {
    let mut batch = Batch {
        bytes: Vec::with_capacity(limit * 640),
        last: after,
        count: 0,
    };
    let mut line = Vec::with_capacity(1024);
    reader.scan(&AuditFilter::default(), after + 1, head, |event| {
        match syslog {
            None => crate::audit::export::write_jsonl(event, &mut batch.bytes),
            Some(header) => {
                line.clear();
                crate::audit::export::write_jsonl(event, &mut line);
                frame_syslog(
                    header,
                    event.time,
                    event.action,
                    event.outcome,
                    &line,
                    &mut batch.bytes,
                );
            }
        }
        batch.last = event.seq;
        batch.count += 1;
        batch.count < limit as u64
    })?;
    Ok(batch)
}

fn note(health: &Mutex<BTreeMap<String, SinkHealth>>, sink: &str, f: impl FnOnce(&mut SinkHealth)) {
    if let Ok(mut table) = health.lock() {
        f(table.entry(sink.to_owned()).or_default());
    }
}

async fn run(
    store: Store,
    sink: Sink,
    health: Arc<Mutex<BTreeMap<String, SinkHealth>>>,
    mut lock: crate::shared::JobLock,
) {
    let mut commits = store.commits();
    let mut connection = Connection::new(sink.clone());
    let syslog = (sink.kind != Kind::Http).then(SyslogHeader::local);
    let mut backoff = BACKOFF_START;
    let mut reported_ahead = false;
    // The batches are read by an AuditReader: the SQLite file, or the PostgreSQL pool.
    let source = match store.audit_source() {
        Ok(source) => source,
        Err(e) => {
            tracing::error!(sink = %sink.name, error = %e, "SIEM forwarding cannot read the audit trail");
            return;
        }
    };
    let mut reader: Option<AuditReader> = None;
    loop {
        if !lock.may_run().await {
            tokio::time::sleep(POLL).await;
            continue;
        }
        let step = async {
            let acked = store::siem::cursor(&store, &sink.name)
                .await?
                .map_or(0, |c| c.acked_seq);
            let head = store::audit::head(&store).await?.map_or(0, |(seq, _)| seq);
            Ok::<_, StoreError>((acked, head))
        }
        .await;
        let (acked, head) = match step {
            Ok(positions) => positions,
            Err(e) => {
                tracing::warn!(sink = %sink.name, error = %e, "SIEM forwarder cannot read its cursor; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
                continue;
            }
        };
        if acked > head {
            if !reported_ahead {
                tracing::error!(
                    sink = %sink.name, cursor = acked, head,
                    "SIEM cursor is ahead of the audit head: this vault was restored from an older backup. Forwarding to this sink is stopped; see `seedvault siem status` and reset it with `seedvault siem reset {}`",
                    sink.name
                );
                note(&health, &sink.name, |h| {
                    h.last_error = Some(format!(
                        "cursor {acked} is ahead of the audit head {head} (restored vault?) — run `seedvault siem reset {}`",
                        sink.name
                    ));
                });
                reported_ahead = true;
            }
            wait_for_commit(&mut commits).await;
            continue;
        }
        reported_ahead = false;
        if acked == head {
            wait_for_commit(&mut commits).await;
            continue;
        }
        let limit = sink.batch_events;
        let header = syslog.clone();
        let taken = reader.take();
        let source = source.clone();
        let read = tokio::task::spawn_blocking(move || {
            let reader = match taken {
                Some(reader) => reader,
                None => source.reader()?,
            };
            let batch = read_batch(&reader, acked, head, limit, header.as_ref())?;
            Ok::<_, StoreError>((reader, batch))
        })
        .await;
        let batch = match read {
            Ok(Ok((kept, batch))) => {
                reader = Some(kept);
                batch
            }
            Ok(Err(e)) => {
                tracing::warn!(sink = %sink.name, error = %e, "SIEM forwarder cannot read the trail; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
                continue;
            }
            Err(e) => {
                tracing::error!(sink = %sink.name, error = %e, "SIEM forwarder's reader failed; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if batch.count == 0 {
            wait_for_commit(&mut commits).await;
            continue;
        }
        match connection.send(batch.bytes).await {
            Ok(()) => {
                if let Err(e) = acknowledge(&store, &sink.name, batch.last).await {
                    // Sent but not recorded: the next round sends it again (at least once).
                    tracing::warn!(sink = %sink.name, error = %e, "cannot record the SIEM cursor; the batch will be sent again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    continue;
                }
                backoff = BACKOFF_START;
                note(&health, &sink.name, |h| {
                    h.last_error = None;
                    h.failures = 0;
                    h.forwarded += batch.count;
                });
            }
            Err(e) => {
                let failures = {
                    let mut n = 0;
                    note(&health, &sink.name, |h| {
                        h.failures += 1;
                        h.last_error = Some(e.to_string());
                        n = h.failures;
                    });
                    n
                };
                // One line per outage at warn, the retries at debug: a sink down for a day
                // must not fill the log.
                if failures == 1 {
                    tracing::warn!(sink = %sink.name, error = %e, "SIEM sink failed; events are kept and retried with backoff");
                } else {
                    tracing::debug!(sink = %sink.name, error = %e, failures, "SIEM sink still failing");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
    }
}

async fn acknowledge(store: &Store, sink: &str, last: i64) -> Result<(), StoreError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut tx = store.begin_write().await?;
    store::siem::set(&mut tx, sink, last, now).await?;
    tx.commit().await
}

/// Returns at the next commit of this process, or after [`POLL`] (events another process
/// wrote).
async fn wait_for_commit(commits: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::select! {
        changed = commits.changed() => {
            if changed.is_err() {
                tokio::time::sleep(POLL).await;
            }
        }
        () = tokio::time::sleep(POLL) => {}
    }
}
