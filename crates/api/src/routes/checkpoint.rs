//! `GET /v1/checkpoint`: the latest signed checkpoint of this ledger from the anchor store
//! (its fields and the signed note), for auditors to keep and check later with
//! `camledger checkpoints verify` or `scripts/audit-ledger`. Any valid token may read it
//! (heads and seqs only; no event data). 404 before the first checkpoint.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::anchors::CheckpointJson;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/checkpoint", get(latest))
}

async fn latest(_caller: Caller, State(state): State<Arc<AppState>>) -> Result<Json<CheckpointJson>, ApiError> {
    match state.anchors.latest().await.map_err(ApiError::internal)? {
        Some(stored) => Ok(Json(CheckpointJson::from(&stored))),
        None => Err(ApiError::not_found("no checkpoint has been anchored yet")),
    }
}
