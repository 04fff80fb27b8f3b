//! `GET /v1/events/{seq}/thumbnail`: a JPEG at most [`THUMBNAIL_SIDE`] pixels on its long
//! side, made with the processor's reduced-scale decode (a 1080p JPEG is read from its DC
//! coefficients, never decoded in full) and kept in a bounded in-memory cache: events never
//! change, so neither do their thumbnails. At most `THUMBNAIL_DECODES` are made at once.
//! Camera tokens get only their own events' (another camera's answers 404, as the image does).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::events::parse_seq;
use crate::routes::openapi::{Binary, ServerErrors};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(thumbnail))
}

/// The long side of a thumbnail, in pixels.
pub(crate) const THUMBNAIL_SIDE: u32 = 160;
/// JPEG quality of thumbnails.
const QUALITY: u8 = 80;

fn respond(seq: u64, thumbnail: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/jpeg".to_owned()),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'".to_owned()),
            (header::CONTENT_DISPOSITION, format!("inline; filename=\"event-{seq}-thumbnail.jpg\"")),
        ],
        thumbnail,
    )
        .into_response()
}

fn hidden(seq: u64) -> ApiError {
    ApiError::not_found(format!("no event {seq}"))
}

/// Encodes the thumbnail of an image (CPU work: call on the blocking pool).
fn make(bytes: &[u8], limits: &camledger_processor::admission::Limits) -> Result<Bytes, ApiError> {
    use camledger_processor::decode::DecodeError;
    let image = camledger_processor::decode::decode_thumbnail(bytes, THUMBNAIL_SIDE, limits).map_err(|e| match e {
        DecodeError::Rejected(_) | DecodeError::Jpeg(_) | DecodeError::Image(_) | DecodeError::PixelFormat(_) => {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "undecodable_image",
                format!("this event's image cannot be decoded for a thumbnail ({e}); GET /v1/events/SEQ/image has it"),
            )
        }
    })?;
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&image)
        .map_err(ApiError::internal)?;
    Ok(Bytes::from(out))
}

/// A JPEG of at most 160 pixels on the long side (token or dashboard session).
#[utoipa::path(
    get,
    path = "/v1/events/{seq}/thumbnail",
    tag = "dashboard",
    security(("bearer" = []), ("session" = [])),
    params(("seq" = u64, Path, description = "The event's sequence number, from 1")),
    responses(
        (status = 200, description = "The thumbnail", body = Binary, content_type = "image/jpeg"),
        (status = 400, description = "`invalid_seq`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no token or session", body = ErrorBody),
        (status = 404, description = "`not_found`: no such event, or another camera's", body = ErrorBody),
        (status = 422, description = "`undecodable_image`", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all, fields(seq = %seq))]
async fn thumbnail(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(seq): Path<String>,
) -> Result<Response, ApiError> {
    let seq = parse_seq(&seq)?;
    let cache = &state.dashboard.thumbnails;
    if let Some((camera, thumbnail)) = cache.get(seq) {
        return if caller.may_read(&camera) { Ok(respond(seq, thumbnail)) } else { Err(hidden(seq)) };
    }
    let _slot = Arc::clone(&state.dashboard.thumbnail_decodes).acquire_owned().await.map_err(ApiError::internal)?;
    // Another request may have made it while this one waited.
    if let Some((camera, thumbnail)) = cache.get(seq) {
        return if caller.may_read(&camera) { Ok(respond(seq, thumbnail)) } else { Err(hidden(seq)) };
    }
    let ledger = state.ledger.clone();
    let (record, bytes) = tokio::task::spawn_blocking(move || match ledger.head()? {
        Some(head) if seq <= head.seq => ledger.image(seq),
        _ => Err(camledger_eventstore::read::Error::NotFound(format!("seq {seq}"))),
    })
    .await
    .map_err(ApiError::internal)??;
    if !caller.may_read(&record.camera) {
        return Err(hidden(seq));
    }
    let limits = state.limits.clone();
    let thumbnail = tokio::task::spawn_blocking(move || make(&bytes, &limits)).await.map_err(ApiError::internal)??;
    cache.put(seq, record.camera, thumbnail.clone());
    Ok(respond(seq, thumbnail))
}
