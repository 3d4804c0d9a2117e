//! Generate and show once (provisioner): the form that generates a seed, the page that shows
//! its QR code and text to the operator who generated it on the first visit only, and the
//! confirmation with a code from the programmed device.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{page, set_flash, PageAuthorized, PageError};
use crate::tokens::programming::{self, GenerateRequest, Show, ShownSeed};
use crate::tokens::{self, TokenState};
use crate::web::session::ProvisionerOnly;
use crate::web::{AppError, AppState};

#[derive(Deserialize, Default)]
pub struct GenerateForm {
    #[serde(default)]
    owner: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    algorithm: String,
    #[serde(default)]
    digits: String,
    #[serde(default)]
    period: String,
}

fn generate_form(error: Option<&str>, values: &GenerateForm) -> Markup {
    let digits = if values.digits.is_empty() {
        "6"
    } else {
        &values.digits
    };
    html! {
        h1 { "Generate a seed" }
        p.lead { "For a programmable token or an authenticator app: seedvault makes a 160-bit seed, seals it, and shows its QR code and text once, for a burner app or the authenticator to scan. Then confirm a code from the programmed device." }
        @if let Some(error) = error { p.error-box role="alert" { (error) } }
        form.stack.card method="post" action="/tokens/generate" autocomplete="off" {
            label { "Owner (UPN)" span.hint { "leave empty to assign later" }
                input type="text" name="owner" value=(values.owner) placeholder="user@example.org"; }
            label { "Serial" span.hint { "as printed on the token being programmed" } input type="text" name="serial" value=(values.serial) required; }
            div.grid {
                label { "Issuer" span.hint { "shown by the app, e.g. your organisation" } input type="text" name="issuer" value=(values.issuer); }
                label { "Account label" span.hint { "default: the owner, else the serial" } input type="text" name="label" value=(values.label); }
            }
            div.grid {
                label { "Algorithm" select name="algorithm" { @for a in ["SHA1", "SHA256", "SHA512"] { option selected[values.algorithm == a] { (a) } } } }
                label { "Digits" select name="digits" { @for d in ["6", "8"] { option selected[digits == d] { (d) } } } }
                label { "Period (s)" input type="text" name="period" inputmode="numeric" value=(if values.period.is_empty() { "30" } else { &values.period }); }
            }
            button type="submit" { "Generate and show once" }
        }
    }
}

