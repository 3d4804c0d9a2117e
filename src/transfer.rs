//! `seedvault migrate-to-postgres`: a SQLite vault copied into an empty PostgreSQL database
//! and verified there before anything is committed.
//!
//! Nothing is unsealed: sealed seeds, wrapped keys and the sealed audit signing key are copied
//! as bytes, so no key slot is needed. One PostgreSQL transaction holds the whole copy
//! ([`copy`]); [`Transfer::verify`] then reads the target back inside it (row counts per table
//! against the SQLite snapshot, the vault's identity, and the audit chain recomputed from the
//! PostgreSQL rows up to the source's head, signatures included) and only
//! [`Transfer::commit`] makes it visible. Any failure leaves the target as empty as it was.

use std::path::Path;

use ed25519_dalek::VerifyingKey;

use crate::audit::chain::{ChainBreak, ChainHead};
use crate::audit::verify::StreamVerifier;
use crate::store::audit::AuditReader;
use crate::store::engine::PostgresUrl;
use crate::store::postgres::{self, CopyProgress, PgTx, TableCopy};
use crate::store::{meta, Store, StoreError, DATABASE_FILE};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no vault in {0} — pass --from the data directory of the SQLite vault (the one holding seedvault.db)")]
    NoVault(String),
    #[error(
        "the copy does not verify: {0} — nothing was committed; the target is as empty as before"
    )]
    Mismatch(String),
    #[error("the copied audit trail does not verify: {0} — nothing was committed; the target is as empty as before")]
    Chain(ChainBreak),
    #[error("a bulk import on this vault has not committed (it is still running, or its process died) — let it finish, or start `seedvault serve` once (it deletes an abandoned import's rows), then retry; nothing was copied")]
    ImportPending,
    #[error("the vault changed while it was copied (its audit head moved) — stop `seedvault serve` and any other seedvault command on it, then retry; nothing was committed")]
    SourceChanged,
}

/// What was copied and verified.
#[derive(Debug, Clone)]
pub struct Report {
    pub vault_id: String,
    pub tables: Vec<TableCopy>,
    /// The audit head, the same on both engines (`None` for an empty trail).
    pub head: Option<ChainHead>,
    pub events: u64,
}

/// A copy inside its still open PostgreSQL transaction.
pub struct Transfer {
    tx: PgTx,
    db_path: std::path::PathBuf,
    vault_id: String,
    public_key: VerifyingKey,
    source_head: Option<(i64, Vec<u8>)>,
    tables: Vec<TableCopy>,
}

/// Copies the vault in `data_dir` into the empty database of `target` (migrated to this
/// version's schema first), in one transaction that stays open until [`Transfer::commit`].
pub async fn copy(
    data_dir: &Path,
    target: &sqlx::PgPool,
    progress: &mut (dyn FnMut(CopyProgress<'_>) + Send),
) -> Result<Transfer, TransferError> {
    let db_path = data_dir.join(DATABASE_FILE);
    if !db_path.is_file() {
        return Err(TransferError::NoVault(data_dir.display().to_string()));
    }
    let source = Store::open_read_only(data_dir).await?;
    let vault = meta::get(&source).await?;
    // A copy holds only what readers of the vault can see: an import that has not committed
    // would come across as rows the target has no way to judge.
    let pending = crate::store::imports::pending(&source).await?;
    source.close().await;
    if !pending.is_empty() {
        return Err(TransferError::ImportPending);
    }
    let vault = vault.ok_or_else(|| TransferError::NoVault(data_dir.display().to_string()))?;
    let public_key = <[u8; 32]>::try_from(vault.audit_public_key.as_slice())
        .ok()
        .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
        .ok_or_else(|| {
            StoreError::Corrupt("vault_meta.audit_public_key is not an Ed25519 key".into())
        })?;
    let source_head = AuditReader::open(&db_path)?.head()?;
    let mut tx = PgTx::begin(target).await?;
    let tables = postgres::copy_from_sqlite(&mut tx, &db_path, progress).await?;
    Ok(Transfer {
        tx,
        db_path,
        vault_id: vault.vault_id,
        public_key,
        source_head,
        tables,
    })
}

impl Transfer {
    /// The open transaction, for tests that damage the copy before it is verified.
    #[doc(hidden)]
    pub fn transaction(&mut self) -> &mut PgTx {
        &mut self.tx
    }

    /// Reads the copy back inside its transaction: every table's row count against the
    /// snapshot's, the vault's identity, and the audit chain recomputed from the PostgreSQL rows
    /// (links, hashes, hand-overs, signatures) ending at the source's head.
    pub async fn verify(&mut self) -> Result<Report, TransferError> {
        for table in &self.tables {
            let on_target = postgres::count_rows(&mut self.tx, &table.table).await?;
            if table.copied_rows != table.source_rows
                || u64::try_from(on_target).ok() != Some(table.source_rows)
            {
                return Err(TransferError::Mismatch(format!(
                    "table {} has {} rows in the SQLite vault but {on_target} on PostgreSQL",
                    table.table, table.source_rows
                )));
            }
        }
        match postgres::vault_identity(&mut self.tx).await? {
            Some((id, key)) if id == self.vault_id && key == self.public_key.as_bytes() => {}
            _ => {
                return Err(TransferError::Mismatch(
                    "vault_meta on PostgreSQL is not the source vault's (id or audit key differ)"
                        .into(),
                ))
            }
        }
        let mut verifier = StreamVerifier::new(&self.vault_id);
        postgres::scan_audit(&mut self.tx, |event| verifier.push(event)).await?;
        let verification = verifier.finish(&self.public_key);
        if let Some(broken) = verification.broken {
            return Err(TransferError::Chain(broken));
        }
        let target_head = verification.head.as_ref().map(|h| (h.seq, h.hash.to_vec()));
        if target_head != self.source_head {
            return Err(TransferError::Chain(ChainBreak {
                seq: verification.head.as_ref().map_or(0, |h| h.seq),
                reason: format!(
                    "the head on PostgreSQL is {} but the vault's is {}",
                    verification
                        .head
                        .as_ref()
                        .map_or("empty".to_owned(), ToString::to_string),
                    self.source_head
                        .as_ref()
                        .map_or("empty".to_owned(), |(seq, hash)| format!(
                            "{seq}:{}",
                            data_encoding::HEXLOWER.encode(hash)
                        ))
                ),
            }));
        }
        // A server writing beside the copy would have moved the head after the snapshot.
        if AuditReader::open(&self.db_path)?.head()? != self.source_head {
            return Err(TransferError::SourceChanged);
        }
        Ok(Report {
            vault_id: self.vault_id.clone(),
            tables: self.tables.clone(),
            head: verification.head,
            events: verification.events,
        })
    }

    /// Makes the verified copy visible (foreign keys are checked here).
    pub async fn commit(self) -> Result<(), TransferError> {
        Ok(self.tx.commit().await?)
    }
}

/// The whole command: connect, copy, verify, commit.
pub async fn migrate(
    data_dir: &Path,
    url: &PostgresUrl,
    password_file: Option<&Path>,
    progress: &mut (dyn FnMut(CopyProgress<'_>) + Send),
) -> Result<Report, TransferError> {
    // The vault first: a wrong --from is reported before any connection is tried.
    if !data_dir.join(DATABASE_FILE).is_file() {
        return Err(TransferError::NoVault(data_dir.display().to_string()));
    }
    let pool = postgres::connect(url, password_file).await?;
    let mut transfer = copy(data_dir, &pool, progress).await?;
    let report = transfer.verify().await?;
    transfer.commit().await?;
    pool.close().await;
    Ok(report)
}
