//! One module per resource, each exposing `router()`: a utoipa-axum `OpenApiRouter` whose
//! `routes!` take path and method from each handler's `#[utoipa::path]`, so what is routed
//! and what `/openapi.json` describes are one list (see `openapi`).

use std::sync::Arc;

use axum::{Extension, Router};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub(crate) mod checkpoint;
pub(crate) mod dashboard;
pub(crate) mod events;
pub(crate) mod export;
pub(crate) mod git;
pub(crate) mod health;
pub(crate) mod images;
pub(crate) mod keys;
pub(crate) mod links;
pub(crate) mod metrics;
pub(crate) mod openapi;
pub(crate) mod receive;
pub(crate) mod stats;
pub(crate) mod stream;
pub(crate) mod thumbnails;
pub(crate) mod verdict;

/// Every route of the API listener, with its description.
pub(crate) fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(images::router())
        .merge(events::router())
        .merge(verdict::router())
        .merge(git::router())
        .merge(keys::router())
        .merge(links::router())
        .merge(checkpoint::router())
        .merge(stats::router())
        .merge(export::router())
        .merge(metrics::router())
        .merge(dashboard::router())
        .merge(stream::router())
        .merge(thumbnails::router())
        .merge(openapi::router())
}

/// The routes, serving `/openapi.json` from the document they were collected with.
pub(crate) fn router() -> Router<Arc<AppState>> {
    let (router, document) = api().split_for_parts();
    router.layer(Extension(openapi::Document::new(&document)))
}
