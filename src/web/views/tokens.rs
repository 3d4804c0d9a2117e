//! Token pages: search, detail with audit timeline, capture, reveal (checklist → passkey →
//! code), delivery and cancellation.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::layout::{pager, when};
use super::{page, set_flash, PageAuthorized, PageError, PageOperator};
use crate::directory::{self, OfRecord};
use crate::operators::Role;
use crate::store::token_pages::{Cursor, InPost, PageRequest, TokenSort};
use crate::tokens::lifecycle::{self, CancelRequest, DeliveryRequest};
use crate::tokens::{self, SecretInput, TokenState};
use crate::web::extract::Upload;
use crate::web::session::{HelpdeskOnly, ProvisionerOnly, ProvisionerOrHelpdesk};
use crate::web::{AppError, AppState};

#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    policy: String,
    /// `in_transit`, `late` or `nearing_retention`: the dashboard's "In the post" figures.
    #[serde(default)]
    post: String,
    #[serde(default)]
    sort: String,
    /// `asc` or `desc`; each order has its natural default.
    #[serde(default)]
    dir: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    before: String,
}

/// Tokens per page of the list.
const LIST_PAGE: i64 = 50;

impl ListQuery {
    fn sort(&self) -> TokenSort {
        TokenSort::parse(&self.sort).unwrap_or_default()
    }

    /// Newest first for capture time, A→Z (soonest first) for the others, unless `dir` says.
    fn descending(&self) -> bool {
        match self.dir.as_str() {
            "asc" => false,
            "desc" => true,
            _ => self.sort() == TokenSort::Captured,
        }
    }

    /// This view's address with some parameters replaced (`None` drops one); the filter
    /// stays in the URL so a view can be shared.
    fn href(&self, changes: &[(&str, Option<&str>)]) -> String {
        let mut pairs: Vec<(&str, String)> = vec![
            ("q", self.q.trim().to_owned()),
            ("state", self.state.clone()),
            ("policy", self.policy.clone()),
            ("post", self.post.clone()),
            ("sort", self.sort.clone()),
            ("dir", self.dir.clone()),
        ];
        for (key, value) in changes {
            pairs.retain(|(k, _)| k != key);
            if let Some(value) = value {
                pairs.push((key, (*value).to_owned()));
            }
        }
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
            .finish();
        if query.is_empty() {
            "/tokens".into()
        } else {
            format!("/tokens?{query}")
        }
    }
}

/// The choices of the list's "In the post" filter: URL value and label.
const IN_POST: [(&str, &str); 3] = [
    ("in_transit", "in transit"),
    ("late", "late (expected date passed)"),
    ("nearing_retention", "seed reaching retention within 7 days"),
];

/// The "In the post" filter named by `value` (the list's and the bulk form's `post`), with the
/// dates the dashboard's figures use; anything else filters nothing.
pub(super) fn in_post_filter(state: &AppState, value: &str) -> Option<InPost> {
    let now = state.clock.now();
    match value {
        "in_transit" => Some(InPost::InTransit),
        "late" => Some(InPost::Late {
            today: now.date().to_string(),
        }),
        "nearing_retention" => Some(InPost::NearingRetention {
            soon: now.unix_timestamp() + crate::status::DUE_SOON_SECONDS,
        }),
        _ => None,
    }
}

/// Whether the seed was checked against the device, for the list and the token's pages.
pub(super) fn verified_text(token: &tokens::Token) -> Markup {
    html! {
        @match (token.verified_at, &token.verified_by) {
            (Some(at), by) => span.verified { "verified " (when(at)) @if let Some(by) = by { " by " (by) } }
            (None, _) => span.muted { "not verified" }
        }
    }
}

/// Whether an expected delivery date (`YYYY-MM-DD`) has passed.
fn late(state: &AppState, expected: &str) -> bool {
    expected < state.clock.now().date().to_string().as_str()
}

fn state_badge(state: TokenState) -> Markup {
    html! { span class={ "state " (state.as_str()) } { (state.as_str()) } }
}

