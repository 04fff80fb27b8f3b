//! `index/writer.redb`: the writer's dedupe and idempotency indexes.
//!
//! - `dedupe`: SHA-256 (32 bytes) -> seq of the first event with that image.
//! - `idempotency_v2`: `"<camera> <key>"` -> (seq of the event that answered it, when the key
//!   was stored, Unix seconds); neither part contains a space. The answer itself is re-read
//!   from git, which is the source of truth. A key answers only within the retention
//!   (`LedgerConfig::idempotency_retention`); `idempotency_by_time` (time, key) lets expired
//!   keys be purged in bounded batches off the append path, so the table stays bounded by
//!   the uploads of one retention period instead of growing forever. The `Idempotency-Key`
//!   trailer in git stays: only the index forgets.
//! - `meta`: `applied_seq` and `applied_id`, the last event folded in, so a restart only
//!   catches up the events after it, and a rewritten history (id mismatch) forces a rebuild.
//!
//! Batches commit with `Durability::None` and every [`DURABLE_EVERY`]-th with `Immediate`:
//! the index is derived from git, so losing recent commits in a crash only means catching up
//! a few events from git on the next start. This keeps redb's own fsyncs (which do not go
//! through `durable::Fsync`) off the acknowledgement path.

use std::path::Path;

use gix::ObjectId;
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition, TableHandle as _};

const DEDUPE: TableDefinition<&[u8], u64> = TableDefinition::new("dedupe");
/// Before retention: key -> seq. Migrated into [`IDEMPOTENCY`] (stored now) on open.
const IDEMPOTENCY_V1: TableDefinition<&str, u64> = TableDefinition::new("idempotency");
const IDEMPOTENCY: TableDefinition<&str, (u64, u64)> = TableDefinition::new("idempotency_v2");
const IDEMPOTENCY_BY_TIME: TableDefinition<(u64, &str), ()> = TableDefinition::new("idempotency_by_time");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const DURABLE_EVERY: u32 = 32;

pub(crate) struct WriterIndex {
    db: Database,
    /// Keys older than this many seconds no longer answer and are purged.
    retention: u64,
}

fn idem_key(camera: &str, key: &str) -> String {
    format!("{camera} {key}")
}

/// What one batch adds to the index.
#[derive(Default)]
pub(crate) struct BatchUpdate {
    pub(crate) originals: Vec<([u8; 32], u64)>,
    /// Camera, key, seq, when the key was first used (Unix seconds).
    pub(crate) keys: Vec<(String, String, u64, u64)>,
    pub(crate) applied: Option<(u64, ObjectId)>,
}

/// redb's page cache, in memory. Its default (1 GiB) grows with the index, one entry per
/// event, so a long-running server's RSS grew without bound (`bench soak`: +4 MiB a minute at
/// 700 events/s); past this cap lookups fall back to the kernel's page cache.
const CACHE_BYTES: usize = 32 << 20;

