//! Storing an imported seed file (DESIGN §8): the parsers in `crate::import` turn bytes into
//! validated rows; this module checks them against the vault (duplicate serials, policy),
//! seals them on both cores and inserts them all — or nothing — in one transaction with one
//! audit event. A dry run stops before anything is written.

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::{resolve_policy, Env, TokenError};
use crate::audit::{self, NewEvent};
use crate::import::{ImportFormat, ParsedFile, RowError, RowWarning};
use crate::store::tokens::{self as rows, NewTokenRow};
use crate::store::StoreError;

/// Rows inserted per statement (15 bound values each; SQLite allows 32,766 per statement).
const INSERT_BATCH: usize = 2000;

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
    #[schema(value_type = Vec<Object>)]
    pub warnings: Vec<RowWarning>,
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<RowError>,
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
    } = parsed;
    let total = parsed_rows.len()
        + errors
            .iter()
            .map(|e| e.line)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
    let policy = resolve_policy(env.policies, policy)?;

    // Serials already in the vault.
    for chunk in parsed_rows.chunks(INSERT_BATCH) {
        let serials: Vec<&str> = chunk.iter().map(|r| r.serial.as_str()).collect();
        let existing = rows::existing_serials(env.store.pool(), &serials).await?;
        for row in chunk.iter().filter(|r| existing.contains(&r.serial)) {
            errors.push(RowError {
                line: row.line,
                column: "serial".into(),
                reason: format!("serial '{}' already exists in the vault", row.serial),
                fix: "remove this row, or cancel the existing token first if it is being replaced"
                    .into(),
            });
        }
    }
    errors.sort_by_key(|e| e.line);
    let mut report = ImportReport {
        format,
        rows: total.max(parsed_rows.len()),
        imported: 0,
        dry_run,
        warnings,
        errors,
    };
    if dry_run || !report.errors.is_empty() {
        return Ok(report);
    }

    // Seal on every core: the rows are independent and sealing is pure CPU.
    let now = env.unix();
    let deadline = env.deadline_for(policy);
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let per_worker = parsed_rows.len().div_ceil(workers).max(1);
    let sealed: Vec<(String, Vec<u8>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = parsed_rows
            .chunks(per_worker)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|row| {
                            let token_id = uuid::Uuid::new_v4().to_string();
                            env.vault
                                .seal_seed(&token_id, &row.serial, &row.seed)
                                .map(|s| (token_id, s.into_bytes()))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(crate::vault::VaultError::Seal)))
            .collect::<Result<Vec<_>, _>>()
    })?
    .into_iter()
    .flatten()
    .collect();

    let mut tx = env.store.begin_write().await?;
    let mut done = 0;
    for (chunk, sealed_chunk) in parsed_rows
        .chunks(INSERT_BATCH)
        .zip(sealed.chunks(INSERT_BATCH))
    {
        let batch: Vec<NewTokenRow<'_>> = chunk
            .iter()
            .zip(sealed_chunk)
            .map(|(row, (token_id, blob))| NewTokenRow {
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
            .collect();
        rows::insert_many(&mut tx, &batch)
            .await
            .map_err(|e| match &e {
                StoreError::Sqlx(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    TokenError::Duplicate("(a serial in this file was added meanwhile)".into())
                }
                _ => TokenError::Store(e),
            })?;
        done += batch.len();
        progress(done, parsed_rows.len());
    }
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
        "unassigned": unassigned,
        "short_seeds": short,
        "policy": policy.name,
        "serials": parsed_rows.iter().map(|r| r.serial.as_str()).take(1000).collect::<Vec<_>>(),
    }));
    audit::append(&mut tx, env.vault, env.now, event).await?;
    tx.commit().await.map_err(StoreError::from)?;
    report.imported = parsed_rows.len();
    Ok(report)
}
