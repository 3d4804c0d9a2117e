//! Security headers on every response: a strict Content-Security-Policy (one script file, one
//! stylesheet, nothing inline), no framing, no referrer, and no caching — pages of a vault can
//! show a code, so nothing is kept by the browser or a proxy. Behind an https origin, HSTS
//! too (RFC 6797): a browser that once reached the vault over TLS never tries plain http again.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Whether the vault's origin is https, the state of [`add`].
#[derive(Clone, Copy)]
pub struct OriginIsHttps(pub bool);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Two years, the preload list's minimum; no `includeSubDomains`, the vault's origin may share
/// a parent domain with hosts that are not on TLS.
const HSTS: &str = "max-age=63072000";

/// The headers of [`add`] as raw header lines (`name: value` CRLF), for the responses hyper
/// writes itself before any router sees the request (`server::HyperErrorHeaders`).
pub fn as_lines(https: bool) -> &'static [u8] {
    static PLAIN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    static HTTPS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let lines = |https: bool| {
        let mut headers = vec![
            ("content-security-policy", CSP),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("x-content-type-options", "nosniff"),
            ("cross-origin-opener-policy", "same-origin"),
            ("cache-control", "no-store"),
        ];
        if https {
            headers.push(("strict-transport-security", HSTS));
        }
        headers
            .into_iter()
            .flat_map(|(name, value)| [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"].concat())
            .collect::<Vec<u8>>()
    };
    if https {
        HTTPS.get_or_init(|| lines(true))
    } else {
        PLAIN.get_or_init(|| lines(false))
    }
}

/// Adds the headers; `Strict-Transport-Security` only when the configured origin is https
/// (on http://localhost it would be ignored, and wrong).
pub async fn add(State(https): State<OriginIsHttps>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if https.0 {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn hsts_for(https: bool) -> Option<HeaderValue> {
        let app = Router::new().route("/", get(|| async { "ok" })).layer(
            axum::middleware::from_fn_with_state(OriginIsHttps(https), add),
        );
        let response = app
            .oneshot(
                Request::builder()
                    .uri("/")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        response
            .headers()
            .get(header::STRICT_TRANSPORT_SECURITY)
            .cloned()
    }

    #[tokio::test]
    async fn an_https_origin_gets_hsts_and_a_plain_http_one_does_not() {
        assert_eq!(hsts_for(true).await.unwrap(), HSTS);
        assert!(hsts_for(false).await.is_none());
    }
}
