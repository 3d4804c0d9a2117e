//! Shipping pages (issue #23): verify a token against its device, record its shipment, print
//! delivery slips, and the token list's bulk actions (selected tokens or all matching the
//! filter; CSV uploads to verify or ship a batch). Each token is its own transaction and audit
//! event; a batch ends on a summary of what succeeded and what did not.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::layout::when;
use super::{page, PageAuthorized, PageError, PageOperator};
use crate::operators::Role;
use crate::store::token_pages::PageRequest;
use crate::tokens::lifecycle::LifecycleError;
use crate::tokens::shipping::{self, BatchReport, ShipmentRequest, Slip, MAX_BATCH};
use crate::tokens::{self, TokenState};
use crate::web::extract::Upload;
use crate::web::session::ProvisionerOnly;
use crate::web::{AppError, AppState};

#[derive(Deserialize)]
pub struct VerifyForm {
    #[serde(default)]
    code: Zeroizing<String>,
}

/// The token page's "Verify against the device" form.
pub async fn verify(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<VerifyForm>,
) -> Result<Redirect, PageError> {
    let verified = shipping::verify(
        &state.env(),
        &op.current.operator.actor(),
        &serial,
        form.code,
    )
    .await;
    op.flash_outcome(verified, |v| match v.drift_steps {
        0 => "Verified: the code matched the escrowed seed. The token stays escrowed.".into(),
        d => format!(
            "Verified: the code matched with a drift of {d} steps, now applied to every code revealed for this token. The token stays escrowed."
        ),
    })
    .await?;
    Ok(Redirect::to(&format!("/tokens/{serial}")))
}

#[derive(Deserialize, Default)]
pub struct ShipmentForm {
    #[serde(default)]
    carrier: String,
    #[serde(default)]
    tracking: String,
    #[serde(default)]
    expected: String,
}

impl ShipmentForm {
    fn read(&self, state: &AppState) -> Result<ShipmentRequest, LifecycleError> {
        ShipmentRequest::new(
            Some(&self.carrier),
            Some(&self.tracking),
            Some(&self.expected),
            state.clock.now().date(),
        )
    }
}

/// The token page's "Record the shipment" form.
pub async fn ship(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<ShipmentForm>,
) -> Result<Redirect, PageError> {
    let shipped = match form.read(&state) {
        Ok(request) => {
            shipping::ship(
                &state.env(),
                &op.current.operator.actor(),
                &serial,
                &request,
            )
            .await
        }
        Err(refusal) => Err(refusal),
    };
    op.flash_outcome(shipped, |s| {
        let mut text = format!("Shipment of {} recorded", s.serial);
        if let Some(expected) = &s.expected {
            text.push_str(&format!(", expected {expected}"));
        }
        text.push('.');
        text
    })
    .await?;
    Ok(Redirect::to(&format!("/tokens/{serial}")))
}

/// The fields of the shipment form, for the token page and the list's bulk form.
pub fn shipment_fields() -> Markup {
    html! {
        label { "Carrier " span.hint { "(optional)" } input type="text" name="carrier" maxlength="128" autocomplete="off"; }
        label { "Tracking reference " span.hint { "(optional)" } input type="text" name="tracking" maxlength="128" autocomplete="off"; }
        label { "Expected delivery " span.hint { "(optional, today or later)" } input type="date" name="expected"; }
    }
}

/// The paper choice of a slip form.
pub fn paper_field() -> Markup {
    html! {
        label { "Paper"
            select name="paper" {
                option value="a4" { "A4" }
                option value="letter" { "US Letter" }
            }
        }
    }
}

/// The list's bulk form: an action for the selected tokens, or for all matching the filter.
#[derive(Deserialize, Default)]
pub struct BulkForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    serials: Vec<String>,
    /// `true`: every token matching `q`/`state`/`policy`/`post`, not only the ticked ones.
    #[serde(default)]
    all: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    policy: String,
    /// The list's "In the post" filter (`super::tokens::in_post_filter`).
    #[serde(default)]
    post: String,
    #[serde(default)]
    carrier: String,
    #[serde(default)]
    tracking: String,
    #[serde(default)]
    expected: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    paper: String,
}

impl BulkForm {
    /// The serials the action applies to: the ticked ones, or all matching the filter.
    async fn serials(&self, state: &AppState) -> Result<Vec<String>, AppError> {
        if self.all != "true" {
            let mut serials: Vec<String> = self
                .serials
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            serials.dedup();
            if serials.is_empty() {
                return Err(AppError::Unprocessable(
                    "serials: tick the tokens to act on, or choose all tokens matching the filter"
                        .into(),
                ));
            }
            return Ok(serials);
        }
        let request = PageRequest {
            query: Some(self.q.trim().to_owned()).filter(|q| !q.is_empty()),
            state: TokenState::parse(&self.state).map(|s| s.as_str().to_owned()),
            policy: Some(self.policy.trim().to_owned()).filter(|p| !p.is_empty()),
            in_post: super::tokens::in_post_filter(state, &self.post),
            limit: MAX_BATCH as i64 + 1,
            ..Default::default()
        };
        let found = tokens::list_page(&state.store, &request).await?;
        if found.tokens.len() > MAX_BATCH {
            return Err(AppError::Unprocessable(format!(
                "all: more than {MAX_BATCH} tokens match the filter — narrow it (state, policy, in the post, search) and act in parts"
            )));
        }
        Ok(found.tokens.into_iter().map(|t| t.serial).collect())
    }
}

