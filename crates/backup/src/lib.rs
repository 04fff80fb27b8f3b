//! Snapshots of a camledger data dir into SQL (MariaDB in production, SQLite embedded),
//! and verified restores from them.
//!
//! # What a snapshot holds
//! - `pack`: a git pack of every object reachable from the ledger's refs
//!   (`<data-dir>/ledger.git`: events, verdicts, notes, whatever exists) and not from the
//!   previous snapshot's refs. The first snapshot (and every `full_every`-th) is full;
//!   the others are incremental and name their parent.
//! - a manifest of every ref and its value (and `HEAD`'s target), in the snapshot row;
//! - `state`: a consistent copy of `<data-dir>/camledger.sqlite` (camera registry, token
//!   hashes) made with `VACUUM INTO`, when the file exists. `index/` is not copied: the
//!   ledger rebuilds it from git (dedupe, idempotency, sequence index) on open.
//!
//! Each artifact is zstd-compressed and cut into chunks of at most 8 MiB (MariaDB's
//! default `max_allowed_packet` is 16 MiB), each with its SHA-256, plus digests of the
//! whole stored and raw streams. One transaction writes the snapshot row, its artifacts
//! and all chunks, so a failed snapshot leaves nothing visible. When the refs and the
//! state equal the previous snapshot's, nothing is written ([`SnapshotOutcome::Unchanged`]).
//!
//! # Authentication
//! Every snapshot is sealed with a [`BackupKey`] that never lives in the database (see
//! [`mod@key`]): HMAC-SHA256 over the snapshot row (manifest, parent, totals) and its
//! artifact rows, and one over each chunk. `verify` and `restore` prove both before
//! trusting anything; unsealed snapshots (taken before seals existed) are refused.
//!
//! # Restore
//! [`restore()`] refuses a non-empty target, builds the data dir in a temporary sibling
//! directory, applies the chain (full + incrementals) checking every chunk and every
//! whole, then proves the result: refs equal the manifest, stock `git fsck --full
//! --strict` is clean, every event's image SHA-256 matches its `event.json`, the sequence
//! runs 1..=head without gaps, at least one event exists, the state copy passes SQLite's
//! `integrity_check`. Only then is the directory renamed into place; on any failure it is
//! deleted, so nothing that looks like a valid ledger is left behind.
//!
//! # Memory
//! Bounded whatever the repository size: pack generation and indexing stream through a
//! channel of at most a few chunks (see `pipe`), and chunks are read one row at a time.
//!
//! # Calling it (the CLI / server)
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use camledger_backup::{BackupKey, NoProgress, SnapshotOptions, Store};
//! let store = Store::connect("mysql://root@127.0.0.1:3306/camledger").await?; // migrates
//! let key = BackupKey::read("/etc/camledger/backup.key".as_ref())?;     // never in the database
//! let outcome = camledger_backup::snapshot(&store, &key, "/var/lib/camledger".as_ref(), &SnapshotOptions::default(), &NoProgress).await?;
//! let all = camledger_backup::list(&store).await?;                       // serde: --format json
//! let report = camledger_backup::verify(&store, &key, None, &NoProgress).await?; // exit non-zero unless report.is_clean()
//! let restored = camledger_backup::restore(&store, &key, "/srv/new".as_ref(), None, &NoProgress).await?;
//! let pruned = camledger_backup::prune(&store, 7).await?;
//! // serve: publish to a watch channel, read it from the status route
//! let (status_tx, status_rx) = tokio::sync::watch::channel(camledger_backup::ScheduleStatus::default());
//! let shutdown = async { /* cancellation token */ };
//! camledger_backup::run_schedule(&store, &key, "/var/lib/camledger".as_ref(), &SnapshotOptions::default(),
//!     std::time::Duration::from_secs(3600), &status_tx, shutdown).await;
//! # let _ = (outcome, all, report, restored, pruned, status_rx); Ok(()) }
//! ```
//!
//! Exit codes for the CLI: `connect::Error::UnsupportedUrl`, `restore::Error::TargetNotEmpty`
//! and `prune::Error::KeepZero` are usage errors (2); every other error, and a
//! `VerifyReport` that is not `is_clean()`, is a failure (1). Each error enum documents how
//! to handle its variants. `Progress` is the hook for indicatif bars.
//!
//! # Layout
//! `db` (the catalog, both backends), `pipe` + `stream` (chunking, hashing, zstd between
//! blocking and async code), `git` (packs, refs, proofs), `plan` (pure decisions),
//! [`mod@key`] (the backup key, seals and chunk MACs),
//! and one module per operation: [`mod@snapshot`], [`mod@list`], [`mod@verify`], [`mod@restore`],
//! [`mod@prune`], [`schedule`].

#[macro_use]
mod db;
mod git;
mod pipe;
mod plan;
pub mod pool;
mod stream;

pub mod anchor;
pub mod key;
pub mod list;
pub mod prune;
pub mod restore;
pub mod schedule;
pub mod snapshot;
pub mod verify;

pub use anchor::{AnchorError, AnchorStore, StoredCheckpoint};
pub use db::Store;
pub use git::GitError;
pub use key::BackupKey;
pub use list::{list, SnapshotInfo};
pub use prune::{prune, PruneReport};
pub use restore::{restore, RestoreReport};
pub use schedule::{run_schedule, ScheduleStatus};
pub use snapshot::{snapshot, SnapshotOptions, SnapshotOutcome};
pub use verify::{verify, VerifyReport};

