//! The group-commit writer: one OS thread per repository (gix and fsync block), fed by a
//! bounded channel. Per batch it resolves idempotency and dedupe, assigns gapless seqs, writes
//! one pack, moves the ref with a compare-and-swap, makes everything durable, and only then
//! answers every request in the batch.
//!
//! Work that does not depend on the batch (SHA-256 of the image, the blob's git id and its
//! level-0 pack entry) is done by the caller on tokio's blocking pool before the request is
//! queued, so the single writer thread spends its time on what only it can do.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gix::ObjectId;
use sha2::Digest as _;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::format::{self, EventRecord, Exif, Trailers, EVENTS_REF, FORMAT_VERSION};
use crate::pack::{self, PackEntry};
use crate::seqidx::SeqIndex;
use crate::sign::SigningKey;
use crate::windex::{self, BatchUpdate, WriterIndex};
use crate::{open, Ledger};
use crate::{publish, read, recover, refs};

/// Errors of [`EventWriter::append`].
pub mod append {
    use std::sync::Arc;

    /// Why an append was not acknowledged. Nothing was written for this request unless stated.
    #[derive(Debug, Clone, thiserror::Error)]
    pub enum Error {
        /// Camera id is not `[A-Za-z0-9._-]{1,64}`. HTTP 400 (or 500: the API validates cameras first).
        #[error("invalid camera id")]
        InvalidCamera,
        /// Idempotency key is not 1–128 printable ASCII without spaces. HTTP 400.
        #[error("invalid idempotency key: 1-128 printable ASCII characters, no spaces")]
        InvalidIdempotencyKey,
        /// `captured_at` is not RFC 3339. HTTP 400.
        #[error("captured_at is not an RFC 3339 timestamp")]
        InvalidCapturedAt,
        /// Extension/media type not one of jpg/png/webp or not matching each other. HTTP 415
        /// (admission should have refused it first).
        #[error("unsupported image type {media_type} / .{extension}")]
        UnsupportedImage { media_type: String, extension: String },
        /// This camera already used the key for different image bytes (event `seq`). HTTP 422; do not retry.
        #[error("idempotency key already used for a different image (event {seq})")]
        IdempotencyKeyReused { seq: u64 },
        /// The writer is poisoned (a failed fsync or an unexpected ref value left the disk state
        /// unknown) or shut down. HTTP 503; the service must be restarted, retrying is safe.
        #[error("the event writer is unavailable (poisoned or shut down)")]
        Unavailable,
        /// Writing the batch failed before anything became visible (e.g. disk full). HTTP 503,
        /// log the cause; retrying with the same idempotency key is safe.
        #[error("storage error")]
        Storage(#[source] Arc<std::io::Error>),
    }

    impl Error {
        pub(crate) fn storage(e: std::io::Error) -> Self {
            Error::Storage(Arc::new(e))
        }
    }
}

/// One upload to append. Validated by admission before it gets here.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub camera: String,
    /// The image exactly as uploaded (`bytes::Bytes`: the API hands over the body without copying).
    pub image: bytes::Bytes,
    pub media_type: String,
    /// `"jpg" | "png" | "webp"`.
    pub extension: String,
    pub width: u32,
    pub height: u32,
    pub exif: Option<Exif>,
    /// Client-supplied RFC 3339 capture time (any offset; stored normalised to UTC).
    pub captured_at: Option<String>,
    pub idempotency_key: Option<String>,
}

/// The answer to an append: durable when returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// 40-hex commit id.
    pub id: String,
    pub sha256: String,
    pub duplicate_of: Option<u64>,
    pub received_at: String,
    /// Answered from the idempotency record: nothing was written by this request.
    pub replayed: bool,
}

struct Prepared {
    camera: String,
    key: Option<String>,
    captured_at: Option<String>,
    media_type: String,
    image_name: &'static str,
    width: u32,
    height: u32,
    exif: Option<Exif>,
    digest: [u8; 32],
    sha256: String,
    size: u64,
    blob: PackEntry,
}

struct Request {
    event: Prepared,
    reply: oneshot::Sender<Result<Appended, append::Error>>,
}

enum Msg {
    Append(Box<Request>),
    Shutdown(oneshot::Sender<()>),
}

struct Shared {
    tx: mpsc::Sender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    health: Arc<Health>,
}

/// Why the ledger takes no appends now: see [`EventWriter::health`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the event writer is unavailable: {cause}")]
pub struct Unavailable {
    /// What happened, for operators (`GET /readyz` shows it): a panic's message, a failed
    /// fsync, consolidation stopped, or shutdown.
    pub cause: String,
}

/// The writer's and the consolidator's state as the supervisor sees it.
#[derive(Default)]
pub(crate) struct Health {
    writer: Mutex<Option<String>>,
    consolidator: Mutex<Option<String>>,
    restarts: AtomicU64,
}

impl Health {
    fn set(slot: &Mutex<Option<String>>, cause: Option<String>) {
        *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = cause;
    }
    fn writer(&self, cause: Option<String>) {
        Health::set(&self.writer, cause);
    }
    fn consolidator(&self, cause: Option<String>) {
        Health::set(&self.consolidator, cause);
    }
    fn get(&self) -> Result<(), Unavailable> {
        for slot in [&self.writer, &self.consolidator] {
            if let Some(cause) = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
                return Err(Unavailable { cause });
            }
        }
        Ok(())
    }
}

