//! Retention: delete old snapshots, never one that a kept snapshot needs.

use std::collections::HashMap;

use serde::Serialize;
use tracing::instrument;

use crate::db::Store;
use crate::plan;

/// Why [`prune()`] failed. Nothing is deleted when it fails (one transaction).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `keep` was 0: that would delete every snapshot. Usage error: CLI exit 2.
    #[error("refusing to keep 0 snapshots; keep at least 1")]
    KeepZero,
    /// The catalog cannot be read or written. CLI: non-zero exit; retry later.
    #[error("pruning the snapshot catalog failed")]
    Database(#[source] sqlx::Error),
}

/// What [`prune()`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Deleted snapshot ids, newest first.
    pub deleted: Vec<i64>,
    /// Remaining snapshot ids, oldest first.
    pub kept: Vec<i64>,
}

/// Keep the `keep` newest snapshots and every ancestor they need; delete the rest.
///
/// Incremental snapshots need their whole chain back to a full snapshot, so space is
/// only freed below a full snapshot (see `SnapshotOptions::full_every`).
#[instrument(skip_all, fields(keep), err)]
pub async fn prune(store: &Store, keep: usize) -> Result<PruneReport, Error> {
    if keep == 0 {
        return Err(Error::KeepZero);
    }
    let mut tx = store.begin().await.map_err(Error::Database)?;
    let rows = store.snapshots().await.map_err(Error::Database)?;
    let parents: HashMap<i64, Option<i64>> = rows.iter().map(|r| (r.id, r.parent_id)).collect();
    let deleted = plan::prunable(&parents, keep);
    for id in &deleted {
        tx.delete_snapshot(*id).await.map_err(Error::Database)?;
    }
    tx.commit().await.map_err(Error::Database)?;
    let kept = rows.iter().map(|r| r.id).filter(|id| !deleted.contains(id)).collect();
    tracing::info!(deleted = deleted.len(), "pruned snapshots");
    Ok(PruneReport { deleted, kept })
}
