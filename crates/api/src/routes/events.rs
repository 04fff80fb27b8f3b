//! Reading the ledger: `GET /v1/events`, `GET /v1/events/{seq}`, `GET /v1/events/{seq}/image`.
//!
//! The listing (with its search filters) is answered from the read model, in time that does
//! not grow with history; one event and its image are read from git.
//!
//! Auditor and admin tokens read everything; a camera token reads only its own events (an
//! event of another camera answers 404, as if it did not exist), and where its own event
//! refers to another camera's (`duplicate_of`, a verdict's `near_duplicate_of`) it reads
//! `"other-camera"` instead of that seq.
//!
//! Every seq in a path or query is range-checked against the head before the ledger is
//! asked: a seq past the head is a 404, never arithmetic on an absurd number.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use camledger_eventstore::{Ledger, StoredEvent};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::readmodel::{ExportRow, Filters, Projected};
use crate::routes::openapi::{Binary, ServerErrors};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(one)).routes(routes!(image))
}

/// An event as `GET /v1/events`, `GET /v1/events/{seq}`, the export and the stream show it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // The schema of the `json!` answers below.
pub(crate) struct EventEntry {
    /// The event's commit id.
    id: String,
    /// `event.json` as in git (docs/event-format.md).
    event: Value,
    /// `verdict.json` plus its commit `id`, `top_label`, `spam_threshold` and
    /// `scene_distance`; `null` until judged.
    verdict: Option<Value>,
}

/// A page of `GET /v1/events`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // The schema of the `json!` answer below.
struct EventPage {
    events: Vec<EventEntry>,
    /// Where the next page starts (`after=`); `null`: nothing follows.
    next_after: Option<u64>,
}

/// What a camera reads instead of the seq of another camera's event.
pub(crate) const OTHER_CAMERA: &str = "other-camera";

/// Runs blocking ledger reads off the async workers.
async fn blocking<T: Send + 'static>(
    ledger: &Ledger,
    read: impl FnOnce(&Ledger) -> Result<T, camledger_eventstore::read::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let ledger = ledger.clone();
    tokio::task::spawn_blocking(move || read(&ledger)).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

/// The camera of each of `seqs` that exists (a failed read leaves the seq out, which callers
/// treat as "not yours").
pub(crate) async fn cameras_of(ledger: &Ledger, seqs: Vec<u64>) -> HashMap<u64, String> {
    if seqs.is_empty() {
        return HashMap::new();
    }
    let read = blocking(ledger, move |l| {
        let head = l.head()?.map_or(0, |h| h.seq);
        let mut cameras = HashMap::new();
        for seq in seqs.into_iter().collect::<BTreeSet<_>>() {
            if (1..=head).contains(&seq) {
                if let Ok(event) = l.event(seq) {
                    cameras.insert(seq, event.record.camera);
                }
            }
        }
        Ok(cameras)
    });
    read.await.unwrap_or_default()
}

/// Replaces `json[field]` (a seq) by `"other-camera"` unless that event is `camera`'s.
fn mask_reference(json: &mut Value, field: &str, camera: &str, cameras: &HashMap<u64, String>) {
    if let Some(seq) = json.get(field).and_then(Value::as_u64) {
        if cameras.get(&seq).map(String::as_str) != Some(camera) {
            json[field] = json!(OTHER_CAMERA);
        }
    }
}

/// Seqs referred to by these event and verdict bodies.
fn references(bodies: &[Value]) -> Vec<u64> {
    bodies
        .iter()
        .flat_map(|b| [b["event"]["duplicate_of"].as_u64(), b["verdict"]["near_duplicate_of"].as_u64()])
        .flatten()
        .collect()
}

/// For a camera caller, hides other cameras' seqs in `bodies` (event JSON as [`event_json`]
/// makes it, with an optional `verdict`).
async fn mask_other_cameras(ledger: &Ledger, caller: &Caller, bodies: &mut [Value]) {
    let Some(camera) = caller.camera_scope() else { return };
    mask_for_camera(ledger, camera, bodies).await;
}

/// Hides, in `bodies`, the seqs of events that are not `camera`'s (what that camera reads).
pub(crate) async fn mask_for_camera(ledger: &Ledger, camera: &str, bodies: &mut [Value]) {
    let cameras = cameras_of(ledger, references(bodies)).await;
    for body in bodies.iter_mut() {
        mask_reference(&mut body["event"], "duplicate_of", camera, &cameras);
        if body["verdict"].is_object() {
            mask_reference(&mut body["verdict"], "near_duplicate_of", camera, &cameras);
        }
    }
}

