//! `GET /healthz`: liveness plus the ledger head, no token needed.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::AppState;
use crate::error::ApiError;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let ledger = state.ledger.clone();
    let head = tokio::task::spawn_blocking(move || ledger.head()).await.map_err(ApiError::internal)??;
    let snapshots = state.snapshots.as_ref().map(|s| s.borrow().clone());
    Ok(Json(json!({
        "snapshots": snapshots,
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "events_head_seq": head.as_ref().map(|h| h.seq),
        "events_head_id": head.as_ref().map(|h| h.id.clone()),
    })))
}
