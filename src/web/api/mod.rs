//! The JSON API under `/api/v1`. Routes are registered through utoipa-axum so that the
//! OpenAPI document at `/api/v1/openapi.json` is generated from the very same table.

pub mod approvals;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod imports;
pub mod me;
pub mod operators;
pub mod policies;
pub mod tokens;
pub mod webauthn;

use axum::Json;
use serde_json::{json, Value};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::router::UtoipaMethodRouterExt;
use utoipa_axum::routes;

use super::{AppError, AppState, ErrorBody};

#[derive(OpenApi)]
#[openapi(
    info(title = "seedvault", description = "Seed escrow and helpdesk OTP vault. Seeds go in; only one-time codes come out."),
    tags((name = "auth", description = "passkey registration and sign-in"),
         (name = "operators", description = "operators, roles, credentials"),
         (name = "tokens", description = "capture, search and assignment of escrowed tokens"),
         (name = "reveal", description = "checklist and passkey-signed reveal of a one-time code; four-eyes approvals"),
         (name = "policies", description = "reveal policies"),
         (name = "backup", description = "encrypted backups of the whole vault"),
         (name = "audit", description = "export and verification of the signed audit trail"),
         (name = "meta", description = "the API itself")),
    components(schemas(ErrorBody))
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
        // A QR image may ride in the body: the route reads at most max_upload_mb itself
        // (`extract::JsonOrForm`), instead of axum's 2 MB.
        .routes(
            routes!(tokens::capture, tokens::list)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .routes(routes!(tokens::qr_preview).layer(axum::extract::DefaultBodyLimit::disable()))
        .routes(routes!(tokens::generate))
        .routes(routes!(tokens::confirm_programming))
        .routes(routes!(tokens::detail, tokens::update))
        .routes(routes!(tokens::reveal_start))
        .routes(routes!(tokens::reveal_finish))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::detail))
        .routes(routes!(approvals::approve_start))
        .routes(routes!(approvals::approve_finish))
        .routes(routes!(approvals::deny))
        .routes(routes!(tokens::deliver))
        .routes(routes!(tokens::cancel))
        .routes(routes!(tokens::delivery_link))
        .routes(routes!(tokens::verify))
        .routes(routes!(tokens::ship))
        .routes(routes!(tokens::ship_batch))
        .routes(routes!(policies::list))
        // The upload enforces max_upload_mb itself (`extract::Upload`), instead of axum's 2 MB.
        .routes(routes!(imports::import).layer(axum::extract::DefaultBodyLimit::disable()))
        .routes(routes!(audit::export))
        .routes(routes!(audit::verify))
        .routes(routes!(backups::create))
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
    // The operational routes outside /api/v1, documented with the rest so the authorization
    // matrix and the contract test cover them (/healthz stays undocumented liveness).
    let (operational, operational_doc) = OpenApiRouter::new()
        .routes(routes!(super::health::readyz))
        .routes(routes!(super::prometheus::with_token))
        .split_for_parts();
    doc.merge(operational_doc);
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    declare_layer_errors(&mut doc);
    let doc = std::sync::Arc::new(doc);
    api.merge(operational)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(openapi_json).with_state(doc),
        )
        // axum adds the `Allow` header to this reply.
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::MethodNotAllowed(format!(
        "{} does not support {method}; the Allow header lists what it does",
        uri.path()
    ))
}

/// utoipa 5.5 writes a link's fields in Rust's spelling (`operation_id`); OpenAPI spells them
/// `operationId`, `operationRef` and `requestBody`, and clients ignore links without them.
fn fix_link_field_names(response: &mut Value) {
    let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
        return;
    };
    for link in links.values_mut().filter_map(Value::as_object_mut) {
        for (rust, openapi) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(rust) {
                link.insert(openapi.into(), value);
            }
        }
    }
}

/// Declares on every operation the errors that come from the layers around its handler rather
/// than from the handler itself, so that each is declared once, here, for every route it can
/// happen on: the extractors in `web::extract` (a body that is not JSON, over the size limit or
/// not of the declared shape; a path or query parameter that does not parse) and the `Origin`
/// check on state-changing methods. Every error response then gets the `ErrorBody` schema.
fn declare_layer_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            let mut layer = Vec::new();
            if operation.get("requestBody").is_some() {
                layer.extend([
                    ("400", "the body cannot be read as the declared content type (e.g. JSON without `Content-Type: application/json`)"),
                    ("413", "the body is over the size limit"),
                    ("422", "the body does not have the declared shape; the message names the field"),
                ]);
            }
            let located = |place: &str| {
                operation["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
            };
            if located("path") {
                layer.push(("400", "a path parameter does not parse"));
            }
            if located("query") {
                layer.push((
                    "422",
                    "a query parameter does not parse or is out of range; the message names it",
                ));
            }
            if method != "get" {
                layer.push(("403", "the `Origin` header is missing or not this vault's (state-changing requests must come from its pages)"));
            }
            let Some(responses) = operation["responses"].as_object_mut() else {
                continue;
            };
            for (status, description) in layer {
                responses
                    .entry(status)
                    .or_insert_with(|| json!({ "description": description }));
            }
            for (status, response) in responses.iter_mut() {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if is_error && response.get("content").is_none() {
                    response["content"] = json!({ "application/json": {
                        "schema": { "$ref": "#/components/schemas/ErrorBody" } } });
                }
                fix_link_field_names(response);
            }
        }
    }
}