/// The largest chunk this crate writes: half of MariaDB's default `max_allowed_packet`
/// (16 MiB), leaving room for the row's other values and protocol overhead.
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Progress reporting; the CLI plugs a terminal progress bar in, the server a no-op.
///
/// `start` opens a phase (`total` 0 when unknown), `advance` adds bytes done, `finish`
/// closes the phase. `items` reports a phase counted in items (events) instead: `done` of
/// `total` so far, called again as it moves (the default shows nothing).
pub trait Progress: Send + Sync {
    fn start(&self, what: &str, total: u64);
    fn advance(&self, n: u64);
    fn finish(&self);
    fn items(&self, what: &str, done: u64, total: u64) {
        let _ = (what, done, total);
    }
}

/// An error and all its sources, `outer: inner: innermost`, for logs and status fields.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Opening the snapshot catalog.
pub mod connect {
    /// Why [`crate::Store::connect`] failed.
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        /// The URL is neither `mysql://` nor `sqlite:`. Configuration error: CLI exit 2,
        /// not retried.
        #[error("unsupported database URL scheme {scheme:?}: use mysql://… or sqlite://…")]
        UnsupportedUrl { scheme: String },
        /// The database cannot be reached or opened. CLI: non-zero exit; `serve` logs it
        /// and retries at the next interval.
        #[error("cannot connect to the snapshot database")]
        Unreachable(#[source] sqlx::Error),
        /// The server did not answer a connection attempt in time (a host that drops
        /// packets). CLI: non-zero exit; `serve` logs it and retries at the next interval.
        #[error("cannot connect to the snapshot database: no answer within {after:?}")]
        TimedOut { after: std::time::Duration },
        /// The database was migrated by a newer camledger (it has migration `found`, this
        /// binary knows up to `known`). Refused, never retried: upgrade the binary.
        #[error(
            "the snapshot database has schema migration {found}, newer than this binary knows (up to {known}); \
             refusing to use it: upgrade camledger"
        )]
        NewerSchema { found: i64, known: i64 },
        /// Applying the embedded migrations failed (e.g. a modified applied migration).
        /// CLI: non-zero exit; an operator must look.
        #[error("applying the snapshot schema migrations failed")]
        Migrate(#[source] sqlx::migrate::MigrateError),
    }
}

/// Damage found in the stored snapshots. Each one makes `snapshots verify` exit non-zero
/// and a restore fail; none is retried (the data in the database is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    #[error("snapshot {snapshot} does not exist")]
    UnknownSnapshot { snapshot: i64 },
    #[error("snapshot {snapshot} needs parent snapshot {parent}, which is gone")]
    ParentMissing { snapshot: i64, parent: i64 },
    #[error("the parent links of snapshot {snapshot} form a loop")]
    ParentLoop { snapshot: i64 },
    #[error("snapshot {snapshot} has no pack artifact")]
    PackMissing { snapshot: i64 },
    #[error("snapshot {snapshot}: {artifact} chunk {seq} is missing")]
    ChunkMissing { snapshot: i64, artifact: String, seq: i64 },
    #[error("snapshot {snapshot}: {artifact} chunk {seq} does not match its SHA-256")]
    ChunkCorrupt { snapshot: i64, artifact: String, seq: i64 },
    #[error("snapshot {snapshot}: {artifact} has {found} chunks, {expected} expected")]
    ChunkCount { snapshot: i64, artifact: String, expected: i64, found: i64 },
    #[error("snapshot {snapshot}: {artifact} as a whole does not match its SHA-256")]
    WholeCorrupt { snapshot: i64, artifact: String },
    #[error("snapshot {snapshot}: {artifact} does not decompress: {reason}")]
    Undecodable { snapshot: i64, artifact: String, reason: String },
    #[error("snapshot {snapshot}: the manifest is not valid JSON")]
    BadManifest { snapshot: i64 },
    /// Written before snapshots were sealed (or its seal was erased). Refused: its
    /// manifest and chunks cannot be told from a forgery. Take a new snapshot.
    #[error(
        "snapshot {snapshot} is not sealed (taken before snapshots were authenticated, or its seal was removed); \
         refusing to trust it: take a new snapshot with this key"
    )]
    Unsealed { snapshot: i64 },
    /// The seal does not match the rows: someone changed the manifest (refs, HEAD), a
    /// parent link or an artifact row in the database, or the key is not the one the
    /// snapshot was taken with.
    #[error(
        "snapshot {snapshot}: its seal does not match: the snapshot was modified in the database \
         (manifest, parent or artifact rows), or --backup-key is not the key it was taken with"
    )]
    SealMismatch { snapshot: i64 },
    /// A chunk's MAC does not match: modified bytes, or a chunk moved from another
    /// snapshot or position. Never decompressed.
    #[error(
        "snapshot {snapshot}: {artifact} chunk {seq} is not authentic (modified, or moved from another \
         snapshot or position)"
    )]
    ChunkForged { snapshot: i64, artifact: String, seq: i64 },
    /// Decompression produced more than the sealed `raw_bytes`; stopped there.
    #[error("snapshot {snapshot}: {artifact} decompresses to more than its declared {declared} bytes; stopped there")]
    TooLarge { snapshot: i64, artifact: String, declared: i64 },
    /// The manifest names a ref or `HEAD` that is not a plain `refs/…` name (it could
    /// point outside the repository).
    #[error("snapshot {snapshot}: the manifest names an unsafe ref {name:?}")]
    UnsafeRef { snapshot: i64, name: String },
}

impl Fault {
    fn from_chain(e: plan::ChainError) -> Fault {
        match e {
            plan::ChainError::Unknown(snapshot) => Fault::UnknownSnapshot { snapshot },
            plan::ChainError::ParentMissing { snapshot, parent } => Fault::ParentMissing { snapshot, parent },
            plan::ChainError::Cycle(snapshot) => Fault::ParentLoop { snapshot },
        }
    }
}
