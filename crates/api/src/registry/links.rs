//! Upload links: a camera's uploads without its token, through `POST /v1/u/<secret>`, for a
//! while (`expires_in`) and a number of images (`max_uploads`).
//!
//! The secret is 32 random bytes (`upl_` + hex), shown once; the registry keeps only its
//! SHA-256, found by an index lookup and then compared in constant time, as for tokens (the
//! same [`super::token_hash`], [`super::new_secret`] and [`super::hash_matches`]). A link
//! has a public id (`lnk_…`) for `links list` and `links revoke`, unrelated to the secret.
//!
//! Uses are counted in SQL and **reserved before anything is admitted**: one `UPDATE … SET
//! used = used + n WHERE used + n <= max_uploads AND <usable>` per reservation, so however
//! many uploads race, at most `max_uploads` reservations succeed (SQLite serialises writers;
//! a CHECK on the column is the backstop). An upload that wrote no event gives its uses back
//! afterwards ([`Uses::settle`]); one that may have written one keeps them. Every failure
//! to reserve is a refusal: nothing is written.
//!
//! "Usable" is checked in the same statement: not revoked, not expired, and its camera
//! registered and not revoked. Every use asks the database, so `links revoke` (or
//! `cameras revoke`) in another process stops the link from the server's next request.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{hash_matches, limit_of, new_secret, now_rfc3339, token_hash, valid_name, Registry};
use crate::ratelimit::RateLimit;

/// The longest a link may live: long enough for a job, short enough that a leaked link dies.
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most uploads one link may allow.
pub const MAX_LINK_UPLOADS: u32 = 10_000;

const SECRET_PREFIX: &str = "upl_";
const ID_PREFIX: &str = "lnk_";

/// SQL: the link's camera is registered and not revoked (a revoked camera's links stop
/// working). A macro so that `concat!` makes each statement one `&'static str`.
macro_rules! camera_active {
    () => {
        "EXISTS (SELECT 1 FROM principals p WHERE p.role = 'camera' AND p.name = upload_links.camera \
         AND p.revoked_at IS NULL)"
    };
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// HTTP 400 `invalid_expires_in`; CLI: clap usage error (exit 2).
    #[error(
        "expires_in {0:?} is not an ISO 8601 duration in weeks, days, hours, minutes or seconds (e.g. PT1H, \
         PT30M, P7D, P1DT12H)"
    )]
    InvalidExpiresIn(String),
    /// HTTP 400 `invalid_expires_in`; CLI exit 2.
    #[error("expires_in must be at least 1 second and at most 30 days (P30D)")]
    ExpiresInOutOfRange,
    /// HTTP 400 `invalid_max_uploads`; CLI exit 2.
    #[error("max_uploads must be a whole number from 1 to 10000")]
    InvalidMaxUploads,
    /// Creating a link for a camera that is not registered or is revoked. HTTP 400
    /// `unknown_camera`; CLI exit 1.
    #[error("no active camera named {0:?}")]
    UnknownCamera(String),
    /// `links revoke` of an id that is unknown or already revoked. CLI exit 1.
    #[error("no active upload link {0:?}")]
    NotFound(String),
    /// Unknown, expired, used up, revoked, or its camera revoked: one answer for all, so the
    /// answer does not tell which secrets were ever issued. HTTP 410 `link_gone`.
    #[error(
        "this upload link cannot be used: it expired, was used up or revoked, or never existed; nothing was \
         written"
    )]
    Gone,
    /// A multipart upload with more images than the link has uses left. HTTP 409
    /// `not_enough_uses`.
    #[error(
        "this upload link has {left} uses left, fewer than the {wanted} images in this request; nothing was \
         written"
    )]
    NotEnoughUses { left: u32, wanted: u32 },
    /// HTTP 503 (nothing is written: the use could not be reserved); CLI exit 1.
    #[error("upload links database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A link just created: the only time its secret exists outside the caller. Serialised for
/// the one answer that shows it; its `Debug` never prints it.
#[derive(Clone, Serialize)]
pub struct NewLink {
    pub id: String,
    pub camera: String,
    /// `/v1/u/<secret>`.
    pub url: String,
    pub expires_at: String,
    pub max_uploads: u32,
}

