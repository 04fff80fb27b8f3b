//! camledger's HTTP service and command line.
//!
//! Layout:
//! - [`cli`]: the `camledger` subcommands (the binary's `main.rs` only parses and calls in);
//! - [`config`]: typed configuration from flags and `CAMLEDGER_*` variables;
//! - [`app`]: build (open the ledger and registry, bind) then run (serve until shutdown);
//! - `routes`: one module per HTTP resource; `auth`: bearer tokens; `error`: the one HTTP
//!   error type; `listener`: connection cap and idle timeout;
//! - [`registry`]: cameras and reader tokens in `<data-dir>/camledger.sqlite`;
//! - [`processing`]: in-process verdict workers, `camledger worker` and `replay`;
//! - [`keys`]: the ledger's signing key (`--signing-key`) and its history;
//! - [`snapshots`]: snapshot/restore commands and scheduled snapshots;
//! - [`push`]: the camera-side uploader; [`bench`]: benchmarks against reference tools.

pub mod anchors;
pub mod app;
pub(crate) mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub(crate) mod error;
pub mod keys;
pub(crate) mod listener;
pub mod processing;
pub mod progress;
pub mod push;
pub mod registry;
pub(crate) mod routes;
pub mod snapshots;
pub mod telemetry;
pub mod verify;

pub use app::Application;
pub use config::ServeConfig;
