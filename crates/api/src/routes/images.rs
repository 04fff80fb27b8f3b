//! `POST /v1/images`: cameras upload images, as a raw body or as multipart parts.
//!
//! Every upload is checked (format by magic bytes, structure, pixel limit) before it reaches
//! the ledger, and answered only once its event is durable. A rejected upload writes nothing.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use camledger_eventstore::Appended;
use camledger_processor::admission;
use futures_util::StreamExt;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::events::OTHER_CAMERA;
use crate::state::AppState;

/// How long past its deadline an append already handed to the writer may take before the
/// part is answered "outcome unknown" (the event may still land; a retry with the same
/// Idempotency-Key tells).
pub(crate) const APPEND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/images", post(upload))
}

/// What the client told us besides the bytes.
struct UploadMeta {
    camera: String,
    captured_at: Option<String>,
    idempotency_key: Option<String>,
}

#[tracing::instrument(name = "upload", skip_all, fields(camera = tracing::field::Empty, multipart))]
async fn upload(State(state): State<Arc<AppState>>, caller: Caller, request: Request) -> Result<Response, ApiError> {
    let camera = caller.camera()?.to_owned();
    tracing::Span::current().record("camera", camera.as_str());
    let meta = UploadMeta {
        captured_at: captured_at(request.headers())?,
        idempotency_key: idempotency_key(request.headers())?,
        camera,
    };
    let deadline = Instant::now() + state.body_timeout;
    check_content_length(request.headers(), state.max_body_bytes)?;
    let (parts, body) = request.into_parts();
    // The whole body is buffered under the global byte budget before anything is admitted:
    // a multipart upload is counted and parsed completely before its first part is written.
    let (bytes, _budget) =
        buffer_body(&state.body_budget, state.max_body_bytes, &parts.headers, body, deadline).await?;
    if is_multipart(&parts.headers) {
        tracing::Span::current().record("multipart", true);
        let request = Request::from_parts(parts, Body::from(bytes));
        upload_multipart(&state, meta, request, deadline).await
    } else {
        let appended = ingest(&state, &meta, bytes, meta.idempotency_key.clone()).await?;
        let answer = answer(&state, &meta.camera, &appended).await;
        Ok((status_of(&appended), Json(answer)).into_response())
    }
}

/// Reads the body into memory, holding one permit of `state.body_budget` per buffered byte:
/// a declared Content-Length is reserved up front, a chunked body chunk by chunk. Waiting
/// for budget ends at the request's deadline with a 503. The permit is released when the
/// returned guard drops (when the handler is done with the bytes).
async fn buffer_body(
    budget: &Arc<Semaphore>,
    max: usize,
    headers: &HeaderMap,
    body: Body,
    deadline: Instant,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let declared = declared_length(headers).filter(|&n| n <= max as u64).map(|n| n as usize);
    let reserve = |bytes: usize| {
        let budget = Arc::clone(budget);
        async move {
            // `bytes` <= max_body_bytes, which fits a u32 (checked at start-up).
            let n = u32::try_from(bytes).map_err(|_| too_large(max))?;
            match tokio::time::timeout_at(deadline, budget.acquire_many_owned(n)).await {
                Ok(Ok(permit)) => Ok(permit),
                Ok(Err(closed)) => Err(ApiError::unavailable(closed)),
                Err(_) => {
                    tracing::warn!(bytes, "no room in the in-flight body budget before the deadline");
                    Err(ApiError::busy())
                }
            }
        }
    };
    let mut held = reserve(declared.unwrap_or(0)).await?;
    let mut buffer = Vec::with_capacity(declared.unwrap_or(0));
    let mut stream = body.into_data_stream();
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.map_err(|_| body_timeout())?;
        let Some(chunk) = chunk else { break };
        let chunk = chunk
            .map_err(|e| ApiError::bad_request("body_read_failed", format!("reading the request body failed: {e}")))?;
        if buffer.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        let needed = (buffer.len() + chunk.len()).saturating_sub(held.num_permits());
        if needed > 0 {
            held.merge(reserve(needed).await?);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buffer), held))
}

/// One part of a multipart upload, parsed and counted before anything is written.
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) bytes: Bytes,
}

