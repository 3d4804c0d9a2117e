//! Operators (admin), the operator's own profile and passkeys, and the read-only policies page.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{roles, when};
use super::{page, PageAuthorized, PageError, PageOperator};
use crate::operators::{self, NewInvite, OperatorChange, Role, Roles};
use crate::web::session::AdminOnly;
use crate::web::{AppError, AppState};

fn operators_page(all: &[(operators::Operator, i64)], me: &str) -> Markup {
    html! {
        h1 { "Operators" }
        div.card {
            h2 { "Invite an operator" }
            form.inline method="post" action="/operators" {
                label { "Name" input type="text" name="name" required autocomplete="off"; }
                fieldset { legend { "Roles" }
                    @for role in Role::ALL { label { input type="checkbox" name="roles" value=(role.as_str()); (role.as_str()) } }
                }
                button type="submit" { "Make a one-time invite link" }
            }
        }
        div.table-wrap role="region" aria-label="Operators" tabindex="0" { table {
            thead { tr { th { "Name" } th { "Roles" } th { "Passkeys" } th { "State" } th { "Change" } } }
            tbody { @for (op, creds) in all {
                tr {
                    td { (op.name) }
                    td { (roles(&op.roles)) }
                    td { (creds) }
                    td { @if op.disabled { span.outcome-denied { "disabled" } } @else { "enabled" } }
                    td {
                        form.inline method="post" action={ "/operators/" (op.name) } {
                            @for role in Role::ALL {
                                label { input type="checkbox" name="roles" value=(role.as_str()) checked[op.roles.contains(role)]; (role.as_str()) }
                            }
                            @if op.name == me { button.secondary type="submit" { "Save my roles" } }
                            @else if op.disabled { input type="hidden" name="disabled" value="false"; button.secondary type="submit" { "Save and enable" } }
                            @else { button.secondary type="submit" { "Save roles" } button.danger type="submit" name="disabled" value="true" { "Disable" } }
                        }
                    }
                }
            } }
        } }
    }
}

pub async fn list(
    State(state): State<AppState>,
    op: PageAuthorized<AdminOnly>,
) -> Result<Markup, PageError> {
    let all = operators::list(&state.store)
        .await
        .map_err(|e| op.fail(e))?;
    Ok(page(
        &op.ctx,
        "Operators",
        operators_page(&all, &op.current.operator.name),
    ))
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    roles: Vec<String>,
}

pub async fn invite(
    State(state): State<AppState>,
    op: PageAuthorized<AdminOnly>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<InviteForm>,
) -> Result<Response, PageError> {
    let wanted = Roles::parse_list(&form.roles.join(","))
        .map_err(|e| op.fail(AppError::Unprocessable(e.to_string())))?;
    let issued = operators::create_invite(
        &state.store,
        &state.vault,
        state.clock.now(),
        &op.current.operator.actor(),
        NewInvite {
            name: form.name.trim(),
            roles: &wanted,
            ttl_hours: state.config.invite_ttl_hours,
            replace_pending: false,
        },
    )
    .await;
    let issued = match issued {
        Ok(issued) => issued,
        Err(e) => {
            op.flash_refusal(e).await?;
            return Ok(Redirect::to("/operators").into_response());
        }
    };
    let url = issued.url(&state.config.origin_header());
    let body = html! {
        div.center.card {
            h1 { "Invite for " (issued.name) }
            p { "Send this link to " strong { (issued.name) } " over a channel you trust. It is shown only now, works once, and expires " (when(issued.expires_at)) "." }
            p.invite-link.mono { (url) }
            p.muted { "Roles: " (roles(&issued.roles)) }
            a.button href="/operators" { "Done" }
        }
    };
    Ok((StatusCode::CREATED, page(&op.ctx, "Invite created", body)).into_response())
}

