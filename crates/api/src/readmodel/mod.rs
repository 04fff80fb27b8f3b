//! The read model: events and verdicts projected from git into SQL tables with the indexes
//! that search and stats need (`docs/design.md`, "A read model in SQL, rebuilt from git").
//!
//! - `sql`: the pool (embedded SQLite `<data-dir>/readmodel.sqlite` by default, MariaDB with
//!   `--read-model-url mysql://…`; migrations in `schema/readmodel/`), transactions and binds
//!   written once for both backends;
//! - [`project`]: the projector, following `refs/heads/events` and `refs/heads/verdicts` off
//!   the write path; each batch of rows and the last projected seq of each chain commit in one
//!   transaction behind a compare-and-swap on that seq (crash-safe, idempotent, and two
//!   projectors on one database never apply a batch twice);
//! - [`query`]: search, stats and export pages, answered from the tables alone.
//!
//! Git stays the record: everything here can be dropped and rebuilt (`camledger reindex`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify};

pub mod project;
pub mod query;
mod sql;

pub use query::{ExportRow, Filters, Page, Stats, StatsQuery};

/// File name of the embedded read model inside a data dir.
pub const READ_MODEL_FILE: &str = "readmodel.sqlite";

/// `sqlite://<data-dir>/readmodel.sqlite`: the read model when no `--read-model-url` is given.
pub fn default_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join(READ_MODEL_FILE).display())
}

/// How far the projection got: the last event and the last verdict (by event seq) in SQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Projected {
    pub events_seq: u64,
    pub verdicts_seq: u64,
}

impl Projected {
    /// Whether this covers `target` (both chains at least as far).
    pub fn covers(&self, target: Projected) -> bool {
        self.events_seq >= target.events_seq && self.verdicts_seq >= target.verdicts_seq
    }
}

/// Why a read-model operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be opened or migrated (or was migrated by a newer camledger).
    /// Fatal at start-up; CLI exit 1.
    #[error("cannot open the read model: {}", connect_cause(.0))]
    Connect(camledger_backup::connect::Error),
    /// A query or transaction failed. HTTP 503 (retry later); the projector logs it and
    /// retries after a pause.
    #[error("read model database error")]
    Database(#[from] sqlx::Error),
    /// Reading git for the projection failed. The projector logs it and retries.
    #[error("reading the ledger for the read model")]
    Read(#[from] camledger_eventstore::read::Error),
    /// A stored row does not parse (the tables were edited by hand): HTTP 500; run
    /// `camledger reindex`.
    #[error("read model row for seq {seq} is damaged ({what}); run camledger reindex")]
    Corrupt { seq: u64, what: String },
    /// A blocking git read panicked. HTTP 500.
    #[error("the projection's git read panicked")]
    Panicked,
}

/// The cause of a failed connect, without `connect::Error`'s "snapshot database" wording.
fn connect_cause(e: &camledger_backup::connect::Error) -> String {
    use camledger_backup::connect::Error as E;
    match e {
        E::UnsupportedUrl { scheme } => format!("unsupported URL scheme {scheme:?}: use mysql://… or sqlite://…"),
        E::Unreachable(source) => crate::error_chain::std_error_message(source),
        E::TimedOut { after } => format!("no answer within {after:?}"),
        E::NewerSchema { found, known } => {
            format!("it has schema migration {found}, newer than this binary knows (up to {known}); upgrade camledger")
        }
        E::Migrate(source) => {
            format!("applying the migrations failed: {}", crate::error_chain::std_error_message(source))
        }
    }
}

/// An open read model. Cheap to share (`Arc`); the projector task and the handlers hold it.
pub struct ReadModel {
    pool: sql::Pool,
    projected: watch::Sender<Projected>,
    wake: Notify,
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel").field("projected", &*self.projected.borrow()).finish()
    }
}

impl ReadModel {
    /// Opens (creating an embedded SQLite file when missing) and migrates the read model at
    /// `url`, and reads how far it got.
    pub async fn open(url: &str) -> Result<Arc<ReadModel>, Error> {
        let pool = sql::Pool::open(url).await?;
        let state = pool.state().await?;
        let (projected, _) = watch::channel(state);
        Ok(Arc::new(ReadModel { pool, projected, wake: Notify::new() }))
    }

    /// The read model of `data_dir`: `url` when given, else the embedded default.
    pub async fn open_for(data_dir: &Path, url: Option<&str>) -> Result<Arc<ReadModel>, Error> {
        match url {
            Some(url) => Self::open(url).await,
            None => Self::open(&default_url(data_dir)).await,
        }
    }

    /// How far the projection got, as last committed by this process (or read at open).
    pub fn projected(&self) -> Projected {
        *self.projected.borrow()
    }

    /// Follows how far the projection gets (the live feed waits on this).
    pub fn subscribe(&self) -> watch::Receiver<Projected> {
        self.projected.subscribe()
    }

    /// Wakes the projector now (instead of at its next poll).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the projector and waits until the projection covers `target` or `timeout`
    /// passes; returns how far it got either way.
    pub async fn wait_for(&self, target: Projected, timeout: Duration) -> Projected {
        let mut changes = self.projected.subscribe();
        if changes.borrow().covers(target) {
            return *changes.borrow();
        }
        self.wake();
        let reached = tokio::time::timeout(timeout, changes.wait_for(|p| p.covers(target))).await;
        match reached {
            Ok(Ok(p)) => *p,
            _ => self.projected(),
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