/// A column header that sorts by `sort` (and flips the direction when already sorted by it).
fn sort_header(query: &ListQuery, sort: TokenSort, label: &str, class: &str) -> Markup {
    let current = query.sort() == sort;
    let descending = query.descending();
    let aria = match (current, descending) {
        (false, _) => None,
        (true, true) => Some("descending"),
        (true, false) => Some("ascending"),
    };
    let next_dir = if current && !descending {
        "desc"
    } else {
        "asc"
    };
    let href = query.href(&[
        ("sort", Some(sort.as_str())),
        ("dir", Some(next_dir)),
        ("after", None),
        ("before", None),
    ]);
    html! {
        th scope="col" class=(class) aria-sort=[aria] {
            a href=(href) { (label) @if let Some(a) = aria { span.visually-hidden { ", sorted " (a) } span aria-hidden="true" { @if a == "ascending" { " ▲" } @else { " ▼" } } } }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    op: PageOperator,
    Query(query): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let state_filter = TokenState::parse(&query.state).map(|s| s.as_str().to_owned());
    let policy_filter = Some(query.policy.trim().to_owned()).filter(|p| !p.is_empty());
    let cursor = match (query.after.trim(), query.before.trim()) {
        ("", "") => None,
        (after, "") => Some(Cursor::After(after.to_owned())),
        (_, before) => Some(Cursor::Before(before.to_owned())),
    };
    let request = PageRequest {
        query: Some(query.q.trim().to_owned()).filter(|q| !q.is_empty()),
        state: state_filter.clone(),
        policy: policy_filter.clone(),
        in_post: in_post_filter(&state, &query.post),
        sort: query.sort(),
        descending: query.descending(),
        cursor,
        limit: LIST_PAGE,
    };
    let found = tokens::list_page(&state.store, &request)
        .await
        .map_err(|e| op.fail(e))?;
    let counts = tokens::counts(&state.store).await.map_err(|e| op.fail(e))?;
    let total: i64 = counts.iter().map(|(_, _, n)| n).sum();
    let mut per_state: Vec<(&str, i64)> = Vec::new();
    let mut per_policy: Vec<(&str, i64)> = Vec::new();
    for (s, p, n) in &counts {
        match per_state.iter_mut().find(|(k, _)| k == s) {
            Some((_, sum)) => *sum += n,
            None => per_state.push((s, *n)),
        }
        match per_policy.iter_mut().find(|(k, _)| k == p) {
            Some((_, sum)) => *sum += n,
            None => per_policy.push((p, *n)),
        }
    }
    per_policy.sort();
    let bulk = op.has(Role::Provisioner) || op.has(Role::Helpdesk);
    let body = html! {
        h1 { "Tokens" }
        section.counts aria-label="Tokens per state and policy" {
            p {
                strong { (total) } " tokens. By state: "
                @for (i, (s, n)) in per_state.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(query.href(&[("state", Some(s)), ("after", None), ("before", None)])) { (s) } " " (n)
                }
                @if !per_policy.is_empty() { ". By policy: " }
                @for (i, (p, n)) in per_policy.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(query.href(&[("policy", Some(p)), ("after", None), ("before", None)])) { (p) } " " (n)
                }
                "."
            }
        }
        form.inline method="get" action="/tokens" role="search" {
            label { "Serial, owner or name starts with" input type="search" name="q" value=(query.q) placeholder="user@example.org or T2-…"; }
            label { "State"
                select name="state" {
                    option value="" { "any" }
                    @for s in TokenState::ALL {
                        option value=(s.as_str()) selected[state_filter.as_deref() == Some(s.as_str())] { (s.as_str()) }
                    }
                }
            }
            label { "Policy"
                select name="policy" {
                    option value="" { "any" }
                    @for (p, _) in &per_policy {
                        option value=(p) selected[policy_filter.as_deref() == Some(*p)] { (p) }
                    }
                }
            }
            label { "In the post"
                select name="post" {
                    option value="" { "any" }
                    @for (value, label) in IN_POST {
                        option value=(value) selected[query.post == value] { (label) }
                    }
                }
            }
            label { "Sort by"
                select name="sort" {
                    @for s in TokenSort::ALL {
                        option value=(s.as_str()) selected[query.sort() == s] { (s.as_str()) }
                    }
                }
            }
            label { "Order"
                select name="dir" {
                    option value="" selected[query.dir.is_empty()] { "default" }
                    option value="asc" selected[query.dir == "asc"] { "ascending" }
                    option value="desc" selected[query.dir == "desc"] { "descending" }
                }
            }
            button type="submit" { "Search" }
            @if op.has(Role::Provisioner) { a.button.secondary href="/tokens/new" { "Capture a token" } }
        }
        @if op.has(Role::Provisioner) { (batch_uploads()) }
        @if found.tokens.is_empty() {
            p.muted { "No token matches." }
        } @else {
            form.stack #bulk method="post" action="/tokens/bulk" {
            div.table-wrap role="region" aria-label="Tokens" tabindex="0" { table {
                thead { tr {
                    (sort_header(&query, TokenSort::Serial, "Serial", ""))
                    (sort_header(&query, TokenSort::Owner, "Owner", ""))
                    (sort_header(&query, TokenSort::State, "State", ""))
                    th.hide-narrow scope="col" { "Policy" }
                    (sort_header(&query, TokenSort::Deadline, "Deadline", "hide-narrow"))
                    (sort_header(&query, TokenSort::Captured, "Captured", "hide-narrow"))
                    th.hide-narrow scope="col" { "Verified" }
                    th.hide-narrow scope="col" { "Shipped" }
                    @if bulk { th scope="col" { label.pick { input type="checkbox" data-select-all; span.visually-hidden { "Select every token on this page" } } } }
                } }
                tbody { @for t in &found.tokens {
                    tr {
                        td { a href={ "/tokens/" (t.serial) } { (t.serial) } }
                        td { (t.owner.as_deref().unwrap_or("unassigned")) }
                        td { (state_badge(t.state)) @if let Some(r) = &t.purge_reason { " " span.muted { (r) } } }
                        td.hide-narrow { (t.policy) }
                        td.hide-narrow { @if t.state == TokenState::Escrowed { (when(t.retention_deadline)) } }
                        td.hide-narrow { (when(t.captured_at)) }
                        td.hide-narrow { @if let Some(at) = t.verified_at { span.verified { "yes" } span.visually-hidden { ", " (when(at)) } } @else { span.muted { "no" } } }
                        td.hide-narrow { @if let Some(at) = t.shipped_at { (when(at)) @if let Some(e) = &t.expected { ", expected " (e) } } }
                        @if bulk { td { label.pick { input type="checkbox" name="serials" value=(t.serial); span.visually-hidden { "Select " (t.serial) } } } }
                    }
                } }
            } }
            @if bulk { (bulk_actions(&op, &query, state_filter.as_deref(), policy_filter.as_deref(), found.tokens.len())) }
            }
            (pager(
                found.has_previous.then(|| query.href(&[("before", found.tokens.first().map(|t| t.serial.as_str())), ("after", None)])),
                found.has_next.then(|| query.href(&[("after", found.tokens.last().map(|t| t.serial.as_str())), ("before", None)])),
                "Token pages",
            ))
        }
    };
    Ok(page(&op.ctx, "Tokens", body))
}