/// `Err(NotFound)` unless `seq` is at most the head's seq.
fn check_exists(ledger: &Ledger, seq: u64) -> Result<(), camledger_eventstore::read::Error> {
    match ledger.head()? {
        Some(head) if seq <= head.seq => Ok(()),
        _ => Err(camledger_eventstore::read::Error::NotFound(format!("seq {seq}"))),
    }
}

pub(crate) fn parse_seq(text: &str) -> Result<u64, ApiError> {
    match text.parse::<u64>() {
        Ok(seq) if seq >= 1 => Ok(seq),
        _ => Err(ApiError::bad_request(
            "invalid_seq",
            format!("{text:?} is not an event sequence number (1, 2, 3, ...)"),
        )),
    }
}

fn event_json(event: &StoredEvent) -> Value {
    json!({ "id": event.id, "event": event.record })
}

/// The verdict as `verdict.json` has it, plus the verdict commit's id and, read from its
/// scores, the model's top label (`{"label", "probability"}`), the spam threshold in force and
/// the scene distance (each `null` when the verdict does not record it).
pub(crate) fn verdict_json(stored: &camledger_eventstore::verdict::StoredVerdict) -> Value {
    let v = &stored.verdict;
    let top_label = camledger_processor::judge::top_label(&v.scores)
        .map(|(label, probability)| json!({ "label": label, "probability": probability }));
    json!({
        "top_label": top_label,
        "spam_threshold": v.scores.get(camledger_processor::verdict::SPAM_THRESHOLD),
        "scene_distance": v.scores.get(camledger_processor::scene::SCENE_DISTANCE),
        "id": stored.id,
        "event_seq": v.event_seq,
        "event_id": v.event_id,
        "spam": v.spam,
        "reasons": v.reasons,
        "scores": v.scores,
        "near_duplicate_of": v.near_duplicate_of,
        "model_sha256": v.model_sha256,
        "processor_version": v.processor_version,
        "perceptual_hash": v.perceptual_hash,
    })
}

/// One event and its verdict (`null` until judged).
#[utoipa::path(
    get,
    path = "/v1/events/{seq}",
    tag = "read",
    security(("bearer" = []), ("session" = [])),
    params(("seq" = u64, Path, description = "The event's sequence number, from 1")),
    responses(
        (status = 200, description = "The event", body = EventEntry),
        (status = 400, description = "`invalid_seq`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event, or another camera's", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all, fields(seq = %seq))]
async fn one(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(seq): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let seq = parse_seq(&seq)?;
    Ok(Json(read_one(&state, &caller, seq).await?))
}

/// One event with its verdict (`null` until judged) as `caller` may see it: 404 for a seq
/// past the head or another camera's event, references to other cameras' events masked.
pub(crate) async fn read_one(state: &AppState, caller: &Caller, seq: u64) -> Result<Value, ApiError> {
    let (event, verdict) = blocking(&state.ledger, move |l| {
        check_exists(l, seq)?;
        Ok((l.event(seq)?, l.verdict(seq)?))
    })
    .await?;
    if !caller.may_read(&event.record.camera) {
        return Err(ApiError::not_found(format!("no event {seq}")));
    }
    let mut body = event_json(&event);
    body["verdict"] = verdict.map_or(Value::Null, |v| verdict_json(&v));
    let mut bodies = [body];
    mask_other_cameras(&state.ledger, caller, &mut bodies).await;
    let [body] = bodies;
    Ok(body)
}

/// The image bytes as uploaded, checked against their SHA-256 on the way out.
#[utoipa::path(
    get,
    path = "/v1/events/{seq}/image",
    tag = "read",
    security(("bearer" = []), ("session" = [])),
    params(
        ("seq" = u64, Path, description = "The event's sequence number, from 1"),
        ("Range" = Option<String>, Header, description = "One byte range (RFC 9110)"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` already held")
    ),
    responses(
        (status = 200, description = "The image", content(
            (Binary = "image/jpeg"), (Binary = "image/png"), (Binary = "image/webp")
        ), headers(("ETag" = String, description = "`\"<sha256>\"`"))),
        (status = 206, description = "The range asked for, with `Content-Range`", body = Binary, content_type = "image/*"),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 400, description = "`invalid_seq`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event, or another camera's", body = ErrorBody),
        (status = 416, description = "`range_not_satisfiable`", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all, fields(seq = %seq))]
