//! The anchor store: signed checkpoints of ledgers (`camledger_eventstore::checkpoint`) in a
//! SQL database outside the repository — MariaDB in production (on another machine), SQLite
//! for a single box. Table `checkpoints` (schema/*/20261203120000_checkpoints.sql).
//!
//! Trust: the database is trusted to keep rows, not to tell the truth. Every row read is
//! parsed strictly, compared with its columns and (given the allowed signers) its signature
//! checked; a row that fails is reported as tampered, never used. [`AnchorStore::append`]
//! refuses a checkpoint that does not extend the latest one of its origin, checked in one
//! transaction with that row locked (`SELECT … FOR UPDATE` on MariaDB; SQLite's single
//! writer makes the transaction fail instead of interleaving).

use camledger_eventstore::checkpoint::{self, AnchoredError, AnchoredReport, Checkpoint, Mismatch, NoteError};
use camledger_eventstore::sign::AllowedSigners;
use camledger_eventstore::Ledger;
use sqlx::Row as _;
use tracing::instrument;

use crate::db::Tx;
use crate::{connect, Store};

/// One checkpoint as stored: its row id, the parsed checkpoint and the note text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub id: i64,
    pub checkpoint: Checkpoint,
    /// The signed note, exactly as stored (what auditors check).
    pub note: String,
    /// When the row was written (milliseconds since the epoch).
    pub created_at_ms: i64,
}

/// Why the anchor store refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The store cannot be reached or migrated. Fatal at start-up.
    #[error("cannot open the anchor store: {}", connect_cause(.0))]
    Connect(connect::Error),
    /// A query failed. Retry later.
    #[error("anchor store query failed")]
    Database(#[source] sqlx::Error),
    /// A stored row does not parse, disagrees with its columns or its signature does not
    /// verify: someone wrote into the anchor store. Never used; an operator must look.
    #[error("anchor store row {id} is not a valid checkpoint: {what}")]
    Tampered { id: i64, what: String },
    /// The note to append is malformed or not signed by an allowed key.
    #[error("the new checkpoint is not valid: {0}")]
    InvalidNote(#[source] NoteError),
    /// The new checkpoint does not extend the latest stored one for its origin (the ledger
    /// was rolled back or rewritten since). Refused; an operator must look.
    #[error(
        "refusing to anchor a checkpoint that does not extend the previous one: the new checkpoint has \
         events seq {} head {}, verdicts seq {} head {}; the previous (row {previous_id}, {}) has events seq {} \
         head {}, verdicts seq {} head {}: {source}",
        new.events_seq, new.events_head, new.verdicts_seq, new.verdicts_head, previous.time_text(),
        previous.events_seq, previous.events_head, previous.verdicts_seq, previous.verdicts_head
    )]
    NotExtending {
        previous_id: i64,
        previous: Box<Checkpoint>,
        new: Box<Checkpoint>,
        #[source]
        source: Box<Mismatch>,
    },
    /// Verification: the store holds checkpoints of several ledgers and none was named.
    #[error("the anchor store holds checkpoints of several ledgers ({0}); name the origin")]
    AmbiguousOrigin(String),
    /// Verification: the anchored checkpoints and the ledger disagree (see the source).
    #[error(transparent)]
    Anchored(#[from] AnchoredError),
    /// The blocking ledger check panicked.
    #[error("the ledger check panicked")]
    Panicked,
}

/// A connection to the anchor store (cheap to clone).
#[derive(Clone, Debug)]
pub struct AnchorStore {
    store: Store,
}

/// The columns every query reads (a macro: sqlx takes literal SQL only).
macro_rules! columns {
    () => {
        "id, origin, events_seq, events_head, verdicts_seq, verdicts_head, time, note, created_at_ms"
    };
}

/// The raw columns of one row.
struct Row {
    id: i64,
    origin: String,
    events_seq: i64,
    events_head: String,
    verdicts_seq: i64,
    verdicts_head: String,
    time: String,
    note: String,
    created_at_ms: i64,
}

