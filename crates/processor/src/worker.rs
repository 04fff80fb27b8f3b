//! The worker loop: tail `refs/heads/events` from the checkpoint, judge each event, append the
//! verdicts (and their notes) in batches.
//!
//! A worker keeps no state of its own. On start it repairs lagging notes, takes the verdict
//! head as its checkpoint and rebuilds its [`History`] (the near-duplicate index and every
//! camera's recent scene) from what the verdicts record (`perceptual_hash` and `reasons`: one walk
//! down the verdict chain plus one `event.json` read per event, no image decoded). Only verdicts without a usable hash (written
//! before the field existed, or by a processor using another hash algorithm) send it back to
//! the image. Then each [`Worker::step`]:
//! 1. reads up to `batch` events after the checkpoint,
//! 2. analyses them in parallel, one thread per [`Classifier`] (ONNX sessions are `&mut`),
//! 3. judges them in seq order against the history ([`crate::judge::judge_in_order`]),
//! 4. appends the verdicts in one call; the eventstore moves `refs/heads/verdicts` and
//!    `refs/notes/verdicts` together with a compare-and-swap and makes them durable.
//!
//! Two workers on one ledger never write two verdicts for one event: the loser of the
//! compare-and-swap gets `Conflict` with the new head, undoes its batch in the history, reads
//! whatever the winner judged beyond it, and continues from there.

use std::sync::Arc;
use std::time::Duration;

use camledger_eventstore::{verdict, Ledger, Verdict as StoredVerdictRecord};
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use tracing::instrument;

use crate::classifier::{Classifier, ClassifyError};
use crate::judge::{self, analyse, hash_only, AnalyseError, Analysis, EventFacts, History};
use crate::neardup::QueryError;

pub use crate::verdict::UNDECODABLE;

/// Worker settings (fixed for a run).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub judge: judge::Config,
    /// Most events judged and appended as one batch.
    pub batch: usize,
    /// Pause between looks at the head when caught up (new events are seen within this).
    pub idle_poll: Duration,
    /// Pause after a retryable error.
    pub error_backoff: Duration,
    /// Recorded in every verdict.
    pub processor_version: String,
    /// Told about every verdict this worker appends (metrics); `None` reports nothing.
    pub observer: Option<Arc<dyn Observer>>,
}

/// Told about each verdict a worker appended, for metrics, without this crate knowing any
/// metrics library (camledger's Prometheus registry implements it). Called on the worker's
/// thread after the verdicts are durable: must be cheap and must never block.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// One event judged: how long its analysis took (decode, hashes, blank check, classifier),
    /// and the verdict.
    fn judged(&self, analysis: Duration, spam: bool, reasons: &[String]);
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            judge: judge::Config::default(),
            batch: 32,
            idle_poll: Duration::from_millis(250),
            error_backoff: Duration::from_secs(1),
            processor_version: concat!("camledger-processor/", env!("CARGO_PKG_VERSION")).to_owned(),
            observer: None,
        }
    }
}