/// Parses a whole multipart body into its parts (at most `max_parts`, each read completely)
/// before anything is written; every malformed body is a 4xx. Fuzzed: `fuzz/`, `multipart`.
pub(crate) async fn read_parts(
    request: Request,
    max_parts: usize,
    max_body_bytes: usize,
) -> Result<Vec<Part>, ApiError> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut parts: Vec<Part> = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(|e| multipart_error(e, max_body_bytes))? {
        if parts.len() == max_parts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_parts",
                format!("a multipart upload may have at most {max_parts} parts; nothing was written"),
            ));
        }
        let name = field.file_name().or(field.name()).unwrap_or("").to_owned();
        let bytes = field.bytes().await.map_err(|e| multipart_error(e, max_body_bytes))?;
        parts.push(Part { name, bytes });
    }
    if parts.is_empty() {
        return Err(ApiError::bad_request(
            "no_image_parts",
            "the multipart body has no parts; send one image per part",
        ));
    }
    Ok(parts)
}

async fn upload_multipart(
    state: &Arc<AppState>,
    meta: UploadMeta,
    request: Request,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let parts = read_parts(request, state.max_parts, state.max_body_bytes).await?;
    let mut results: Vec<Value> = Vec::with_capacity(parts.len());
    let mut statuses: Vec<StatusCode> = Vec::with_capacity(parts.len());
    for (index, part) in parts.into_iter().enumerate() {
        // One key per part, so a retried multipart request replays part by part.
        let key = meta.idempotency_key.as_ref().map(|k| format!("{k}#{index}"));
        let outcome = if Instant::now() >= deadline {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "not attempted: the request's deadline passed before this part; nothing was written for it",
            ))
        } else {
            match tokio::time::timeout_at(deadline + APPEND_GRACE, ingest(state, &meta, part.bytes, key)).await {
                Ok(Ok(appended)) => Ok(appended),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "outcome_unknown",
                    "the append did not finish in time; it may have landed: retry with the same Idempotency-Key",
                )),
            }
        };
        let (status, mut entry) = match outcome {
            Ok(appended) => (status_of(&appended), answer(state, &meta.camera, &appended).await),
            Err(error) => (error.status, error.body()),
        };
        entry["status"] = json!(status.as_u16());
        entry["part"] = json!(part.name);
        results.push(entry);
        statuses.push(status);
    }
    let overall = if statuses.contains(&StatusCode::CREATED) {
        StatusCode::CREATED
    } else if statuses.contains(&StatusCode::OK) {
        StatusCode::OK
    } else {
        statuses[0]
    };
    Ok((overall, Json(Value::Array(results))).into_response())
}

/// Validates one image and appends it; answers once the event is durable. Admission always
/// runs on the blocking pool (at most `admission_slots` at once): however slow a parse is,
/// it never holds an async worker that `/healthz` and every other request need.
async fn ingest(
    state: &Arc<AppState>,
    meta: &UploadMeta,
    bytes: Bytes,
    idempotency_key: Option<String>,
) -> Result<Appended, ApiError> {
    let admitted = {
        let slot = Arc::clone(&state.admission_slots).acquire_owned().await.map_err(ApiError::internal)?;
        let (limits, image) = (state.limits.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            admission::admit(&image, &limits)
        })
        .await
        .map_err(ApiError::internal)?
    };
    let admitted = admitted.map_err(|rejection| {
        tracing::info!(reason = rejection.code(), size = bytes.len(), "upload rejected");
        ApiError::from(rejection)
    })?;
    let event = admitted.into_event(meta.camera.clone(), bytes, meta.captured_at.clone(), idempotency_key);
    let appended = state.writer.append(event).await;
    state.writer_health.record(appended.as_ref().map(|_| ()));
    let appended = appended?;
    tracing::info!(
        seq = appended.seq,
        duplicate_of = appended.duplicate_of,
        replayed = appended.replayed,
        "event appended"
    );
    Ok(appended)
}

