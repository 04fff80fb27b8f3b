//! The projector: reads events and verdicts after the last projected seq from git and writes
//! them, with the counters stats read, in one transaction per batch.
//!
//! The transaction starts with a compare-and-swap on `rm_state` (`UPDATE … WHERE events_seq
//! = <what this batch read from>`): a batch is applied once or not at all, whether the process
//! crashed mid-batch (the transaction rolls back; the next start reads from the old seq) or
//! another projector (`camledger reindex`, `stats` or `events search` on the same database
//! while `serve` runs) applied it first (the swap matches no row; re-read and continue).
//! Git reads run on the blocking pool, never on the request path or in the writer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use camledger_eventstore::{Exif, Ledger, StoredEvent, StoredVerdict};
use tokio_util::sync::CancellationToken;

use super::sql::{from_row, placeholders, Arg};
use super::{Error, Projected, ReadModel};

/// Most events (and most verdicts) in one transaction.
pub const BATCH: usize = 1000;
/// How often an idle projector looks at the refs (two ref reads and four object reads).
pub const POLL: Duration = Duration::from_millis(100);
/// Longest `camera_model` kept (MariaDB index limit); longer EXIF strings are cut.
const MAX_MODEL_CHARS: usize = 255;

/// The camera model of an image: EXIF Make and Model, with the make once (`Canon` + `Canon
/// EOS 5D` is `Canon EOS 5D`); `None` when the image has neither.
pub fn camera_model(exif: Option<&Exif>) -> Option<String> {
    let exif = exif?;
    let clean = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let model = match (clean(&exif.make), clean(&exif.model)) {
        (Some(make), Some(model)) if model.to_lowercase().starts_with(&make.to_lowercase()) => model,
        (Some(make), Some(model)) => format!("{make} {model}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => return None,
    };
    Some(model.chars().take(MAX_MODEL_CHARS).collect())
}

/// An event as its row.
#[derive(Clone, Debug)]
pub(crate) struct EventRow {
    pub(crate) seq: u64,
    pub(crate) commit_id: String,
    pub(crate) camera: String,
    pub(crate) received_at: String,
    pub(crate) day: String,
    pub(crate) media_type: String,
    pub(crate) camera_model: Option<String>,
    pub(crate) event_json: String,
}

impl EventRow {
    pub(crate) fn new(event: &StoredEvent) -> EventRow {
        let r = &event.record;
        EventRow {
            seq: r.seq,
            commit_id: event.id.clone(),
            camera: r.camera.clone(),
            received_at: r.received_at.clone(),
            day: r.received_at.get(..10).unwrap_or_default().to_owned(),
            media_type: r.media_type.clone(),
            camera_model: camera_model(r.exif.as_ref()),
            event_json: String::from_utf8_lossy(&r.to_canonical_json()).into_owned(),
        }
    }
}

/// A verdict as the columns of its event's row.
#[derive(Clone, Debug)]
pub(crate) struct VerdictRow {
    pub(crate) seq: u64,
    pub(crate) id: String,
    pub(crate) spam: bool,
    pub(crate) reasons: Vec<String>,
    pub(crate) verdict_json: String,
}

impl VerdictRow {
    pub(crate) fn new(stored: &StoredVerdict) -> VerdictRow {
        let v = &stored.verdict;
        VerdictRow {
            seq: v.event_seq,
            id: stored.id.clone(),
            spam: v.spam,
            reasons: v.reasons.clone(),
            verdict_json: String::from_utf8_lossy(&v.to_canonical_json()).into_owned(),
        }
    }
}

/// What one transaction applies: the events and verdicts right after `from`.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) from: Projected,
    pub(crate) events: Vec<EventRow>,
    pub(crate) verdicts: Vec<VerdictRow>,
}

