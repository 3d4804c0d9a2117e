//! Server-rendered pages (maud), one file per page family. Pages call the same domain
//! functions as the JSON API; the WebAuthn steps run in `templates/seedvault.js` against the
//! API. Errors render as real pages through [`PageError`].

mod audit;
mod auth;
mod dashboard;
mod import;
mod layout;
mod operators;
mod programming;
mod tokens;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use tower_sessions::Session;

pub use layout::{page, PageCtx};

use std::marker::PhantomData;
use std::ops::Deref;

use super::session::{CurrentOperator, RoleRule};
use super::{AppError, AppState};
use crate::operators::Role;

const FLASH: &str = "flash";

/// A message shown once on the next page (after a redirect).
#[derive(serde::Serialize, serde::Deserialize, Clone)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

pub async fn set_flash(session: &Session, ok: bool, text: impl Into<String>) {
    let _ = session
        .insert(
            FLASH,
            Flash {
                ok,
                text: text.into(),
            },
        )
        .await;
}

/// An error on a page: rendered as a page with the status of the underlying [`AppError`].
pub struct PageError {
    error: AppError,
    ctx: Option<Box<PageCtx>>,
}

impl<E: Into<AppError>> From<E> for PageError {
    fn from(e: E) -> Self {
        Self {
            error: e.into(),
            ctx: None,
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        if let AppError::Internal(detail) = &self.error {
            tracing::error!(error = %detail, "page failed");
        }
        let (title, advice) = match status {
            StatusCode::UNAUTHORIZED => (
                "Sign in required",
                "Your session has ended or you have not signed in yet.",
            ),
            StatusCode::FORBIDDEN => (
                "Not allowed",
                "Your roles do not allow this. Ask an admin if you need it.",
            ),
            StatusCode::NOT_FOUND => (
                "Not found",
                "Check the address, or search for the token by serial or owner.",
            ),
            StatusCode::TOO_MANY_REQUESTS => ("Too many attempts", "Wait before trying again."),
            StatusCode::INSUFFICIENT_STORAGE => (
                "The disk is full",
                "Nothing was changed. Tell the admin to free space on the vault's disk, then try again.",
            ),
            StatusCode::SERVICE_UNAVAILABLE => (
                "The vault is busy",
                "Nothing was changed. Wait a moment and try again.",
            ),
            StatusCode::INTERNAL_SERVER_ERROR => (
                "Something went wrong",
                "Nothing was changed. Try again; if it persists, tell the admin.",
            ),
            _ => (
                "That did not work",
                "Nothing was changed. Correct the input and try again.",
            ),
        };
        let message = match &self.error {
            AppError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let ctx = self.ctx.map(|c| *c).unwrap_or_default();
        let body = html! {
            div.center.card {
                h1 { (title) }
                p.error-box role="alert" { (message) }
                p { (advice) }
                div.actions {
                    @if status == StatusCode::UNAUTHORIZED { a.button href="/login" { "Sign in with a passkey" } }
                    a.button.secondary href="/" { "Back to the dashboard" }
                }
            }
        };
        let mut response = (status, page(&ctx, title, body)).into_response();
        if let Some(seconds) = self.error.retry_after_seconds() {
            if let Ok(v) = seconds.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// The signed-in operator on a page; anonymous visitors get the 401 page.
pub struct PageOperator {
    pub current: CurrentOperator,
    pub ctx: PageCtx,
}

impl PageOperator {
    pub fn has(&self, role: Role) -> bool {
        self.current.operator.roles.contains(role)
    }

    /// Wraps an error so its page keeps the navigation of the signed-in operator.
    pub fn fail(&self, error: impl Into<AppError>) -> PageError {
        PageError {
            error: error.into(),
            ctx: Some(Box::new(self.ctx.clone())),
        }
    }

    /// A form post that was refused (bad input, a conflict, a limit) is told on the page it
    /// redirects to, as a flash message; only a server-side failure (internal, disk full, busy) becomes
    /// an error page.
    pub async fn flash_refusal(&self, error: impl Into<AppError>) -> Result<(), PageError> {
        let error = error.into();
        if error.status().is_server_error() {
            return Err(self.fail(error));
        }
        set_flash(&self.current.session, false, error.to_string()).await;
        Ok(())
    }

    /// Flashes the outcome of a form post: `success` words what was done, or the refusal.
    pub async fn flash_outcome<T, E: Into<AppError>>(
        &self,
        result: Result<T, E>,
        success: impl FnOnce(T) -> String,
    ) -> Result<(), PageError> {
        match result {
            Ok(value) => {
                set_flash(&self.current.session, true, success(value)).await;
                Ok(())
            }
            Err(error) => self.flash_refusal(error).await,
        }
    }
}

impl FromRequestParts<AppState> for PageOperator {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let current = CurrentOperator::from_request_parts(parts, state).await?;
        let flash = current.session.remove::<Flash>(FLASH).await.ok().flatten();
        let ctx = PageCtx {
            operator: Some((
                current.operator.name.clone(),
                current.operator.roles.clone(),
            )),
            development_slot: state.vault.has_development_slot(),
            flash,
            path: parts.uri.path().to_owned(),
        };
        Ok(Self { current, ctx })
    }
}

/// The signed-in operator on a page that admits only `R`'s roles (the same rules as the API's
/// [`Authorized`](super::session::Authorized)): anyone else gets the 403 page, with their own navigation, before the
/// handler runs or a form is read.
pub struct PageAuthorized<R: RoleRule> {
    op: PageOperator,
    _rule: PhantomData<R>,
}

impl<R: RoleRule> Deref for PageAuthorized<R> {
    type Target = PageOperator;

    fn deref(&self) -> &PageOperator {
        &self.op
    }
}

impl<R: RoleRule + Send + Sync> FromRequestParts<AppState> for PageAuthorized<R> {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let op = PageOperator::from_request_parts(parts, state).await?;
        if let Err(refusal) = op.current.require_any(R::ROLES) {
            return Err(op.fail(refusal));
        }
        Ok(Self {
            op,
            _rule: PhantomData,
        })
    }
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../templates/style.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../templates/seedvault.js"),
    )
}

async fn not_found(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
) -> Response {
    let (mut parts, _) = request.into_parts();
    if parts.uri.path().starts_with("/api/") {
        return AppError::NotFound(format!(
            "no API route {} — see /api/v1/openapi.json",
            parts.uri.path()
        ))
        .into_response();
    }
    let ctx = PageOperator::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .map(|p| Box::new(p.ctx));
    PageError {
        error: AppError::NotFound("there is no page at this address".into()),
        ctx,
    }
    .into_response()
}

/// Every page route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/style.css", get(stylesheet))
        .route("/static/seedvault.js", get(script))
        .route("/login", get(auth::login))
        .route("/logout", post(auth::logout))
        .route("/invite/{token}", get(auth::invite))
        .route("/", get(dashboard::dashboard))
        .route("/me", get(operators::me))
        .route(
            "/me/credentials/{id}/remove",
            post(operators::remove_credential),
        )
        .route("/operators", get(operators::list).post(operators::invite))
        .route("/operators/{name}", post(operators::update))
        .route("/policies", get(operators::policies))
        .route("/tokens", get(tokens::list))
        .route("/tokens/new", get(tokens::new_form).post(tokens::create))
        // The QR image is read by `extract::Upload`, which enforces max_upload_mb itself.
        .route(
            "/tokens/new/qr",
            post(tokens::create_from_qr).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/tokens/generate",
            get(programming::form).post(programming::create),
        )
        .route(
            "/tokens/{serial}/programming",
            get(programming::show).post(programming::confirm),
        )
        .route("/tokens/{serial}", get(tokens::detail))
        .route("/tokens/{serial}/reveal", get(tokens::reveal))
        .route("/tokens/{serial}/delivery", post(tokens::deliver))
        .route("/tokens/{serial}/cancel", post(tokens::cancel))
        .route("/audit", get(audit::search))
        // The upload enforces max_upload_mb itself (`extract::Upload`), instead of axum's 2 MB.
        .route(
            "/import",
            get(import::page_get)
                .post(import::page_post)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .fallback(not_found)
}
