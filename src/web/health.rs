//! `GET /healthz`: liveness for load balancers and the README's first check.

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
