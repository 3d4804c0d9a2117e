//! The JSON API under `/api/v1`. Routes are registered through utoipa-axum so that the
//! OpenAPI document at `/api/v1/openapi.json` is generated from the very same table.

pub mod audit;
pub mod auth;
pub mod imports;
pub mod me;
pub mod operators;
pub mod policies;
pub mod tokens;

use axum::Json;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(title = "seedvault", description = "Seed escrow and helpdesk OTP vault. Seeds go in; only one-time codes come out."),
    tags((name = "auth", description = "passkey registration and sign-in"),
         (name = "operators", description = "operators, roles, credentials"),
         (name = "tokens", description = "capture, search and assignment of escrowed tokens"),
         (name = "reveal", description = "checklist and passkey-signed reveal of a one-time code"),
         (name = "policies", description = "reveal policies"),
         (name = "audit", description = "export and verification of the signed audit trail"),
         (name = "meta", description = "the API itself"))
)]
struct ApiDoc;

/// The OpenAPI 3 document of every `/api/v1` route.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "this document", body = serde_json::Value)))]
async fn openapi_json(
    axum::extract::State(doc): axum::extract::State<std::sync::Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json((*doc).clone())
}

/// The `/api/v1` routes (unprefixed) with their OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::register_start))
        .routes(routes!(auth::register_finish))
        .routes(routes!(auth::login_start))
        .routes(routes!(auth::login_finish))
        .routes(routes!(auth::logout))
        .routes(routes!(me::me))
        .routes(routes!(me::add_credential_start))
        .routes(routes!(me::add_credential_finish))
        .routes(routes!(me::remove_credential))
        .routes(routes!(operators::list))
        .routes(routes!(operators::invite))
        .routes(routes!(operators::update))
        .routes(routes!(tokens::capture, tokens::list))
        .routes(routes!(tokens::detail, tokens::update))
        .routes(routes!(tokens::reveal_start))
        .routes(routes!(tokens::reveal_finish))
        .routes(routes!(tokens::deliver))
        .routes(routes!(tokens::cancel))
        .routes(routes!(policies::list))
        .routes(routes!(imports::import))
        .routes(routes!(audit::export))
        .routes(routes!(audit::verify))
}

/// Builds the `/api/v1` router and its document (which lists itself too).
pub fn router() -> axum::Router<AppState> {
    let (api, mut doc) = OpenApiRouter::new()
        .nest("/api/v1", routes())
        .split_for_parts();
    let (_, self_doc) = OpenApiRouter::<std::sync::Arc<serde_json::Value>>::new()
        .nest(
            "/api/v1",
            OpenApiRouter::new().routes(routes!(openapi_json)),
        )
        .split_for_parts();
    doc.merge(self_doc);
    let doc = std::sync::Arc::new(serde_json::to_value(&doc).unwrap_or_default());
    api.route(
        "/api/v1/openapi.json",
        axum::routing::get(openapi_json).with_state(doc),
    )
}
