//! `GET /metrics` in the Prometheus text format: on the main listener behind the configured
//! bearer token (`metrics_token`), and without a token on the separate `metrics_bind`
//! listener ([`listener_app`]), which an administrator binds where only the scraper reaches.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::{AppError, AppState};
use crate::telemetry::Gauges;

/// The content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The vault's gauges read now, and every metric rendered.
pub async fn render(state: &AppState) -> Result<String, AppError> {
    let now = state.clock.now();
    let (escrowed_tokens, overdue_for_purge) =
        crate::store::tokens::escrowed_and_overdue(&state.store, now.unix_timestamp()).await?;
    let audit_head_seq = crate::store::audit::head(&state.store)
        .await?
        .map_or(0, |(seq, _)| seq);
    let siem_lag = crate::siem::lag(&state.store, &state.config.siem, now)
        .await?
        .into_iter()
        .map(|l| (l.sink, l.events, l.seconds))
        .collect();
    Ok(crate::telemetry::render(&Gauges {
        escrowed_tokens,
        overdue_for_purge,
        audit_head_seq,
        siem_lag,
    }))
}

fn text(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))],
        body,
    )
        .into_response()
}

/// Prometheus metrics (text format 0.0.4) for a scraper holding `metrics_token`: 404 unless the
/// token is configured, 401 without `Authorization: Bearer <token>`. The `metrics_bind`
/// listener serves the same without a token.
#[utoipa::path(get, path = "/metrics", tag = "meta", operation_id = "metrics",
    responses((status = 200, description = "every metric", body = String, content_type = "text/plain; version=0.0.4; charset=utf-8"),
              (status = 401, description = "no or a wrong bearer token"),
              (status = 404, description = "no metrics_token is configured")))]
pub async fn with_token(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let Some(token) = &state.config.metrics_token else {
        return Err(AppError::NotFound(
            "/metrics is served on metrics_bind, or here once metrics_token is set".into(),
        ));
    };
    let admitted = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| token.admits(v));
    if !admitted {
        return Ok((
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Bearer realm=\"seedvault metrics\"",
            )],
            axum::Json(super::ErrorBody {
                error: "unauthenticated",
                message: "/metrics needs Authorization: Bearer <metrics_token>".into(),
            }),
        )
            .into_response());
    }
    Ok(text(render(&state).await?))
}

async fn open(State(state): State<AppState>) -> Result<Response, AppError> {
    Ok(text(render(&state).await?))
}

/// The `metrics_bind` listener's application: `/metrics` and nothing else.
pub fn listener_app(state: AppState) -> Router {
    Router::new().route("/metrics", get(open)).with_state(state)
}
