//! `GET /metrics`: the Prometheus exposition of [`crate::metrics::Metrics`].
//!
//! On the API listener it needs an auditor or admin token (a camera token gets 403): metric
//! values tell how busy each route is and how far judging lags. With `--metrics-listen ADDR`
//! a second listener serves only `/metrics`, without a token, for a scraper on a network the
//! operator trusts (bind it to loopback or a private interface).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::{Observed, CONTENT_TYPE};
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The router of the `--metrics-listen` listener: `/metrics` without a token, nothing else
/// (the same route as on the API listener, so the document describes it there).
pub(crate) fn unauthenticated_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(|State(state): State<Arc<AppState>>| scrape(state)))
        .fallback(|| async { ApiError::not_found("this listener serves only GET /metrics") })
        .with_state(state)
}

/// Prometheus text format 0.0.4 (auditor or admin; no token on `--metrics-listen`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every metric in the README's Operations, \"Metrics\"", body = String,
         content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a camera token", body = ErrorBody),
        ServerErrors
    )
)]
async fn metrics(State(state): State<Arc<AppState>>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_reader("metrics")?;
    scrape(state).await
}

/// Reads what is read at scrape time (heads, packs, snapshot status) and encodes everything.
async fn scrape(state: Arc<AppState>) -> Result<Response, ApiError> {
    let ledger = state.ledger.clone();
    let (events_head_seq, verdicts_head_seq, packs) = tokio::task::spawn_blocking(move || {
        let events = ledger.head()?.map_or(0, |h| h.seq);
        let verdicts = ledger.verdict_head()?.map_or(0, |h| h.event_seq);
        Ok::<_, camledger_eventstore::read::Error>((events, verdicts, count_packs(&ledger.git_dir())))
    })
    .await
    .map_err(ApiError::internal)??;
    let projected = state.read_model.projected();
    let snapshot = state.snapshots.as_ref().map(|status| {
        let status = status.borrow();
        let last =
            status.last_snapshot.as_ref().map(|s| (s.created_at.unix_timestamp_nanos() as f64 / 1e9, s.stored_bytes));
        (last, status.failures_in_a_row)
    });
    let observed = Observed {
        events_head_seq,
        verdicts_head_seq,
        read_model_events_seq: projected.events_seq,
        read_model_verdicts_seq: projected.verdicts_seq,
        packs,
        snapshot,
    };
    let text = state.metrics.scrape(&observed);
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))], text).into_response())
}

/// `*.pack` files in the repository's pack directory (0 when it cannot be read).
fn count_packs(git_dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(git_dir.join("objects").join("pack")) else { return 0 };
    entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".pack")).count() as u64
}

/// Middleware: times every request and counts it under its route template
/// ([`MatchedPath`], `unmatched` for the fallback) so that `/v1/events/1`, `/v1/events/2`, …
/// are one series. Streamed bodies (exports, clones) go on after the response head this
/// measures.
pub(crate) async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or("unmatched");
    state.metrics.http_request(&method, route, response.status().as_u16(), started.elapsed());
    response
}
