//! `GET /healthz`: liveness for load balancers and the README's first check; `GET /readyz`:
//! readiness (unsealed, writable, migrated) for orchestrators that route traffic.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::{AppError, AppState};

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    version: &'static str,
}

/// 200 with `{"status":"ok","version":…}` when the database answers.
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    state.store.ping().await?;
    Ok(Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Always `ready`.
    status: &'static str,
}

/// Readiness for orchestrators and load balancers: ready only when the vault is unsealed, the
/// database takes a write within 2 s and every migration of this binary is applied.
/// `/healthz` stays the liveness check.
///
/// A server only serves once the vault is unsealed, so the first condition holds whenever this
/// answers at all; it is checked anyway, so that a future sealed mode cannot report ready.
#[utoipa::path(get, path = "/readyz", tag = "meta", operation_id = "readyz",
    responses((status = 200, description = "ready", body = Readiness),
              (status = 503, description = "not ready; the message says why")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, AppError> {
    let checked = if state.vault.id().is_empty() {
        Err("the vault is sealed".to_owned())
    } else {
        state
            .store
            .readiness(std::time::Duration::from_secs(2))
            .await
    };
    match checked {
        Ok(()) => Ok(Json(Readiness { status: "ready" })),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            Err(AppError::NotReady(reason))
        }
    }
}
