//! The owner's self-service delivery page, `/deliver/{token}` (issue 17): no operator
//! account, one code field, large enough for a phone. It never shows a seed, a code or the
//! full serial. Refused requests (a guessed, expired or used link, a wrong code) are counted
//! per client address, like failed sign-ins, and past the limit the page refuses to look.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{page, PageCtx};
use crate::tokens::delivery_link::{self, LinkError, LinkView};
use crate::web::session::ClientAddr;
use crate::web::{AppError, AppState};

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: Option<Zeroizing<String>>,
}

fn ctx(state: &AppState) -> PageCtx {
    PageCtx {
        development_slot: state.vault.has_development_slot(),
        path: "/deliver".to_owned(),
        ..Default::default()
    }
}

/// A page for the owner, never cached (it answers a one-time link).
fn respond(state: &AppState, status: StatusCode, title: &str, body: Markup) -> Response {
    let mut response = (status, page(&ctx(state), title, body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn form(view: &LinkView, error: Option<&str>) -> Markup {
    html! {
        div.center.card.deliver {
            h1 { "Confirm that your token has arrived" }
            p {
                "This confirms the delivery of the token "
                @if let Some(name) = &view.display_name { "for " strong { (name) } " " }
                "whose serial number ends in " strong.mono { (view.serial_hint) } "."
            }
            p.muted { "Press the button on your token (or look at its display) and type the " (view.digits) " digits it shows. Nobody from the helpdesk will ever ask you for this code." }
            @if let Some(error) = error { p.error-box #code-error role="alert" { (error) } }
            form.stack method="post" autocomplete="off" {
                label for="code" { "Code shown on your token" }
                @if error.is_some() {
                    input.big-input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,9}" required autofocus aria-describedby="code-error" aria-invalid="true";
                } @else {
                    input.big-input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,9}" required autofocus;
                }
                button.big-button type="submit" { "Confirm delivery" }
            }
        }
    }
}

/// A link that cannot be used, or a limit: what happened and what to do.
fn refusal(state: &AppState, error: LinkError) -> Response {
    let app: AppError = error.into();
    let status = app.status();
    if status.is_server_error() {
        return super::PageError::from(app).into_response();
    }
    let body = html! {
        div.center.card.deliver {
            h1 { "This link cannot be used" }
            p.error-box role="alert" { (app.to_string()) }
            p { "If you did not expect a message from us about a token, tell your security team." }
        }
    };
    respond(state, status, "Delivery link", body)
}

fn limited(state: &AppState, retry_after: u64) -> Response {
    let body = html! {
        div.center.card.deliver {
            h1 { "Too many attempts" }
            p.error-box role="alert" { "Too many attempts from your network. Wait " (retry_after.div_ceil(60)) " minutes, then open the link again." }
        }
    };
    let mut response = respond(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        body,
    );
    if let Ok(value) = retry_after.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Whether a refusal counts towards the client's limit: everything the client caused.
fn counts(error: &LinkError) -> bool {
    !matches!(error, LinkError::Lifecycle(_) | LinkError::NoCode)
}

/// Takes one of the client's attempts (checked and counted at once, so that requests racing
/// for the last one, on any instance, cannot all pass), or the page that refuses to look.
async fn attempt(
    state: &AppState,
    addr: &str,
    now: i64,
) -> Result<crate::ratelimit::Admitted, Response> {
    match state.limits.delivery_link_by_addr.admit(addr, now).await {
        Ok(Ok(admitted)) => Ok(admitted),
        Ok(Err(retry_after)) => Err(limited(state, retry_after)),
        Err(e) => Err(super::PageError::from(AppError::from(e)).into_response()),
    }
}

/// Gives the attempt back when it did not count (the link worked, or the refusal was not
/// the client's doing).
async fn settle(state: &AppState, admitted: crate::ratelimit::Admitted, counted: bool) {
    if counted {
        return;
    }
    if let Err(e) = state.limits.delivery_link_by_addr.forgive(admitted).await {
        // The client keeps one attempt fewer until the window passes: safe side.
        tracing::warn!(error = %e, "cannot give back a delivery-link attempt");
    }
}

pub async fn show(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(token): Path<String>,
) -> Response {
    let now = state.clock.unix();
    let admitted = match attempt(&state, &addr, now).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    match delivery_link::open(&state.env(), &token).await {
        Ok(view) => {
            settle(&state, admitted, false).await;
            respond(
                &state,
                StatusCode::OK,
                "Confirm delivery",
                form(&view, None),
            )
        }
        Err(error) => {
            settle(&state, admitted, counts(&error)).await;
            refusal(&state, error)
        }
    }
}

pub async fn confirm(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Path(token): Path<String>,
    axum_extra::extract::Form(submitted): axum_extra::extract::Form<CodeForm>,
) -> Response {
    let now = state.clock.unix();
    let admitted = match attempt(&state, &addr, now).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let env = state.env();
    let code = submitted.code.unwrap_or_default();
    match delivery_link::confirm(&env, &token, code).await {
        Ok(_) => {
            settle(&state, admitted, false).await;
            let body = html! {
                div.center.card.deliver {
                    h1 { "Thank you — delivery confirmed" }
                    p.success-box role="status" { "Your token is confirmed as delivered and is ready to use. The vault has destroyed its copy of the token's secret." }
                    p.muted { "You can close this page." }
                }
            };
            respond(&state, StatusCode::OK, "Delivery confirmed", body)
        }
        Err(error) => {
            settle(&state, admitted, counts(&error)).await;
            let retry = matches!(error, LinkError::WrongCode { .. } | LinkError::NoCode);
            if retry {
                if let Ok(view) = delivery_link::open(&env, &token).await {
                    let message = error.to_string();
                    let status = AppError::from(error).status();
                    return respond(
                        &state,
                        status,
                        "Confirm delivery",
                        form(&view, Some(&message)),
                    );
                }
            }
            refusal(&state, error)
        }
    }
}
