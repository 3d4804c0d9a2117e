//! Storing an imported seed file (DESIGN §8): the parsers in `crate::import` turn bytes into
//! validated rows; this module checks them against the vault (duplicate serials, policy),
//! seals them on both cores and stores them all — or nothing — with one audit event. A dry run
//! stops before anything is written.
//!
//! The rows go in as chunks of [`CHUNK`], each its own short write transaction, so that the
//! vault's other writes (a reveal's grant) commit between them instead of waiting for the
//! whole file; every row is tagged with the import (`store::imports`) and no reader sees any
//! of them until one last O(1) transaction marks the import committed together with its
//! `token.imported` event. A failed or cancelled import's rows are deleted in chunks; those of
//! an import whose process died are deleted by the next sweep ([`discard_abandoned`], which
//! also runs when the server starts and before every import).

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{resolve_policy, Env, TokenError};
use crate::audit::{self, NewEvent};
use crate::import::{ImportFormat, ImportRow, ParsedFile, RowError, RowWarning};
use crate::store::imports::{self, NewImport};
use crate::store::tokens::{self as rows, NewTokenRow};
use crate::store::{Store, StoreError};
use crate::vault::{Vault, VaultError};

/// Rows per write transaction (and per progress report and sealing step): 1,000 rows hold the
/// writer ≈10 ms, so a reveal's grant waits at most that long behind the import
/// (BENCHMARKS.md, "Reveals while the vault is busy").
const CHUNK: usize = 1000;

/// Rows of a discarded import deleted per write transaction.
const DISCARD_CHUNK: i64 = 1000;

/// An import whose heartbeat is older than this is abandoned even if a process with its pid
/// still runs (a chunk takes milliseconds; a stalled import must not hold its serials forever).
const STALE_SECONDS: i64 = 600;

/// The pause after each chunk for an import run beside a server that may be waiting for
/// SQLite's write lock (the CLI): that process waits in SQLite's busy handler, which polls with
/// growing sleeps and would almost never find the lock free between back-to-back chunks. In
/// the server itself no pause is needed: its writes queue fairly for one connection.
pub const PAUSE_BESIDE_A_SERVER: Duration = Duration::from_millis(15);

/// A chunk's token ids and sealed seeds, in row order.
type SealedChunk = Vec<(String, Vec<u8>)>;

/// What an import did or would do. Never carries a secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportReport {
    #[schema(value_type = String)]
    pub format: ImportFormat,
    /// Data rows found in the file.
    pub rows: usize,
    /// Tokens escrowed (0 for a dry run or when any row is bad).
    pub imported: usize,
    pub dry_run: bool,
    /// Keys left out on request (`skip_unsupported`: HOTP, OCRA or vendor keys in a PSKC
    /// file), each listed in `warnings`.
    pub skipped: usize,
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<RowWarning>,
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<RowError>,
    /// Warnings beyond the first 1,000, counted but not listed.
    pub warnings_omitted: usize,
    /// Errors beyond the first 1,000, counted but not listed.
    pub errors_omitted: usize,
}

