//! `GET /v1/events/{seq}/verdict?wait=N`: status back to the sender. Answers the verdict as
//! soon as it exists, waiting at most `wait` seconds (long poll), else `204 No Content`.
//!
//! Verdicts are written by the in-process workers or by `camledger worker` in another
//! process, so the one signal common to both is git: the wait follows the read model's
//! projector (it polls the verdicts ref every 100 ms and is woken here), and re-reads git at
//! least every [`RECHECK`] in case the projector is off or behind. A waiting request holds
//! no lock and no buffer: one subscription to the projector's progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::readmodel::Projected;
use crate::routes::events::{parse_seq, read_one};
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

/// The longest a request may wait (`wait` above it is a 400).
pub(crate) const MAX_WAIT_SECS: u64 = 60;
/// Git is read again at least this often while waiting.
const RECHECK: Duration = Duration::from_millis(250);

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(verdict))
}

/// The event's verdict as soon as it exists (a long poll).
#[utoipa::path(
    get,
    path = "/v1/events/{seq}/verdict",
    tag = "read",
    security(("bearer" = [])),
    params(
        ("seq" = u64, Path, description = "The event's sequence number, from 1"),
        ("wait" = Option<u64>, Query, description = "Seconds to wait for the verdict, 0-60 (default 0)")
    ),
    responses(
        (status = 200, description = "The verdict, as `verdict` in `GET /v1/events/{seq}`", body = serde_json::Value),
        (status = 204, description = "Not judged within `wait`"),
        (status = 400, description = "`invalid_seq`, `invalid_wait`, `invalid_filter`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event, or another camera's (at once)", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all, fields(seq = %seq))]
async fn verdict(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(seq): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let seq = parse_seq(&seq)?;
    let wait = wait_of(&params)?;
    let deadline = Instant::now() + wait;
    loop {
        // 404 for an unknown seq or another camera's event, before any waiting.
        let mut body = read_one(&state, &caller, seq).await?;
        if !body["verdict"].is_null() {
            return Ok(Json(body["verdict"].take()).into_response());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        let target = Projected { events_seq: 0, verdicts_seq: seq };
        state.read_model.wait_for(target, (deadline - now).min(RECHECK)).await;
    }
}

fn wait_of(params: &HashMap<String, String>) -> Result<Duration, ApiError> {
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "wait") {
        return Err(ApiError::bad_request(
            "invalid_filter",
            format!("unknown parameter {unknown:?}; only wait=SECONDS"),
        ));
    }
    let Some(text) = params.get("wait") else { return Ok(Duration::ZERO) };
    match text.parse::<u64>() {
        Ok(secs) if secs <= MAX_WAIT_SECS => Ok(Duration::from_secs(secs)),
        _ => Err(ApiError::bad_request(
            "invalid_wait",
            format!("wait must be whole seconds from 0 to {MAX_WAIT_SECS}, not {text:?}"),
        )),
    }
}
