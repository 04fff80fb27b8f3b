//! Snapshots on a schedule, for `camledger serve --snapshot-interval 1h`.
//!
//! The server owns a `tokio::sync::watch` channel of [`ScheduleStatus`]; the loop
//! publishes every attempt there, and the HTTP status route reads the latest value.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::instrument;

use crate::list::{self, SnapshotInfo};
use crate::snapshot::{snapshot, SnapshotOptions, SnapshotOutcome};
use crate::{BackupKey, NoProgress, Store};

/// What the scheduled snapshots did last; serialize it for the status route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleStatus {
    /// When the last attempt finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    /// `created`, `unchanged` or `failed`.
    pub last_outcome: Option<&'static str>,
    /// The newest snapshot in the catalog (id, time, size), as far as this process knows.
    pub last_snapshot: Option<SnapshotInfo>,
    /// The error of the last attempt, when it failed (its whole cause chain).
    pub last_error: Option<String>,
    /// Failed attempts since the last success; alert on this.
    pub failures_in_a_row: u32,
}

/// Take a snapshot now and then every `every` until `shutdown` completes, publishing each
/// attempt's result to `status`. Failures are logged and retried at the next tick.
/// A snapshot in progress when `shutdown` completes is abandoned; its transaction rolls
/// back, so nothing partial is visible.
#[instrument(skip_all, fields(data_dir = %data_dir.display(), every_s = every.as_secs()))]
pub async fn run_schedule(
    store: &Store,
    key: &BackupKey,
    data_dir: &Path,
    options: &SnapshotOptions,
    every: Duration,
    status: &watch::Sender<ScheduleStatus>,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
    // After a long snapshot, wait a full interval rather than firing a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        let attempt = tokio::select! {
            () = &mut shutdown => return,
            result = attempt(store, key, data_dir, options) => result,
        };
        status.send_modify(|s| {
            s.last_attempt_at = Some(OffsetDateTime::now_utc());
            match attempt {
                Ok((outcome, latest)) => {
                    s.last_outcome = Some(outcome);
                    s.last_snapshot = latest.or(s.last_snapshot.take());
                    s.last_error = None;
                    s.failures_in_a_row = 0;
                }
                Err(error) => {
                    tracing::error!(%error, "scheduled snapshot failed; retrying at the next interval");
                    s.last_outcome = Some("failed");
                    s.last_error = Some(error);
                    s.failures_in_a_row += 1;
                }
            }
        });
    }
}

async fn attempt(
    store: &Store,
    key: &BackupKey,
    data_dir: &Path,
    options: &SnapshotOptions,
) -> Result<(&'static str, Option<SnapshotInfo>), String> {
    match snapshot(store, key, data_dir, options, &NoProgress).await {
        Ok(SnapshotOutcome::Created(info)) => Ok(("created", Some(info))),
        Ok(SnapshotOutcome::Unchanged { latest }) => {
            let all = list::list(store).await.map_err(|e| crate::error_chain(&e))?;
            Ok(("unchanged", all.into_iter().find(|s| s.id == latest)))
        }
        Err(e) => Err(crate::error_chain(&e)),
    }
}
