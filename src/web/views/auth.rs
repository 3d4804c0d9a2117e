//! Sign-in, invite registration, sign-out. No password field anywhere: passkeys only.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use tower_sessions::Session;

use super::{page, PageCtx};
use crate::audit::NewEvent;
use crate::operators;
use crate::web::session::{SignedIn, SIGNED_IN};
use crate::web::AppState;

fn anonymous(state: &AppState, path: &str) -> PageCtx {
    PageCtx {
        development_slot: state.vault.has_development_slot(),
        path: path.to_owned(),
        ..Default::default()
    }
}

pub async fn login(State(state): State<AppState>) -> Response {
    let body = html! {
        div.center.card {
            h1 { "Sign in" }
            p.muted { "seedvault has no passwords. Use the passkey or security key you registered from your invite." }
            form.stack data-webauthn="login" data-next="/" {
                label {
                    "Operator name " span.hint { "(optional with a passkey your browser offers; a security key may need it)" }
                    input type="text" name="username" autocomplete="username webauthn" autocapitalize="none" spellcheck="false";
                }
                p.error-box data-error hidden tabindex="-1" role="alert" {}
                button type="submit" { "Sign in with a passkey" }
            }
        }
    };
    page(&anonymous(&state, "/login"), "Sign in", body).into_response()
}

pub async fn invite(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let body = html! {
        div.center.card {
            h1 { "Welcome to seedvault" }
            p { "You were invited as an operator. Instead of a password you will use a " strong { "passkey" } ":" }
            ul {
                li { "a key kept by this device (fingerprint, face, PIN) or a security key you plug in or tap;" }
                li { "it only works on this site, so it cannot be phished;" }
                li { "you will confirm it with your PIN or biometric each time you sign in or reveal a code." }
            }
            p.muted { "This link works once and expires. After registering you can add a backup key on your profile page." }
            form.stack data-webauthn="register" data-invite=(token) {
                p.error-box data-error hidden tabindex="-1" role="alert" {}
                button type="submit" { "Create my passkey" }
            }
        }
    };
    page(&anonymous(&state, "/invite"), "Register your passkey", body).into_response()
}

pub async fn logout(State(state): State<AppState>, session: Session) -> Redirect {
    if let Ok(Some(signed_in)) = session.get::<SignedIn>(SIGNED_IN).await {
        if let Ok(Some(op)) = operators::by_id(&state.store, signed_in.operator_id).await {
            let event = NewEvent::new(op.actor(), "auth.sign_out", op.actor());
            if let Err(e) =
                operators::record(&state.store, &state.vault, state.clock.now(), event).await
            {
                tracing::error!(error = %e, "could not record sign-out");
            }
        }
    }
    let _ = session.flush().await;
    Redirect::to("/login")
}
