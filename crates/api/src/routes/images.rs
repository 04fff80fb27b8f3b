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
use tokio::time::Instant;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Images above this size are validated on the blocking pool instead of the async workers.
const INLINE_VALIDATION_LIMIT: usize = 1 << 20;

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
    if is_multipart(request.headers()) {
        tracing::Span::current().record("multipart", true);
        upload_multipart(&state, meta, request, deadline).await
    } else {
        check_content_length(request.headers(), state.max_body_bytes)?;
        let bytes = read_body(request.into_body(), state.max_body_bytes, deadline).await?;
        let appended = ingest(&state, &meta, bytes, meta.idempotency_key.clone()).await?;
        Ok((status_of(&appended), Json(answer(&appended))).into_response())
    }
}

async fn upload_multipart(
    state: &Arc<AppState>,
    meta: UploadMeta,
    request: Request,
    deadline: Instant,
) -> Result<Response, ApiError> {
    check_content_length(request.headers(), state.max_body_bytes)?;
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut results: Vec<Value> = Vec::new();
    let mut statuses: Vec<StatusCode> = Vec::new();
    let mut index = 0usize;
    loop {
        let field = tokio::time::timeout_at(deadline, multipart.next_field())
            .await
            .map_err(|_| body_timeout())?
            .map_err(|e| multipart_error(e, state.max_body_bytes))?;
        let Some(field) = field else { break };
        let part = field.file_name().or(field.name()).unwrap_or("").to_owned();
        let bytes = tokio::time::timeout_at(deadline, field.bytes())
            .await
            .map_err(|_| body_timeout())?
            .map_err(|e| multipart_error(e, state.max_body_bytes))?;
        // One key per part, so a retried multipart request replays part by part.
        let key = meta.idempotency_key.as_ref().map(|k| format!("{k}#{index}"));
        let (status, mut entry) = match ingest(state, &meta, bytes, key).await {
            Ok(appended) => (status_of(&appended), answer(&appended)),
            Err(error) => (error.status, error.body()),
        };
        entry["status"] = json!(status.as_u16());
        entry["part"] = json!(part);
        results.push(entry);
        statuses.push(status);
        index += 1;
    }
    if results.is_empty() {
        return Err(ApiError::bad_request(
            "no_image_parts",
            "the multipart body has no parts; send one image per part",
        ));
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

/// Validates one image and appends it; answers once the event is durable.
async fn ingest(
    state: &Arc<AppState>,
    meta: &UploadMeta,
    bytes: Bytes,
    idempotency_key: Option<String>,
) -> Result<Appended, ApiError> {
    let admitted = if bytes.len() > INLINE_VALIDATION_LIMIT {
        let (limits, image) = (state.limits.clone(), bytes.clone());
        tokio::task::spawn_blocking(move || admission::admit(&image, &limits)).await.map_err(ApiError::internal)?
    } else {
        admission::admit(&bytes, &state.limits)
    };
    let admitted = admitted.map_err(|rejection| {
        tracing::info!(reason = rejection.code(), size = bytes.len(), "upload rejected");
        ApiError::from(rejection)
    })?;
    let event = admitted.into_event(meta.camera.clone(), bytes, meta.captured_at.clone(), idempotency_key);
    let appended = state.writer.append(event).await?;
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

fn answer(appended: &Appended) -> Value {
    json!({
        "seq": appended.seq,
        "id": appended.id,
        "sha256": appended.sha256,
        "duplicate_of": appended.duplicate_of,
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

fn check_content_length(headers: &HeaderMap, max: usize) -> Result<(), ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => Err(too_large(max)),
        _ => Ok(()),
    }
}

/// Reads a raw body, refusing it as soon as it passes `max` (the excess is never buffered)
/// and timing out a client that stalls.
async fn read_body(body: Body, max: usize, deadline: Instant) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, stream.next()).await.map_err(|_| body_timeout())?;
        let Some(chunk) = chunk else { break };
        let chunk = chunk
            .map_err(|e| ApiError::bad_request("body_read_failed", format!("reading the request body failed: {e}")))?;
        if buffer.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buffer))
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
    let utc = parsed.to_offset(time::UtcOffset::UTC);
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
        for bad in ["yesterday", "2026-11-22", "2026-13-01T00:00:00Z"] {
            let mut headers = HeaderMap::new();
            headers.insert("x-captured-at", HeaderValue::from_static(bad));
            assert_eq!(captured_at(&headers).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
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
