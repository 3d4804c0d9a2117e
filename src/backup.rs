//! Backups and restores of a whole vault (issue 15).
//!
//! A backup is one age file. Its plaintext is
//! `"seedvault-backup v1\n" || u32be(len(manifest)) || manifest (JSON) || database`, where the
//! database is a `VACUUM INTO` copy taken in one read transaction while the server runs. The
//! seeds inside stay sealed under the data key and the wrapped key slots travel with them, so
//! the age layer protects the metadata and the trail, and any slot key opens the restored vault.
//!
//! [`create`] writes a backup; [`restore`] decrypts one into a temporary directory beside the
//! target, checks it (integrity, audit chain and signatures, the recorded head) and only then
//! renames it into place; [`replay_purges`] destroys again what a later audit export shows was
//! destroyed after the backup.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::audit::verify::{self, AnchoredHead, ExportOptions, VerifyOptions};
use crate::audit::{self, NewEvent};
use crate::store::{self, snapshot, Store, StoreError};
use crate::vault::{open, Unlocker, Vault, VaultError};

/// First bytes of every backup's plaintext.
const MAGIC: &[u8] = b"seedvault-backup v1\n";
/// The manifest's `format`.
const FORMAT: u32 = 1;
/// A manifest larger than this is not one of ours.
const MAX_MANIFEST: u32 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no recipient for the backup: this vault has no recipient or identity slot — pass --recipient age1… (a key kept offline)")]
    NoRecipients,
    #[error("--recipient '{0}' is not an age recipient — expected age1… (from `age-keygen -y`) or age1<plugin>1… for an age plugin")]
    BadRecipient(String),
    #[error("cannot {what}: {reason}")]
    Io { what: String, reason: String },
    #[error("the disk is full while {0} — nothing was kept; free space there and retry")]
    DiskFull(String),
    #[error("no identity opens this backup — pass --identity FILE with the identity of one of the recipients it was made for")]
    WrongIdentity,
    #[error("the backup is damaged or truncated ({0}) — nothing was restored; use another copy")]
    Damaged(String),
    #[error("{0} is not a seedvault backup (made by `seedvault backup`)")]
    NotABackup(String),
    #[error("{path} already holds vault {existing}, and this backup is of vault {backup} — restore into an empty directory (--data-dir)")]
    OtherVault {
        path: String,
        existing: String,
        backup: String,
    },
    #[error("{0} is not empty — restore into a new or empty directory (--data-dir DIR); nothing was changed")]
    TargetNotEmpty(String),
    #[error("the restored database fails SQLite's integrity check ({0}) — nothing was restored; use another copy")]
    Integrity(String),
    #[error(
        "the restored audit trail does not verify: {0} — nothing was restored; use another copy"
    )]
    Chain(String),
    #[error("the restored vault's audit head is {found}, but the backup recorded {recorded} — nothing was restored; use another copy")]
    HeadMismatch { recorded: String, found: String },
    #[error("the replay export {path} {reason} — nothing was restored; pass an export of this vault made after the backup (`seedvault audit export`)")]
    Replay { path: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Lifecycle(#[from] crate::tokens::lifecycle::LifecycleError),
}

impl BackupError {
    fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        let what = what.into();
        if e.raw_os_error() == Some(28) {
            return Self::DiskFull(what);
        }
        Self::Io {
            what,
            reason: e.to_string(),
        }
    }
}

/// What a backup records about itself, inside the encryption.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub vault_id: String,
    /// The newest audit event in the backup, `SEQ:HASH` (empty for an empty trail).
    pub audit_head: String,
    /// RFC 3339.
    pub created_at: String,
    pub database_bytes: u64,
}

/// A recipient of a backup, parsed.
pub struct BackupRecipient {
    text: String,
    recipient: Box<dyn age::Recipient + Send + Sync>,
}

impl BackupRecipient {
    /// Parses an `age1…` X25519 recipient or an age plugin's `age1<plugin>1…`.
    pub fn parse(text: &str) -> Result<Self, BackupError> {
        let trimmed = text.trim();
        let (text, recipient) =
            crate::vault::slots::parse_recipient(trimmed).map_err(|e| match e {
                VaultError::BadRecipient => BackupError::BadRecipient(trimmed.to_owned()),
                other => other.into(),
            })?;
        Ok(Self { text, recipient })
    }

    /// What the audit trail records of a recipient: the first 16 hex digits of SHA-256 over
    /// its text form (public, but shorter and uniform).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.text)
    }
}

fn fingerprint(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    data_encoding::HEXLOWER.encode(&digest[..8])
}