impl std::fmt::Debug for NewLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewLink")
            .field("id", &self.id)
            .field("camera", &self.camera)
            .field("url", &"/v1/u/<redacted>")
            .field("expires_at", &self.expires_at)
            .field("max_uploads", &self.max_uploads)
            .finish()
    }
}

/// Whether a link can still be used (as `links list` shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Active,
    Expired,
    UsedUp,
    Revoked,
    /// Its camera is revoked or no longer registered.
    CameraRevoked,
}

/// One row of `links list`: never the secret (only its hash is stored, and not shown).
#[derive(Clone, Debug, Serialize)]
pub struct LinkInfo {
    pub id: String,
    pub camera: String,
    pub state: LinkState,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: String,
    pub max_uploads: u32,
    /// Uses reserved and kept: events written through the link, plus any whose outcome was
    /// unknown (an upload that may have written an event keeps its use).
    pub used: u32,
    pub revoked_at: Option<String>,
}

/// The first use of a link, reserved: who the upload is recorded as.
#[derive(Debug)]
pub(crate) struct Reserved {
    pub(crate) id: String,
    pub(crate) camera: String,
    pub(crate) rate_limit: Option<RateLimit>,
}

/// Parses an ISO 8601 duration of weeks, days, hours, minutes and seconds (`PT1H`, `PT90M`,
/// `P7D`, `P1DT12H`, `P2W`), whole numbers only, and bounds it to 1 s ..= 30 days. Years and
/// months are refused: their length depends on the calendar.
pub fn parse_expires_in(text: &str) -> Result<Duration, LinkError> {
    let invalid = || LinkError::InvalidExpiresIn(text.chars().take(40).collect());
    let rest = text.strip_prefix('P').ok_or_else(invalid)?;
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) if !time.is_empty() => (date, Some(time)),
        Some(_) => return Err(invalid()),
        None => (rest, None),
    };
    let date_seconds = sum_units(date, &[('W', 7 * 86_400), ('D', 86_400)]).ok_or_else(invalid)?;
    let time_seconds = match time {
        Some(time) => sum_units(time, &[('H', 3_600), ('M', 60), ('S', 1)]).ok_or_else(invalid)?,
        None => 0,
    };
    if date.is_empty() && time.is_none() {
        return Err(invalid());
    }
    let seconds = date_seconds.checked_add(time_seconds).ok_or(LinkError::ExpiresInOutOfRange)?;
    let duration = Duration::from_secs(seconds);
    if duration < Duration::from_secs(1) || duration > MAX_LINK_LIFETIME {
        return Err(LinkError::ExpiresInOutOfRange);
    }
    Ok(duration)
}

/// `n` `UNIT` pairs in the order of `units`, each at most once, summed in seconds; `None`
/// for anything else (a fraction, a sign, an unknown or repeated unit, a number over 9 digits).
fn sum_units(mut text: &str, units: &[(char, u64)]) -> Option<u64> {
    let mut total: u64 = 0;
    let mut next = 0;
    while !text.is_empty() {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        let n: u64 = text[..digits].parse().ok()?;
        let unit = text[digits..].chars().next()?;
        let at = next + units[next..].iter().position(|&(u, _)| u == unit)?;
        total = total.checked_add(n.checked_mul(units[at].1)?)?;
        next = at + 1;
        text = &text[digits + unit.len_utf8()..];
    }
    Some(total)
}

fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn rfc3339_of_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

