//! The one durable publish path: every commit camledger writes (events, verdicts, notes)
//! reaches the repository through [`publish`].
//!
//! 1. One pack of all new objects (each object once), written under a temporary name with its
//!    `.idx`, both fsynced together, renamed into place. Nothing refers to it yet, so a
//!    failure here publishes nothing.
//! 2. Every ref of the publication is locked (`<ref>.lock`, git's protocol) and its lock file
//!    written. Then one concurrent fsync round: the pack directory (the pack's rename), every
//!    ref lock file, and the caller's own files (the event writer's `seq.idx` records). All of
//!    it must be durable before any ref moves; done together the disk serves them in about
//!    the time of one (measured when this was the event writer's own code: a round instead of
//!    three sequential fsyncs per batch).
//! 3. The old values are compared under the locks (compare-and-swap), the locks renamed over
//!    the refs, and the refs' directories fsynced (concurrently).
//!
//! Failures are classified for the caller, who decides what to answer:
//! [`Error::NotPublished`] and [`Error::Conflict`]: no ref moved, the state is known (a
//! written pack holds only unreachable objects, which `git gc` prunes); [`Error::Unknown`]: an
//! fsync failed (now or earlier through this handle) or a ref may have moved, so the state on
//! disk is unknown until a restart reads it again. The event writer poisons itself on
//! `Unknown` and on `Conflict`; the verdict writer reports them.

use std::collections::HashSet;
use std::fs::File;
use std::io;

use gix::ObjectId;

use crate::durable::{Fsync, SyncJob};
use crate::pack::{self, PackEntry};
use crate::{recover, refs, Ledger};

/// Which lock keeps crash clean-up (`recover.rs`) away from the pack and the ref locks of a
/// publication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holder {
    /// The event writer: it holds `events.lock` for its whole life, and its own start is the
    /// only clean-up that could remove its files.
    EventWriter,
    /// Any other writer (verdicts and notes, possibly in other processes): holds
    /// `git-writers.lock` while publishing. Holding it, a lock file on one of its refs is
    /// surely a crashed writer's and is removed first. Every writer of those refs must
    /// publish as `GitWriters`.
    GitWriters,
}

/// What to publish.
pub(crate) struct Publication<'a> {
    /// The new objects (duplicates are written once).
    pub(crate) objects: &'a [PackEntry],
    /// The refs to move, each with a compare-and-swap on its old value, in this order.
    pub(crate) edits: &'a [refs::Edit<'a>],
    /// The caller's files, fsynced in the same round as the pack directory and the ref
    /// locks: durable before any ref moves.
    pub(crate) also_sync: &'a [&'a File],
    pub(crate) holder: Holder,
}

/// Why a publication failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// No ref moved and no fsync failed (a full disk, a ref locked by someone else). Retrying
    /// is safe.
    #[error("nothing was published: {0}")]
    NotPublished(io::Error),
    /// A ref did not hold its expected value; no ref moved.
    #[error("{name} is {found:?}, expected {expected:?}; nothing was published")]
    Conflict { name: String, expected: Option<ObjectId>, found: Option<ObjectId> },
    /// An fsync failed, or a ref may have moved: the state on disk is unknown until restart.
    #[error("the state on disk is unknown: {0}")]
    Unknown(io::Error),
}

