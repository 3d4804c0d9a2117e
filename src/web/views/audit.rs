//! The audit page (auditor, admin): the trail filtered by time range, actor, token, action and
//! outcome, paged newer/older by keyset, each event's details written for people (the raw JSON
//! one click away), and exports of exactly the filter on screen. The filter lives in the URL
//! under the export API's own parameter names, so a view can be shared and "export these"
//! passes the same query string on.

use axum::extract::{Query, State};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::layout::pager;
use super::{page, PageAuthorized, PageError};
use crate::audit::export::{self, ExportFilter};
use crate::audit::Outcome;
use crate::store::audit::{AuditCursor, AuditRow};
use crate::web::session::AuditorOrAdmin;
use crate::web::{AppError, AppState};

/// Events per page.
const AUDIT_PAGE: i64 = 50;

#[derive(Deserialize, Default, Clone)]
pub struct AuditQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    outcome: String,
    /// Events older than this seq.
    #[serde(default)]
    older: Option<i64>,
    /// Events newer than this seq.
    #[serde(default)]
    newer: Option<i64>,
}

impl AuditQuery {
    fn filter(&self) -> Result<ExportFilter, AppError> {
        let text = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
        let time = |field, v: &str| {
            text(v)
                .map(|v| export::parse_time(field, &v))
                .transpose()
                .map_err(|e| AppError::Unprocessable(e.to_string()))
        };
        Ok(ExportFilter {
            since: time("from", &self.since)?,
            until: time("to", &self.until)?,
            actor: text(&self.actor),
            token: text(&self.token),
            action: text(&self.action),
            outcome: text(&self.outcome),
        })
    }

    /// The filter alone (no page position) as a query string, `?`-less.
    fn filter_query(&self) -> String {
        let pairs = [
            ("since", &self.since),
            ("until", &self.until),
            ("actor", &self.actor),
            ("token", &self.token),
            ("action", &self.action),
            ("outcome", &self.outcome),
        ];
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(
                pairs
                    .iter()
                    .filter(|(_, v)| !v.trim().is_empty())
                    .map(|(k, v)| (*k, v.trim())),
            )
            .finish()
    }

    fn href(&self, cursor: Option<(&str, i64)>) -> String {
        let mut query = self.filter_query();
        if let Some((key, seq)) = cursor {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(&format!("{key}={seq}"));
        }
        if query.is_empty() {
            "/audit".into()
        } else {
            format!("/audit?{query}")
        }
    }

    /// This filter with another time range (the quick picks).
    fn with_range(&self, since: String) -> String {
        AuditQuery {
            since,
            until: String::new(),
            older: None,
            newer: None,
            ..self.clone()
        }
        .href(None)
    }
}

/// `YYYY-MM-DDTHH:MM` in UTC, the value a `datetime-local` field shows.
fn minute(at: OffsetDateTime) -> String {
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]"
    ))
    .unwrap_or_default()
}

pub async fn search(
    State(state): State<AppState>,
    op: PageAuthorized<AuditorOrAdmin>,
    Query(q): Query<AuditQuery>,
) -> Result<Markup, PageError> {
    let filter = q.filter().and_then(|f| {
        f.to_store()
            .map_err(|e| AppError::Unprocessable(e.to_string()))
    });
    let (events, problem) = match filter {
        Ok(filter) => {
            let cursor = match (q.older, q.newer) {
                (Some(seq), _) => Some(AuditCursor::Older(seq)),
                (None, Some(seq)) => Some(AuditCursor::Newer(seq)),
                (None, None) => None,
            };
            let page = crate::store::audit::page(&state.store, &filter, cursor, AUDIT_PAGE)
                .await
                .map_err(|e| op.fail(e))?;
            (Some(page), None)
        }
        Err(e) => (None, Some(e.to_string())),
    };
    let now = state.clock.now();
    let export_query = q.filter_query();
    let export_href = |format: &str| {
        if export_query.is_empty() {
            format!("/api/v1/audit?format={format}")
        } else {
            format!("/api/v1/audit?format={format}&{export_query}")
        }
    };
    let body = html! {
        h1 { "Audit trail" }
        form.filters method="get" action="/audit" role="search" aria-label="Filter the audit trail" {
            fieldset {
                legend { "Time (UTC)" }
                label { "From" input type="datetime-local" name="since" value=(q.since); }
                label { "To" input type="datetime-local" name="until" value=(q.until); }
                p.quick {
                    "Quick picks: "
                    a href=(q.with_range(minute(now - time::Duration::hours(1)))) { "last hour" } " · "
                    a href=(q.with_range(minute(now.replace_time(time::Time::MIDNIGHT)))) { "today" } " · "
                    a href=(q.with_range(minute(now - time::Duration::days(7)))) { "last 7 days" } " · "
                    a href=(q.with_range(String::new())) { "all time" }
                }
            }
            label { "Actor" input type="text" name="actor" value=(q.actor) placeholder="operator:alice"; }
            label { "Token serial" input type="text" name="token" value=(q.token); }
            label { "Action" input type="text" name="action" value=(q.action) placeholder="reveal.granted"; }
            label { "Outcome"
                select name="outcome" {
                    option value="" { "any" }
                    @for o in Outcome::ALL {
                        option value=(o.as_str()) selected[q.outcome == o.as_str()] { (o.as_str()) }
                    }
                }
            }
            div.actions {
                button type="submit" { "Filter" }
                a.button.secondary href="/audit" { "Clear" }
            }
        }
        div.actions {
            a.button.secondary href=(export_href("csv")) { "Export these as CSV" }
            a.button.secondary href=(export_href("jsonl")) { "Export these as JSON Lines" }
            a.button.secondary href="/api/v1/audit/verify" { "Verify the chain" }
        }
        @if let Some(problem) = &problem {
            p.error-box role="alert" { (problem) }
        }
        @if let Some(page) = &events {
            @if page.rows.is_empty() {
                p.muted { "No event matches." }
            } @else {
                p.muted { "Newest first, " (AUDIT_PAGE) " per page. Exports carry every matching event with its hash and signature, and a signed trailer." }
                div.table-wrap role="region" aria-label="Audit events" tabindex="0" { table.audit {
                    thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "Target" } th scope="col" { "Details" } } }
                    tbody { @for e in &page.rows { (event_row(&q, e)) } }
                } }
                (pager(
                    page.has_newer.then(|| q.href(page.rows.first().map(|e| ("newer", e.seq)))),
                    page.has_older.then(|| q.href(page.rows.last().map(|e| ("older", e.seq)))),
                    "Audit pages",
                ))
            }
        }
    };
    Ok(page(&op.ctx, "Audit", body))
}

