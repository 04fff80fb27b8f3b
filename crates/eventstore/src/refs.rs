//! Moving refs ourselves, durably: git's lock protocol (`<ref>.lock` created exclusively, so
//! stock git and we exclude each other), but the lock file is fsynced *before* it is renamed
//! over the ref, and the directory after. gix renames first and never fsyncs, so a power loss
//! right after its rename could leave an empty or torn ref, i.e. a ledger without a head.
//!
//! Compare-and-swap: the expected old value is checked while every lock of the edit is held,
//! so no other writer that follows the lock protocol can move a ref in between.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::durable::Fsync;

/// One ref to move from `expected` (`None`: must not exist) to `new`.
pub(crate) struct Edit<'a> {
    pub(crate) name: &'a str,
    pub(crate) new: ObjectId,
    pub(crate) expected: Option<ObjectId>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// `<ref>.lock` exists: another writer holds the ref (or a crash left the lock behind).
    #[error("{0} exists: the ref is locked by another writer")]
    Locked(PathBuf),
    /// The ref's value is not what the caller expected. Nothing was changed.
    #[error("{name} is {found:?}, expected {expected:?}")]
    Conflict { name: String, expected: Option<ObjectId>, found: Option<ObjectId> },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Removes its lock file when dropped before the rename (an error or a panic on the way).
struct Lock {
    path: PathBuf,
    held: bool,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.held {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Reads a ref's value: the loose file, else its line in `packed-refs`.
pub(crate) fn read(git_dir: &Path, name: &str) -> io::Result<Option<ObjectId>> {
    match fs::read_to_string(git_dir.join(name)) {
        Ok(text) => {
            let text = text.trim_end();
            if text.starts_with("ref:") {
                return Err(io::Error::other(format!("{name} is a symbolic ref")));
            }
            return ObjectId::from_hex(text.as_bytes())
                .map(Some)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("{name} holds {text:?}")));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let packed = match fs::read_to_string(git_dir.join("packed-refs")) {
        Ok(packed) => packed,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for line in packed.lines() {
        if let Some((hex, ref_name)) = line.split_once(' ') {
            if ref_name == name {
                return ObjectId::from_hex(hex.as_bytes())
                    .map(Some)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("packed-refs: {line:?}")));
            }
        }
    }
    Ok(None)
}

/// Moves every ref of `edits` (in order) if all of them still hold their expected values:
/// lock all and write each lock file, then `sync_locks` with all lock files (the caller fsyncs
/// them, possibly alongside its own fsyncs that must complete before any ref moves), check the
/// old values, rename each into place, then `sync_dirs` with the refs' directories. On `Err`
/// before the first rename nothing changed; `Conflict` is always returned before it.
pub(crate) fn update(
    git_dir: &Path,
    edits: &[Edit<'_>],
    fsync: &Fsync,
    sync_locks: impl FnOnce(&[&File]) -> io::Result<()>,
    sync_dirs: impl FnOnce(&[PathBuf]) -> io::Result<()>,
) -> Result<(), Error> {
    let mut locks = Vec::with_capacity(edits.len());
    for edit in edits {
        let path = git_dir.join(edit.name);
        let dir = path.parent().ok_or_else(|| io::Error::other("ref without a directory"))?.to_owned();
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            if let Some(up) = dir.parent() {
                fsync.dir(up)?;
            }
        }
        let lock = lock_path(&path);
        let mut file = match File::options().write(true).create_new(true).open(&lock) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(Error::Locked(lock)),
            Err(e) => return Err(e.into()),
        };
        let guard = Lock { path: lock, held: true };
        file.write_all(format!("{}\n", edit.new).as_bytes())?;
        locks.push((guard, file, path, dir));
    }
    sync_locks(&locks.iter().map(|(_, file, _, _)| file).collect::<Vec<_>>())?;
    for edit in edits {
        let found = read(git_dir, edit.name)?;
        if found != edit.expected {
            return Err(Error::Conflict { name: edit.name.to_owned(), expected: edit.expected, found });
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (lock, _, path, dir) in &mut locks {
        fs::rename(&lock.path, &*path)?;
        lock.held = false;
        if !dirs.contains(dir) {
            dirs.push(dir.clone());
        }
    }
    sync_dirs(&dirs)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes_or_panic(&[n; 20])
    }

    fn move_ref(git_dir: &Path, new: ObjectId, expected: Option<ObjectId>, fsync: &Fsync) -> Result<(), Error> {
        let edit = Edit { name: "refs/heads/events", new, expected };
        update(
            git_dir,
            &[edit],
            fsync,
            |locks| locks.iter().try_for_each(|l| fsync.file(l)),
            |dirs| dirs.iter().try_for_each(|d| fsync.dir(d)),
        )
    }

    #[test]
    fn a_ref_is_not_renamed_into_place_before_its_fsync_succeeded() {
        let dir = tempfile::tempdir().expect("temp dir");
        move_ref(dir.path(), id(1), None, &Fsync::new(None)).expect("first value");
        // The first fsync of an update is the lock file's: it fails, nothing may move.
        let failing = Fsync::new(Some(0));
        assert!(matches!(move_ref(dir.path(), id(2), Some(id(1)), &failing), Err(Error::Io(_))));
        assert_eq!(read(dir.path(), "refs/heads/events").expect("read"), Some(id(1)));
        assert!(!dir.path().join("refs/heads/events.lock").exists(), "the lock is removed");
    }

    #[test]
    fn a_stale_expectation_is_a_conflict_and_a_held_lock_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fsync = Fsync::new(None);
        move_ref(dir.path(), id(1), None, &fsync).expect("first value");
        let stale = move_ref(dir.path(), id(3), Some(id(2)), &fsync);
        assert!(matches!(stale, Err(Error::Conflict { found: Some(f), .. }) if f == id(1)), "{stale:?}");
        assert!(matches!(move_ref(dir.path(), id(3), None, &fsync), Err(Error::Conflict { .. })));
        std::fs::write(dir.path().join("refs/heads/events.lock"), "").expect("someone's lock");
        assert!(matches!(move_ref(dir.path(), id(3), Some(id(1)), &fsync), Err(Error::Locked(_))));
        std::fs::remove_file(dir.path().join("refs/heads/events.lock")).expect("unlock");
        move_ref(dir.path(), id(3), Some(id(1)), &fsync).expect("moves");
        assert_eq!(read(dir.path(), "refs/heads/events").expect("read"), Some(id(3)));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("refs/heads/events")).expect("file"),
            format!("{}\n", id(3))
        );
    }

    #[test]
    fn a_packed_ref_is_read_and_replaced_by_a_loose_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("packed-refs"),
            format!("# pack-refs with: peeled\n{} refs/heads/events\n", id(5)),
        )
        .expect("packed-refs");
        let fsync = Fsync::new(None);
        assert_eq!(read(dir.path(), "refs/heads/events").expect("read"), Some(id(5)));
        move_ref(dir.path(), id(6), Some(id(5)), &fsync).expect("moves");
        assert_eq!(read(dir.path(), "refs/heads/events").expect("read"), Some(id(6)));
    }
}
