//! `GET /v1/stream`: Server-Sent Events of events and verdicts as the read model gains them.
//!
//! One task ([`feed`]) follows the projector: each time the projection moves it reads the
//! new rows once (a search page after the last seq it sent) and publishes each as one
//! pre-serialised [`LiveMessage`] on a broadcast channel; every subscriber only filters and
//! forwards. Nothing is buffered per subscriber: the channel is one shared ring of
//! [`LIVE_BUFFER`] messages, and a subscriber that reads too slowly to keep its place in it
//! gets `event: resync` (reload with the search API) instead of holding memory or slowing
//! anyone else. Messages:
//!
//! - `event`: `{"id", "event", "verdict"}` as `GET /v1/events` lists it (`verdict` `null`
//!   until judged);
//! - `verdict`: the same entry once its verdict is projected;
//! - `heads`: `{"events_seq", "verdicts_seq", "verdict_lag"}` (sent first, then on every
//!   change);
//! - `resync`: something was skipped (a slow reader, or a burst of more than [`MAX_BURST`]
//!   events at once): reload.
//!
//! Auditor and admin tokens (or a dashboard session) see every camera, `?camera=ID` narrows
//! to one; a camera token sees only its own events, another camera's seqs masked as in
//! `GET /v1/events`. A stream ends when shutdown begins (so connections drain at once) and
//! after [`MAX_AGE`], after which the browser reconnects and is authenticated again (a
//! revoked token or an ended session stops there).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::dashboard::LiveMessage;
use crate::error::{ApiError, ErrorBody};
use crate::readmodel::{Filters, Projected};
use crate::routes::events::{entry_json, mask_for_camera};
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// Most events (or verdicts) published one by one per projector step; a larger jump (a
/// bulk import, a catch-up after start) is announced as `resync`.
pub(crate) const MAX_BURST: u64 = 500;
/// How long one stream lasts before the client reconnects (and is authenticated again).
pub(crate) const MAX_AGE: Duration = Duration::from_secs(300);
/// SSE comment lines sent while nothing happens (keeps proxies and the idle timeout quiet).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

fn heads(p: Projected) -> Arc<LiveMessage> {
    let data = json!({
        "events_seq": p.events_seq,
        "verdicts_seq": p.verdicts_seq,
        "verdict_lag": p.events_seq.saturating_sub(p.verdicts_seq),
    });
    Arc::new(LiveMessage { kind: "heads", camera: None, data: data.to_string(), own_data: None })
}

fn resync(why: &str) -> Arc<LiveMessage> {
    Arc::new(LiveMessage { kind: "resync", camera: None, data: json!({ "reason": why }).to_string(), own_data: None })
}

/// Follows the read model and publishes what it gains until `stop`.
pub(crate) async fn feed(state: Arc<AppState>, stop: CancellationToken) {
    let mut projected = state.read_model.subscribe();
    let mut sent = *projected.borrow_and_update();
    loop {
        tokio::select! {
            changed = projected.changed() => if changed.is_err() { break },
            () = stop.cancelled() => break,
        }
        let now = *projected.borrow_and_update();
        let live = &state.dashboard.live;
        if live.receiver_count() > 0 {
            if let Err(e) = publish(&state, sent, now).await {
                tracing::warn!(error = %e, "the live feed skipped a step; subscribers resync");
                let _ = live.send(resync("read_model_error"));
            }
            let _ = live.send(heads(now));
        }
        sent = now;
    }
}

/// Publishes the events and verdicts projected between `from` and `to`.
async fn publish(state: &AppState, from: Projected, to: Projected) -> Result<(), ApiError> {
    let live = &state.dashboard.live;
    let (new_events, new_verdicts) =
        (to.events_seq.saturating_sub(from.events_seq), to.verdicts_seq.saturating_sub(from.verdicts_seq));
    if new_events > MAX_BURST || new_verdicts > MAX_BURST {
        let _ = live.send(resync("burst"));
        return Ok(());
    }
    for (kind, after, count, through) in [
        ("event", from.events_seq, new_events, to.events_seq),
        ("verdict", from.verdicts_seq, new_verdicts, to.verdicts_seq),
    ] {
        if count == 0 {
            continue;
        }
        let filters = Filters { after, limit: count as usize, ..Filters::default() };
        let page = state.read_model.search(&filters).await?;
        for row in page.rows.iter().filter(|r| (r.seq as u64) <= through) {
            let entry = entry_json(row)?;
            if kind == "verdict" && entry["verdict"].is_null() {
                continue;
            }
            let _ = live.send(Arc::new(message(state, kind, entry).await));
        }
    }
    Ok(())
}

/// One entry as a message: the readers' line, and the owning camera's (its references to
/// other cameras' events masked) when that differs.
async fn message(state: &AppState, kind: &'static str, entry: Value) -> LiveMessage {
    let camera = entry["event"]["camera"].as_str().map(str::to_owned);
    let data = entry.to_string();
    let own_data = match &camera {
        Some(camera) => {
            let mut own = [entry];
            mask_for_camera(&state.ledger, camera, &mut own).await;
            let [own] = own;
            let own = own.to_string();
            (own != data).then_some(own)
        }
        None => None,
    };
    LiveMessage { kind, camera, data, own_data }
}

