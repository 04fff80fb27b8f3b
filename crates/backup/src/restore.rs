//! Restoring a data dir from a snapshot chain, proving it, then moving it into place.
//!
//! Nothing from the database is used before it is proven with the backup key: every
//! snapshot of the chain must carry a valid seal (manifest, parent links, artifact rows)
//! before the first byte is written, and every chunk its MAC before it is decompressed.
//! The repository is created the way a new ledger is (camledger's own `config`, `HEAD`,
//! no hooks); from the snapshot come only objects (indexed by gix, named by their own
//! hash), ref values under `refs/` and the registry file, all at fixed or checked paths.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tracing::instrument;

use crate::db::{ArtifactRow, Store};
use crate::key::BackupKey;
use camledger_eventstore::{Ledger, LedgerConfig, EVENTS_REF};

use crate::git::{self, GitError};
use crate::list;
use crate::snapshot::{PACK, STATE, STATE_FILE};
use crate::stream::{self, io_err, DownloadError, WorkError};
use crate::{plan, Fault, Progress};

/// Why [`restore()`] failed. In every case the target is left as it was (absent or
/// empty) and the temporary directory is removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target exists and is not an empty directory. Usage error: CLI exit 2.
    #[error("refusing to restore into {0}: it exists and is not an empty directory")]
    TargetNotEmpty(PathBuf),
    /// The catalog has no snapshot to restore. CLI: non-zero exit.
    #[error("there is no snapshot to restore")]
    NoSnapshots,
    /// The stored snapshots are damaged (chunk, digest, missing parent, …). Not
    /// retried; CLI non-zero exit; try an older snapshot or another backup.
    #[error("the snapshot chain is damaged: {0}")]
    Damaged(#[source] Fault),
    /// The database failed while reading. CLI: non-zero exit; retry later.
    #[error("reading the snapshot database failed")]
    Database(#[source] sqlx::Error),
    /// The restored data dir failed a proof (see [`ProofFailure`]). Not retried; CLI
    /// non-zero exit. Nothing is moved into place.
    #[error("the restored data dir failed its proof: {0}")]
    Proof(#[source] ProofFailure),
    /// Git failed while building the repository. CLI: non-zero exit.
    #[error(transparent)]
    Git(#[from] GitError),
    /// Local I/O failed (temporary directory, rename, blocking task). CLI: non-zero exit.
    #[error("{0}")]
    Io(String),
}

/// A restored data dir that is not what the snapshot describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofFailure {
    #[error("refs differ from the manifest: restored {restored:?}, expected {expected:?}")]
    RefsDiffer { restored: String, expected: String },
    #[error("snapshot {snapshot}'s pack indexed {indexed} objects, {expected} expected")]
    ObjectCount { snapshot: i64, indexed: u64, expected: i64 },
    #[error("git fsck --full --strict failed: {0}")]
    Fsck(String),
    #[error("the ledger has no events (no refs/heads/events)")]
    NoEvents,
    /// `Ledger::verify` failed: chain, seq continuity, `event.json`, image SHA-256, …
    #[error("ledger verification failed: {0}")]
    Event(String),
    #[error("the restored {STATE_FILE} fails SQLite's integrity check: {0}")]
    State(String),
}

/// What [`restore()`] produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: i64,
    /// The chain applied, full snapshot first.
    pub chain: Vec<i64>,
    /// Objects indexed over the chain.
    pub objects: u64,
    /// Events proven (image SHA-256 checked).
    pub events: u64,
    pub refs: usize,
    /// Whether `camledger.sqlite` was restored.
    pub state: bool,
    /// The new data dir.
    pub data_dir: PathBuf,
}

impl From<WorkError> for Error {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::Git(g) => Error::Git(g),
            other => Error::Io(other.to_string()),
        }
    }
}

