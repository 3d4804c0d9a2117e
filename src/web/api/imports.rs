//! `POST /api/v1/imports`: a seed file as the request body (or a multipart upload), parsed,
//! checked and — unless a dry run or any row is bad — escrowed atomically.
//!
//! An encrypted PSKC file's key (`psk_hex`) or password (`password`, for PBKDF2-protected
//! files) travels only as a field of a multipart upload, never in the query string (URLs end up
//! in logs and histories); one there is refused.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::import::{self, ImportOptions};
use crate::tokens::import::{store, ImportReport};
use crate::web::extract::{refuse_secrets_in_query, Json, Query, Upload};
use crate::web::session::{Authorized, ProvisionerOnly};
use crate::web::{AppError, AppState, ErrorBody};

/// The form fields besides `file`.
const FORM_FIELDS: &[&str] = &[
    "psk_hex",
    "password",
    "format",
    "secret_encoding",
    "policy",
    "dry_run",
    "skip_unsupported",
    "name",
];

/// A seed file as the raw request body (for the document only).
pub struct SeedFile;

impl utoipa::PartialSchema for SeedFile {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some("the file's bytes: CSV, PSKC XML or otpauth:// lines"))
            .into()
    }
}

impl ToSchema for SeedFile {}

/// The `multipart/form-data` form of an import (for the document only). A field wins over
/// the query parameter of the same name; a field of another name is refused.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportForm {
    /// The seed file.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The key of an encrypted PSKC file, hex (accepted only here, never in the URL).
    pub psk_hex: Option<String>,
    /// The password of a password-protected (PBKDF2) PSKC file (accepted only here).
    pub password: Option<String>,
    /// auto (default), entra, vendor, privacyidea, pskc or otpauth.
    pub format: Option<String>,
    /// auto (default), base32 or hex.
    pub secret_encoding: Option<String>,
    /// Policy for every imported token.
    pub policy: Option<String>,
    /// true or false.
    pub dry_run: Option<String>,
    /// true or false: import the TOTP keys of a mixed PSKC file, skipping the others.
    pub skip_unsupported: Option<String>,
    /// File name to record in the audit trail (default: the part's file name).
    pub name: Option<String>,
}

/// The two bodies a 422 of `POST /imports` can have (for the document only): the report of
/// a file with bad rows, or the error of an option or form that could not be used.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ImportRefused {
    Report(ImportReport),
    Error(ErrorBody),
}

/// The options in the query string. A multipart upload may send the same names as form
/// fields instead (a field wins over the query); the PSKC pre-shared key only ever as the
/// form field `psk_hex` — a `psk_hex` in the query is refused.
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
    /// true: import the TOTP keys of a PSKC file that also holds HOTP, OCRA or vendor keys,
    /// listing the others in `warnings` and counting them in `skipped`.
    skip_unsupported: Option<bool>,
    /// File name to record in the audit trail.
    name: Option<String>,
}

/// Import a seed file (provisioner). All rows or none. The body is the file itself, or a
/// `multipart/form-data` form with the file in the part `file`, the options as fields, and an
/// encrypted PSKC file's key in the field `psk_hex` or its password in the field `password`
/// (the only places a key or password is accepted).
#[utoipa::path(post, path = "/imports", tag = "tokens", params(ImportQuery),
    request_body(content((SeedFile = "application/octet-stream"), (ImportForm = "multipart/form-data")),
        description = "the seed file itself (options in the query), or a form with the file and the options"),
    responses((status = 201, description = "every row imported", body = ImportReport), (status = 200, description = "dry run: the preview", body = ImportReport),
              (status = 422, description = "bad rows (an ImportReport: nothing imported; each error names line, column, reason and fix), or a bad option (an ErrorBody)", body = ImportRefused),
              (status = 401), (status = 403), (status = 413, description = "the file is over the upload limit")))]
pub async fn import(
    State(state): State<AppState>,
    auth: Authorized<ProvisionerOnly>,
    RawQuery(raw_query): RawQuery,
    Query(query): Query<ImportQuery>,
    upload: Upload,
) -> Result<(StatusCode, Json<ImportReport>), AppError> {
    refuse_secrets_in_query(raw_query.as_deref())?;
    // A misspelt option (`pskhex`, `dryrun`) would otherwise be ignored without a word.
    if let Some(unknown) = upload
        .fields
        .keys()
        .find(|name| !FORM_FIELDS.contains(&name.as_str()))
    {
        return Err(AppError::Unprocessable(format!(
            "{unknown}: not a field of the import form; the fields are file, {}",
            FORM_FIELDS.join(", ")
        )));
    }
    let pick = |field: &str, query: &Option<String>| -> Option<String> {
        upload
            .field(field)
            .map(str::to_owned)
            .or_else(|| query.clone())
    };
    let mut options = ImportOptions::from_text(
        pick("format", &query.format).as_deref(),
        pick("secret_encoding", &query.secret_encoding).as_deref(),
        upload.field("psk_hex"),
    )?;
    options.password = upload.password();
    options.skip_unsupported = match upload.field("skip_unsupported") {
        Some(text) => parse_bool("skip_unsupported", text)?,
        None => query.skip_unsupported.unwrap_or(false),
    };
    let dry_run = match upload.field("dry_run") {
        Some(text) => parse_bool("dry_run", text)?,
        None => query.dry_run.unwrap_or(false),
    };
    let policy = pick("policy", &query.policy);
    let name = pick("name", &query.name)
        .or_else(|| upload.file_name.clone())
        .unwrap_or_else(|| "upload".into());
    let Some(bytes) = upload.file else {
        return Err(AppError::Unprocessable(
            "file: the form has no file — send the seed file in a part named file".into(),
        ));
    };
    let parsed = tokio::task::spawn_blocking(move || import::parse(&bytes, &options))
        .await
        .map_err(|e| AppError::Internal(format!("parser task: {e}")))?;
    let report = store(
        &state.env(),
        &auth.operator().actor(),
        &name,
        parsed,
        policy.as_deref(),
        dry_run,
        std::time::Duration::ZERO,
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

fn parse_bool(field: &str, text: &str) -> Result<bool, AppError> {
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(AppError::Unprocessable(format!(
            "{field}: expected true or false"
        ))),
    }
}