impl Batch {
    pub(crate) fn to(&self) -> Projected {
        Projected {
            events_seq: self.events.last().map_or(self.from.events_seq, |e| e.seq),
            verdicts_seq: self.verdicts.last().map_or(self.from.verdicts_seq, |v| v.seq),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.verdicts.is_empty()
    }
}

/// Reads from git what follows `from`: at most `max` events, then at most `max` verdicts
/// (never past the last event projected by then, so each verdict finds its row).
fn read_batch(ledger: &Ledger, from: Projected, max: usize) -> Result<Batch, camledger_eventstore::read::Error> {
    let mut batch = Batch { from, ..Batch::default() };
    for event in ledger.events_from(from.events_seq + 1).take(max) {
        batch.events.push(EventRow::new(&event?));
    }
    let events_to = batch.to().events_seq;
    if from.verdicts_seq < events_to {
        let judged = ledger.verdict_head()?.map_or(0, |h| h.event_seq);
        let last = judged.min(events_to).min(from.verdicts_seq + max as u64);
        if last > from.verdicts_seq {
            let reader = ledger.verdicts()?;
            for seq in from.verdicts_seq + 1..=last {
                match reader.verdict(seq)? {
                    Some(stored) => batch.verdicts.push(VerdictRow::new(&stored)),
                    None => break,
                }
            }
        }
    }
    Ok(batch)
}

#[derive(Debug)]
struct EventKey {
    day: String,
    camera: String,
    media_type: String,
    camera_model: Option<String>,
}
from_row!(EventKey { day, camera, media_type, camera_model });

type CountKey = (String, String, String, String);

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Rows per multi-row INSERT (11 binds each stays far below both backends' limits).
const ROWS_PER_INSERT: usize = 200;

impl ReadModel {
    /// Applies `batch` in one transaction; `false` when another projector moved the state
    /// first (nothing was written).
    pub(crate) async fn apply(&self, batch: &Batch) -> Result<bool, Error> {
        let to = batch.to();
        let mut tx = self.pool.begin().await?;
        // The compare-and-swap first: it also takes the write lock (SQLite) or the row lock
        // (MariaDB) before anything is read.
        let swapped = tx
            .execute(
                "UPDATE rm_state SET events_seq = ?, verdicts_seq = ? \
                 WHERE id = 1 AND events_seq = ? AND verdicts_seq = ?",
                &[
                    i64_of(to.events_seq).into(),
                    i64_of(to.verdicts_seq).into(),
                    i64_of(batch.from.events_seq).into(),
                    i64_of(batch.from.verdicts_seq).into(),
                ],
            )
            .await?;
        if swapped != 1 {
            return Ok(false);
        }
        let mysql = self.pool.is_mysql();
        // uploads, spam, last_seen per (day, camera, media type, model).
        let mut counts: HashMap<CountKey, (i64, i64, String)> = HashMap::new();
        for chunk in batch.events.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO rm_events (seq, commit_id, camera, received_at, day, media_type, camera_model, event_json) \
                 VALUES {}",
                placeholders(chunk.len(), 8)
            );
            let mut args: Vec<Arg> = Vec::with_capacity(chunk.len() * 8);
            for e in chunk {
                args.extend([
                    i64_of(e.seq).into(),
                    e.commit_id.as_str().into(),
                    e.camera.as_str().into(),
                    e.received_at.as_str().into(),
                    e.day.as_str().into(),
                    e.media_type.as_str().into(),
                    e.camera_model.clone().into(),
                    e.event_json.as_str().into(),
                ]);
                let key =
                    (e.day.clone(), e.camera.clone(), e.media_type.clone(), e.camera_model.clone().unwrap_or_default());
                let entry = counts.entry(key).or_insert((0, 0, String::new()));
                entry.0 += 1;
                if e.received_at > entry.2 {
                    entry.2 = e.received_at.clone();
                }
            }
            tx.execute(&sql, &args).await?;
        }
        let in_batch: HashMap<u64, &EventRow> = batch.events.iter().map(|e| (e.seq, e)).collect();
        let mut reason_counts: HashMap<(String, String, String), i64> = HashMap::new();
        let mut reasons: Vec<(String, u64)> = Vec::new();
        for v in &batch.verdicts {
            tx.execute(
                "UPDATE rm_events SET spam = ?, verdict_id = ?, verdict_json = ? WHERE seq = ?",
                &[i64::from(v.spam).into(), v.id.as_str().into(), v.verdict_json.as_str().into(), i64_of(v.seq).into()],
            )
            .await?;
            reasons.extend(v.reasons.iter().map(|r| (r.clone(), v.seq)));
            if !v.spam {
                continue;
            }
            let key = match in_batch.get(&v.seq) {
                Some(e) => EventKey {
                    day: e.day.clone(),
                    camera: e.camera.clone(),
                    media_type: e.media_type.clone(),
                    camera_model: e.camera_model.clone(),
                },
                None => tx
                    .fetch_optional::<EventKey>(
                        "SELECT day, camera, media_type, camera_model FROM rm_events WHERE seq = ?",
                        &[i64_of(v.seq).into()],
                    )
                    .await?
                    .ok_or_else(|| Error::Corrupt { seq: v.seq, what: "a verdict without its event row".into() })?,
            };
            for reason in &v.reasons {
                *reason_counts.entry((key.day.clone(), key.camera.clone(), reason.clone())).or_default() += 1;
            }
            let count = (key.day, key.camera, key.media_type, key.camera_model.unwrap_or_default());
            counts.entry(count).or_insert((0, 0, String::new())).1 += 1;
        }
        reasons.sort();
        reasons.dedup();
        for chunk in reasons.chunks(ROWS_PER_INSERT) {
            let sql = format!("INSERT INTO rm_reasons (reason, seq) VALUES {}", placeholders(chunk.len(), 2));
            let args: Vec<Arg> =
                chunk.iter().flat_map(|(r, seq)| -> [Arg; 2] { [r.as_str().into(), i64_of(*seq).into()] }).collect();
            tx.execute(&sql, &args).await?;
        }
        let counts: Vec<_> = counts.into_iter().collect();
        for chunk in counts.chunks(ROWS_PER_INSERT) {
            let upsert = if mysql {
                "ON DUPLICATE KEY UPDATE uploads = uploads + VALUES(uploads), spam = spam + VALUES(spam), \
                 last_seen = GREATEST(last_seen, VALUES(last_seen))"
            } else {
                "ON CONFLICT (day, camera, media_type, camera_model) DO UPDATE SET \
                 uploads = uploads + excluded.uploads, spam = spam + excluded.spam, \
                 last_seen = MAX(last_seen, excluded.last_seen)"
            };
            let sql = format!(
                "INSERT INTO rm_counts (day, camera, media_type, camera_model, uploads, spam, last_seen) VALUES {} {upsert}",
                placeholders(chunk.len(), 7)
            );
            let args: Vec<Arg> = chunk
                .iter()
                .flat_map(|((day, camera, media, model), (uploads, spam, last))| -> [Arg; 7] {
                    [
                        day.as_str().into(),
                        camera.as_str().into(),
                        media.as_str().into(),
                        model.as_str().into(),
                        (*uploads).into(),
                        (*spam).into(),
                        last.as_str().into(),
                    ]
                })
                .collect();
            tx.execute(&sql, &args).await?;
        }
        let reason_counts: Vec<_> = reason_counts.into_iter().collect();
        for chunk in reason_counts.chunks(ROWS_PER_INSERT) {
            let upsert = if mysql {
                "ON DUPLICATE KEY UPDATE n = n + VALUES(n)"
            } else {
                "ON CONFLICT (day, camera, reason) DO UPDATE SET n = n + excluded.n"
            };
            let sql = format!(
                "INSERT INTO rm_reason_counts (day, camera, reason, n) VALUES {} {upsert}",
                placeholders(chunk.len(), 4)
            );
            let args: Vec<Arg> = chunk
                .iter()
                .flat_map(|((day, camera, reason), n)| -> [Arg; 4] {
                    [day.as_str().into(), camera.as_str().into(), reason.as_str().into(), (*n).into()]
                })
                .collect();
            tx.execute(&sql, &args).await?;
        }
        tx.commit().await?;
        self.publish(to);
        Ok(true)
    }

