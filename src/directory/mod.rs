//! The directory of record (issue 17): per owner, the phone numbers, manager and department an
//! operator verifies a caller against — filled from an HR export ([`csv`]) or LDAP ([`ldap`]),
//! never from what a caller says.
//!
//! A sync replaces every entry of its source in one transaction with one audit event
//! (`directory.synced`, counts and origin); a dry run computes the same [`SyncReport`] and
//! writes nothing. A sync that would leave its source empty (an empty file, a filter that
//! matches nobody) is refused and the old data kept. LDAP is authoritative: an owner it
//! returns moves to source `ldap`, and a CSV row for an owner LDAP holds is refused by line.
//! Every sync's outcome (ok or failed, message, time) is kept per source for the dashboard
//! and `seedvault status`; a failed sync changes no entry.

pub mod csv;
pub mod ldap;
pub mod phone;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::audit::{self, NewEvent, Outcome};
use crate::import::RowError;
use crate::policy::DirectoryNeed;
use crate::store::directory::{self as rows, EntryRow, SyncRow};
use crate::store::{Inline, Store, StoreError};
use crate::vault::Vault;

/// Where entries come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Csv,
    Ldap,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ldap => "ldap",
        }
    }
}

/// One owner's record as a source delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Entry {
    pub owner: String,
    pub display_name: Option<String>,
    /// Numbers of record, `+` and digits.
    pub phones: Vec<String>,
    /// The manager's owner id.
    pub manager: Option<String>,
    pub manager_phone: Option<String>,
    pub department: Option<String>,
    pub mail: Option<String>,
}

impl Entry {
    fn from_row(row: &EntryRow) -> Self {
        Self {
            owner: row.owner.clone(),
            display_name: row.display_name.clone(),
            phones: row.phones.clone(),
            manager: row.manager.clone(),
            manager_phone: row.manager_phone.clone(),
            department: row.department.clone(),
            mail: row.mail.clone(),
        }
    }

    fn to_row(&self, source: Source, at: i64) -> EntryRow {
        EntryRow {
            owner: self.owner.clone(),
            display_name: self.display_name.clone(),
            phones: self.phones.clone(),
            manager: self.manager.clone(),
            manager_phone: self.manager_phone.clone(),
            department: self.department.clone(),
            mail: self.mail.clone(),
            source: source.as_str().to_owned(),
            synced_at: at,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{} problem(s) in {origin} — nothing was changed; fix them and sync again:\n{}", .errors.len(), lines(.errors))]
    Rows {
        origin: String,
        errors: Vec<RowError>,
    },
    #[error("{origin} holds no directory entries — refusing to remove all {existing} {kind} entries; the old data is kept (check the file, or the LDAP base_dn and filter)")]
    Empty {
        kind: &'static str,
        origin: String,
        existing: usize,
    },
    #[error("LDAP sync from {url} failed: {reason} — the last good directory data is kept")]
    Ldap { url: String, reason: String },
    #[error(
        "[directory.ldap] is not configured — add it to seedvault.toml (see docs/DIRECTORY.md)"
    )]
    LdapNotConfigured,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
}

fn lines(errors: &[RowError]) -> String {
    errors
        .iter()
        .map(RowError::to_line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One owner whose record a sync changes: before and after.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Change {
    pub before: Entry,
    pub after: Entry,
}

/// What a sync did (or, dry, would do).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SyncReport {
    pub source: &'static str,
    /// The file's name or the LDAP URL.
    pub origin: String,
    pub dry_run: bool,
    pub added: Vec<Entry>,
    pub changed: Vec<Change>,
    pub removed: Vec<Entry>,
    pub unchanged: usize,
    /// Entries of this source after the sync.
    pub total: usize,
    /// Things that did not stop the sync (an LDAP manager DN that matches no entry).
    pub warnings: Vec<String>,
}

impl SyncReport {
    /// `added 2, changed 1, removed 0, unchanged 40`.
    pub fn counts(&self) -> String {
        format!(
            "added {}, changed {}, removed {}, unchanged {}",
            self.added.len(),
            self.changed.len(),
            self.removed.len(),
            self.unchanged
        )
    }
}

/// What a sync needs from the running vault.
pub struct SyncEnv<'a> {
    pub store: &'a Store,
    pub vault: &'a Vault,
    pub now: OffsetDateTime,
}

