//! Bearer-token authentication as an extractor: a handler that takes [`Caller`] only runs
//! for a known, unrevoked token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;
use crate::registry::{Principal, Role};

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub(crate) Principal);

impl Caller {
    /// Cameras upload; readers don't.
    pub(crate) fn camera(&self) -> Result<&str, ApiError> {
        match self.0.role {
            Role::Camera => Ok(&self.0.name),
            other => {
                Err(ApiError::forbidden(format!("a {} token cannot upload images; use a camera token", other.as_str())))
            }
        }
    }

    /// Whether this caller may read events of `camera`: readers see all, a camera sees its own.
    pub(crate) fn may_read(&self, camera: &str) -> bool {
        match self.0.role {
            Role::Auditor | Role::Admin => true,
            Role::Camera => self.0.name == camera,
        }
    }

    /// `Some(camera)` when reads must be restricted to that camera's events.
    pub(crate) fn camera_scope(&self) -> Option<&str> {
        (self.0.role == Role::Camera).then_some(self.0.name.as_str())
    }
}

impl Caller {
    /// The caller when the request carries a valid token; `None` for none, a bad or a revoked
    /// one (for routes that answer everyone and show more to some).
    pub(crate) async fn optional(headers: &axum::http::HeaderMap, state: &AppState) -> Option<Caller> {
        let token = headers.get(AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        if token.is_empty() {
            return None;
        }
        state.registry.authenticate(token).await.ok().flatten().map(Caller)
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token> header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <token>'"))?;
        match state.registry.authenticate(token).await? {
            Some(principal) => {
                tracing::Span::current().record("principal", principal.name.as_str());
                Ok(Caller(principal))
            }
            None => Err(ApiError::unauthorized("unknown or revoked token")),
        }
    }
}
