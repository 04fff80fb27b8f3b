//! Probes, no token needed:
//! - `GET /healthz`: liveness plus the ledger head. The scheduled-snapshot status (which can
//!   carry backup error text) is added only for an auditor or admin token.
//! - `GET /readyz`: 200 while the writer accepts appends, else 503 with the reason — what a
//!   load balancer should route on.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::openapi::ServerErrors;
use crate::state::{writer_readiness, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// `GET /healthz`'s answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // The schema of the `json!` answer below.
struct Health {
    /// Always `ok`.
    status: String,
    /// This binary's version.
    version: String,
    events_head_seq: Option<u64>,
    events_head_id: Option<String>,
    /// With an auditor or admin token: the scheduled snapshots' last outcome (`null` when
    /// none are scheduled).
    snapshots: Option<Value>,
    /// With an auditor or admin token: last checkpoint, last error, failures in a row.
    checkpoints: Option<Value>,
}

/// Liveness and the ledger head; more with an auditor or admin token (none needed).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Alive", body = Health), ServerErrors)
)]
async fn healthz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let ledger = state.ledger.clone();
    let head = tokio::task::spawn_blocking(move || ledger.head()).await.map_err(ApiError::internal)??;
    let mut body = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "events_head_seq": head.as_ref().map(|h| h.seq),
        "events_head_id": head.as_ref().map(|h| h.id.clone()),
    });
    if Caller::optional(&headers, &state).await.is_some_and(|c| c.camera_scope().is_none()) {
        body["snapshots"] = json!(state.snapshots.as_ref().map(|s| s.borrow().clone()));
        body["checkpoints"] = json!(state.anchors.status_snapshot());
    }
    Ok(Json(body))
}

/// Readiness: whether the event writer accepts appends. Route load balancers on this one.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = serde_json::Value),
        (status = 503, description = "`not_ready`, with the reason and `Retry-After`", body = ErrorBody)
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match writer_readiness(&state) {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        // Built here, not as an `ApiError`: probes poll this, and the writer's failure was
        // already logged when it happened.
        Err(reason) => {
            let body = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                format!("the event writer does not accept appends: {reason}"),
            )
            .body();
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "5")], Json(body)).into_response()
        }
    }
}
