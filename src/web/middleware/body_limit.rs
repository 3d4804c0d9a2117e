//! Request bodies: the limit every route has unless it sets its own (uploads take up to
//! `max_upload_mb`, see `extract::Upload`), and one answer when a body is over it — 413 with
//! the API's JSON error body naming the limit, whichever extractor refused the body (axum's
//! own and `axum_extra`'s answer in plain text). The connection reads the refused body away
//! before answering (`server::drain_unread`), so the client sees this answer, not a reset.

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::web::AppError;

/// Bytes a request body may have on a route without a limit of its own: axum's default,
/// stated here so that the refusal can name it.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The refusal of a body over [`DEFAULT_BODY_LIMIT`].
pub fn too_large() -> AppError {
    AppError::PayloadTooLarge(format!(
        "body: the request body is larger than the limit of {} MiB for this request — send \
         less; seed files and QR images go to the upload routes, which take up to \
         max_upload_mb",
        DEFAULT_BODY_LIMIT / (1024 * 1024)
    ))
}

/// Replaces a 413 that is not already the JSON error body with [`too_large`].
pub async fn explain(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        response
    } else {
        too_large().into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_form_over_the_limit_gets_the_json_413_naming_the_limit() {
        #[derive(serde::Deserialize)]
        struct Form {
            #[allow(dead_code)]
            a: String,
        }
        let app = Router::new()
            .route(
                "/",
                post(
                    |axum_extra::extract::Form(_): axum_extra::extract::Form<Form>| async { "ok" },
                ),
            )
            .layer(axum::middleware::from_fn(explain));
        let body = format!("a={}", "x".repeat(DEFAULT_BODY_LIMIT + 1));
        let response = app
            .oneshot(
                Request::post("/")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(axum::body::Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"], "payload_too_large");
        assert!(
            body["message"].as_str().unwrap().contains("2 MiB"),
            "{body}"
        );
    }
}
