//! `GET /v1/checkpoint`: the latest signed checkpoint of this ledger from the anchor store
//! (its fields and the signed note), for auditors to keep and check later with
//! `camledger checkpoints verify` or `scripts/audit-ledger`. Any valid token may read it
//! (heads and seqs only; no event data). 404 before the first checkpoint.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::anchors::CheckpointJson;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(latest))
}

/// The latest signed checkpoint from the anchor store.
#[utoipa::path(
    get,
    path = "/v1/checkpoint",
    tag = "read",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The checkpoint; `note` is the C2SP signed note", body = CheckpointJson),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 404, description = "`not_found`: no checkpoint yet", body = ErrorBody),
        ServerErrors
    )
)]
async fn latest(_caller: Caller, State(state): State<Arc<AppState>>) -> Result<Json<CheckpointJson>, ApiError> {
    match state.anchors.latest().await.map_err(ApiError::internal)? {
        Some(stored) => Ok(Json(CheckpointJson::from(&stored))),
        None => Err(ApiError::not_found("no checkpoint has been anchored yet")),
    }
}
