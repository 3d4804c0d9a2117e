//! The import page (provisioner): upload a seed file, preview it (dry run) with the row-level
//! report, then import. The uploaded file is held in memory only.

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use zeroize::Zeroizing;

use super::{page, PageError, PageOperator};
use crate::import;
use crate::operators::Role;
use crate::tokens::import::{store, ImportReport};
use crate::web::api::imports::options;
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
                h2 { "Nothing was imported: " (report.errors.len()) " bad row(s)" }
                p { "Fix these rows in the file and upload it again. Every row must be valid before any is stored." }
                div.table-wrap { table {
                    thead { tr { th { "Line" } th { "Column" } th { "Problem" } th { "Fix" } } }
                    tbody { @for e in &report.errors { tr { td { (e.line) } td { (e.column) } td { (e.reason) } td { (e.fix) } } } }
                } }
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
            }
        }
    }
}

pub async fn page_get(
    State(state): State<AppState>,
    op: PageOperator,
) -> Result<Markup, PageError> {
    op.require(Role::Provisioner)?;
    let body = html! { h1 { "Import a seed file" } p.lead { "All rows or none: a file with any bad row imports nothing and says which rows to fix." } (form(&state)) };
    Ok(page(&op.ctx, "Import", body))
}

pub async fn page_post(
    State(state): State<AppState>,
    op: PageOperator,
    mut multipart: Multipart,
) -> Result<Response, PageError> {
    op.require(Role::Provisioner)?;
    let mut file: Option<(String, Zeroizing<Vec<u8>>)> = None;
    let mut fields: std::collections::HashMap<String, String> = Default::default();
    let mut password: Option<Zeroizing<String>> = None;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| op.fail(AppError::BadRequest(format!("upload: {e}"))))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let file_name = field.file_name().unwrap_or("upload").to_owned();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| op.fail(AppError::BadRequest(format!("upload: {e}"))))?;
            file = Some((file_name, Zeroizing::new(bytes.to_vec())));
        } else {
            let value = field
                .text()
                .await
                .map_err(|e| op.fail(AppError::BadRequest(format!("upload: {e}"))))?;
            if name == "password" {
                password = Some(Zeroizing::new(value)).filter(|p| !p.is_empty());
            } else {
                fields.insert(name, value);
            }
        }
    }
    let Some((file_name, bytes)) = file else {
        return Err(op.fail(AppError::Unprocessable("choose a file to import".into())));
    };
    let text = |k: &str| {
        fields
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };
    let mut options = options(text("format"), text("secret_encoding"), text("psk_hex"))
        .map_err(|e| op.fail(e))?;
    options.password = password;
    options.skip_unsupported = text("skip_unsupported") == Some("true");
    let dry_run = text("dry_run") != Some("false");
    let parsed = import::parse(&bytes, &options);
    drop(bytes);
    let report = store(
        &state.env(),
        &op.current.operator.actor(),
        &file_name,
        parsed,
        text("policy"),
        dry_run,
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
