//! One log line per request: method, the matched route *template* (never the concrete path,
//! which can carry an invite token or a serial), status and duration; the same facts feed the
//! latency histogram. Every line logged while a request is handled belongs to its `request`
//! span, whose `request_id` is also returned in the `X-Request-Id` header so that an operator's
//! report can be matched to the log.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The response header naming the request's id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A fresh id per request: 16 random hex digits. A client's own `X-Request-Id` is not taken
/// over: log lines must not carry text an anonymous client chose.
fn request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub async fn log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_owned(), |p| p.as_str().to_owned());
    let id = request_id();
    let span = tracing::info_span!("request", request_id = %id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    crate::telemetry::http_request(method.as_str(), &route, response.status().as_u16(), seconds);
    span.in_scope(|| {
        tracing::info!(
            target: "seedvault::access",
            %method,
            route,
            status = response.status().as_u16(),
            ms = seconds * 1000.0,
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}
