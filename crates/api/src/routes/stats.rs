//! `GET /v1/stats`: upload and spam statistics from the read model (auditor or admin).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::readmodel::StatsQuery;
use crate::routes::events::freshness;
use crate::state::AppState;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/stats", get(stats))
}

/// Today's UTC date, `YYYY-MM-DD`: where `uploads_per_day` ends unless `until` says otherwise.
pub(crate) fn today() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::now_utc().date().format(format).expect("a date always formats")
}

#[tracing::instrument(skip_all)]
async fn stats(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    caller.require_reader("stats")?;
    let query = StatsQuery::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let freshness = freshness(&state).await?;
    let stats = state.read_model.stats(&query, &today()).await?;
    let mut body = serde_json::to_value(&stats).map_err(ApiError::internal)?;
    body["head"] = serde_json::to_value(freshness.head).map_err(ApiError::internal)?;
    Ok((freshness.headers(), Json(body)).into_response())
}
