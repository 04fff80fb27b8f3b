//! Queries on the read model: a search page, the stats, an export page. Each is answered
//! from indexes: a search page reads an index range from the cursor (`after`) for at most
//! `limit + 1` matching rows; stats read the projector's per-day counters (or, with
//! `since`/`until`, the events in that time range); an export page is a primary-key range.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::sql::{from_row, Arg};
use super::{Error, Projected, ReadModel};

/// Default and largest `limit` of a search page.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// Days in `uploads_per_day`.
pub const STATS_DAYS: i64 = 30;
/// Entries in `top_camera_models`.
pub const TOP_MODELS: usize = 10;

/// A filter that is not understood: HTTP 400 with `code`, CLI exit 2-like message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: impl Into<String>) -> FilterError {
    FilterError { code, message: message.into() }
}

/// RFC 3339 to the stored form of `received_at` (UTC, six fractional digits, `Z`), which
/// sorts as time. A `+` offset that arrived as a space (an unencoded query string) is taken
/// back.
fn parse_time(name: &str, text: &str) -> Result<String, FilterError> {
    camledger_eventstore::format::normalize_captured_at(&text.replace(' ', "+")).ok_or_else(|| {
        invalid(
            if name == "since" { "invalid_since" } else { "invalid_until" },
            format!("{name} must be an RFC 3339 time such as 2026-12-03T10:00:00Z (got {text:?})"),
        )
    })
}

/// A short string filter: 1–255 characters without control characters.
fn parse_word(name: &str, text: &str) -> Result<String, FilterError> {
    if text.is_empty() || text.chars().count() > 255 || text.chars().any(char::is_control) {
        return Err(invalid("invalid_filter", format!("{name} must be 1-255 printable characters")));
    }
    Ok(text.to_owned())
}

/// The filters of `GET /v1/events` and `camledger events search`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub camera: Option<String>,
    /// Stored form; inclusive.
    pub since: Option<String>,
    /// Stored form; inclusive.
    pub until: Option<String>,
    /// `Some(true)`: judged spam; `Some(false)`: judged not spam (pending events match neither).
    pub spam: Option<bool>,
    pub reason: Option<String>,
    pub media_type: Option<String>,
    pub camera_model: Option<String>,
    pub after: u64,
    pub limit: usize,
}

impl Filters {
    /// Parses query parameters; an unknown parameter or a bad value is an error (a typo
    /// must not silently widen the answer).
    pub fn from_params<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Filters, FilterError> {
        let mut f = Filters { limit: DEFAULT_LIMIT, ..Filters::default() };
        for (name, value) in params {
            match name {
                "after" => {
                    f.after = value
                        .parse()
                        .map_err(|_| invalid("invalid_after", "after must be a sequence number (0 for the start)"))?
                }
                "limit" => {
                    f.limit = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => return Err(invalid("invalid_limit", format!("limit must be between 1 and {MAX_LIMIT}"))),
                    }
                }
                "camera" => f.camera = Some(parse_word(name, value)?),
                "since" => f.since = Some(parse_time(name, value)?),
                "until" => f.until = Some(parse_time(name, value)?),
                "spam" => {
                    f.spam = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(invalid("invalid_spam", "spam must be true or false")),
                    })
                }
                "reason" => f.reason = Some(parse_word(name, value)?),
                "media_type" => f.media_type = Some(parse_word(name, value)?),
                "camera_model" => f.camera_model = Some(parse_word(name, value)?),
                other => {
                    return Err(invalid(
                        "invalid_filter",
                        format!(
                            "unknown parameter {other:?}; use camera, since, until, spam, reason, media_type, \
                             camera_model, after, limit"
                        ),
                    ))
                }
            }
        }
        Ok(f)
    }
}

/// One event of a search or export page, as stored (parsed by the caller).
#[derive(Clone, Debug)]
pub struct ExportRow {
    pub seq: i64,
    pub commit_id: String,
    pub event_json: String,
    pub verdict_id: Option<String>,
    pub verdict_json: Option<String>,
}
from_row!(ExportRow { seq, commit_id, event_json, verdict_id, verdict_json });

