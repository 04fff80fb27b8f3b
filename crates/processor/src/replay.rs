//! Compliance replay: re-judge a range of events without writing anything, and compare each
//! recomputed verdict with the one recorded in git.
//!
//! The near-duplicate index is rebuilt from every event before the range (hashes only), then
//! the range is judged in seq order exactly as the worker does ([`crate::judge`]), so with the
//! same model, configuration and inputs every recorded verdict is reproduced: same `spam`,
//! `reasons` and `near_duplicate_of`, scores within [`SCORE_TOLERANCE`] (the ledger stores
//! scores in millionths), and the same `perceptual_hash` where one was recorded. Every hash is
//! recomputed from the image: the one a verdict records (which workers trust to rebuild their
//! index) is checked here, not used.

use std::collections::BTreeMap;

use camledger_eventstore::Ledger;
use serde::Serialize;
use tracing::instrument;

use crate::classifier::Classifier;
use crate::judge::{self, analyse, hash_only, AnalyseError, EventFacts};
use crate::neardup::NearDupIndex;
use crate::worker::{unix_seconds, WorkerError, UNDECODABLE};

/// Largest score difference that still counts as equal.
pub const SCORE_TOLERANCE: f64 = 1e-6 + 1e-9;

/// The comparable part of a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub spam: bool,
    pub reasons: Vec<String>,
    pub scores: BTreeMap<String, f64>,
    pub near_duplicate_of: Option<u64>,
    /// `<algorithm>:<hex>`; `None` for an undecodable image or a verdict written before the
    /// field existed.
    pub perceptual_hash: Option<String>,
}

/// One replayed event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub seq: u64,
    /// `None` when the event has no verdict yet.
    pub recorded: Option<Outcome>,
    pub recomputed: Outcome,
    pub agrees: bool,
}

/// Counts over the range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub events: u64,
    pub agreements: u64,
    /// Recorded ok, recomputed spam.
    pub flips_to_spam: u64,
    /// Recorded spam, recomputed ok.
    pub flips_to_ok: u64,
    /// Same spam bit, but reasons, near-duplicate, scores or the recorded hash differ.
    pub other_differences: u64,
    pub unjudged: u64,
}

/// Whether two outcomes are the same verdict (scores within [`SCORE_TOLERANCE`]; a recorded
/// hash must match, a verdict that records none is not held to one).
pub fn same(recorded: &Outcome, recomputed: &Outcome) -> bool {
    recorded.perceptual_hash.as_ref().is_none_or(|h| Some(h) == recomputed.perceptual_hash.as_ref())
        && recorded.spam == recomputed.spam
        && recorded.reasons == recomputed.reasons
        && recorded.near_duplicate_of == recomputed.near_duplicate_of
        && recorded.scores.len() == recomputed.scores.len()
        && recorded
            .scores
            .iter()
            .zip(&recomputed.scores)
            .all(|((ka, va), (kb, vb))| ka == kb && (va - vb).abs() <= SCORE_TOLERANCE)
}

impl Summary {
    fn add(&mut self, row: &Row) {
        self.events += 1;
        match &row.recorded {
            None => self.unjudged += 1,
            Some(_) if row.agrees => self.agreements += 1,
            Some(recorded) => match (recorded.spam, row.recomputed.spam) {
                (false, true) => self.flips_to_spam += 1,
                (true, false) => self.flips_to_ok += 1,
                _ => self.other_differences += 1,
            },
        }
    }

    /// Any judged event whose verdict was not reproduced.
    pub fn has_differences(&self) -> bool {
        self.flips_to_spam + self.flips_to_ok + self.other_differences > 0
    }
}

/// Re-judges events `from..=to` (clamped to the head) and compares with the recorded
/// verdicts. `progress(done, total)` is called after each event. Writes nothing.
#[instrument(skip_all, fields(from, to), err)]
pub fn replay(
    ledger: &Ledger,
    from: u64,
    to: Option<u64>,
    config: &judge::Config,
    classifier: &mut Classifier,
    mut progress: impl FnMut(u64, u64),
) -> Result<(Vec<Row>, Summary), WorkerError> {
    let head = ledger.head()?.map_or(0, |h| h.seq);
    let (from, to) = (from.max(1), to.unwrap_or(head).min(head));
    let mut index = NearDupIndex::new(config.thresholds.near_duplicate_distance).with_window(config.window_secs);
    let total = (to + 1).saturating_sub(from) + (from - 1);
    for seq in 1..from {
        let (record, bytes) = ledger.image(seq)?;
        if let Ok(hash) = hash_only(&bytes, config) {
            index.insert(seq, &record.camera, unix_seconds(seq, &record.received_at)?, hash);
        }
        progress(seq, total);
    }
    let mut rows = Vec::new();
    let mut summary = Summary::default();
    for seq in from..=to {
        let (record, bytes) = ledger.image(seq)?;
        let recomputed = match analyse(&bytes, config, Some(classifier)) {
            Ok(analysis) => {
                let facts = EventFacts {
                    seq,
                    camera: &record.camera,
                    received_at: unix_seconds(seq, &record.received_at)?,
                    duplicate_of: record.duplicate_of,
                };
                let verdict = judge::judge_in_order(&mut index, &facts, &analysis, config)?;
                Outcome {
                    spam: verdict.spam,
                    reasons: verdict.reasons.iter().map(|r| (*r).to_owned()).collect(),
                    scores: verdict.scores,
                    near_duplicate_of: verdict.near_duplicate_of,
                    perceptual_hash: Some(config.hasher.record(analysis.hash)),
                }
            }
            Err(AnalyseError::Decode(_)) => Outcome {
                spam: true,
                reasons: vec![UNDECODABLE.to_owned()],
                scores: BTreeMap::new(),
                near_duplicate_of: None,
                perceptual_hash: None,
            },
            Err(AnalyseError::Classify(e)) => return Err(e.into()),
        };
        let recorded = ledger.verdict(seq)?.map(|stored| Outcome {
            spam: stored.verdict.spam,
            reasons: stored.verdict.reasons,
            scores: stored.verdict.scores,
            near_duplicate_of: stored.verdict.near_duplicate_of,
            perceptual_hash: stored.verdict.perceptual_hash,
        });
        let agrees = recorded.as_ref().is_some_and(|r| same(r, &recomputed));
        let row = Row { seq, recorded, recomputed, agrees };
        summary.add(&row);
        rows.push(row);
        progress(seq, total);
    }
    Ok((rows, summary))
}

#[cfg(test)]
mod tests;