/// `POST /tokens/bulk`: ship, cancel or print slips for the selection. Shipping and cancelling
/// are a provisioner's; slips (which make delivery links) a provisioner's or helpdesk's.
pub async fn bulk(
    State(state): State<AppState>,
    op: PageOperator,
    axum_extra::extract::Form(form): axum_extra::extract::Form<BulkForm>,
) -> Result<Response, PageError> {
    let roles: &[Role] = match form.action.as_str() {
        "slips" => &[Role::Provisioner, Role::Helpdesk],
        _ => &[Role::Provisioner],
    };
    op.current.require_any(roles).map_err(|e| op.fail(e))?;
    let outcome = bulk_run(&state, &op, &form).await;
    match outcome {
        Ok(response) => Ok(response),
        Err(error) if error.status().is_server_error() => Err(op.fail(error)),
        Err(error) => {
            op.flash_refusal(error).await?;
            Ok(Redirect::to("/tokens").into_response())
        }
    }
}

async fn bulk_run(
    state: &AppState,
    op: &PageOperator,
    form: &BulkForm,
) -> Result<Response, AppError> {
    let actor = op.current.operator.actor();
    let env = state.env();
    match form.action.as_str() {
        "ship" => {
            let request = ShipmentForm {
                carrier: form.carrier.clone(),
                tracking: form.tracking.clone(),
                expected: form.expected.clone(),
            }
            .read(state)?;
            let serials = form.serials(state).await?;
            let rows: Vec<shipping::CsvRow> = serials
                .into_iter()
                .enumerate()
                .map(|(i, s)| shipping::CsvRow {
                    line: i + 1,
                    cells: vec![s],
                })
                .collect();
            let report = shipping::ship_batch(&env, &actor, &rows, &request).await?;
            Ok(report_page(op, "Shipments recorded", "token", &report).into_response())
        }
        "cancel" => {
            crate::tokens::lifecycle::CancelRequest::new(&form.reason)?;
            let serials = form.serials(state).await?;
            let report = shipping::cancel_batch(&env, &actor, &serials, &form.reason).await?;
            Ok(report_page(op, "Tokens cancelled", "token", &report).into_response())
        }
        "slips" => {
            let paper = Paper::parse(&form.paper);
            let serials = form.serials(state).await?;
            let (slips, report) =
                shipping::slips(&env, &actor, &serials, &state.config.origin_header()).await?;
            slips_page(op, paper, &slips, &report)
        }
        _ => Err(AppError::Unprocessable(
            "action: choose ship, cancel or print slips".into(),
        )),
    }
}

/// `POST /tokens/batch`: a CSV upload — `serial,code` rows to verify, or serials to ship.
pub async fn batch(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    upload: Result<Upload, AppError>,
) -> Result<Response, PageError> {
    let outcome: Result<Response, AppError> = async {
        let upload = upload?;
        let bytes = upload
            .file
            .as_deref()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if bytes.is_empty() {
            return Err(AppError::Unprocessable(
                "file: choose a CSV file with one serial per line".into(),
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| {
            AppError::Unprocessable("file: not UTF-8 text — save the CSV as UTF-8".into())
        })?;
        let rows = shipping::read_csv(text)?;
        let env = state.env();
        let actor = op.current.operator.actor();
        match upload.field("action") {
            Some("verify") => {
                let report = shipping::verify_batch(&env, &actor, &rows).await?;
                Ok(report_page(&op, "Tokens verified", "line", &report).into_response())
            }
            Some("ship") => {
                let request = ShipmentRequest::new(
                    upload.field("carrier"),
                    upload.field("tracking"),
                    upload.field("expected"),
                    state.clock.now().date(),
                )?;
                let report = shipping::ship_batch(&env, &actor, &rows, &request).await?;
                Ok(report_page(&op, "Shipments recorded", "line", &report).into_response())
            }
            _ => Err(AppError::Unprocessable(
                "action: choose verify or ship".into(),
            )),
        }
    }
    .await;
    match outcome {
        Ok(response) => Ok(response),
        Err(error) if error.status().is_server_error() => Err(op.fail(error)),
        Err(error) => {
            op.flash_refusal(error).await?;
            Ok(Redirect::to("/tokens").into_response())
        }
    }
}

/// What a batch did, line by line.
fn report_page(op: &PageOperator, title: &str, unit: &str, report: &BatchReport) -> Markup {
    let body = html! {
        h1 { (title) }
        p.lead role="status" { (report.succeeded.len()) " succeeded, " (report.failed.len()) " did not. Each token was changed on its own; the ones that did not succeed were left as they were." }
        (report_tables(unit, report))
        div.actions { a.button href="/tokens" { "Back to the tokens" } }
    };
    page(&op.ctx, title, body)
}

fn report_tables(unit: &str, report: &BatchReport) -> Markup {
    let label = if unit == "line" { "Line" } else { "#" };
    html! {
        @if !report.failed.is_empty() {
            h2 { "Not done" }
            div.table-wrap role="region" aria-label="Not done" tabindex="0" { table {
                thead { tr { th scope="col" { (label) } th scope="col" { "Serial" } th scope="col" { "Why, and what to do" } } }
                tbody { @for line in &report.failed {
                    tr { td { (line.line) } th scope="row" { (line.serial) } td.outcome-denied { (line.message) } }
                } }
            } }
        }
        @if !report.succeeded.is_empty() {
            h2 { "Done" }
            div.table-wrap role="region" aria-label="Done" tabindex="0" { table {
                thead { tr { th scope="col" { (label) } th scope="col" { "Serial" } th scope="col" { "Result" } } }
                tbody { @for line in &report.succeeded {
                    tr { td { (line.line) } th scope="row" { a href={ "/tokens/" (line.serial) } { (line.serial) } } td { (line.message) } }
                } }
            } }
        }
    }
}

/// The paper a batch of slips is printed on (`@page` in `templates/print.css`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Paper {
    A4,
    Letter,
}

impl Paper {
    fn parse(text: &str) -> Self {
        if text.eq_ignore_ascii_case("letter") {
            Self::Letter
        } else {
            Self::A4
        }
    }

    fn class(self) -> &'static str {
        match self {
            Self::A4 => "slips paper-a4",
            Self::Letter => "slips paper-letter",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::A4 => "A4",
            Self::Letter => "US Letter",
        }
    }
}