macro_rules! row_from {
    ($row:expr) => {{
        let row = $row;
        Row {
            id: row.try_get("id")?,
            origin: row.try_get("origin")?,
            events_seq: row.try_get("events_seq")?,
            events_head: row.try_get("events_head")?,
            verdicts_seq: row.try_get("verdicts_seq")?,
            verdicts_head: row.try_get("verdicts_head")?,
            time: row.try_get("time")?,
            note: row.try_get("note")?,
            created_at_ms: row.try_get("created_at_ms")?,
        }
    }};
}

impl Row {
    /// Parses the note strictly, checks its signature (when `signers` is given) and that the
    /// columns say what the note says.
    fn check(self, signers: Option<&AllowedSigners>) -> Result<StoredCheckpoint, AnchorError> {
        let tampered = |what: String| AnchorError::Tampered { id: self.id, what };
        let checkpoint = match signers {
            Some(signers) => Checkpoint::verify_note(&self.note, signers),
            None => Checkpoint::parse_note(&self.note).map(|(c, _)| c),
        }
        .map_err(|e| tampered(e.to_string()))?;
        let columns = (
            self.origin.as_str(),
            self.events_seq,
            self.events_head.as_str(),
            self.verdicts_seq,
            self.verdicts_head.as_str(),
            self.time.as_str(),
        );
        let from_note = (
            checkpoint.origin.as_str(),
            i64::try_from(checkpoint.events_seq).unwrap_or(-1),
            checkpoint.events_head.as_str(),
            i64::try_from(checkpoint.verdicts_seq).unwrap_or(-1),
            checkpoint.verdicts_head.as_str(),
            checkpoint.time_text(),
        );
        if columns != (from_note.0, from_note.1, from_note.2, from_note.3, from_note.4, from_note.5.as_str()) {
            return Err(tampered(format!("its columns {columns:?} disagree with its signed note {from_note:?}")));
        }
        Ok(StoredCheckpoint { id: self.id, checkpoint, note: self.note, created_at_ms: self.created_at_ms })
    }
}

/// The cause of a failed connect without `connect::Error`'s "snapshot database" wording.
fn connect_cause(e: &connect::Error) -> String {
    match e {
        // sqlx's message already carries its cause.
        connect::Error::Unreachable(source) => source.to_string(),
        connect::Error::TimedOut { after } => format!("no answer within {after:?}"),
        other => crate::error_chain(other),
    }
}

fn db(e: sqlx::Error) -> AnchorError {
    AnchorError::Database(e)
}

fn seq(value: u64) -> Result<i64, AnchorError> {
    i64::try_from(value).map_err(|e| AnchorError::Database(sqlx::Error::Encode(Box::new(e))))
}

impl AnchorStore {
    /// Connects to `url` (`mysql://…` or `sqlite://…`; a missing SQLite file is created) and
    /// applies the schema migrations. A MariaDB server that does not answer fails in 2 s.
    #[instrument(skip_all)]
    pub async fn connect(url: &str) -> Result<AnchorStore, AnchorError> {
        Ok(AnchorStore { store: Store::connect(url).await.map_err(AnchorError::Connect)? })
    }

    pub async fn close(&self) {
        self.store.close().await;
    }

    /// The latest checkpoint of `origin`, checked; `None` when there is none.
    #[instrument(skip_all, fields(origin))]
    pub async fn latest(
        &self,
        origin: &str,
        signers: Option<&AllowedSigners>,
    ) -> Result<Option<StoredCheckpoint>, AnchorError> {
        let sql = concat!("SELECT ", columns!(), " FROM checkpoints WHERE origin = ? ORDER BY id DESC LIMIT 1");
        let mut tx = self.store.begin().await.map_err(db)?;
        let row = on_tx!(&mut tx, tx => {
            match sqlx::query(sql).bind(origin).fetch_optional(&mut **tx).await.map_err(db)? {
                Some(row) => Some((|| Ok::<_, sqlx::Error>(row_from!(row)))().map_err(db)?),
                None => None,
            }
        });
        tx.commit().await.map_err(db)?;
        row.map(|r| r.check(signers)).transpose()
    }