/// Syncs the CSV `bytes` (from a file called `origin`): all rows or none.
pub async fn sync_csv(
    env: &SyncEnv<'_>,
    actor: &str,
    origin: &str,
    bytes: &[u8],
    dry_run: bool,
) -> Result<SyncReport, DirectoryError> {
    let parsed = csv::parse(bytes);
    let incoming = Incoming::Csv(parsed.rows, parsed.errors);
    let outcome = apply(env, actor, Source::Csv, origin, incoming, dry_run).await;
    record_failure(env, actor, Source::Csv, origin, dry_run, outcome).await
}

/// Syncs from the configured LDAP directory.
pub async fn sync_ldap(
    env: &SyncEnv<'_>,
    actor: &str,
    settings: &ldap::LdapSettings,
    dry_run: bool,
) -> Result<SyncReport, DirectoryError> {
    let origin = settings.url.to_string();
    let outcome = match ldap::fetch(settings).await {
        Ok(fetched) => {
            let mut outcome = apply(
                env,
                actor,
                Source::Ldap,
                &origin,
                Incoming::Ldap(fetched.entries),
                dry_run,
            )
            .await;
            if let Ok(report) = &mut outcome {
                report.warnings = fetched.warnings;
            }
            outcome
        }
        Err(reason) => Err(DirectoryError::Ldap {
            url: origin.clone(),
            reason,
        }),
    };
    record_failure(env, actor, Source::Ldap, &origin, dry_run, outcome).await
}

/// Records a refused or failed sync (its outcome for the dashboard, and the audit event) and
/// hands the outcome back. Dry runs and failures of the vault itself record nothing.
async fn record_failure(
    env: &SyncEnv<'_>,
    actor: &str,
    source: Source,
    origin: &str,
    dry_run: bool,
    outcome: Result<SyncReport, DirectoryError>,
) -> Result<SyncReport, DirectoryError> {
    let Err(error) = &outcome else {
        return outcome;
    };
    if dry_run || matches!(error, DirectoryError::Store(_) | DirectoryError::Audit(_)) {
        return outcome;
    }
    let message = error.to_string();
    let at = env.now.unix_timestamp();
    let event = NewEvent::new(actor, "directory.synced", target(source))
        .outcome(Outcome::Failure)
        .details(json!({
            "source": source.as_str(),
            "origin": origin,
            "reason": message,
        }));
    let mut tx = env.store.begin_write().await?;
    tx.inline(|c| -> Result<(), DirectoryError> {
        rows::record_sync_on(c, source.as_str(), false, &message, at)?;
        audit::append_on(c, env.vault, env.now, event)?;
        Ok(())
    })
    .await??;
    tx.commit().await?;
    outcome
}

/// The audit target of a source's syncs.
fn target(source: Source) -> String {
    format!("directory:{}", source.as_str())
}

/// The entries a sync brings.
enum Incoming {
    /// With their lines, for errors, and the rows that did not parse; managers still to
    /// resolve.
    Csv(Vec<csv::CsvRow>, Vec<RowError>),
    /// Managers already resolved by the LDAP reader.
    Ldap(Vec<Entry>),
}

/// Diffs and (unless `dry_run`) replaces the source's entries, inside one transaction.
async fn apply(
    env: &SyncEnv<'_>,
    actor: &str,
    source: Source,
    origin: &str,
    incoming: Incoming,
    dry_run: bool,
) -> Result<SyncReport, DirectoryError> {
    let at = env.now.unix_timestamp();
    let work = |c: &Inline<'_>| -> Result<SyncReport, DirectoryError> {
        let existing = rows::all_on(c)?;
        let entries = match incoming {
            Incoming::Csv(rows, errors) => resolve_csv(origin, rows, errors, &existing)?,
            Incoming::Ldap(entries) => entries,
        };
        let report = diff(source, origin, &entries, &existing, dry_run)?;
        if !dry_run {
            let new_rows: Vec<EntryRow> = entries.iter().map(|e| e.to_row(source, at)).collect();
            rows::replace_source_on(c, source.as_str(), &new_rows)?;
            let message = format!(
                "{} entries from {origin} ({})",
                report.total,
                report.counts()
            );
            rows::record_sync_on(c, source.as_str(), true, &message, at)?;
            let event = NewEvent::new(actor, "directory.synced", target(source)).details(json!({
                "source": source.as_str(),
                "origin": origin,
                "added": report.added.len(),
                "changed": report.changed.len(),
                "removed": report.removed.len(),
                "unchanged": report.unchanged,
                "total": report.total,
            }));
            audit::append_on(c, env.vault, env.now, event)?;
        }
        Ok(report)
    };
    if dry_run {
        return env.store.inline(work).await?;
    }
    let mut tx = env.store.begin_write().await?;
    let report = tx.inline(work).await??;
    tx.commit().await?;
    Ok(report)
}

