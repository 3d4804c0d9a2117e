//! Request extractors whose rejections use the API's JSON error shape instead of axum's
//! plain-text defaults. Every API route reads its input through one of these.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::{header, StatusCode};
use zeroize::Zeroizing;

use super::{AppError, AppState};

/// `axum::Json`, but a malformed body is a JSON `{"error","message"}` reply, and the body must
/// be a JSON object (serde would also read a struct from an array of its fields in order,
/// which no client means and the API's document does not allow).
pub struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(request.headers()) {
            return Err(JsonRejection::from(
                axum::extract::rejection::MissingJsonContentType::default(),
            )
            .into());
        }
        let bytes = Bytes::from_request(request, state).await?;
        Ok(Self(object_from_bytes(&bytes)?))
    }
}

/// `application/json`, or another `application/…+json` type, as `axum::Json` accepts.
pub(crate) fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a body that must be a JSON object.
pub(crate) fn object_from_bytes<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, AppError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(AppError::Unprocessable(
            "the JSON body is not valid: it must be a JSON object ({…})".into(),
        ));
    }
    let axum::Json(value) = axum::Json::<T>::from_bytes(bytes)?;
    Ok(value)
}

/// `axum::extract::Query`, with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path`, with JSON errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

/// An optional JSON body: an empty body is `None`; anything else must be valid JSON for `T`
/// (a malformed body is refused, never silently read as absent).
pub struct OptionalJson<T>(pub Option<T>);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        Ok(Self(Some(object_from_bytes(&bytes)?)))
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        body_error(
            rejection.status(),
            "the path is not valid",
            rejection.body_text(),
        )
    }
}

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

/// Keeps the status axum chose for a body it could not read (413 for a body over the limit).
fn body_error(status: StatusCode, what: &str, text: String) -> AppError {
    let message = format!("{what}: {text}");
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => super::middleware::body_limit::too_large(),
        s if s.is_server_error() => AppError::Internal(message),
        StatusCode::BAD_REQUEST => AppError::BadRequest(message),
        _ => AppError::Unprocessable(message),
    }
}

impl From<BytesRejection> for AppError {
    fn from(rejection: BytesRejection) -> Self {
        body_error(
            rejection.status(),
            "the body cannot be read",
            rejection.body_text(),
        )
    }
}

impl From<MultipartRejection> for AppError {
    fn from(rejection: MultipartRejection) -> Self {
        body_error(
            rejection.status(),
            "the multipart form cannot be read",
            rejection.body_text(),
        )
    }
}