/// A panic's message (`panic!` payloads are `&str` or `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Logs without letting a failing log sink kill the caller: tracing's fmt layer falls back
/// to `eprintln!`, which panics when stderr is gone, and that is one way the writer died.
fn log_quietly(log: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(log));
}

/// A supervised thread that panics more often than this within [`PANIC_WINDOW`] stays down.
const MAX_RESTARTS: usize = 3;
const PANIC_WINDOW: Duration = Duration::from_secs(60);

/// Handle to the one writer of a repository; clone it freely.
#[derive(Clone)]
pub struct EventWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWriter").finish_non_exhaustive()
    }
}

fn validate(event: NewEvent) -> Result<(NewEvent, &'static str, Option<String>), append::Error> {
    if !format::is_valid_camera(&event.camera) {
        return Err(append::Error::InvalidCamera);
    }
    if event.idempotency_key.as_deref().is_some_and(|k| !format::is_valid_idempotency_key(k)) {
        return Err(append::Error::InvalidIdempotencyKey);
    }
    let captured_at = match &event.captured_at {
        Some(s) => Some(format::normalize_captured_at(s).ok_or(append::Error::InvalidCapturedAt)?),
        None => None,
    };
    let expected_media = match event.extension.as_str() {
        "jpg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        _ => "",
    };
    let image_name =
        format::image_entry_name(&event.extension).filter(|_| expected_media == event.media_type).ok_or_else(|| {
            append::Error::UnsupportedImage { media_type: event.media_type.clone(), extension: event.extension.clone() }
        })?;
    Ok((event, image_name, captured_at))
}

fn prepare(event: NewEvent, image_name: &'static str, captured_at: Option<String>) -> Result<Prepared, append::Error> {
    let digest: [u8; 32] = sha2::Sha256::digest(&event.image).into();
    let blob = pack::encode(pack::Kind::Blob, &event.image).map_err(append::Error::storage)?;
    Ok(Prepared {
        camera: event.camera,
        key: event.idempotency_key,
        captured_at,
        media_type: event.media_type,
        image_name,
        width: event.width,
        height: event.height,
        exif: event.exif,
        digest,
        sha256: hex::encode(digest),
        size: event.image.len() as u64,
        blob,
    })
}

impl EventWriter {
    /// Appends one event; returns once it is durable (pack, ref and seq.idx fsynced).
    #[tracing::instrument(skip_all, fields(camera = %event.camera, size = event.image.len()))]
    pub async fn append(&self, event: NewEvent) -> Result<Appended, append::Error> {
        let (event, image_name, captured_at) = validate(event)?;
        let prepared = tokio::task::spawn_blocking(move || prepare(event, image_name, captured_at))
            .await
            .map_err(|_| append::Error::Unavailable)??;
        let (reply, answer) = oneshot::channel();
        self.shared
            .tx
            .send(Msg::Append(Box::new(Request { event: prepared, reply })))
            .in_current_span()
            .await
            .map_err(|_| append::Error::Unavailable)?;
        answer.await.map_err(|_| append::Error::Unavailable)?
    }

    /// Whether appends can succeed now. `Err` carries the cause: the writer panicked and is
    /// restarting or gave up after [`MAX_RESTARTS`] panics within a minute, an fsync failed
    /// (poisoned until restart), pack consolidation stopped, or the writer was shut down.
    /// Cheap (two mutexes): meant for `GET /readyz`.
    pub fn health(&self) -> Result<(), Unavailable> {
        self.shared.health.get()
    }

    /// How many times the supervisor restarted the writer thread after a panic.
    pub fn restarts(&self) -> u64 {
        self.shared.health.restarts.load(Ordering::Relaxed)
    }

    /// Finishes the batches already queued, makes the indexes durable, releases
    /// `events.lock` and stops the thread. Appends queued after this answer `Unavailable`.
    pub async fn shutdown(self) {
        let (done, finished) = oneshot::channel();
        if self.shared.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
        let handle = self.shared.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Starts the writer (see [`Ledger::start_writer`]).
pub(crate) fn start(ledger: Ledger) -> Result<EventWriter, open::Error> {
    let data_dir = ledger.data_dir().to_owned();
    let io = |path: PathBuf| move |source| open::Error::Io { path, source };
    let lock_path = data_dir.join("events.lock");
    let lock =
        File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io(lock_path.clone()))?;
    // A lock just released in this process can still be held for a moment by a child that
    // another thread forked (the fd copy lives until the child's exec closes it), so a
    // writer restarted in-process retries briefly before reporting `Locked`.
    let mut attempts = 0;
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if attempts < 20 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(open::Error::Locked),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(lock_path)(e)),
        }
    }
    let health = Arc::new(Health::default());
    let state = open_state(&ledger, &health)?;
    let (tx, rx) = mpsc::channel(ledger.config().max_batch.saturating_mul(4).max(16));
    let span = tracing::info_span!("event_writer", data_dir = %data_dir.display());
    let thread = {
        let health = Arc::clone(&health);
        std::thread::Builder::new()
            .name("camledger-event-writer".into())
            .spawn(move || {
                let _entered = span.enter();
                supervise(ledger, state, rx, &health);
                // `events.lock` is released only now, after the last batch.
                drop(lock);
            })
            .map_err(io(data_dir))?
    };
    Ok(EventWriter { shared: Arc::new(Shared { tx, thread: Mutex::new(Some(thread)), health }) })
}