/// Why a worker step failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Reading events or verdicts failed. Retry after a pause (`run` does); log at `warn`.
    #[error("reading the ledger failed")]
    Read(#[from] camledger_eventstore::read::Error),
    /// Appending verdicts failed. `Storage`: retry after a pause. `OutOfOrder`,
    /// `EventMismatch`, `Invalid`: a bug; `run` stops and returns it.
    #[error("appending verdicts failed")]
    Append(#[from] verdict::Error),
    /// ONNX Runtime failed on an image. Retry after a pause; log at `warn`.
    #[error("classifying failed")]
    Classify(#[from] ClassifyError),
    /// The configured near-duplicate distance exceeds the index. Configuration error: stop.
    #[error(transparent)]
    Config(#[from] QueryError),
    /// `received_at` in event.json is not RFC 3339: the ledger is corrupt. Stop; run verify.
    #[error("event {seq} has an unparsable received_at {value:?}")]
    BadTimestamp { seq: u64, value: String },
    /// A worker needs at least one classifier (`--workers 0` means no worker at all).
    #[error("a worker needs at least one classifier")]
    NoClassifier,
    /// An analysis thread panicked (a bug in a decoder). Stop.
    #[error("an analysis thread panicked")]
    Panicked,
    /// The system refused a new analysis thread (a thread or memory limit). Retry after a pause.
    #[error("starting an analysis thread")]
    Spawn(#[source] std::io::Error),
}

/// The analysis threads' name, so `bench soak` and `top -H` show what judging costs.
const JUDGE_THREAD: &str = "camledger-judge";

/// How much nicer than the server the analysis threads run. Judging is behind the acknowledgement, never on it: when
/// uploads and judging want the same cores, uploads win and verdicts lag, to catch up when the
/// load drops. At nice 0 they took a third of the CPU of `bench soak` (two cores) from ingest.
/// A nice 10 thread gets about a tenth of what a nice 0 one gets under contention, and all of
/// an idle core.
pub const JUDGE_NICE: i32 = 10;

/// Starts an analysis thread in `scope`: named [`JUDGE_THREAD`], running `f` behind ingest.
fn spawn_judge<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new().name(JUDGE_THREAD.into()).spawn_scoped(scope, move || {
        behind_ingest();
        f()
    })
}

/// Makes the calling analysis thread [`JUDGE_NICE`] nicer (at most 19). On Linux the nice
/// value belongs to the thread; elsewhere it would apply to the whole process, so it is left
/// alone there.
fn behind_ingest() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        let lowered = getpriority_process(me).and_then(|nice| setpriority_process(me, (nice + JUDGE_NICE).min(19)));
        if let Err(e) = lowered {
            tracing::debug!(error = %e, "could not lower the analysis thread's priority");
        }
    }
}

impl WorkerError {
    /// Whether `run` should pause and try again rather than stop.
    pub fn is_retryable(&self) -> bool {
        match self {
            WorkerError::Read(_) | WorkerError::Classify(_) | WorkerError::Spawn(_) => true,
            WorkerError::Append(e) => matches!(e, verdict::Error::Storage(_) | verdict::Error::Read(_)),
            _ => false,
        }
    }
}

/// One event's analysis and how long it took.
type Analysed = (Result<Analysis, AnalyseError>, Duration);

/// One judged event's history entry: seq, camera, received_at, hash (`None`: undecodable),
/// accepted into its camera's scene.
type Indexed = (u64, String, i64, Option<u64>, bool);

/// What a verdict says about its image's perceptual hash.
#[derive(Clone, Copy)]
enum Recorded {
    Hash(u64),
    Undecodable,
    /// No usable hash in the verdict: decode the image.
    Unknown,
}

/// One event loaded for judging.
struct Loaded {
    seq: u64,
    id: String,
    camera: String,
    received_at: i64,
    duplicate_of: Option<u64>,
    image: Vec<u8>,
}

/// A worker tailing one ledger.
pub struct Worker {
    ledger: Ledger,
    config: WorkerConfig,
    classifiers: Vec<Classifier>,
    model_sha256: String,
    history: History,
    next_seq: u64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("next_seq", &self.next_seq).field("threads", &self.classifiers.len()).finish()
    }
}

/// `received_at` of event `seq` as Unix seconds.
pub(crate) fn unix_seconds(seq: u64, rfc3339: &str) -> Result<i64, WorkerError> {
    time::OffsetDateTime::parse(rfc3339, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| WorkerError::BadTimestamp { seq, value: rfc3339.to_owned() })
}

impl Worker {
    /// Repairs notes, takes the checkpoint and rebuilds the near-duplicate index.
    #[instrument(skip_all, fields(threads = classifiers.len()), err)]
    pub fn start(ledger: Ledger, config: WorkerConfig, classifiers: Vec<Classifier>) -> Result<Self, WorkerError> {
        let first = classifiers.first().ok_or(WorkerError::NoClassifier)?;
        let model_sha256 = first.model().sha256().to_ascii_lowercase();
        let checkpoint = ledger.repair_verdict_notes()?.map_or(0, |head| head.event_seq);
        let mut worker =
            Worker { history: History::new(&config.judge), ledger, config, classifiers, model_sha256, next_seq: 1 };
        worker.catch_up_index(checkpoint)?;
        tracing::info!(
            checkpoint,
            indexed = worker.history.index.len(),
            cameras = worker.history.scenes.len(),
            "worker started"
        );
        Ok(worker)
    }