impl ImportReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks `parsed` against the vault and, unless `dry_run` or any row is bad, stores every row.
/// `pause` comes after each chunk: zero in the server, [`PAUSE_BESIDE_A_SERVER`] from another
/// process.
#[allow(clippy::too_many_arguments)]
pub async fn store(
    env: &Env<'_>,
    actor: &str,
    file_name: &str,
    parsed: ParsedFile,
    policy: Option<&str>,
    dry_run: bool,
    pause: Duration,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ImportReport, TokenError> {
    let ParsedFile {
        format,
        rows: parsed_rows,
        warnings,
        mut errors,
        warnings_omitted,
        mut errors_omitted,
        error_lines,
        skipped,
    } = parsed;
    let total = parsed_rows.len() + error_lines;
    let policy = resolve_policy(env.policies, policy)?;

    // Serials already in the vault (visible), or taken by an import still running (not).
    let serials: Vec<&str> = parsed_rows.iter().map(|r| r.serial.as_str()).collect();
    let existing: HashMap<String, bool> = rows::existing_serials(env.store, &serials)
        .await?
        .into_iter()
        .collect();
    drop(serials);
    for row in &parsed_rows {
        let Some(visible) = existing.get(&row.serial) else {
            continue;
        };
        errors.push(if *visible {
            RowError {
                line: row.line,
                column: "serial".into(),
                reason: format!("serial '{}' already exists in the vault", row.serial),
                fix: "remove this row, or cancel the existing token first if it is being replaced"
                    .into(),
            }
        } else {
            RowError {
                line: row.line,
                column: "serial".into(),
                reason: format!(
                    "serial '{}' is being imported by another import that has not finished",
                    row.serial
                ),
                fix: "wait for that import to finish: if it escrows this serial, remove this row; if it fails, import again".into(),
            }
        });
    }
    errors.sort_by_key(|e| e.line);
    if errors.len() > crate::import::MAX_LISTED {
        errors_omitted += errors.len() - crate::import::MAX_LISTED;
        errors.truncate(crate::import::MAX_LISTED);
    }
    let mut report = ImportReport {
        format,
        rows: total.max(parsed_rows.len()),
        imported: 0,
        dry_run,
        skipped,
        warnings,
        errors,
        warnings_omitted,
        errors_omitted,
    };
    if dry_run || !report.errors.is_empty() {
        return Ok(report);
    }

    // Whatever an earlier import left behind is gone before this one takes its place.
    discard_abandoned(env.store).await?;
    let now = env.unix();
    let deadline = env.deadline_for(policy);
    let pending = PendingImport::begin(env.store, actor, file_name).await?;
    let chunks = Chunks {
        actor,
        policy: &policy.name,
        now,
        deadline,
        pause,
    };
    let stored = store_chunks(env, &pending, &chunks, &parsed_rows, progress).await;
    let committed = match stored {
        Ok(()) => {
            let unassigned = parsed_rows.iter().filter(|r| r.owner.is_none()).count();
            let short = parsed_rows.iter().filter(|r| r.seed.is_short()).count();
            let event = NewEvent::new(
                actor,
                "token.imported",
                format!("import:{}", file_name.chars().take(200).collect::<String>()),
            )
            .details(json!({
                "file": file_name,
                "format": format.as_str(),
                "imported": parsed_rows.len(),
                "skipped": skipped,
                "unassigned": unassigned,
                "short_seeds": short,
                "policy": policy.name,
                "serials": parsed_rows.iter().map(|r| r.serial.as_str()).take(1000).collect::<Vec<_>>(),
            }));
            commit(env, &pending, event).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = committed {
        pending.discard().await;
        return Err(e);
    }
    pending.disarm();
    crate::telemetry::imported(parsed_rows.len());
    report.imported = parsed_rows.len();
    Ok(report)
}

/// What every row of one import shares.
#[derive(Clone, Copy)]
struct Chunks<'a> {
    actor: &'a str,
    policy: &'a str,
    now: i64,
    deadline: i64,
    pause: Duration,
}

/// The one short transaction that makes every row of the import visible, with its audit
/// event: O(1) in the number of rows.
async fn commit(env: &Env<'_>, pending: &PendingImport, event: NewEvent) -> Result<(), TokenError> {
    let mut tx = env.store.begin_write().await?;
    if !imports::mark_committed(&mut tx, pending.id, env.unix()).await? {
        return Err(TokenError::ImportAbandoned);
    }
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Seals every row (on one thread per core) and stores them chunk by chunk, each chunk in its
/// own write transaction, tagged with the pending import.
async fn store_chunks(
    env: &Env<'_>,
    pending: &PendingImport,
    shared: &Chunks<'_>,
    parsed_rows: &[ImportRow],
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(), TokenError> {
    let Chunks {
        actor,
        policy,
        now,
        deadline,
        pause,
    } = *shared;
    // Sealing first, on one thread per core: it takes no lock, and the writer is then held
    // only for the inserts.
    let mut sealed_chunks = Vec::with_capacity(parsed_rows.len().div_ceil(CHUNK));
    run_blocking(|| {
        seal_pipelined(env.vault, parsed_rows, |_, sealed| {
            sealed_chunks.push(std::mem::take(sealed));
            Ok(())
        })
    })?;
    let mut done = 0;
    for (chunk, sealed) in parsed_rows.chunks(CHUNK).zip(sealed_chunks) {
        {
            let mut tx = env.store.begin_write().await?;
            if !imports::heartbeat(&mut tx, pending.id, wall_clock()).await? {
                return Err(TokenError::ImportAbandoned);
            }
            rows::insert_bulk(&mut tx, pending.id, |sink| {
                for (row, (token_id, blob)) in chunk.iter().zip(&sealed) {
                    sink.insert(&NewTokenRow {
                        token_id,
                        serial: &row.serial,
                        owner: row.owner.as_deref(),
                        display_name: row.display_name.as_deref(),
                        manufacturer: row.manufacturer.as_deref(),
                        model: row.model.as_deref(),
                        algorithm: row.algorithm.as_str(),
                        digits: row.digits,
                        period: row.period,
                        policy,
                        sealed_seed: blob,
                        captured_by: actor,
                        captured_at: now,
                        retention_deadline: deadline,
                    })
                    .map_err(added_meanwhile)?;
                }
                Ok::<(), TokenError>(())
            })
            .await
            // PostgreSQL inserts a chunk's last rows when the sink closes: its duplicate
            // surfaces here rather than from `sink.insert`.
            .map_err(added_meanwhile)??;
            tx.commit().await?;
            done += chunk.len();
            progress(done, parsed_rows.len());
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
    Ok(())
}
/// A unique violation while inserting an import's rows: a serial of the file was captured or
/// imported after the duplicate check (the same clear duplicate error); anything else as is.
fn added_meanwhile(e: crate::store::StoreError) -> TokenError {
    if e.is_unique_violation() {
        TokenError::Duplicate("(a serial in this file was added meanwhile)".into())
    } else {
        TokenError::Store(e)
    }
}

/// Seals `rows` on worker threads, chunk by chunk, and hands each sealed chunk with its rows to
/// `consume` on the calling thread, in file order: storing one chunk overlaps sealing the next
/// ones. Each row gets a fresh random token id, which its sealed seed is bound to. Stops at the
/// first error; the workers then stop too.
fn seal_pipelined(
    vault: &Vault,
    rows: &[ImportRow],
    mut consume: impl FnMut(&[ImportRow], &mut SealedChunk) -> Result<(), TokenError>,
) -> Result<(), TokenError> {
    let chunks: Vec<&[ImportRow]> = rows.chunks(CHUNK).collect();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
        .min(chunks.len().max(1));
    std::thread::scope(|scope| {
        // Worker `w` seals chunks w, w + workers, … into its own channel, so reading the
        // channels round-robin yields the chunks in order. The small bound keeps the sealed
        // data in flight, not the whole file.
        let (handles, receivers): (Vec<_>, Vec<_>) = (0..workers)
            .map(|w| {
                let (sender, receiver) = mpsc::sync_channel::<Result<SealedChunk, VaultError>>(4);
                let chunks = &chunks;
                let handle = scope.spawn(move || {
                    for chunk in chunks.iter().skip(w).step_by(workers) {
                        let sealed = chunk
                            .iter()
                            .map(|row| {
                                let token_id = uuid::Uuid::new_v4().to_string();
                                vault
                                    .seal_seed(&token_id, &row.serial, &row.seed)
                                    .map(|s| (token_id, s.into_bytes()))
                            })
                            .collect::<Result<SealedChunk, _>>();
                        let failed = sealed.is_err();
                        // A send fails when the consumer stopped early: nothing more to do.
                        if sender.send(sealed).is_err() || failed {
                            break;
                        }
                    }
                });
                (handle, receiver)
            })
            .unzip();
        let mut consumed = || -> Result<(), TokenError> {
            for (i, chunk) in chunks.iter().enumerate() {
                // A closed channel means its worker died without sending: a sealing failure.
                let mut sealed = receivers[i % workers]
                    .recv()
                    .map_err(|_| VaultError::Seal)??;
                consume(chunk, &mut sealed)?;
            }
            Ok(())
        };
        let result = consumed();
        // Unblocks workers still waiting to send after an early stop, then joins them; a
        // worker that panicked counts as a sealing failure rather than a panic here.
        drop(receivers);
        let joined = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| TokenError::from(VaultError::Seal)))
            .collect::<Result<Vec<()>, _>>();
        result.and(joined.map(drop))
    })
}

/// Runs blocking work on the calling thread; on a multi-threaded runtime the thread's other
/// tasks move elsewhere meanwhile.
fn run_blocking<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Seconds since the epoch by the system clock: heartbeats are compared across processes,
/// so they use the real clock, not the vault's injectable one.
fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22):
/// with the pid it names one process for good, as pids are reused. `None` when it does not
/// run (or there is no `/proc`).
fn process_start(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// An import whose rows are being written: discarded when dropped before [`Self::disarm`]
/// (a cancelled request), so its rows never linger.
struct PendingImport {
    store: Store,
    id: i64,
    armed: bool,
}

impl PendingImport {
    async fn begin(store: &Store, actor: &str, file: &str) -> Result<Self, TokenError> {
        let pid = i64::from(std::process::id());
        let mut tx = store.begin_write().await?;
        let id = imports::begin(
            &mut tx,
            &NewImport {
                actor,
                file,
                started_at: wall_clock(),
                pid,
                pid_start: process_start(pid).unwrap_or(0),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Self {
            store: store.clone(),
            id,
            armed: true,
        })
    }

    fn disarm(mut self) {
        self.armed = false;
    }

    async fn discard(mut self) {
        self.armed = false;
        if let Err(e) = discard(&self.store, self.id).await {
            tracing::warn!(import = self.id, error = %e, "could not delete a failed import's rows; the next sweep will");
        }
    }
}

impl Drop for PendingImport {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, id) = (self.store.clone(), self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = discard(&store, id).await {
                    tracing::warn!(import = id, error = %e, "could not delete a cancelled import's rows; the next sweep will");
                }
            });
        }
    }
}

/// Deletes an uncommitted import's rows, chunk by chunk, then the import. Claims it first, so
/// that its importer (if it still runs) can neither commit it nor add to it.
async fn discard(store: &Store, id: i64) -> Result<u64, StoreError> {
    let mut tx = store.begin_write().await?;
    if !imports::claim_abandoned(&mut tx, id).await? {
        // Committed meanwhile: nothing to delete.
        return Ok(0);
    }
    tx.commit().await?;
    let mut deleted = 0;
    loop {
        let mut tx = store.begin_write().await?;
        let n = imports::delete_rows(&mut tx, id, DISCARD_CHUNK).await?;
        if n == 0 {
            imports::forget(&mut tx, id).await?;
            tx.commit().await?;
            return Ok(deleted);
        }
        tx.commit().await?;
        deleted += n;
    }
}

/// Deletes the rows of every import whose process is gone or that has been silent for
/// [`STALE_SECONDS`]: they were never visible, and their serials become free again. Runs
/// when the server starts, with every sweep, and before every import. Returns how many
/// imports were discarded.
pub async fn discard_abandoned(store: &Store) -> Result<usize, TokenError> {
    let now = wall_clock();
    let mut discarded = 0;
    for pending in imports::pending(store).await? {
        // Claimed (pid -1) by a cleaner that may have died half-way: finishing is harmless.
        let gone = pending.pid < 0
            || (pending.pid_start != 0 && process_start(pending.pid) != Some(pending.pid_start));
        if gone || pending.heartbeat_at < now - STALE_SECONDS {
            let rows = discard(store, pending.id).await?;
            tracing::warn!(
                import = pending.id,
                rows,
                "deleted the rows of an import that never committed"
            );
            discarded += 1;
        }
    }
    Ok(discarded)
}
