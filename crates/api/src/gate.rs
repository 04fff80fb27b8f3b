//! The one admission check of every upload path (`POST /v1/images`, `git push`): a
//! quarantined camera is refused first, then the camera's rate-limit tokens are taken. Nothing
//! is written before it passes.

use crate::error::ApiError;
use crate::ratelimit::RateLimit;
use crate::state::AppState;

/// Admits `n` more events from `camera` (its own rate limit `own`), or says why not:
/// `quarantined` (429, no `Retry-After`: only `camledger cameras release` ends it) or
/// `rate_limited` (429 with `Retry-After`).
pub(crate) fn admit(state: &AppState, camera: &str, own: Option<RateLimit>, n: u32) -> Result<(), ApiError> {
    if let Some(reason) = state.quarantined.reason(camera) {
        return Err(ApiError::quarantined(camera, &reason));
    }
    state.rate_limits.take(camera, own, n).map_err(ApiError::rate_limited)
}