/// The CSV rows as entries: each manager must be in the file or already in the directory
/// (its phone of record is taken from there unless the row gives one), and no row may name an
/// owner that LDAP holds. `errors` (the rows that did not parse) come back with these, by line.
fn resolve_csv(
    origin: &str,
    rows: Vec<csv::CsvRow>,
    mut errors: Vec<RowError>,
    existing: &[EntryRow],
) -> Result<Vec<Entry>, DirectoryError> {
    let in_file = |id: &str| {
        rows.iter()
            .find(|r| r.entry.owner.eq_ignore_ascii_case(id))
            .map(|r| r.entry.phones.first().cloned())
    };
    let in_directory = |id: &str| {
        existing
            .iter()
            .find(|e| e.owner.eq_ignore_ascii_case(id))
            .map(|e| e.phones.first().cloned())
    };
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut entry = row.entry.clone();
        if let Some(held) = existing
            .iter()
            .find(|e| e.source == "ldap" && e.owner.eq_ignore_ascii_case(&entry.owner))
        {
            errors.push(RowError {
                line: row.line,
                column: "owner".into(),
                reason: format!("'{}' comes from the LDAP directory", held.owner),
                fix: "remove the row: LDAP is the source of record for this owner".into(),
            });
        }
        if let Some(manager) = &entry.manager {
            match in_file(manager).or_else(|| in_directory(manager)) {
                None => errors.push(RowError {
                    line: row.line,
                    column: "manager".into(),
                    reason: format!(
                        "manager '{manager}' is neither in this file nor in the directory"
                    ),
                    fix: "add a row for the manager, or correct the manager's id".into(),
                }),
                Some(phone) => {
                    if entry.manager_phone.is_none() {
                        entry.manager_phone = phone;
                    }
                }
            }
        }
        entries.push(entry);
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(DirectoryError::Rows {
            origin: origin.to_owned(),
            errors,
        })
    }
}

/// What replacing `source`'s entries by `entries` changes; refuses an empty replacement.
fn diff(
    source: Source,
    origin: &str,
    entries: &[Entry],
    existing: &[EntryRow],
    dry_run: bool,
) -> Result<SyncReport, DirectoryError> {
    let mine: Vec<&EntryRow> = existing
        .iter()
        .filter(|e| e.source == source.as_str())
        .collect();
    if entries.is_empty() {
        return Err(DirectoryError::Empty {
            kind: source.as_str(),
            origin: origin.to_owned(),
            existing: mine.len(),
        });
    }
    let mut report = SyncReport {
        source: source.as_str(),
        origin: origin.to_owned(),
        dry_run,
        added: Vec::new(),
        changed: Vec::new(),
        removed: Vec::new(),
        unchanged: 0,
        total: entries.len(),
        warnings: Vec::new(),
    };
    for entry in entries {
        match existing
            .iter()
            .find(|e| e.owner.eq_ignore_ascii_case(&entry.owner))
        {
            None => report.added.push(entry.clone()),
            Some(old) => {
                let before = Entry::from_row(old);
                if before == *entry && old.source == source.as_str() {
                    report.unchanged += 1;
                } else {
                    report.changed.push(Change {
                        before,
                        after: entry.clone(),
                    });
                }
            }
        }
    }
    for old in mine {
        if !entries
            .iter()
            .any(|e| e.owner.eq_ignore_ascii_case(&old.owner))
        {
            report.removed.push(Entry::from_row(old));
        }
    }
    Ok(report)
}