/// Everything the writer knows, rebuilt from disk: at start and after a panic. Removes what a
/// crash left behind, reads the head from the ref, repairs `seq.idx` and `writer.redb` from
/// git, and starts the consolidation thread.
fn open_state(ledger: &Ledger, health: &Arc<Health>) -> Result<Writer, open::Error> {
    let data_dir = ledger.data_dir().to_owned();
    let io = |path: PathBuf| move |source| open::Error::Io { path, source };
    recover::remove_crash_leftovers(&data_dir, &ledger.git_dir());
    let repo = ledger.repo();
    let head = read::head_of(&repo)?;
    let idx_path = ledger.seq_idx_path();
    let mut seq_index = SeqIndex::open(&idx_path).map_err(io(idx_path.clone()))?;
    repair_seq_index(ledger, &repo, &mut seq_index, head).map_err(|e| match e {
        Repair::Read(e) => open::Error::Read(e),
        Repair::Io(e) => io(idx_path.clone())(e),
    })?;
    let db_path = data_dir.join("index").join("writer.redb");
    let index = WriterIndex::open(&db_path, ledger.config().idempotency_retention)
        .map_err(|e| open::Error::Index(e.to_string()))?;
    let index = Arc::new(index);
    catch_up_index(ledger, &index, &seq_index, head)?;

    let last_received = match head {
        Some((_, id)) => format::parse_timestamp(&read::load(&ledger.repo(), id)?.stored.record.received_at)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        None => time::OffsetDateTime::UNIX_EPOCH,
    };
    let pack_dir = ledger.git_dir().join("objects").join("pack");
    let (wake, sleeper) = std::sync::mpsc::sync_channel(1);
    let activity = Arc::new(Activity::default());
    let consolidator = {
        let (ledger, pack_dir, activity) = (ledger.clone(), pack_dir, Arc::clone(&activity));
        let (health, index) = (Arc::clone(health), Arc::clone(&index));
        let span = tracing::info_span!("pack_consolidator");
        std::thread::Builder::new()
            .name("camledger-pack-consolidator".into())
            .spawn(move || {
                let _entered = span.enter();
                consolidate_when_woken(&ledger, &pack_dir, &sleeper, &activity, &health, &index);
            })
            .map_err(io(data_dir.clone()))?
    };
    Ok(Writer {
        consolidator: Some((wake, consolidator)),
        activity,
        ledger: ledger.clone(),
        repo,
        head,
        last_received,
        seq_index,
        index,
        poisoned: false,
        batches_since_durable: 0,
        phases: Phases::default(),
        health: Arc::clone(health),
    })
}

/// Runs the writer; a panic (a bug, or a log line written to a closed stderr) is caught, its
/// cause published through [`EventWriter::health`], and the writer rebuilt from disk as at
/// start: the ref is the truth, the indexes are repaired from it, a ref lock of the failed
/// batch was removed by its guard, its temporary pack by its writer's `Drop`. The requests of
/// the batch that panicked get `Unavailable` (an event that became durable is found by a retry
/// with the same idempotency key); queued requests wait for the restarted writer. After
/// [`MAX_RESTARTS`] panics within [`PANIC_WINDOW`] it stays down and answers `Unavailable`.
fn supervise(ledger: Ledger, state: Writer, mut rx: mpsc::Receiver<Msg>, health: &Arc<Health>) {
    let mut state = Some(state);
    let mut panics: Vec<Instant> = Vec::new();
    let stop = loop {
        let Some(writer) = state.as_mut() else { break refuse_until_shutdown(&mut rx) };
        let payload = match catch_unwind(AssertUnwindSafe(|| writer.run(&mut rx))) {
            Ok(stop) => break stop,
            Err(payload) => payload,
        };
        let cause = format!("event writer panicked: {}", panic_message(&*payload));
        health.writer(Some(cause.clone()));
        if let Some(mut broken) = state.take() {
            // Its consolidator must be gone before the restart removes temporary packs.
            let _ = catch_unwind(AssertUnwindSafe(|| broken.stop_consolidator()));
        }
        // Restart from disk; a restart that fails or panics counts as one more panic.
        let mut cause = cause;
        loop {
            let now = Instant::now();
            panics.retain(|t| now.duration_since(*t) < PANIC_WINDOW);
            panics.push(now);
            if panics.len() > MAX_RESTARTS {
                let why = format!("{cause} ({} panics within {PANIC_WINDOW:?}; not restarted)", panics.len());
                health.writer(Some(why));
                log_quietly(|| tracing::error!(%cause, "event writer panicked too often; it stays down until restart"));
                break;
            }
            log_quietly(|| tracing::error!(%cause, "event writer panicked; restarting it from the state on disk"));
            std::thread::sleep(Duration::from_millis(50 << panics.len()));
            match catch_unwind(AssertUnwindSafe(|| open_state(&ledger, health))) {
                Ok(Ok(fresh)) => {
                    state = Some(fresh);
                    health.restarts.fetch_add(1, Ordering::Relaxed);
                    health.writer(None);
                    log_quietly(|| tracing::warn!("event writer restarted after a panic"));
                    break;
                }
                Ok(Err(e)) => cause = format!("{cause}; restarting failed: {e}"),
                Err(again) => cause = format!("{cause}; restarting panicked: {}", panic_message(&*again)),
            }
            health.writer(Some(cause.clone()));
        }
    };
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Append(request) => {
                let _ = request.reply.send(Err(append::Error::Unavailable));
            }
            Msg::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
    if let Some(mut writer) = state {
        let _ = catch_unwind(AssertUnwindSafe(|| writer.finish()));
    }
    if health.get().is_ok() {
        health.writer(Some("the event writer was shut down".to_owned()));
    }
    if let Some(done) = stop {
        // `events.lock` is released when this thread ends; `EventWriter::shutdown` joins it.
        let _ = done.send(());
    }
}

