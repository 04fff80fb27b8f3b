//! `index/writer.redb`: the writer's dedupe and idempotency indexes.
//!
//! - `dedupe`: SHA-256 (32 bytes) -> seq of the first event with that image.
//! - `idempotency`: `"<camera> <key>"` -> seq of the event that answered it (neither part
//!   contains a space). The answer itself is re-read from git, which is the source of truth.
//! - `meta`: `applied_seq` and `applied_id`, the last event folded in, so a restart only
//!   catches up the events after it, and a rewritten history (id mismatch) forces a rebuild.
//!
//! Batches commit with `Durability::None` and every [`DURABLE_EVERY`]-th with `Immediate`:
//! the index is derived from git, so losing recent commits in a crash only means catching up
//! a few events from git on the next start. This keeps redb's own fsyncs (which do not go
//! through `durable::Fsync`) off the acknowledgement path.

use std::path::Path;

use gix::ObjectId;
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};

const DEDUPE: TableDefinition<&[u8], u64> = TableDefinition::new("dedupe");
const IDEMPOTENCY: TableDefinition<&str, u64> = TableDefinition::new("idempotency");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const DURABLE_EVERY: u32 = 32;

pub(crate) struct WriterIndex {
    db: Database,
}

fn idem_key(camera: &str, key: &str) -> String {
    format!("{camera} {key}")
}

/// What one batch adds to the index.
#[derive(Default)]
pub(crate) struct BatchUpdate {
    pub(crate) originals: Vec<([u8; 32], u64)>,
    pub(crate) keys: Vec<(String, String, u64)>,
    pub(crate) applied: Option<(u64, ObjectId)>,
}

impl WriterIndex {
    /// Opens the index; a file redb cannot open is moved aside and rebuilt from git.
    pub(crate) fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = match Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(redb::DatabaseError::DatabaseAlreadyOpen.into())
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "writer index unreadable; rebuilding it from git");
                let _ = std::fs::rename(path, path.with_extension("redb.broken"));
                Database::create(path)?
            }
        };
        let index = WriterIndex { db };
        let txn = index.db.begin_write()?;
        txn.open_table(DEDUPE)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(META)?;
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

    pub(crate) fn seq_for_key(&self, camera: &str, key: &str) -> Result<Option<u64>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(IDEMPOTENCY)?;
        Ok(table.get(idem_key(camera, key).as_str())?.map(|v| v.value()))
    }

    /// Empties all tables (history was rewritten under the index).
    pub(crate) fn clear(&self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        txn.delete_table(DEDUPE)?;
        txn.delete_table(IDEMPOTENCY)?;
        txn.delete_table(META)?;
        txn.open_table(DEDUPE)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(())
    }

    /// Applies one batch in one transaction. First writer wins for a SHA-256 (`insert` only
    /// when absent), so replaying an already-applied batch is harmless.
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
            for (camera, key, seq) in &update.keys {
                let k = idem_key(camera, key);
                if idem.get(k.as_str())?.is_none() {
                    idem.insert(k.as_str(), seq)?;
                }
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
