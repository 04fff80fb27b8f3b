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
/// lock all, write and fsync each lock file, check the old values, rename each into place,
/// then `sync_dirs` with the refs' directories (the caller fsyncs them, possibly alongside its
/// own fsyncs). On `Err` before the first rename nothing changed.
pub(crate) fn update(
    git_dir: &Path,
    edits: &[Edit<'_>],
    fsync: &Fsync,
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
        fsync.file(&file)?;
        locks.push((guard, path, dir));
    }
    for edit in edits {
        let found = read(git_dir, edit.name)?;
        if found != edit.expected {
            return Err(Error::Conflict { name: edit.name.to_owned(), expected: edit.expected, found });
        }
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (lock, path, dir) in &mut locks {
        fs::rename(&lock.path, &*path)?;
        lock.held = false;
        if !dirs.contains(dir) {
            dirs.push(dir.clone());
        }
    }
    sync_dirs(&dirs)?;
    Ok(())
}