/// The slips, two to a printed page, with the page's own report above them (not printed).
/// Each QR code holds a link made for this page only: it is not stored, so the page is
/// `no-store` and leaving it loses the links (printing again makes new ones).
fn slips_page(
    op: &PageOperator,
    paper: Paper,
    slips: &[Slip],
    report: &BatchReport,
) -> Result<Response, AppError> {
    let mut drawn = Vec::with_capacity(slips.len());
    for slip in slips {
        drawn.push(qr_markup(slip)?);
    }
    let body = html! {
        div.no-print {
            h1 { "Delivery slips" }
            p.lead role="status" { (slips.len()) " slips for " (paper.name()) " paper, two to a page. Each carries a new one-time delivery link for its owner (an earlier link for the same token no longer works); the links are on these slips only — print now." }
            @if !report.failed.is_empty() { (report_tables("token", &BatchReport { succeeded: Vec::new(), failed: report.failed.clone() })) }
            @if !slips.is_empty() {
                div.actions { button type="button" data-print { "Print the slips" } a.button.secondary href="/tokens" { "Back to the tokens" } }
            } @else {
                div.actions { a.button.secondary href="/tokens" { "Back to the tokens" } }
            }
        }
        div class=(paper.class()) {
            @for (slip, qr) in slips.iter().zip(&drawn) {
                article.slip aria-labelledby={ "slip-" (slip.serial) } data-slip=(slip.serial) {
                    div.slip-text {
                        h2 id={ "slip-" (slip.serial) } { "For " (slip.owner_name.as_deref().unwrap_or(&slip.owner)) }
                        dl.facts {
                            @if slip.owner_name.is_some() { dt { "Account" } dd { (slip.owner) } }
                            dt { "Token serial" } dd.mono { (slip.serial) }
                            @if let Some(tracking) = &slip.tracking { dt { "Parcel" } dd { (slip.carrier.as_deref().unwrap_or("")) " " (tracking) } }
                        }
                        p { (slip.purpose) }
                        h3 { "When it arrives" }
                        ol {
                            li { "Check that the serial on the back of the token is " span.mono { (slip.serial) } "." }
                            li { "Scan the QR code with your phone's camera (or type the link below into a browser)." }
                            li { "Press the token's button and type the " (slip.digits) "-digit code it shows. That confirms it reached you." }
                            li { "If the serial differs or the parcel was opened, call your helpdesk before using the token." }
                        }
                        p.link.mono { (slip.url.as_str()) }
                        p.hint { "The link works once, until " (when(slip.link_expires_at)) ". If it does not work, call your helpdesk." }
                    }
                    div.slip-qr { (PreEscaped(qr.as_str())) }
                }
            }
        }
    };
    let mut response = page(&op.ctx, "Delivery slips", body).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The slip's QR code inline (never an `<img>` a cache could keep), labelled.
fn qr_markup(slip: &Slip) -> Result<Zeroizing<String>, AppError> {
    let svg = crate::qr::svg(&slip.url)
        .map_err(|e| AppError::Internal(format!("drawing the QR code: {e}")))?;
    let start = svg.find("<svg").unwrap_or(0);
    Ok(Zeroizing::new(svg[start..].replacen(
        "<svg",
        "<svg role=\"img\" aria-label=\"QR code of your one-time delivery link\" data-qr-code",
        1,
    )))
}
