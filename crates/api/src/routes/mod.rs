//! One module per resource, each exposing `router()`.

pub(crate) mod checkpoint;
pub(crate) mod events;
pub(crate) mod export;
pub(crate) mod git;
pub(crate) mod health;
pub(crate) mod images;
pub(crate) mod keys;
pub(crate) mod receive;
pub(crate) mod stats;
