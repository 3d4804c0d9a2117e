//! The audit page (auditor, admin): recent events with filters, links to the exports.

use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;

use super::{page, PageAuthorized, PageError};
use crate::web::session::AuditorOrAdmin;
use crate::web::AppState;

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    action: String,
}

pub async fn search(
    State(state): State<AppState>,
    op: PageAuthorized<AuditorOrAdmin>,
    Query(q): Query<AuditQuery>,
) -> Result<Markup, PageError> {
    let target = Some(q.token.trim())
        .filter(|t| !t.is_empty())
        .map(crate::tokens::target);
    let filter = crate::store::audit::AuditFilter {
        actor: Some(q.actor.trim().to_owned()).filter(|a| !a.is_empty()),
        target,
        action: Some(q.action.trim().to_owned()).filter(|a| !a.is_empty()),
        ..Default::default()
    };
    let events = crate::store::audit::recent(&state.store, &filter, 200)
        .await
        .map_err(|e| op.fail(e))?;
    let query = serde_urlencoded_query(&q);
    let body = html! {
        h1 { "Audit trail" }
        form.inline method="get" action="/audit" role="search" {
            label { "Actor" input type="text" name="actor" value=(q.actor) placeholder="operator:alice"; }
            label { "Token serial" input type="text" name="token" value=(q.token); }
            label { "Action" input type="text" name="action" value=(q.action) placeholder="reveal.granted"; }
            button type="submit" { "Filter" }
        }
        div.actions {
            a.button.secondary href={ "/api/v1/audit?format=csv" (query) } { "Export CSV" }
            a.button.secondary href={ "/api/v1/audit?format=jsonl" (query) } { "Export JSON Lines" }
            a.button.secondary href="/api/v1/audit/verify" { "Verify the chain" }
        }
        p.muted { "Newest 200 matching events. Exports carry every matching event with its hash and signature." }
        div.table-wrap role="region" aria-label="Audit events" tabindex="0" { table {
            thead { tr { th { "#" } th { "When" } th { "Who" } th { "What" } th { "Target" } th.hide-narrow { "Details" } } }
            tbody { @for e in &events {
                tr {
                    td.mono { (e.seq) } td { (e.time) } td { (e.actor) }
                    td class={ "outcome-" (e.outcome) } { (e.action) @if e.outcome != "success" { " (" (e.outcome) ")" } }
                    td { (e.target) } td.hide-narrow.mono { (e.details) }
                }
            } }
        } }
    };
    Ok(page(&op.ctx, "Audit", body))
}

fn serde_urlencoded_query(q: &AuditQuery) -> String {
    let mut out = String::new();
    for (key, value) in [
        ("actor", &q.actor),
        ("token", &q.token),
        ("action", &q.action),
    ] {
        if !value.trim().is_empty() {
            out.push('&');
            out.push_str(key);
            out.push('=');
            out.push_str(
                &url::form_urlencoded::byte_serialize(value.trim().as_bytes()).collect::<String>(),
            );
        }
    }
    out
}