    /// The next event this worker will judge.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds events `next_seq..=through` (judged already) to the history, in seq order: their
    /// hashes and spam bits come from the verdicts; events whose verdict has no hash are hashed
    /// again, in parallel chunks (one thread per classifier).
    fn catch_up_index(&mut self, through: u64) -> Result<(), WorkerError> {
        const CHUNK: u64 = 1024;
        let from = self.next_seq;
        if through < from {
            return Ok(());
        }
        let hasher = self.config.judge.hasher;
        let mut recorded = vec![(Recorded::Unknown, false); (through - from + 1) as usize];
        self.ledger.walk_verdicts_back(|v| {
            if v.event_seq < from {
                return false;
            }
            if let Some(slot) = v.event_seq.checked_sub(from).and_then(|i| recorded.get_mut(i as usize)) {
                let hash = match v.perceptual_hash.as_deref().and_then(|h| hasher.parse_record(h)) {
                    Some(hash) => Recorded::Hash(hash),
                    None if v.reasons.iter().any(|r| r == UNDECODABLE) => Recorded::Undecodable,
                    None => Recorded::Unknown,
                };
                *slot = (hash, crate::scene::accepts(&v.reasons));
            }
            true
        })?;
        let threads = self.classifiers.len().max(1) as u64;
        let mut start = from;
        while start <= through {
            let to = through.min(start + CHUNK * threads - 1);
            let seqs: Vec<(u64, (Recorded, bool))> =
                (start..=to).map(|seq| (seq, recorded[(seq - from) as usize])).collect();
            let per_thread = seqs.len().div_ceil(threads as usize).max(1);
            let (ledger, config) = (&self.ledger, &self.config.judge);
            let indexed: Vec<Result<Vec<Indexed>, WorkerError>> = std::thread::scope(|scope| {
                let handles: Vec<_> = seqs
                    .chunks(per_thread)
                    .map(|chunk| {
                        spawn_judge(scope, move || {
                            chunk
                                .iter()
                                .map(|&(seq, (recorded, accepted))| {
                                    index_entry(ledger, config, seq, recorded, accepted)
                                })
                                .collect()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.map_err(WorkerError::Spawn)?.join().unwrap_or(Err(WorkerError::Panicked)))
                    .collect()
            });
            for chunk in indexed {
                for (seq, camera, received_at, hash, accepted) in chunk? {
                    self.history.record(seq, &camera, received_at, hash, accepted);
                }
            }
            start = to + 1;
        }
        self.next_seq = self.next_seq.max(through + 1);
        Ok(())
    }

    fn load(&self, seq: u64) -> Result<Loaded, WorkerError> {
        let stored = self.ledger.event(seq)?;
        let (_, image) = self.ledger.image(seq)?;
        Ok(Loaded {
            seq,
            received_at: unix_seconds(seq, &stored.record.received_at)?,
            camera: stored.record.camera,
            duplicate_of: stored.record.duplicate_of,
            id: stored.id,
            image,
        })
    }

    /// Analyses `events` in parallel, one thread per classifier, preserving order; each with
    /// how long its analysis took.
    fn analyse_all(&mut self, events: &[Loaded]) -> Result<Vec<Analysed>, WorkerError> {
        let config = &self.config.judge;
        let per_thread = events.len().div_ceil(self.classifiers.len()).max(1);
        let chunks: Vec<Vec<Analysed>> = std::thread::scope(|scope| {
            let handles: Vec<_> = events
                .chunks(per_thread)
                .zip(self.classifiers.iter_mut())
                .map(|(chunk, classifier)| {
                    spawn_judge(scope, move || {
                        chunk
                            .iter()
                            .map(|e| {
                                let started = std::time::Instant::now();
                                let analysis = analyse(&e.image, config, Some(&mut *classifier));
                                (analysis, started.elapsed())
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.map_err(WorkerError::Spawn)?.join().map_err(|_| WorkerError::Panicked))
                .collect::<Result<_, _>>()
        })?;
        Ok(chunks.into_iter().flatten().collect())
    }

    /// Judges up to `batch` events after the checkpoint and appends their verdicts. Returns
    /// the number of verdicts this worker wrote (0: caught up, or another worker was first).
    #[instrument(skip_all, fields(from = self.next_seq), err)]
    pub fn step(&mut self) -> Result<usize, WorkerError> {
        let Some(head) = self.ledger.head()? else { return Ok(0) };
        if head.seq < self.next_seq {
            return Ok(0);
        }
        let last = head.seq.min(self.next_seq + self.config.batch.max(1) as u64 - 1);
        let events = (self.next_seq..=last).map(|seq| self.load(seq)).collect::<Result<Vec<_>, _>>()?;
        let analyses = self.analyse_all(&events)?;
        let history_before = self.history.mark();
        let mut verdicts = Vec::with_capacity(events.len());
        let mut hashes = Vec::with_capacity(events.len());
        let mut took = Vec::with_capacity(events.len());
        for (event, (analysis, analysis_took)) in events.iter().zip(analyses) {
            took.push(analysis_took);
            let record = match analysis {
                Ok(analysis) => {
                    let facts = EventFacts {
                        seq: event.seq,
                        camera: &event.camera,
                        received_at: event.received_at,
                        duplicate_of: event.duplicate_of,
                    };
                    let verdict = judge::judge_in_order(&mut self.history, &facts, &analysis, &self.config.judge)?;
                    hashes.push((event.seq, Some(analysis.hash), crate::scene::accepts(&verdict.reasons)));
                    StoredVerdictRecord {
                        event_seq: event.seq,
                        event_id: event.id.clone(),
                        spam: verdict.spam,
                        reasons: verdict.reasons.iter().map(|r| (*r).to_owned()).collect(),
                        scores: verdict.scores,
                        near_duplicate_of: verdict.near_duplicate_of,
                        model_sha256: self.model_sha256.clone(),
                        processor_version: self.config.processor_version.clone(),
                        perceptual_hash: Some(self.config.judge.hasher.record(analysis.hash)),
                    }
                }
                Err(AnalyseError::Decode(error)) => {
                    tracing::warn!(seq = event.seq, %error, "admitted image does not decode; judged spam");
                    hashes.push((event.seq, None, false));
                    let verdict = judge::judge_undecodable(&self.config.judge);
                    StoredVerdictRecord {
                        event_seq: event.seq,
                        event_id: event.id.clone(),
                        spam: verdict.spam,
                        reasons: verdict.reasons.iter().map(|r| (*r).to_owned()).collect(),
                        scores: verdict.scores,
                        near_duplicate_of: verdict.near_duplicate_of,
                        model_sha256: self.model_sha256.clone(),
                        processor_version: self.config.processor_version.clone(),
                        perceptual_hash: None,
                    }
                }
                Err(AnalyseError::Classify(error)) => return Err(error.into()),
            };
            verdicts.push(record);
        }
        match self.ledger.append_verdicts(&verdicts) {
            Ok(_) => {
                self.next_seq = last + 1;
                if let Some(observer) = &self.config.observer {
                    for (verdict, took) in verdicts.iter().zip(&took) {
                        observer.judged(*took, verdict.spam, &verdict.reasons);
                    }
                }
                tracing::debug!(count = verdicts.len(), through = last, "verdicts appended");
                Ok(verdicts.len())
            }
            Err(verdict::Error::Conflict { head }) => {
                let winner = head.map_or(0, |h| h.event_seq);
                tracing::info!(winner, "another worker appended first; catching up");
                // Undo this batch in the history, keep what the winner also judged (verdicts
                // are deterministic), read the rest of what it judged.
                self.history.rollback(history_before);
                for (event, (seq, hash, accepted)) in events.iter().zip(&hashes) {
                    if *seq > winner {
                        break;
                    }
                    self.history.record(*seq, &event.camera, event.received_at, *hash, *accepted);
                    self.next_seq = seq + 1;
                }
                self.catch_up_index(winner)?;
                Ok(0)
            }
            Err(other) => {
                self.history.rollback(history_before);
                Err(other.into())
            }
        }
    }

    /// Runs until `cancel` fires: steps on the blocking pool, pauses when caught up, backs off
    /// after retryable errors, returns the first fatal one.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), WorkerError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let (worker, result) = tokio::task::spawn_blocking(move || {
                let result = self.step();
                (self, result)
            })
            .await
            .map_err(|_| WorkerError::Panicked)?;
            self = worker;
            let pause = match result {
                Ok(0) => self.config.idle_poll,
                Ok(_) => continue,
                Err(error) if error.is_retryable() => {
                    tracing::warn!(error = %error, "worker step failed; retrying");
                    self.config.error_backoff
                }
                Err(error) => return Err(error),
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// The index entry of judged event `seq`: camera and time from `event.json`, the hash from its
/// verdict or, when the verdict has none, from the image.
fn index_entry(
    ledger: &Ledger,
    config: &judge::Config,
    seq: u64,
    recorded: Recorded,
    accepted: bool,
) -> Result<Indexed, WorkerError> {
    let (record, hash) = match recorded {
        Recorded::Hash(hash) => (ledger.event(seq)?.record, Some(hash)),
        Recorded::Undecodable => (ledger.event(seq)?.record, None),
        Recorded::Unknown => {
            let (record, bytes) = ledger.image(seq)?;
            let hash = hash_only(&bytes, config)
                .map_err(|error| tracing::debug!(seq, %error, "undecodable event left out of the index"))
                .ok();
            (record, hash)
        }
    };
    let received_at = unix_seconds(seq, &record.received_at)?;
    Ok((seq, record.camera, received_at, hash, accepted))
}

/// Creates `threads` classifiers for one model (one ONNX session each).
pub fn classifiers(
    runtime: &crate::classifier::OnnxRuntime,
    model: &Arc<crate::classifier::Model>,
    threads: usize,
) -> Result<Vec<Classifier>, ClassifyError> {
    (0..threads.max(1)).map(|_| Classifier::new(runtime, Arc::clone(model))).collect()
}

#[cfg(test)]
mod tests;