/// A writer that stays down: every append is refused until shutdown.
fn refuse_until_shutdown(rx: &mut mpsc::Receiver<Msg>) -> Option<oneshot::Sender<()>> {
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Append(request) => {
                let _ = request.reply.send(Err(append::Error::Unavailable));
            }
            Msg::Shutdown(done) => return Some(done),
        }
    }
    None
}

enum Repair {
    Read(read::Error),
    Io(std::io::Error),
}

/// Makes `seq.idx` match the chain ending at `head`: truncates records beyond the head, and
/// appends the ids of events the index misses (walking back from the head only as far as the
/// first record that agrees). A record that disagrees (rewritten history) is replaced.
fn repair_seq_index(
    ledger: &Ledger,
    repo: &gix::Repository,
    index: &mut SeqIndex,
    head: Option<(u64, ObjectId)>,
) -> Result<(), Repair> {
    let fsync = ledger.fsync();
    let Some((head_seq, head_id)) = head else {
        if index.len() > 0 {
            index.truncate(0, fsync).map_err(Repair::Io)?;
        }
        return Ok(());
    };
    let mut missing = Vec::new();
    let (mut seq, mut id) = (head_seq, head_id);
    while seq > 0 {
        if seq <= index.len() && index.get(seq).map_err(Repair::Io)? == Some(id) {
            break;
        }
        missing.push(id);
        let (_, parent) = read::seq_and_parent(repo, id).map_err(Repair::Read)?;
        seq -= 1;
        match parent {
            Some(parent) => id = parent,
            None if seq == 0 => {}
            None => {
                return Err(Repair::Read(read::Error::Corrupt {
                    id: id.to_string(),
                    what: "history ends before seq 1".into(),
                }))
            }
        }
    }
    if index.len() != seq || !missing.is_empty() {
        tracing::info!(kept = seq, added = missing.len(), "repairing seq.idx from git");
        index.truncate(seq, fsync).map_err(Repair::Io)?;
        missing.reverse();
        index.append(&missing, fsync).map_err(Repair::Io)?;
    }
    Ok(())
}

/// Folds the events after the index's `applied_seq` into it, reading them from git.
fn catch_up_index(
    ledger: &Ledger,
    index: &WriterIndex,
    seq_index: &SeqIndex,
    head: Option<(u64, ObjectId)>,
) -> Result<(), open::Error> {
    let redb_err = |e: redb::Error| open::Error::Index(e.to_string());
    let head_seq = head.map_or(0, |(seq, _)| seq);
    let (mut applied, applied_id) = index.applied().map_err(redb_err)?;
    let consistent = applied == 0
        || (applied <= head_seq
            && seq_index.get(applied).map_err(|e| open::Error::Index(e.to_string()))? == applied_id);
    if !consistent {
        tracing::warn!(applied, head_seq, "writer index does not match the history; rebuilding it from git");
        index.clear().map_err(redb_err)?;
        applied = 0;
    }
    if applied < head_seq {
        tracing::info!(from = applied + 1, to = head_seq, "catching the writer index up from git");
    }
    let repo = ledger.repo();
    let mut update = BatchUpdate::default();
    let now = windex::unix_now();
    for seq in applied + 1..=head_seq {
        let id = seq_index
            .get(seq)
            .map_err(|e| open::Error::Index(e.to_string()))?
            .ok_or_else(|| open::Error::Index(format!("seq.idx has no record for seq {seq} after repair")))?;
        let stored = read::load(&repo, id)?.stored;
        if stored.record.duplicate_of.is_none() {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&stored.record.sha256, &mut digest).map_err(|e| open::Error::Index(e.to_string()))?;
            update.originals.push((digest, seq));
        }
        if let Some(key) = stored.trailers.idempotency_key {
            // Keys already past their retention are not indexed again.
            let stored_at = format::parse_timestamp(&stored.record.received_at)
                .map_or(0, |t| u64::try_from(t.unix_timestamp()).unwrap_or(0));
            if index.retains(stored_at, now) {
                update.keys.push((stored.record.camera, key, seq, stored_at));
            }
        }
        update.applied = Some((seq, id));
        if update.originals.len() + update.keys.len() >= 10_000 || seq == head_seq {
            index.apply(&update, seq == head_seq).map_err(redb_err)?;
            update = BatchUpdate::default();
        }
    }
    Ok(())
}

struct Writer {
    ledger: Ledger,
    repo: gix::Repository,
    head: Option<(u64, ObjectId)>,
    /// `received_at` of the head: the clock is clamped to it so times never go backwards
    /// along the chain, even if the system clock does.
    last_received: time::OffsetDateTime,
    seq_index: SeqIndex,
    /// Shared with the consolidation thread, which purges expired idempotency keys.
    index: Arc<WriterIndex>,
    poisoned: bool,
    batches_since_durable: u32,
    /// Where the last batch's time went (for the slow-batch warning).
    phases: Phases,
    /// Wakes the consolidation thread after each batch (a full channel means it is already due).
    consolidator: Option<(std::sync::mpsc::SyncSender<()>, JoinHandle<()>)>,
    /// Shared with the consolidation thread, which paces itself behind the batches (see [`Pacer`]).
    activity: Arc<Activity>,
    health: Arc<Health>,
}

