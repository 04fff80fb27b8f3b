//! Upload links over HTTP: `POST /v1/upload-links` (admin token) creates one, and
//! `POST /v1/u/{secret}` uploads through it without `Authorization`, recorded as the link's
//! camera, through the same path as `POST /v1/images` ([`images::receive`]: rate limit,
//! admission, Idempotency-Key, X-Captured-At, multipart, the cross-camera privacy of the
//! answer).
//!
//! The secret is in the path, so the path is never logged or labelled: request spans and
//! metrics name the route template (`/v1/u/{secret}`, from `MatchedPath`), and the upload's
//! span names the link by its public id. Storage and counting: `registry::links`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::registry::{parse_expires_in, LinkError, Role, Uses, MAX_LINK_UPLOADS};
use crate::routes::images::{self, MultipartImages, UploadAnswer, Uploader};
use crate::routes::openapi::{Binary, ServerErrors};
use crate::state::AppState;

/// The route of link uploads; the secret follows it.
const UPLOAD_PREFIX: &str = "/v1/u/";
/// A creation request is three short fields.
const MAX_CREATE_BODY: usize = 4 * 1024;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(upload))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateLink {
    /// The camera the uploads are recorded as (registered, not revoked).
    camera: String,
    /// An ISO 8601 duration in weeks, days, hours, minutes, seconds (`PT1H`, `P7D`), 1 s to `P30D`.
    expires_in: String,
    /// 1-10000. Checked by hand: a negative, fractional or huge number is
    /// `invalid_max_uploads`, not a serde type error.
    #[schema(value_type = u32, minimum = 1, maximum = 10000)]
    max_uploads: serde_json::Value,
}

/// The answer to `POST /v1/upload-links` (`registry::NewLink`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // Only its schema is used, in `#[utoipa::path]`.
struct CreatedLink {
    /// The public id, for `camledger links list|revoke`.
    id: String,
    camera: String,
    /// `/v1/u/<secret>`: the only time the secret is shown.
    url: String,
    /// RFC 3339, UTC.
    expires_at: String,
    max_uploads: u32,
}

/// Create an upload link for a camera (admin token); the answer's `url` holds the secret,
/// shown only here.
#[utoipa::path(
    post,
    path = "/v1/upload-links",
    tag = "ingest",
    security(("bearer" = [])),
    request_body = CreateLink,
    responses(
        (status = 201, description = "The link, with `Cache-Control: no-store`", body = CreatedLink),
        (status = 400, description = "`invalid_body`, `invalid_expires_in`, `invalid_max_uploads`, \
                                      `unknown_camera`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin token", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over 4 KiB", body = ErrorBody),
        ServerErrors
    )
)]
async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if caller.0.role != Role::Admin {
        return Err(ApiError::forbidden(format!(
            "a {} token cannot create upload links; use an admin token",
            caller.0.role.as_str()
        )));
    }
    let invalid_body = |why: String| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "the body must be a JSON object {{\"camera\", \"expires_in\", \"max_uploads\"}} of at most \
                 {MAX_CREATE_BODY} bytes: {why}"
            ),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_CREATE_BODY as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {MAX_CREATE_BODY} bytes"),
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_CREATE_BODY).await.map_err(|e| invalid_body(e.to_string()))?;
    let request: CreateLink = serde_json::from_slice(&bytes).map_err(|e| invalid_body(e.to_string()))?;
    let expires_in = parse_expires_in(&request.expires_in)?;
    let max_uploads = request
        .max_uploads
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| (1..=MAX_LINK_UPLOADS).contains(n))
        .ok_or(LinkError::InvalidMaxUploads)?;
    let created_by = format!("admin:{}", caller.0.name);
    let link = state.registry.create_link(&request.camera, expires_in, max_uploads, &created_by).await?;
    tracing::info!(link = %link.id, camera = %link.camera, by = %caller.0.name, max_uploads, "upload link created");
    let mut response = (StatusCode::CREATED, Json(link)).into_response();
    // The answer holds the secret: no cache keeps it.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Upload through a link, without a token, as `POST /v1/images` does, recorded as the
/// link's camera; one use per image.
///
/// Reserves a use of the link (unknown, expired, used up, revoked or its camera revoked:
/// `410 link_gone`, nothing written, one statement for all of them), uploads as its camera,
/// then gives back the uses of images that wrote nothing.
#[utoipa::path(
    post,
    path = "/v1/u/{secret}",
    tag = "ingest",
    params(
        ("secret" = String, Path, description = "The link's secret, from its `url`"),
        ("Idempotency-Key" = Option<String>, Header, description = "As for `POST /v1/images`"),
        ("X-Captured-At" = Option<String>, Header, description = "The camera's capture time, RFC 3339")
    ),
    request_body(description = "As for `POST /v1/images`", content(
        (Binary = "image/jpeg"), (Binary = "image/png"), (Binary = "image/webp"), (MultipartImages = "multipart/form-data")
    )),
    responses(
        (status = 201, description = "A new event, as `POST /v1/images` answers", body = UploadAnswer),
        (status = 200, description = "A duplicate or a retry", body = UploadAnswer),
        (status = 400, description = "As for `POST /v1/images`", body = ErrorBody),
        (status = 408, description = "`body_timeout`, `request_timeout`", body = ErrorBody),
        (status = 409, description = "`not_enough_uses`: more images than uses left; nothing written",
         body = ErrorBody),
        (status = 410, description = "`link_gone`: expired, used up, revoked, its camera revoked, or never \
                                      issued; nothing written", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_parts`", body = ErrorBody),
        (status = 415, description = "`unsupported_format`", body = ErrorBody),
        (status = 422, description = "An image that fails admission, or `idempotency_key_reused`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the camera's rate limit", body = ErrorBody),
        (status = 504, description = "`outcome_unknown`: retry with the same `Idempotency-Key`", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(
    name = "link_upload",
    skip_all,
    fields(link = tracing::field::Empty, camera = tracing::field::Empty, multipart)
)]
async fn upload(State(state): State<Arc<AppState>>, request: Request) -> Result<Response, ApiError> {
    // The raw path: no percent-decoding, so the secret is exactly the bytes a link holds.
    let secret = request.uri().path().strip_prefix(UPLOAD_PREFIX).unwrap_or_default();
    let reserved = match state.registry.reserve_link_use(secret).await {
        Ok(Some(reserved)) => reserved,
        Ok(None) => return Err(refused(&state, LinkError::Gone.into())),
        Err(e) => return Err(refused(&state, e.into())),
    };
    tracing::Span::current().record("link", reserved.id.as_str());
    let uses = Uses::new(state.registry.clone(), &reserved);
    let uploader = Uploader { camera: reserved.camera.clone(), rate_limit: reserved.rate_limit, link: Some(&uses) };
    let answer = images::receive(&state, uploader, request).await;
    let returned = uses.settle().await;
    if returned > 0 {
        tracing::info!(returned, "uses of images that wrote nothing went back to the link");
    }
    answer
}

/// A link upload refused before the upload path: counted like any refused upload.
fn refused(state: &AppState, error: ApiError) -> ApiError {
    state.metrics.upload(error.status.as_u16());
    error
}