pub async fn form(op: PageAuthorized<ProvisionerOnly>) -> Result<Markup, PageError> {
    Ok(page(
        &op.ctx,
        "Generate a seed",
        generate_form(None, &GenerateForm::default()),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<GenerateForm>,
) -> Result<Response, PageError> {
    let text = |v: &str| Some(v.to_owned());
    let result = match (
        tokens::number_field("digits", &form.digits),
        tokens::number_field("period", &form.period),
    ) {
        (Ok(digits), Ok(period)) => {
            let request = GenerateRequest {
                owner: text(&form.owner),
                serial: form.serial.clone(),
                digits,
                period,
                algorithm: text(&form.algorithm),
                issuer: text(&form.issuer),
                label: text(&form.label),
            };
            programming::generate(
                &state.env(),
                &op.current.operator.actor(),
                request,
                Show::OnFirstVisit,
            )
            .await
            .map_err(AppError::from)
        }
        (Err(e), _) | (_, Err(e)) => Err(AppError::from(e)),
    };
    match result {
        Ok(_) => {
            let serial = tokens::clean_serial(&form.serial).map_err(|e| op.fail(e))?;
            Ok(Redirect::to(&format!("/tokens/{serial}/programming")).into_response())
        }
        Err(error) if error.status().is_server_error() => Err(op.fail(error)),
        Err(error) => {
            let status = error.status();
            let body = generate_form(Some(&error.to_string()), &form);
            Ok((status, page(&op.ctx, "Generate a seed", body)).into_response())
        }
    }
}

/// The QR code inline (no `<img>` source to cache), labelled for assistive technology.
fn qr_markup(shown: &ShownSeed) -> Result<Zeroizing<String>, AppError> {
    let svg = crate::qr::svg(&shown.uri)
        .map_err(|e| AppError::Internal(format!("drawing the QR code: {e}")))?;
    let start = svg.find("<svg").unwrap_or(0);
    Ok(Zeroizing::new(svg[start..].replacen(
        "<svg",
        "<svg role=\"img\" aria-label=\"QR code of the new seed\" data-qr-code",
        1,
    )))
}

pub async fn show(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    Path(serial): Path<String>,
) -> Result<Response, PageError> {
    let env = state.env();
    let shown = programming::show_once(&env, &op.current.operator.actor(), &serial)
        .await
        .map_err(|e| op.fail(e))?;
    let token = tokens::get(&state.store, &serial)
        .await
        .map_err(|e| op.fail(e))?;
    let svg = shown
        .as_ref()
        .map(qr_markup)
        .transpose()
        .map_err(|e| op.fail(e))?;
    let body = html! {
        h1 { "Program token " span.mono { (token.serial) } }
        @if let (Some(shown), Some(svg)) = (&shown, &svg) {
            div.card.shown-once {
                p.error-box role="note" { strong { "Shown once." } " Scan or type it now: seedvault will never show this seed again, not even to you." }
                figure.qr {
                    (PreEscaped(svg.as_str()))
                    figcaption { (shown.issuer.as_deref().unwrap_or("")) @if shown.issuer.is_some() { ": " } (shown.label) }
                }
                dl.facts {
                    dt { "Secret (base32)" } dd.mono data-secret { (shown.base32.as_str()) }
                    dt { "Codes" } dd { (shown.algorithm.as_str()) ", " (shown.digits) " digits, every " (shown.period) " s" }
                }
            }
        } @else if token.state == TokenState::Programming {
            p.error-box role="alert" data-already-shown { "This seed was already shown once and cannot be shown again. If the device was not programmed with it, abandon this token and generate a new seed." }
        }
        @if token.state == TokenState::Programming {
            div.card {
                h2 { "Confirm the programmed device" }
                form.inline method="post" action={ "/tokens/" (token.serial) "/programming" } {
                    label { "Code the device shows now" input type="text" name="code" inputmode="numeric" autocomplete="off" pattern="[0-9 ]{6,9}" required; }
                    button type="submit" { "Confirm and escrow" }
                }
            }
            div.card {
                h2 { "Abandon" }
                form.inline method="post" action={ "/tokens/" (token.serial) "/cancel" } data-confirm="Abandon this token and destroy its seed?" {
                    label { "Reason" input type="text" name="reason" placeholder="device not programmed, wrong serial…" required; }
                    button.danger type="submit" { "Abandon and destroy the seed" }
                }
            }
        } @else {
            p { "This token is " (token.state.as_str()) "; nothing is left to program. " a href={ "/tokens/" (token.serial) } { "Back to the token" } }
        }
    };
    let mut response = page(&op.ctx, "Program a token", body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    code: Zeroizing<String>,
}

pub async fn confirm(
    State(state): State<AppState>,
    op: PageAuthorized<ProvisionerOnly>,
    Path(serial): Path<String>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<ConfirmForm>,
) -> Result<Redirect, PageError> {
    let done = programming::confirm(
        &state.env(),
        &op.current.operator.actor(),
        &serial,
        form.code,
    )
    .await;
    let ok = done.is_ok();
    match done {
        Ok(done) => {
            set_flash(
                &op.current.session,
                true,
                format!(
                    "Programmed: the device's code matched (drift {} steps). Token {} is escrowed.",
                    done.drift_steps, done.serial
                ),
            )
            .await
        }
        Err(refusal) => op.flash_refusal(refusal).await?,
    }
    Ok(Redirect::to(&if ok {
        format!("/tokens/{serial}")
    } else {
        format!("/tokens/{serial}/programming")
    }))
}