fn create(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

impl WriterIndex {
    /// Opens the index; a file redb cannot open is moved aside and rebuilt from git.
    pub(crate) fn open(path: &Path, retention: std::time::Duration) -> Result<Self, redb::Error> {
        let db = match create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(redb::DatabaseError::DatabaseAlreadyOpen.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "writer index unreadable; rebuilding it from git");
                let _ = std::fs::rename(path, path.with_extension("redb.broken"));
                create(path)?
            }
        };
        let index = WriterIndex { db, retention: retention.as_secs() };
        let txn = index.db.begin_write()?;
        txn.open_table(DEDUPE)?;
        txn.open_table(META)?;
        let v1 = txn.list_tables()?.any(|t| t.name() == IDEMPOTENCY_V1.name());
        {
            let mut idem = txn.open_table(IDEMPOTENCY)?;
            let mut by_time = txn.open_table(IDEMPOTENCY_BY_TIME)?;
            if v1 {
                // Keys of a ledger written before retention existed: their age is unknown, so
                // they count from now (they answer for one more retention, then go).
                let now = unix_now();
                let old = txn.open_table(IDEMPOTENCY_V1)?;
                for row in old.iter()? {
                    let (key, seq) = row?;
                    idem.insert(key.value(), (seq.value(), now))?;
                    by_time.insert((now, key.value()), ())?;
                }
            }
        }
        if v1 {
            txn.delete_table(IDEMPOTENCY_V1)?;
        }
        txn.commit()?;
        Ok(index)
    }

    pub(crate) fn applied(&self) -> Result<(u64, Option<ObjectId>), redb::Error> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let seq = meta.get("applied_seq")?.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0);
        let id = meta.get("applied_id")?.and_then(|v| ObjectId::try_from(v.value()).ok());
        Ok((seq, id))
    }

    pub(crate) fn first_seq_of(&self, sha256: &[u8; 32]) -> Result<Option<u64>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEDUPE)?;
        Ok(table.get(sha256.as_slice())?.map(|v| v.value()))
    }

    /// Whether a key stored at `stored` (Unix seconds) still answers at `now`.
    fn live(&self, stored: u64, now: u64) -> bool {
        now < stored.saturating_add(self.retention)
    }

    /// The seq that answered this camera's key, if it did within the retention.
    pub(crate) fn seq_for_key(&self, camera: &str, key: &str, now: u64) -> Result<Option<u64>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IDEMPOTENCY)?;
        let found = table.get(idem_key(camera, key).as_str())?.map(|v| v.value());
        Ok(found.filter(|&(_, stored)| self.live(stored, now)).map(|(seq, _)| seq))
    }

    /// Whether a key stored at `stored` should be indexed at all (catching up from git).
    pub(crate) fn retains(&self, stored: u64, now: u64) -> bool {
        self.live(stored, now)
    }

    /// Removes up to `limit` keys that expired before `now`, in one short transaction (the
    /// writer's transactions wait for it, so it is kept small). Returns how many went.
    pub(crate) fn purge_expired(&self, now: u64, limit: usize) -> Result<usize, redb::Error> {
        let cutoff = now.saturating_sub(self.retention);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        let mut purged = 0;
        {
            let mut by_time = txn.open_table(IDEMPOTENCY_BY_TIME)?;
            let mut idem = txn.open_table(IDEMPOTENCY)?;
            let expired: Vec<(u64, String)> = by_time
                .range::<(u64, &str)>(..(cutoff, ""))?
                .take(limit)
                .map(|row| row.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
                .collect::<Result<_, _>>()?;
            for (stored, key) in expired {
                by_time.remove((stored, key.as_str()))?;
                // The key may have been used again since (after expiring): keep the new one.
                let current = idem.get(key.as_str())?.map(|v| v.value());
                if current.is_some_and(|(_, t)| t == stored) {
                    idem.remove(key.as_str())?;
                }
                purged += 1;
            }
        }
        txn.commit()?;
        Ok(purged)
    }

    /// Number of idempotency keys held (for tests).
    #[cfg(test)]
    fn key_count(&self) -> u64 {
        use redb::ReadableTableMetadata as _;
        let txn = self.db.begin_read().expect("read");
        txn.open_table(IDEMPOTENCY).expect("table").len().expect("len")
    }

    /// Empties all tables (history was rewritten under the index).
    pub(crate) fn clear(&self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        txn.delete_table(DEDUPE)?;
        txn.delete_table(IDEMPOTENCY)?;
        txn.delete_table(IDEMPOTENCY_BY_TIME)?;
        txn.delete_table(META)?;
        txn.open_table(DEDUPE)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(IDEMPOTENCY_BY_TIME)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    /// Applies one batch in one transaction. First writer wins for a SHA-256 (`insert` only
    /// when absent) and for a live key, so replaying an already-applied batch is harmless.
    /// A key used again after it expired answers for its new event from then on.
    pub(crate) fn apply(&self, update: &BatchUpdate, durable: bool) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        {
            let mut dedupe = txn.open_table(DEDUPE)?;
            for (digest, seq) in &update.originals {
                if dedupe.get(digest.as_slice())?.is_none() {
                    dedupe.insert(digest.as_slice(), seq)?;
                }
            }
            let mut idem = txn.open_table(IDEMPOTENCY)?;
            let mut by_time = txn.open_table(IDEMPOTENCY_BY_TIME)?;
            for (camera, key, seq, stored) in &update.keys {
                let k = idem_key(camera, key);
                let existing = idem.get(k.as_str())?.map(|v| v.value());
                match existing {
                    Some((_, t)) if self.live(t, *stored) => continue,
                    Some((_, t)) => {
                        by_time.remove((t, k.as_str()))?;
                    }
                    None => {}
                }
                idem.insert(k.as_str(), (*seq, *stored))?;
                by_time.insert((*stored, k.as_str()), ())?;
            }
            if let Some((seq, id)) = update.applied {
                let mut meta = txn.open_table(META)?;
                meta.insert("applied_seq", seq.to_be_bytes().as_slice())?;
                meta.insert("applied_id", id.as_bytes())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_keys_stop_answering_and_are_purged_in_bounded_batches() {
        let dir = tempfile::tempdir().expect("temp dir");
        let index = WriterIndex::open(&dir.path().join("w.redb"), std::time::Duration::from_secs(100)).expect("opens");
        let keys = (0..25u64).map(|i| ("cam".to_owned(), format!("k{i}"), i + 1, 1_000 + i)).collect();
        index.apply(&BatchUpdate { keys, ..BatchUpdate::default() }, true).expect("apply");
        assert_eq!(index.seq_for_key("cam", "k0", 1_099).expect("read"), Some(1), "inside the window");
        assert_eq!(index.seq_for_key("cam", "k0", 1_100).expect("read"), None, "expired");
        // At 1_110, keys stored before 1_010 (k0..k9) are expired: purged 4 at a time.
        assert_eq!(index.purge_expired(1_110, 4).expect("purge"), 4);
        assert_eq!(index.purge_expired(1_110, 4).expect("purge"), 4);
        assert_eq!(index.purge_expired(1_110, 4).expect("purge"), 2);
        assert_eq!(index.purge_expired(1_110, 4).expect("purge"), 0);
        assert_eq!(index.key_count(), 15);
        // A key reused after it expired answers for its new event.
        let reuse = vec![("cam".to_owned(), "k20".to_owned(), 99, 1_200)];
        index.apply(&BatchUpdate { keys: reuse, ..BatchUpdate::default() }, true).expect("apply");
        assert_eq!(index.seq_for_key("cam", "k20", 1_201).expect("read"), Some(99));
        assert_eq!(index.purge_expired(1_250, 100).expect("purge"), 14, "k10..k24 but the reused k20 stays");
        assert_eq!(index.seq_for_key("cam", "k20", 1_250).expect("read"), Some(99));
    }
}
