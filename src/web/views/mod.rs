//! Server-rendered pages (maud), one file per page family. Pages call the same domain
//! functions as the JSON API; the WebAuthn steps run in `templates/seedvault.js` against the
//! API. Errors render as real pages through [`PageError`].

mod approvals;
mod audit;
mod auth;
mod dashboard;
mod deliver;
mod directory;
mod import;
mod layout;
mod operators;
mod programming;
mod shipping;
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
        // One COUNT for approvers; a failure only hides the number.
        let pending_approvals =
            crate::tokens::approval::pending_count(&state.env(), &current.operator)
                .await
                .ok()
                .flatten();
        let ctx = PageCtx {
            operator: Some((
                current.operator.name.clone(),
                current.operator.roles.clone(),
            )),
            development_slot: state.vault.has_development_slot(),
            flash,
            path: parts.uri.path().to_owned(),
            pending_approvals,
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

/// The print stylesheet: slips two to a page on A4 or US Letter, the page shell hidden.
async fn print_stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../templates/print.css"),
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

/// Every page a browser can open (GET), as route templates. The accessibility test opens each
/// for every role and runs axe-core over it; a unit test holds this list to [`router`], so a
/// new page cannot skip the check.
pub const PAGES: &[&str] = &[
    "/login",
    "/invite/{token}",
    "/",
    "/me",
    "/operators",
    "/policies",
    "/tokens",
    "/tokens/new",
    "/tokens/{serial}",
    "/tokens/{serial}/reveal",
    "/audit",
    "/import",
    "/directory",
    "/deliver/{token}",
    "/approvals",
    "/approvals/{id}",
    "/tokens/generate",
    "/tokens/{serial}/programming",
];

/// Every page route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/style.css", get(stylesheet))
        .route("/static/print.css", get(print_stylesheet))
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
        .route("/tokens/{serial}/verify", post(shipping::verify))
        .route("/tokens/{serial}/shipment", post(shipping::ship))
        .route("/tokens/bulk", post(shipping::bulk))
        // The CSV is read by `extract::Upload`, which enforces max_upload_mb itself.
        .route(
            "/tokens/batch",
            post(shipping::batch).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/tokens/{serial}/delivery-link",
            post(tokens::delivery_link),
        )
        .route(
            "/deliver/{token}",
            get(deliver::show).post(deliver::confirm),
        )
        .route("/approvals", get(approvals::list))
        .route("/approvals/{id}", get(approvals::detail))
        .route("/audit", get(audit::search))
        .route(
            "/directory",
            get(directory::page_get)
                .post(directory::page_post)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/directory/ldap", post(directory::ldap_post))
        // The upload enforces max_upload_mb itself (`extract::Upload`), instead of axum's 2 MB.
        .route(
            "/import",
            get(import::page_get)
                .post(import::page_post)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .fallback(not_found)
}

#[cfg(test)]
mod page_list_tests {
    /// The GET routes in `router()`'s source, static files aside.
    fn get_routes() -> Vec<String> {
        let source = include_str!("mod.rs");
        let body = source
            .split("pub fn router() -> Router<AppState> {")
            .nth(1)
            .and_then(|rest| rest.split(".fallback(").next())
            .unwrap_or_default();
        body.split(".route(")
            .skip(1)
            .filter(|route| route.contains("get("))
            .filter_map(|route| route.split('"').nth(1))
            .filter(|path| !path.starts_with("/static/"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_page_route_is_on_the_list_the_accessibility_test_walks() {
        let routes = get_routes();
        assert!(
            routes.len() >= 10,
            "the route scan found too few: {routes:?}"
        );
        let missing: Vec<&String> = routes
            .iter()
            .filter(|r| !super::PAGES.contains(&r.as_str()))
            .collect();
        assert!(missing.is_empty(), "add to views::PAGES: {missing:?}");
        let stale: Vec<&&str> = super::PAGES
            .iter()
            .filter(|p| !routes.iter().any(|r| r == *p))
            .collect();
        assert!(
            stale.is_empty(),
            "no longer routed, remove from views::PAGES: {stale:?}"
        );
    }
}