impl From<DownloadError> for Error {
    fn from(e: DownloadError) -> Self {
        match e {
            DownloadError::Database(d) => Error::Database(d),
            DownloadError::Fault(f) => Error::Damaged(f),
            DownloadError::Work(w) => w.into(),
        }
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io(format!("{what}: {e}"))
}

/// Restore snapshot `id` (default: the latest) into the new data dir `to`, trusting only
/// what `key` proves.
#[instrument(skip_all, fields(to = %to.display(), id), err)]
pub async fn restore(
    store: &Store,
    key: &BackupKey,
    to: &Path,
    id: Option<i64>,
    progress: &dyn Progress,
) -> Result<RestoreReport, Error> {
    if to.exists() {
        let empty_dir = to.is_dir() && std::fs::read_dir(to).map_err(io("read the target"))?.next().is_none();
        if !empty_dir {
            return Err(Error::TargetNotEmpty(to.to_owned()));
        }
    }
    let rows = store.snapshots().await.map_err(Error::Database)?;
    let target_id = match id {
        Some(id) => id,
        None => rows.last().map(|r| r.id).ok_or(Error::NoSnapshots)?,
    };
    let parents: HashMap<i64, Option<i64>> = rows.iter().map(|r| (r.id, r.parent_id)).collect();
    let chain = plan::chain(&parents, target_id).map_err(|e| Error::Damaged(Fault::from_chain(e)))?;
    let target_row = rows
        .iter()
        .find(|r| r.id == target_id)
        .ok_or(Error::Damaged(Fault::UnknownSnapshot { snapshot: target_id }))?;
    // Prove every snapshot of the chain before anything is written.
    let mut sealed: Vec<(i64, Vec<ArtifactRow>)> = Vec::with_capacity(chain.len());
    for &snapshot in &chain {
        let row = rows.iter().find(|r| r.id == snapshot).ok_or(Error::Damaged(Fault::UnknownSnapshot { snapshot }))?;
        let artifacts = store.artifacts(snapshot).await.map_err(Error::Database)?;
        crate::key::authenticate(key, row, &artifacts).map_err(Error::Damaged)?;
        sealed.push((snapshot, artifacts));
    }
    let manifest =
        list::parse_manifest(target_row).map_err(|_| Error::Damaged(Fault::BadManifest { snapshot: target_id }))?;
    if let Some(name) = manifest.unsafe_ref() {
        return Err(Error::Damaged(Fault::UnsafeRef { snapshot: target_id, name: name.to_owned() }));
    }

    // Build beside the target (same filesystem, so the final rename is atomic); the
    // TempDir removes everything on any early return.
    let parent_dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent_dir).map_err(io("create the target's parent"))?;
    let temp = tempfile::Builder::new()
        .prefix(".camledger-restore-")
        .tempdir_in(&parent_dir)
        .map_err(io("create a temporary directory beside the target"))?;
    let git_dir = blocking({
        let data_dir = temp.path().to_owned();
        move || git::init_ledger(&data_dir)
    })
    .await??;

    let mut objects = 0u64;
    let mut state = false;
    for (snapshot, artifacts) in &sealed {
        let snapshot = *snapshot;
        let pack =
            artifacts.iter().find(|a| a.artifact == PACK).ok_or(Error::Damaged(Fault::PackMissing { snapshot }))?;
        progress.start(&format!("restore: snapshot {snapshot} pack"), u64::try_from(pack.stored_bytes).unwrap_or(0));
        let expected = pack.objects;
        let git_dir_for_pack = git_dir.clone();
        let indexed = stream::download(store, key, snapshot, pack, progress, move |raw: &mut dyn BufRead| {
            if expected == 0 {
                // An empty pack (refs moved to existing objects): nothing to index.
                std::io::copy(raw, &mut std::io::sink()).map_err(io_err("read an empty pack"))?;
                return Ok(0);
            }
            Ok(git::index_pack(&git_dir_for_pack, raw)?)
        })
        .await?;
        progress.finish();
        if stream::to_i64(indexed) != expected {
            return Err(Error::Proof(ProofFailure::ObjectCount { snapshot, indexed, expected }));
        }
        objects += indexed;
        if snapshot == target_id {
            if let Some(state_artifact) = artifacts.iter().find(|a| a.artifact == STATE) {
                progress.start("restore: state", u64::try_from(state_artifact.stored_bytes).unwrap_or(0));
                let path = temp.path().join(STATE_FILE);
                stream::download(store, key, snapshot, state_artifact, progress, move |raw| {
                    let mut file = std::fs::File::create(&path).map_err(io_err("create the state file"))?;
                    std::io::copy(raw, &mut file).map_err(io_err("write the state file"))?;
                    file.sync_all().map_err(io_err("sync the state file"))?;
                    Ok(())
                })
                .await?;
                progress.finish();
                state = true;
            }
        }
    }

