//! The verdict policy: a pure function from signals and thresholds to a verdict.
//!
//! Every signal that fires is a reason, and every score is recorded whether it fired or not,
//! so that a compliance replay can compare scores and a reviewer can see how close a call was.

use std::collections::BTreeMap;

/// Reason names as written in `verdict.json`.
pub const DUPLICATE: &str = "duplicate";
pub const NEAR_DUPLICATE: &str = "near_duplicate";
pub const BLANK: &str = "blank";
pub const CLASSIFIER: &str = "classifier";

/// The closest earlier image found by the near-duplicate index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearDuplicate {
    pub seq: u64,
    pub distance: u32,
}

/// What the processor measured about one event.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Signals {
    /// The event's own `duplicate_of` (exact SHA-256 duplicate, decided at ingest).
    pub duplicate_of: Option<u64>,
    pub near_duplicate: Option<NearDuplicate>,
    pub blank_score: f64,
    /// `None` when no classifier is configured.
    pub classifier_score: Option<f64>,
}

/// Policy thresholds (configuration).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Thresholds {
    /// Largest perceptual-hash distance that counts as a near-duplicate (default 10 bits of the
    /// 64-bit pHash: see the measurement in [`crate::phash`]).
    pub near_duplicate_distance: u32,
    /// Blank when `blank_score >= blank`.
    pub blank: f64,
    /// Spam by the classifier when `classifier_score >= classifier` (the model manifest's).
    pub classifier: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { near_duplicate_distance: 10, blank: 0.5, classifier: 0.5 }
    }
}

/// The outcome for one event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    pub spam: bool,
    pub reasons: Vec<&'static str>,
    pub scores: BTreeMap<String, f64>,
    pub near_duplicate_of: Option<u64>,
}

/// Applies the policy. Reasons come in a fixed order: duplicate, near_duplicate, blank,
/// classifier.
pub fn decide(signals: &Signals, thresholds: &Thresholds) -> Verdict {
    let mut reasons = Vec::new();
    let mut scores = BTreeMap::new();
    if signals.duplicate_of.is_some() {
        reasons.push(DUPLICATE);
    }
    let near = signals.near_duplicate.filter(|n| n.distance <= thresholds.near_duplicate_distance);
    if let Some(n) = signals.near_duplicate {
        scores.insert("near_duplicate_distance".to_owned(), f64::from(n.distance));
    }
    if near.is_some() {
        reasons.push(NEAR_DUPLICATE);
    }
    scores.insert(BLANK.to_owned(), signals.blank_score);
    if signals.blank_score >= thresholds.blank {
        reasons.push(BLANK);
    }
    if let Some(score) = signals.classifier_score {
        scores.insert(CLASSIFIER.to_owned(), score);
        if score >= thresholds.classifier {
            reasons.push(CLASSIFIER);
        }
    }
    Verdict { spam: !reasons.is_empty(), reasons, scores, near_duplicate_of: near.map(|n| n.seq) }
}

#[cfg(test)]
mod tests;