    fn publish(&self, now: Projected) {
        self.projected.send_if_modified(|p| {
            let changed = *p != now;
            *p = now;
            changed
        });
    }

    /// Projects one batch of what git has beyond the stored state; returns the events and
    /// verdicts applied (0: caught up).
    pub async fn step(&self, ledger: &Ledger, max: usize) -> Result<usize, Error> {
        let from = self.pool.state().await?;
        let reader = ledger.clone();
        let batch = tokio::task::spawn_blocking(move || read_batch(&reader, from, max))
            .await
            .map_err(|_| Error::Panicked)??;
        if batch.is_empty() {
            self.publish(from);
            return Ok(0);
        }
        let applied = batch.events.len() + batch.verdicts.len();
        if self.apply(&batch).await? {
            Ok(applied)
        } else {
            // Another projector got there first: read its state and go on.
            Ok(1)
        }
    }

    /// Projects until caught up with the refs as they are now; `progress(done, total)` is
    /// called after each batch with events projected and the events head.
    pub async fn catch_up(&self, ledger: &Ledger, mut progress: impl FnMut(u64, u64)) -> Result<Projected, Error> {
        loop {
            let applied = self.step(ledger, BATCH).await?;
            let at = self.pool.state().await?;
            let head = {
                let l = ledger.clone();
                tokio::task::spawn_blocking(move || l.head()).await.map_err(|_| Error::Panicked)??
            };
            progress(at.events_seq, head.map_or(0, |h| h.seq).max(at.events_seq));
            if applied == 0 {
                return Ok(at);
            }
        }
    }

