//! The dashboard: counts by state, seeds nearing their retention deadline, recent reveals,
//! and how far each SIEM sink is behind the audit trail.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::layout::when;
use super::{page, PageError, PageOperator};
use crate::web::AppState;

/// Anonymous visitors are sent to sign-in rather than shown an error.
pub async fn dashboard(
    State(state): State<AppState>,
    op: Result<PageOperator, PageError>,
) -> Result<Response, PageError> {
    let Ok(op) = op else {
        return Ok(Redirect::to("/login").into_response());
    };
    let now = state.clock.unix();
    let report = crate::status::collect(&state.store, now)
        .await
        .map_err(|e| op.fail(e))?;
    let reveals = crate::store::tokens::recent_reveals(&state.store, 10)
        .await
        .map_err(|e| op.fail(e))?;
    let directory = crate::directory::status(&state.store)
        .await
        .map_err(|e| op.fail(e))?;
    let notices = crate::store::outbox::counts(&state.store)
        .await
        .map_err(|e| op.fail(e))?;
    let sending = state.config.smtp_host.is_some();
    let lags = crate::siem::lag(&state.store, &state.config.siem, state.clock.now())
        .await
        .map_err(|e| op.fail(e))?;
    let health = state.siem.lock().map(|h| h.clone()).unwrap_or_default();
    let body = html! {
        h1 { "Dashboard" }
        @if !sending {
            div.flash.error role="status" {
                strong { "Notices to token owners are not being sent." }
                " No SMTP server is configured (" code { "[smtp] host" } " in seedvault.toml), so owners are not told when a code for their token is given out. "
                (notices.unsent) " notices recorded as not sent."
            }
        } @else if notices.failed > 0 || notices.pending > 0 {
            div.flash.error role="status" {
                (notices.pending) " notices to token owners waiting to be sent, " (notices.failed) " failed for good. The log says why."
            }
        }
        div.grid {
            @for (label, count) in &report.tokens_by_state {
                @if *label == "programming" || *label == "escrowed" || *label == "purged" {
                    div.card.stat { div.n { (count) } div.l { (label) } }
                }
            }
            div.card.stat { div.n { (report.audit_events) } div.l { "audit events" } }
        }
        h2 { "In the post" }
        div.grid {
            a.card.stat href="/tokens?post=in_transit" { div.n { (report.in_transit.in_transit) } div.l { "in transit" } }
            a.card.stat href="/tokens?post=late" { div.n { (report.in_transit.late) } div.l { "delivered late (expected date passed)" } }
            a.card.stat href="/tokens?post=nearing_retention" { div.n { (report.in_transit.nearing_retention) } div.l { "in the post, seed reaching retention within 7 days" } }
        }
        @if report.in_transit.late > 0 || report.in_transit.nearing_retention > 0 {
            p.warning role="note" { "Ask the carrier about late parcels. A seed purged while its token is in the post leaves the owner with an unverifiable token: confirm delivery, or cancel and reissue, before its deadline." }
        }
        h2 { "Seeds reaching their retention deadline within 7 days" }
        @if report.due_soon.is_empty() {
            p.muted { "None. Seeds past their deadline are purged automatically." }
        } @else {
            div.table-wrap role="region" aria-label="Seeds reaching their retention deadline" tabindex="0" { table {
                thead { tr { th { "Serial" } th { "Owner" } th { "Purged at" } } }
                tbody { @for (serial, owner, deadline) in &report.due_soon {
                    tr { td { a href={ "/tokens/" (serial) } { (serial) } } td { (owner.as_deref().unwrap_or("unassigned")) } td { (when(*deadline)) } }
                } }
            } }
        }
        h2 { "Directory of record" }
        @if directory.failed() {
            p.warning role="note" { "The last directory sync failed: operators see the last good data. See below and the Directory page." }
        }
        ul.directory-status { @for line in directory.lines() { li { (line) } } }
        @if !lags.is_empty() {
            h2 { "SIEM forwarding" }
            div.table-wrap role="region" aria-label="SIEM forwarding" tabindex="0" { table {
                caption.muted { "Audit events each sink has not acknowledged yet. A sink that is down only lags; nothing is lost." }
                thead { tr { th scope="col" { "Sink" } th scope="col" { "Acknowledged up to" } th scope="col" { "Lag (events)" } th scope="col" { "Lag (seconds)" } th scope="col" { "Last error" } } }
                tbody { @for lag in &lags {
                    tr {
                        th scope="row" { (lag.sink) }
                        td { (lag.acked_seq) }
                        td { (lag.events) }
                        td { (format!("{:.0}", lag.seconds)) }
                        td {
                            @if lag.cursor_ahead {
                                "cursor ahead of the audit head (restored vault?) — run seedvault siem reset " (lag.sink)
                            } @else {
                                (health.get(&lag.sink).and_then(|h| h.last_error.clone()).unwrap_or_else(|| "none".into()))
                            }
                        }
                    }
                } }
            } }
        }
        h2 { "Recent reveals" }
        @if reveals.is_empty() {
            p.muted { "No codes revealed yet." }
        } @else {
            div.table-wrap role="region" aria-label="Recent reveals" tabindex="0" { table {
                thead { tr { th { "When" } th { "Token" } th { "Operator" } } }
                tbody { @for (serial, operator, at) in &reveals {
                    tr { td { (when(*at)) } td { a href={ "/tokens/" (serial) } { (serial) } } td { (operator) } }
                } }
            } }
        }
    };
    Ok(page(&op.ctx, "Dashboard", body).into_response())
}