/// An owner's record as the reveal page and `reveal/start` show it beside the checklist.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct OfRecord {
    pub owner: String,
    /// Whether the directory has a record for the owner.
    pub found: bool,
    pub display_name: Option<String>,
    pub phones: Vec<String>,
    pub manager: Option<String>,
    pub manager_phone: Option<String>,
    pub department: Option<String>,
    pub source: Option<String>,
    /// When the record was last synced (RFC 3339).
    pub synced_at: Option<String>,
    /// One sentence for the operator: where the numbers come from, or that there are none.
    pub message: String,
}

impl OfRecord {
    /// The view of `row` for `owner`.
    pub fn new(owner: &str, row: Option<EntryRow>) -> Self {
        match row {
            None => Self {
                owner: owner.to_owned(),
                found: false,
                display_name: None,
                phones: Vec::new(),
                manager: None,
                manager_phone: None,
                department: None,
                source: None,
                synced_at: None,
                message: format!(
                    "no directory record for {owner} — do not call back a number the caller gives; sync the directory or find the number in HR's records"
                ),
            },
            Some(row) => {
                let synced = format_unix(row.synced_at);
                Self {
                    owner: owner.to_owned(),
                    found: true,
                    message: format!("from the directory of record ({}), synced {synced}", row.source),
                    display_name: row.display_name,
                    phones: row.phones,
                    manager: row.manager,
                    manager_phone: row.manager_phone,
                    department: row.department,
                    source: Some(row.source),
                    synced_at: Some(synced),
                }
            }
        }
    }
}

fn format_unix(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

/// The record of `owner` for display.
pub async fn lookup(store: &Store, owner: &str) -> Result<OfRecord, StoreError> {
    Ok(OfRecord::new(owner, rows::by_owner(store, owner).await?))
}

/// Whether `row` holds what a check with `need` relies on.
pub fn satisfies(row: Option<&EntryRow>, need: DirectoryNeed) -> bool {
    match (row, need) {
        (None, _) => false,
        (Some(r), DirectoryNeed::Phone) => !r.phones.is_empty(),
        (Some(r), DirectoryNeed::ManagerPhone) => r.manager.is_some() && r.manager_phone.is_some(),
    }
}

/// The directory's state for `status` and the dashboard: entries per source and each
/// source's last sync.
#[derive(Debug, Clone)]
pub struct DirectoryStatus {
    pub counts: Vec<(String, i64)>,
    pub syncs: Vec<SyncRow>,
}

impl DirectoryStatus {
    /// One line per source, e.g. `ldap: 120 entries; last sync failed at … (reason) — the
    /// last good data (synced …) is kept`.
    pub fn lines(&self) -> Vec<String> {
        let count = |source: &str| {
            self.counts
                .iter()
                .find(|(s, _)| s == source)
                .map_or(0, |(_, n)| *n)
        };
        let mut lines: Vec<String> = self
            .syncs
            .iter()
            .map(|s| {
                let n = count(&s.source);
                if s.outcome == "ok" {
                    format!(
                        "{}: {n} entries; last sync ok at {}: {}",
                        s.source,
                        format_unix(s.at),
                        s.message
                    )
                } else {
                    let kept = s.last_ok_at.map_or_else(
                        || "no sync of this source has succeeded yet".to_owned(),
                        |t| format!("the last good data (synced {}) is kept", format_unix(t)),
                    );
                    format!(
                        "{}: {n} entries; last sync FAILED at {}: {} — {kept}",
                        s.source,
                        format_unix(s.at),
                        s.message
                    )
                }
            })
            .collect();
        if lines.is_empty() {
            lines.push(
                "empty: never synced (`seedvault directory sync FILE.csv` or `--ldap`)".into(),
            );
        }
        lines
    }

    /// Whether a source's last sync failed.
    pub fn failed(&self) -> bool {
        self.syncs.iter().any(|s| s.outcome != "ok")
    }
}

/// Reads the directory's state.
pub async fn status(store: &Store) -> Result<DirectoryStatus, StoreError> {
    Ok(DirectoryStatus {
        counts: rows::counts(store).await?,
        syncs: rows::syncs(store).await?,
    })
}