/// The recipients of a backup: those given, or else every recipient and identity slot's.
pub async fn recipients(
    store: &Store,
    given: &[String],
) -> Result<Vec<BackupRecipient>, BackupError> {
    if !given.is_empty() {
        return given.iter().map(|r| BackupRecipient::parse(r)).collect();
    }
    let slots = open::list_slots(store).await?;
    let found: Vec<BackupRecipient> = slots
        .iter()
        .filter(|s| s.kind == "recipient" || s.kind == "identity")
        .filter_map(|s| s.recipient.as_deref())
        .map(BackupRecipient::parse)
        .collect::<Result<_, _>>()?;
    if found.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    Ok(found)
}

/// What [`create`] made.
#[derive(Debug, Clone)]
pub struct Created {
    pub manifest: Manifest,
    /// Size of the encrypted file.
    pub bytes: u64,
    pub fingerprints: Vec<String>,
}

/// A file that is removed when dropped unless kept: the snapshot and partial outputs, so that
/// no path (an error, a panic, a cancelled request) leaves one behind.
pub struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    /// Creates `path` empty, mode 0600, refusing an existing file.
    pub fn create(path: PathBuf) -> Result<(Self, std::fs::File), BackupError> {
        let mut options = store::private_file_options();
        options.create_new(true).read(true);
        let file = options
            .open(&path)
            .map_err(|e| BackupError::io(format!("create {}", path.display()), e))?;
        Ok((Self { path, keep: false }, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to `to` and keeps it.
    pub fn persist(mut self, to: &Path) -> Result<(), BackupError> {
        std::fs::rename(&self.path, to)
            .map_err(|e| BackupError::io(format!("rename to {}", to.display()), e))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes an encrypted backup of the vault to `out` and appends `backup.created`. `out` is
/// written from its current position; the caller names, renames or streams it.
pub async fn create(
    store: &Store,
    vault: &Vault,
    now: OffsetDateTime,
    actor: &str,
    recipients: Vec<BackupRecipient>,
    out: std::fs::File,
) -> Result<Created, BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    let dir = store
        .path()?
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (snapshot_file, _) =
        TempFile::create(dir.join(format!(".backup-{}.db", uuid::Uuid::new_v4().simple())))?;
    snapshot::vacuum_into(store, snapshot_file.path())
        .await
        .map_err(|e| match e {
            StoreError::DiskFull(_) => BackupError::DiskFull("taking the snapshot".into()),
            other => other.into(),
        })?;
    let created_at = audit::format_time(now)?;
    let fingerprints: Vec<String> = recipients.iter().map(|r| r.fingerprint()).collect();
    let (manifest, bytes) = tokio::task::spawn_blocking(move || {
        let result = encrypt_snapshot(snapshot_file.path(), created_at, &recipients, out);
        drop(snapshot_file);
        result
    })
    .await
    .map_err(|e| BackupError::Io {
        what: "write the backup".into(),
        reason: e.to_string(),
    })??;
    if manifest.vault_id != vault.id() {
        return Err(BackupError::NotABackup("the snapshot".into()));
    }
    let mut tx = store.begin_write().await?;
    let event = NewEvent::new(actor, "backup.created", format!("vault:{}", vault.id())).details(
        json!({ "audit_head": manifest.audit_head, "recipients": fingerprints, "bytes": bytes }),
    );
    audit::append(&mut tx, vault, now, event).await?;
    tx.commit().await?;
    Ok(Created {
        manifest,
        bytes,
        fingerprints,
    })
}

fn head_text(head: Option<(i64, Vec<u8>)>) -> String {
    head.map(|(seq, hash)| format!("{seq}:{}", data_encoding::HEXLOWER.encode(&hash)))
        .unwrap_or_default()
}

/// Counts what passes through, so the caller learns the encrypted size without a `stat`.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn encrypt_snapshot(
    snapshot_path: &Path,
    created_at: String,
    recipients: &[BackupRecipient],
    out: std::fs::File,
) -> Result<(Manifest, u64), BackupError> {
    let facts = snapshot::facts(snapshot_path)?;
    let vault_id = facts.vault_id.ok_or(VaultError::NotInitialised)?;
    let mut database =
        std::fs::File::open(snapshot_path).map_err(|e| BackupError::io("read the snapshot", e))?;
    let database_bytes = database
        .metadata()
        .map_err(|e| BackupError::io("read the snapshot", e))?
        .len();
    let manifest = Manifest {
        format: FORMAT,
        vault_id,
        audit_head: head_text(facts.head),
        created_at,
        database_bytes,
    };
    let manifest_json = serde_json::to_vec(&manifest).map_err(|e| BackupError::Io {
        what: "write the manifest".into(),
        reason: e.to_string(),
    })?;
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|r| r.recipient.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| BackupError::Io {
        what: "encrypt the backup".into(),
        reason: e.to_string(),
    })?;
    let write_err = |e| BackupError::io("write the backup", e);
    let mut counting = Counting {
        inner: std::io::BufWriter::with_capacity(256 * 1024, out),
        written: 0,
    };
    let mut writer = encryptor.wrap_output(&mut counting).map_err(write_err)?;
    writer.write_all(MAGIC).map_err(write_err)?;
    writer
        .write_all(&(manifest_json.len() as u32).to_be_bytes())
        .map_err(write_err)?;
    writer.write_all(&manifest_json).map_err(write_err)?;
    std::io::copy(&mut database, &mut writer).map_err(write_err)?;
    writer.finish().map_err(write_err)?;
    counting.flush().map_err(write_err)?;
    let written = counting.written;
    let file = counting
        .inner
        .into_inner()
        .map_err(|e| BackupError::io("write the backup", e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    Ok((manifest, written))
}

/// Opens a backup with `identities` and reads its manifest; the reader is left at the start
/// of the database.
fn open_backup<'a>(
    input: impl Read + 'a,
    identities: &'a [Box<dyn age::Identity + Send + Sync>],
    shown: &str,
) -> Result<(Manifest, Box<dyn Read + 'a>), BackupError> {
    let decryptor = age::Decryptor::new(BufReader::new(input)).map_err(|e| match e {
        age::DecryptError::Io(io) => BackupError::io(format!("read {shown}"), io),
        _ => BackupError::NotABackup(shown.to_owned()),
    })?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => BackupError::WrongIdentity,
            other => BackupError::Damaged(other.to_string()),
        })?;
    let damaged = |e: std::io::Error| BackupError::Damaged(e.to_string());
    let mut magic = [0u8; MAGIC.len()];
    reader.read_exact(&mut magic).map_err(damaged)?;
    if magic != MAGIC {
        return Err(BackupError::NotABackup(shown.to_owned()));
    }
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).map_err(damaged)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MANIFEST {
        return Err(BackupError::NotABackup(shown.to_owned()));
    }
    let mut manifest = vec![0u8; len as usize];
    reader.read_exact(&mut manifest).map_err(damaged)?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest).map_err(|_| BackupError::NotABackup(shown.to_owned()))?;
    if manifest.format != FORMAT {
        return Err(BackupError::NotABackup(format!(
            "{shown} (format {}; this seedvault reads format {FORMAT})",
            manifest.format
        )));
    }
    Ok((manifest, Box::new(reader)))
}