/// The list's bulk actions on the ticked tokens or on all matching the filter, and the CSV
/// uploads (verify `serial,code` rows; ship a file of serials).
fn bulk_actions(
    op: &PageOperator,
    query: &ListQuery,
    state_filter: Option<&str>,
    policy_filter: Option<&str>,
    shown: usize,
) -> Markup {
    let provisioner = op.has(Role::Provisioner);
    html! {
        fieldset.bulk {
            legend { "Act on several tokens" }
            input type="hidden" name="q" value=(query.q.trim());
            input type="hidden" name="state" value=(state_filter.unwrap_or(""));
            input type="hidden" name="policy" value=(policy_filter.unwrap_or(""));
            input type="hidden" name="post" value=(query.post);
            label.check { input type="checkbox" name="all" value="true"; span { "All tokens matching this search and filter, not only the " (shown) " ticked on this page" } }
            label { "Action"
                select name="action" {
                    @if provisioner { option value="ship" { "Record a shipment" } }
                    option value="slips" { "Print delivery slips" }
                    @if provisioner { option value="cancel" { "Cancel (destroys the seeds)" } }
                }
            }
            details {
                summary { "Shipment details, slip paper, cancel reason" }
                div.stack {
                    @if provisioner { (super::shipping::shipment_fields()) }
                    (super::shipping::paper_field())
                    @if provisioner { label { "Reason for a cancellation (recorded in the audit trail)" input type="text" name="reason" maxlength="500"; } }
                }
            }
            button type="submit" { "Apply to the selection" }
            p.hint { "Each token is changed on its own, with its own audit event; a summary lists what succeeded and what did not." }
        }
    }
}

/// The CSV uploads of the token list: a provisioner's verify and ship batches.
fn batch_uploads() -> Markup {
    html! {
        details.card {
            summary { "Verify or ship a batch from a CSV file" }
            form.stack method="post" action="/tokens/batch" enctype="multipart/form-data" {
                input type="hidden" name="action" value="verify";
                label { "Codes to verify: one " code { "serial,code" } " per line" input type="file" name="file" accept=".csv,text/csv,text/plain" required; }
                button type="submit" { "Verify these tokens" }
            }
            form.stack method="post" action="/tokens/batch" enctype="multipart/form-data" {
                input type="hidden" name="action" value="ship";
                label { "Serials shipped together: one per line" input type="file" name="file" accept=".csv,text/csv,text/plain" required; }
                (super::shipping::shipment_fields())
                button type="submit" { "Record these shipments" }
            }
        }
    }
}