/// The line `message` shows a caller scoped to `scope` (a camera token) that asked for
/// `wanted` (`?camera=`), or `None` when it is not theirs to see.
fn line_for<'m>(message: &'m LiveMessage, scope: Option<&str>, wanted: Option<&str>) -> Option<&'m str> {
    let Some(camera) = message.camera.as_deref() else { return Some(&message.data) };
    if wanted.is_some_and(|w| w != camera) {
        return None;
    }
    match scope {
        None => Some(&message.data),
        Some(own) if own == camera => Some(message.own_data.as_deref().unwrap_or(&message.data)),
        Some(_) => None,
    }
}

/// Server-Sent Events of new events and verdicts (token or dashboard session).
#[utoipa::path(
    get,
    path = "/v1/stream",
    tag = "read",
    security(("bearer" = []), ("session" = [])),
    params(("camera" = Option<String>, Query, description = "Only this camera (readers)")),
    responses(
        (status = 200, description = "`event: event|verdict|heads|resync` messages, `data:` one JSON object \
                                      (`event`, `verdict`: as `GET /v1/events` lists them; `heads`: \
                                      `{events_seq, verdicts_seq, verdict_lag}`); ends after 5 minutes",
         body = String, content_type = "text/event-stream"),
        (status = 400, description = "`invalid_filter`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no token or session", body = ErrorBody),
        (status = 503, description = "`busy`: 64 streams are open", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(skip_all)]
async fn stream(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let mut wanted = None;
    for (name, value) in params {
        match name.as_str() {
            "camera" if !value.is_empty() && value.len() <= 255 && !value.chars().any(char::is_control) => {
                wanted = Some(value)
            }
            "camera" => {
                return Err(ApiError::bad_request("invalid_filter", "camera must be 1-255 printable characters"))
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_filter",
                    format!("unknown parameter {other:?}; /v1/stream takes camera"),
                ))
            }
        }
    }
    let permit = Arc::clone(&state.dashboard.stream_slots).try_acquire_owned().map_err(|_| {
        let mut busy = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{} live streams are open already; retry later", crate::dashboard::MAX_STREAMS),
        );
        busy.retry_after = Some(5);
        busy
    })?;
    let scope = caller.camera_scope().map(str::to_owned);
    let receiver = state.dashboard.live.subscribe();
    let first = heads(state.read_model.projected());
    let stop = state.dashboard.stopping.clone();
    let until = tokio::time::Instant::now() + MAX_AGE;
    let to_event = |m: &LiveMessage, line: &str| Event::default().event(m.kind).data(line);
    let opening = to_event(&first, &first.data).retry(Duration::from_secs(1));
    let events = futures_util::stream::unfold(
        (receiver, permit, stop, scope, wanted),
        move |(mut receiver, permit, stop, scope, wanted)| async move {
            loop {
                let received = tokio::select! {
                    biased;
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep_until(until) => return None,
                    received = receiver.recv() => received,
                };
                let event = match received {
                    Ok(message) => match line_for(&message, scope.as_deref(), wanted.as_deref()) {
                        Some(line) => to_event(&message, line),
                        None => continue,
                    },
                    Err(RecvError::Lagged(missed)) => {
                        let message = resync("slow_reader");
                        tracing::debug!(missed, "a live stream fell behind");
                        to_event(&message, &message.data)
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok::<_, Infallible>(event), (receiver, permit, stop, scope, wanted)));
            }
        },
    );
    let body = futures_util::stream::once(async move { Ok::<_, Infallible>(opening) });
    let sse = Sse::new(futures_util::StreamExt::chain(body, events)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    Ok(([(header::CACHE_CONTROL, "no-store"), (header::HeaderName::from_static("x-accel-buffering"), "no")], sse)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(camera: &str, own: Option<&str>) -> LiveMessage {
        LiveMessage { kind: "event", camera: Some(camera.into()), data: "all".into(), own_data: own.map(Into::into) }
    }

    #[test]
    fn a_camera_sees_only_its_own_events_with_references_masked() {
        let mine = event("cam-1", Some("masked"));
        assert_eq!(line_for(&mine, Some("cam-1"), None), Some("masked"));
        assert_eq!(line_for(&mine, Some("cam-2"), None), None);
        assert_eq!(line_for(&mine, None, None), Some("all"));
        assert_eq!(line_for(&event("cam-1", None), Some("cam-1"), None), Some("all"));
    }

    #[test]
    fn a_camera_filter_narrows_events_but_not_heads() {
        let mine = event("cam-1", None);
        assert_eq!(line_for(&mine, None, Some("cam-2")), None);
        assert_eq!(line_for(&mine, None, Some("cam-1")), Some("all"));
        let heads = heads(Projected { events_seq: 5, verdicts_seq: 3 });
        assert_eq!(line_for(&heads, Some("cam-9"), Some("cam-2")), Some(heads.data.as_str()));
        assert!(heads.data.contains("\"verdict_lag\":2"));
    }
}