#[derive(Deserialize)]
pub struct UpdateForm {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

pub async fn update(
    State(state): State<AppState>,
    op: PageAuthorized<AdminOnly>,
    Path(name): Path<String>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<UpdateForm>,
) -> Result<Redirect, PageError> {
    let roles = Roles::parse_list(&form.roles.join(","))
        .map_err(|e| op.fail(AppError::Unprocessable(e.to_string())))?;
    let change = OperatorChange {
        roles: Some(roles),
        disabled: form.disabled,
    };
    let me = &op.current.operator;
    let updated = operators::update(
        &state.store,
        &state.vault,
        state.clock.now(),
        &me.actor(),
        Some(me.id),
        &name,
        change,
    )
    .await;
    op.flash_outcome(updated, |updated| format!("Saved {}.", updated.name))
        .await?;
    Ok(Redirect::to("/operators"))
}

pub async fn me(State(state): State<AppState>, op: PageOperator) -> Result<Markup, PageError> {
    let me = &op.current.operator;
    let creds = operators::credentials(&state.store, me.id)
        .await
        .map_err(|e| op.fail(e))?;
    let body = html! {
        h1 { (me.name) }
        p.lead { "Roles: " (roles(&me.roles)) }
        h2 { "Your passkeys" }
        div.table-wrap role="region" aria-label="Your passkeys" tabindex="0" { table {
            thead { tr { th { "Name" } th { "Added" } th { "Last used" } th { span.visually-hidden { "Actions" } } } }
            tbody { @for c in &creds {
                tr {
                    td { (c.label) } td { (when(c.created_at)) } td { (c.last_used_at.map(when).unwrap_or_else(|| "never".into())) }
                    td { @if creds.len() > 1 {
                        form method="post" action={ "/me/credentials/" (c.id) "/remove" } data-confirm="Remove this passkey?" {
                            button.secondary type="submit" { "Remove" }
                        }
                    } }
                }
            } }
        } }
        div.card {
            h2 { "Add a backup passkey" }
            p.muted { "A second key (another device or a security key) keeps you able to sign in if one is lost." }
            form.inline data-webauthn="add-credential" {
                label { "Name" input type="text" name="label" value="backup key"; }
                p.error-box data-error hidden tabindex="-1" role="alert" {}
                button type="submit" { "Register another passkey" }
            }
        }
    };
    Ok(page(&op.ctx, "Your profile", body))
}

pub async fn remove_credential(
    State(state): State<AppState>,
    op: PageOperator,
    Path(id): Path<i64>,
) -> Result<Redirect, PageError> {
    let removed = operators::remove_credential(
        &state.store,
        &state.vault,
        state.clock.now(),
        &op.current.operator,
        id,
    )
    .await;
    op.flash_outcome(removed, |()| "Passkey removed.".into())
        .await?;
    Ok(Redirect::to("/me"))
}

pub async fn policies(State(state): State<AppState>, op: PageOperator) -> Markup {
    let body = html! {
        h1 { "Policies" }
        p.lead { "Each token follows one policy: the checks a helpdesk operator must do before a code is revealed. Files in policies/, validated at start." }
        @for p in state.policies.all() {
            div.card {
                h2 { (p.name) @if p.default { " " span.muted { "(default)" } } }
                p { (p.description) }
                ul { @for c in &p.checks {
                    li { (c.text) @if c.required { span.required { "required" } } @if c.is_unsafe { span.required { "unsafe exception" } }
                        @if let Some(g) = &c.guidance { br; span.hint { (g) } } }
                } }
                dl.facts {
                    dt { "Checks needed" } dd { (p.min_checks) }
                    dt { "Ticket" } dd { @if p.ticket_required { "required" } @else { "optional" } }
                    dt { "Reveals" } dd { (p.reveals_per_token_per_day) " per token per day, " (p.reveals_per_operator_per_hour) " per operator per hour" }
                    dt { "Next code shown" } dd { @if p.next_code { "yes" } @else { "no" } }
                    dt { "Verified against the device" } dd { @if p.require_verified { "required before any reveal" } @else { "not required" } }
                    dt { "Second operator" } dd {
                        @if p.approval.second_operator {
                            "required: approved by " (p.approval.approvers.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" or ")) " (never the requester) within " (p.approval.ttl_seconds / 60) " min"
                        } @else { "not required" }
                    }
                    @if let Some(days) = p.retention_days { dt { "Retention" } dd { (days) " days" } }
                    dt { "Version" } dd.mono { (p.content_hash[..16]) }
                }
            }
        }
    };
    page(&op.ctx, "Policies", body)
}