/// The consolidation thread: merges packs in size tiers (see `pack::selection`) whenever the
/// writer wakes it, off the writer's path and paced behind it (see [`Pacer`]) so that a large
/// merge does not stall appends. Concurrent with new batch packs: it
/// only ever removes packs it has copied into a complete, fsynced new pack.
fn consolidate_when_woken(
    ledger: &Ledger,
    pack_dir: &std::path::Path,
    wake: &std::sync::mpsc::Receiver<()>,
    activity: &Activity,
    health: &Health,
    index: &WriterIndex,
) {
    let (max_packs, max_objects) = (ledger.config().max_packs, ledger.config().max_merge_objects);
    let fake_free = ledger.config().fake_free_space;
    let free_space = |path: &std::path::Path| fake_free.map_or_else(|| pack::available_space(path), Ok);
    let mut merges = pack::MergeState::default();
    let mut backoff = Backoff::default();
    let mut panics: Vec<Instant> = Vec::new();
    let mut next_purge = Instant::now();
    while wake.recv().is_ok() {
        if Instant::now() >= next_purge {
            purge_expired_keys(index);
            next_purge = Instant::now() + PURGE_EVERY;
        }
        if !backoff.due() {
            continue;
        }
        // Merge until nothing is due, not once per wake: after a burst (or at shutdown, the
        // last wake) the packs go back within the bound without waiting for more batches.
        // A panic is caught: consolidation is retried at the next wake, up to MAX_RESTARTS
        // times a minute; beyond that it stops and says so through the writer's health.
        let merged = catch_unwind(AssertUnwindSafe(|| loop {
            let started = activity.batches.load(Ordering::Relaxed);
            let mut pacer = Pacer { activity, started, last: std::time::Instant::now(), batches: started };
            // Handles reopen their object store before the merged packs disappear.
            let r = pack::consolidate(
                pack_dir,
                max_packs,
                max_objects,
                ledger.fsync(),
                &mut merges,
                free_space,
                || pacer.pace(),
                || ledger.bump_pack_generation(),
            );
            match r {
                Ok(Some(merged)) => {
                    backoff.succeeded();
                    log_quietly(|| tracing::info!(merged, "consolidated packs"));
                }
                Ok(None) => {
                    backoff.succeeded();
                    break true;
                }
                Err(e) if ledger.fsync().has_failed() => {
                    // The writer sees the failed fsync and poisons itself before its next batch.
                    log_quietly(
                        || tracing::error!(error = %e, "fsync failed during pack consolidation; stopping consolidation"),
                    );
                    break false;
                }
                Err(e) => {
                    // Exponential backoff: a merge that cannot fit (or fails for any other
                    // reason) is not retried after every batch.
                    let retry_in = backoff.failed();
                    log_quietly(|| tracing::warn!(error = %e, ?retry_in, "pack consolidation failed; backing off"));
                    break true;
                }
            }
        }));
        match merged {
            Ok(true) => health.consolidator(None),
            Ok(false) => return,
            Err(payload) => {
                let cause = format!("pack consolidation panicked: {}", panic_message(&*payload));
                let now = Instant::now();
                panics.retain(|t| now.duration_since(*t) < PANIC_WINDOW);
                panics.push(now);
                if panics.len() > MAX_RESTARTS {
                    health
                        .consolidator(Some(format!("{cause}; stopped after {} panics (packs now grow)", panics.len())));
                    log_quietly(|| tracing::error!(%cause, "pack consolidation panicked too often; stopped"));
                    return;
                }
                health.consolidator(Some(cause.clone()));
                log_quietly(|| tracing::error!(%cause, "pack consolidation panicked; retrying at the next batch"));
                backoff.failed();
            }
        }
    }
}

/// Expired idempotency keys are purged at most this often, [`PURGE_BATCH`] keys per write
/// transaction, on the consolidation thread (never on the append path).
const PURGE_EVERY: Duration = Duration::from_secs(60);
const PURGE_BATCH: usize = 1_000;

fn purge_expired_keys(index: &WriterIndex) {
    let now = windex::unix_now();
    let mut total = 0;
    loop {
        match index.purge_expired(now, PURGE_BATCH) {
            Ok(n) => {
                total += n;
                if n < PURGE_BATCH {
                    break;
                }
                // Let the writer's transactions in between two purge batches.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                log_quietly(|| tracing::warn!(error = %e, "purging expired idempotency keys failed"));
                break;
            }
        }
    }
    if total > 0 {
        log_quietly(|| tracing::info!(purged = total, "expired idempotency keys purged"));
    }
}

/// When a failed consolidation may be tried again: 1 s after the first failure, doubling up to
/// 10 minutes; reset by a success.
#[derive(Default)]
struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(600);

    fn due(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    fn failed(&mut self) -> Duration {
        let delay = Self::FIRST.saturating_mul(1 << self.failures.min(10)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + delay);
        delay
    }

    fn succeeded(&mut self) {
        *self = Backoff::default();
    }
}

/// What the consolidation thread knows of the event writer's activity.
#[derive(Default)]
struct Activity {
    /// Set while a batch is being written and made durable.
    committing: AtomicBool,
    /// Batches committed so far.
    batches: AtomicU64,
}

/// See [`Pacer`]: measured, a fully paced 2 GB merge let ~1,500 batch packs pile up.
const PACE_UNTIL_BATCHES: u64 = 32;