impl Registry {
    /// A new link for `camera` (registered and not revoked, checked in the same statement
    /// that inserts the link), usable `max_uploads` times until `expires_in` from now.
    pub async fn create_link(
        &self,
        camera: &str,
        expires_in: Duration,
        max_uploads: u32,
        created_by: &str,
    ) -> Result<NewLink, LinkError> {
        if !(1..=MAX_LINK_UPLOADS).contains(&max_uploads) {
            return Err(LinkError::InvalidMaxUploads);
        }
        if expires_in < Duration::from_secs(1) || expires_in > MAX_LINK_LIFETIME {
            return Err(LinkError::ExpiresInOutOfRange);
        }
        if !valid_name(camera) {
            return Err(LinkError::UnknownCamera(camera.chars().take(64).collect()));
        }
        let secret = new_secret(SECRET_PREFIX);
        let id = format!("{ID_PREFIX}{}", hex::encode(rand::random::<[u8; 8]>()));
        let expires_at_ms = now_ms().saturating_add(i64::try_from(expires_in.as_millis()).unwrap_or(i64::MAX));
        let done = sqlx::query(
            "INSERT INTO upload_links (id, secret_hash, camera, created_at, created_by, expires_at_ms, max_uploads) \
             SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM principals p WHERE p.role = 'camera' \
             AND p.name = ? AND p.revoked_at IS NULL)",
        )
        .bind(&id)
        .bind(token_hash(&secret).to_vec())
        .bind(camera)
        .bind(now_rfc3339())
        .bind(created_by)
        .bind(expires_at_ms)
        .bind(i64::from(max_uploads))
        .bind(camera)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(LinkError::UnknownCamera(camera.to_owned()));
        }
        Ok(NewLink {
            id,
            camera: camera.to_owned(),
            url: format!("/v1/u/{secret}"),
            expires_at: rfc3339_of_ms(expires_at_ms),
            max_uploads,
        })
    }

    /// Every link, oldest first, with its state now; never a secret.
    pub async fn list_links(&self) -> Result<Vec<LinkInfo>, LinkError> {
        let rows = sqlx::query(concat!(
            "SELECT id, camera, created_at, created_by, expires_at_ms, max_uploads, used, revoked_at, ",
            camera_active!(),
            " FROM upload_links ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let now = now_ms();
        rows.into_iter()
            .map(|r| {
                let expires_at_ms: i64 = r.try_get(4)?;
                let max_uploads = u32::try_from(r.try_get::<i64, _>(5)?).unwrap_or(0);
                let used = u32::try_from(r.try_get::<i64, _>(6)?).unwrap_or(u32::MAX);
                let revoked_at: Option<String> = r.try_get(7)?;
                let camera_active: bool = r.try_get(8)?;
                let state = if revoked_at.is_some() {
                    LinkState::Revoked
                } else if !camera_active {
                    LinkState::CameraRevoked
                } else if expires_at_ms <= now {
                    LinkState::Expired
                } else if used >= max_uploads {
                    LinkState::UsedUp
                } else {
                    LinkState::Active
                };
                Ok(LinkInfo {
                    id: r.try_get(0)?,
                    camera: r.try_get(1)?,
                    state,
                    created_at: r.try_get(2)?,
                    created_by: r.try_get(3)?,
                    expires_at: rfc3339_of_ms(expires_at_ms),
                    max_uploads,
                    used,
                    revoked_at,
                })
            })
            .collect()
    }

    /// Revokes link `id`; a running server refuses it from its next request on.
    pub async fn revoke_link(&self, id: &str) -> Result<(), LinkError> {
        let done = sqlx::query("UPDATE upload_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_rfc3339())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(LinkError::NotFound(id.chars().take(64).collect()));
        }
        Ok(())
    }

    /// Reserves one use of the link whose secret is `secret`, if it is usable; `None` for
    /// every other case (unknown, expired, used up, revoked, camera revoked), which run the
    /// same single statement. The reservation and the checks are one `UPDATE`, so no race
    /// can take more uses than the link has.
    pub(crate) async fn reserve_link_use(&self, secret: &str) -> Result<Option<Reserved>, LinkError> {
        let presented = token_hash(secret);
        let row = sqlx::query(concat!(
            "UPDATE upload_links SET used = used + 1 \
             WHERE secret_hash = ? AND used < max_uploads AND revoked_at IS NULL AND expires_at_ms > ? AND ",
            camera_active!(),
            " RETURNING id, camera, secret_hash, \
             (SELECT p.rate_per_sec FROM principals p WHERE p.role = 'camera' AND p.name = upload_links.camera), \
             (SELECT p.rate_burst FROM principals p WHERE p.role = 'camera' AND p.name = upload_links.camera)"
        ))
        .bind(presented.to_vec())
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = row.try_get(2)?;
        if !hash_matches(&stored, &presented) {
            // Cannot happen (the row was found by this hash); the use stays spent.
            return Ok(None);
        }
        Ok(Some(Reserved {
            id: row.try_get(0)?,
            camera: row.try_get(1)?,
            rate_limit: limit_of(row.try_get(3)?, row.try_get(4)?),
        }))
    }
}

/// The uses one upload through a link holds: reserved before admission, kept for every
/// image that wrote (or may have written) an event, the rest given back by [`Uses::settle`].
///
/// If the request is dropped midway (the client goes away, the request deadline), nothing
/// is given back: an append already handed to the writer may still land, and a use given
/// back for it could let the link pass `max_uploads`. Failing closed costs the link a use.
#[derive(Debug)]
pub(crate) struct Uses {
    registry: Registry,
    link: String,
    reserved: AtomicU32,
    kept: AtomicU32,
}

impl Uses {
    /// The one use [`Registry::reserve_link_use`] reserved.
    pub(crate) fn new(registry: Registry, reserved: &Reserved) -> Self {
        Self { registry, link: reserved.id.clone(), reserved: AtomicU32::new(1), kept: AtomicU32::new(0) }
    }

    /// Makes the uses held `images` (a multipart upload needs one per image), all or none:
    /// refused when the link cannot give that many now.
    pub(crate) async fn reserve_total(&self, images: u32) -> Result<(), LinkError> {
        let more = images.saturating_sub(self.reserved.load(Ordering::SeqCst));
        if more == 0 {
            return Ok(());
        }
        let done = sqlx::query(concat!(
            "UPDATE upload_links SET used = used + ?1 \
             WHERE id = ?2 AND used + ?1 <= max_uploads AND revoked_at IS NULL AND expires_at_ms > ?3 AND ",
            camera_active!()
        ))
        .bind(i64::from(more))
        .bind(&self.link)
        .bind(now_ms())
        .execute(&self.registry.pool)
        .await?;
        if done.rows_affected() == 1 {
            self.reserved.fetch_add(more, Ordering::SeqCst);
            return Ok(());
        }
        // Only the answer depends on this read; nothing was reserved either way.
        let left: Option<i64> = sqlx::query_scalar(concat!(
            "SELECT max_uploads - used FROM upload_links \
             WHERE id = ? AND revoked_at IS NULL AND expires_at_ms > ? AND ",
            camera_active!()
        ))
        .bind(&self.link)
        .bind(now_ms())
        .fetch_optional(&self.registry.pool)
        .await?;
        // What this request holds counts as left for it.
        match left {
            Some(left) => Err(LinkError::NotEnoughUses {
                left: u32::try_from(left).unwrap_or(0).saturating_add(self.reserved.load(Ordering::SeqCst)),
                wanted: images,
            }),
            None => Err(LinkError::Gone),
        }
    }

    /// One image wrote an event, or may have: its use is kept.
    pub(crate) fn keep_one(&self) {
        self.kept.fetch_add(1, Ordering::SeqCst);
    }

    /// Gives back every reserved use that no image kept; answers how many. A failure to give
    /// back keeps them (the link loses uses, never gains any) and is logged.
    pub(crate) async fn settle(self) -> u32 {
        let unused = self.reserved.load(Ordering::SeqCst).saturating_sub(self.kept.load(Ordering::SeqCst));
        if unused == 0 {
            return 0;
        }
        let given = sqlx::query("UPDATE upload_links SET used = used - ?1 WHERE id = ?2 AND used >= ?1")
            .bind(i64::from(unused))
            .bind(&self.link)
            .execute(&self.registry.pool)
            .await;
        match given {
            Ok(done) if done.rows_affected() == 1 => unused,
            Ok(_) => 0,
            Err(e) => {
                tracing::warn!(link = %self.link, unused, error = %e, "could not give unused link uses back; they stay spent");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_iso_8601_days_hours_minutes_seconds() {
        let ok = [
            ("PT1H", 3_600),
            ("PT30M", 1_800),
            ("PT45S", 45),
            ("P1D", 86_400),
            ("P1DT12H", 129_600),
            ("PT1H30M15S", 5_415),
            ("P2W", 1_209_600),
            ("P30D", 2_592_000),
            ("PT1S", 1),
            ("PT0H1S", 1),
        ];
        for (text, seconds) in ok {
            assert_eq!(parse_expires_in(text).unwrap(), Duration::from_secs(seconds), "{text}");
        }
    }

    #[test]
    fn malformed_or_unbounded_durations_are_refused() {
        for bad in [
            "",
            "P",
            "PT",
            "P1DT",
            "1H",
            "PT1h",
            "pt1h",
            "PT1.5H",
            "PT-1H",
            "PT+1H",
            "P1Y",
            "P1M",
            "PT1M1H",
            "PT1H1H",
            "P1D1W",
            "PT 1H",
            "PT1H ",
            "PT1234567890S",
            "PTH",
            "P1DX",
            "PT1HP",
        ] {
            assert!(matches!(parse_expires_in(bad), Err(LinkError::InvalidExpiresIn(_))), "{bad:?}");
        }
        for out_of_range in ["PT0S", "P0D", "P31D", "PT721H", "P5W", "P999999999D"] {
            assert!(matches!(parse_expires_in(out_of_range), Err(LinkError::ExpiresInOutOfRange)), "{out_of_range:?}");
        }
    }

    async fn registry_with_camera() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        registry.add_camera("cam-1").await.unwrap();
        (dir, registry)
    }

    fn secret_of(link: &NewLink) -> &str {
        link.url.strip_prefix("/v1/u/").unwrap()
    }

    #[tokio::test]
    async fn a_link_gives_exactly_its_uses_and_unused_ones_come_back() {
        let (_dir, registry) = registry_with_camera().await;
        let link = registry.create_link("cam-1", Duration::from_secs(60), 2, "test").await.unwrap();
        let secret = secret_of(&link);
        assert!(secret.starts_with("upl_") && secret.len() == 4 + 64);
        assert!(!format!("{link:?}").contains(&secret[4..]), "Debug never prints the secret");

        let first = registry.reserve_link_use(secret).await.unwrap().expect("a first use");
        assert_eq!((first.id.as_str(), first.camera.as_str()), (link.id.as_str(), "cam-1"));
        let uses = Uses::new(registry.clone(), &first);
        assert!(matches!(uses.reserve_total(3).await, Err(LinkError::NotEnoughUses { left: 2, wanted: 3 })));
        uses.reserve_total(2).await.unwrap();
        assert!(registry.reserve_link_use(secret).await.unwrap().is_none(), "both uses are held");
        uses.keep_one();
        assert_eq!(uses.settle().await, 1, "the image that wrote nothing gives its use back");
        assert!(registry.reserve_link_use(secret).await.unwrap().is_some());
        assert!(registry.reserve_link_use(secret).await.unwrap().is_none(), "used up");
        let listed = registry.list_links().await.unwrap();
        assert_eq!((listed[0].used, listed[0].state), (2, LinkState::UsedUp));
    }

    #[tokio::test]
    async fn revoked_links_revoked_cameras_and_unknown_secrets_reserve_nothing() {
        let (_dir, registry) = registry_with_camera().await;
        let link = registry.create_link("cam-1", Duration::from_secs(60), 5, "test").await.unwrap();
        assert!(registry.reserve_link_use("upl_00").await.unwrap().is_none());
        registry.revoke_camera("cam-1").await.unwrap();
        assert!(registry.reserve_link_use(secret_of(&link)).await.unwrap().is_none());
        assert_eq!(registry.list_links().await.unwrap()[0].state, LinkState::CameraRevoked);
        registry.rotate_camera("cam-1").await.unwrap();
        assert!(registry.reserve_link_use(secret_of(&link)).await.unwrap().is_some(), "back with its camera");
        registry.revoke_link(&link.id).await.unwrap();
        assert!(registry.reserve_link_use(secret_of(&link)).await.unwrap().is_none());
        assert!(matches!(registry.revoke_link(&link.id).await, Err(LinkError::NotFound(_))));
        assert_eq!(registry.list_links().await.unwrap()[0].state, LinkState::Revoked);
    }

    #[tokio::test]
    async fn links_need_an_active_camera_and_bounded_limits() {
        let (_dir, registry) = registry_with_camera().await;
        let hour = Duration::from_secs(3600);
        assert!(matches!(registry.create_link("nobody", hour, 1, "t").await, Err(LinkError::UnknownCamera(_))));
        assert!(matches!(registry.create_link("cam-1", hour, 0, "t").await, Err(LinkError::InvalidMaxUploads)));
        assert!(matches!(registry.create_link("cam-1", hour, 10_001, "t").await, Err(LinkError::InvalidMaxUploads)));
        assert!(matches!(
            registry.create_link("cam-1", MAX_LINK_LIFETIME + Duration::from_secs(1), 1, "t").await,
            Err(LinkError::ExpiresInOutOfRange)
        ));
        registry.revoke_camera("cam-1").await.unwrap();
        assert!(matches!(registry.create_link("cam-1", hour, 1, "t").await, Err(LinkError::UnknownCamera(_))));
        assert!(registry.list_links().await.unwrap().is_empty());
    }
}
