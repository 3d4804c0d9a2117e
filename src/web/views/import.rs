//! The import page (provisioner): upload a seed file, preview it (dry run) with the row-level
//! report, then import. The uploaded file is held in memory only.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::{page, PageAuthorized, PageError};
use crate::import::{self, ImportOptions};
use crate::tokens::import::{store, ImportReport};
use crate::web::extract::{refuse_secrets_in_query, Upload};
use crate::web::session::ProvisionerOnly;
use crate::web::{AppError, AppState};

fn form(state: &AppState) -> Markup {
    html! {
        form.stack.card method="post" action="/import" enctype="multipart/form-data" {
            label { "Seed file" span.hint { "Entra/Azure MFA CSV, vendor CSV, privacyIDEA CSV, PSKC XML or a list of otpauth:// URIs" }
                input type="file" name="file" required; }
            div.grid {
                label { "Format" select name="format" {
                    @for (v, l) in [("auto", "detect"), ("entra", "Entra / Azure MFA CSV"), ("vendor", "vendor CSV"), ("privacyidea", "privacyIDEA CSV"), ("pskc", "PSKC XML"), ("otpauth", "otpauth:// list")] {
                        option value=(v) { (l) }
                    }
                } }
                label { "Secrets are written as" select name="secret_encoding" {
                    @for (v, l) in [("auto", "detect"), ("base32", "base32"), ("hex", "hex")] { option value=(v) { (l) } }
                } }
                label { "Policy" select name="policy" {
                    @for p in state.policies.all() { option value=(p.name) selected[p.default] { (p.name) } }
                } }
            }
            label { "PSKC pre-shared key (hex)" span.hint { "only for encrypted PSKC files" } input type="text" name="psk_hex" autocomplete="off" spellcheck="false"; }
            label { "PSKC password" span.hint { "only for PSKC files protected with a password" } input type="password" name="password" autocomplete="off"; }
            label { input type="checkbox" name="skip_unsupported" value="true"; " Skip keys that are not TOTP" span.hint { "a PSKC file's HOTP, OCRA or vendor keys are listed as not escrowed; its TOTP keys are imported" } }
            div.actions {
                button.secondary type="submit" name="dry_run" value="true" { "Preview (nothing is stored)" }
                button type="submit" name="dry_run" value="false" { "Import all rows" }
            }
        }
    }
}

fn report_view(report: &ImportReport) -> Markup {
    html! {
        div.card {
            @if !report.ok() {
                h2 { "Nothing was imported: " (report.errors.len() + report.errors_omitted) " problem(s)" }
                p { "Fix these rows in the file and upload it again. Every row must be valid before any is stored." }
                div.table-wrap role="region" aria-label="Problems in the file" tabindex="0" { table {
                    thead { tr { th { "Line" } th { "Column" } th { "Problem" } th { "Fix" } } }
                    tbody { @for e in &report.errors { tr { td { (e.line) } td { (e.column) } td { (e.reason) } td { (e.fix) } } } }
                } }
                @if report.errors_omitted > 0 {
                    p { "… and " (report.errors_omitted) " more, not listed: fix these first and upload again." }
                }
            } @else if report.dry_run {
                h2 { "Preview: " (report.rows) " token(s) ready to import" }
                p { "Read as " (report.format.describe()) ". Choose the file again and press " strong { "Import all rows" } "." }
            } @else {
                h2 { "Imported " (report.imported) " token(s)" }
                p { "Read as " (report.format.describe()) ". Their seeds are sealed; the file was never written to disk." }
            }
            @if report.skipped > 0 {
                p { (report.skipped) " key(s) that are not TOTP were skipped and not escrowed; each is listed below." }
            }
            @if !report.warnings.is_empty() {
                h2 { "Warnings" }
                ul { @for w in &report.warnings { li { "line " (w.line) ": " (w.message) } } }
                @if report.warnings_omitted > 0 {
                    p { "… and " (report.warnings_omitted) " more warning(s)." }
                }
            }
        }
    }
}

pub async fn page_get(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
) -> Result<Markup, PageError> {
    let body = html! { h1 { "Import a seed file" } p.lead { "All rows or none: a file with any bad row imports nothing and says which rows to fix." } (form(&state)) };
    Ok(page(&op.ctx, "Import", body))
}

pub async fn page_post(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    RawQuery(raw_query): RawQuery,
    upload: Result<Upload, AppError>,
) -> Result<Response, PageError> {
    refuse_secrets_in_query(raw_query.as_deref()).map_err(|e| op.fail(e))?;
    let mut upload = upload.map_err(|e| op.fail(e))?;
    let mut options = ImportOptions::from_text(
        upload.field("format"),
        upload.field("secret_encoding"),
        upload.field("psk_hex"),
    )
    .map_err(|e| op.fail(e))?;
    options.password = upload.password();
    options.skip_unsupported = upload.field("skip_unsupported") == Some("true");
    let dry_run = upload.field("dry_run") != Some("false");
    let Some(bytes) = upload.file.take().filter(|b| !b.is_empty()) else {
        return Err(op.fail(AppError::Unprocessable(
            "file: choose a file to import".into(),
        )));
    };
    let parsed = import::parse(&bytes, &options);
    drop(bytes);
    let file_name = upload.file_name.as_deref().unwrap_or("upload");
    let report = store(
        &state.env(),
        &op.current.operator.actor(),
        file_name,
        parsed,
        upload.field("policy"),
        dry_run,
        std::time::Duration::ZERO,
        &|_, _| {},
    )
    .await
    .map_err(|e| op.fail(e))?;
    let status = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let body = html! { h1 { "Import a seed file" } (report_view(&report)) (form(&state)) };
    Ok((status, page(&op.ctx, "Import", body)).into_response())
}
