//! Refuses state-changing requests whose `Origin` header is missing or foreign: the CSRF
//! defence for both the JSON API and the HTML forms (SameSite=Strict cookies are the second).

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::web::{AppError, AppState};

pub async fn require_same_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let changes_state = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes_state {
        let expected = state.config.origin_header();
        let sent = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        if sent != Some(expected.as_str()) {
            let message = match sent {
                None => format!("the request has no Origin header; state-changing requests must come from {expected}"),
                Some(other) => format!("requests from origin {other} are refused; this vault serves {expected}"),
            };
            return AppError::Forbidden(message).into_response();
        }
    }
    next.run(request).await
}
