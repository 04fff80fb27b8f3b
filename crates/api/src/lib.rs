//! camledger's HTTP service and command line.
//!
//! Layout, in layers: each module uses only modules listed before it (no module cycles;
//! re-exports such as `keys::SigningKeyArg` point back at `config`):
//! 1. leaves: [`config`] (every flag and `CAMLEDGER_*` variable, clap types included),
//!    `shutdown` (SIGINT/SIGTERM), [`error_chain`] (an error's causes on one line),
//!    [`registry`] (cameras, reader tokens, upload links in `<data-dir>/camledger.sqlite`), `listener`
//!    (connection cap and idle timeout), [`progress`], [`telemetry`], `metrics` (the
//!    Prometheus registry; the libraries report into it through their observer traits),
//!    `dashboard` (sessions, the live feed's channel, the thumbnail cache);
//! 2. `datadir` (checks, opening the ledger), [`keys`] (the signing key and its history),
//!    `error` (the one HTTP error type), [`push`] (the camera-side uploader);
//! 3. [`links`] (the `links` command: upload links),
//!    [`snapshots`] (snapshot/restore commands and scheduled snapshots), [`processing`]
//!    (verdict workers, `worker`, `replay`), [`evaluate`] (judging labelled folders),
//!    [`readmodel`] (the SQL projection of git that search, stats and export read);
//! 4. [`anchors`] (signed checkpoints), [`webhooks`] (signed POSTs of new events and verdicts);
//! 5. [`verify`]; `state` (what every handler reaches);
//! 6. `auth` (bearer tokens), then `routes` (one module per HTTP resource);
//! 7. [`app`]: build (open the ledger and registry, bind) then run (serve until shutdown);
//!    then [`bench`]: benchmarks against reference tools;
//! 8. [`cli`]: the `camledger` subcommands (the binary's `main.rs` only parses and calls in).

pub mod anchors;
pub mod app;
pub(crate) mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub(crate) mod dashboard;
pub(crate) mod datadir;
pub(crate) mod error;
pub mod error_chain;
pub mod evaluate;
pub(crate) mod gate;
pub mod keys;
pub mod links;
pub(crate) mod listener;
pub(crate) mod metrics;
pub mod processing;
pub mod progress;
pub mod push;
pub mod quarantine;
pub mod ratelimit;
pub mod readmodel;
pub mod registry;
pub(crate) mod routes;
pub(crate) mod shutdown;
pub mod snapshots;
pub(crate) mod state;
pub mod telemetry;
pub mod verify;
pub mod webhooks;

pub use app::Application;

/// The multipart parser of `POST /v1/images` on one input, for the fuzz target in `fuzz/`
/// (not an API). The input's first line is the `Content-Type` header, the rest the body.
/// Panics when the parser accepts more parts than allowed or answers anything but a 4xx.
#[doc(hidden)]
pub fn fuzz_multipart(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(content_type) = axum::http::HeaderValue::from_bytes(&data[..split]) else { return };
    let body = axum::body::Bytes::copy_from_slice(data.get(split + 1..).unwrap_or_default());
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(axum::http::header::CONTENT_TYPE, content_type);
    const MAX_PARTS: usize = 4;
    match routes::images::read_parts(&headers, &body, MAX_PARTS) {
        Ok(parts) => {
            assert!(!parts.is_empty() && parts.len() <= MAX_PARTS, "{} parts accepted", parts.len());
            let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
            assert!(total <= body.len(), "the parts hold more bytes than the body");
        }
        Err(error) => assert!(error.status.is_client_error(), "a malformed body answered {}", error.status),
    }
}
pub use config::ServeConfig;
