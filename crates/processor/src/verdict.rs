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
/// Reason recorded for an admitted image that cannot be decoded.
pub const UNDECODABLE: &str = "undecodable";

/// Score name under which every verdict records the classifier threshold in force
/// (`--spam-threshold`, else the model manifest's), so a replay judges each event with the
/// threshold it was judged under. A configuration value, not a measurement: it sits among the
/// scores because `scores` is the one open map of `verdict.json` that every version-1 reader
/// accepts.
pub const SPAM_THRESHOLD: &str = "spam_threshold";

/// The threshold verdicts recorded without [`SPAM_THRESHOLD`] were made under: the classifier
/// threshold always came from the model manifest (`Config::for_model`), and every default
/// model shipped so far (`84eb9779…`, `f743e523…`, `696e4e45…`) has 0.9. A replay uses the
/// manifest threshold of the model it is given for such verdicts, which is this for the
/// shipped models; see docs/event-format.md, section 9.
pub const OLD_DEFAULT_SPAM_THRESHOLD: f64 = 0.9;

/// Scores added to `verdict.json` after verdicts were first written. A verdict that lacks one
/// of them was written before it existed, so a replay does not count its appearance as a
/// difference (every other score must match exactly).
pub const LATER_SCORES: &[&str] = &[SPAM_THRESHOLD, crate::scene::SCENE_DISTANCE];

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
    /// Spam by the classifier when `classifier_score >= classifier` (`--spam-threshold`, else
    /// the model manifest's). Recorded in every verdict as [`SPAM_THRESHOLD`].
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
/// classifier. The classifier threshold in force is recorded as [`SPAM_THRESHOLD`].
pub fn decide(signals: &Signals, thresholds: &Thresholds) -> Verdict {
    let mut reasons = Vec::new();
    let mut scores = BTreeMap::new();
    scores.insert(SPAM_THRESHOLD.to_owned(), thresholds.classifier);
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

/// `value` rounded to millionths, the resolution `verdict.json` records scores at: a threshold
/// that is used exactly as it is recorded keeps `replay --strict` exact.
pub fn recordable(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

/// The verdict on an admitted image that does not decode: spam, reason [`UNDECODABLE`], only
/// the threshold in force among the scores.
pub fn undecodable(thresholds: &Thresholds) -> Verdict {
    Verdict {
        spam: true,
        reasons: vec![UNDECODABLE],
        scores: [(SPAM_THRESHOLD.to_owned(), thresholds.classifier)].into(),
        near_duplicate_of: None,
    }
}

#[cfg(test)]
mod tests;
