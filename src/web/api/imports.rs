//! `POST /api/v1/imports`: a seed file as the request body (or a multipart upload), parsed,
//! checked and — unless a dry run or any row is bad — escrowed atomically.
//!
//! A password-protected PSKC file needs a multipart upload: the file in the `file` part and the
//! password in the `password` part. A password is never read from the query string (URLs end
//! up in logs and histories); one there is refused.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, RawQuery, Request, State};
use axum::http::{header, StatusCode};
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
    /// true: import the TOTP keys of a PSKC file that also holds HOTP, OCRA or vendor keys,
    /// listing the others in `warnings` and counting them in `skipped`.
    skip_unsupported: Option<bool>,
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
        ..ImportOptions::default()
    })
}

/// The multipart form, for the OpenAPI document only (the handler reads the parts itself).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The seed file.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// The password of a password-protected (PBKDF2) PSKC file.
    password: Option<String>,
}

/// The parts of a multipart upload: the file and the password of a PBKDF2-protected PSKC file.
pub struct Upload {
    pub file_name: Option<String>,
    pub bytes: Zeroizing<Vec<u8>>,
    pub password: Option<Zeroizing<String>>,
}

/// Reads `file` and `password` from a multipart body; other parts are ignored.
async fn read_multipart(mut multipart: Multipart) -> Result<Upload, AppError> {
    let mut upload = Upload {
        file_name: None,
        bytes: Zeroizing::new(Vec::new()),
        password: None,
    };
    let mut has_file = false;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| AppError::BadRequest(format!("upload: {e}")))?
    {
        match field.name() {
            Some("file") => {
                upload.file_name = field.file_name().map(str::to_owned);
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| AppError::BadRequest(format!("upload: {e}")))?;
                upload.bytes = Zeroizing::new(bytes.to_vec());
                has_file = true;
            }
            Some("password") => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| AppError::BadRequest(format!("upload: {e}")))?;
                upload.password = Some(Zeroizing::new(text));
            }
            _ => {}
        }
    }
    if !has_file {
        return Err(AppError::Unprocessable(
            "file: a multipart upload needs the seed file in a part named file".into(),
        ));
    }
    Ok(upload)
}

/// Refuses a query string that carries a password.
fn refuse_password_in_query(raw: Option<&str>) -> Result<(), AppError> {
    let carries = raw.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split('=').next() == Some("password"))
    });
    if carries {
        return Err(AppError::Unprocessable(
            "password: never send it in the URL; upload the file as multipart/form-data with the password in a part named password".into(),
        ));
    }
    Ok(())
}

/// Import a seed file (provisioner). All rows or none.
///
/// The body is the file itself, or `multipart/form-data` with the file in `file` and, for a
/// password-protected PSKC file, the password in `password`.
#[utoipa::path(post, path = "/imports", tag = "tokens", params(ImportQuery), request_body(content((Vec<u8> = "application/octet-stream"), (UploadForm = "multipart/form-data"))),
    responses((status = 201, description = "every row imported", body = ImportReport), (status = 200, description = "dry run: the preview", body = ImportReport),
              (status = 422, description = "bad rows: nothing imported; each error names line, column, reason and fix", body = ImportReport),
              (status = 401), (status = 403)))]
pub async fn import(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    Query(query): Query<ImportQuery>,
    RawQuery(raw_query): RawQuery,
    request: Request,
) -> Result<(StatusCode, Json<ImportReport>), AppError> {
    refuse_password_in_query(raw_query.as_deref())?;
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("multipart/form-data"));
    let upload = if multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| AppError::BadRequest(format!("upload: {e}")))?;
        read_multipart(multipart).await?
    } else {
        let body = Bytes::from_request(request, &state)
            .await
            .map_err(|e| AppError::BadRequest(format!("body: {e}")))?;
        Upload {
            file_name: None,
            bytes: Zeroizing::new(body.to_vec()),
            password: None,
        }
    };
    let mut options = options(
        query.format.as_deref(),
        query.secret_encoding.as_deref(),
        query.psk_hex.as_deref(),
    )?;
    options.password = upload.password;
    options.skip_unsupported = query.skip_unsupported.unwrap_or(false);
    let body = upload.bytes;
    let dry_run = query.dry_run.unwrap_or(false);
    let parsed = tokio::task::spawn_blocking(move || import::parse(&body, &options))
        .await
        .map_err(|e| AppError::Internal(format!("parser task: {e}")))?;
    let name = query
        .name
        .as_deref()
        .or(upload.file_name.as_deref())
        .unwrap_or("upload");
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
