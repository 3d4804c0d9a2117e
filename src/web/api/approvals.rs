//! `/api/v1/approvals`: four-eyes reveals. A second operator lists the requests they may
//! decide, approves one with their own passkey (start → assertion → finish) or denies it with
//! a reason; the requester follows their request here until it is decided. The rules live in
//! `tokens::approval`; these handlers only parse, call it and shape the reply.

use crate::web::extract::{Json, Path};
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use webauthn_rs::prelude::PublicKeyCredential;

use super::auth::to_json;
use super::webauthn::{AssertionCredential, RequestChallenge};
use crate::tokens::approval::{self, Approval};
use crate::web::session::CurrentOperator;
use crate::web::{AppError, AppState};

#[derive(Deserialize, ToSchema)]
pub struct DenyRequest {
    /// Why the request is denied; the requester is shown it. Required.
    #[serde(default)]
    reason: String,
}

/// The id of the signed-in session an approval's passkey prompt is bound to.
fn session_id(current: &CurrentOperator) -> Result<tower_sessions::session::Id, AppError> {
    current
        .session
        .id()
        .ok_or_else(|| AppError::Internal("a signed-in session has no id".into()))
}

/// The pending requests the caller may decide (an approver role of their policy, not their
/// own), oldest first. Empty for operators who approve under no policy.
#[utoipa::path(get, path = "/approvals", tag = "reveal", operation_id = "list_approvals",
    responses((status = 200, body = [Approval],
               links(("get_approval" = (operation_id = "get_approval", parameters(("id" = "$response.body#/0/id")))),
                     ("approve_start" = (operation_id = "approve_start", parameters(("id" = "$response.body#/0/id")))),
                     ("deny_approval" = (operation_id = "deny_approval", parameters(("id" = "$response.body#/0/id")))))),
              (status = 401)))]
pub async fn list(
    State(state): State<AppState>,
    current: CurrentOperator,
) -> Result<Json<Vec<Approval>>, AppError> {
    Ok(Json(
        approval::pending_for(&state.env(), &current.operator).await?,
    ))
}

/// One request, for its requester (to follow it) and for the operators who may decide it.
#[utoipa::path(get, path = "/approvals/{id}", tag = "reveal", operation_id = "get_approval", params(("id" = i64, Path)),
    responses((status = 200, body = Approval), (status = 401), (status = 403, description = "neither the requester nor an approver"), (status = 404)))]
pub async fn detail(
    State(state): State<AppState>,
    current: CurrentOperator,
    Path(id): Path<i64>,
) -> Result<Json<Approval>, AppError> {
    Ok(Json(
        approval::get(&state.env(), &current.operator, id).await?,
    ))
}

/// Start approving (an approver other than the requester): a passkey challenge from the
/// caller's own passkeys, bound to this request.
#[utoipa::path(post, path = "/approvals/{id}/approve/start", tag = "reveal", operation_id = "approve_start", params(("id" = i64, Path)),
    responses((status = 200, description = "WebAuthn request challenge signing this approval", body = RequestChallenge),
              (status = 400, description = "no passkey to sign with"),
              (status = 401), (status = 403, description = "the caller made the request, or holds no approver role"), (status = 404),
              (status = 409, description = "already decided or void, or the token is no longer escrowed"),
              (status = 410, description = "the request expired"), (status = 429, description = "the approver's limit was hit")))]
pub async fn approve_start(
    State(state): State<AppState>,
    current: CurrentOperator,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, AppError> {
    let env = state.env();
    let (challenge, started) =
        approval::approve_start(&env, &state.webauthn, &current.operator, id).await?;
    state
        .approvals
        .put(session_id(&current)?, started, env.unix())
        .await?;
    Ok(Json(to_json(&challenge)?))
}

/// Finish approving with the passkey assertion: the request becomes an approval the requester
/// can use once, within the policy's `approval_ttl`.
#[utoipa::path(post, path = "/approvals/{id}/approve/finish", tag = "reveal", operation_id = "approve_finish", params(("id" = i64, Path)), request_body = AssertionCredential,
    responses((status = 200, body = Approval),
              (status = 400, description = "no approval in progress in this session, or started for another request"),
              (status = 401, description = "not signed in, or the assertion was refused (e.g. another operator's passkey)"),
              (status = 403), (status = 404), (status = 409), (status = 410), (status = 429)))]
pub async fn approve_finish(
    State(state): State<AppState>,
    current: CurrentOperator,
    Path(id): Path<i64>,
    Json(credential): Json<PublicKeyCredential>,
) -> Result<Json<Approval>, AppError> {
    let operator = &current.operator;
    let Some(started) = state
        .approvals
        .take(session_id(&current)?)
        .await?
        .filter(|s| s.approver_id == operator.id)
    else {
        return Err(AppError::BadRequest(
            "no approval is in progress in this session — start it again".into(),
        ));
    };
    Ok(Json(
        approval::approve_finish(
            &state.env(),
            &state.webauthn,
            operator,
            started,
            id,
            &credential,
        )
        .await?,
    ))
}

/// Deny a request with a reason (an approver other than the requester).
#[utoipa::path(post, path = "/approvals/{id}/deny", tag = "reveal", operation_id = "deny_approval", params(("id" = i64, Path)), request_body = DenyRequest,
    responses((status = 200, body = Approval), (status = 401), (status = 403), (status = 404),
              (status = 409), (status = 410), (status = 422, description = "no reason, or one over 500 characters")))]
pub async fn deny(
    State(state): State<AppState>,
    current: CurrentOperator,
    Path(id): Path<i64>,
    Json(body): Json<DenyRequest>,
) -> Result<Json<Approval>, AppError> {
    Ok(Json(
        approval::deny(&state.env(), &current.operator, id, &body.reason).await?,
    ))
}
