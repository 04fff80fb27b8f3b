//! Bearer-token authentication as an extractor: a handler that takes [`Caller`] only runs
//! for a known, unrevoked token.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::ApiError;
use crate::registry::{Principal, Role};
use crate::state::AppState;

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

    /// Auditors and admins pass; a camera token is refused (403) for `what`.
    pub(crate) fn require_reader(&self, what: &str) -> Result<(), ApiError> {
        match self.0.role {
            Role::Auditor | Role::Admin => Ok(()),
            Role::Camera => {
                Err(ApiError::forbidden(format!("a camera token cannot read {what}; use an auditor or admin token")))
            }
        }
    }

    /// The camera's own rate limit (`cameras limit`), if it has one.
    pub(crate) fn rate_limit(&self) -> Option<crate::ratelimit::RateLimit> {
        self.0.rate_limit
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

/// A reader (auditor or admin) authenticated by `Authorization: Bearer <token>` or by the
/// token as the password of `Authorization: Basic` (any user name): git sends Basic when the
/// token comes from a credential helper or the URL. Only the git routes accept Basic, so the
/// JSON API keeps one way in.
#[derive(Clone, Debug)]
pub(crate) struct GitReader;

impl FromRequestParts<Arc<AppState>> for GitReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized(
                "an auditor token is needed: Authorization: Bearer <token>, or the token as the Basic password",
            )
        })?;
        let token = bearer_or_basic_password(header).ok_or_else(|| {
            ApiError::unauthorized(
                "the Authorization header must be 'Bearer <token>' or Basic with the token as password",
            )
        })?;
        let principal = state
            .registry
            .authenticate(&token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        tracing::Span::current().record("principal", principal.name.as_str());
        match principal.role {
            Role::Auditor | Role::Admin => Ok(GitReader),
            Role::Camera => {
                Err(ApiError::forbidden("a camera token cannot clone the ledger; use an auditor or admin token"))
            }
        }
    }
}

/// The token in `Bearer <token>`, or the password in `Basic base64(user:password)`.
fn bearer_or_basic_password(header: &axum::http::HeaderValue) -> Option<String> {
    git_credentials(header).map(|(_, token)| token)
}

/// `(None, token)` from `Bearer <token>`, `(Some(user), password)` from
/// `Basic base64(user:password)`; `None` for anything else or an empty token.
fn git_credentials(header: &axum::http::HeaderValue) -> Option<(Option<String>, String)> {
    use base64::Engine as _;
    let value = header.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    let (user, token) = if scheme.eq_ignore_ascii_case("bearer") {
        (None, rest.trim().to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
        let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        (Some(user.to_owned()), password.to_owned())
    } else {
        return None;
    };
    (!token.is_empty()).then_some((user, token))
}

/// The camera pushing image commits over git (`git-receive-pack`): its token as
/// `Authorization: Bearer`, or as the Basic password with the camera id as the user name. A
/// Basic user name that is not the token's camera is refused (403), so a camera cannot push
/// under another camera's name even by mistake; reader tokens are refused (403): only
/// cameras create events.
/// Answers the camera's id and its own rate limit (`cameras limit`), if any.
pub(crate) async fn git_camera(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<(String, Option<crate::ratelimit::RateLimit>), ApiError> {
    let header = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized(
            "a camera token is needed: Authorization: Bearer <token>, or Basic with the camera id as user and \
             the token as password",
        )
    })?;
    let (user, token) = git_credentials(header).ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must be 'Bearer <token>' or Basic with the token as password")
    })?;
    let principal =
        state.registry.authenticate(&token).await?.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
    tracing::Span::current().record("principal", principal.name.as_str());
    match principal.role {
        Role::Camera => {}
        other => {
            return Err(ApiError::forbidden(format!(
                "a {} token cannot push; events come from camera tokens",
                other.as_str()
            )))
        }
    }
    match user {
        Some(user) if user != principal.name => Err(ApiError::forbidden(format!(
            "the user name {user:?} is not this token's camera; push as {:?} (or send the token as Bearer)",
            principal.name
        ))),
        _ => Ok((principal.name, principal.rate_limit)),
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return match session_cookie(parts) {
                Some(id) => session_caller(state, id).await,
                None => Err(ApiError::unauthorized("missing Authorization: Bearer <token> header")),
            };
        };
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

/// Routes the dashboard reads with its session cookie: safe GETs only. Nothing that writes
/// (uploads, `POST /logout` aside) and nothing outside this list accepts the cookie, so a
/// forged cross-site request can at most read (and SameSite=Strict keeps the cookie off
/// those too).
pub(crate) const SESSION_ROUTES: [&str; 6] = [
    "/v1/stats",
    "/v1/events",
    "/v1/events/{seq}",
    "/v1/events/{seq}/image",
    "/v1/events/{seq}/thumbnail",
    "/v1/stream",
];

/// The session id of a GET or HEAD to one of [`SESSION_ROUTES`], from its cookie.
fn session_cookie(parts: &Parts) -> Option<&str> {
    if parts.method != axum::http::Method::GET && parts.method != axum::http::Method::HEAD {
        return None;
    }
    let route = parts.extensions.get::<axum::extract::MatchedPath>()?.as_str();
    if !SESSION_ROUTES.contains(&route) {
        return None;
    }
    crate::dashboard::cookie(&parts.headers, crate::dashboard::COOKIE)
}

/// The caller behind a session: the registry is asked again on every request, so a revoked
/// token's sessions end with it.
async fn session_caller(state: &AppState, id: &str) -> Result<Caller, ApiError> {
    let expired = || ApiError::unauthorized("the session has ended or expired; sign in again");
    let token_hash = state.dashboard.sessions.token_hash(id).ok_or_else(expired)?;
    let principal = state.registry.authenticate_hash(token_hash).await?.ok_or_else(expired)?;
    tracing::Span::current().record("principal", principal.name.as_str());
    Ok(Caller(principal))
}

#[cfg(test)]
mod tests {
    use super::bearer_or_basic_password;
    use axum::http::HeaderValue;

    fn token(header: &str) -> Option<String> {
        bearer_or_basic_password(&HeaderValue::from_str(header).unwrap())
    }

    #[test]
    fn the_token_is_the_bearer_value_or_the_basic_password() {
        assert_eq!(token("Bearer aud_123").as_deref(), Some("aud_123"));
        // base64("auditor:aud_123")
        assert_eq!(token("Basic YXVkaXRvcjphdWRfMTIz").as_deref(), Some("aud_123"));
        // base64(":aud_123"): git sends an empty user name when the URL has none.
        assert_eq!(token("Basic OmF1ZF8xMjM=").as_deref(), Some("aud_123"));
    }

    #[test]
    fn basic_credentials_keep_the_user_name_for_the_camera_check() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        // base64("cam-1:tok")
        assert_eq!(
            super::git_credentials(&header("Basic Y2FtLTE6dG9r")),
            Some((Some("cam-1".to_owned()), "tok".to_owned()))
        );
        assert_eq!(super::git_credentials(&header("bearer tok")), Some((None, "tok".to_owned())));
    }

    #[test]
    fn an_empty_password_or_garbage_is_no_token() {
        // base64("auditor:")
        assert_eq!(token("Basic YXVkaXRvcjo="), None);
        assert_eq!(token("Basic not base64!"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Digest abc"), None);
    }
}