/// A search page.
#[derive(Clone, Debug)]
pub struct Page {
    pub rows: Vec<ExportRow>,
    /// The last seq of a full page (continue with `after=`), `None` at the end.
    pub next_after: Option<u64>,
}

/// WHERE clauses (each starting with ` AND `) and their binds, for filters on `rm_events e`.
fn event_conditions(
    camera: Option<&str>,
    since: Option<&str>,
    until: Option<&str>,
    sql: &mut String,
    args: &mut Vec<Arg>,
) {
    if let Some(camera) = camera {
        sql.push_str(" AND e.camera = ?");
        args.push(camera.into());
    }
    if let Some(since) = since {
        sql.push_str(" AND e.received_at >= ?");
        args.push(since.into());
    }
    if let Some(until) = until {
        sql.push_str(" AND e.received_at <= ?");
        args.push(until.into());
    }
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug)]
struct Count {
    n: i64,
}
from_row!(Count { n });

#[derive(Debug)]
struct Group {
    k: String,
    uploads: i64,
    spam: i64,
}
from_row!(Group { k, uploads, spam });

/// Counts of one (camera, format, model) over the stats' range.
#[derive(Debug)]
struct Combo {
    camera: String,
    media_type: String,
    camera_model: String,
    uploads: i64,
    spam: i64,
    last_seen: String,
}
from_row!(Combo { camera, media_type, camera_model, uploads, spam, last_seen });

/// Formats (most uploads first, then by name), the top [`TOP_MODELS`] camera models (the
/// same order; `''`, no EXIF, left out) and the cameras (by name), from the per-(camera,
/// format, model) sums. Names compare as bytes, as both backends' binary collations do.
fn fold_combos(combos: &[Combo]) -> (Vec<FormatCount>, Vec<ModelCount>, Vec<CameraStats>) {
    let mut formats: BTreeMap<&str, i64> = BTreeMap::new();
    let mut models: BTreeMap<&str, i64> = BTreeMap::new();
    let mut cameras: BTreeMap<&str, CameraStats> = BTreeMap::new();
    for c in combos {
        *formats.entry(&c.media_type).or_default() += c.uploads;
        if !c.camera_model.is_empty() {
            *models.entry(&c.camera_model).or_default() += c.uploads;
        }
        let camera = cameras.entry(&c.camera).or_insert_with(|| CameraStats {
            camera: c.camera.clone(),
            uploads: 0,
            spam: 0,
            last_seen: String::new(),
        });
        camera.uploads += c.uploads;
        camera.spam += c.spam;
        if c.last_seen > camera.last_seen {
            camera.last_seen = c.last_seen.clone();
        }
    }
    let mut formats: Vec<FormatCount> =
        formats.into_iter().map(|(format, uploads)| FormatCount { format: format.to_owned(), uploads }).collect();
    formats.sort_by(|a, b| b.uploads.cmp(&a.uploads).then_with(|| a.format.cmp(&b.format)));
    let mut models: Vec<ModelCount> =
        models.into_iter().map(|(model, uploads)| ModelCount { model: model.to_owned(), uploads }).collect();
    models.sort_by(|a, b| b.uploads.cmp(&a.uploads).then_with(|| a.model.cmp(&b.model)));
    models.truncate(TOP_MODELS);
    (formats, models, cameras.into_values().collect())
}

