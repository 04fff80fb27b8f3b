//! The snapshot catalog in SQL: one `Store` over either MariaDB or SQLite.
//!
//! Every query is written once and expanded for both backends by [`on_pool!`] /
//! [`on_tx!`]: the SQL text and the Rust code are identical, only the concrete sqlx
//! types differ, so the compiler checks each expansion against its own driver. This
//! avoids `sqlx::Any` (which loses BLOB/INTEGER typing) and a generic `Database`
//! bound soup.

use sqlx::{MySql, Row, Sqlite, Transaction};
use tracing::instrument;

use crate::connect;
use crate::pool::{Pool, PoolOptions};

static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../schema/mysql");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../schema/sqlite");

/// A connection pool to the snapshot catalog, migrated to this binary's schema.
///
/// Cheap to clone (the pools are reference counted).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

pub(crate) use crate::pool::Pool as Backend;

/// Run `$body` with `$pool` bound to the concrete pool of the store's backend.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::MySql($pool) => $body,
            $crate::db::Backend::Sqlite($pool) => $body,
        }
    };
}

/// Run `$body` with `$tx` bound to the concrete transaction.
macro_rules! on_tx {
    ($txn:expr, $tx:ident => $body:expr) => {
        match $txn {
            $crate::db::Tx::MySql($tx) => $body,
            $crate::db::Tx::Sqlite($tx) => $body,
        }
    };
}

/// A snapshot row as stored.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotRow {
    pub(crate) id: i64,
    pub(crate) parent_id: Option<i64>,
    pub(crate) created_at_ms: i64,
    pub(crate) manifest: String,
    pub(crate) objects: i64,
    pub(crate) raw_bytes: i64,
    pub(crate) stored_bytes: i64,
    pub(crate) events_head_seq: Option<i64>,
    /// HMAC of the row and its artifacts (see `key`); `None` for rows written before seals.
    pub(crate) seal: Option<String>,
}

/// One chunk as stored.
#[derive(Clone, Debug)]
pub(crate) struct ChunkRow {
    pub(crate) sha256: String,
    /// HMAC binding the chunk to its place (see `key`); `None` for rows written before seals.
    pub(crate) mac: Option<String>,
    pub(crate) bytes: Vec<u8>,
}

/// One artifact (`pack` or `state`) of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArtifactRow {
    pub(crate) artifact: String,
    pub(crate) chunks: i64,
    pub(crate) objects: i64,
    pub(crate) raw_bytes: i64,
    pub(crate) stored_bytes: i64,
    pub(crate) raw_sha256: String,
    pub(crate) stored_sha256: String,
}

macro_rules! snapshot_columns {
    () => {
        "id, parent_id, created_at_ms, manifest, objects, raw_bytes, stored_bytes, events_head_seq, seal"
    };
}

macro_rules! snapshot_from_row {
    ($row:expr) => {{
        let row = $row;
        SnapshotRow {
            id: row.try_get("id")?,
            parent_id: row.try_get("parent_id")?,
            created_at_ms: row.try_get("created_at_ms")?,
            manifest: row.try_get("manifest")?,
            objects: row.try_get("objects")?,
            raw_bytes: row.try_get("raw_bytes")?,
            stored_bytes: row.try_get("stored_bytes")?,
            events_head_seq: row.try_get("events_head_seq")?,
            seal: row.try_get("seal")?,
        }
    }};
}

impl Store {
    /// Connect to `url` (`mysql://…` or `sqlite://…`), apply the embedded migrations and
    /// refuse a database that has migrations this binary does not know.
    ///
    /// SQLite files are created when missing, so the embedded default
    /// `sqlite://<data-dir>/backups.sqlite` just works.
    #[instrument(skip_all, fields(backend))]
    pub async fn connect(url: &str) -> Result<Store, connect::Error> {
        let options = PoolOptions::default();
        let backend = Pool::open(url, options).await?;
        tracing::Span::current().record("backend", backend.backend());
        backend.migrate(&MYSQL_MIGRATIONS, &SQLITE_MIGRATIONS).await?;
        Ok(Store { backend })
    }