async fn image(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(seq): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let seq = parse_seq(&seq)?;
    let (record, bytes) = blocking(&state.ledger, move |l| {
        check_exists(l, seq)?;
        l.image(seq)
    })
    .await?;
    if !caller.may_read(&record.camera) {
        return Err(ApiError::not_found(format!("no event {seq}")));
    }
    let etag = format!("\"{}\"", record.sha256);
    let etag_value = HeaderValue::from_str(&etag).map_err(ApiError::internal)?;
    let content_type = HeaderValue::from_str(&record.media_type).map_err(ApiError::internal)?;
    let extension = record.image.rsplit('.').next().unwrap_or("bin");
    let disposition =
        HeaderValue::from_str(&format!("inline; filename=\"event-{seq}.{extension}\"")).map_err(ApiError::internal)?;
    // The bytes are whatever a camera sent: never let a browser sniff them into HTML or
    // run anything from them.
    let common = [
        (header::ETAG, etag_value),
        (header::CONTENT_TYPE, content_type),
        (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
        (header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'")),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let total = bytes.len() as u64;
    match requested_range(&headers, total) {
        RangeRequest::Whole => Ok((StatusCode::OK, common, Body::from(bytes)).into_response()),
        RangeRequest::Part { start, end } => {
            let content_range =
                HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")).map_err(ApiError::internal)?;
            let part = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(start, end)| bytes.get(start..=end))
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("range {start}-{end} outside {total} bytes")))?
                .to_vec();
            Ok((StatusCode::PARTIAL_CONTENT, common, [(header::CONTENT_RANGE, content_range)], Body::from(part))
                .into_response())
        }
        RangeRequest::Unsatisfiable => {
            let mut error = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the image has {total} bytes; ask for one range inside it, e.g. bytes=0-1023"),
            )
            .into_response();
            let value = HeaderValue::from_str(&format!("bytes */{total}")).map_err(ApiError::internal)?;
            error.headers_mut().insert(header::CONTENT_RANGE, value);
            Ok(error)
        }
    }
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').map(str::trim).any(|t| t == etag || t == "*" || t.strip_prefix("W/") == Some(etag))
    })
}

#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Whole,
    /// Inclusive byte positions.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// One `bytes=` range (RFC 9110 §14.1.2). Several ranges, or a header we don't understand,
/// get the whole image, as the RFC allows.
fn requested_range(headers: &HeaderMap, total: u64) -> RangeRequest {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeRequest::Whole;
    };
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => Some((start, end.min(total.saturating_sub(1)))),
        (Ok(start), Err(_)) if last.is_empty() => Some((start, total.saturating_sub(1))),
        (Err(_), Ok(suffix)) if first.is_empty() && suffix > 0 => {
            Some((total.saturating_sub(suffix), total.saturating_sub(1)))
        }
        (Ok(_), Ok(_)) => return RangeRequest::Unsatisfiable,
        _ => return RangeRequest::Whole,
    };
    match range {
        Some((start, end)) if start < total && start <= end => RangeRequest::Part { start, end },
        _ => RangeRequest::Unsatisfiable,
    }
}

/// How long a listing waits for the read model to cover the refs as they were when the
/// request came in (the projector is woken at once; it usually takes milliseconds).
pub(crate) const FRESHNESS_WAIT: Duration = Duration::from_secs(1);

/// The refs when a read came in, and how far the read model covers them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Freshness {
    pub(crate) head: Projected,
    pub(crate) projected: Projected,
}

impl Freshness {
    pub(crate) fn complete(&self) -> bool {
        self.projected.covers(self.head)
    }

    /// `X-Projected-Seq`, `X-Projected-Verdict-Seq`, `X-Head-Seq`, `X-Verdict-Head-Seq`, and
    /// `X-Read-Model-Lag` (events not yet in the answer) when the read model is behind.
    pub(crate) fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: u64| {
            headers.insert(name, HeaderValue::from(value));
        };
        put("x-projected-seq", self.projected.events_seq);
        put("x-projected-verdict-seq", self.projected.verdicts_seq);
        put("x-head-seq", self.head.events_seq);
        put("x-verdict-head-seq", self.head.verdicts_seq);
        if !self.complete() {
            put("x-read-model-lag", self.head.events_seq.saturating_sub(self.projected.events_seq));
        }
        headers
    }
}

/// Reads both heads (one ref and one commit each) and waits up to [`FRESHNESS_WAIT`] for the
/// read model to cover them.
pub(crate) async fn freshness(state: &AppState) -> Result<Freshness, ApiError> {
    let head = blocking(&state.ledger, |l| {
        Ok(Projected {
            events_seq: l.head()?.map_or(0, |h| h.seq),
            verdicts_seq: l.verdict_head()?.map_or(0, |h| h.event_seq),
        })
    })
    .await?;
    let projected = state.read_model.wait_for(head, FRESHNESS_WAIT).await;
    Ok(Freshness { head, projected })
}