/// Paces consolidation behind the event writer, called before each write-out step of a
/// merged pack: waits (a bounded time) until the writer is between batches, so the step's
/// `fdatasync` does not compete with a batch's fsyncs; and while appends are coming in, rests
/// after each step as long as the step took, so that on a small machine merging takes at most
/// about half a core from the request path. Bounded so that a writer that is always busy still
/// lets consolidation progress, and pacing stops once [`PACE_UNTIL_BATCHES`] batch packs were
/// written during the merge (a slow merge must not let hundreds of packs pile up).
struct Pacer<'a> {
    activity: &'a Activity,
    /// `batches` when the merge started.
    started: u64,
    last: std::time::Instant,
    batches: u64,
}

impl Pacer<'_> {
    fn pace(&mut self) {
        let batches = self.activity.batches.load(Ordering::Relaxed);
        if batches.saturating_sub(self.started) > PACE_UNTIL_BATCHES {
            // Batch packs are piling up behind this merge: finish it at full speed.
            return;
        }
        if batches != self.batches {
            self.batches = batches;
            std::thread::sleep(self.last.elapsed().min(std::time::Duration::from_millis(50)));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20);
        while self.activity.committing.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(250));
        }
        self.last = std::time::Instant::now();
    }
}

/// How one request of a batch is answered.
enum Outcome {
    /// The `i`-th new event of the batch.
    New(usize),
    /// Same camera + key as the `i`-th new event of this batch, same bytes.
    ReplayInBatch(usize),
    Done(Result<Appended, append::Error>),
}

struct Written {
    seq: u64,
    id: ObjectId,
    sha256: String,
    digest: [u8; 32],
    duplicate_of: Option<u64>,
    camera: String,
    key: Option<String>,
}