    /// Every checkpoint (of `origin`, or of all origins), oldest first, each checked.
    #[instrument(skip_all, fields(origin))]
    pub async fn list(
        &self,
        origin: Option<&str>,
        signers: Option<&AllowedSigners>,
    ) -> Result<Vec<StoredCheckpoint>, AnchorError> {
        let sql = match origin {
            Some(_) => concat!("SELECT ", columns!(), " FROM checkpoints WHERE origin = ? ORDER BY id"),
            None => concat!("SELECT ", columns!(), " FROM checkpoints ORDER BY id"),
        };
        let mut tx = self.store.begin().await.map_err(db)?;
        let rows = on_tx!(&mut tx, tx => {
            let mut query = sqlx::query(sql);
            if let Some(origin) = origin {
                query = query.bind(origin);
            }
            let mut rows = Vec::new();
            for row in query.fetch_all(&mut **tx).await.map_err(db)? {
                rows.push((|| Ok::<_, sqlx::Error>(row_from!(row)))().map_err(db)?);
            }
            rows
        });
        tx.commit().await.map_err(db)?;
        rows.into_iter().map(|r| r.check(signers)).collect()
    }

    /// The origins that have checkpoints, sorted.
    pub async fn origins(&self) -> Result<Vec<String>, AnchorError> {
        let sql = "SELECT DISTINCT origin FROM checkpoints ORDER BY origin";
        let mut tx = self.store.begin().await.map_err(db)?;
        let origins = on_tx!(&mut tx, tx => {
            let mut out = Vec::new();
            for row in sqlx::query(sql).fetch_all(&mut **tx).await.map_err(db)? {
                out.push(row.try_get::<String, _>("origin").map_err(db)?);
            }
            out
        });
        tx.commit().await.map_err(db)?;
        Ok(origins)
    }

    /// Stores `note` after checking it: it verifies with `signers`, and it extends the latest
    /// stored checkpoint of its origin on `ledger` (seqs and time not going back, the earlier
    /// heads on the ledger's chains). Checked and written in one transaction with the latest
    /// row locked, so two writers cannot both extend the same row differently.
    #[instrument(skip_all)]
    pub async fn append(
        &self,
        note: &str,
        ledger: &Ledger,
        signers: &AllowedSigners,
    ) -> Result<StoredCheckpoint, AnchorError> {
        let new = Checkpoint::verify_note(note, signers).map_err(AnchorError::InvalidNote)?;
        tracing::Span::current().record("origin", new.origin.as_str());
        let mut tx = self.store.begin().await.map_err(db)?;
        match Self::append_locked(&mut tx, new, note, ledger, signers).await {
            Ok(stored) => {
                tx.commit().await.map_err(db)?;
                tracing::info!(
                    id = stored.id,
                    origin = %stored.checkpoint.origin,
                    events_seq = stored.checkpoint.events_seq,
                    verdicts_seq = stored.checkpoint.verdicts_seq,
                    "anchored a checkpoint"
                );
                Ok(stored)
            }
            Err(refused) => {
                // Release the latest row's lock before returning, not when the pool next
                // reuses this connection: another writer (or an operator) may be waiting on it.
                if let Err(error) = tx.rollback().await {
                    tracing::warn!(%error, "rolling back a refused checkpoint failed");
                }
                Err(refused)
            }
        }
    }