pub async fn detail(
    State(state): State<AppState>,
    op: PageOperator,
    Path(serial): Path<String>,
) -> Result<Markup, PageError> {
    let token = tokens::get(&state.store, &serial)
        .await
        .map_err(|e| op.fail(e))?;
    let timeline = crate::store::audit::for_target(&state.store, &token.target())
        .await
        .map_err(|e| op.fail(e))?;
    let escrowed = token.state == TokenState::Escrowed;
    let body = html! {
        h1 { "Token " span.mono { (token.serial) } }
        div.card {
            dl.facts {
                dt { "State" } dd { (state_badge(token.state)) @if let Some(r) = &token.purge_reason { " (" (r) ")" } }
                dt { "Owner" } dd { (token.owner.as_deref().unwrap_or("unassigned — assign before a code can be revealed")) }
                @if let Some(name) = &token.display_name { dt { "Name" } dd { (name) } }
                dt { "Device" } dd { (token.manufacturer.as_deref().unwrap_or("—")) " " (token.model.as_deref().unwrap_or("")) }
                dt { "Codes" } dd { (token.algorithm.as_str()) ", " (token.digits) " digits, every " (token.period) " s" @if token.drift_steps != 0 { ", drift " (token.drift_steps) " steps" } }
                dt { "Policy" } dd { a href="/policies" { (token.policy) } }
                dt { "Captured" } dd { (when(token.captured_at)) " by " (token.captured_by) }
                @if escrowed { dt { "Seed destroyed by" } dd { (when(token.retention_deadline)) " at the latest (retention)" } }
                @if let Some(at) = token.purged_at { dt { "Seed destroyed" } dd { (when(at)) } }
                dt { "Verified against the device" } dd { (verified_text(&token)) }
                @if let Some(at) = token.shipped_at {
                    dt { "Shipped" }
                    dd {
                        (when(at))
                        @if let Some(c) = &token.carrier { " with " (c) }
                        @if let Some(t) = &token.tracking { ", tracking " span.mono { (t) } }
                        @if let Some(e) = &token.expected { ", expected " (e) @if escrowed && late(&state, e) { " " strong { "(late)" } } }
                    }
                }
            }
        }
        @if token.state == TokenState::Programming && op.has(Role::Provisioner) {
            div.card {
                h2 { "Being programmed" }
                p { "seedvault generated this seed and showed it once. Confirm a code from the programmed device to escrow the token, or abandon it." }
                a.button href={ "/tokens/" (token.serial) "/programming" } { "Confirm or abandon" }
            }
        }
        @if escrowed {
            div.actions {
                @if op.has(Role::Helpdesk) && token.owner.is_some() { a.button href={ "/tokens/" (token.serial) "/reveal" } { "Reveal a code for the caller" } }
            }
            @if op.has(Role::Helpdesk) {
                div.card {
                    h2 { "Confirm delivery" }
                    p.muted { "Ask the user to read the code shown on the physical token. When it matches, the seed is destroyed for good." }
                    form.inline method="post" action={ "/tokens/" (token.serial) "/delivery" } {
                        label { "Code on the token" input type="text" name="code" inputmode="numeric" autocomplete="off" pattern="[0-9 ]{6,9}" required; }
                        button type="submit" { "Confirm and destroy the seed" }
                    }
                    details {
                        summary { "The user cannot read a code" }
                        form.inline method="post" action={ "/tokens/" (token.serial) "/delivery" } {
                            input type="hidden" name="unverified" value="true";
                            label { "Reason (recorded in the audit trail)" input type="text" name="reason" required; }
                            button.secondary type="submit" { "Confirm without a code" }
                        }
                    }
                }
            }
            @if op.has(Role::Provisioner) {
                div.card {
                    h2 { "Verify against the device" }
                    p.muted { "Before the token ships: type the code it shows now. The seed is checked against it (±15 steps), the clock drift is recorded for later codes, and the token stays escrowed." }
                    form.inline method="post" action={ "/tokens/" (token.serial) "/verify" } {
                        label { "Code on the token" input type="text" name="code" inputmode="numeric" autocomplete="off" pattern="[0-9 ]{6,9}" required; }
                        button type="submit" { "Verify the seed" }
                    }
                }
                div.card {
                    h2 { "Record the shipment" }
                    form.inline method="post" action={ "/tokens/" (token.serial) "/shipment" } {
                        (super::shipping::shipment_fields())
                        button type="submit" { @if token.shipped_at.is_some() { "Replace the shipment" } @else { "Record the shipment" } }
                    }
                }
            }
            @if (op.has(Role::Provisioner) || op.has(Role::Helpdesk)) && token.owner.is_some() {
                div.card {
                    h2 { "Delivery slip" }
                    p.muted { "A page to print and put in the parcel: the owner's name, the serial, what to do on arrival, and a QR code of a new one-time delivery link (an earlier link stops working)." }
                    form.inline method="post" action="/tokens/bulk" {
                        input type="hidden" name="action" value="slips";
                        input type="hidden" name="serials" value=(token.serial);
                        (super::shipping::paper_field())
                        button.secondary type="submit" { "Make the delivery slip" }
                    }
                }
                div.card {
                    h2 { "Let the owner confirm delivery" }
                    p.muted { "Makes a one-time link for the owner: they open it, type the code their token shows, and the seed is destroyed as when you confirm it here. A new link replaces the previous one." }
                    form.inline method="post" action={ "/tokens/" (token.serial) "/delivery-link" } {
                        button.secondary type="submit" { "Make a delivery link" }
                    }
                }
            }
            @if op.has(Role::Provisioner) {
                div.card {
                    h2 { "Cancel" }
                    form.inline method="post" action={ "/tokens/" (token.serial) "/cancel" } data-confirm="Cancel this token and destroy its seed?" {
                        label { "Reason" input type="text" name="reason" placeholder="lost in transit, wrong user…" required; }
                        button.danger type="submit" { "Cancel and destroy the seed" }
                    }
                }
            }
        }
        h2 { "Audit timeline" }
        div.table-wrap role="region" aria-label="Audit timeline" tabindex="0" { table {
            thead { tr { th { "#" } th { "When" } th { "Who" } th { "What" } th.hide-narrow { "Details" } } }
            tbody { @for e in &timeline {
                tr {
                    td.mono { (e.seq) }
                    td { (e.time) }
                    td { (e.actor) }
                    td class={ "outcome-" (e.outcome) } { (e.action) @if e.outcome != "success" { " (" (e.outcome) ")" } }
                    td.hide-narrow.mono { (e.details) }
                }
            } }
        } }
    };
    Ok(page(&op.ctx, &format!("Token {}", token.serial), body))
}