    /// Close the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    pub(crate) async fn latest_snapshot(&self) -> Result<Option<SnapshotRow>, sqlx::Error> {
        let sql = concat!("SELECT ", snapshot_columns!(), " FROM snapshots ORDER BY id DESC LIMIT 1");
        on_pool!(self, pool => {
            match sqlx::query(sql).fetch_optional(pool).await? {
                Some(row) => Ok(Some(snapshot_from_row!(row))),
                None => Ok(None),
            }
        })
    }

    pub(crate) async fn snapshots(&self) -> Result<Vec<SnapshotRow>, sqlx::Error> {
        let sql = concat!("SELECT ", snapshot_columns!(), " FROM snapshots ORDER BY id");
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(snapshot_from_row!(row));
            }
            Ok(out)
        })
    }

    pub(crate) async fn artifacts(&self, snapshot_id: i64) -> Result<Vec<ArtifactRow>, sqlx::Error> {
        let sql = "SELECT artifact, chunks, objects, raw_bytes, stored_bytes, raw_sha256, stored_sha256 \
                   FROM snapshot_artifacts WHERE snapshot_id = ? ORDER BY artifact";
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(snapshot_id).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                out.push(ArtifactRow {
                    artifact: row.try_get("artifact")?,
                    chunks: row.try_get("chunks")?,
                    objects: row.try_get("objects")?,
                    raw_bytes: row.try_get("raw_bytes")?,
                    stored_bytes: row.try_get("stored_bytes")?,
                    raw_sha256: row.try_get("raw_sha256")?,
                    stored_sha256: row.try_get("stored_sha256")?,
                });
            }
            Ok(out)
        })
    }

    /// One chunk row, `None` when it is missing.
    /// One query per chunk keeps at most one chunk in memory on both backends.
    pub(crate) async fn chunk(
        &self,
        snapshot_id: i64,
        artifact: &str,
        seq: i64,
    ) -> Result<Option<ChunkRow>, sqlx::Error> {
        let sql = "SELECT sha256, mac, bytes FROM snapshot_chunks \
                   WHERE snapshot_id = ? AND artifact = ? AND seq = ?";
        on_pool!(self, pool => {
            match sqlx::query(sql).bind(snapshot_id).bind(artifact).bind(seq).fetch_optional(pool).await? {
                Some(row) => Ok(Some(ChunkRow {
                    sha256: row.try_get("sha256")?,
                    mac: row.try_get("mac")?,
                    bytes: row.try_get("bytes")?,
                })),
                None => Ok(None),
            }
        })
    }

    pub(crate) async fn chunk_count(&self, snapshot_id: i64, artifact: &str) -> Result<i64, sqlx::Error> {
        let sql = "SELECT COUNT(*) AS n FROM snapshot_chunks WHERE snapshot_id = ? AND artifact = ?";
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(snapshot_id).bind(artifact).fetch_one(pool).await?;
            row.try_get("n")
        })
    }

    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.backend {
            Backend::MySql(pool) => Tx::MySql(pool.begin().await?),
            Backend::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
        })
    }
}

/// An open transaction on either backend. Dropping it without [`Tx::commit`] rolls back.
pub(crate) enum Tx {
    MySql(Transaction<'static, MySql>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub(crate) async fn insert_snapshot(
        &mut self,
        parent_id: Option<i64>,
        created_at_ms: i64,
        manifest: &str,
        events_head_seq: Option<i64>,
    ) -> Result<i64, sqlx::Error> {
        let sql = "INSERT INTO snapshots \
                   (parent_id, created_at_ms, manifest, objects, raw_bytes, stored_bytes, events_head_seq) \
                   VALUES (?, ?, ?, 0, 0, 0, ?)";
        match self {
            Tx::MySql(tx) => {
                let done = sqlx::query(sql)
                    .bind(parent_id)
                    .bind(created_at_ms)
                    .bind(manifest)
                    .bind(events_head_seq)
                    .execute(&mut **tx)
                    .await?;
                i64::try_from(done.last_insert_id()).map_err(|e| sqlx::Error::Decode(Box::new(e)))
            }
            Tx::Sqlite(tx) => {
                let done = sqlx::query(sql)
                    .bind(parent_id)
                    .bind(created_at_ms)
                    .bind(manifest)
                    .bind(events_head_seq)
                    .execute(&mut **tx)
                    .await?;
                Ok(done.last_insert_rowid())
            }
        }
    }

