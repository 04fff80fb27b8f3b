//! What a crash leaves in the repository, removed by the process that owns it.
//!
//! A SIGKILL can leave `refs/heads/events.lock` (every later append then fails on the lock:
//! observed as 503 on every upload across restarts), `tmp_pack_*` files, and a `.pack` renamed
//! into place whose `.idx` never was. The event writer holds `events.lock` in the data dir, so
//! nobody else writes `refs/heads/events` or batch packs: at start it removes those leftovers.
//! Verdict writers (processor workers, possibly in other processes) write packs and their own
//! refs too; they hold [`GIT_WRITERS_LOCK`] (an flock, released by the kernel when a process
//! dies) while they do, so leftovers found while holding it exclusively are surely stale.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// `<data_dir>/git-writers.lock`: held (flock) by every writer of packs or refs other than the
/// event writer while it writes, and taken by the event writer's start to clean up.
pub(crate) const GIT_WRITERS_LOCK: &str = "git-writers.lock";

/// Git's temporary files without a pid in their name: removed once older than this, in case
/// an operator's stock git is writing right now.
const FOREIGN_TEMP_AGE: Duration = Duration::from_secs(3600);

pub(crate) fn git_writers_lock(data_dir: &Path) -> std::io::Result<File> {
    File::options().create(true).truncate(false).write(true).open(data_dir.join(GIT_WRITERS_LOCK))
}

/// Takes the git-writers lock exclusively, waiting at most `patience`.
fn try_exclusive(data_dir: &Path, patience: Duration) -> Option<File> {
    let file = git_writers_lock(data_dir).ok()?;
    let deadline = Instant::now() + patience;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
}

fn remove(path: &Path, what: &'static str) -> bool {
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::warn!(file = %path.display(), what, "removed a file left behind by a crash");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, what, "could not remove a crash leftover");
            false
        }
    }
}

fn ref_locks(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            ref_locks(&path, out);
        } else if path.extension().is_some_and(|e| e == "lock") {
            out.push(path);
        }
    }
}

/// The pid in our temporary names (`tmp_pack_<pid>_<n>`, `tmp_idx_<pid>_<n>`), if any.
fn pid_of(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("tmp_pack_").or_else(|| name.strip_prefix("tmp_idx_"))?;
    rest.split('_').next()?.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes crash leftovers; called by the event writer's start while it holds `events.lock`
/// and before its consolidation thread runs. Returns how many files it removed.
pub(crate) fn remove_crash_leftovers(data_dir: &Path, git_dir: &Path) -> usize {
    let mut removed = 0;
    // Ours alone: the event writer is the only writer of this ref.
    removed += usize::from(remove(&git_dir.join("refs/heads/events.lock"), "ref lock"));
    // Verdict writers write only while holding the git-writers lock: a few milliseconds.
    let exclusive = try_exclusive(data_dir, Duration::from_secs(2));
    if exclusive.is_none() {
        tracing::warn!("a verdict writer holds git-writers.lock; only the event writer's own leftovers are removed");
    }
    if exclusive.is_some() {
        let mut locks = Vec::new();
        ref_locks(&git_dir.join("refs"), &mut locks);
        locks.push(git_dir.join("packed-refs.lock"));
        for lock in locks {
            removed += usize::from(remove(&lock, "ref lock"));
        }
    }
    let pack_dir = git_dir.join("objects").join("pack");
    let Ok(entries) = fs::read_dir(&pack_dir) else { return removed };
    let old = SystemTime::now() - FOREIGN_TEMP_AGE;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let is_old = || entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < old);
        if name.starts_with("tmp_") || name.starts_with(".tmp") {
            // Ours carry the writer's pid: with the lock held no camledger writer is active;
            // without it, only a dead process's files are surely stale.
            let stale = match pid_of(&name) {
                Some(pid) => exclusive.is_some() || !pid_alive(pid) || is_old(),
                None => is_old(),
            };
            if stale {
                removed += usize::from(remove(&path, "temporary pack file"));
            }
        } else if name.starts_with("pack-") {
            // A pack is renamed into place before its index: a crash in between leaves a pack
            // nothing refers to. An index whose pack is gone is the end of a removal.
            let orphan = match path.extension().and_then(|e| e.to_str()) {
                Some("pack") => !path.with_extension("idx").exists(),
                Some("idx") => !path.with_extension("pack").exists(),
                _ => false,
            };
            if orphan && exclusive.is_some() {
                removed += usize::from(remove(&path, "pack without its index"));
            }
        }
    }
    removed
}