/// An event as listings, search and export show it: `{"id", "event", "verdict"}`, from the
/// bytes git holds (`event.json`, `verdict.json`) as the read model stored them.
pub(crate) fn entry_json(row: &ExportRow) -> Result<Value, crate::readmodel::Error> {
    let seq = row.seq as u64;
    let corrupt = |what: String| crate::readmodel::Error::Corrupt { seq, what };
    let record = camledger_eventstore::EventRecord::from_json(row.event_json.as_bytes())
        .map_err(|e| corrupt(format!("event.json: {e}")))?;
    let verdict = match (&row.verdict_id, &row.verdict_json) {
        (Some(id), Some(json)) => {
            let verdict = camledger_eventstore::Verdict::from_json(json.as_bytes())
                .map_err(|e| corrupt(format!("verdict.json: {e}")))?;
            verdict_json(&camledger_eventstore::StoredVerdict { verdict, id: id.clone() })
        }
        _ => Value::Null,
    };
    Ok(json!({ "id": row.commit_id, "event": record, "verdict": verdict }))
}

/// A search page from the read model, oldest first; a camera token reads only its own events
/// (another camera's `camera=` finds nothing).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "read",
    security(("bearer" = []), ("session" = [])),
    params(
        ("after" = Option<u64>, Query, description = "Events after this seq (default 0)"),
        ("limit" = Option<u32>, Query, description = "1-1000, default 100"),
        ("camera" = Option<String>, Query, description = "Only this camera"),
        ("since" = Option<String>, Query, description = "RFC 3339, inclusive, on `received_at`"),
        ("until" = Option<String>, Query, description = "RFC 3339, inclusive, on `received_at`"),
        ("spam" = Option<bool>, Query, description = "Judged spam, or judged not spam"),
        ("reason" = Option<String>, Query, description = "A reason of the verdict, e.g. `blank`"),
        ("media_type" = Option<String>, Query, description = "e.g. `image/png`"),
        ("camera_model" = Option<String>, Query, description = "EXIF Make + Model")
    ),
    responses(
        (status = 200, description = "Oldest first; `X-Head-Seq`, `X-Projected-Seq`, `X-Read-Model-Lag` say how \
                                      fresh", body = EventPage),
        (status = 400, description = "`invalid_after`, `invalid_limit`, `invalid_since`, `invalid_until`, \
                                      `invalid_spam`, `invalid_filter`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all)]
async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut filters = Filters::from_params(params.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let freshness = freshness(&state).await?;
    if let Some(own) = caller.camera_scope() {
        match &filters.camera {
            Some(asked) if asked != own => {
                let body = json!({ "events": [], "next_after": null });
                return Ok((freshness.headers(), Json(body)).into_response());
            }
            _ => filters.camera = Some(own.to_owned()),
        }
    }
    let page = state.read_model.search(&filters).await?;
    let mut events = page.rows.iter().map(entry_json).collect::<Result<Vec<_>, _>>()?;
    // A page that ends where the projection ends is not the end of the ledger: point the
    // client past it rather than answering `null` ("nothing follows").
    let next_after = match page.next_after {
        None if !freshness.complete() => Some(freshness.projected.events_seq.max(filters.after)),
        other => other,
    };
    mask_other_cameras(&state.ledger, &caller, &mut events).await;
    Ok((freshness.headers(), Json(json!({ "events": events, "next_after": next_after }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(spec: &str, total: u64) -> RangeRequest {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(spec).unwrap());
        requested_range(&headers, total)
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        use RangeRequest::*;
        let cases = [
            ("bytes=0-9", Part { start: 0, end: 9 }),
            ("bytes=90-", Part { start: 90, end: 99 }),
            ("bytes=-10", Part { start: 90, end: 99 }),
            ("bytes=50-500", Part { start: 50, end: 99 }),
            ("bytes=100-200", Unsatisfiable),
            ("bytes=9-0", Unsatisfiable),
            ("bytes=0-1,5-6", Whole),
            ("items=0-1", Whole),
        ];
        for (spec, expected) in cases {
            assert_eq!(range(spec, 100), expected, "{spec}");
        }
    }

    #[test]
    fn sequence_numbers_start_at_one() {
        assert!(parse_seq("0").is_err());
        assert!(parse_seq("-1").is_err());
        assert!(parse_seq("abc").is_err());
        assert_eq!(parse_seq("42").unwrap(), 42);
    }
}
