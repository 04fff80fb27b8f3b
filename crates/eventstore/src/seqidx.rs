//! `index/seq.idx`: record `i` (0-based) is the 20-byte commit id of event `i + 1`.
//!
//! Why a flat file: seq -> commit id is the one lookup every read does, and a fixed-size
//! record answers it with one `pread` whatever the ledger's size (no history walk, no
//! database open). Written only by the event writer, after the ref is durable; derived from
//! git and repaired from it on writer start. Rewritten in place (never replaced) so readers'
//! open file descriptors stay valid.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use gix::ObjectId;

use crate::durable::Fsync;

const RECORD: u64 = 20;

/// Byte offset of record `seq` (1-based); `None` for seq 0 and for seqs whose offset does not
/// fit a `u64` (no file holds them: not found, never a wrapped offset that reads another
/// event's record; event 4611686018427387905 used to read event 1's and was called corrupt).
fn offset(seq: u64) -> Option<u64> {
    seq.checked_sub(1)?.checked_mul(RECORD)
}

/// Reads record `seq` (1-based); `None` if the file is shorter.
pub(crate) fn get(file: &File, seq: u64) -> io::Result<Option<ObjectId>> {
    let Some(at) = offset(seq) else { return Ok(None) };
    let mut buf = [0u8; RECORD as usize];
    match file.read_exact_at(&mut buf, at) {
        Ok(()) => Ok(Some(ObjectId::from_bytes_or_panic(&buf))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// The writer's handle.
#[derive(Debug)]
pub(crate) struct SeqIndex {
    file: File,
    len: u64,
}

impl SeqIndex {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len() / RECORD;
        Ok(SeqIndex { file, len })
    }

    /// Number of complete records (= highest seq indexed).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn get(&self, seq: u64) -> io::Result<Option<ObjectId>> {
        if seq > self.len {
            return Ok(None);
        }
        get(&self.file, seq)
    }

    /// Drops records beyond `len` (and any partial record).
    pub(crate) fn truncate(&mut self, len: u64, fsync: &Fsync) -> io::Result<()> {
        self.file.set_len(len * RECORD)?;
        self.len = len;
        fsync.file(&self.file)
    }

    /// Appends the ids of events `len + 1 ..` and makes them durable.
    pub(crate) fn append(&mut self, ids: &[ObjectId], fsync: &Fsync) -> io::Result<()> {
        self.write(ids)?;
        fsync.file(&self.file)?;
        self.len += ids.len() as u64;
        Ok(())
    }

    /// Writes the ids of events `len + 1 ..` without fsyncing them: the caller fsyncs
    /// [`SeqIndex::file`] (alongside other fsyncs) and then calls [`SeqIndex::extend`].
    pub(crate) fn write(&self, ids: &[ObjectId]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * RECORD as usize);
        for id in ids {
            buf.extend_from_slice(id.as_bytes());
        }
        self.file.write_all_at(&buf, self.len * RECORD)
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Counts `n` records written by [`SeqIndex::write`] and fsynced.
    pub(crate) fn extend(&mut self, n: u64) {
        self.len += n;
    }
}
