//! `POST /v1/images`: cameras upload images, as a raw body or as multipart parts.
//!
//! Every upload is checked (format by magic bytes, structure, pixel limit) before it reaches
//! the ledger, and answered only once its event is durable. A rejected upload writes nothing.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use camledger_eventstore::Appended;
use camledger_processor::admission;
use futures_util::StreamExt;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::events::OTHER_CAMERA;
use crate::routes::openapi::{Binary, ServerErrors};
use crate::state::AppState;

/// How long past its deadline an append already handed to the writer may take before the
/// part is answered "outcome unknown" (the event may still land; a retry with the same
/// Idempotency-Key tells).
pub(crate) const APPEND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(upload))
}

/// The answer to one accepted image.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // The schema of the `json!` answer of [`answer`].
pub(crate) struct Uploaded {
    seq: u64,
    /// The event's commit id.
    id: String,
    sha256: String,
    /// The original's seq (a number) when these bytes were seen before, or `"other-camera"`
    /// when it is another camera's event; `null` for new bytes.
    duplicate_of: Option<Value>,
}

/// A multipart upload: one image per part, under any field name.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Only its schema is used, in `#[utoipa::path]`.
pub(crate) struct MultipartImages(std::collections::HashMap<String, Binary>);

/// The answer to an upload: one `Uploaded` for a raw body, one `PartAnswer` per part for a
/// multipart body.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only its schema is used, in `#[utoipa::path]`.
pub(crate) enum UploadAnswer {
    #[schema(title = "One image")]
    One(Uploaded),
    #[schema(title = "Multipart, one entry per part")]
    Parts(Vec<PartAnswer>),
}

/// One entry of a multipart answer: an `Uploaded` or an `ErrorBody`, with `status` and `part`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // The schema of the `json!` entries of `upload_multipart`.
pub(crate) struct PartAnswer {
    /// This part's own HTTP status.
    status: u16,
    /// The part's file or field name.
    part: String,
    seq: Option<u64>,
    id: Option<String>,
    sha256: Option<String>,
    duplicate_of: Option<Value>,
    /// The refusal's code, as in `ErrorBody`.
    error: Option<String>,
    message: Option<String>,
}

/// What the client told us besides the bytes.
pub(crate) struct UploadMeta {
    pub(crate) camera: String,
    pub(crate) captured_at: Option<String>,
    pub(crate) idempotency_key: Option<String>,
}

/// Who an upload is recorded as: the camera of a token (`POST /v1/images`) or of an upload
/// link (`POST /v1/u/{secret}`, `routes::links`), with the camera's own rate limit.
pub(crate) struct Uploader<'a> {
    pub(crate) camera: String,
    pub(crate) rate_limit: Option<crate::ratelimit::RateLimit>,
    /// The link's uses when the upload came through one: one per image, reserved before
    /// anything is admitted.
    pub(crate) link: Option<&'a crate::registry::Uses>,
}

impl Uploader<'_> {
    /// Tells the link which images keep their use: a new event (a duplicate is one too) and a
    /// failure that may have written one (5xx); a replay and a refusal (4xx) wrote nothing.
    fn spent(&self, outcome: &Result<Appended, ApiError>) {
        let kept = match outcome {
            Ok(appended) => !appended.replayed,
            Err(error) => error.status.is_server_error(),
        };
        if let (Some(uses), true) = (self.link, kept) {
            uses.keep_one();
        }
    }
}