    /// Empties every table and sets the projected seqs to 0, in one transaction.
    pub async fn reset(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        tx.execute("UPDATE rm_state SET events_seq = 0, verdicts_seq = 0 WHERE id = 1", &[]).await?;
        for table in ["rm_reasons", "rm_reason_counts", "rm_counts", "rm_events"] {
            tx.execute(&format!("DELETE FROM {table}"), &[]).await?;
        }
        tx.commit().await?;
        self.publish(Projected::default());
        Ok(())
    }

    /// Whether the rows at the projected seqs are the commits git has there: `false` when
    /// the read model belongs to other history (a data dir restored from an older snapshot,
    /// a read model copied from elsewhere), which must then be rebuilt.
    pub async fn matches_git(&self, ledger: &Ledger) -> Result<bool, Error> {
        #[derive(Debug)]
        struct Ids {
            commit_id: String,
            verdict_id: Option<String>,
        }
        from_row!(Ids { commit_id, verdict_id });
        let at = self.pool.state().await?;
        let stored = |seq: u64| async move {
            self.pool
                .fetch_all::<Ids>("SELECT commit_id, verdict_id FROM rm_events WHERE seq = ?", &[i64_of(seq).into()])
                .await
                .map(|mut rows| rows.pop())
        };
        let event_row = if at.events_seq > 0 { stored(at.events_seq).await? } else { None };
        let verdict_row = if at.verdicts_seq > 0 { stored(at.verdicts_seq).await? } else { None };
        let l = ledger.clone();
        let git = tokio::task::spawn_blocking(move || -> Result<(Option<String>, Option<String>), Error> {
            let head = l.head()?.map_or(0, |h| h.seq);
            let judged = l.verdict_head()?.map_or(0, |h| h.event_seq);
            let event = (at.events_seq > 0 && at.events_seq <= head).then(|| l.event(at.events_seq)).transpose()?;
            let verdict =
                (at.verdicts_seq > 0 && at.verdicts_seq <= judged).then(|| l.verdict(at.verdicts_seq)).transpose()?;
            Ok((event.map(|e| e.id), verdict.flatten().map(|v| v.id)))
        })
        .await
        .map_err(|_| Error::Panicked)??;
        let events_match = at.events_seq == 0 || event_row.map(|r| r.commit_id) == git.0;
        let verdicts_match = at.verdicts_seq == 0 || verdict_row.and_then(|r| r.verdict_id) == git.1;
        Ok(events_match && verdicts_match)
    }

    /// Rebuilds the read model when it does not match git (see [`ReadModel::matches_git`]).
    pub async fn check_against_git(&self, ledger: &Ledger) -> Result<(), Error> {
        if !self.matches_git(ledger).await? {
            let projected = self.pool.state().await?;
            tracing::warn!(?projected, "the read model does not match the ledger's history; rebuilding it from git");
            self.reset().await?;
        }
        Ok(())
    }
}

