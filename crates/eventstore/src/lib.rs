//! camledger's event ledger: every uploaded image becomes one commit on `refs/heads/events`
//! of a bare git repository, durable before it is acknowledged, verifiable with stock git.
//!
//! # Layout
//! - [`format`](mod@format): the on-git format (`event.json`, commit message and trailers, tree and commit
//!   bytes). Normative description: `docs/event-format.md`.
//! - [`Ledger`] (this file and `read.rs`): a cheap, cloneable read handle. Opening is O(1): the
//!   head comes from the ref, seq -> commit id from `index/seq.idx` (one `pread`).
//! - [`EventWriter`] (`writer.rs`): the one group-commit writer thread per repository.
//! - `pack.rs`: one pack file (+ `.idx`) per batch, written by hand, and size-tiered consolidation.
//! - `seqidx.rs`, `windex.rs`: the derived indexes (`seq.idx`, `writer.redb`), rebuilt from git.
//! - `durable.rs`: the single fsync gate (fault injection and fsync timing go through it).
//! - [`observe`]: the hook through which the binary's metrics see fsyncs and batches.
//! - `refs.rs`: ref updates with git's lock protocol, the lock file fsynced before the rename.
//! - `publish.rs`: the one durable publish path (pack, ref compare-and-swap, fsyncs) that event,
//!   verdict and notes commits all take; every commit is built (and signed, when the ledger
//!   has a key) by `format::commit_bytes`.
//! - `recover.rs`: what a crash leaves (stale ref locks, temporary and index-less packs),
//!   removed when the writer starts; `docs/design.md`, "Hardening: crashes and the writer".
//! - [`verify`]: walks the chain from the head and reports the first failure precisely.
//! - [`verdict`]: processors' result commits (`refs/heads/verdicts`) and their git notes
//!   (`refs/notes/verdicts`), advanced together in one ref transaction.
//!
//! # Why the write path looks like this
//! gix writes loose objects and never fsyncs. One loose object + fsync per event measured
//! ~25 events/s; a pack per batch with one fsync per file measured 800–1,080 events/s. So the
//! writer thread drains up to `max_batch` requests, writes all their objects into one pack,
//! fsyncs it, moves the ref with a compare-and-swap, fsyncs the ref, appends to `seq.idx`, and
//! only then answers every request of the batch. After any failed fsync the state on disk is
//! unknown, so the writer is poisoned and answers [`append::Error::Unavailable`] until restarted.
//!
//! Packs are merged in size tiers (eight packs of similar size become one; geometrically only
//! past `max_packs`) on a separate thread, woken after each batch, so a large merge never runs
//! on the appends' path; merged packs are removed only after the new pack is durable. The merge
//! writes its pack out in 1 MiB `fdatasync` steps, each started between two batches, and rests
//! as long as each step took while appends come in: measured with `camledger bench ingest`, a
//! merge that fsynced hundreds of megabytes at once held a batch's fsync for 100–250 ms, and
//! merging geometrically at every batch past 16 packs rewrote the whole ledger several times
//! a second under load.
//! Because gix's object store recycles the slots of removed packs (and can trip an internal
//! assertion when a long-lived store sees many removals), every handle reopens its object store
//! after a consolidation (see `Ledger::repo`).
//!
//! # Measured here (2 cores, ext4 on a virtual disk, dev profile with optimised dependencies)
//! - Durable appends of distinct 100 KiB images (`examples/append_rate.rs`): 900–1,100
//!   events/s at `max_batch` 100 with 64 clients, 1,300–2,500 events/s at 256 clients
//!   (100–500 per batch); ~160–250 events/s with `max_batch` 1 (one fsync round per event).
//!   fsync latency on this disk varies run to run by about 2×.
//! - `examples/scale.rs` at 100, 1k, 10k, 100k events (1 KiB images): `Ledger::open`
//!   0.22–0.34 ms, `head()` 0.15–1 ms, a random `image(seq)` 33–111 µs; `start_writer` with
//!   caught-up indexes 8 ms; rebuilding `writer.redb` from git for 100k events 3.6 s.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub mod camera_actions;
pub mod checkpoint;
mod durable;
pub mod format;
pub mod observe;
mod pack;
mod publish;
pub mod read;
mod recover;
mod refs;
mod seqidx;
pub mod sign;
pub mod verdict;

