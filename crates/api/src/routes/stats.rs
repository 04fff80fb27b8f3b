//! `GET /v1/stats`: upload and spam statistics from the read model (auditor or admin).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::readmodel::StatsQuery;
use crate::routes::events::freshness;
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(stats))
}

/// Today's UTC date, `YYYY-MM-DD`: where `uploads_per_day` ends unless `until` says otherwise.
pub(crate) fn today() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::now_utc().date().format(format).expect("a date always formats")
}

/// Upload and spam statistics from the read model (auditor or admin).
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "read",
    security(("bearer" = []), ("session" = [])),
    params(
        ("camera" = Option<String>, Query, description = "Only this camera"),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive, on `received_at`"),
        ("until" = Option<String>, Query, description = "RFC 3339, inclusive; `uploads_per_day` ends on its day")
    ),
    responses(
        (status = 200, description = "`formats`, `top_camera_models`, `uploads_per_day`, `spam`, `cameras`, \
                                      `verdict_lag`, `projected`, `head` (see the README)", body = serde_json::Value),
        (status = 400, description = "`invalid_since`, `invalid_until`, `invalid_filter`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a camera token", body = ErrorBody),
        ServerErrors
    )
)]
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