fn event_row(q: &AuditQuery, e: &AuditRow) -> Markup {
    let actor_href = AuditQuery {
        actor: e.actor.clone(),
        older: None,
        newer: None,
        ..q.clone()
    }
    .href(None);
    html! {
        tr {
            td.mono { (e.seq) }
            td { (e.time) }
            td { a href=(actor_href) title="Only this actor's events" { (e.actor) } }
            td class={ "outcome-" (e.outcome) } { (e.action) @if e.outcome != "success" { " (" (e.outcome) ")" } }
            td { (target_link(&e.target)) }
            td { (details_view(&e.details)) }
        }
    }
}

/// A token target opens the token; an operator target filters by that operator.
fn target_link(target: &str) -> Markup {
    if let Some(serial) = target.strip_prefix("token:") {
        return html! { a href={ "/tokens/" (serial) } { (target) } };
    }
    if target.starts_with("operator:") {
        let href = format!(
            "/audit?actor={}",
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        );
        return html! { a href=(href) { (target) } };
    }
    html! { (target) }
}

/// A details key as people read it.
fn label(key: &str) -> String {
    let known = match key {
        "checks" => "Checks ticked",
        "ticket" => "Ticket",
        "note" => "Note",
        "next_code" => "Next code shown too",
        "policy" => "Policy",
        "policy_hash" => "Policy version",
        "reason" => "Reason",
        "drift_steps" | "drift" => "Clock drift (steps)",
        "count" => "Events",
        "imported" => "Tokens imported",
        "skipped" => "Rows skipped",
        "serials" => "Serials",
        "format" => "Format",
        "file" => "File",
        "filters" => "Filters",
        "through_seq" => "Up to event",
        "roles" => "Roles",
        "from" => "From",
        "to" => "To",
        "owner" => "Owner",
        "client" => "Client address",
        "credential" => "Passkey",
        "label" => "Name",
        "expires_at" => "Expires",
        "retention_deadline" => "Seed destroyed by",
        "unassigned" => "Without owner",
        _ => "",
    };
    if known.is_empty() {
        let spaced = key.replace(['_', '.'], " ");
        let mut chars = spaced.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    } else {
        known.to_owned()
    }
}

/// A details value as people read it: lists joined, yes/no, nested objects as `key: value`.
fn plain(value: &Value) -> String {
    match value {
        Value::Null => "—".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::String(s) if s.is_empty() => "—".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{}: {}", label(k), plain(v)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The details object as a list of labelled values, the raw JSON one click away.
fn details_view(details: &str) -> Markup {
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str(details).ok();
    let Some(map) = parsed else {
        return html! { span.mono { (details) } };
    };
    let shown: Vec<(&String, &Value)> = map.iter().filter(|(_, v)| !v.is_null()).collect();
    html! {
        @if !shown.is_empty() {
            dl.details {
                @for (key, value) in &shown {
                    div { dt { (label(key)) } dd { (plain(value)) } }
                }
            }
        }
        details.raw { summary { "Raw JSON" } code.mono { (details) } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reveal_event_reads_as_checks_ticket_and_note() {
        let text = plain(
            &serde_json::json!({"checks": ["callback", "video-id"], "ticket": "INC-1", "next_code": true}),
        );
        assert_eq!(
            text,
            "Checks ticked: callback, video-id; Ticket: INC-1; Next code shown too: yes"
        );
    }

    #[test]
    fn unknown_keys_are_still_readable() {
        assert_eq!(label("seed_bits"), "Seed bits");
        assert_eq!(label("ticket"), "Ticket");
    }

    #[test]
    fn the_filter_travels_in_the_url_without_the_page_position() {
        let q = AuditQuery {
            actor: "operator:ann".into(),
            outcome: "denied".into(),
            older: Some(40),
            ..Default::default()
        };
        assert_eq!(q.filter_query(), "actor=operator%3Aann&outcome=denied");
        assert_eq!(
            q.href(Some(("older", 12))),
            "/audit?actor=operator%3Aann&outcome=denied&older=12"
        );
    }
}
