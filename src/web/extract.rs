//! Request extractors whose rejections use the API's JSON error shape instead of axum's
//! plain-text defaults.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::FromRequest;
use axum::extract::FromRequestParts;

use super::AppError;

/// `axum::Json`, but a malformed body is a JSON `{"error","message"}` reply.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

/// `axum::extract::Query`, with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::BadRequest("send the body as JSON with Content-Type: application/json".into())
            }
            other => {
                Self::Unprocessable(format!("the JSON body is not valid: {}", other.body_text()))
            }
        }
    }
}

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Unprocessable(format!(
            "the query string is not valid: {}",
            rejection.body_text()
        ))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}
