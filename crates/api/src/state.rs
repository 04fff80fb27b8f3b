//! What every handler reaches: [`AppState`], which `app` builds, and the writer's health
//! that `/readyz` reads. Handlers (`routes`, `auth`) depend on this module, never on `app`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use camledger_backup::schedule::ScheduleStatus;
use camledger_eventstore::{EventWriter, Ledger};
use camledger_processor::admission::Limits;
use tokio::sync::{watch, Semaphore};

use crate::registry::Registry;

/// What every handler can reach.
pub(crate) struct AppState {
    pub(crate) ledger: Ledger,
    pub(crate) writer: EventWriter,
    pub(crate) registry: Registry,
    pub(crate) limits: Limits,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_timeout: Duration,
    /// Present when scheduled snapshots are on (`--snapshot-interval`).
    pub(crate) snapshots: Option<watch::Receiver<ScheduleStatus>>,
    /// Request-body bytes that may be buffered at once, one permit per byte (`--max-inflight-bytes`).
    pub(crate) body_budget: Arc<Semaphore>,
    /// Most parts in one multipart upload (`--max-parts`).
    pub(crate) max_parts: usize,
    /// Admissions running at once on the blocking pool.
    pub(crate) admission_slots: Arc<Semaphore>,
    /// What the last append said about the writer; read by `/readyz`.
    pub(crate) writer_health: WriterHealth,
    /// Signed checkpoints into the anchor store (`GET /v1/checkpoint`, `/healthz`).
    pub(crate) anchors: Arc<crate::anchors::Anchoring>,
    /// Clones over git smart HTTP (`/git/ledger.git`).
    pub(crate) git: GitService,
    /// The SQL projection of events and verdicts that listings, search, stats and export read.
    pub(crate) read_model: Arc<crate::readmodel::ReadModel>,
    /// Per-camera token buckets (`--rate-limit`, `cameras limit`).
    pub(crate) rate_limits: crate::ratelimit::Buckets,
    /// Quarantined cameras, as `refs/heads/cameras` says (`crate::quarantine`).
    pub(crate) quarantined: crate::quarantine::Quarantined,
    /// Prometheus metrics (`GET /metrics`).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Sessions, the live feed and thumbnails of the dashboard (`GET /`).
    pub(crate) dashboard: crate::dashboard::Dashboard,
}

/// How clones are served; built once from the configuration.
pub(crate) struct GitService {
    pub(crate) git_dir: PathBuf,
    /// The server's own `PATH` (git is looked up in it); nothing of a request reaches git's
    /// environment.
    pub(crate) path: std::ffi::OsString,
    /// `git` as found in `path` at start-up: an absolute program path lets the standard
    /// library spawn with `posix_spawn` instead of forking the whole server (with `PATH` set
    /// in a cleared environment it must fork to search it).
    pub(crate) program: PathBuf,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_request_bytes: usize,
    pub(crate) timeout: Duration,
    /// Pushes of image commits (`routes::receive`).
    pub(crate) push: PushService,
}

/// How `git push` of image commits is received; built once from the configuration.
pub(crate) struct PushService {
    /// Where each push gets its own temporary quarantine repository (`<data-dir>/push-quarantine`).
    pub(crate) quarantine: PathBuf,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_bytes: usize,
    pub(crate) max_commits: usize,
    pub(crate) timeout: Duration,
}

/// The writer's state as seen from the answers to appends.
///
/// `EventWriter` has no health method (yet); until it does, the last append error is the
/// signal: `Unavailable` (poisoned or shut down) stays until restart, a `Storage` error
/// clears with the next successful append.
#[derive(Default)]
pub(crate) struct WriterHealth {
    last_error: std::sync::Mutex<Option<(bool, String)>>,
}

impl WriterHealth {
    pub(crate) fn record(&self, outcome: Result<(), &camledger_eventstore::append::Error>) {
        use camledger_eventstore::append::Error as E;
        let mut last = self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                if last.as_ref().is_some_and(|(sticky, _)| !sticky) {
                    *last = None;
                }
            }
            Err(e @ E::Unavailable) => *last = Some((true, e.to_string())),
            Err(e @ E::Storage(_)) => {
                if !last.as_ref().is_some_and(|(sticky, _)| *sticky) {
                    *last = Some((
                        false,
                        format!("{e}: {}", std::error::Error::source(e).map_or(String::new(), |s| s.to_string())),
                    ));
                }
            }
            // The request's fault, not the writer's.
            Err(
                E::InvalidCamera
                | E::InvalidIdempotencyKey
                | E::InvalidCapturedAt
                | E::UnsupportedImage { .. }
                | E::IdempotencyKeyReused { .. },
            ) => {}
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|(_, e)| e.clone())
    }
}

/// Whether the writer accepts appends: `Err(reason)` when it does not. The one place
/// `/readyz` asks: the writer's own supervision first (a panic being recovered from, a
/// poisoning fsync failure, too many panics, shutdown), then the last storage error seen by
/// an upload (a full disk), which clears with the next successful append.
pub(crate) fn writer_readiness(state: &AppState) -> Result<(), String> {
    state.writer.health().map_err(|e| e.cause)?;
    match state.writer_health.last_error() {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::WriterHealth;
    use camledger_eventstore::append::Error;

    #[test]
    fn a_storage_error_clears_with_the_next_append_and_unavailable_sticks() {
        let health = WriterHealth::default();
        assert_eq!(health.last_error(), None);
        health.record(Err(&Error::InvalidCamera));
        assert_eq!(health.last_error(), None, "a bad request says nothing about the writer");
        health.record(Err(&Error::Storage(std::sync::Arc::new(std::io::Error::other("disk full")))));
        assert!(health.last_error().is_some_and(|e| e.contains("disk full")));
        health.record(Ok(()));
        assert_eq!(health.last_error(), None);
        health.record(Err(&Error::Unavailable));
        health.record(Ok(()));
        assert!(health.last_error().is_some(), "a poisoned writer stays unready until restart");
    }
}
