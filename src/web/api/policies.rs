//! `/api/v1/policies`: the loaded policies with their checks (the UI renders checklists from it).

use crate::web::extract::Json;
use axum::extract::State;

use crate::policy::Policy;
use crate::web::session::CurrentOperator;
use crate::web::AppState;

/// Every loaded policy (any signed-in role).
#[utoipa::path(get, path = "/policies", tag = "policies", operation_id = "list_policies", responses((status = 200, body = [Policy]), (status = 401)))]
pub async fn list(State(state): State<AppState>, _current: CurrentOperator) -> Json<Vec<Policy>> {
    Json(state.policies.all().to_vec())
}