/// What a QR image held, as shown before capture: never the secret.
fn qr_summary(found: Option<&tokens::QrPreview>) -> Markup {
    html! {
        section.qr-summary data-qr-summary aria-live="polite" hidden[found.is_none()] {
            h3 { "Found in the QR code" }
            dl.facts {
                dt { "Issuer" } dd data-qr-issuer { (found.and_then(|f| f.issuer.as_deref()).unwrap_or("—")) }
                dt { "Account" } dd data-qr-account { (found.and_then(|f| f.account.as_deref()).unwrap_or("—")) }
                dt { "Digits" } dd data-qr-digits { (found.map(|f| f.digits.to_string()).unwrap_or_default()) }
                dt { "Period" } dd data-qr-period { (found.map(|f| format!("{} s", f.period)).unwrap_or_default()) }
                dt { "Algorithm" } dd data-qr-algorithm { (found.map(|f| f.algorithm.as_str()).unwrap_or_default()) }
            }
            @if let Some(found) = found {
                @for w in &found.warnings { p.hint { "Warning: " (w) } }
                p.hint { "The image is not kept: choose or paste it again, then press Seal and escrow." }
            }
        }
    }
}

fn qr_form(state: &AppState, values: &QrFields, found: Option<&tokens::QrPreview>) -> Markup {
    html! {
        form.stack.card method="post" action="/tokens/new/qr" enctype="multipart/form-data" autocomplete="off" data-qr-capture {
            h2 { "From a QR code" }
            p.hint { "Paste a screenshot of the otpauth QR code (Ctrl+V or ⌘V) anywhere on this page, drop an image here, or choose a file. The image is read on the server, never stored, and what it holds is shown before anything is sealed." }
            div.dropzone data-qr-drop {
                label { "QR image (PNG or JPEG)"
                    input type="file" name="qr_image" accept="image/png,image/jpeg" required; }
            }
            p.error-box data-error hidden tabindex="-1" role="alert" {}
            (qr_summary(found))
            label { "Owner (UPN)" span.hint { "leave empty to assign later" }
                input type="text" name="owner" value=(values.owner) placeholder="user@example.org"; }
            label { "Serial" span.hint { "as printed on the token" } input type="text" name="serial" value=(values.serial) required; }
            label { "Policy"
                select name="policy" {
                    @for p in state.policies.all() { option value=(p.name) selected[values.policy == p.name || (values.policy.is_empty() && p.default)] { (p.name) " — " (p.description) } }
                }
            }
            div.actions {
                button.secondary type="submit" name="step" value="preview" formnovalidate { "Preview (nothing is stored)" }
                button type="submit" name="step" value="capture" data-qr-confirm { "Seal and escrow" }
            }
        }
    }
}

/// The QR form's text fields, kept across a preview.
#[derive(Default)]
pub struct QrFields {
    owner: String,
    serial: String,
    policy: String,
}

fn capture_page(
    state: &AppState,
    error: Option<&str>,
    values: &CaptureForm,
    qr: &QrFields,
    found: Option<&tokens::QrPreview>,
) -> Markup {
    html! {
        h1 { "Capture a token" }
        p.lead { "The seed is sealed at once and never shown again — not here, not in any export. Only one-time codes leave the vault." }
        @if let Some(error) = error { p.error-box role="alert" { (error) } }
        (capture_form(state, values))
        (qr_form(state, qr, found))
        p { "No seed yet? " a href="/tokens/generate" { "Generate one" } " for a programmable token or an authenticator app." }
    }
}

