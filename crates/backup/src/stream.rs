//! Moving one artifact between a blocking byte producer/consumer and chunk rows.
//!
//! Upload: `produce(raw writer)` runs in `spawn_blocking`; raw bytes are hashed, zstd
//! compressed and cut into chunks; the async side inserts each chunk (with its SHA-256)
//! inside the caller's transaction.
//!
//! Digests: each chunk has the SHA-256 of its bytes; `raw_sha256` covers the whole
//! artifact before compression; `stored_sha256` is the SHA-256 of the chunk digests
//! concatenated in order (binary, 32 bytes each), which pins the order and the set of
//! chunks without hashing every stored byte a second time.
//!
//! Upload also writes each chunk's `mac` (see `key`), which binds it to its snapshot,
//! artifact and position with the backup key.
//!
//! Download: the async side fetches chunk rows one by one, checks each SHA-256 and `mac`
//! (nothing unauthenticated reaches zstd) and the whole, and feeds them to
//! `consume(raw reader)` in `spawn_blocking` after zstd decompression, which stops with an
//! error one byte past the artifact's (sealed) `raw_bytes`: a zstd bomb costs no more than
//! the size it declares. The raw bytes are hashed and compared with the stored digest.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::db::{ArtifactRow, Store, Tx};
use crate::git::GitError;
use crate::key::BackupKey;
use crate::pipe::{ChunkSink, ChunkSource, HashingReader, HashingWriter, CHANNEL_CAPACITY};
use crate::{Fault, Progress};

/// A failure of the blocking side of a transfer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("a blocking task panicked or was cancelled")]
    Join(#[from] tokio::task::JoinError),
}

pub(crate) fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> WorkError {
    move |source| WorkError::Io { what, source }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("writing a chunk to the database failed")]
    Database(#[source] sqlx::Error),
    #[error(transparent)]
    Work(#[from] WorkError),
}

/// Upload what `produce` writes as artifact `artifact` of snapshot `snapshot_id`.
#[allow(clippy::too_many_arguments)] // one call site per artifact; a struct would only rename them
pub(crate) async fn upload<T, F>(
    tx: &mut Tx,
    key: &BackupKey,
    snapshot_id: i64,
    artifact: &str,
    chunk_size: usize,
    zstd_level: i32,
    progress: &dyn Progress,
    produce: F,
) -> Result<(T, ArtifactRow), UploadError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Write) -> Result<T, WorkError> + Send + 'static,
{
    let (chunks_tx, mut chunks_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let producer = tokio::task::spawn_blocking(move || -> Result<(T, u64, String), WorkError> {
        let sink = ChunkSink::new(chunks_tx, chunk_size);
        let encoder = zstd::Encoder::new(sink, zstd_level).map_err(io_err("start zstd"))?;
        let mut raw = HashingWriter::new(encoder);
        let value = produce(&mut raw)?;
        let (encoder, raw_bytes, raw_sha256) = raw.finish();
        let sink = encoder.finish().map_err(io_err("finish zstd"))?;
        sink.finish().map_err(io_err("send the last chunk"))?;
        Ok((value, raw_bytes, raw_sha256))
    });

    let mut seq = 0i64;
    let mut stored = Sha256::new();
    let mut stored_bytes = 0u64;
    while let Some((chunk, digest)) = chunks_rx.recv().await {
        stored.update(digest);
        let mac = key.chunk_mac(snapshot_id, artifact, seq, &digest);
        tx.insert_chunk(snapshot_id, artifact, seq, &hex::encode(digest), &mac, &chunk)
            .await
            .map_err(UploadError::Database)?;
        seq += 1;
        stored_bytes += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    let (value, raw_bytes, raw_sha256) = producer.await.map_err(WorkError::from)??;
    Ok((
        value,
        ArtifactRow {
            artifact: artifact.to_owned(),
            chunks: seq,
            objects: 0,
            raw_bytes: to_i64(raw_bytes),
            stored_bytes: to_i64(stored_bytes),
            raw_sha256,
            stored_sha256: hex::encode(stored.finalize()),
        },
    ))
}

pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DownloadError {
    #[error("reading a chunk from the database failed")]
    Database(#[source] sqlx::Error),
    #[error(transparent)]
    Fault(Fault),
    #[error(transparent)]
    Work(WorkError),
}

/// Stream artifact `a` of `snapshot_id` into `consume`, checking every chunk, the whole
/// stored stream, and the decompressed bytes against their SHA-256 digests.
pub(crate) async fn download<T, F>(
    store: &Store,
    key: &BackupKey,
    snapshot_id: i64,
    a: &ArtifactRow,
    progress: &dyn Progress,
    consume: F,
) -> Result<T, DownloadError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn BufRead) -> Result<T, WorkError> + Send + 'static,
{
    let (chunks_tx, chunks_rx) = mpsc::channel(CHANNEL_CAPACITY);
    // Set when decompression itself fails, to tell a corrupt artifact from a local error
    // (disk full, …) of the consumer.
    let undecodable = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&undecodable);
    let too_large = Arc::new(AtomicBool::new(false));
    let declared = u64::try_from(a.raw_bytes).unwrap_or(0);
    let oversize = Arc::clone(&too_large);
    let consumer = tokio::task::spawn_blocking(move || -> Result<(T, u64, String), WorkError> {
        let decoder = zstd::Decoder::new(ChunkSource::new(chunks_rx)).map_err(io_err("start zstd"))?;
        let decoder = Limit { inner: FlagOnError { inner: decoder, flag }, remaining: declared, flag: oversize };
        let mut raw = BufReader::with_capacity(256 * 1024, HashingReader::new(decoder));
        let value = consume(&mut raw)?;
        let (raw_bytes, raw_sha256) = raw.into_inner().drain_and_finish().map_err(io_err("decompress the artifact"))?;
        Ok((value, raw_bytes, raw_sha256))
    });

    let fault = feed(store, key, snapshot_id, a, progress, chunks_tx).await;
    // The consumer sees the end of input when `feed` returns (the sender is dropped);
    // wait for it so no file is still being written when the caller cleans up.
    let consumed = consumer.await.map_err(|e| DownloadError::Work(e.into()));
    if let Some(fault) = fault? {
        return Err(DownloadError::Fault(fault));
    }
    let (value, raw_bytes, raw_sha256) = match consumed? {
        Ok(done) => done,
        Err(_) if too_large.load(Ordering::SeqCst) => {
            return Err(DownloadError::Fault(Fault::TooLarge {
                snapshot: snapshot_id,
                artifact: a.artifact.clone(),
                declared: a.raw_bytes,
            }));
        }
        Err(e) if undecodable.load(Ordering::SeqCst) => {
            // Every chunk matched its digest, yet the stream does not decode: the
            // artifact was written corrupt. Report it as a fault of the snapshot.
            return Err(DownloadError::Fault(Fault::Undecodable {
                snapshot: snapshot_id,
                artifact: a.artifact.clone(),
                reason: crate::error_chain(&e),
            }));
        }
        Err(e) => return Err(DownloadError::Work(e)),
    };
    if raw_sha256 != a.raw_sha256 || to_i64(raw_bytes) != a.raw_bytes {
        return Err(DownloadError::Fault(Fault::WholeCorrupt { snapshot: snapshot_id, artifact: a.artifact.clone() }));
    }
    Ok(value)
}

/// Raises `flag` when the inner reader fails.
struct FlagOnError<R> {
    inner: R,
    flag: Arc<AtomicBool>,
}

impl<R: Read> Read for FlagOnError<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.inner.read(out).inspect_err(|_| self.flag.store(true, Ordering::SeqCst))
    }
}

