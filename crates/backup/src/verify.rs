//! Reading every chunk back and checking every digest and every parent link.

use std::collections::HashMap;

use serde::Serialize;
use tracing::instrument;

use crate::db::Store;
use crate::key::BackupKey;
use crate::snapshot::PACK;
use crate::stream::{self, DownloadError};
use crate::{plan, Fault, Progress};

/// Why [`verify()`] could not run. Damage is not an error: it is listed in
/// [`VerifyReport::faults`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The catalog cannot be read (connection lost, …). CLI: non-zero exit; retry later.
    #[error("reading the snapshot catalog failed")]
    Database(#[source] sqlx::Error),
    /// Local decompression could not run (a blocking task failed). CLI: non-zero exit.
    #[error("checking an artifact failed locally: {0}")]
    Local(String),
}

/// What [`verify()`] checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Snapshot ids checked, oldest first.
    pub checked: Vec<i64>,
    /// Artifacts (pack, state) read back completely.
    pub artifacts: u64,
    /// Everything wrong; empty when all is well.
    pub faults: Vec<Fault>,
}

impl VerifyReport {
    /// True when no fault was found. The CLI exits non-zero otherwise.
    pub fn is_clean(&self) -> bool {
        self.faults.is_empty()
    }
}

/// Check snapshot `id` and its chain (or, with `None`, every snapshot): every snapshot's
/// seal matches `key` (manifest, parent, artifact rows), every chunk is present and matches
/// its SHA-256 and MAC, every artifact decompresses to its recorded digest (and no
/// further than its declared size), every parent exists back to a full snapshot. The
/// chunks of a snapshot whose seal fails are not read.
#[instrument(skip_all, fields(id), err)]
pub async fn verify(
    store: &Store,
    key: &BackupKey,
    id: Option<i64>,
    progress: &dyn Progress,
) -> Result<VerifyReport, Error> {
    let rows = store.snapshots().await.map_err(Error::Database)?;
    let parents: HashMap<i64, Option<i64>> = rows.iter().map(|r| (r.id, r.parent_id)).collect();
    let mut report = VerifyReport::default();
    let scope: Vec<i64> = match id {
        Some(id) => match plan::chain(&parents, id) {
            Ok(chain) => chain,
            Err(e) => {
                report.faults.push(Fault::from_chain(e));
                // Still check what exists of the chain.
                let mut existing = Vec::new();
                let mut current = Some(id);
                while let Some(c) = current.filter(|c| parents.contains_key(c) && !existing.contains(c)) {
                    existing.push(c);
                    current = parents.get(&c).copied().flatten();
                }
                existing.reverse();
                existing
            }
        },
        None => {
            for row in &rows {
                if let Err(e) = plan::chain(&parents, row.id) {
                    let fault = Fault::from_chain(e);
                    if !report.faults.contains(&fault) {
                        report.faults.push(fault);
                    }
                }
            }
            rows.iter().map(|r| r.id).collect()
        }
    };

    for snapshot in scope {
        report.checked.push(snapshot);
        let artifacts = store.artifacts(snapshot).await.map_err(Error::Database)?;
        if let Some(row) = rows.iter().find(|r| r.id == snapshot) {
            if let Err(fault) = crate::key::authenticate(key, row, &artifacts) {
                report.faults.push(fault);
                continue;
            }
            match crate::list::parse_manifest(row) {
                Err(_) => report.faults.push(Fault::BadManifest { snapshot }),
                Ok(manifest) => {
                    if let Some(name) = manifest.unsafe_ref() {
                        report.faults.push(Fault::UnsafeRef { snapshot, name: name.to_owned() });
                    }
                }
            }
        }
        if !artifacts.iter().any(|a| a.artifact == PACK) {
            report.faults.push(Fault::PackMissing { snapshot });
        }
        for artifact in &artifacts {
            progress.start(
                &format!("verify: snapshot {snapshot} {}", artifact.artifact),
                u64::try_from(artifact.stored_bytes).unwrap_or(0),
            );
            let checked = stream::download(store, key, snapshot, artifact, progress, |raw| {
                std::io::copy(raw, &mut std::io::sink()).map_err(stream::io_err("decompress"))?;
                Ok(())
            })
            .await;
            progress.finish();
            match checked {
                Ok(()) => report.artifacts += 1,
                Err(DownloadError::Fault(fault)) => report.faults.push(fault),
                Err(DownloadError::Database(e)) => return Err(Error::Database(e)),
                Err(DownloadError::Work(e)) => return Err(Error::Local(e.to_string())),
            }
        }
    }
    if !report.is_clean() {
        tracing::warn!(faults = report.faults.len(), "snapshot verification found faults");
    }
    Ok(report)
}