/// What to restore and how.
pub struct RestoreRequest<'a> {
    pub backup: &'a Path,
    pub identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Keys to try, in order, on the restored vault: needed only to sign the events of
    /// replayed purges. Its development slot, if it has one, is tried last.
    pub unlockers: Vec<Unlocker>,
    pub data_dir: &'a Path,
    /// A later audit export of the original vault: tokens it shows destroyed after the
    /// backup's head are purged before the restore is put in place.
    pub replay_purges: Option<&'a Path>,
    pub now: OffsetDateTime,
    pub actor: &'a str,
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub manifest: Manifest,
    /// Events verified in the restored trail.
    pub events: u64,
    /// Serials purged from the export's record (empty without `--replay-purges`).
    pub purged: Vec<String>,
}

/// A directory removed (with its content) when dropped unless kept.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Whether `dir` is missing or an empty directory.
fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(BackupError::io(format!("read {}", dir.display()), e)),
    }
}

/// Restores a backup into `data_dir` (missing or empty): decrypts it into a temporary
/// directory beside it, checks it, replays purges if asked, and renames it into place only
/// when everything passed. On any failure nothing is left behind.
pub async fn restore(request: RestoreRequest<'_>) -> Result<Restored, BackupError> {
    let shown = request.backup.display().to_string();
    let target = request.data_dir;
    let input = std::fs::File::open(request.backup)
        .map_err(|e| BackupError::io(format!("open {shown} — check the path"), e))?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let temp = TempDir {
        path: parent.join(format!(".{name}.restore-{}", uuid::Uuid::new_v4().simple())),
        keep: false,
    };
    let identities = request.identities;
    let temp_path = temp.path.clone();
    let target_owned = target.to_path_buf();
    let manifest = tokio::task::spawn_blocking(move || {
        let (manifest, mut reader) = open_backup(input, &identities, &shown)?;
        if !is_empty_dir(&target_owned)? {
            let existing = snapshot::facts(&target_owned.join(store::DATABASE_FILE))
                .ok()
                .and_then(|f| f.vault_id);
            return Err(match existing {
                Some(existing) if existing != manifest.vault_id => BackupError::OtherVault {
                    path: target_owned.display().to_string(),
                    existing,
                    backup: manifest.vault_id,
                },
                _ => BackupError::TargetNotEmpty(target_owned.display().to_string()),
            });
        }
        std::fs::create_dir_all(&temp_path)
            .map_err(|e| BackupError::io(format!("create {}", temp_path.display()), e))?;
        restrict_dir(&temp_path)?;
        let db_path = temp_path.join(store::DATABASE_FILE);
        let mut options = store::private_file_options();
        options.create_new(true);
        let file = options
            .open(&db_path)
            .map_err(|e| BackupError::io(format!("create {}", db_path.display()), e))?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        // Errors while reading are the payload's MAC or a truncation; while writing, the disk.
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BackupError::Damaged(e.to_string())),
            };
            out.write_all(&buf[..n])
                .map_err(|e| BackupError::io("write the restored database", e))?;
            total += n as u64;
        }
        if total != manifest.database_bytes {
            return Err(BackupError::Damaged(format!(
                "{total} database bytes, the manifest says {}",
                manifest.database_bytes
            )));
        }
        let file = out
            .into_inner()
            .map_err(|e| BackupError::io("write the restored database", e.into_error()))?;
        file.sync_all()
            .map_err(|e| BackupError::io("write the restored database", e))?;
        let problems = snapshot::integrity_problems(&db_path)?;
        if !problems.is_empty() {
            return Err(BackupError::Integrity(problems.join("; ")));
        }
        let facts = snapshot::facts(&db_path)?;
        if facts.vault_id.as_deref() != Some(manifest.vault_id.as_str()) {
            return Err(BackupError::Damaged(
                "the database names another vault than its manifest".into(),
            ));
        }
        let found = head_text(facts.head);
        if found != manifest.audit_head {
            return Err(BackupError::HeadMismatch {
                recorded: manifest.audit_head.clone(),
                found,
            });
        }
        Ok(manifest)
    })
    .await
    .map_err(|e| BackupError::Io {
        what: "restore".into(),
        reason: e.to_string(),
    })??;

    let store = Store::open(&temp.path).await?;
    let events = verify_restored(&store, &manifest).await?;
    let mut purged = Vec::new();
    if let Some(export) = request.replay_purges {
        // Each purge is audited, so the restored vault must be unsealed to sign its events.
        let vault = unlock_restored(&store, request.unlockers).await?;
        purged = replay_into(
            &store,
            &vault,
            &manifest,
            export,
            request.now,
            request.actor,
        )
        .await?;
    }
    store.record_vault_id(&manifest.vault_id)?;
    store.scrub_freed_space().await?;
    store.close().await;

    if target.exists() {
        std::fs::remove_dir(target)
            .map_err(|e| BackupError::io(format!("replace the empty {}", target.display()), e))?;
    }
    std::fs::rename(&temp.path, target)
        .map_err(|e| BackupError::io(format!("move the restore to {}", target.display()), e))?;
    let mut temp = temp;
    temp.keep = true;
    Ok(Restored {
        manifest,
        events,
        purged,
    })
}

