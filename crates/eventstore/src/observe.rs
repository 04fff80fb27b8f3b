//! What the write path reports for metrics, without this crate knowing any metrics library:
//! the binary gives [`LedgerConfig::observer`](crate::LedgerConfig::observer) an
//! [`Observer`] (camledger's Prometheus registry) and the ledger calls it as it works.

use std::time::Duration;

/// Told about the write path's work as it happens. Called on the writer's and the fsync
/// threads, between durable steps: implementations must be cheap and must never block (an
/// atomic increment, a histogram bucket).
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// One `fsync(2)` or `fdatasync(2)` of the write path returned (successfully or not).
    fn fsync(&self, took: Duration);

    /// The writer answered a batch of `requests` append requests, `took` after it started
    /// writing it (objects, pack, ref, indexes, every fsync).
    fn batch(&self, requests: usize, took: Duration);
}
