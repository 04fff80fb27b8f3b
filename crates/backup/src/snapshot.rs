//! Taking a snapshot: refs manifest, incremental pack, state copy, one transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use tracing::instrument;

use crate::db::{SnapshotRow, Store};
use crate::git::{self, GitError};
use crate::key::BackupKey;
use crate::list::{self, SnapshotInfo};
use crate::plan::{self, Manifest};
use crate::stream::{self, io_err, UploadError, WorkError};
use crate::{Progress, MAX_CHUNK_BYTES};

/// The artifact names used in `snapshot_artifacts.artifact`.
pub(crate) const PACK: &str = "pack";
pub(crate) const STATE: &str = "state";
/// The API's camera registry inside a data dir.
pub(crate) const STATE_FILE: &str = "camledger.sqlite";
pub(crate) const LEDGER_DIR: &str = "ledger.git";

/// Why [`snapshot()`] failed. In every case nothing was committed: the transaction
/// holding the snapshot row and its chunks is rolled back (or dies with the connection).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `<data-dir>/ledger.git` does not exist. Configuration error: CLI non-zero exit;
    /// `serve` logs it.
    #[error("no ledger repository at {0}")]
    NoLedger(PathBuf),
    /// The database failed or the connection died (e.g. mid-snapshot). CLI: non-zero
    /// exit; `serve` logs it and tries again at the next interval.
    #[error("the snapshot database failed; nothing was written")]
    Database(#[source] sqlx::Error),
    /// Reading the repository or writing the pack failed. CLI: non-zero exit; log.
    #[error(transparent)]
    Git(#[from] GitError),
    /// Copying `camledger.sqlite` with `VACUUM INTO` failed. CLI: non-zero exit; log.
    #[error("copying {STATE_FILE} failed")]
    State(#[source] sqlx::Error),
    /// Local I/O (temporary files, a blocking task) failed. CLI: non-zero exit; log.
    #[error("{0}")]
    Io(String),
    /// The previous snapshot's manifest is unreadable; run `snapshots verify`.
    #[error(transparent)]
    Catalog(#[from] list::Error),
}

impl From<WorkError> for Error {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::Git(g) => Error::Git(g),
            other => Error::Io(crate::error_chain(&other)),
        }
    }
}

impl From<UploadError> for Error {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Database(d) => Error::Database(d),
            UploadError::Work(w) => w.into(),
        }
    }
}

/// Tuning for [`snapshot()`].
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// Bytes per chunk row; clamped to [`MAX_CHUNK_BYTES`]. Default: 8 MiB.
    pub chunk_size: usize,
    /// zstd level (1 fast … 19 small). Default 3: images are already compressed, the
    /// gain is on `event.json`, trees and commits.
    pub zstd_level: i32,
    /// Start a new full snapshot once the chain holds this many snapshots. Default 24
    /// (daily fulls with hourly snapshots). Restores read the whole chain, and prune
    /// only frees space below a full snapshot.
    pub full_every: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions { chunk_size: MAX_CHUNK_BYTES, zstd_level: 3, full_every: 24 }
    }
}

/// What [`snapshot()`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SnapshotOutcome {
    /// A new snapshot was committed.
    Created(SnapshotInfo),
    /// The refs and the state equal snapshot `latest`'s: nothing was written.
    Unchanged { latest: i64 },
}

