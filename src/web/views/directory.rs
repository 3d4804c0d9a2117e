//! The directory page (admin): the state of each source's last sync, a CSV upload whose dry
//! run shows the diff (added, changed, removed) with a confirm button, and an LDAP sync when
//! `[directory.ldap]` is configured. The confirm form carries the previewed file's text back,
//! so what is applied is exactly what was previewed (diffed again against the directory as it
//! is then).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::{page, PageAuthorized, PageError};
use crate::directory::{self, DirectoryError, Entry, SyncEnv, SyncReport};
use crate::web::extract::Upload;
use crate::web::session::AdminOnly;
use crate::web::{AppError, AppState};

fn phones(entry: &Entry) -> String {
    entry.phones.join(", ")
}

fn manager(entry: &Entry) -> String {
    match (&entry.manager, &entry.manager_phone) {
        (Some(m), Some(p)) => format!("{m} ({p})"),
        (Some(m), None) => m.clone(),
        _ => String::new(),
    }
}

fn forms(state: &AppState) -> Markup {
    html! {
        form.stack.card method="post" action="/directory" enctype="multipart/form-data" {
            h2 { "Sync from a CSV file" }
            label { "Directory file (CSV)" span.hint { "header: " (directory::csv::HEADER_HINT) "; several numbers in one cell separated by |; numbers in international form (+…)" }
                input type="file" name="file" accept=".csv,text/csv" required; }
            div.actions {
                button type="submit" name="dry_run" value="true" { "Preview the changes (nothing is changed)" }
            }
        }
        @if state.config.directory.is_some() {
            form.stack.card method="post" action="/directory/ldap" enctype="multipart/form-data" {
                h2 { "Sync from LDAP" }
                p.hint { "Reads the configured [directory.ldap] server now (it also syncs on its schedule)." }
                div.actions {
                    button.secondary type="submit" name="dry_run" value="true" { "Preview the changes" }
                    button type="submit" name="dry_run" value="false" { "Sync from LDAP now" }
                }
            }
        }
    }
}

fn entries_table(caption: &str, entries: &[&Entry]) -> Markup {
    html! {
        div.table-wrap role="region" aria-label=(caption) tabindex="0" { table.diff {
            caption { (caption) }
            thead { tr { th scope="col" { "Owner" } th scope="col" { "Name" } th scope="col" { "Phones" } th scope="col" { "Manager" } th scope="col" { "Department" } } }
            tbody { @for e in entries {
                tr { th scope="row" { (e.owner) } td { (e.display_name.as_deref().unwrap_or("")) } td.mono { (phones(e)) } td { (manager(e)) } td { (e.department.as_deref().unwrap_or("")) } }
            } }
        } }
    }
}

fn report_view(report: &SyncReport, confirm_text: Option<&str>) -> Markup {
    let added: Vec<&Entry> = report.added.iter().collect();
    let removed: Vec<&Entry> = report.removed.iter().collect();
    html! {
        section.card aria-labelledby="result-title" {
            @if report.dry_run {
                h2 #result-title { "Preview of " (report.origin) ": " (report.counts()) }
            } @else {
                h2 #result-title { "Synced from " (report.origin) ": " (report.counts()) }
            }
            p { (report.total) " " (report.source) " entries after the sync." }
            @if !report.warnings.is_empty() {
                h3 { "Warnings" }
                ul { @for w in &report.warnings { li { (w) } } }
            }
            @if !added.is_empty() { (entries_table("Added", &added)) }
            @if !report.changed.is_empty() {
                div.table-wrap role="region" aria-label="Changed" tabindex="0" { table.diff {
                    caption { "Changed" }
                    thead { tr { th scope="col" { "Owner" } th scope="col" { "Phones before" } th scope="col" { "Phones after" } th scope="col" { "Manager before" } th scope="col" { "Manager after" } } }
                    tbody { @for c in &report.changed {
                        tr { th scope="row" { (c.after.owner) } td.mono { (phones(&c.before)) } td.mono { (phones(&c.after)) } td { (manager(&c.before)) } td { (manager(&c.after)) } }
                    } }
                } }
            }
            @if !removed.is_empty() { (entries_table("Removed", &removed)) }
            @if let Some(text) = confirm_text {
                form method="post" action="/directory" enctype="multipart/form-data" {
                    input type="hidden" name="file_name" value=(report.origin);
                    textarea name="csv" hidden aria-hidden="true" { (text) }
                    input type="hidden" name="dry_run" value="false";
                    button type="submit" { "Apply these changes" }
                }
            }
        }
    }
}

async fn status_view(state: &AppState) -> Result<Markup, AppError> {
    let status = directory::status(&state.store).await?;
    Ok(html! {
        section.card aria-labelledby="status-title" {
            h2 #status-title { "Last syncs" }
            ul { @for line in status.lines() { li { (line) } } }
            @if status.failed() {
                p.warning role="note" { "A sync failed: the entries shown to operators are the last good data." }
            }
        }
    })
}

