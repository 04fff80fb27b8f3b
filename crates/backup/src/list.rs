//! Listing the snapshot catalog.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;
use tracing::instrument;

use crate::db::{SnapshotRow, Store};
use crate::plan::Manifest;

/// Why [`list()`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The catalog cannot be read. CLI: non-zero exit; HTTP 503; retry later.
    #[error("reading the snapshot catalog failed")]
    Database(#[source] sqlx::Error),
    /// A stored manifest is not valid JSON (manual edit or corruption). CLI: non-zero
    /// exit, run `snapshots verify`; HTTP 500.
    #[error("snapshot {snapshot}: the manifest is not valid JSON")]
    BadManifest {
        snapshot: i64,
        #[source]
        source: serde_json::Error,
    },
}

/// One snapshot as `snapshots list --format json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    pub id: i64,
    /// The snapshot this one builds on; `None` for a full snapshot.
    pub parent: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Objects in this snapshot's pack (not counting its ancestors').
    pub objects: u64,
    /// Bytes before zstd (pack + state copy).
    pub raw_bytes: u64,
    /// Bytes stored in chunks (after zstd).
    pub stored_bytes: u64,
    /// The `Seq:` of the `refs/heads/events` tip, if there is one.
    pub events_head_seq: Option<i64>,
    /// Every ref and its value.
    pub refs: BTreeMap<String, String>,
}

impl SnapshotInfo {
    pub(crate) fn from_row(row: &SnapshotRow) -> Result<SnapshotInfo, Error> {
        let manifest = parse_manifest(row)?;
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.created_at_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Ok(SnapshotInfo {
            id: row.id,
            parent: row.parent_id,
            created_at,
            objects: u64::try_from(row.objects).unwrap_or(0),
            raw_bytes: u64::try_from(row.raw_bytes).unwrap_or(0),
            stored_bytes: u64::try_from(row.stored_bytes).unwrap_or(0),
            events_head_seq: row.events_head_seq,
            refs: manifest.refs,
        })
    }

    /// Whether this snapshot is full (restorable on its own).
    pub fn is_full(&self) -> bool {
        self.parent.is_none()
    }
}

pub(crate) fn parse_manifest(row: &SnapshotRow) -> Result<Manifest, Error> {
    serde_json::from_str(&row.manifest).map_err(|source| Error::BadManifest { snapshot: row.id, source })
}

/// Every snapshot, oldest first.
#[instrument(skip_all, err)]
pub async fn list(store: &Store) -> Result<Vec<SnapshotInfo>, Error> {
    let rows = store.snapshots().await.map_err(Error::Database)?;
    rows.iter().map(SnapshotInfo::from_row).collect()
}