/// Unseals the restored vault with the first of `unlockers` that opens it, else with its
/// development slot.
async fn unlock_restored(store: &Store, unlockers: Vec<Unlocker>) -> Result<Vault, BackupError> {
    let mut last = VaultError::NoKeySupplied;
    for unlocker in unlockers
        .iter()
        .chain(std::iter::once(&Unlocker::Development))
    {
        match open::unlock(store, unlocker).await {
            Ok(vault) => return Ok(vault),
            Err(e @ (VaultError::WrongKey | VaultError::NoKeySupplied)) => last = e,
            Err(other) => return Err(other.into()),
        }
    }
    Err(last.into())
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| BackupError::io(format!("restrict {}", dir.display()), e))
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) -> Result<(), BackupError> {
    Ok(())
}

/// Verifies the restored trail (links, hashes, every signature) up to the recorded head.
async fn verify_restored(store: &Store, manifest: &Manifest) -> Result<u64, BackupError> {
    let meta = store::meta::get(store)
        .await?
        .ok_or(VaultError::NotInitialised)?;
    let key = verify::parse_public_key(&data_encoding::HEXLOWER.encode(&meta.audit_public_key))
        .map_err(|e| BackupError::Chain(e.to_string()))?;
    let expect_head = if manifest.audit_head.is_empty() {
        None
    } else {
        Some(
            AnchoredHead::from_str(&manifest.audit_head)
                .map_err(|e| BackupError::Chain(e.to_string()))?,
        )
    };
    let options = VerifyOptions {
        all_signatures: true,
        expect_head,
        threads: 0,
    };
    let source = store.audit_source()?;
    let vault_id = meta.vault_id.clone();
    let result = tokio::task::spawn_blocking(move || {
        verify::verify_live(&source, &vault_id, &key, &options)
    })
    .await
    .map_err(|e| BackupError::Chain(e.to_string()))?
    .map_err(|e| BackupError::Chain(e.to_string()))?;
    match result.broken {
        Some(broken) => Err(BackupError::Chain(broken.to_string())),
        None => Ok(result.events),
    }
}