/// Upload one image as the raw body, or several as `multipart/form-data` (camera token).
#[utoipa::path(
    post,
    path = "/v1/images",
    tag = "ingest",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "1-128 printable ASCII characters: a retry \
                                                                       gets the first answer and writes nothing"),
        ("X-Captured-At" = Option<String>, Header, description = "The camera's capture time, RFC 3339")
    ),
    request_body(description = "The image, typed by its `Content-Type`; or one image per multipart part", content(
        (Binary = "image/jpeg"), (Binary = "image/png"), (Binary = "image/webp"), (MultipartImages = "multipart/form-data")
    )),
    responses(
        (status = 201, description = "A new event (multipart: an array, one entry per part; 201 if any part is new)",
         body = UploadAnswer),
        (status = 200, description = "A duplicate or a retry (multipart: any part accepted, none new)",
         body = UploadAnswer),
        (status = 400, description = "`empty_body`, `invalid_captured_at`, `invalid_idempotency_key`, \
                                      `invalid_multipart`, `no_image_parts`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "`forbidden`: not a camera token", body = ErrorBody),
        (status = 408, description = "`body_timeout`, `request_timeout`", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_parts`", body = ErrorBody),
        (status = 415, description = "`unsupported_format`", body = ErrorBody),
        (status = 422, description = "An image that fails admission (`too_many_pixels`, `corrupt_image`, …), or \
                                      `idempotency_key_reused`", body = ErrorBody),
        (status = 429, description = "`rate_limited`, with `Retry-After`; `quarantined` (no `Retry-After`: until \
                                      `camledger cameras release`)", body = ErrorBody),
        (status = 504, description = "`outcome_unknown`: retry with the same `Idempotency-Key`", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(name = "upload", skip_all, fields(camera = tracing::field::Empty, multipart))]
async fn upload(State(state): State<Arc<AppState>>, caller: Caller, request: Request) -> Result<Response, ApiError> {
    let uploader = caller.camera().map(|camera| Uploader {
        camera: camera.to_owned(),
        rate_limit: caller.rate_limit(),
        link: None,
    });
    match uploader {
        Ok(uploader) => receive(&state, uploader, request).await,
        Err(refused) => {
            state.metrics.upload(refused.status.as_u16());
            Err(refused)
        }
    }
}

/// The one upload path: `POST /v1/images` and upload links both end here.
pub(crate) async fn receive(
    state: &Arc<AppState>,
    uploader: Uploader<'_>,
    request: Request,
) -> Result<Response, ApiError> {
    let multipart = is_multipart(request.headers());
    let answer = receive_images(state, uploader, request).await;
    // Metrics: one upload per image; a multipart upload counts its parts as it answers them.
    match &answer {
        Err(refused) => state.metrics.upload(refused.status.as_u16()),
        Ok(response) if !multipart => state.metrics.upload(response.status().as_u16()),
        Ok(_) => {}
    }
    answer
}

async fn receive_images(state: &Arc<AppState>, uploader: Uploader<'_>, request: Request) -> Result<Response, ApiError> {
    let camera = uploader.camera.clone();
    tracing::Span::current().record("camera", camera.as_str());
    // One token before the body is read: a camera over its limit costs no buffering. A
    // multipart upload takes one more per further part once its parts are counted.
    let own_limit = uploader.rate_limit;
    crate::gate::admit(state, &camera, own_limit, 1)?;
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
        upload_multipart(state, meta, &uploader, &parts.headers, bytes, deadline).await
    } else {
        let appended = ingest(state, &meta, bytes, meta.idempotency_key.clone()).await;
        uploader.spent(&appended);
        let appended = appended?;
        let answer = answer(state, &meta.camera, &appended).await;
        Ok((status_of(&appended), Json(answer)).into_response())
    }
}

/// Reads the body into memory, holding one permit of `state.body_budget` per buffered byte:
/// a declared Content-Length is reserved up front, a chunked body chunk by chunk. Waiting
/// for budget ends at the request's deadline with a 503. The permit is released when the
/// returned guard drops (when the handler is done with the bytes).
///
/// Only a request that holds nothing waits: a chunked body that needs more than is free
/// answers 503 busy at once and lets go of what it holds. Waiting while holding (what it did
/// before) let two chunked bodies each hold part of the budget and wait for the other's part
/// until their deadlines.
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
        if needed > 0 && held.num_permits() == 0 {
            held.merge(reserve(needed).await?);
        } else if needed > 0 {
            // `needed` <= max_body_bytes, which fits a u32 (checked at start-up).
            let n = u32::try_from(needed).map_err(|_| too_large(max))?;
            match Arc::clone(budget).try_acquire_many_owned(n) {
                Ok(more) => held.merge(more),
                Err(TryAcquireError::NoPermits) => {
                    tracing::warn!(needed, held = held.num_permits(), "a chunked body outgrew the free budget");
                    return Err(ApiError::busy());
                }
                Err(TryAcquireError::Closed) => return Err(ApiError::unavailable(TryAcquireError::Closed)),
            }
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok((Bytes::from(buffer), held))
}

/// One part of a multipart upload, parsed and counted before anything is written.
#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) name: String,
    /// A slice of the buffered body (no copy).
    pub(crate) bytes: Bytes,
}

/// Splits a whole buffered `multipart/form-data` body into its parts (at most `max_parts`)
/// before anything is written; every malformed body is a 4xx. Fuzzed: `fuzz/`, `multipart`.
///
/// Each part is a slice of `body`, not a copy: the body is already counted against the
/// in-flight byte budget, and a parser that copies it (multer, behind axum's `Multipart`,
/// copies the body into its own buffer and then each part out of that) let a multipart burst
/// reach about twice the budget. Delimiters as in RFC 2046 §5.1.1: a preamble, then
/// `--boundary`, transport padding and CRLF before each part's headers (CRLF CRLF ends them),
/// the data up to CRLF `--boundary`, and `--boundary--` to close.
pub(crate) fn read_parts(headers: &HeaderMap, body: &Bytes, max_parts: usize) -> Result<Vec<Part>, ApiError> {
    let invalid = |why: &str| ApiError::bad_request("invalid_multipart", format!("invalid multipart body: {why}"));
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| invalid(&format!("no usable boundary in the Content-Type ({e})")))?;
    let delimiter = format!("\r\n--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter may open the body, without the CRLF before it.
    let first = memchr::memmem::find(body, &delimiter[2..]).ok_or_else(|| invalid("no boundary in the body"))?;
    let mut at = first + delimiter.len() - 2;
    let mut parts: Vec<Part> = Vec::new();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            break;
        }
        // Transport padding (spaces, tabs), then the CRLF that ends the delimiter line.
        let padding = rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
        if !rest[padding..].starts_with(b"\r\n") {
            return Err(invalid("a boundary line does not end in CRLF"));
        }
        // Headers end at the first empty line; the delimiter line's CRLF starts the search,
        // so a part without headers is CRLF CRLF.
        let headers_start = at + padding;
        let headers_end = memchr::memmem::find(&body[headers_start..], b"\r\n\r\n")
            .map(|i| headers_start + i + 4)
            .ok_or_else(|| invalid("a part's headers do not end"))?;
        let name = part_name(&body[headers_start + 2..headers_end]).map_err(invalid)?;
        let data_end = memchr::memmem::find(&body[headers_end..], delimiter)
            .map(|i| headers_end + i)
            .ok_or_else(|| invalid("a part does not end in a boundary"))?;
        if parts.len() == max_parts {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_parts",
                format!("a multipart upload may have at most {max_parts} parts; nothing was written"),
            ));
        }
        parts.push(Part { name, bytes: body.slice(headers_end..data_end) });
        at = data_end + delimiter.len();
    }
    if parts.is_empty() {
        return Err(ApiError::bad_request(
            "no_image_parts",
            "the multipart body has no parts; send one image per part",
        ));
    }
    Ok(parts)
}

/// A part's file name, else its field name, else empty, from its `Content-Disposition`
/// header (`form-data; name="a"; filename="a.jpg"`). `block` is the header lines, each
/// ending in CRLF, then the empty line.
fn part_name(block: &[u8]) -> Result<String, &'static str> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let headers = match httparse::parse_headers(block, &mut slots) {
        Ok(httparse::Status::Complete((_, headers))) => headers,
        Ok(httparse::Status::Partial) | Err(_) => return Err("a part's headers are malformed"),
    };
    let Some(disposition) = headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-disposition")) else {
        return Ok(String::new());
    };
    let value = disposition.value;
    Ok(disposition_param(value, b"filename").or_else(|| disposition_param(value, b"name")).unwrap_or_default())
}

/// The value of parameter `key` in a `Content-Disposition` value: quoted (backslash escapes
/// a quote) or a bare token; `None` when absent or not UTF-8.
fn disposition_param(mut value: &[u8], key: &[u8]) -> Option<String> {
    let trim = |b: &[u8]| -> usize { b.iter().take_while(|c| c.is_ascii_whitespace()).count() };
    while let Some(i) = memchr::memmem::find(value, key) {
        let after = &value[i + key.len()..];
        // `name` inside `filename`, or in a value, is not the parameter.
        if i > 0 && !(value[i - 1].is_ascii_whitespace() || value[i - 1] == b';') {
            value = after;
            continue;
        }
        let after = &after[trim(after)..];
        let rest = after.strip_prefix(b"=")?;
        let rest = &rest[trim(rest)..];
        let text = if let Some(quoted) = rest.strip_prefix(b"\"") {
            let mut out = Vec::new();
            let mut bytes = quoted.iter();
            loop {
                match bytes.next()? {
                    b'"' => break,
                    b'\\' => out.push(*bytes.next()?),
                    &b => out.push(b),
                }
            }
            out
        } else {
            rest.iter().take_while(|&&b| b != b';' && !b.is_ascii_whitespace()).copied().collect()
        };
        return String::from_utf8(text).ok();
    }
    None
}

async fn upload_multipart(
    state: &Arc<AppState>,
    meta: UploadMeta,
    uploader: &Uploader<'_>,
    headers: &HeaderMap,
    body: Bytes,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let parts = read_parts(headers, &body, state.max_parts)?;
    let images = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let own_limit = uploader.rate_limit;
    state.rate_limits.fits(own_limit, images).map_err(ApiError::rate_limited)?;
    if let Some(uses) = uploader.link {
        uses.reserve_total(images).await?;
    }
    if images > 1 {
        crate::gate::admit(state, &meta.camera, own_limit, images - 1)?;
    }
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
        uploader.spent(&outcome);
        let (status, mut entry) = match outcome {
            Ok(appended) => (status_of(&appended), answer(state, &meta.camera, &appended).await),
            Err(error) => (error.status, error.body()),
        };
        entry["status"] = json!(status.as_u16());
        entry["part"] = json!(part.name);
        state.metrics.upload(status.as_u16());
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
/// it never holds an async worker that `/healthz` and every other request need. `git push`
/// (`routes::receive`) admits each pushed image through here too.
pub(crate) async fn ingest(
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
pub(crate) async fn answer(state: &AppState, camera: &str, appended: &Appended) -> Value {
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

    fn form(boundary: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}")).unwrap(),
        );
        headers
    }

    #[test]
    fn multipart_parts_are_slices_of_the_body() {
        let body = Bytes::from_static(
            b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a \\\"1\\\".jpg\"\r\n\
              Content-Type: image/jpeg\r\n\r\nfirst\r\n--XyZ  \r\ncontent-disposition: form-data; name=b\r\n\r\n\
              sec\r\nond\r\n--XyZ\r\n\r\n\r\n--XyZ--\r\nepilogue",
        );
        let parts = read_parts(&form("XyZ"), &body, 10).unwrap();
        let got: Vec<(&str, &[u8])> = parts.iter().map(|p| (p.name.as_str(), &p.bytes[..])).collect();
        assert_eq!(got, vec![("a \"1\".jpg", &b"first"[..]), ("b", b"sec\r\nond"), ("", b"")]);
        let inside = body.as_ptr_range();
        assert!(parts.iter().all(|p| inside.contains(&p.bytes.as_ptr())), "no part was copied");
    }

    #[test]
    fn malformed_multipart_bodies_are_client_errors() {
        let ok = "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--";
        assert_eq!(read_parts(&form("b"), &Bytes::from(ok), 1).unwrap().len(), 1);
        assert_eq!(read_parts(&form("b"), &Bytes::from(ok), 0).unwrap_err().code, "too_many_parts");
        let cases: &[(&str, &str)] = &[
            ("b", "no boundary at all"),
            ("b", "--b--"),
            ("b", "--b\r\nContent-Disposition: form-data\r\n\r\nnever ends"),
            ("b", "--b\r\nheaders that never end"),
            ("b", "--bX\r\n\r\nx\r\n--b--"),
            ("b", "--b\r\nno colon here\r\n\r\nx\r\n--b--"),
        ];
        for (boundary, body) in cases {
            let error = read_parts(&form(boundary), &Bytes::from(*body), 4).unwrap_err();
            assert!(error.status.is_client_error(), "{body:?}: {}", error.status);
        }
        let mut no_type = HeaderMap::new();
        no_type.insert(header::CONTENT_TYPE, HeaderValue::from_static("multipart/form-data"));
        assert_eq!(read_parts(&no_type, &Bytes::from(ok), 4).unwrap_err().code, "invalid_multipart");
    }

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

    #[tokio::test]
    async fn a_chunked_body_that_cannot_grow_answers_busy_at_once_and_lets_go() {
        let budget = Arc::new(Semaphore::new(1000));
        let held = Arc::clone(&budget).acquire_many_owned(900).await.unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        let chunks = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Bytes::from(vec![2u8; 50])),
            Ok(Bytes::from(vec![3u8; 100])),
        ]);
        let started = Instant::now();
        let error =
            buffer_body(&budget, 1000, &HeaderMap::new(), Body::from_stream(chunks), deadline).await.unwrap_err();
        assert_eq!((error.status, error.code), (StatusCode::SERVICE_UNAVAILABLE, "busy"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "it did not wait holding its 50 bytes");
        drop(held);
        assert_eq!(budget.available_permits(), 1000, "what it held is back");
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