/// `?camera=&since=&until=` of the stats.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsQuery {
    pub camera: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl StatsQuery {
    pub fn from_params<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<StatsQuery, FilterError> {
        let mut q = StatsQuery::default();
        for (name, value) in params {
            match name {
                "camera" => q.camera = Some(parse_word(name, value)?),
                "since" => q.since = Some(parse_time(name, value)?),
                "until" => q.until = Some(parse_time(name, value)?),
                other => {
                    return Err(invalid(
                        "invalid_filter",
                        format!("unknown parameter {other:?}; use camera, since, until"),
                    ))
                }
            }
        }
        Ok(q)
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FormatCount {
    pub format: String,
    pub uploads: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ModelCount {
    pub model: String,
    pub uploads: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DayCount {
    pub date: String,
    pub uploads: i64,
    pub spam: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SpamStats {
    pub total: i64,
    pub by_reason: BTreeMap<String, i64>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CameraStats {
    pub camera: String,
    pub uploads: i64,
    pub spam: i64,
    pub last_seen: String,
}

/// `GET /v1/stats` and `camledger stats`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub formats: Vec<FormatCount>,
    pub top_camera_models: Vec<ModelCount>,
    pub uploads_per_day: Vec<DayCount>,
    pub spam: SpamStats,
    pub cameras: Vec<CameraStats>,
    /// Projected events not yet judged (in the filtered range).
    pub verdict_lag: i64,
    /// How far the read model got (events and verdicts): the numbers above cover exactly
    /// that much of the ledger.
    pub projected: Projected,
}

/// `date` (`YYYY-MM-DD`) plus `days`.
fn add_days(date: &str, days: i64) -> Option<String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(date, format).ok()?;
    day.checked_add(time::Duration::days(days))?.format(format).ok()
}

impl ReadModel {
    /// One search page (events after `f.after` matching every filter, oldest first).
    pub async fn search(&self, f: &Filters) -> Result<Page, Error> {
        // Two steps: the seqs of the page from the indexes alone (each filter column is in the
        // index that drives the query, so the wide rows, about 1.3 kB of JSON each, are read
        // only for the page), then those rows by primary key.
        let columns = "SELECT e.seq AS n";
        // With a camera, its index is the narrow one (1% of the rows at 100 cameras); SQLite's
        // planner, even after ANALYZE, took the media_type index for camera + media_type +
        // reason and read 300,000 rows (7 s). InnoDB's statistics choose right by themselves.
        let events = match (&f.camera, f.spam, self.pool.is_mysql()) {
            (Some(_), Some(_), false) => "rm_events e INDEXED BY rm_events_camera_spam",
            (Some(_), None, false) => "rm_events e INDEXED BY rm_events_camera",
            _ => "rm_events e",
        };
        let (mut sql, mut args, order) = match (&f.reason, &f.camera) {
            // Driven by the (reason, seq) index: a rare reason reads only its own rows.
            (Some(reason), None) => (
                "SELECT r.seq AS n FROM rm_reasons r JOIN rm_events e ON e.seq = r.seq WHERE r.reason = ? AND r.seq > ?"
                    .to_owned(),
                vec![Arg::from(reason.as_str()), Arg::from(i64_of(f.after))],
                "r.seq",
            ),
            (Some(reason), Some(_)) => (
                format!(
                    "{columns} FROM {events} WHERE EXISTS (SELECT 1 FROM rm_reasons r WHERE r.reason = ? AND r.seq = e.seq) \
                     AND e.seq > ?"
                ),
                vec![Arg::from(reason.as_str()), Arg::from(i64_of(f.after))],
                "e.seq",
            ),
            (None, _) => (format!("{columns} FROM {events} WHERE e.seq > ?"), vec![Arg::from(i64_of(f.after))], "e.seq"),
        };
        event_conditions(f.camera.as_deref(), f.since.as_deref(), f.until.as_deref(), &mut sql, &mut args);
        if let Some(spam) = f.spam {
            sql.push_str(" AND e.spam = ?");
            args.push(i64::from(spam).into());
        }
        if let Some(media_type) = &f.media_type {
            sql.push_str(" AND e.media_type = ?");
            args.push(media_type.as_str().into());
        }
        if let Some(model) = &f.camera_model {
            sql.push_str(" AND e.camera_model = ?");
            args.push(model.as_str().into());
        }
        let limit = f.limit.clamp(1, MAX_LIMIT);
        sql.push_str(&format!(" ORDER BY {order} LIMIT {}", limit + 1));
        let mut seqs: Vec<Count> = self.pool.fetch_all(&sql, &args).await?;
        let next_after = if seqs.len() > limit {
            seqs.truncate(limit);
            seqs.last().map(|r| r.n as u64)
        } else {
            None
        };
        if seqs.is_empty() {
            return Ok(Page { rows: Vec::new(), next_after });
        }
        let rows: Vec<ExportRow> = self
            .pool
            .fetch_all(
                &format!(
                    "SELECT seq, commit_id, event_json, verdict_id, verdict_json FROM rm_events \
                     WHERE seq IN ({}) ORDER BY seq",
                    vec!["?"; seqs.len()].join(", ")
                ),
                &seqs.iter().map(|r| Arg::from(r.n)).collect::<Vec<_>>(),
            )
            .await?;
        Ok(Page { rows, next_after })
    }

    /// Events `after + 1 ..= to`, at most `limit`, oldest first (an export page).
    pub async fn export_page(&self, after: u64, to: u64, limit: usize) -> Result<Vec<ExportRow>, Error> {
        let sql = format!(
            "SELECT seq, commit_id, event_json, verdict_id, verdict_json FROM rm_events \
             WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT {}",
            limit.max(1)
        );
        Ok(self.pool.fetch_all(&sql, &[i64_of(after).into(), i64_of(to).into()]).await?)
    }

    /// The stats; `today` (`YYYY-MM-DD`, UTC) ends `uploads_per_day` unless `until` does.
    pub async fn stats(&self, q: &StatsQuery, today: &str) -> Result<Stats, Error> {
        // Read the state first: rows committed after it only make the numbers newer.
        let projected = self.pool.state().await?;
        let raw = q.since.is_some() || q.until.is_some();
        // The source rows: (day, camera, media_type, camera_model, uploads, spam, last_seen),
        // from the counters, or from the events in the time range when one is given.
        let mut args: Vec<Arg> = Vec::new();
        let source = if raw {
            let mut sql = String::from(
                "SELECT SUBSTR(e.received_at, 1, 10) AS day, e.camera AS camera, e.media_type AS media_type, \
                 COALESCE(e.camera_model, '') AS camera_model, 1 AS uploads, \
                 CASE WHEN e.spam = 1 THEN 1 ELSE 0 END AS spam, e.received_at AS last_seen \
                 FROM rm_events e WHERE 1 = 1",
            );
            event_conditions(q.camera.as_deref(), q.since.as_deref(), q.until.as_deref(), &mut sql, &mut args);
            sql
        } else {
            let mut sql = String::from(
                "SELECT day, camera, media_type, camera_model, uploads, spam, last_seen FROM rm_counts WHERE 1 = 1",
            );
            if let Some(camera) = &q.camera {
                sql.push_str(" AND camera = ?");
                args.push(camera.as_str().into());
            }
            sql
        };
        // One pass for formats, models and cameras: the source grouped by (camera, format,
        // model) is a few hundred rows, folded here. (Five GROUP BY passes over the ~27,000
        // counter rows of a million events took p99 800 ms.)
        let combos: Vec<Combo> = self
            .pool
            .fetch_all(
                &format!(
                    "SELECT s.camera AS camera, s.media_type AS media_type, s.camera_model AS camera_model, \
                     CAST(SUM(s.uploads) AS SIGNED) AS uploads, CAST(SUM(s.spam) AS SIGNED) AS spam, \
                     MAX(s.last_seen) AS last_seen FROM ({source}) s \
                     GROUP BY s.camera, s.media_type, s.camera_model"
                ),
                &args,
            )
            .await?;
        let (formats, models, cameras) = fold_combos(&combos);
        let end = q.until.as_deref().map_or(today, |u| &u[..10]).to_owned();
        let start = add_days(&end, -(STATS_DAYS - 1)).unwrap_or_else(|| end.clone());
        let mut day_args = args.clone();
        day_args.extend([Arg::from(start.as_str()), Arg::from(end.as_str())]);
        let days: Vec<Group> = self
            .pool
            .fetch_all(
                &format!(
                    "SELECT s.day AS k, CAST(SUM(s.uploads) AS SIGNED) AS uploads, CAST(SUM(s.spam) AS SIGNED) AS spam, \
                     MAX(s.last_seen) AS last_seen FROM ({source}) s WHERE s.day >= ? AND s.day <= ? GROUP BY s.day"
                ),
                &day_args,
            )
            .await?;
        let by_day: HashMap<String, &Group> = days.iter().map(|g| (g.k.clone(), g)).collect();
        let mut uploads_per_day = Vec::new();
        let mut day = start.clone();
        for _ in 0..STATS_DAYS {
            let g = by_day.get(&day);
            uploads_per_day.push(DayCount {
                date: day.clone(),
                uploads: g.map_or(0, |g| g.uploads),
                spam: g.map_or(0, |g| g.spam),
            });
            match add_days(&day, 1) {
                Some(next) if next <= end => day = next,
                _ => break,
            }
        }
        // Reasons of spam verdicts.
        let mut reason_args: Vec<Arg> = Vec::new();
        let reason_sql = if raw {
            let mut sql = String::from(
                // Driven by the events in the range (an index holding every column used here),
                // each joined to its reasons by seq; from the reasons side, every spam reason
                // of the ledger was read (p99 1.4 s at a million events). SQLite keeps the
                // order of a CROSS JOIN, and without INDEXED BY took the spam index (every
                // spam event of the ledger, 0.3 s).
                &format!(
                    "SELECT r.reason AS k, COUNT(*) AS uploads, 0 AS spam, '' AS last_seen \
                     FROM rm_events e {} CROSS JOIN rm_reasons r WHERE r.seq = e.seq AND e.spam = 1",
                    if self.pool.is_mysql() { "" } else { "INDEXED BY rm_events_time" }
                ),
            );
            event_conditions(q.camera.as_deref(), q.since.as_deref(), q.until.as_deref(), &mut sql, &mut reason_args);
            sql.push_str(" GROUP BY r.reason");
            sql
        } else {
            let mut sql = String::from(
                "SELECT reason AS k, CAST(SUM(n) AS SIGNED) AS uploads, 0 AS spam, '' AS last_seen \
                 FROM rm_reason_counts WHERE 1 = 1",
            );
            if let Some(camera) = &q.camera {
                sql.push_str(" AND camera = ?");
                reason_args.push(camera.as_str().into());
            }
            sql.push_str(" GROUP BY reason");
            sql
        };
        let reasons: Vec<Group> = self.pool.fetch_all(&reason_sql, &reason_args).await?;
        let mut lag_sql = String::from("SELECT COUNT(*) AS n FROM rm_events e WHERE e.seq > ?");
        let mut lag_args: Vec<Arg> = vec![i64_of(projected.verdicts_seq).into()];
        event_conditions(q.camera.as_deref(), q.since.as_deref(), q.until.as_deref(), &mut lag_sql, &mut lag_args);
        let lag: Count = self.pool.fetch_one(&lag_sql, &lag_args).await?;
        Ok(Stats {
            formats,
            top_camera_models: models,
            uploads_per_day,
            spam: SpamStats {
                total: cameras.iter().map(|c| c.spam).sum(),
                by_reason: reasons.iter().map(|g| (g.k.clone(), g.uploads)).collect(),
            },
            cameras,
            verdict_lag: lag.n,
            projected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_what_they_do_not_know() {
        let f = Filters::from_params([
            ("camera", "cam-1"),
            ("since", "2026-12-03T10:00:00+01:00"),
            ("until", "2026-12-03T10:00:00 01:00"),
            ("spam", "true"),
            ("limit", "5"),
            ("after", "7"),
        ])
        .unwrap();
        assert_eq!(f.camera.as_deref(), Some("cam-1"));
        assert_eq!(f.since.as_deref(), Some("2026-12-03T09:00:00.000000Z"));
        assert_eq!(f.until, f.since, "a '+' that arrived as a space is taken back");
        assert_eq!((f.spam, f.limit, f.after), (Some(true), 5, 7));
        for (name, value, code) in [
            ("spam", "yes", "invalid_spam"),
            ("since", "yesterday", "invalid_since"),
            ("until", "2026-13-01T00:00:00Z", "invalid_until"),
            ("limit", "0", "invalid_limit"),
            ("limit", "1001", "invalid_limit"),
            ("after", "-1", "invalid_after"),
            ("camara", "cam-1", "invalid_filter"),
            ("camera", "", "invalid_filter"),
        ] {
            assert_eq!(Filters::from_params([(name, value)]).unwrap_err().code, code, "{name}={value}");
        }
        assert_eq!(StatsQuery::from_params([("limit", "5")]).unwrap_err().code, "invalid_filter");
    }

    #[test]
    fn days_are_added_across_months_and_years() {
        assert_eq!(add_days("2026-12-31", 1).as_deref(), Some("2027-01-01"));
        assert_eq!(add_days("2026-03-01", -29).as_deref(), Some("2026-01-31"));
        assert_eq!(add_days("nonsense", 1), None);
    }
}