/// Snapshot the data dir `data_dir` into `store`, sealed with `key`.
#[instrument(skip_all, fields(data_dir = %data_dir.display(), snapshot_id, parent, objects), err)]
pub async fn snapshot(
    store: &Store,
    key: &BackupKey,
    data_dir: &Path,
    options: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<SnapshotOutcome, Error> {
    let git_dir = data_dir.join(LEDGER_DIR);
    if !git_dir.is_dir() {
        return Err(Error::NoLedger(git_dir));
    }
    let repo_state = {
        let git_dir = git_dir.clone();
        tokio::task::spawn_blocking(move || git::read_state(&git_dir)).await.map_err(|e| Error::Io(e.to_string()))??
    };
    let manifest_json =
        serde_json::to_string(&repo_state.manifest).map_err(|e| Error::Io(format!("manifest to JSON: {e}")))?;

    // A consistent copy of the registry, taken before deciding "unchanged" so a registry
    // change alone (a new camera, a revoked token) still makes a snapshot.
    let temp = tempfile::tempdir().map_err(|e| Error::Io(format!("temporary directory: {e}")))?;
    let state_copy = copy_state(data_dir, temp.path()).await?;
    let state_sha = match &state_copy {
        Some(path) => Some(file_sha256(path.clone()).await?),
        None => None,
    };

    let previous = store.latest_snapshot().await.map_err(Error::Database)?;
    let mut parent = None;
    let mut hidden = Vec::new();
    // Build on the previous snapshot only when it is authentic: its manifest decides what
    // this pack leaves out, and an unsealed or forged one must not shape a new snapshot.
    // Otherwise (snapshots from before seals, another key) this one is full.
    let mut trusted_previous = None;
    if let Some(prev) = previous {
        let prev_artifacts = store.artifacts(prev.id).await.map_err(Error::Database)?;
        match crate::key::authenticate(key, &prev, &prev_artifacts) {
            Ok(()) => trusted_previous = Some((prev, prev_artifacts)),
            Err(fault) => {
                tracing::warn!(%fault, "the latest snapshot is not authentic with this key; taking a full snapshot")
            }
        }
    }
    if let Some((prev, prev_artifacts)) = &trusted_previous {
        let prev_manifest: Manifest = list::parse_manifest(prev)?;
        let prev_state_sha = prev_artifacts.iter().find(|a| a.artifact == STATE).map(|a| a.raw_sha256.clone());
        if prev_manifest == repo_state.manifest && prev_state_sha == state_sha {
            tracing::info!(latest = prev.id, "nothing changed since the latest snapshot");
            return Ok(SnapshotOutcome::Unchanged { latest: prev.id });
        }
        let parents: HashMap<i64, Option<i64>> =
            store.snapshots().await.map_err(Error::Database)?.iter().map(|r| (r.id, r.parent_id)).collect();
        let full = plan::next_is_full(Some(plan::chain_len(&parents, prev.id)), options.full_every);
        if !full {
            parent = Some(prev.id);
            hidden = prev_manifest.refs.into_values().collect();
        }
    }

    let chunk_size = options.chunk_size.clamp(1, MAX_CHUNK_BYTES);
    let created_at_ms = i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut tx = store.begin().await.map_err(Error::Database)?;
    let id = tx
        .insert_snapshot(parent, created_at_ms, &manifest_json, repo_state.events_head_seq)
        .await
        .map_err(Error::Database)?;
    let span = tracing::Span::current();
    span.record("snapshot_id", id);
    span.record("parent", parent);

    progress.start("snapshot: pack", 0);
    let (objects, mut pack) = {
        let git_dir = git_dir.clone();
        let manifest = repo_state.manifest.clone();
        stream::upload(&mut tx, key, id, PACK, chunk_size, options.zstd_level, progress, move |out| {
            Ok(git::write_pack(&git_dir, &manifest, &hidden, out)?)
        })
        .await?
    };
    progress.finish();
    span.record("objects", objects);
    pack.objects = stream::to_i64(objects);
    tx.insert_artifact(id, &pack).await.map_err(Error::Database)?;
    let mut raw_bytes = pack.raw_bytes;
    let mut stored_bytes = pack.stored_bytes;
    let mut artifacts = vec![pack.clone()];

    if let Some(path) = state_copy {
        progress.start("snapshot: state", 0);
        let ((), state) =
            stream::upload(&mut tx, key, id, STATE, chunk_size, options.zstd_level, progress, move |out| {
                let mut file = std::fs::File::open(&path).map_err(io_err("open the state copy"))?;
                std::io::copy(&mut file, out).map_err(io_err("read the state copy"))?;
                out.flush().map_err(io_err("flush the state copy"))?;
                Ok(())
            })
            .await?;
        progress.finish();
        raw_bytes += state.raw_bytes;
        stored_bytes += state.stored_bytes;
        tx.insert_artifact(id, &state).await.map_err(Error::Database)?;
        artifacts.push(state);
    }
    let mut row = SnapshotRow {
        id,
        parent_id: parent,
        created_at_ms,
        manifest: manifest_json,
        objects: pack.objects,
        raw_bytes,
        stored_bytes,
        events_head_seq: repo_state.events_head_seq,
        seal: None,
    };
    row.seal = Some(key.seal(&row, &artifacts));
    tx.seal(&row).await.map_err(Error::Database)?;
    tx.commit().await.map_err(Error::Database)?;
    drop(temp);

    let info = SnapshotInfo {
        id,
        parent,
        created_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(created_at_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        objects,
        raw_bytes: u64::try_from(raw_bytes).unwrap_or(0),
        stored_bytes: u64::try_from(stored_bytes).unwrap_or(0),
        events_head_seq: repo_state.events_head_seq,
        refs: repo_state.manifest.refs,
    };
    tracing::info!(id, objects, raw_bytes, stored_bytes, "snapshot committed");
    Ok(SnapshotOutcome::Created(info))
}

/// `VACUUM INTO` a copy of `<data_dir>/camledger.sqlite` inside `temp`; `None` when the
/// data dir has no registry yet. VACUUM INTO reads one consistent snapshot of the
/// database even while the API writes to it, unlike copying the file (and its WAL).
async fn copy_state(data_dir: &Path, temp: &Path) -> Result<Option<PathBuf>, Error> {
    use sqlx::ConnectOptions;

    let source = data_dir.join(STATE_FILE);
    if !source.is_file() {
        return Ok(None);
    }
    let target = temp.join(STATE_FILE);
    let target_str = target
        .to_str()
        .ok_or_else(|| Error::Io(format!("temporary path is not UTF-8: {}", target.display())))?
        .to_owned();
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&source)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(Error::State)?;
    sqlx::query("VACUUM INTO ?").bind(target_str).execute(&mut conn).await.map_err(Error::State)?;
    sqlx::Connection::close(conn).await.map_err(Error::State)?;
    Ok(Some(target))
}

async fn file_sha256(path: PathBuf) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let (_, sha) = crate::pipe::HashingReader::new(file).drain_and_finish()?;
        Ok::<_, std::io::Error>(sha)
    })
    .await
    .map_err(|e| Error::Io(e.to_string()))?
    .map_err(|e| Error::Io(format!("hash the state copy: {e}")))
}