fn status_of(appended: &Appended) -> StatusCode {
    if appended.duplicate_of.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// The answer to one accepted image. `duplicate_of` names another camera's event only as
/// `"other-camera"`: an uploader never learns another camera's seq.
async fn answer(state: &AppState, camera: &str, appended: &Appended) -> Value {
    let duplicate_of = match appended.duplicate_of {
        Some(seq) => {
            let own = crate::routes::events::cameras_of(&state.ledger, vec![seq]).await.get(&seq).map(String::as_str)
                == Some(camera);
            if own {
                json!(seq)
            } else {
                json!(OTHER_CAMERA)
            }
        }
        None => Value::Null,
    };
    json!({
        "seq": appended.seq,
        "id": appended.id,
        "sha256": appended.sha256,
        "duplicate_of": duplicate_of,
    })
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {max} bytes"),
    )
}

fn body_timeout() -> ApiError {
    ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "the request body did not arrive in time")
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
}

fn check_content_length(headers: &HeaderMap, max: usize) -> Result<(), ApiError> {
    match declared_length(headers) {
        Some(n) if n > max as u64 => Err(too_large(max)),
        _ => Ok(()),
    }
}

fn multipart_error(error: axum::extract::multipart::MultipartError, max: usize) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(max)
    } else {
        ApiError::bad_request("invalid_multipart", error.body_text())
    }
}

fn captured_at(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("x-captured-at") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_request(
            "invalid_captured_at",
            "X-Captured-At must be an RFC 3339 date-time, e.g. 2026-11-22T03:04:05Z",
        )
    };
    let text = value.to_str().map_err(|_| invalid())?;
    let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| invalid())?;
    // `to_offset` panics when the UTC value leaves the supported range (9999-12-31T23:59:59-23:59).
    let utc = parsed.checked_to_offset(time::UtcOffset::UTC).ok_or_else(invalid)?;
    Ok(Some(utc.format(&Rfc3339).map_err(|_| invalid())?))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-128 printable ASCII characters without spaces",
        )
    })?;
    Ok(Some(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn captured_at_is_normalised_to_utc() {
        let mut headers = HeaderMap::new();
        headers.insert("x-captured-at", HeaderValue::from_static("2026-11-22T04:05:06+01:00"));
        assert_eq!(captured_at(&headers).unwrap().as_deref(), Some("2026-11-22T03:05:06Z"));
    }

    #[test]
    fn a_captured_at_that_is_not_rfc3339_is_a_bad_request() {
        for bad in ["yesterday", "2026-11-22", "2026-13-01T00:00:00Z", "9999-12-31T23:59:59-23:59"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-captured-at", HeaderValue::from_static(bad));
            assert_eq!(captured_at(&headers).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    fn length(n: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        headers
    }

    // Real time with a short deadline: the crate's tokio has no `test-util` (paused clock),
    // and enabling it would rebuild tokio's dependents for one test.
    #[tokio::test]
    async fn an_upload_without_room_in_the_budget_answers_503_busy_at_its_deadline() {
        let budget = Arc::new(Semaphore::new(1000));
        let _held = Arc::clone(&budget).acquire_many_owned(900).await.unwrap();
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        let error = buffer_body(&budget, 1000, &length(200), Body::from(vec![0u8; 200]), deadline).await.unwrap_err();
        assert_eq!(
            (error.status, error.code, error.retry_after.is_some()),
            (StatusCode::SERVICE_UNAVAILABLE, "busy", true)
        );
        assert!(Instant::now() >= deadline, "it waited for room until the deadline");
    }

    #[tokio::test]
    async fn buffered_bytes_hold_the_budget_until_the_body_is_dropped() {
        let budget = Arc::new(Semaphore::new(1000));
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        // Declared: reserved up front.
        let (bytes, permit) =
            buffer_body(&budget, 1000, &length(600), Body::from(vec![1u8; 600]), deadline).await.unwrap();
        assert_eq!((bytes.len(), budget.available_permits()), (600, 400));
        // Chunked (no Content-Length): reserved as it arrives.
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from(vec![2u8; 150])),
            Ok(Bytes::from(vec![3u8; 150])),
        ]);
        let (chunked, chunked_permit) =
            buffer_body(&budget, 1000, &HeaderMap::new(), Body::from_stream(chunks), deadline).await.unwrap();
        assert_eq!((chunked.len(), budget.available_permits()), (300, 100));
        drop((permit, chunked_permit));
        assert_eq!(budget.available_permits(), 1000);
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1001"));
        assert_eq!(check_content_length(&headers, 1000).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
        assert!(check_content_length(&headers, 1000).is_ok());
    }
}