/// Fails (and raises `flag`) as soon as `inner` yields more than `remaining` bytes: reads are
/// capped at `remaining + 1`, so at most one byte past the declared size is ever produced.
struct Limit<R> {
    inner: R,
    remaining: u64,
    flag: Arc<AtomicBool>,
}

impl<R: Read> Read for Limit<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let cap = usize::try_from(self.remaining.saturating_add(1)).unwrap_or(usize::MAX).min(out.len());
        let n = self.inner.read(&mut out[..cap])?;
        if n as u64 > self.remaining {
            self.flag.store(true, Ordering::SeqCst);
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the artifact decompresses past its declared size"));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Chunk rows requested ahead of the one being checked (each up to 8 MiB in memory).
const PREFETCH_CHUNKS: usize = 2;

/// Send the chunks in order; `Ok(Some(fault))` when a check fails (sending stops there).
async fn feed(
    store: &Store,
    key: &BackupKey,
    snapshot_id: i64,
    a: &ArtifactRow,
    progress: &dyn Progress,
    chunks_tx: mpsc::Sender<Vec<u8>>,
) -> Result<Option<Fault>, DownloadError> {
    use futures_util::StreamExt as _;

    let artifact = a.artifact.as_str();
    let mut stored = Sha256::new();
    // The next chunk is fetched while this one is checked and consumed: reading rows is
    // the slowest step of a restore, and the database serves two queries in parallel.
    let fetches = futures_util::stream::iter(0..a.chunks)
        .map(|seq| async move { (seq, store.chunk(snapshot_id, artifact, seq).await) })
        .buffered(PREFETCH_CHUNKS);
    let mut fetches = std::pin::pin!(fetches);
    let mut consumer_alive = true;
    while let Some((seq, row)) = fetches.next().await {
        let Some(row) = row.map_err(DownloadError::Database)? else {
            return Ok(Some(Fault::ChunkMissing { snapshot: snapshot_id, artifact: artifact.to_owned(), seq }));
        };
        let bytes = row.bytes;
        let digest = Sha256::digest(&bytes);
        if hex::encode(digest) != row.sha256 {
            return Ok(Some(Fault::ChunkCorrupt { snapshot: snapshot_id, artifact: artifact.to_owned(), seq }));
        }
        // The SHA-256 column catches accidents; the mac catches anyone who rewrote both.
        if !key.chunk_mac_matches(snapshot_id, artifact, seq, &digest, row.mac.as_deref()) {
            return Ok(Some(Fault::ChunkForged { snapshot: snapshot_id, artifact: artifact.to_owned(), seq }));
        }
        stored.update(digest);
        progress.advance(bytes.len() as u64);
        // When the consumer has stopped early (its error is reported by the caller), keep
        // checking the remaining chunks: damage to the stored data is the better report.
        if consumer_alive && chunks_tx.send(bytes).await.is_err() {
            consumer_alive = false;
        }
    }
    let found = store.chunk_count(snapshot_id, artifact).await.map_err(DownloadError::Database)?;
    if found != a.chunks {
        return Ok(Some(Fault::ChunkCount {
            snapshot: snapshot_id,
            artifact: artifact.to_owned(),
            expected: a.chunks,
            found,
        }));
    }
    if hex::encode(stored.finalize()) != a.stored_sha256 {
        return Ok(Some(Fault::WholeCorrupt { snapshot: snapshot_id, artifact: artifact.to_owned() }));
    }
    Ok(None)
}
