//! Four-eyes approval pages: the requests waiting for the signed-in approver, and one request
//! with the requester's answers, where an approver approves (passkey, in
//! `templates/seedvault.js`) or denies with a reason.

use axum::extract::{Path, State};
use maud::{html, Markup};

use super::layout::when;
use super::{page, PageError, PageOperator};
use crate::tokens::approval::{self, Approval, ApprovalStatus};
use crate::web::AppState;

fn status_badge(status: ApprovalStatus) -> Markup {
    html! { span class={ "state " (status.as_str()) } { (status.as_str()) } }
}

pub async fn list(State(state): State<AppState>, op: PageOperator) -> Result<Markup, PageError> {
    let env = state.env();
    let approver = !env
        .policies
        .approvable_by(&op.current.operator.roles)
        .is_empty();
    let pending = approval::pending_for(&env, &op.current.operator)
        .await
        .map_err(|e| op.fail(e))?;
    let body = html! {
        h1 { "Approvals" }
        p.lead { "Reveals under a four-eyes policy wait here for a second operator. Check the requester's answers before you approve with your passkey." }
        @if !approver {
            p.muted { "Your roles approve under no policy, so no request waits for you." }
        } @else if pending.is_empty() {
            p.muted { "No request is waiting for your approval." }
        } @else {
            div.table-wrap role="region" aria-label="Approval requests" tabindex="0" { table {
                caption.visually-hidden { "Requests waiting for approval" }
                thead { tr {
                    th scope="col" { "Request" } th scope="col" { "Token" } th scope="col" { "Owner" }
                    th scope="col" { "Requested by" } th scope="col" { "Ticket" } th scope="col" { "Expires" }
                } }
                tbody { @for a in &pending {
                    tr {
                        th scope="row" { a href={ "/approvals/" (a.id) } { "Request " (a.id) } }
                        td.mono { (a.serial) }
                        td { (a.owner.as_deref().unwrap_or("unassigned")) }
                        td { (a.requester) }
                        td { (a.ticket.as_deref().unwrap_or("—")) }
                        td { (when(a.expires_at)) }
                    }
                } }
            } }
        }
    };
    Ok(page(&op.ctx, "Approvals", body))
}

pub async fn detail(
    State(state): State<AppState>,
    op: PageOperator,
    Path(id): Path<i64>,
) -> Result<Markup, PageError> {
    let env = state.env();
    let operator = &op.current.operator;
    let a = approval::get(&env, operator, id)
        .await
        .map_err(|e| op.fail(e))?;
    let policy = env.policies.get(&a.policy);
    let mine = a.requester == operator.name;
    let may_decide = !mine
        && a.status == ApprovalStatus::Pending
        && policy.is_some_and(|p| p.approval.may_approve(&operator.roles));
    let body = html! {
        h1 { "Approval request " (a.id) }
        p.lead { "Token " a href={ "/tokens/" (a.serial) } { span.mono { (a.serial) } } " · policy " strong { (a.policy) } " · " (status_badge(a.status)) }
        div.card {
            h2 { "What the requester did" }
            dl.facts {
                dt { "Requested by" } dd { (a.requester) " at " (when(a.created_at)) }
                dt { "Token owner" } dd { (a.owner.as_deref().unwrap_or("unassigned")) }
                dt { "Ticket" } dd { (a.ticket.as_deref().unwrap_or("—")) }
                dt { "Note" } dd { (a.note.as_deref().unwrap_or("—")) }
                dt { (if a.status == ApprovalStatus::Approved { "Usable until" } else { "Expires" }) } dd { (when(a.expires_at)) }
                @if let Some(by) = &a.decided_by {
                    dt { "Decided by" } dd { (by) @if let Some(at) = a.decided_at { " at " (when(at)) } }
                }
                @if let Some(reason) = &a.reason { dt { "Reason" } dd { (reason) } }
            }
            (checklist(&a, policy))
        }
        (directory(&a))
        @if may_decide {
            div.card {
                h2 { "Your decision" }
                p.muted { "Approve only if the checks above are enough for you to hand out a code for this person. Your passkey signs the approval; the requester then signs the reveal with theirs." }
                form.stack data-webauthn="approve" data-approval=(a.id) {
                    p.error-box data-error hidden tabindex="-1" role="alert" {}
                    button type="submit" { "Approve with my passkey" }
                }
                form.stack data-deny=(a.id) {
                    label { "Reason for denying " span.hint { "(the requester is shown it)" }
                        textarea name="reason" maxlength="500" required {} }
                    p.error-box data-error hidden tabindex="-1" role="alert" {}
                    button.danger type="submit" { "Deny the request" }
                }
            }
        } @else if mine {
            p { "You made this request; another operator must decide it. Follow it on " a href={ "/tokens/" (a.serial) "/reveal" } { "the reveal page" } "." }
        }
        p { a href="/approvals" { "Back to the approvals" } }
    };
    Ok(page(&op.ctx, "Approval request", body))
}

/// The policy's checklist with what the requester ticked.
fn checklist(a: &Approval, policy: Option<&crate::policy::Policy>) -> Markup {
    html! {
        h3 { "Checks" }
        @match policy {
            Some(policy) => {
                ul.checks {
                    @for check in &policy.checks {
                        @let ticked = a.checks.contains(&check.id);
                        li {
                            strong { (if ticked { "✔ done: " } else { "✘ not done: " }) }
                            (check.text)
                        }
                    }
                }
            }
            None => { p { (a.checks.join(", ")) } }
        }
    }
}

/// The directory's entry for the owner, when a directory is configured
/// ([`approval::directory_entry`]); nothing otherwise.
fn directory(a: &Approval) -> Markup {
    html! {
        @if let Some(serde_json::Value::Object(entry)) = &a.directory {
            div.card {
                h2 { "Directory" }
                dl.facts {
                    @for (key, value) in entry {
                        dt { (key) } dd { (value.as_str().map_or_else(|| value.to_string(), str::to_owned)) }
                    }
                }
            }
        }
    }
}