    pub(crate) async fn insert_chunk(
        &mut self,
        snapshot_id: i64,
        artifact: &str,
        seq: i64,
        sha256: &str,
        mac: &str,
        bytes: &[u8],
    ) -> Result<(), sqlx::Error> {
        let sql =
            "INSERT INTO snapshot_chunks (snapshot_id, artifact, seq, sha256, mac, bytes) VALUES (?, ?, ?, ?, ?, ?)";
        on_tx!(self, tx => {
            sqlx::query(sql)
                .bind(snapshot_id)
                .bind(artifact)
                .bind(seq)
                .bind(sha256)
                .bind(mac)
                .bind(bytes)
                .execute(&mut **tx)
                .await?;
        });
        Ok(())
    }

    pub(crate) async fn insert_artifact(&mut self, snapshot_id: i64, a: &ArtifactRow) -> Result<(), sqlx::Error> {
        let sql = "INSERT INTO snapshot_artifacts \
                   (snapshot_id, artifact, chunks, objects, raw_bytes, stored_bytes, raw_sha256, stored_sha256) \
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
        on_tx!(self, tx => {
            sqlx::query(sql)
                .bind(snapshot_id)
                .bind(&a.artifact)
                .bind(a.chunks)
                .bind(a.objects)
                .bind(a.raw_bytes)
                .bind(a.stored_bytes)
                .bind(&a.raw_sha256)
                .bind(&a.stored_sha256)
                .execute(&mut **tx)
                .await?;
        });
        Ok(())
    }

    /// Write the totals and the seal that covers them (`row` holds the final values).
    pub(crate) async fn seal(&mut self, row: &SnapshotRow) -> Result<(), sqlx::Error> {
        let sql = "UPDATE snapshots SET objects = ?, raw_bytes = ?, stored_bytes = ?, seal = ? WHERE id = ?";
        on_tx!(self, tx => {
            sqlx::query(sql)
                .bind(row.objects)
                .bind(row.raw_bytes)
                .bind(row.stored_bytes)
                .bind(&row.seal)
                .bind(row.id)
                .execute(&mut **tx)
                .await?;
        });
        Ok(())
    }

    /// Delete one snapshot; its artifacts and chunks go with it (`ON DELETE CASCADE`).
    pub(crate) async fn delete_snapshot(&mut self, snapshot_id: i64) -> Result<(), sqlx::Error> {
        // Chunks first, explicitly: SQLite only cascades when foreign keys are enabled
        // on the connection, and the big rows should go before the small ones anyway.
        on_tx!(self, tx => {
            sqlx::query("DELETE FROM snapshot_chunks WHERE snapshot_id = ?")
                .bind(snapshot_id)
                .execute(&mut **tx)
                .await?;
            sqlx::query("DELETE FROM snapshot_artifacts WHERE snapshot_id = ?")
                .bind(snapshot_id)
                .execute(&mut **tx)
                .await?;
            sqlx::query("DELETE FROM snapshots WHERE id = ?")
                .bind(snapshot_id)
                .execute(&mut **tx)
                .await?;
        });
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::MySql(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }

    /// Rolls back now. Dropping a transaction only queues the rollback until its connection is
    /// next used, so row locks (`SELECT … FOR UPDATE`) could outlive a refused write.
    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::MySql(tx) => tx.rollback().await,
            Tx::Sqlite(tx) => tx.rollback().await,
        }
    }
}