async fn render(
    state: &AppState,
    op: &PageAuthorized<AdminOnly>,
    status: StatusCode,
    result: Markup,
) -> Result<Response, PageError> {
    let status_view = status_view(state).await.map_err(|e| op.fail(e))?;
    let body = html! {
        h1 { "Directory of record" }
        p.lead { "The phone numbers and managers operators call back at a reveal. Filled only from HR's export or LDAP — never from what a caller says." }
        (result)
        (status_view)
        (forms(state))
    };
    Ok((status, page(&op.ctx, "Directory", body)).into_response())
}

fn refusal(error: &DirectoryError) -> Markup {
    html! {
        section.card role="alert" {
            h2 { "Nothing was changed" }
            @match error {
                DirectoryError::Rows { errors, .. } => {
                    p { "Fix these rows and upload the file again. Every row must be valid before any is applied." }
                    div.table-wrap role="region" aria-label="Rows with problems" tabindex="0" { table {
                        thead { tr { th scope="col" { "Line" } th scope="col" { "Column" } th scope="col" { "Problem" } th scope="col" { "Fix" } } }
                        tbody { @for e in errors { tr { td { (e.line) } td { (e.column) } td { (e.reason) } td { (e.fix) } } } }
                    } }
                }
                other => { p.error-box { (other.to_string()) } }
            }
        }
    }
}

/// `GET /directory`.
pub async fn page_get(
    State(state): State<AppState>,
    op: PageAuthorized<AdminOnly>,
) -> Result<Response, PageError> {
    render(&state, &op, StatusCode::OK, html! {}).await
}

fn sync_env(state: &AppState) -> SyncEnv<'_> {
    SyncEnv {
        store: &state.store,
        vault: &state.vault,
        now: state.clock.now(),
    }
}

/// The outcome as a page: the diff, or what to fix (422/503 with nothing changed).
async fn outcome_page(
    state: &AppState,
    op: &PageAuthorized<AdminOnly>,
    outcome: Result<SyncReport, DirectoryError>,
    confirm_text: Option<&str>,
) -> Result<Response, PageError> {
    match outcome {
        Ok(report) => {
            let confirm = confirm_text.filter(|_| report.dry_run);
            render(state, op, StatusCode::OK, report_view(&report, confirm)).await
        }
        Err(e @ (DirectoryError::Store(_) | DirectoryError::Audit(_))) => Err(op.fail(e)),
        Err(e) => {
            let status = match &e {
                DirectoryError::LdapNotConfigured => StatusCode::CONFLICT,
                DirectoryError::Ldap { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            render(state, op, status, refusal(&e)).await
        }
    }
}

/// `POST /directory`: a CSV file (or the previewed text, when confirming).
pub async fn page_post(
    State(state): State<AppState>,
    op: PageAuthorized<AdminOnly>,
    upload: Result<Upload, AppError>,
) -> Result<Response, PageError> {
    let mut upload = upload.map_err(|e| op.fail(e))?;
    let dry_run = upload.field("dry_run") != Some("false");
    let (name, bytes) = match upload.file.take().filter(|b| !b.is_empty()) {
        Some(bytes) => (
            upload
                .file_name
                .clone()
                .unwrap_or_else(|| "upload.csv".into()),
            bytes.to_vec(),
        ),
        None => match upload.fields.get("csv") {
            Some(text) => (
                upload.field("file_name").unwrap_or("upload.csv").to_owned(),
                text.as_bytes().to_vec(),
            ),
            None => {
                return Err(op.fail(AppError::Unprocessable(
                    "file: choose the directory CSV file to sync".into(),
                )))
            }
        },
    };
    let outcome = directory::sync_csv(
        &sync_env(&state),
        &op.current.operator.actor(),
        &name,
        &bytes,
        dry_run,
    )
    .await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    outcome_page(&state, &op, outcome, Some(&text)).await
}

/// `POST /directory/ldap`: sync (or preview) from the configured LDAP server.
pub async fn ldap_post(
    State(state): State<AppState>,
    op: PageAuthorized<AdminOnly>,
    upload: Result<Upload, AppError>,
) -> Result<Response, PageError> {
    let upload = upload.map_err(|e| op.fail(e))?;
    let dry_run = upload.field("dry_run") != Some("false");
    let outcome = match &state.config.directory {
        Some(settings) => {
            directory::sync_ldap(
                &sync_env(&state),
                &op.current.operator.actor(),
                settings,
                dry_run,
            )
            .await
        }
        None => Err(DirectoryError::LdapNotConfigured),
    };
    outcome_page(&state, &op, outcome, None).await
}