/// Every parser of untrusted ledger bytes in one call, for the fuzz targets in `fuzz/`
/// (not an API: the parsers stay crate-private).
#[doc(hidden)]
pub fn fuzz_parsers(data: &[u8]) {
    if let Ok(record) = EventRecord::from_json(data) {
        assert_eq!(record.to_canonical_json(), data, "an accepted event.json is canonical");
        let _ = record.check_fields();
    }
    let _ = Verdict::from_json(data);
    let _ = format::parse_commit_message(data);
    let _ = format::parse_tree(data);
    let _ = format::parse_commit(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = format::normalize_captured_at(text);
        let _ = format::is_valid_idempotency_key(text);
        if let Ok((parsed, _)) = checkpoint::Checkpoint::parse_note(text) {
            assert!(text.starts_with(&parsed.body()), "an accepted checkpoint body is canonical");
        }
    }
}
pub mod verify;
mod windex;
mod writer;

pub use camera_actions::{Action as CameraActionKind, CameraAction, Evidence, StoredCameraAction, CAMERAS_REF};
pub use format::{EventRecord, Exif, FormatError, Trailers, EVENTS_REF, FORMAT_VERSION};
pub use read::{EventHead, StoredEvent};
pub use verdict::{StoredVerdict, Verdict, VerdictHead, VerdictReader, NOTES_REF, VERDICTS_REF};
pub use verify::{CameraRegistry, VerifyFailure, VerifyOptions, VerifyReport};
pub use writer::{append, Appended, EventWriter, NewEvent, Unavailable};

/// Configuration of a ledger; `Default` is right for production except `node_name`.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// Committer identity (`camledger <node_name>`): printable ASCII without `<`, `>` or spaces.
    pub node_name: String,
    /// Most append requests written as one batch (one pack, one ref update).
    pub max_batch: usize,
    /// A batch stops taking requests once their images reach this many bytes (bounds the
    /// pack size and the writer's memory with 25 MiB uploads).
    pub max_batch_bytes: usize,
    /// Bound on the number of packs. Packs are merged in size tiers (eight packs of similar
    /// size become one) as they come; only if that leaves more packs than this are small packs
    /// merged geometrically (like `git repack --geometric=2`).
    pub max_packs: usize,
    /// Most objects one pack merge copies (default 2^19, four per event): bounds a merge's
    /// memory (about 32 bytes per object) whatever the ledger's size. A pack with more than
    /// half of this is never merged again; `max_packs` bounds the others.
    pub max_merge_objects: u64,
    /// How long an idempotency key answers a retry with the first answer (default 7 days).
    /// Expired keys are purged from `writer.redb`; the `Idempotency-Key` trailer in git stays.
    pub idempotency_retention: std::time::Duration,
    /// The ledger's signing key: every commit camledger writes (events, verdicts, notes)
    /// carries its SSH signature (`gpgsig`, see [`sign`]). `None` writes unsigned commits
    /// (tests and benchmarks only; the `camledger` binary always signs).
    pub signing_key: Option<Arc<sign::SigningKey>>,
    /// Told about every fsync and every batch the writer makes durable (metrics); `None`
    /// reports nothing.
    pub observer: Option<Arc<dyn observe::Observer>>,
    /// Fault injection for tests: every fsync after the n-th fails with an I/O error.
    #[doc(hidden)]
    pub fail_fsync_after: Option<u64>,
    /// Fault injection for tests: pretend the filesystem has this many bytes free.
    #[doc(hidden)]
    pub fake_free_space: Option<u64>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            node_name: "camledger.local".to_owned(),
            max_batch: 256,
            max_batch_bytes: 64 << 20,
            max_packs: 64,
            max_merge_objects: pack::MAX_MERGE_OBJECTS,
            idempotency_retention: std::time::Duration::from_secs(7 * 24 * 3600),
            signing_key: None,
            observer: None,
            fail_fsync_after: None,
            fake_free_space: None,
        }
    }
}

