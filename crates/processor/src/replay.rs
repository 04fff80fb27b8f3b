//! Compliance replay: re-judge a range of events without writing anything, and compare each
//! recomputed verdict with the one recorded in git.
//!
//! The judging history (near-duplicate index and camera scenes) is rebuilt from every event
//! before the range (hashes from the images, reasons from the recorded verdicts), then the range
//! is judged in seq order exactly as the worker does ([`crate::judge`]), each event with the
//! classifier threshold its verdict records ([`SPAM_THRESHOLD`]; for verdicts written before
//! it was recorded, [`threshold_before_recording`]; for unjudged events, the configured one),
//! so with the same model, configuration and inputs every recorded verdict is reproduced: same `spam`,
//! `reasons` and `near_duplicate_of`, scores within [`SCORE_TOLERANCE`] (the ledger stores
//! scores in millionths), and the same `perceptual_hash` where one was recorded. Every hash is
//! recomputed from the image: the one a verdict records (which workers trust to rebuild their
//! index) is checked here, not used.

use std::collections::BTreeMap;

use camledger_eventstore::Ledger;
use serde::Serialize;
use tracing::instrument;

use crate::classifier::{Classifier, Model};
use crate::judge::{self, analyse, hash_only, AnalyseError, EventFacts, History};
use crate::verdict::{LATER_SCORES, OLD_DEFAULT_SPAM_THRESHOLD, SPAM_THRESHOLD};
use crate::worker::{unix_seconds, WorkerError};

/// SHA-256 of every default model camledger shipped before verdicts recorded their threshold;
/// each manifest had threshold 0.9 ([`OLD_DEFAULT_SPAM_THRESHOLD`]).
pub const DEFAULT_MODELS_BEFORE_RECORDED_THRESHOLDS: &[&str] = &[
    "84eb9779a17dfbddd038f71681e48d831e70f40b791b37819241d5971ca09b02",
    "f743e5231911b900936a8d04b3199cf9be6fa0e211d5a3ef44ff66c5cbd594c0",
    "696e4e45271cbe28237d54610ce933a6b543ea0831307ec3d21b727af4dab8d1",
];

/// The classifier threshold a verdict without a recorded [`SPAM_THRESHOLD`] was made under:
/// until thresholds were recorded it was always the model manifest's. Exact when the replay
/// runs the verdict's own model (its manifest says it) or the verdict names a default model
/// camledger shipped (0.9); for another model the replay's manifest is the best knowledge.
pub fn threshold_before_recording(recorded_model_sha256: &str, replay_model: &Model) -> f64 {
    if replay_model.sha256().eq_ignore_ascii_case(recorded_model_sha256) {
        replay_model.manifest().threshold
    } else if DEFAULT_MODELS_BEFORE_RECORDED_THRESHOLDS.contains(&recorded_model_sha256) {
        OLD_DEFAULT_SPAM_THRESHOLD
    } else {
        replay_model.manifest().threshold
    }
}

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
/// hash must match, a verdict that records none is not held to one; a score added to verdicts
/// later ([`LATER_SCORES`]) is not held against a verdict written before it existed).
pub fn same(recorded: &Outcome, recomputed: &Outcome) -> bool {
    let recomputed_scores: Vec<(&String, &f64)> = recomputed
        .scores
        .iter()
        .filter(|(k, _)| recorded.scores.contains_key(*k) || !LATER_SCORES.contains(&k.as_str()))
        .collect();
    recorded.perceptual_hash.as_ref().is_none_or(|h| Some(h) == recomputed.perceptual_hash.as_ref())
        && recorded.spam == recomputed.spam
        && recorded.reasons == recomputed.reasons
        && recorded.near_duplicate_of == recomputed.near_duplicate_of
        && recorded.scores.len() == recomputed_scores.len()
        && recorded
            .scores
            .iter()
            .zip(recomputed_scores)
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
/// verdicts. `config.thresholds.classifier` applies to unjudged events only (see the module
/// docs). `progress(done, total)` is called after each event. Writes nothing.
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
    let mut history = History::new(config);
    let verdicts = ledger.verdicts()?;
    let total = (to + 1).saturating_sub(from) + (from - 1);
    for seq in 1..from {
        let (record, bytes) = ledger.image(seq)?;
        let hash = hash_only(&bytes, config).ok();
        // An event without a verdict yet joins no scene (nobody accepted it).
        let accepted = verdicts.verdict(seq)?.is_some_and(|v| crate::scene::accepts(&v.verdict.reasons));
        history.record(seq, &record.camera, unix_seconds(seq, &record.received_at)?, hash, accepted);
        progress(seq, total);
    }
    let mut rows = Vec::new();
    let mut summary = Summary::default();
    for seq in from..=to {
        let (record, bytes) = ledger.image(seq)?;
        let stored = verdicts.verdict(seq)?;
        let mut config = config.clone();
        if let Some(stored) = &stored {
            config.thresholds.classifier = match stored.verdict.scores.get(SPAM_THRESHOLD) {
                Some(recorded) => *recorded,
                None => threshold_before_recording(&stored.verdict.model_sha256, classifier.model()),
            };
        }
        let config = &config;
        let recomputed = match analyse(&bytes, config, Some(classifier)) {
            Ok(analysis) => {
                let facts = EventFacts {
                    seq,
                    camera: &record.camera,
                    received_at: unix_seconds(seq, &record.received_at)?,
                    duplicate_of: record.duplicate_of,
                };
                let verdict = judge::judge_in_order(&mut history, &facts, &analysis, config)?;
                Outcome {
                    spam: verdict.spam,
                    reasons: verdict.reasons.iter().map(|r| (*r).to_owned()).collect(),
                    scores: verdict.scores,
                    near_duplicate_of: verdict.near_duplicate_of,
                    perceptual_hash: Some(config.hasher.record(analysis.hash)),
                }
            }
            Err(AnalyseError::Decode(_)) => {
                let verdict = judge::judge_undecodable(config);
                Outcome {
                    spam: verdict.spam,
                    reasons: verdict.reasons.iter().map(|r| (*r).to_owned()).collect(),
                    scores: verdict.scores,
                    near_duplicate_of: verdict.near_duplicate_of,
                    perceptual_hash: None,
                }
            }
            Err(AnalyseError::Classify(e)) => return Err(e.into()),
        };
        let recorded = stored.map(|stored| Outcome {
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