fn capture_form(state: &AppState, values: &CaptureForm) -> Markup {
    html! {
        form.stack.card method="post" action="/tokens/new" autocomplete="off" {
            h2 { "Typed or pasted" }
            label { "Owner (UPN)" span.hint { "leave empty to assign later; no code can be revealed until the token is assigned" }
                input type="text" name="owner" value=(values.owner) placeholder="user@example.org"; }
            label { "Serial" span.hint { "as printed on the token" } input type="text" name="serial" value=(values.serial) required; }
            label { "Secret" span.hint { "base32, hex, or an otpauth:// URI (from the QR code)" }
                textarea name="secret" required spellcheck="false" autocapitalize="none" {} }
            label { "Secret format"
                select name="format" {
                    @for (v, l) in [("auto", "detect"), ("base32", "base32"), ("hex", "hex"), ("otpauth", "otpauth:// URI")] {
                        option value=(v) selected[values.format == v] { (l) }
                    }
                }
            }
            div.grid {
                label { "Algorithm" select name="algorithm" { @for a in ["SHA1", "SHA256", "SHA512"] { option selected[values.algorithm == a] { (a) } } } }
                label { "Digits" select name="digits" { @for d in ["6", "8"] { option selected[values.digits == d] { (d) } } } }
                label { "Period (s)" input type="text" name="period" inputmode="numeric" value=(values.period); }
            }
            div.grid {
                label { "Manufacturer" input type="text" name="manufacturer" value=(values.manufacturer); }
                label { "Model" input type="text" name="model" value=(values.model); }
            }
            label { "Policy"
                select name="policy" {
                    @for p in state.policies.all() { option value=(p.name) selected[values.policy == p.name || (values.policy.is_empty() && p.default)] { (p.name) " — " (p.description) } }
                }
            }
            button type="submit" { "Seal and escrow" }
        }
    }
}

#[derive(Deserialize, Default)]
pub struct CaptureForm {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    secret: Zeroizing<String>,
    #[serde(default)]
    format: String,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    digits: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    manufacturer: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    policy: String,
}

impl CaptureForm {
    fn defaults() -> Self {
        Self {
            format: "auto".into(),
            algorithm: "SHA1".into(),
            digits: "6".into(),
            period: "30".into(),
            ..Default::default()
        }
    }
}

pub async fn new_form(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
) -> Result<Markup, PageError> {
    let defaults = CaptureForm::defaults();
    Ok(page(
        &op.ctx,
        "Capture a token",
        capture_page(&state, None, &defaults, &QrFields::default(), None),
    ))
}