impl Writer {
    /// Takes batches until shutdown (returned) or until every handle is gone (`None`).
    fn run(&mut self, rx: &mut mpsc::Receiver<Msg>) -> Option<oneshot::Sender<()>> {
        let max_batch = self.ledger.config().max_batch;
        let max_bytes = self.ledger.config().max_batch_bytes;
        let mut stop: Option<oneshot::Sender<()>> = None;
        while stop.is_none() {
            let Some(first) = rx.blocking_recv() else { break };
            let mut batch = Vec::with_capacity(max_batch);
            match first {
                Msg::Append(request) => batch.push(*request),
                Msg::Shutdown(done) => stop = Some(done),
            }
            let mut bytes: usize = batch.iter().map(|r: &Request| r.event.blob.bytes.len()).sum();
            while batch.len() < max_batch && bytes < max_bytes && stop.is_none() {
                match rx.try_recv() {
                    Ok(Msg::Append(request)) => {
                        bytes += request.event.blob.bytes.len();
                        batch.push(*request);
                    }
                    Ok(Msg::Shutdown(done)) => stop = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                let (requests, started) = (batch.len(), std::time::Instant::now());
                self.phases = Phases::default();
                self.process(batch);
                let took = started.elapsed();
                if let Some(observer) = &self.ledger.config().observer {
                    observer.batch(requests, took);
                }
                if took >= SLOW_BATCH {
                    let Phases { prepare, publish, index, durable_index } = self.phases;
                    log_quietly(|| {
                        tracing::warn!(
                            requests,
                            ms = took.as_millis() as u64,
                            prepare_ms = prepare.as_millis() as u64,
                            publish_ms = publish.as_millis() as u64,
                            index_ms = index.as_millis() as u64,
                            durable_index,
                            "slow batch: uploads waited this long for it"
                        )
                    });
                }
            }
        }
        stop
    }

    /// At shutdown: makes the index durable and stops the consolidation thread.
    fn finish(&mut self) {
        if !self.poisoned {
            if let Err(e) = self.index.apply(&BatchUpdate::default(), true) {
                tracing::warn!(error = %e, "could not make the writer index durable at shutdown");
            }
        }
        self.stop_consolidator();
        tracing::info!(head = self.head.map_or(0, |h| h.0), "event writer stopped");
    }

    fn stop_consolidator(&mut self) {
        if let Some((wake, consolidator)) = self.consolidator.take() {
            drop(wake);
            let _ = consolidator.join();
        }
    }

    /// Answers `Unavailable` from now until restart, with `cause` visible in the health.
    fn poison(&mut self, cause: String) {
        log_quietly(|| tracing::error!(%cause, "event writer poisoned: the state on disk is unknown until restart"));
        self.health.writer(Some(format!("event writer poisoned: {cause}")));
        self.poisoned = true;
    }

    #[tracing::instrument(skip_all, fields(batch = batch.len(), first_seq = tracing::field::Empty))]
    fn process(&mut self, batch: Vec<Request>) {
        if self.ledger.fsync().has_failed() && !self.poisoned {
            self.poison("an fsync failed (consolidation)".to_owned());
        }
        if self.poisoned {
            for request in batch {
                let _ = request.reply.send(Err(append::Error::Unavailable));
            }
            return;
        }
        let preparing = Instant::now();
        let now = time::OffsetDateTime::now_utc().max(self.last_received);
        let received_at = format::format_timestamp(now);
        let seconds = now.unix_timestamp();
        let unix_now = u64::try_from(seconds).unwrap_or(0);
        let node_name = self.ledger.config().node_name.clone();
        let key = self.ledger.config().signing_key.clone();

        let mut outcomes = Vec::with_capacity(batch.len());
        let mut written: Vec<Written> = Vec::new();
        let mut entries: Vec<PackEntry> = Vec::with_capacity(batch.len() * 4);
        let mut in_pack: HashSet<ObjectId> = HashSet::new();
        let mut batch_keys: HashMap<(String, String), usize> = HashMap::new();
        let mut batch_firsts: HashMap<[u8; 32], u64> = HashMap::new();
        let (mut next_seq, mut parent) = match self.head {
            Some((seq, id)) => (seq + 1, Some(id)),
            None => (1, None),
        };
        tracing::Span::current().record("first_seq", next_seq);
        let mut replies = Vec::with_capacity(batch.len());

        for Request { event, reply } in batch {
            replies.push(reply);
            if let Some(key) = &event.key {
                if let Some(&i) = batch_keys.get(&(event.camera.clone(), key.clone())) {
                    outcomes.push(if written[i].digest == event.digest {
                        Outcome::ReplayInBatch(i)
                    } else {
                        Outcome::Done(Err(append::Error::IdempotencyKeyReused { seq: written[i].seq }))
                    });
                    continue;
                }
                match self.index.seq_for_key(&event.camera, key, unix_now) {
                    Ok(Some(seq)) => {
                        outcomes.push(Outcome::Done(self.replay(seq, &event.sha256)));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        outcomes.push(Outcome::Done(Err(append::Error::storage(std::io::Error::other(e)))));
                        continue;
                    }
                }
            }
            let duplicate_of = match batch_firsts.get(&event.digest) {
                Some(&seq) => Some(seq),
                None => match self.index.first_seq_of(&event.digest) {
                    Ok(found) => found,
                    Err(e) => {
                        outcomes.push(Outcome::Done(Err(append::Error::storage(std::io::Error::other(e)))));
                        continue;
                    }
                },
            };
            let seq = next_seq;
            let node = Node { name: &node_name, key: key.as_deref() };
            match build_event(&event, seq, parent, duplicate_of, &received_at, seconds, node) {
                Ok((objects, commit_id)) => {
                    if duplicate_of.is_none() && in_pack.insert(event.blob.oid) {
                        entries.push(event.blob);
                    }
                    for entry in objects {
                        if in_pack.insert(entry.oid) {
                            entries.push(entry);
                        }
                    }
                    if duplicate_of.is_none() {
                        batch_firsts.insert(event.digest, seq);
                    }
                    if let Some(key) = &event.key {
                        batch_keys.insert((event.camera.clone(), key.clone()), written.len());
                    }
                    outcomes.push(Outcome::New(written.len()));
                    written.push(Written {
                        seq,
                        id: commit_id,
                        sha256: event.sha256,
                        digest: event.digest,
                        duplicate_of,
                        camera: event.camera,
                        key: event.key,
                    });
                    parent = Some(commit_id);
                    next_seq += 1;
                }
                Err(e) => outcomes.push(Outcome::Done(Err(append::Error::storage(e)))),
            }
        }

        self.phases.prepare = preparing.elapsed();
        self.activity.committing.store(true, Ordering::Release);
        let result = if written.is_empty() { Ok(()) } else { self.commit_batch(&entries, &written, now) };
        self.activity.committing.store(false, Ordering::Release);
        self.activity.batches.fetch_add(1, Ordering::Relaxed);
        let failure = result.err();
        let answer = |i: usize, replayed: bool| -> Result<Appended, append::Error> {
            if let Some(e) = &failure {
                return Err(e.clone());
            }
            let w = &written[i];
            Ok(Appended {
                seq: w.seq,
                id: w.id.to_string(),
                sha256: w.sha256.clone(),
                duplicate_of: w.duplicate_of,
                received_at: received_at.clone(),
                replayed,
            })
        };
        for (outcome, reply) in outcomes.into_iter().zip(replies) {
            let response = match outcome {
                Outcome::New(i) => answer(i, false),
                Outcome::ReplayInBatch(i) => answer(i, true),
                Outcome::Done(result) => result,
            };
            let _ = reply.send(response);
        }
        if failure.is_none() && !written.is_empty() {
            self.consolidate();
        }
    }

    /// Answers a retried request from the event that answered the key first.
    fn replay(&self, seq: u64, sha256: &str) -> Result<Appended, append::Error> {
        let stored = self.ledger.event(seq).map_err(|e| append::Error::storage(std::io::Error::other(e)))?;
        if stored.record.sha256 != sha256 {
            return Err(append::Error::IdempotencyKeyReused { seq });
        }
        Ok(Appended {
            seq,
            id: stored.id,
            sha256: stored.record.sha256,
            duplicate_of: stored.record.duplicate_of,
            received_at: stored.record.received_at,
            replayed: true,
        })
    }

    /// seq.idx -> publish (pack, ref CAS, fsyncs) -> redb. Poisons the writer on any failed
    /// fsync, on a ref moved behind its back, and on any failure once the ref may have moved.
    fn commit_batch(
        &mut self,
        entries: &[PackEntry],
        written: &[Written],
        received: time::OffsetDateTime,
    ) -> Result<(), append::Error> {
        let ledger = self.ledger.clone();
        let last = written.last().expect("commit_batch is only called with new events");
        let poison = |this: &mut Self, e: std::io::Error| {
            this.poison(e.to_string());
            append::Error::Unavailable
        };

        // seq.idx records go in first and are fsynced alongside the pack directory and the
        // ref's lock file: records beyond a durable ref are harmless (the writer's start
        // truncates them), and nothing is answered before all of it succeeded.
        let ids: Vec<ObjectId> = written.iter().map(|w| w.id).collect();
        if let Err(e) = self.seq_index.write(&ids) {
            tracing::error!(error = %e, "writing seq.idx failed; nothing was published");
            return Err(append::Error::storage(e));
        }
        // The pack, then the compare-and-swap on the ref, checked under its lock (a ref moved
        // behind the writer's back poisons it); see `publish.rs`. Three fsync rounds per
        // batch: pack + idx; the pack directory, the ref's lock file and seq.idx together;
        // after the rename, the refs directory.
        let edit = refs::Edit { name: EVENTS_REF, new: last.id, expected: self.head.map(|(_, id)| id) };
        let publishing = Instant::now();
        let published = publish::publish(
            &ledger,
            &publish::Publication {
                objects: entries,
                edits: &[edit],
                also_sync: &[self.seq_index.file()],
                holder: publish::Holder::EventWriter,
            },
        );
        self.phases.publish = publishing.elapsed();
        // A fresh handle per batch: it reopens the object store after consolidation.
        self.repo = self.ledger.repo();
        match published {
            Ok(()) => {}
            Err(e @ publish::Error::NotPublished(_)) => {
                tracing::error!(error = %e, "the batch was not published; the writer stays healthy");
                return Err(append::Error::storage(std::io::Error::other(e)));
            }
            Err(e) => return Err(poison(self, std::io::Error::other(e))),
        }
        self.seq_index.extend(ids.len() as u64);
        self.head = Some((last.seq, last.id));
        self.last_received = received;

        // 4. The derived index. The batch is durable in git already, so a failure here still
        //    answers Ok; the writer stops taking appends and the next start rebuilds from git.
        let stored_at = u64::try_from(received.unix_timestamp()).unwrap_or(0);
        let update = BatchUpdate {
            originals: written.iter().filter(|w| w.duplicate_of.is_none()).map(|w| (w.digest, w.seq)).collect(),
            keys: written
                .iter()
                .filter_map(|w| w.key.clone().map(|k| (w.camera.clone(), k, w.seq, stored_at)))
                .collect(),
            applied: Some((last.seq, last.id)),
        };
        self.batches_since_durable += 1;
        let durable = self.batches_since_durable >= windex::DURABLE_EVERY;
        let indexing = Instant::now();
        let applied = self.index.apply(&update, durable);
        self.phases.index = indexing.elapsed();
        self.phases.durable_index = durable;
        match applied {
            Ok(()) if durable => self.batches_since_durable = 0,
            Ok(()) => {}
            Err(e) => self.poison(format!("writer index update failed after the batch was durable: {e}")),
        }
        tracing::debug!(events = written.len(), objects = entries.len(), head = last.seq, "batch durable");
        Ok(())
    }

    fn consolidate(&mut self) {
        if let Some((wake, _)) = &self.consolidator {
            let _ = wake.try_send(());
        }
    }
}

/// A batch that takes this long is logged at `warn` with where its time went: every upload in
/// it waited at least this long for its answer.
const SLOW_BATCH: Duration = Duration::from_millis(500);

/// Where the last batch's time went; what the phases leave is answering the requests and
/// time the thread waited for a core.
#[derive(Clone, Copy, Default)]
struct Phases {
    /// Idempotency and dedupe lookups, and building the objects (signing included).
    prepare: Duration,
    /// Pack, ref and `seq.idx` written and fsynced (`publish.rs`).
    publish: Duration,
    /// The writer index (`windex.rs`) updated.
    index: Duration,
    /// Whether that update was one of the durable (fsynced) ones.
    durable_index: bool,
}

/// The committing node: its name and, when it has one, its signing key.
#[derive(Clone, Copy)]
struct Node<'a> {
    name: &'a str,
    key: Option<&'a SigningKey>,
}

