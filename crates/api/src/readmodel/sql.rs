//! SQL for both backends, written once: statements take their binds as [`Arg`]s and every
//! call expands per backend (as `crates/backup/src/db.rs` does), so the SQL text is shared
//! and each driver's types are checked by the compiler. The few statements that differ
//! (upserts) are chosen by [`Pool::is_mysql`].

use camledger_backup::pool::{Pool as AnyPool, PoolOptions};
use sqlx::{MySql, Row, Sqlite, Transaction};

use super::{Error, Projected};

/// The read model's migrations, recorded in their own table so the read model can share a
/// MariaDB database with the snapshot catalog (whose migrations are in `_sqlx_migrations`).
fn migrators() -> (sqlx::migrate::Migrator, sqlx::migrate::Migrator) {
    let mut mysql = sqlx::migrate!("../../schema/readmodel/mysql");
    mysql.dangerous_set_table_name("_readmodel_migrations");
    let mut sqlite = sqlx::migrate!("../../schema/readmodel/sqlite");
    sqlite.dangerous_set_table_name("_readmodel_migrations");
    (mysql, sqlite)
}

/// One bind value.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Int(i64),
    Text(String),
    OptText(Option<String>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::OptText(v)
    }
}

/// `sqlx::query(sql)` with `args` bound in order. The SQL text is built only from literals,
/// column names and numbers (limits, placeholder counts); every value a client supplies is
/// a bind, hence `AssertSqlSafe`.
macro_rules! bound {
    ($sql:expr, $args:expr) => {{
        let mut query = sqlx::query(sqlx::AssertSqlSafe($sql.to_owned()));
        for arg in $args.iter() {
            query = match arg {
                Arg::Int(v) => query.bind(*v),
                Arg::Text(v) => query.bind(v.as_str()),
                Arg::OptText(v) => query.bind(v.as_deref()),
            };
        }
        query
    }};
}

/// A decoded row: the columns a caller asked for, by name.
pub(crate) trait FromRow: Sized {
    fn from_mysql(row: &sqlx::mysql::MySqlRow) -> Result<Self, sqlx::Error>;
    fn from_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error>;
}

/// Implements [`FromRow`] for a struct whose fields are columns of the same name.
macro_rules! from_row {
    ($ty:ident { $($field:ident),* $(,)? }) => {
        impl $crate::readmodel::sql::FromRow for $ty {
            fn from_mysql(row: &sqlx::mysql::MySqlRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok($ty { $($field: row.try_get(stringify!($field))?),* })
            }
            fn from_sqlite(row: &sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error> {
                use sqlx::Row as _;
                Ok($ty { $($field: row.try_get(stringify!($field))?),* })
            }
        }
    };
}
pub(crate) use from_row;

#[derive(Clone, Debug)]
pub(crate) struct Pool {
    pool: AnyPool,
}

impl Pool {
    pub(crate) async fn open(url: &str) -> Result<Pool, Error> {
        // Rows are small: let sqlx read ahead. The read model is derived data: a power loss
        // may cost the last transactions (the projector redoes them from git), never the file.
        let options = PoolOptions { max_connections: 8, sqlite_row_buffer: 64, sqlite_relaxed_sync: true };
        let pool = AnyPool::open(url, options).await.map_err(Error::Connect)?;
        let (mysql, sqlite) = migrators();
        pool.migrate(&mysql, &sqlite).await.map_err(Error::Connect)?;
        if let AnyPool::Sqlite(p) = &pool {
            // Planner statistics from a sample (170 ms at a million rows, under load); InnoDB
            // keeps its own.
            let mut conn = p.acquire().await?;
            sqlx::query("PRAGMA analysis_limit = 1000").execute(&mut *conn).await?;
            sqlx::query("ANALYZE").execute(&mut *conn).await?;
        }
        Ok(Pool { pool })
    }

    pub(crate) fn is_mysql(&self) -> bool {
        matches!(self.pool, AnyPool::MySql(_))
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn state(&self) -> Result<Projected, Error> {
        let sql = "SELECT events_seq, verdicts_seq FROM rm_state WHERE id = 1";
        let (events, verdicts): (i64, i64) = match &self.pool {
            AnyPool::MySql(p) => {
                let row = sqlx::query(sql).fetch_one(p).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
            AnyPool::Sqlite(p) => {
                let row = sqlx::query(sql).fetch_one(p).await?;
                (row.try_get(0)?, row.try_get(1)?)
            }
        };
        Ok(Projected { events_seq: events.max(0) as u64, verdicts_seq: verdicts.max(0) as u64 })
    }

    pub(crate) async fn fetch_all<T: FromRow>(&self, sql: &str, args: &[Arg]) -> Result<Vec<T>, sqlx::Error> {
        match &self.pool {
            AnyPool::MySql(p) => bound!(sql, args).fetch_all(p).await?.iter().map(T::from_mysql).collect(),
            AnyPool::Sqlite(p) => bound!(sql, args).fetch_all(p).await?.iter().map(T::from_sqlite).collect(),
        }
    }

    pub(crate) async fn fetch_one<T: FromRow>(&self, sql: &str, args: &[Arg]) -> Result<T, sqlx::Error> {
        match &self.pool {
            AnyPool::MySql(p) => T::from_mysql(&bound!(sql, args).fetch_one(p).await?),
            AnyPool::Sqlite(p) => T::from_sqlite(&bound!(sql, args).fetch_one(p).await?),
        }
    }

    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match &self.pool {
            AnyPool::MySql(p) => Tx::MySql(p.begin().await?),
            AnyPool::Sqlite(p) => Tx::Sqlite(p.begin().await?),
        })
    }
}

/// An open transaction; dropping it without [`Tx::commit`] rolls back.
pub(crate) enum Tx {
    MySql(Transaction<'static, MySql>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    /// Runs one statement; returns the rows it affected.
    pub(crate) async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::MySql(tx) => bound!(sql, args).execute(&mut **tx).await?.rows_affected(),
            Tx::Sqlite(tx) => bound!(sql, args).execute(&mut **tx).await?.rows_affected(),
        })
    }

    pub(crate) async fn fetch_optional<T: FromRow>(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<T>, sqlx::Error> {
        match self {
            Tx::MySql(tx) => bound!(sql, args).fetch_optional(&mut **tx).await?.as_ref().map(T::from_mysql).transpose(),
            Tx::Sqlite(tx) => {
                bound!(sql, args).fetch_optional(&mut **tx).await?.as_ref().map(T::from_sqlite).transpose()
            }
        }
    }

    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::MySql(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }
}

/// `(?, ?, …)` repeated `rows` times, `columns` placeholders each, comma-separated.
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; rows].join(", ")
}
