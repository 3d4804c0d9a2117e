//! `GET /healthz`: liveness for load balancers and the README's first check; `GET /readyz`:
//! readiness (unsealed, writable, migrated) for orchestrators that route traffic.

use axum::extract::State;
use axum::http::StatusCode;
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

#[derive(Serialize)]
pub struct Readiness {
    status: &'static str,
    /// Why not ready (absent when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// 200 `{"status":"ready"}` when the vault is unsealed, the database takes a write and every
/// migration of this binary is applied; otherwise 503 `{"status":"not ready","reason":…}`.
///
/// A server only serves once the vault is unsealed, so the first condition holds whenever this
/// answers at all; it is checked anyway, so that a future sealed mode cannot report ready.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let checked = if state.vault.id().is_empty() {
        Err("the vault is sealed".to_owned())
    } else {
        state
            .store
            .readiness(std::time::Duration::from_secs(2))
            .await
    };
    match checked {
        Ok(()) => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                reason: None,
            }),
        ),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness {
                    status: "not ready",
                    reason: Some(reason),
                }),
            )
        }
    }
}
