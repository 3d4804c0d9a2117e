//! Storing an imported seed file (DESIGN §8): the parsers in `crate::import` turn bytes into
//! validated rows; this module checks them against the vault (duplicate serials, policy),
//! seals them on both cores and inserts them all — or nothing — in one transaction with one
//! audit event. A dry run stops before anything is written.

use std::collections::HashSet;
use std::sync::mpsc;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{resolve_policy, Env, TokenError};
use crate::audit::{self, NewEvent};
use crate::import::{ImportFormat, ImportRow, ParsedFile, RowError, RowWarning};
use crate::store::tokens::{self as rows, NewTokenRow};
use crate::vault::{Vault, VaultError};

/// Rows per step of the seal-and-insert pipeline, and per progress report.
const CHUNK: usize = 1000;

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
pub async fn store(
    env: &Env<'_>,
    actor: &str,
    file_name: &str,
    parsed: ParsedFile,
    policy: Option<&str>,
    dry_run: bool,
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

    // Serials already in the vault.
    let serials: Vec<&str> = parsed_rows.iter().map(|r| r.serial.as_str()).collect();
    let existing: HashSet<String> = rows::existing_serials(env.store, &serials)
        .await?
        .into_iter()
        .collect();
    drop(serials);
    for row in parsed_rows.iter().filter(|r| existing.contains(&r.serial)) {
        errors.push(RowError {
            line: row.line,
            column: "serial".into(),
            reason: format!("serial '{}' already exists in the vault", row.serial),
            fix: "remove this row, or cancel the existing token first if it is being replaced"
                .into(),
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

    // Seal on one thread per core while this thread inserts what is already sealed, in file
    // order, all in one transaction: sealing and SQLite's work overlap instead of adding up.
    let now = env.unix();
    let deadline = env.deadline_for(policy);
    let mut tx = env.store.begin_write().await?;
    let mut done = 0;
    rows::insert_bulk(&mut tx, |sink| {
        seal_pipelined(env.vault, &parsed_rows, |chunk, sealed| {
            for (row, (token_id, blob)) in chunk.iter().zip(sealed) {
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
                    policy: &policy.name,
                    sealed_seed: blob,
                    captured_by: actor,
                    captured_at: now,
                    retention_deadline: deadline,
                })
                .map_err(|e| {
                    if e.is_unique_violation() {
                        TokenError::Duplicate("(a serial in this file was added meanwhile)".into())
                    } else {
                        TokenError::Store(e)
                    }
                })?;
            }
            done += chunk.len();
            progress(done, parsed_rows.len());
            Ok(())
        })
    })
    .await??;
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
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await?;
    crate::telemetry::imported(parsed_rows.len());
    report.imported = parsed_rows.len();
    Ok(report)
}

/// Seals `rows` on worker threads, chunk by chunk, and hands each sealed chunk with its rows to
/// `consume` on the calling thread, in file order: storing one chunk overlaps sealing the next
/// ones. Each row gets a fresh random token id, which its sealed seed is bound to. Stops at the
/// first error; the workers then stop too.
fn seal_pipelined(
    vault: &Vault,
    rows: &[ImportRow],
    mut consume: impl FnMut(&[ImportRow], &SealedChunk) -> Result<(), TokenError>,
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
                let sealed = receivers[i % workers]
                    .recv()
                    .map_err(|_| VaultError::Seal)??;
                consume(chunk, &sealed)?;
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
