//! Every fsync of the write path goes through [`Fsync`], so that fault injection
//! (`LedgerConfig::fail_fsync_after`) covers all of them and tests can count them.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::observe::Observer;

/// One fsync (or a few in sequence) for [`Fsync::concurrently`].
pub(crate) type SyncJob<'a> = dyn Fn(&Fsync) -> io::Result<()> + Sync + 'a;

#[derive(Debug)]
pub(crate) struct Fsync {
    done: AtomicU64,
    failed: AtomicBool,
    fail_after: Option<u64>,
    /// Told how long each fsync took (metrics).
    observer: Option<Arc<dyn Observer>>,
}

impl Fsync {
    pub(crate) fn new(fail_after: Option<u64>) -> Self {
        Fsync { done: AtomicU64::new(0), failed: AtomicBool::new(false), fail_after, observer: None }
    }

    /// Reports every fsync's duration to `observer`.
    pub(crate) fn observed(mut self, observer: Option<Arc<dyn Observer>>) -> Self {
        self.observer = observer;
        self
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        self.sync_with(file, File::sync_all)
    }

    fn sync_with(&self, file: &File, how: fn(&File) -> io::Result<()>) -> io::Result<()> {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let result = match self.fail_after {
            Some(limit) if n > limit => {
                Err(io::Error::other(format!("injected fsync failure (fsync #{n}, limit {limit})")))
            }
            _ => match &self.observer {
                Some(observer) => {
                    let started = Instant::now();
                    let result = how(file);
                    observer.fsync(started.elapsed());
                    result
                }
                None => how(file),
            },
        };
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Whether any fsync has failed: from then on the on-disk state is unknown.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// `fsync(2)` a file's data and metadata.
    pub(crate) fn file(&self, file: &File) -> io::Result<()> {
        self.sync(file)
    }

    /// `fdatasync(2)`: writes a file's data out (used to write large consolidated packs out in
    /// steps, so no single fsync has hundreds of megabytes to flush while appends wait on theirs).
    pub(crate) fn data(&self, file: &File) -> io::Result<()> {
        self.sync_with(file, File::sync_data)
    }

    /// Runs independent fsyncs concurrently (one scoped thread each but the last, which runs
    /// on the caller's): the disk serves them together instead of one after another (and a
    /// journalling filesystem can share one journal commit). Every one of them runs; the first
    /// error is returned, so a caller acts only once all of them succeeded.
    pub(crate) fn concurrently<const N: usize>(&self, jobs: [&SyncJob<'_>; N]) -> io::Result<()> {
        self.concurrently_all(&jobs)
    }

    /// [`Fsync::concurrently`] for a number of jobs known only at run time.
    pub(crate) fn concurrently_all(&self, jobs: &[&SyncJob<'_>]) -> io::Result<()> {
        std::thread::scope(|scope| {
            let Some((last, rest)) = jobs.split_last() else { return Ok(()) };
            let handles: Vec<_> = rest.iter().map(|job| scope.spawn(move || job(self))).collect();
            let mut result = last(self);
            for handle in handles {
                let r = handle.join().unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")));
                if result.is_ok() {
                    result = r;
                }
            }
            result
        })
    }

    /// `fsync(2)` a directory so that renames and new entries in it are durable.
    pub(crate) fn dir(&self, dir: &Path) -> io::Result<()> {
        self.sync(&File::open(dir)?)
    }

    /// How many fsyncs were attempted (for tests and tracing).
    pub(crate) fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}