/// Builds `event.json`, the tree and the commit (signed when the ledger has a key) of one
/// event; returns their pack entries (blob of the image excluded) and the commit id.
fn build_event(
    event: &Prepared,
    seq: u64,
    parent: Option<ObjectId>,
    duplicate_of: Option<u64>,
    received_at: &str,
    seconds: i64,
    node: Node<'_>,
) -> std::io::Result<([PackEntry; 3], ObjectId)> {
    let record = EventRecord {
        format_version: FORMAT_VERSION,
        seq,
        camera: event.camera.clone(),
        received_at: received_at.to_owned(),
        captured_at: event.captured_at.clone(),
        sha256: event.sha256.clone(),
        size: event.size,
        media_type: event.media_type.clone(),
        image: event.image_name.to_owned(),
        width: event.width,
        height: event.height,
        exif: event.exif.clone(),
        duplicate_of,
    };
    let json = pack::encode(pack::Kind::Blob, &record.to_canonical_json())?;
    let tree = pack::encode(pack::Kind::Tree, &format::event_tree_bytes(json.oid, event.image_name, event.blob.oid))?;
    let message = format::commit_message(&Trailers::for_record(&record, event.key.as_deref()));
    let spec = format::CommitSpec {
        tree: tree.oid,
        parent,
        author: &format::author(&event.camera, seconds),
        committer: &format::committer(node.name, seconds),
        message: &message,
    };
    let commit = pack::encode(pack::Kind::Commit, &format::commit_bytes(&spec, node.key))?;
    let id = commit.oid;
    Ok(([json, tree, commit], id))
}
