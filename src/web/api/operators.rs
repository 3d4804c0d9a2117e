//! `/api/v1/operators`: the admin's view: list, invite, change roles, disable.

use crate::web::extract::Json;
use crate::web::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::operators::{self, NewInvite, Operator, OperatorChange, Role, Roles};
use crate::web::session::{AdminOnly, Authorized};
use crate::web::{AppError, AppState};

#[derive(Serialize, ToSchema)]
pub struct OperatorView {
    name: String,
    roles: Vec<Role>,
    disabled: bool,
    created_at: i64,
    credentials: i64,
}

impl OperatorView {
    fn new(op: &Operator, credentials: i64) -> Self {
        Self {
            name: op.name.clone(),
            roles: op.roles.to_vec(),
            disabled: op.disabled,
            created_at: op.created_at,
            credentials,
        }
    }
}

#[derive(Deserialize, ToSchema)]
pub struct InviteRequest {
    name: String,
    #[schema(min_items = 1)]
    roles: Vec<Role>,
}

/// The invite link: shown once, never stored.
#[derive(Serialize, ToSchema)]
pub struct InviteCreated {
    name: String,
    roles: Vec<Role>,
    url: String,
    expires_at: i64,
}

#[derive(Deserialize, ToSchema)]
pub struct OperatorPatch {
    #[serde(default)]
    #[schema(min_items = 1)]
    roles: Option<Vec<Role>>,
    #[serde(default)]
    disabled: Option<bool>,
}

/// All operators (admin).
#[utoipa::path(get, path = "/operators", tag = "operators", operation_id = "list_operators",
    responses((status = 200, body = [OperatorView],
               links(("update_operator" = (operation_id = "update_operator", parameters(("name" = "$response.body#/0/name")))))),
              (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Authorized<AdminOnly>,
) -> Result<Json<Vec<OperatorView>>, AppError> {
    let all = operators::list(&state.store).await?;
    Ok(Json(
        all.iter()
            .map(|(op, n)| OperatorView::new(op, *n))
            .collect(),
    ))
}

/// Invite a new operator (admin); the response carries the one-time URL.
#[utoipa::path(post, path = "/operators/invites", tag = "operators", operation_id = "invite_operator", request_body = InviteRequest,
    responses((status = 201, body = InviteCreated), (status = 401), (status = 403), (status = 409), (status = 422)))]
pub async fn invite(
    State(state): State<AppState>,
    auth: Authorized<AdminOnly>,
    Json(body): Json<InviteRequest>,
) -> Result<(StatusCode, Json<InviteCreated>), AppError> {
    let admin = auth.operator();
    let roles = Roles::new(body.roles);
    let issued = operators::create_invite(
        &state.store,
        &state.vault,
        state.clock.now(),
        &admin.actor(),
        NewInvite {
            name: &body.name,
            roles: &roles,
            ttl_hours: state.config.invite_ttl_hours,
            replace_pending: false,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(InviteCreated {
            url: issued.url(&state.config.origin_header()),
            name: issued.name,
            roles: issued.roles.to_vec(),
            expires_at: issued.expires_at,
        }),
    ))
}

/// Change an operator's roles or disable them (admin). Disabling ends their sessions at once.
#[utoipa::path(patch, path = "/operators/{name}", tag = "operators", operation_id = "update_operator", request_body = OperatorPatch, params(("name" = String, Path)),
    responses((status = 200, body = OperatorView), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn update(
    State(state): State<AppState>,
    auth: Authorized<AdminOnly>,
    Path(name): Path<String>,
    Json(body): Json<OperatorPatch>,
) -> Result<Json<OperatorView>, AppError> {
    let admin = auth.operator();
    let change = OperatorChange {
        roles: body.roles.map(Roles::new),
        disabled: body.disabled,
    };
    let op = operators::update(
        &state.store,
        &state.vault,
        state.clock.now(),
        &admin.actor(),
        Some(admin.id),
        &name,
        change,
    )
    .await?;
    let credentials = operators::credentials(&state.store, op.id).await?.len() as i64;
    Ok(Json(OperatorView::new(&op, credentials)))
}