/// The audit actions that destroy a token's seed, and the purge reason a replay records.
const DESTROYING: [(&str, &str); 4] = [
    ("token.delivered", "delivered"),
    ("token.cancelled", "cancelled"),
    ("token.expired", "expired"),
    ("token.purged", "purged"),
];

#[derive(Deserialize)]
struct ExportLine {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: i64,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
}

/// Verifies `export` as an export of the restored vault, then purges every token it shows
/// destroyed after the backup's head.
async fn replay_into(
    store: &Store,
    vault: &Vault,
    manifest: &Manifest,
    export: &Path,
    now: OffsetDateTime,
    actor: &str,
) -> Result<Vec<String>, BackupError> {
    let shown = export.display().to_string();
    let replay = |reason: String| BackupError::Replay {
        path: shown.clone(),
        reason,
    };
    let meta = store::meta::get(store)
        .await?
        .ok_or(VaultError::NotInitialised)?;
    let key = verify::parse_public_key(&data_encoding::HEXLOWER.encode(&meta.audit_public_key))
        .map_err(|e| replay(e.to_string()))?;
    let head_seq = manifest
        .audit_head
        .split_once(':')
        .and_then(|(seq, _)| seq.parse::<i64>().ok())
        .unwrap_or(0);
    let options = ExportOptions {
        vault_id: Some(manifest.vault_id.clone()),
        expect_head: AnchoredHead::from_str(&manifest.audit_head).ok(),
    };
    let path = export.to_path_buf();
    let shown_inner = shown.clone();
    let destroyed = tokio::task::spawn_blocking(move || {
        let open = || {
            std::fs::File::open(&path)
                .map(BufReader::new)
                .map_err(|e| format!("cannot be read ({e})"))
        };
        let keys = verify::export_schedule(open()?, &key)
            .map_err(|e| format!("cannot be verified ({e})"))?
            .map_err(|broken| format!("fails verification at {broken}"))?;
        let checked = verify::verify_export(open()?, &keys, &options)
            .map_err(|e| format!("cannot be verified ({e})"))?;
        if let Some(broken) = checked.broken {
            return Err(format!("fails verification at {broken}"));
        }
        let mut destroyed: Vec<(String, &'static str)> = Vec::new();
        for line in open()?.lines() {
            let line = line.map_err(|e| format!("cannot be read ({e})"))?;
            let Ok(record) = serde_json::from_str::<ExportLine>(&line) else {
                return Err(format!(
                    "is not JSON Lines ({shown_inner}: export with --format jsonl)"
                ));
            };
            if record.kind != "event" || record.seq <= head_seq {
                continue;
            }
            let Some((_, reason)) = DESTROYING.iter().find(|(a, _)| *a == record.action) else {
                continue;
            };
            if let Some(serial) = record.target.strip_prefix("token:") {
                destroyed.push((serial.to_owned(), reason));
            }
        }
        Ok(destroyed)
    })
    .await
    .map_err(|e| replay(e.to_string()))?
    .map_err(replay)?;
    Ok(crate::tokens::lifecycle::purge_replayed(store, vault, now, actor, &destroyed).await?)
}

/// Reads the manifest of a backup without restoring it (for `restore` to print first).
pub fn read_manifest(
    backup: &Path,
    identities: &[Box<dyn age::Identity + Send + Sync>],
) -> Result<Manifest, BackupError> {
    let shown = backup.display().to_string();
    let input = std::fs::File::open(backup)
        .map_err(|e| BackupError::io(format!("open {shown} — check the path"), e))?;
    Ok(open_backup(input, identities, &shown)?.0)
}