    /// `append`'s checks and insert inside `tx`, which the caller commits or rolls back.
    async fn append_locked(
        tx: &mut Tx,
        new: Checkpoint,
        note: &str,
        ledger: &Ledger,
        signers: &AllowedSigners,
    ) -> Result<StoredCheckpoint, AnchorError> {
        // The latest row of this origin, locked on MariaDB (SQLite's one writer needs no lock).
        macro_rules! latest {
            ($tx:expr, $lock:literal) => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM checkpoints WHERE origin = ? ORDER BY id DESC LIMIT 1",
                    $lock
                ))
                .bind(&new.origin)
                .fetch_optional(&mut **$tx)
                .await
                .map_err(db)?
                .map(|row| (|| Ok::<_, sqlx::Error>(row_from!(row)))())
                .transpose()
                .map_err(db)?
            };
        }
        let previous = match tx {
            Tx::MySql(tx) => latest!(tx, " FOR UPDATE"),
            Tx::Sqlite(tx) => latest!(tx, ""),
        };
        if let Some(previous) = previous {
            let previous = previous.check(Some(signers))?;
            let (ledger, candidate, before) = (ledger.clone(), new.clone(), previous.checkpoint.clone());
            let extends = tokio::task::spawn_blocking(move || candidate.extends(&before, &ledger))
                .await
                .map_err(|_| AnchorError::Panicked)?;
            if let Err(source) = extends {
                return Err(AnchorError::NotExtending {
                    previous_id: previous.id,
                    previous: Box::new(previous.checkpoint),
                    new: Box::new(new),
                    source: Box::new(source),
                });
            }
        }
        let created_at_ms = i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis(),
        )
        .unwrap_or(i64::MAX);
        let insert = "INSERT INTO checkpoints \
                      (origin, events_seq, events_head, verdicts_seq, verdicts_head, time, note, created_at_ms) \
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
        let (events_seq, verdicts_seq, time) = (seq(new.events_seq)?, seq(new.verdicts_seq)?, new.time_text());
        // The same statement and binds on either backend (their query types differ).
        macro_rules! insert {
            ($tx:expr) => {
                sqlx::query(insert)
                    .bind(&new.origin)
                    .bind(events_seq)
                    .bind(&new.events_head)
                    .bind(verdicts_seq)
                    .bind(&new.verdicts_head)
                    .bind(&time)
                    .bind(note)
                    .bind(created_at_ms)
                    .execute(&mut **$tx)
                    .await
                    .map_err(db)?
            };
        }
        let id = match tx {
            Tx::MySql(tx) => i64::try_from(insert!(tx).last_insert_id()).unwrap_or(i64::MAX),
            Tx::Sqlite(tx) => insert!(tx).last_insert_rowid(),
        };
        Ok(StoredCheckpoint { id, checkpoint: new, note: note.to_owned(), created_at_ms })
    }
}

/// The anchor rule of `camledger verify --anchor-url` and `camledger checkpoints verify`:
/// every checkpoint of the ledger's origin in `store` is read and checked (row, signature by
/// a key in `signers` valid at its time), each extends the one before, their heads are on
/// the ledger's chains at their seqs and the ledger is not behind the latest
/// ([`checkpoint::verify_anchored`]).
///
/// `origin`: `camledger/<node_name>`; `None` takes the only origin in the store (and
/// fails when there are several). A store without checkpoints for it passes with 0.
pub async fn verify_ledger(
    store: &AnchorStore,
    ledger: &Ledger,
    signers: &AllowedSigners,
    origin: Option<&str>,
) -> Result<AnchoredReport, AnchorError> {
    let origin = match origin {
        Some(origin) => origin.to_owned(),
        None => {
            let origins = store.origins().await?;
            match origins.as_slice() {
                [] => return Ok(AnchoredReport { checkpoints: 0, latest: None }),
                [one] => one.clone(),
                _ => return Err(AnchorError::AmbiguousOrigin(origins.join(", "))),
            }
        }
    };
    let notes: Vec<String> =
        store.list(Some(&origin), Some(signers)).await?.into_iter().map(|stored| stored.note).collect();
    let (ledger, signers) = (ledger.clone(), signers.clone());
    tokio::task::spawn_blocking(move || checkpoint::verify_anchored(&ledger, &notes, &signers))
        .await
        .map_err(|_| AnchorError::Panicked)?
        .map_err(AnchorError::Anchored)
}
