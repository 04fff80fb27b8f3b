//! `GET /v1/keys`: the allowed-signers file of every key that signed this ledger, with
//! `valid-after`/`valid-before` across rotations, for `git verify-commit` and
//! `camledger verify --allowed-signers`. Any valid token may read it (public keys only).
//! Auditors compare it with the fingerprint they pinned out of band: the file lives in the
//! data dir (see `crate::keys`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::routes::openapi::ServerErrors;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(keys))
}

/// The allowed-signers file of every key that signed this ledger.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "read",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`git` allowed-signers lines with `valid-after`/`valid-before`",
         body = String, content_type = "text/plain"),
        (status = 401, description = "`unauthorized`: missing, unknown or revoked token", body = ErrorBody),
        ServerErrors
    )
)]
async fn keys(_caller: Caller, State(state): State<Arc<AppState>>) -> Result<impl IntoResponse, ApiError> {
    let data_dir = state.ledger.data_dir().to_owned();
    let history = tokio::task::spawn_blocking(move || crate::keys::read_history(&data_dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], history.to_text()))
}
