//! `GET /v1/export.jsonl?after=&to=`: every event as one JSON line (auditor or admin),
//! streamed from the read model page by page.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::readmodel::{ExportRow, ReadModel};
use crate::routes::events::{entry_json, freshness};
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

/// Events per read-model page while streaming.
pub(crate) const EXPORT_PAGE: usize = 1000;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(export))
}

/// One export line: `{"id", "event", "verdict", "image"}` (`image`: the path of the bytes,
/// which stay in git; `event.sha256` checks them).
pub(crate) fn export_line(row: &ExportRow) -> Result<Value, crate::readmodel::Error> {
    let mut line = entry_json(row)?;
    line["image"] = Value::from(format!("/v1/events/{}/image", row.seq));
    Ok(line)
}

/// `after` (default 0) and `to` (default: the head) of an export.
pub(crate) fn export_range<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(u64, Option<u64>), ApiError> {
    let (mut after, mut to) = (0, None);
    for (name, value) in params {
        let seq = value.parse::<u64>();
        match (name, seq) {
            ("after", Ok(seq)) => after = seq,
            ("to", Ok(seq)) => to = Some(seq),
            ("after", Err(_)) => {
                return Err(ApiError::bad_request("invalid_after", "after must be a sequence number (0 for the start)"))
            }
            ("to", Err(_)) => return Err(ApiError::bad_request("invalid_to", "to must be a sequence number")),
            (other, _) => {
                return Err(ApiError::bad_request(
                    "invalid_filter",
                    format!("unknown parameter {other:?}; use after, to"),
                ))
            }
        }
    }
    Ok((after, to))
}

/// Pages of export lines for seqs `after + 1 ..= to`, each page one chunk of bytes.
pub(crate) fn export_stream(
    model: Arc<ReadModel>,
    after: u64,
    to: u64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, crate::readmodel::Error>> + Send {
    futures_util::stream::try_unfold(after, move |after| {
        let model = Arc::clone(&model);
        async move {
            if after >= to {
                return Ok(None);
            }
            let rows = model.export_page(after, to, EXPORT_PAGE).await?;
            let Some(last) = rows.last().map(|r| r.seq as u64) else { return Ok(None) };
            let mut chunk = Vec::new();
            for row in &rows {
                serde_json::to_writer(&mut chunk, &export_line(row)?)
                    .expect("serialising a JSON value into memory cannot fail");
                chunk.push(b'\n');
            }
            Ok(Some((bytes::Bytes::from(chunk), last)))
        }
    })
}

/// Every event in a seq range, streamed as JSON Lines (auditor or admin).
#[utoipa::path(
    get,
    path = "/v1/export.jsonl",
    tag = "read",
    security(("bearer" = [])),
    params(
        ("after" = Option<u64>, Query, description = "Events after this seq (default 0)"),
        ("to" = Option<u64>, Query, description = "Through this seq (default the head)")
    ),
    responses(
        (status = 200, description = "One `{\"id\", \"event\", \"verdict\", \"image\"}` per line",
         body = String, content_type = "application/jsonl",
         headers(("X-Export-Through" = u64, description = "The last seq included"))),
        (status = 400, description = "`invalid_after`, `invalid_to`, `invalid_filter`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "`forbidden`: a camera token", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all)]
async fn export(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    caller.require_reader("the export")?;
    let (after, to) = export_range(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let freshness = freshness(&state).await?;
    // Never past what the read model holds: `X-Export-Through` says where this export ends.
    let through = to.unwrap_or(freshness.head.events_seq).min(freshness.projected.events_seq);
    let mut headers = freshness.headers();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jsonl"));
    headers.insert("x-export-through", HeaderValue::from(through));
    let body = Body::from_stream(export_stream(Arc::clone(&state.read_model), after, through));
    Ok((headers, body).into_response())
}