    blocking({
        let git_dir = git_dir.clone();
        let manifest = manifest.clone();
        move || git::set_refs(&git_dir, &manifest)
    })
    .await??;

    // The proofs. Each failure returns early and the TempDir takes everything with it.
    progress.start("restore: proving", 0);
    let restored = blocking({
        let git_dir = git_dir.clone();
        move || git::manifest_of(&git_dir)
    })
    .await??;
    if !restored.same_refs(&manifest) {
        return Err(Error::Proof(ProofFailure::RefsDiffer {
            restored: format!("{:?}", restored),
            expected: format!("{:?}", manifest),
        }));
    }
    let fsck = blocking({
        let git_dir = git_dir.clone();
        move || git::fsck(&git_dir)
    })
    .await??;
    fsck.map_err(|out| Error::Proof(ProofFailure::Fsck(out)))?;
    if !manifest.refs.contains_key(EVENTS_REF) {
        return Err(Error::Proof(ProofFailure::NoEvents));
    }
    // The event walk is the long part of the proof: its count goes to `progress` from here
    // (the walk runs on the blocking pool; `progress` is borrowed by this task).
    let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let walk = blocking({
        let data_dir = temp.path().to_owned();
        let counts = Arc::clone(&counts);
        move || {
            let ledger = Ledger::open(&data_dir, LedgerConfig::default()).map_err(|e| e.to_string())?;
            ledger
                .verify(|done, total| {
                    counts.0.store(done, Ordering::Relaxed);
                    counts.1.store(total, Ordering::Relaxed);
                })
                .map_err(|e| e.to_string())
        }
    });
    tokio::pin!(walk);
    let verified = loop {
        tokio::select! {
            verified = &mut walk => break verified?,
            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                let (done, total) = (counts.0.load(Ordering::Relaxed), counts.1.load(Ordering::Relaxed));
                progress.items("restore: verifying events", done, total);
            }
        }
    };
    let events = match verified {
        Ok(report) => report.events,
        Err(problem) => return Err(Error::Proof(ProofFailure::Event(problem))),
    };
    if events == 0 {
        return Err(Error::Proof(ProofFailure::NoEvents));
    }
    if state {
        check_state(&temp.path().join(STATE_FILE)).await?;
    }
    progress.finish();

    // Durable before visible (gix never fsyncs), then move into place: rename(2)
    // replaces an empty directory atomically.
    blocking({
        let dir = temp.path().to_owned();
        move || sync_tree(&dir)
    })
    .await?
    .map_err(io("fsync the restored data dir"))?;
    let built = temp.keep();
    if let Err(e) = std::fs::rename(&built, to) {
        let _ = std::fs::remove_dir_all(&built);
        return Err(Error::Io(format!("move the restored data dir into place: {e}")));
    }
    std::fs::File::open(&parent_dir).and_then(|d| d.sync_all()).map_err(io("fsync the target's parent directory"))?;
    tracing::info!(snapshot = target_id, objects, events, "restore proven and in place");
    Ok(RestoreReport {
        snapshot: target_id,
        chain,
        objects,
        events,
        refs: manifest.refs.len(),
        state,
        data_dir: to.to_owned(),
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Io(format!("a blocking task failed: {e}")))
}

/// fsync every file and directory under `dir`.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

async fn check_state(path: &Path) -> Result<(), Error> {
    use sqlx::{ConnectOptions, Connection, Row};

    let fail = |e: sqlx::Error| Error::Proof(ProofFailure::State(e.to_string()));
    let mut conn =
        sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true).connect().await.map_err(fail)?;
    let row = sqlx::query("PRAGMA integrity_check").fetch_one(&mut conn).await.map_err(fail)?;
    let verdict: String = row.try_get(0).map_err(fail)?;
    conn.close().await.map_err(fail)?;
    if verdict != "ok" {
        return Err(Error::Proof(ProofFailure::State(verdict)));
    }
    Ok(())
}
