//! The one HTTP error type: every failure a handler can meet becomes an [`ApiError`].
//!
//! 4xx answers carry a stable machine `error` code and a precise `message`; 5xx answers
//! hide their cause from the client and log its whole chain instead.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The JSON body of every error answer (and of each refused part of a multipart upload).
/// [`ApiError::body`] serialises it, so the OpenAPI schema and the answer are one type.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "not_found", "message": "no event 42"}))]
pub(crate) struct ErrorBody {
    /// A stable machine code, e.g. `unauthorized`, `invalid_seq`, `body_too_large`.
    pub(crate) error: String,
    /// What went wrong and how to fix it, for people.
    pub(crate) message: String,
}

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// Seconds a client should wait before retrying (503 and 429).
    pub(crate) retry_after: Option<u32>,
    /// The cause of a 5xx, logged, never sent.
    pub(crate) source: Option<anyhow::Error>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, source: None }
    }

    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A server-side failure: the client learns only that it may retry later.
    pub(crate) fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "the ledger cannot accept or serve this right now; retry later".into(),
            retry_after: Some(1),
            source: Some(cause.into()),
        }
    }

    /// No room in the in-flight body budget before the request's deadline: retry later.
    pub(crate) fn busy() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "busy",
            message: "too many upload bytes are in flight; retry later".into(),
            retry_after: Some(2),
            source: None,
        }
    }

    /// The camera is over its rate limit: nothing was written; retry after the wait.
    pub(crate) fn rate_limited(refused: crate::ratelimit::Refused) -> Self {
        use crate::ratelimit::Refused;
        let (message, retry_after) = match refused {
            Refused::Wait(wait) => (
                format!(
                    "this camera is over its rate limit; nothing was written; retry in {:.1} s",
                    wait.as_secs_f64()
                ),
                Some(u32::try_from(wait.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX).max(1)),
            ),
            Refused::OverBurst { burst } => (
                format!(
                    "this request carries more images than this camera may send at once ({burst}); nothing was \
                     written; send them in smaller requests"
                ),
                None,
            ),
        };
        Self { status: StatusCode::TOO_MANY_REQUESTS, code: "rate_limited", message, retry_after, source: None }
    }

    /// The camera is quarantined: nothing was written until `camledger cameras release`.
    pub(crate) fn quarantined(camera: &str, reason: &str) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "quarantined",
            message: format!(
                "camera {camera} is quarantined ({reason}); nothing was written; an operator must run \
                 `camledger cameras release {camera}`"
            ),
            retry_after: None,
            source: None,
        }
    }

    pub(crate) fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error; it has been logged".into(),
            retry_after: None,
            source: Some(cause.into()),
        }
    }

    /// The JSON body this error answers with (also used inside multipart result arrays).
    pub(crate) fn body(&self) -> serde_json::Value {
        let body = ErrorBody { error: self.code.to_owned(), message: self.message.clone() };
        serde_json::to_value(body).expect("two strings serialise")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.source {
                Some(cause) => tracing::error!(
                    status = self.status.as_u16(),
                    code = self.code,
                    error = format!("{cause:#}"),
                    "request failed"
                ),
                None => tracing::error!(status = self.status.as_u16(), code = self.code, "request failed"),
            }
        }
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

// The conversions below match every variant by name (no `_ =>`): a variant added to a
// library error is a compile error here until someone decides its HTTP status.

impl From<crate::registry::Error> for ApiError {
    fn from(e: crate::registry::Error) -> Self {
        use crate::registry::Error as E;
        match e {
            // Only the CLI adds or revokes; at the HTTP edge these are server-side surprises.
            E::InvalidName(_) | E::InvalidRole(_) | E::Exists { .. } | E::NotFound { .. } | E::Ambiguous { .. } => {
                ApiError::internal(e)
            }
            E::Database(_) | E::Migrate(_) => ApiError::unavailable(e),
        }
    }
}

impl From<camledger_processor::admission::Rejection> for ApiError {
    fn from(r: camledger_processor::admission::Rejection) -> Self {
        let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        ApiError::new(status, r.code(), r.to_string())
    }
}

impl From<camledger_eventstore::append::Error> for ApiError {
    fn from(e: camledger_eventstore::append::Error) -> Self {
        use camledger_eventstore::append::Error as E;
        match e {
            E::InvalidCamera => ApiError::bad_request("invalid_camera", e.to_string()),
            E::InvalidIdempotencyKey => ApiError::bad_request("invalid_idempotency_key", e.to_string()),
            E::InvalidCapturedAt => ApiError::bad_request("invalid_captured_at", e.to_string()),
            E::UnsupportedImage { .. } => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format", e.to_string())
            }
            E::IdempotencyKeyReused { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", e.to_string())
            }
            E::Unavailable | E::Storage(_) => ApiError::unavailable(e),
        }
    }
}

impl From<camledger_eventstore::read::Error> for ApiError {
    fn from(e: camledger_eventstore::read::Error) -> Self {
        use camledger_eventstore::read::Error as E;
        match e {
            E::NotFound(_) => ApiError::not_found(e.to_string()),
            E::InvalidId(_) => ApiError::bad_request("invalid_id", e.to_string()),
            E::Corrupt { .. } | E::Git(_) | E::Io(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::readmodel::Error> for ApiError {
    fn from(e: crate::readmodel::Error) -> Self {
        use crate::readmodel::Error as E;
        match e {
            E::Connect(_) | E::Database(_) => ApiError::unavailable(e),
            E::Read(_) | E::Corrupt { .. } | E::Panicked => ApiError::internal(e),
        }
    }
}

impl From<crate::readmodel::query::FilterError> for ApiError {
    fn from(e: crate::readmodel::query::FilterError) -> Self {
        ApiError::bad_request(e.code, e.message)
    }
}

impl From<crate::registry::LinkError> for ApiError {
    fn from(e: crate::registry::LinkError) -> Self {
        use crate::registry::LinkError as E;
        match e {
            E::InvalidExpiresIn(_) | E::ExpiresInOutOfRange => {
                ApiError::bad_request("invalid_expires_in", e.to_string())
            }
            E::InvalidMaxUploads => ApiError::bad_request("invalid_max_uploads", e.to_string()),
            E::UnknownCamera(_) => ApiError::bad_request("unknown_camera", e.to_string()),
            E::Gone => ApiError::new(StatusCode::GONE, "link_gone", e.to_string()),
            E::NotEnoughUses { .. } => ApiError::new(StatusCode::CONFLICT, "not_enough_uses", e.to_string()),
            // Only the CLI revokes links; at the HTTP edge this is a server-side surprise.
            E::NotFound(_) => ApiError::internal(e),
            E::Database(_) => ApiError::unavailable(e),
        }
    }
}
