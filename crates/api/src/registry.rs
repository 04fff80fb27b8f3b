//! The camera registry and reader tokens: `<data-dir>/camledger.sqlite`.
//!
//! Tokens are 32 random bytes shown once (hex, with a role prefix so an operator can tell
//! them apart) and stored only as their SHA-256. Authentication looks the hash up and then
//! compares it in constant time. Every request asks the database (no cache), so a
//! revocation or rotation made by `camledger tokens revoke` / `cameras revoke` / `cameras
//! rotate` in another process takes effect on the server's next request.
//!
//! One token per principal (`(role, name)`): rotating a camera replaces its token hash in one
//! `UPDATE`, so there is no moment when both or neither token works, and the old one can
//! never come back. Rotating a revoked camera puts it back into service with a new token
//! (its id, and so its events' camera field, stay the same).
//!
//! Upload links (`POST /v1/u/<secret>`) are stored the same way (only the secret's hash):
//! `links`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::ratelimit::RateLimit;

mod links;
pub(crate) use links::Uses;
pub use links::{parse_expires_in, LinkError, LinkInfo, LinkState, NewLink, MAX_LINK_LIFETIME, MAX_LINK_UPLOADS};

/// File name of the registry inside a data dir.
pub const REGISTRY_FILE: &str = "camledger.sqlite";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../schema/registry");

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Uploads images as itself; reads only its own events.
    Camera,
    /// Reads everything.
    Auditor,
    /// Reads everything (and, later, operates).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Camera => "camera",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    fn token_prefix(self) -> &'static str {
        match self {
            Role::Camera => "cam_",
            Role::Auditor => "aud_",
            Role::Admin => "adm_",
        }
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "camera" => Ok(Role::Camera),
            "auditor" => Ok(Role::Auditor),
            "admin" => Ok(Role::Admin),
            other => Err(Error::InvalidRole(other.to_owned())),
        }
    }
}

/// Who presented a valid token.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// A camera's own rate limit (`cameras limit`), in force instead of the default.
    pub rate_limit: Option<RateLimit>,
}

/// One row of `tokens list`: never the token (only its hash is stored, and not shown).
#[derive(Clone, Debug, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub kind: Role,
    pub created_at: String,
    pub rotated_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// One row of `cameras list`.
#[derive(Clone, Debug, Serialize)]
pub struct CameraInfo {
    pub id: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    /// Its own rate limit, if one was set (`cameras limit`); else the server's default applies.
    #[serde(serialize_with = "serialize_limit")]
    pub rate_limit: Option<RateLimit>,
}

fn serialize_limit<S: serde::Serializer>(limit: &Option<RateLimit>, s: S) -> Result<S::Ok, S::Error> {
    match limit {
        Some(l) => serde_json::json!({ "per_sec": l.per_sec, "burst": l.burst }).serialize(s),
        None => s.serialize_none(),
    }
}

