//! One module per resource, each exposing `router()`.

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
pub(crate) mod receive;
pub(crate) mod stats;
pub(crate) mod stream;
pub(crate) mod thumbnails;
pub(crate) mod verdict;
