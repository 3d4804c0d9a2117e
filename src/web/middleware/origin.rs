//! Refuses state-changing requests whose `Origin` header is missing or foreign: the CSRF
//! defence for both the JSON API and the HTML forms (SameSite=Strict cookies are the second).
//! See <https://fetch.spec.whatwg.org/#origin-header> and Fetch Metadata (`Sec-Fetch-Site`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::web::{AppError, AppState};

/// Whether the request provably comes from `expected`.
fn same_origin(headers: &HeaderMap, expected: &str) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    match text(header::ORIGIN.as_str()) {
        Some(origin) if origin == expected => true,
        // Under `Referrer-Policy: no-referrer` browsers send `Origin: null` for same-origin form
        // posts; the browser-set `Sec-Fetch-Site`, which no page can forge, then vouches for it.
        Some("null") => text("sec-fetch-site") == Some("same-origin"),
        _ => false,
    }
}

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
        if !same_origin(request.headers(), &expected) {
            let message = match request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
                None => format!("the request has no Origin header; state-changing requests must come from {expected}"),
                Some(other) => format!("requests from origin {other} are refused; this vault serves {expected}"),
            };
            return AppError::Forbidden(message).into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_the_configured_origin_or_a_same_origin_form_passes() {
        let me = "http://localhost:8080";
        assert!(same_origin(
            &headers(&[("origin", "http://localhost:8080")]),
            me
        ));
        assert!(same_origin(
            &headers(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            me
        ));
        assert!(!same_origin(
            &headers(&[("origin", "null"), ("sec-fetch-site", "cross-site")]),
            me
        ));
        assert!(!same_origin(&headers(&[("origin", "null")]), me));
        assert!(!same_origin(
            &headers(&[("origin", "http://evil.example")]),
            me
        ));
        assert!(!same_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            me
        ));
    }
}
