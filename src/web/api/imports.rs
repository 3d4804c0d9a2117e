//! `POST /api/v1/imports`: a seed file as the request body (or a multipart upload), parsed,
//! checked and — unless a dry run or any row is bad — escrowed atomically.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;
use zeroize::Zeroizing;

use crate::import::{self, ImportFormat, ImportOptions, SecretEncoding};
use crate::tokens::import::{store, ImportReport};
use crate::web::session::{Authorized, ProvisionerOnly};
use crate::web::{AppError, AppState};

#[derive(Deserialize, IntoParams)]
pub struct ImportQuery {
    /// auto (default), entra, vendor, privacyidea, pskc or otpauth.
    format: Option<String>,
    /// auto (default), base32 or hex.
    secret_encoding: Option<String>,
    /// true: validate and report, store nothing.
    dry_run: Option<bool>,
    /// Policy for every imported token (default: the default policy).
    policy: Option<String>,
    /// PSKC pre-shared key, hex.
    psk_hex: Option<String>,
    /// File name to record in the audit trail.
    name: Option<String>,
}

/// Parses the query into parser options; errors name the parameter.
pub fn options(
    format: Option<&str>,
    encoding: Option<&str>,
    psk_hex: Option<&str>,
) -> Result<ImportOptions, AppError> {
    let format: ImportFormat = format
        .unwrap_or("auto")
        .parse()
        .map_err(|e: import::OptionError| AppError::Unprocessable(format!("format: {e}")))?;
    let secret_encoding: SecretEncoding =
        encoding
            .unwrap_or("auto")
            .parse()
            .map_err(|e: import::OptionError| {
                AppError::Unprocessable(format!("secret_encoding: {e}"))
            })?;
    let psk = match psk_hex {
        Some(hex) => Some(Zeroizing::new(
            data_encoding::HEXLOWER_PERMISSIVE
                .decode(hex.trim().as_bytes())
                .map_err(|_| AppError::Unprocessable("psk_hex: expected the pre-shared key as hex, e.g. 32 hex digits for AES-128".into()))?,
        )),
        None => None,
    };
    Ok(ImportOptions {
        format,
        secret_encoding,
        psk,
    })
}

/// Import a seed file (provisioner). All rows or none.
#[utoipa::path(post, path = "/imports", tag = "tokens", params(ImportQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "every row imported", body = ImportReport), (status = 200, description = "dry run: the preview", body = ImportReport),
              (status = 422, description = "bad rows: nothing imported; each error names line, column, reason and fix", body = ImportReport),
              (status = 401), (status = 403)))]
pub async fn import(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Query(query): Query<ImportQuery>,
    body: Bytes,
) -> Result<(StatusCode, Json<ImportReport>), AppError> {
    let options = options(
        query.format.as_deref(),
        query.secret_encoding.as_deref(),
        query.psk_hex.as_deref(),
    )?;
    let dry_run = query.dry_run.unwrap_or(false);
    let parsed = tokio::task::spawn_blocking(move || import::parse(&body, &options))
        .await
        .map_err(|e| AppError::Internal(format!("parser task: {e}")))?;
    let name = query.name.as_deref().unwrap_or("upload");
    let report = store(
        &state.env(),
        &auth.operator().actor(),
        name,
        parsed,
        query.policy.as_deref(),
        dry_run,
        &|_, _| {},
    )
    .await?;
    let status = if !report.ok() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else if dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(report)))
}
