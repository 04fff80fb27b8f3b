//! Every fsync of the write path goes through [`Fsync`], so that fault injection
//! (`LedgerConfig::fail_fsync_after`) covers all of them and tests can count them.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct Fsync {
    done: AtomicU64,
    failed: AtomicBool,
    fail_after: Option<u64>,
}

impl Fsync {
    pub(crate) fn new(fail_after: Option<u64>) -> Self {
        Fsync { done: AtomicU64::new(0), failed: AtomicBool::new(false), fail_after }
    }

    fn sync(&self, file: &File) -> io::Result<()> {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let result = match self.fail_after {
            Some(limit) if n > limit => Err(io::Error::other(format!("injected fsync failure (fsync #{n}, limit {limit})"))),
            _ => file.sync_all(),
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

    /// `fsync(2)` a directory so that renames and new entries in it are durable.
    pub(crate) fn dir(&self, dir: &Path) -> io::Result<()> {
        self.sync(&File::open(dir)?)
    }

    /// How many fsyncs were attempted (for tests and tracing).
    pub(crate) fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}