/// The capture page's QR form: `step=preview` shows what the image holds (nothing stored);
/// `step=capture` reads it again and escrows it.
pub async fn create_from_qr(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    upload: Result<Upload, AppError>,
) -> Result<Response, PageError> {
    let mut upload = upload.map_err(|e| op.fail(e))?;
    let fields = QrFields {
        owner: upload.field("owner").unwrap_or_default().to_owned(),
        serial: upload.field("serial").unwrap_or_default().to_owned(),
        policy: upload.field("policy").unwrap_or_default().to_owned(),
    };
    let preview_only = upload.field("step") == Some("preview");
    let image = upload.qr_image.take();
    let result: Result<Response, AppError> = async {
        let source = SecretInput::new(None, image)?;
        if preview_only {
            let SecretInput::QrImage(image) = source else {
                return Err(AppError::Internal("a QR source without an image".into()));
            };
            let uri = tokens::secret_from_qr(image).await?;
            let found = tokens::preview_otpauth(&uri)?;
            drop(uri);
            let body = capture_page(&state, None, &CaptureForm::defaults(), &fields, Some(&found));
            return Ok(page(&op.ctx, "Capture a token", body).into_response());
        }
        let (secret, format) = source.read().await?;
        let found = tokens::preview_otpauth(&secret)?;
        let input = tokens::CaptureRequest {
            owner: Some(fields.owner.clone()),
            serial: fields.serial.clone(),
            secret,
            format,
            display_name: None,
            manufacturer: None,
            model: None,
            algorithm: None,
            digits: None,
            period: None,
            policy: Some(fields.policy.clone()),
        };
        let captured = tokens::capture(&state.env(), &op.current.operator.actor(), input).await?;
        let mut text = format!(
            "Token {} escrowed from the QR code ({}, {}; {} digits every {} s); its seed is sealed.",
            captured.serial,
            found.issuer.as_deref().unwrap_or("no issuer"),
            found.account.as_deref().unwrap_or("no account"),
            found.digits,
            found.period
        );
        for w in &captured.warnings {
            text.push_str(&format!(" Warning: {w}."));
        }
        set_flash(&op.current.session, true, text).await;
        Ok(Redirect::to(&format!("/tokens/{}", captured.serial)).into_response())
    }
    .await;
    match result {
        Ok(response) => Ok(response),
        Err(error) if error.status().is_server_error() => Err(op.fail(error)),
        Err(error) => {
            let status = error.status();
            let body = capture_page(
                &state,
                Some(&error.to_string()),
                &CaptureForm::defaults(),
                &fields,
                None,
            );
            Ok((status, page(&op.ctx, "Capture a token", body)).into_response())
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    axum_extra::extract::Form(mut form): axum_extra::extract::Form<CaptureForm>,
) -> Result<Response, PageError> {
    let secret = std::mem::take(&mut form.secret);
    let text = |v: &str| Some(v.to_owned());
    let result = match (
        tokens::number_field("digits", &form.digits),
        tokens::number_field("period", &form.period),
    ) {
        (Ok(digits), Ok(period)) => {
            let input = tokens::CaptureRequest {
                owner: text(&form.owner),
                serial: form.serial.clone(),
                secret,
                format: text(&form.format),
                display_name: None,
                manufacturer: text(&form.manufacturer),
                model: text(&form.model),
                algorithm: text(&form.algorithm),
                digits,
                period,
                policy: text(&form.policy),
            };
            tokens::capture(&state.env(), &op.current.operator.actor(), input)
                .await
                .map_err(AppError::from)
        }
        (Err(e), _) | (_, Err(e)) => Err(AppError::from(e)),
    };
    match result {
        Ok(captured) => {
            let mut text = format!("Token {} escrowed; its seed is sealed.", captured.serial);
            for w in &captured.warnings {
                text.push_str(&format!(" Warning: {w}."));
            }
            set_flash(&op.current.session, true, text).await;
            Ok(Redirect::to(&format!("/tokens/{}", captured.serial)).into_response())
        }
        Err(error) if error.status().is_server_error() => Err(op.fail(error)),
        Err(error) => {
            let status = error.status();
            let markup = page(
                &op.ctx,
                "Capture a token",
                capture_page(
                    &state,
                    Some(&error.to_string()),
                    &form,
                    &QrFields::default(),
                    None,
                ),
            );
            Ok((status, markup).into_response())
        }
    }
}

pub async fn reveal(
    State(state): State<AppState>,
    op: PageAuthorized<HelpdeskOnly>,
    Path(serial): Path<String>,
) -> Result<Response, PageError> {
    let token = tokens::get(&state.store, &serial)
        .await
        .map_err(|e| op.fail(e))?;
    let policy = state
        .policies
        .get(&token.policy)
        .ok_or_else(|| op.fail(tokens::TokenError::UnknownPolicy(token.policy.clone())))?;
    let of_record = match &token.owner {
        Some(owner) => Some(
            directory::lookup(&state.store, owner)
                .await
                .map_err(|e| op.fail(AppError::from(e)))?,
        ),
        None => None,
    };
    let body = html! {
        h1 { "Reveal a code for " (token.owner.as_deref().unwrap_or("(unassigned)")) }
        p.lead { "Token " span.mono { (token.serial) } " · policy " strong { (policy.name) } " · " (policy.description) }
        p { "Seed checked against the physical token: " (verified_text(&token)) "." }
        @if policy.require_verified && token.verified_at.is_none() && token.state == TokenState::Escrowed {
            p.warning role="note" { "Policy " (policy.name) " reveals no code for a token that was not verified against its device. A provisioner verifies it with a code read from the token (its page, or " code { "seedvault token verify" } "); if it has already left, confirm its delivery with the owner instead, or cancel it and issue a new one." }
        }
        @if token.state != TokenState::Escrowed {
            p.error-box role="alert" { "This token is " (token.state.as_str()) ": its seed is gone and no code can be revealed." }
        } @else {
            @if let Some(record) = &of_record { (record_panel(record)) }
            @if policy.approval.second_operator {
                p.hint { "Four-eyes policy: when you submit, another operator (" (policy.approval.approvers.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")) ", never you) must approve with their passkey. This page follows the request; once it is approved, you sign with your own passkey to see the code." }
            }
            form.stack data-webauthn="reveal" data-serial=(token.serial) {
                fieldset.checklist {
                    legend { "Verify the caller — tick only what you did" }
                    p.hint { "Date of birth, employee ID or the manager's name are not proof: attackers have them. At least " (policy.min_checks) " checks." }
                    @for check in &policy.checks {
                        label.check {
                            input type="checkbox" name="checks" value=(check.id);
                            span.text { (check.text) @if check.required { span.required { "required" } } @if check.source.is_some() { " " span.hint { "(uses the directory of record)" } } }
                            @if let Some(g) = &check.guidance { span.guidance { (g) } }
                        }
                    }
                }
                label { "Ticket" @if policy.ticket_required { span.required { "required" } }
                    input type="text" name="ticket" maxlength="64" autocomplete="off" required[policy.ticket_required]; }
                label { "Note " span.hint { "(optional, recorded in the audit trail)" } textarea name="note" maxlength="500" {} }
                p.error-box data-error hidden tabindex="-1" role="alert" {}
                button type="submit" { (if policy.approval.second_operator { "Ask for approval" } else { "Sign with my passkey and show the code" }) }
            }
            @if policy.approval.second_operator {
                section.approval-status data-approval-panel hidden aria-live="polite" {
                    h2 { "Approval" }
                    p data-approval-state {}
                    p.error-box data-approval-error hidden tabindex="-1" role="alert" {}
                    button type="button" data-approval-reveal hidden { "Sign with my passkey and show the code" }
                }
            }
            section.code-panel data-code-panel hidden aria-labelledby="code-heading" {
                p.muted id="code-heading" { "Read this code to the caller:" }
                p.visually-hidden data-announce aria-live="polite" {}
                div.code data-code {}
                progress data-countdown max=(token.period) value="0" aria-label="Seconds this code stays valid" {}
                p data-seconds-left aria-hidden="true" {}
                p.next data-next hidden { "Next code: " span data-next-code {} }
                div.actions { button.secondary type="button" data-copy { "Copy code" } span.muted data-copied hidden { "copied" } }
                a href={ "/tokens/" (token.serial) } { "Back to the token" }
            }
        }
    };
    let mut response = page(&op.ctx, "Reveal a code", body).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The owner's numbers and manager of record, beside the checklist: the operator calls these,
/// never a number the caller gives.
fn record_panel(record: &OfRecord) -> Markup {
    html! {
        section.record aria-labelledby="record-title" data-directory-record {
            h2 #record-title { "Directory of record" }
            @if record.found {
                dl.facts {
                    @if let Some(name) = &record.display_name { dt { "Name" } dd { (name) } }
                    dt { "Phone of record" }
                    dd {
                        @if record.phones.is_empty() { "none in the directory" }
                        @for phone in &record.phones { span.mono.phone { (phone) } " " }
                    }
                    dt { "Manager" }
                    dd { (record.manager.as_deref().unwrap_or("none in the directory")) }
                    dt { "Manager's phone" }
                    dd.mono { (record.manager_phone.as_deref().unwrap_or("none in the directory")) }
                    @if let Some(department) = &record.department { dt { "Department" } dd { (department) } }
                    dt { "Synced" }
                    dd { (record.synced_at.as_deref().unwrap_or("")) " from " (record.source.as_deref().unwrap_or("")) }
                }
            } @else {
                p.warning role="note" { (record.message) }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct DeliveryForm {
    #[serde(default)]
    code: Option<Zeroizing<String>>,
    #[serde(default)]
    unverified: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

pub async fn deliver(
    State(state): State<AppState>,
    op: PageAuthorized<HelpdeskOnly>,
    Path(serial): Path<String>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<DeliveryForm>,
) -> Result<Redirect, PageError> {
    let unverified = form
        .unverified
        .as_deref()
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("false"));
    let request = match DeliveryRequest::new(form.code, unverified, form.reason.as_deref()) {
        Ok(request) => request,
        Err(refusal) => {
            op.flash_refusal(refusal).await?;
            return Ok(Redirect::to(&format!("/tokens/{serial}")));
        }
    };
    let delivered =
        lifecycle::deliver(&state.env(), &op.current.operator.actor(), &serial, request).await;
    op.flash_outcome(delivered, |purged| {
        let how = match purged.drift_steps {
            Some(0) => "the code matched".to_owned(),
            Some(d) => format!("the code matched with a drift of {d} steps"),
            None => "confirmed without a code".to_owned(),
        };
        format!("Delivered: {how}. The seed is destroyed; no code can be revealed any more.")
    })
    .await?;
    Ok(Redirect::to(&format!("/tokens/{serial}")))
}

#[derive(Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    reason: String,
}

pub async fn cancel(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<CancelForm>,
) -> Result<Redirect, PageError> {
    let cancelled = match CancelRequest::new(&form.reason) {
        Ok(request) => {
            lifecycle::cancel(&state.env(), &op.current.operator.actor(), &serial, request).await
        }
        Err(refusal) => Err(refusal),
    };
    op.flash_outcome(cancelled, |_| "Cancelled. The seed is destroyed.".into())
        .await?;
    Ok(Redirect::to(&format!("/tokens/{serial}")))
}

/// Makes a self-service delivery link and shows it once, on a page of its own (never in a
/// flash message, which would keep it in the session table).
pub async fn delivery_link(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOrHelpdesk>,
    Path(serial): Path<String>,
) -> Result<Response, PageError> {
    let emailing = state.config.smtp_host.is_some();
    let created = tokens::delivery_link::create(
        &state.env(),
        &op.current.operator.actor(),
        &serial,
        &state.config.origin_header(),
        emailing,
    )
    .await;
    let created = match created {
        Ok(created) => created,
        Err(refusal) => {
            op.flash_refusal(refusal).await?;
            return Ok(Redirect::to(&format!("/tokens/{serial}")).into_response());
        }
    };
    let body = html! {
        h1 { "Delivery link for " span.mono { (created.serial) } }
        div.card {
            @if created.emailed {
                p { "The link is on its way to the owner by email. It is shown here once, in case they need it read out or sent another way:" }
            } @else {
                p { "No mail server is configured, so give this link to the owner yourself (it is shown only now):" }
            }
            label for="delivery-link" { "One-time delivery link" }
            input.mono #delivery-link type="text" readonly value=(created.url.as_str());
            p.muted { "It works once, until " (when(created.expires_at)) ". It lets the owner confirm delivery with the code their token shows; it never shows a code." }
            div.actions { a.button href={ "/tokens/" (created.serial) } { "Back to the token" } }
        }
    };
    let mut response = page(&op.ctx, "Delivery link", body).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