impl From<MultipartError> for AppError {
    fn from(error: MultipartError) -> Self {
        body_error(error.status(), "upload", error.body_text())
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A file upload: either the raw request body, or a `multipart/form-data` form with the file
/// in a part named `file` (a seed file) or `qr_image` (a QR screenshot) and options in the
/// other fields. Held in memory only.
pub struct Upload {
    /// Whether the body was a `multipart/form-data` form (else it is the raw body).
    pub form: bool,
    /// The uploaded file's name (from the form), if any.
    pub file_name: Option<String>,
    /// The file's bytes; `None` when a form had no `file` part.
    pub file: Option<Zeroizing<Vec<u8>>>,
    /// A form's `qr_image` part (a QR screenshot), kept apart from `file` so that neither
    /// route takes the other's part for its own.
    pub qr_image: Option<Zeroizing<Vec<u8>>>,
    /// The form's other fields (empty for a raw body). Zeroized: one may hold a key.
    pub fields: HashMap<String, Zeroizing<String>>,
}

impl Upload {
    /// A form field's value, trimmed; `None` when absent or blank.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The `password` field of a password-protected PSKC upload, as typed: not trimmed, since
    /// a password may begin or end with a space; `None` when absent or empty.
    pub fn password(&self) -> Option<Zeroizing<String>> {
        self.fields
            .get("password")
            .filter(|p| !p.is_empty())
            .map(|p| Zeroizing::new(p.to_string()))
    }
}

impl FromRequest<AppState> for Upload {
    type Rejection = AppError;

    /// Reads at most `max_upload_mb` (the routes that take an upload switch axum's 2 MB
    /// default off); a larger body is refused with 413 naming the limit, before or while it
    /// arrives, and nothing of it is kept.
    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit_mb = state.config.max_upload_mb;
        let limit = usize::try_from(u64::from(limit_mb) * 1024 * 1024).unwrap_or(usize::MAX);
        let too_large = || {
            AppError::PayloadTooLarge(format!(
                "file: the upload is larger than the limit of {limit_mb} MiB (max_upload_mb) — \
                 split the file, import it with `seedvault import` on the server, or raise \
                 max_upload_mb"
            ))
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(length) = declared.filter(|length| *length > limit) {
            // Read the refused body away (up to twice the limit, never kept) before answering:
            // a client still sending when the server closes gets a reset instead of the 413
            // that says why. Beyond that the connection is simply closed.
            if length <= limit.saturating_mul(2) {
                discard(request.into_body()).await;
            }
            return Err(too_large());
        }
        let request = request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
        Self::read(request, state).await.map_err(|e| match e {
            AppError::PayloadTooLarge(_) => too_large(),
            other => other,
        })
    }
}

/// Reads a body to its end and drops every chunk as it arrives (the body read timeout still
/// applies).
async fn discard(body: Body) {
    use futures_util::StreamExt;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        if chunk.is_err() {
            break;
        }
    }
}

impl Upload {
    async fn read(request: Request, state: &AppState) -> Result<Self, AppError> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("multipart/form-data"));
        if !is_form {
            let bytes = Bytes::from_request(request, state).await?;
            return Ok(Self {
                form: false,
                file_name: None,
                file: Some(Zeroizing::new(bytes.to_vec())),
                qr_image: None,
                fields: HashMap::new(),
            });
        }
        let mut multipart = Multipart::from_request(request, state).await?;
        let mut upload = Self {
            form: true,
            file_name: None,
            file: None,
            qr_image: None,
            fields: HashMap::new(),
        };
        while let Some(field) = multipart.next_field().await? {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "file" {
                upload.file_name = field.file_name().map(str::to_owned);
                upload.file = Some(Zeroizing::new(field.bytes().await?.to_vec()));
            } else if name == "qr_image" {
                upload.qr_image = Some(Zeroizing::new(field.bytes().await?.to_vec()));
            } else {
                let value = Zeroizing::new(field.text().await?);
                upload.fields.insert(name, value);
            }
        }
        Ok(upload)
    }
}

/// A body that is either a JSON object (`T`) or a `multipart/form-data` form (an [`Upload`]),
/// for routes that take a file beside plain fields (`POST /tokens` with a `qr_image`). Either
/// way at most `max_upload_mb` is read: those routes switch axum's 2 MB default off.
pub enum JsonOrForm<T> {
    Json(T),
    Form(Upload),
}

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for JsonOrForm<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json = json_content_type(request.headers());
        let upload = Upload::from_request(request, state).await?;
        if upload.form {
            return Ok(Self::Form(upload));
        }
        if !json {
            return Err(AppError::BadRequest(
                "send the body as JSON with Content-Type: application/json, or as \
                 multipart/form-data with the image in the part qr_image"
                    .into(),
            ));
        }
        let bytes = upload.file.unwrap_or_default();
        Ok(Self::Json(object_from_bytes(&bytes)?))
    }
}

/// Names of parameters that carry a secret and so must never travel in a URL, where proxies,
/// access logs and browser history keep them.
const SECRET_PARAMETERS: &[&str] = &["psk_hex", "psk", "password"];

/// Refuses a query string that carries a secret parameter, naming where it belongs instead.
pub fn refuse_secrets_in_query(query: Option<&str>) -> Result<(), AppError> {
    let Some(query) = query else { return Ok(()) };
    match url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| SECRET_PARAMETERS.contains(&key.as_ref()))
    {
        Some((key, _)) => Err(AppError::Unprocessable(format!(
            "{key}: a pre-shared key or password is never accepted in the URL (URLs end up in \
             logs and browser history) — send it as the form field {key} of a \
             multipart/form-data upload"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[derive(serde::Deserialize)]
    struct Patch {
        owner: Option<String>,
    }

    #[test]
    fn a_json_body_must_be_an_object_even_where_serde_would_read_a_struct_from_an_array() {
        // serde_json reads a struct from an array of its fields in order.
        assert!(serde_json::from_slice::<Patch>(b"[null]").is_ok());
        let refused = object_from_bytes::<Patch>(b" [null]").err().unwrap();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let read = object_from_bytes::<Patch>(b" {\"owner\": \"ada@example.org\"}").unwrap();
        assert_eq!(read.owner.as_deref(), Some("ada@example.org"));
    }

    #[test]
    fn json_content_types_are_those_axum_json_accepts() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            json_content_type(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/json"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!json_content_type(&HeaderMap::new()));
    }
}