/// Errors of [`Ledger::open`] and [`Ledger::start_writer`].
pub mod open {
    /// Why a ledger or its writer could not be opened. All are fatal at start-up (exit non-zero with the message).
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        /// Another process (or another writer in this one) holds `events.lock`. Exit; do not retry in a loop.
        #[error("another process is writing events in this data directory (events.lock is held)")]
        Locked,
        /// `node_name` or another setting is unusable. Fix the configuration.
        #[error("invalid configuration: {0}")]
        InvalidConfig(&'static str),
        /// The data directory or index files could not be read or written.
        #[error("I/O error on {path}")]
        Io {
            path: std::path::PathBuf,
            #[source]
            source: std::io::Error,
        },
        /// gix could not create or open the repository.
        #[error("could not open the git repository at {path}")]
        Git {
            path: std::path::PathBuf,
            #[source]
            source: gix::Error,
        },
        /// The write-side index database could not be opened or rebuilt.
        #[error("writer index: {0}")]
        Index(String),
        /// Reading history to catch the indexes up failed (the repository may be damaged: run verify).
        #[error(transparent)]
        Read(#[from] crate::read::Error),
    }
}

pub(crate) struct Inner {
    data_dir: PathBuf,
    git_dir: PathBuf,
    /// The gix repository, the pack generation (see [`Ledger::repo`]) it was opened at, and when.
    repo: Mutex<(gix::ThreadSafeRepository, u64, std::time::Instant)>,
    config: LedgerConfig,
    fsync: durable::Fsync,
    seq_file: Mutex<Option<Arc<File>>>,
}

/// A cheap, cloneable, `Send + Sync` read handle on one ledger. Holds no lock: any number of
/// processes may read while one writes.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("git_dir", &self.inner.git_dir).finish()
    }
}

const GIT_CONFIG_EXTRA: &str = "[core]\n\tcompression = 0\n\tlooseCompression = 0\n\tlogAllRefUpdates = false\n[pack]\n\tcompression = 0\n[gc]\n\tauto = 0\n";

impl Ledger {
    /// Opens the ledger in `data_dir`, creating `<data_dir>/ledger.git` (bare, compression 0,
    /// `HEAD` -> `refs/heads/events`) if missing. Costs the same at 10 and 1,000,000 events.
    #[tracing::instrument(skip_all, fields(data_dir = %data_dir.display()))]
    pub fn open(data_dir: &Path, config: LedgerConfig) -> Result<Ledger, open::Error> {
        if !format::is_valid_node_name(&config.node_name) {
            return Err(open::Error::InvalidConfig("node_name must be printable ASCII without spaces, '<' or '>'"));
        }
        if config.max_batch == 0 {
            return Err(open::Error::InvalidConfig("max_batch must be at least 1"));
        }
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| open::Error::Io { path, source }
        };
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        let fsync = durable::Fsync::new(config.fail_fsync_after).observed(config.observer.clone());
        let git_dir = data_dir.join("ledger.git");
        if !git_dir.join("HEAD").exists() {
            create_repository(data_dir, &git_dir, &fsync)?;
        }
        let generation = pack_generation(data_dir);
        let repo = open_repo(&git_dir)?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                data_dir: data_dir.to_owned(),
                git_dir,
                repo: Mutex::new((repo, generation, std::time::Instant::now())),
                config,
                fsync,
                seq_file: Mutex::new(None),
            }),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn git_dir(&self) -> PathBuf {
        self.inner.git_dir.clone()
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.inner.config
    }

    /// A thread-local gix repository, reopened whenever pack consolidation removed packs and
    /// at least every [`STORE_MAX_AGE`] (which bounds the pack pages it keeps mapped).
    ///
    /// Why: gix's object store keeps a fixed table of pack slots and recycles the slots of
    /// removed packs; a store that lives through many removals reuses slots and can trip an
    /// internal assertion (gix-odb 0.87 `load_index.rs`: "if the generation changed, the slot
    /// index must have changed"), seen here under consolidation. A store opened after the
    /// latest removal never recycles a slot, so consolidation bumps `index/pack-generation`
    /// (its length is the generation) and every handle reopens when it changed: one `stat`
    /// per read, one directory scan per consolidation.
    pub(crate) fn repo(&self) -> gix::Repository {
        let generation = pack_generation(&self.inner.data_dir);
        let mut guard = self.inner.repo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.1 != generation || guard.2.elapsed() >= STORE_MAX_AGE {
            match open_repo(&self.inner.git_dir) {
                Ok(repo) => *guard = (repo, generation, std::time::Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "could not reopen the repository after consolidation; using the old handle")
                }
            }
        }
        guard.0.to_thread_local()
    }

    /// Tells every handle (in any process) to reopen its object store: packs were removed.
    pub(crate) fn bump_pack_generation(&self) -> std::io::Result<()> {
        let path = pack_generation_path(&self.inner.data_dir);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(b".")
    }

    pub(crate) fn fsync(&self) -> &durable::Fsync {
        &self.inner.fsync
    }

    pub(crate) fn seq_idx_path(&self) -> PathBuf {
        self.inner.data_dir.join("index").join("seq.idx")
    }

    /// Number of fsyncs attempted through this handle's writer (for tests and benchmarks).
    #[doc(hidden)]
    pub fn fsync_count(&self) -> u64 {
        self.inner.fsync.count()
    }

    /// Starts the one writer of this repository: takes `<data_dir>/events.lock`, removes what
    /// a crash left in the repository (stale ref locks, temporary and index-less packs),
    /// repairs the derived indexes from git if they are missing or behind, and spawns the
    /// writer thread (supervised: see [`EventWriter::health`]).
    pub fn start_writer(&self) -> Result<EventWriter, open::Error> {
        writer::start(self.clone())
    }
}

