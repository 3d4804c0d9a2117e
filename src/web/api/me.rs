//! `/api/v1/me`: the signed-in operator, and their passkeys (add a backup key, remove one
//! that is not the last).

use crate::web::extract::Json;
use crate::web::extract::{OptionalJson, Path};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webauthn_rs::prelude::{PasskeyRegistration, RegisterPublicKeyCredential};

use super::auth::{start_registration, to_json};
use super::webauthn::{CreationChallenge, RegistrationCredential};
use crate::audit::{NewEvent, Outcome};
use crate::operators::{self, Role};
use crate::web::session::{session_error, CurrentOperator};
use crate::web::{AppError, AppState};
use serde_json::json;

const ADD_CREDENTIAL: &str = "ceremony.add_credential";

#[derive(Serialize, ToSchema)]
pub struct CredentialView {
    id: i64,
    label: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    name: String,
    roles: Vec<Role>,
    credentials: Vec<CredentialView>,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct AddCredentialStart {
    /// A name for the new key, e.g. "backup YubiKey".
    #[serde(default)]
    label: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct AddCredentialState {
    ceremony: PasskeyRegistration,
    label: String,
}

/// The signed-in operator with their credentials (never key material).
#[utoipa::path(get, path = "/me", tag = "operators",
    responses((status = 200, body = Me,
               links(("remove_credential" = (operation_id = "remove_credential", parameters(("id" = "$response.body#/credentials/0/id")))))),
              (status = 401)))]
pub async fn me(
    State(state): State<AppState>,
    current: CurrentOperator,
) -> Result<Json<Me>, AppError> {
    let op = &current.operator;
    let credentials = operators::credentials(&state.store, op.id)
        .await?
        .into_iter()
        .map(|c| CredentialView {
            id: c.id,
            label: c.label,
            created_at: c.created_at,
            last_used_at: c.last_used_at,
        })
        .collect();
    Ok(Json(Me {
        name: op.name.clone(),
        roles: op.roles.to_vec(),
        credentials,
    }))
}

/// Start adding another passkey (backup key).
#[utoipa::path(post, path = "/me/credentials/start", tag = "operators", request_body = Option<AddCredentialStart>,
    responses((status = 200, description = "WebAuthn creation challenge", body = CreationChallenge), (status = 401)))]
pub async fn add_credential_start(
    State(state): State<AppState>,
    current: CurrentOperator,
    OptionalJson(body): OptionalJson<AddCredentialStart>,
) -> Result<Json<serde_json::Value>, AppError> {
    let op = &current.operator;
    let existing = operators::passkeys::of(&state.store, op.id)
        .await?
        .into_iter()
        .map(|stored| stored.passkey.cred_id().clone())
        .collect();
    let (challenge, ceremony) =
        start_registration(&state.webauthn, op.user_handle, &op.name, Some(existing))?;
    let label = body
        .and_then(|b| b.label)
        .unwrap_or_else(|| "backup passkey".into());
    current
        .session
        .insert(ADD_CREDENTIAL, AddCredentialState { ceremony, label })
        .await
        .map_err(session_error)?;
    Ok(Json(to_json(&challenge)?))
}

/// Finish adding a passkey.
#[utoipa::path(post, path = "/me/credentials/finish", tag = "operators", request_body = RegistrationCredential,
    responses((status = 201, body = CredentialView,
               links(("remove_credential" = (operation_id = "remove_credential", parameters(("id" = "$response.body#/id")))))),
              (status = 400, description = "no registration in progress, or the credential was refused"), (status = 401),
              (status = 409, description = "this passkey is already registered")))]
pub async fn add_credential_finish(
    State(state): State<AppState>,
    current: CurrentOperator,
    credential: Result<Json<RegisterPublicKeyCredential>, AppError>,
) -> Result<(StatusCode, Json<CredentialView>), AppError> {
    let Some(pending) = current
        .session
        .remove::<AddCredentialState>(ADD_CREDENTIAL)
        .await
        .map_err(session_error)?
    else {
        return Err(AppError::BadRequest(
            "no passkey registration is in progress — start again".into(),
        ));
    };
    let now = state.clock.now();
    // A refused passkey is audited like a refused registration: someone tried to attach a key
    // to this operator.
    let refused = |reason: String| {
        let actor = current.operator.actor();
        NewEvent::new(actor.clone(), "credential.refused", actor)
            .outcome(Outcome::Denied)
            .details(json!({ "reason": reason, "label": pending.label }))
    };
    let credential = match credential {
        Ok(Json(credential)) => credential,
        Err(error) => {
            let event = refused("malformed credential".into());
            operators::record(&state.store, &state.vault, now, event).await?;
            return Err(error);
        }
    };
    let passkey = match state
        .webauthn
        .finish_passkey_registration(&credential, &pending.ceremony)
    {
        Ok(passkey) => passkey,
        Err(e) => {
            let event = refused(e.to_string());
            operators::record(&state.store, &state.vault, now, event).await?;
            return Err(e.into());
        }
    };
    let id = operators::add_credential(
        &state.store,
        &state.vault,
        now,
        &current.operator,
        &pending.label,
        &passkey,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CredentialView {
            id,
            label: pending.label,
            created_at: now.unix_timestamp(),
            last_used_at: None,
        }),
    ))
}

/// Remove one of your passkeys (not the last).
#[utoipa::path(delete, path = "/me/credentials/{id}", tag = "operators", params(("id" = i64, Path, description = "credential id from /me")),
    responses((status = 204, description = "removed"), (status = 401), (status = 404), (status = 409, description = "last passkey")))]
pub async fn remove_credential(
    State(state): State<AppState>,
    current: CurrentOperator,
    Path(id): Path<i64>,
) -> Result<StatusCode, AppError> {
    operators::remove_credential(
        &state.store,
        &state.vault,
        state.clock.now(),
        &current.operator,
        id,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