/// Publishes `publication` durably (see the module documentation); `Ok` once every ref moved
/// and everything it names is on stable storage.
#[tracing::instrument(skip_all, fields(objects = publication.objects.len(), refs = publication.edits.len(), holder = ?publication.holder))]
pub(crate) fn publish(ledger: &Ledger, publication: &Publication<'_>) -> Result<(), Error> {
    let fsync = ledger.fsync();
    if fsync.has_failed() {
        return Err(Error::Unknown(io::Error::other("an earlier fsync through this ledger handle failed")));
    }
    let git_dir = ledger.git_dir();
    let _writers_lock = match publication.holder {
        Holder::EventWriter => None,
        Holder::GitWriters => {
            let lock = recover::git_writers_lock(ledger.data_dir()).and_then(|file| file.lock().map(|()| file));
            let lock = lock.map_err(Error::NotPublished)?;
            for edit in publication.edits {
                let stale = git_dir.join(format!("{}.lock", edit.name));
                if stale.exists() {
                    tracing::warn!(file = %stale.display(), "removing a ref lock left by a crashed writer");
                    let _ = std::fs::remove_file(&stale);
                }
            }
            Some(lock)
        }
    };

    // 1. The pack: invisible until renamed, so a failure here changes nothing.
    let pack_dir = git_dir.join("objects").join("pack");
    let mut seen = HashSet::with_capacity(publication.objects.len());
    let objects: Vec<&PackEntry> = publication.objects.iter().filter(|e| seen.insert(e.oid)).collect();
    let write_pack = || -> io::Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let count = u32::try_from(objects.len()).map_err(io::Error::other)?;
        let mut writer = pack::PackWriter::create(&pack_dir, count)?;
        for entry in &objects {
            writer.add(entry.oid, entry.crc32, &entry.bytes)?;
        }
        // The pack directory is fsynced below, together with the ref locks.
        writer.finish_unsynced_dir(fsync).map(drop)
    };
    if let Err(e) = write_pack() {
        return Err(if fsync.has_failed() {
            Error::Unknown(e)
        } else {
            tracing::error!(error = %e, "writing the pack failed; nothing was published");
            Error::NotPublished(e)
        });
    }

    // 2. and 3. Lock, one concurrent fsync round, compare-and-swap, rename, fsync the dirs.
    let sync_locks = |locks: &[&File]| {
        let pack_dir_job = |f: &Fsync| if objects.is_empty() { Ok(()) } else { f.dir(&pack_dir) };
        let file_jobs: Vec<_> =
            locks.iter().chain(publication.also_sync).map(|file| move |f: &Fsync| f.file(file)).collect();
        let mut jobs: Vec<&SyncJob<'_>> = vec![&pack_dir_job];
        jobs.extend(file_jobs.iter().map(|job| job as &SyncJob<'_>));
        fsync.concurrently_all(&jobs)
    };
    let sync_dirs = |dirs: &[std::path::PathBuf]| {
        let jobs: Vec<_> = dirs.iter().map(|dir| move |f: &Fsync| f.dir(dir)).collect();
        fsync.concurrently_all(&jobs.iter().map(|job| job as &SyncJob<'_>).collect::<Vec<_>>())
    };
    match refs::update(&git_dir, publication.edits, fsync, sync_locks, sync_dirs) {
        Ok(()) => Ok(()),
        Err(refs::Error::Conflict { name, expected, found }) if !fsync.has_failed() => {
            Err(Error::Conflict { name, expected, found })
        }
        // Nothing moved: a full disk while writing a lock, or a lock held by someone else.
        // The pack written above only holds unreachable objects (`git fsck` reports them as
        // dangling, `git gc` prunes them).
        Err(e @ (refs::Error::Locked(_) | refs::Error::Io(_)))
            if !fsync.has_failed() && unmoved(&git_dir, publication.edits) =>
        {
            tracing::error!(error = %e, "moving the refs failed; none moved, nothing was published");
            Err(Error::NotPublished(io::Error::other(e)))
        }
        Err(e) => Err(Error::Unknown(io::Error::other(e))),
    }
}

/// Whether every ref of `edits` still holds its expected value.
fn unmoved(git_dir: &std::path::Path, edits: &[refs::Edit<'_>]) -> bool {
    edits.iter().all(|edit| refs::read(git_dir, edit.name).is_ok_and(|found| found == edit.expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{self, CommitSpec};
    use crate::LedgerConfig;

    const REF: &str = "refs/heads/test";

    /// An empty tree and a commit of it saying `message`: the objects and the commit id.
    fn commit(message: &str) -> (Vec<PackEntry>, ObjectId) {
        let tree = pack::encode(pack::Kind::Tree, &[]).expect("tree");
        let who = format::committer("node", 1_700_000_000);
        let spec = CommitSpec { tree: tree.oid, parent: None, author: &who, committer: &who, message };
        let commit = pack::encode(pack::Kind::Commit, &format::commit_bytes(&spec, None)).expect("commit");
        let id = commit.oid;
        (vec![tree, commit], id)
    }

    fn publish_one(
        ledger: &Ledger,
        message: &str,
        expected: Option<ObjectId>,
        holder: Holder,
    ) -> Result<ObjectId, Error> {
        let (objects, id) = commit(message);
        let edits = [refs::Edit { name: REF, new: id, expected }];
        publish(ledger, &Publication { objects: &objects, edits: &edits, also_sync: &[], holder }).map(|()| id)
    }

    fn value(ledger: &Ledger) -> Option<ObjectId> {
        refs::read(&ledger.git_dir(), REF).expect("ref reads")
    }

    #[test]
    fn a_stale_expectation_is_a_conflict_and_moves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens");
        let first = publish_one(&ledger, "first\n", None, Holder::EventWriter).expect("publishes");
        let stale = publish_one(&ledger, "second\n", None, Holder::EventWriter);
        assert!(matches!(stale, Err(Error::Conflict { found: Some(f), .. }) if f == first), "{stale:?}");
        assert_eq!(value(&ledger), Some(first));
        publish_one(&ledger, "second\n", Some(first), Holder::EventWriter).expect("the right expectation publishes");
    }

    #[test]
    fn a_ref_lock_is_respected_by_the_event_writer_and_cleared_by_git_writers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens");
        let first = publish_one(&ledger, "first\n", None, Holder::EventWriter).expect("publishes");
        let lock = ledger.git_dir().join(format!("{REF}.lock"));
        std::fs::write(&lock, "").expect("someone's lock");
        let locked = publish_one(&ledger, "second\n", Some(first), Holder::EventWriter);
        assert!(matches!(locked, Err(Error::NotPublished(_))), "{locked:?}");
        assert_eq!(value(&ledger), Some(first));
        // A git writer holds git-writers.lock: a lock on its ref is a crashed writer's.
        let second = publish_one(&ledger, "second\n", Some(first), Holder::GitWriters).expect("publishes");
        assert_eq!(value(&ledger), Some(second));
        assert!(!lock.exists());
    }

    #[test]
    fn after_a_failed_fsync_every_publication_is_refused_as_unknown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LedgerConfig { fail_fsync_after: Some(0), ..LedgerConfig::default() };
        // The repository is created outside the fault injection, then opened with it.
        drop(Ledger::open(dir.path(), LedgerConfig::default()).expect("creates"));
        let ledger = Ledger::open(dir.path(), config).expect("opens");
        let failed = publish_one(&ledger, "first\n", None, Holder::GitWriters);
        assert!(matches!(failed, Err(Error::Unknown(_))), "{failed:?}");
        assert_eq!(value(&ledger), None, "nothing moved");
        let again = publish_one(&ledger, "first\n", None, Holder::GitWriters);
        assert!(matches!(again, Err(Error::Unknown(_))), "refused until restart: {again:?}");
    }
}