/// Creates an empty `<data_dir>/ledger.git` exactly as [`Ledger::open`] does for a new data
/// dir (bare, camledger's git config, `HEAD` -> `refs/heads/events`, no hooks) and returns
/// its path. For restores: they fill the repository from snapshots and must take nothing
/// that git executes (config, hooks) from anywhere but here.
pub fn create_ledger_repository(data_dir: &Path) -> Result<PathBuf, open::Error> {
    let git_dir = data_dir.join("ledger.git");
    create_repository(data_dir, &git_dir, &durable::Fsync::new(None))?;
    Ok(git_dir)
}

/// fsyncs every file and directory under `dir` (a fresh repository: a few dozen entries), so
/// that the rename into place publishes a repository whose contents survive a power loss.
fn sync_tree(dir: &Path, fsync: &durable::Fsync) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path(), fsync)?;
        } else {
            fsync.file(&File::open(entry.path())?)?;
        }
    }
    fsync.dir(dir)
}

/// How long one object store serves new handles. gix maps every pack it reads from and keeps
/// the maps for the life of the store, so the pages a store touched count in the server's
/// resident memory (`RssFile`) until it is dropped. Stores used to live from one
/// consolidation to the next: under a soak at 956 events/s the projector's reads alone
/// mapped 1.28 GiB of pack pages before a merge dropped them (anon memory was 89 MiB).
/// Reopening costs a `stat` of the pack directory and bounds those pages to what the reads
/// of one period touch: at 2 s, `RssFile` swung up to 300 MiB in `bench soak` (2,185 events/s
/// with judging on, 20 KB images); at 0.5 s it stayed within 42–151 MiB (1,532 events/s).
const STORE_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(500);

fn pack_generation_path(data_dir: &Path) -> PathBuf {
    data_dir.join("index").join("pack-generation")
}

fn pack_generation(data_dir: &Path) -> u64 {
    fs::metadata(pack_generation_path(data_dir)).map_or(0, |m| m.len())
}

fn open_repo(git_dir: &Path) -> Result<gix::ThreadSafeRepository, open::Error> {
    // Enough slots for max_packs plus the packs written between two consolidations.
    // Replacement refs (`refs/replace/*`) would let anyone who can write a ref show another
    // object under an event's id; the ledger's readers never follow them (`verify` reports them).
    let options = gix::open::Options::isolated()
        .object_store_slots(gix::odb::store::init::Slots::Given(1024))
        .config_overrides(["core.useReplaceRefs=false"]);
    Ok(gix::open_opts(git_dir, options)
        .map_err(|source| open::Error::Git { path: git_dir.to_owned(), source })?
        .into_sync())
}

/// Creates the bare repository under a temporary name and renames it into place, so a crash
/// or a concurrent opener never sees a half-initialised repository.
fn create_repository(data_dir: &Path, git_dir: &Path, fsync: &durable::Fsync) -> Result<(), open::Error> {
    let tmp = data_dir.join(format!(".ledger.git.tmp-{}", std::process::id()));
    let git = |source| open::Error::Git { path: git_dir.to_owned(), source };
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| open::Error::Io { path, source }
    };
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    gix::init_bare(&tmp).map_err(git)?;
    let config_path = tmp.join("config");
    let mut config = fs::OpenOptions::new().append(true).open(&config_path).map_err(io(&config_path))?;
    config.write_all(GIT_CONFIG_EXTRA.as_bytes()).map_err(io(&config_path))?;
    fs::write(tmp.join("HEAD"), "ref: refs/heads/events\n").map_err(io(&tmp))?;
    // A ledger runs no hooks; gix's sample hooks would only be files to sync and audit.
    let hooks = tmp.join("hooks");
    if hooks.exists() {
        fs::remove_dir_all(&hooks).map_err(io(&hooks))?;
        fs::create_dir(&hooks).map_err(io(&hooks))?;
    }
    sync_tree(&tmp, fsync).map_err(io(&tmp))?;
    match fs::rename(&tmp, git_dir) {
        Ok(()) => fsync.dir(data_dir).map_err(io(data_dir)),
        Err(_) if git_dir.join("HEAD").exists() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(io(git_dir)(e)),
    }
}
