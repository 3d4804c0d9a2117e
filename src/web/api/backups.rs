//! `POST /api/v1/backups` (admin): the same encrypted backup as `seedvault backup`, streamed
//! to the browser.

use std::io::{Read, Seek};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::backup::{self, TempFile};
use crate::web::extract::OptionalJson;
use crate::web::session::{AdminOnly, Authorized};
use crate::web::{AppError, AppState};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// age recipients (`age1…`) to encrypt to; empty or absent: the vault's recipient and
    /// identity slots.
    #[serde(default)]
    recipients: Vec<String>,
}

/// Why a vault on PostgreSQL gets no backup file here, and what to do instead.
pub const POSTGRES_BACKUPS: &str = "this vault is on PostgreSQL, and seedvault's backups are of the SQLite file: back it up with pg_dump -Fc (or pg_basebackup with WAL archiving) and restore with pg_restore; `seedvault key rotate` retires the data key that older dumps' seeds are sealed under";

/// Download an age-encrypted backup of the whole vault (admin). The seeds inside stay sealed
/// under the data key; the file opens only with an identity of one of its recipients. The
/// backup is recorded in the trail (`backup.created`) before the first byte is sent; the
/// audit head it contains is in `X-Backup-Audit-Head`.
#[utoipa::path(post, path = "/backups", tag = "backup",
    request_body(content = Option<BackupRequest>, description = "optional; an empty body uses the vault's recipient and identity slots"),
    responses((status = 200, description = "the age-encrypted backup", content_type = "application/octet-stream", body = Vec<u8>),
              (status = 401), (status = 403),
              (status = 409, description = "the vault is on PostgreSQL: back it up with pg_dump"),
              (status = 422, description = "a recipient is not an age recipient, or the vault has no recipient slot and none was given"),
              (status = 507, description = "the disk holding the data directory is full")))]
pub async fn create(
    State(state): State<AppState>,
    auth: Authorized<AdminOnly>,
    OptionalJson(body): OptionalJson<BackupRequest>,
) -> Result<Response, AppError> {
    if state.store.is_postgres() {
        return Err(AppError::Conflict(POSTGRES_BACKUPS.into()));
    }
    let given = body.map(|b| b.recipients).unwrap_or_default();
    let recipients = backup::recipients(&state.store, &given).await?;
    let dir = state
        .store
        .path()?
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let (temp, file) =
        TempFile::create(dir.join(format!(".backup-{}.age", uuid::Uuid::new_v4().simple())))?;
    let mut reader = file
        .try_clone()
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let created = backup::create(
        &state.store,
        &state.vault,
        state.clock.now(),
        &auth.operator().actor(),
        recipients,
        file,
    )
    .await?;
    // The open handle keeps the bytes; the name goes now, whatever happens to the transfer.
    drop(temp);
    reader
        .rewind()
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let stamp = created.manifest.created_at.replace([':', '.'], "-");
    for (name, value) in [
        (
            header::CONTENT_DISPOSITION.as_str(),
            format!("attachment; filename=\"seedvault-backup-{stamp}.age\""),
        ),
        ("x-backup-audit-head", created.manifest.audit_head.clone()),
        (header::CONTENT_LENGTH.as_str(), created.bytes.to_string()),
    ] {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}
