//! The one place that opens SQL pools (MariaDB or SQLite) from a URL and applies embedded
//! migrations: the snapshot catalog ([`crate::Store`], also the anchor store) and the API's
//! read model open their databases through here, so connect timeouts, the probe that names
//! the real cause of a failed connect and the "newer schema" refusal behave the same.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use crate::connect;

/// How long the first connection to a MariaDB server may take: a host that drops packets
/// fails in this time instead of the minutes TCP would wait.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A pool on either backend.
#[derive(Clone, Debug)]
pub enum Pool {
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// How a pool is opened.
#[derive(Clone, Copy, Debug)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// Rows sqlx buffers ahead on SQLite (1 for big BLOB rows, else memory balloons).
    pub sqlite_row_buffer: usize,
    /// `synchronous=NORMAL` on SQLite: a power loss may lose the last transactions but never
    /// corrupts the database (for derived data that is rebuilt from git).
    pub sqlite_relaxed_sync: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions { max_connections: 4, sqlite_row_buffer: 1, sqlite_relaxed_sync: false }
    }
}

impl Pool {
    /// Connects to `url` (`mysql://…`, `mariadb://…` or `sqlite:…`); SQLite files are created
    /// when missing.
    pub async fn open(url: &str, options: PoolOptions) -> Result<Pool, connect::Error> {
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            let connect_options = MySqlConnectOptions::from_str(&url).map_err(connect::Error::Unreachable)?;
            // One direct connection first: a pool retries a failing connect until its
            // acquire timeout and then says only "pool timed out", hiding the cause
            // (refused, DNS, access denied, unknown database).
            let probe = tokio::time::timeout(CONNECT_TIMEOUT, connect_options.connect())
                .await
                .map_err(|_| connect::Error::TimedOut { after: CONNECT_TIMEOUT })?
                .map_err(connect::Error::Unreachable)?;
            probe.close().await.map_err(connect::Error::Unreachable)?;
            let pool = MySqlPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(connect_options)
                .await
                .map_err(connect::Error::Unreachable)?;
            Ok(Pool::MySql(pool))
        } else if url.starts_with("sqlite:") {
            let mut connect_options = SqliteConnectOptions::from_str(url)
                .map_err(connect::Error::Unreachable)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .row_buffer_size(options.sqlite_row_buffer.max(1));
            if options.sqlite_relaxed_sync {
                connect_options = connect_options.synchronous(SqliteSynchronous::Normal);
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .connect_with(connect_options)
                .await
                .map_err(connect::Error::Unreachable)?;
            Ok(Pool::Sqlite(pool))
        } else {
            let scheme = url.split(':').next().unwrap_or_default().to_owned();
            Err(connect::Error::UnsupportedUrl { scheme })
        }
    }

    /// Applies the backend's migrations; a database with a migration this binary does not
    /// embed (a newer camledger migrated it) is refused.
    pub async fn migrate(
        &self,
        mysql: &sqlx::migrate::Migrator,
        sqlite: &sqlx::migrate::Migrator,
    ) -> Result<(), connect::Error> {
        match self {
            Pool::MySql(pool) => migrate(mysql, pool).await,
            Pool::Sqlite(pool) => migrate(sqlite, pool).await,
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Pool::MySql(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Pool::MySql(_) => "mysql",
            Pool::Sqlite(_) => "sqlite",
        }
    }
}

async fn migrate<DB>(migrator: &sqlx::migrate::Migrator, pool: &sqlx::Pool<DB>) -> Result<(), connect::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
{
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        // An applied migration that this binary does not embed: the database was
        // migrated by a newer camledger. Running on it could misread its rows.
        Err(sqlx::migrate::MigrateError::VersionMissing(found)) => {
            Err(connect::Error::NewerSchema { found, known: migrator.iter().map(|m| m.version).max().unwrap_or(0) })
        }
        Err(e) => Err(connect::Error::Migrate(e)),
    }
}