/// The projector task of `serve`: checks the read model against git, catches up, then
/// follows the refs (woken by [`ReadModel::wake`] or every [`POLL`]) until `stop`.
pub async fn run(model: Arc<ReadModel>, ledger: Ledger, stop: CancellationToken) {
    let mut checked = false;
    while !stop.is_cancelled() {
        let result = if checked {
            model.step(&ledger, BATCH).await
        } else {
            model.check_against_git(&ledger).await.map(|()| {
                checked = true;
                BATCH
            })
        };
        match result {
            // Caught up, or a partial batch (ingest is running): wait for a reader to wake it or
            // for the next poll, so the projector takes a tenth of a second's events per
            // transaction instead of chasing the writer batch by batch (measured with bench
            // ingest: chasing cost a quarter of the ingest rate on 2 loaded cores).
            Ok(applied) if applied < BATCH => {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = model.wake.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(
                    error = crate::error_chain::std_error_message(&e),
                    "the read model projection failed; retrying in 1 s"
                );
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// What `ROWS_PER_INSERT` and friends are for: applying an already-read batch (benchmarks
/// fill a read model with synthetic rows through the same path).
pub(crate) async fn apply_rows(
    model: &ReadModel,
    events: Vec<EventRow>,
    verdicts: Vec<VerdictRow>,
) -> Result<Projected, Error> {
    let from = model.pool.state().await?;
    let batch = Batch { from, events, verdicts };
    if !model.apply(&batch).await? {
        return Err(Error::Corrupt { seq: from.events_seq, what: "another projector moved the state".into() });
    }
    Ok(batch.to())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exif(make: Option<&str>, model: Option<&str>) -> Exif {
        Exif { make: make.map(str::to_owned), model: model.map(str::to_owned), date_time_original: None }
    }

    fn row(seq: u64, camera: &str) -> EventRow {
        EventRow {
            seq,
            commit_id: format!("{seq:040x}"),
            camera: camera.to_owned(),
            received_at: format!("2026-12-03T10:00:{:02}.000000Z", seq % 60),
            day: "2026-12-03".to_owned(),
            media_type: "image/jpeg".to_owned(),
            camera_model: None,
            event_json: "{}".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_batch_is_applied_once_even_when_two_projectors_race_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let model = ReadModel::open(&super::super::default_url(dir.path())).await.unwrap();
        let batch =
            Batch { from: Projected::default(), events: vec![row(1, "a"), row(2, "b"), row(3, "a")], verdicts: vec![] };
        assert!(model.apply(&batch).await.unwrap());
        assert!(!model.apply(&batch).await.unwrap(), "the second apply of the same batch must be refused");
        let at = model.pool.state().await.unwrap();
        assert_eq!(at, Projected { events_seq: 3, verdicts_seq: 0 });
        let stats = model.stats(&super::super::StatsQuery::default(), "2026-12-03").await.unwrap();
        assert_eq!(
            stats.cameras.iter().map(|c| (c.camera.as_str(), c.uploads)).collect::<Vec<_>>(),
            [("a", 2), ("b", 1)]
        );
        assert_eq!(stats.verdict_lag, 3);

        // A reopened model reads the committed state, and a reset empties everything.
        model.close().await;
        let model = ReadModel::open(&super::super::default_url(dir.path())).await.unwrap();
        assert_eq!(model.projected(), at);
        model.reset().await.unwrap();
        let stats = model.stats(&super::super::StatsQuery::default(), "2026-12-03").await.unwrap();
        assert!(stats.cameras.is_empty() && stats.formats.is_empty());
        assert_eq!(model.projected(), Projected::default());
    }

    #[test]
    fn camera_models_name_the_make_once() {
        assert_eq!(camera_model(Some(&exif(Some("Canon"), Some("Canon EOS 5D")))).as_deref(), Some("Canon EOS 5D"));
        assert_eq!(camera_model(Some(&exif(Some("NIKON"), Some("D750")))).as_deref(), Some("NIKON D750"));
        assert_eq!(camera_model(Some(&exif(None, Some(" X100 ")))).as_deref(), Some("X100"));
        assert_eq!(camera_model(Some(&exif(Some(" "), None))), None);
        assert_eq!(camera_model(None), None);
        assert_eq!(camera_model(Some(&exif(Some("A"), Some(&"m".repeat(400))))).unwrap().chars().count(), 255);
    }
}