/// A rate limit from its two nullable columns.
fn limit_of(per_sec: Option<f64>, burst: Option<i64>) -> Option<RateLimit> {
    match (per_sec, burst) {
        (Some(per_sec), Some(burst)) if per_sec > 0.0 && per_sec.is_finite() => {
            Some(RateLimit { per_sec, burst: u32::try_from(burst).unwrap_or(u32::MAX).max(1) })
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The id does not match `[A-Za-z0-9._-]{1,64}`. CLI: message and exit 2.
    #[error("invalid name {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    InvalidName(String),
    /// CLI: message and exit 2.
    #[error("invalid role {0:?}: use auditor or admin")]
    InvalidRole(String),
    /// Adding a name twice. CLI: message and exit 1.
    #[error("{role} {name:?} already exists")]
    Exists { role: &'static str, name: String },
    /// Revoking an unknown name. CLI: message and exit 1.
    #[error("no {role} named {name:?}")]
    NotFound { role: &'static str, name: String },
    /// `tokens revoke NAME` matches active tokens of several kinds. CLI: exit 1; retry
    /// with `--kind`.
    #[error("{name:?} names active tokens of several kinds ({kinds}); choose one with --kind")]
    Ambiguous { name: String, kinds: String },
    /// The database failed. HTTP 503; CLI exit 1.
    #[error("camera registry database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be applied (or is newer than this binary). CLI exit 1.
    #[error("camera registry schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Names of cameras and readers: safe in a path, a git trailer and an email-like identity.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Handle on the registry database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    pool: SqlitePool,
}

impl Registry {
    /// Opens (creating if needed) the registry of `data_dir` and applies its schema.
    pub async fn open(data_dir: &Path) -> Result<Self, Error> {
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(REGISTRY_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn add_camera(&self, id: &str) -> Result<String, Error> {
        self.add(Role::Camera, id).await
    }

    pub async fn add_reader(&self, name: &str, role: Role) -> Result<String, Error> {
        if role == Role::Camera {
            return Err(Error::InvalidRole("camera".into()));
        }
        self.add(role, name).await
    }

    async fn add(&self, role: Role, name: &str) -> Result<String, Error> {
        if !valid_name(name) {
            return Err(Error::InvalidName(name.to_owned()));
        }
        let token = new_secret(role.token_prefix());
        let result = sqlx::query("INSERT INTO principals (role, name, token_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(role.as_str())
            .bind(name)
            .bind(token_hash(&token).to_vec())
            .bind(now_rfc3339())
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(token),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(Error::Exists { role: role.as_str(), name: name.to_owned() })
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_cameras(&self) -> Result<Vec<CameraInfo>, Error> {
        let rows = sqlx::query(
            "SELECT name, created_at, revoked_at, rate_per_sec, rate_burst FROM principals WHERE role = 'camera' \
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(CameraInfo {
                    id: r.try_get(0)?,
                    created_at: r.try_get(1)?,
                    revoked_at: r.try_get(2)?,
                    rate_limit: limit_of(r.try_get(3)?, r.try_get(4)?),
                })
            })
            .collect()
    }

    /// Sets a camera's own rate limit, or (`None`) puts it back on the server's default.
    /// In force from the camera's next request (every request reads the registry).
    pub async fn set_camera_limit(&self, id: &str, limit: Option<RateLimit>) -> Result<(), Error> {
        let done =
            sqlx::query("UPDATE principals SET rate_per_sec = ?, rate_burst = ? WHERE role = 'camera' AND name = ?")
                .bind(limit.map(|l| l.per_sec))
                .bind(limit.map(|l| i64::from(l.burst)))
                .bind(id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { role: "camera", name: id.to_owned() });
        }
        Ok(())
    }

    pub async fn revoke_camera(&self, id: &str) -> Result<(), Error> {
        let done = sqlx::query(
            "UPDATE principals SET revoked_at = ? WHERE role = 'camera' AND name = ? AND revoked_at IS NULL",
        )
        .bind(now_rfc3339())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { role: "active camera", name: id.to_owned() });
        }
        Ok(())
    }

    /// Every token's holder, kind and dates (never the token), by kind then name.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        let rows =
            sqlx::query("SELECT name, role, created_at, rotated_at, revoked_at FROM principals ORDER BY role, name")
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(|r| {
                let role: String = r.try_get(1)?;
                Ok(TokenInfo {
                    name: r.try_get(0)?,
                    kind: role.parse()?,
                    created_at: r.try_get(2)?,
                    rotated_at: r.try_get(3)?,
                    revoked_at: r.try_get(4)?,
                })
            })
            .collect()
    }

    /// Revoke the active token of `name` (of `kind`, when given; needed when the name has
    /// active tokens of several kinds). Returns the kind revoked.
    pub async fn revoke(&self, name: &str, kind: Option<Role>) -> Result<Role, Error> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query("SELECT role FROM principals WHERE name = ? AND revoked_at IS NULL ORDER BY role")
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
        let mut kinds = Vec::new();
        for row in rows {
            let role: Role = row.try_get::<String, _>(0)?.parse()?;
            if kind.is_none_or(|k| k == role) {
                kinds.push(role);
            }
        }
        let role = match kinds.as_slice() {
            [] => {
                return Err(Error::NotFound { role: kind.map_or("active token", Role::as_str), name: name.to_owned() })
            }
            [one] => *one,
            many => {
                let kinds = many.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
                return Err(Error::Ambiguous { name: name.to_owned(), kinds });
            }
        };
        sqlx::query("UPDATE principals SET revoked_at = ? WHERE role = ? AND name = ? AND revoked_at IS NULL")
            .bind(now_rfc3339())
            .bind(role.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(role)
    }

    /// Give camera `id` a new token and return it; the old token (revoked or not) stops
    /// working in the same statement. A revoked camera comes back into service.
    pub async fn rotate_camera(&self, id: &str) -> Result<String, Error> {
        let token = new_secret(Role::Camera.token_prefix());
        let done = sqlx::query(
            "UPDATE principals SET token_hash = ?, rotated_at = ?, revoked_at = NULL WHERE role = 'camera' AND name = ?",
        )
        .bind(token_hash(&token).to_vec())
        .bind(now_rfc3339())
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { role: "camera", name: id.to_owned() });
        }
        Ok(token)
    }

    /// The principal a bearer token belongs to, if it is known and not revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, Error> {
        self.authenticate_hash(token_hash(token)).await
    }

    /// [`Registry::authenticate`] for a token known only by its SHA-256 (a dashboard session
    /// keeps that, never the token).
    pub async fn authenticate_hash(&self, presented: [u8; 32]) -> Result<Option<Principal>, Error> {
        let row = sqlx::query(
            "SELECT role, name, token_hash, rate_per_sec, rate_burst FROM principals \
             WHERE token_hash = ? AND revoked_at IS NULL",
        )
        .bind(presented.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = row.try_get(2)?;
        if !hash_matches(&stored, &presented) {
            return Ok(None);
        }
        let role: String = row.try_get(0)?;
        Ok(Some(Principal {
            role: role.parse()?,
            name: row.try_get(1)?,
            rate_limit: limit_of(row.try_get(3)?, row.try_get(4)?),
        }))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The database, for the webhooks kept beside the principals (`webhooks.rs`).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// The SHA-256 of a token, as the registry stores it.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new secret: `prefix` then 32 random bytes in hex (tokens, upload links).
fn new_secret(prefix: &str) -> String {
    let secret: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(secret))
}

/// Whether a stored hash is the presented one, compared in constant time (the SQL lookup by
/// hash found the row; this is the check that does not depend on how the index compares).
fn hash_matches(stored: &[u8], presented: &[u8; 32]) -> bool {
    bool::from(stored.ct_eq(presented.as_slice()))
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current UTC time as RFC 3339 cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_camera_token_authenticates_until_it_is_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        let token = registry.add_camera("cam-1").await.unwrap();
        assert!(token.starts_with("cam_"));
        let who = registry.authenticate(&token).await.unwrap();
        assert_eq!(who, Some(Principal { name: "cam-1".into(), role: Role::Camera, rate_limit: None }));
        registry.revoke_camera("cam-1").await.unwrap();
        assert_eq!(registry.authenticate(&token).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_rotated_camera_answers_only_to_its_new_token_even_after_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        let first = registry.add_camera("cam-1").await.unwrap();
        let second = registry.rotate_camera("cam-1").await.unwrap();
        assert_eq!(registry.authenticate(&first).await.unwrap(), None);
        assert!(registry.authenticate(&second).await.unwrap().is_some());
        registry.revoke_camera("cam-1").await.unwrap();
        let third = registry.rotate_camera("cam-1").await.unwrap();
        assert_eq!(registry.authenticate(&second).await.unwrap(), None);
        assert_eq!(
            registry.authenticate(&third).await.unwrap(),
            Some(Principal { name: "cam-1".into(), role: Role::Camera, rate_limit: None })
        );
        assert!(matches!(registry.rotate_camera("nobody").await, Err(Error::NotFound { .. })));
    }

    #[tokio::test]
    async fn revoking_a_reader_needs_a_kind_only_when_the_name_is_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        let audit = registry.add_reader("alice", Role::Auditor).await.unwrap();
        let admin = registry.add_reader("alice", Role::Admin).await.unwrap();
        assert!(matches!(registry.revoke("alice", None).await, Err(Error::Ambiguous { .. })));
        assert_eq!(registry.revoke("alice", Some(Role::Auditor)).await.unwrap(), Role::Auditor);
        assert_eq!(registry.authenticate(&audit).await.unwrap(), None);
        assert!(registry.authenticate(&admin).await.unwrap().is_some());
        assert_eq!(registry.revoke("alice", None).await.unwrap(), Role::Admin);
        assert!(matches!(registry.revoke("alice", None).await, Err(Error::NotFound { .. })));
        let listed = registry.list_tokens().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|t| t.revoked_at.is_some()));
    }

    #[tokio::test]
    async fn tokens_are_stored_only_as_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        let token = registry.add_reader("alice", Role::Auditor).await.unwrap();
        registry.close().await;
        let bytes = std::fs::read(dir.path().join(REGISTRY_FILE)).unwrap();
        let wal = std::fs::read(dir.path().join("camledger.sqlite-wal")).unwrap_or_default();
        for haystack in [bytes, wal] {
            assert!(!haystack.windows(token.len()).any(|w| w == token.as_bytes()));
        }
    }

    #[tokio::test]
    async fn adding_the_same_camera_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        registry.add_camera("cam-1").await.unwrap();
        assert!(matches!(registry.add_camera("cam-1").await, Err(Error::Exists { .. })));
        assert!(matches!(registry.add_camera("bad id").await, Err(Error::InvalidName(_))));
        assert!(registry.authenticate("cam_0000").await.unwrap().is_none());
    }
}
