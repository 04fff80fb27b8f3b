//! Judging one event: the composition of decode, hash, blank detection, classifier, the
//! near-duplicate index and the verdict policy.
//!
//! Split in two on purpose:
//! - [`analyse`] depends only on the image bytes (and the model), so workers run it in
//!   parallel, in any order, each with its own [`Classifier`].
//! - [`judge_in_order`] consults and then extends the near-duplicate index, so it must be
//!   called in seq order: "near-duplicate of an earlier event" means a lower seq, and a
//!   replay over the same events must see the same index states to reproduce every verdict.

use image::RgbImage;
use tracing::instrument;

use crate::admission::Limits;
use crate::blank::{blank_stats, BlankStats};
use crate::classifier::{Classification, Classifier, ClassifyError};
use crate::decode::{decode_scaled, decode_scaled_pair, DecodeError};
use crate::neardup::{Mark, NearDupIndex, Query, QueryError, Scope};
use crate::phash::Hasher;
use crate::scene::{Scenes, SCENE_DISTANCE};
use crate::verdict::{decide, NearDuplicate, Signals, Thresholds, Verdict};

/// How images are judged (configuration, fixed for a run so that replays reproduce it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub limits: Limits,
    pub hasher: Hasher,
    /// `classifier` should be the model manifest's threshold.
    pub thresholds: Thresholds,
    pub scope: Scope,
    /// Only events received at most this many seconds before count as near-duplicate
    /// originals; `None` = all earlier events.
    pub window_secs: Option<i64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            hasher: Hasher::default(),
            thresholds: Thresholds::default(),
            scope: Scope::All,
            window_secs: None,
        }
    }
}

impl Config {
    /// The defaults, with the classifier threshold taken from the model's manifest (what
    /// `serve`, `worker`, `replay` and `evaluate` start from; `--spam-threshold` replaces it).
    pub fn for_model(model: &crate::classifier::Model) -> Self {
        let mut config = Self::default();
        config.thresholds.classifier = model.manifest().threshold;
        config
    }
}

/// Everything judging remembers between events, in seq order: the near-duplicate index and
/// every camera's recent scene. A pure function of the judged events and their verdicts, so
/// workers and replays rebuild it from the ledger ([`History::record`]).
#[derive(Debug)]
pub struct History {
    pub index: NearDupIndex,
    pub scenes: Scenes,
}

/// A point to roll a [`History`] back to (a batch that lost the race to another worker).
#[derive(Debug)]
pub struct HistoryMark {
    index: Mark,
    scenes: Scenes,
}

impl History {
    pub fn new(config: &Config) -> Self {
        Self {
            index: NearDupIndex::new(config.thresholds.near_duplicate_distance).with_window(config.window_secs),
            scenes: Scenes::new(),
        }
    }

    /// Adds an event judged earlier (its hash, `None` when undecodable, and whether its
    /// recorded reasons accept it into its camera's scene, [`crate::scene::accepts`]), exactly
    /// as [`judge_in_order`] would have left it. Call in seq order.
    pub fn record(&mut self, seq: u64, camera: &str, received_at: i64, hash: Option<u64>, accepted: bool) {
        if let Some(hash) = hash {
            self.index.insert(seq, camera, received_at, hash);
        }
        self.scenes.record(seq, camera, hash, accepted);
    }

    pub fn mark(&mut self) -> HistoryMark {
        HistoryMark { index: self.index.mark(), scenes: self.scenes.clone() }
    }

    pub fn rollback(&mut self, mark: HistoryMark) {
        self.index.rollback(mark.index);
        self.scenes = mark.scenes;
    }
}

/// Order-independent facts about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub hash: u64,
    pub blank: BlankStats,
    pub classification: Option<Classification>,
}

/// Why an image could not be analysed. Decode errors: the event is recorded as undecodable
/// (no retry). Classifier errors: logged with the seq and retried once by the worker.
#[derive(Debug, thiserror::Error)]
pub enum AnalyseError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Classify(#[from] ClassifyError),
}

/// The facts of the event being judged that the order-dependent step needs.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub seq: u64,
    pub camera: &'a str,
    /// `received_at` as Unix seconds.
    pub received_at: i64,
    /// The event's exact-duplicate original, from `event.json`.
    pub duplicate_of: Option<u64>,
}

/// The size perceptual hashes and blank statistics are computed at, whatever the model (enough
/// for the 32×32 pHash and the 64×64 blank statistics): a hash recorded in a verdict stays
/// comparable across model changes.
pub const HASH_SIDE: u32 = 64;

/// The decode size for a classifier (its input's longer side), at least 64.
pub fn decode_side(classifier: Option<&Classifier>) -> u32 {
    classifier
        .map_or(HASH_SIDE, |c| {
            let (w, h) = c.model().input_size();
            w.max(h)
        })
        .max(HASH_SIDE)
}

/// Decodes once at reduced scale and computes every order-independent signal.
#[instrument(level = "debug", skip_all, fields(size = bytes.len()), err(level = "debug"))]
pub fn analyse(bytes: &[u8], config: &Config, classifier: Option<&mut Classifier>) -> Result<Analysis, AnalyseError> {
    let side = decode_side(classifier.as_deref());
    let (small, input): (RgbImage, RgbImage) = decode_scaled_pair(bytes, HASH_SIDE, side, &config.limits)?;
    let hash = config.hasher.hash(&small);
    let blank = blank_stats(&small);
    let classification = match classifier {
        Some(classifier) => Some(classifier.classify(&input)?),
        None => None,
    };
    Ok(Analysis { hash, blank, classification })
}

/// Only the perceptual hash (at [`HASH_SIDE`], as [`analyse`] computes it): what an index
/// rebuild needs.
pub fn hash_only(bytes: &[u8], config: &Config) -> Result<u64, DecodeError> {
    Ok(config.hasher.hash(&decode_scaled(bytes, HASH_SIDE, &config.limits)?))
}

/// Looks up earlier near-duplicates and the camera's scene, applies the policy, and adds the
/// outcome to the history. Call in seq order (see the module docs). The one judging function:
/// the worker, `replay` and `evaluate` all call it.
pub fn judge_in_order(
    history: &mut History,
    event: &EventFacts<'_>,
    analysis: &Analysis,
    config: &Config,
) -> Result<Verdict, QueryError> {
    let index = &mut history.index;
    let near = index.find(&Query {
        hash: analysis.hash,
        max_distance: config.thresholds.near_duplicate_distance,
        scope: config.scope,
        camera: event.camera,
        before_seq: event.seq,
        received_since: config.window_secs.map(|w| event.received_at.saturating_sub(w)),
    })?;
    index.insert(event.seq, event.camera, event.received_at, analysis.hash);
    let signals = Signals {
        duplicate_of: event.duplicate_of,
        near_duplicate: near.map(|m| NearDuplicate { seq: m.seq, distance: m.distance }),
        blank_score: analysis.blank.score,
        classifier_score: analysis.classification.as_ref().map(|c| c.score),
    };
    let mut verdict = decide(&signals, &config.thresholds);
    if let Some(classification) = &analysis.classification {
        // The top label and its probability (e.g. `label_meme`), so a reviewer sees what the
        // model thought, not only the summed spam score.
        let top = classification.probabilities.iter().copied().fold(0.0f32, f32::max);
        verdict.scores.insert(label_score_name(&classification.top_label), f64::from(top));
    }
    // Evidence only: recorded, never a reason (see crate::scene).
    if let Some(d) = history.scenes.distance(event.camera, analysis.hash) {
        verdict.scores.insert(SCENE_DISTANCE.to_owned(), f64::from(d));
    }
    history.scenes.record(event.seq, event.camera, Some(analysis.hash), crate::scene::accepts(&verdict.reasons));
    Ok(verdict)
}

/// The verdict on an image that does not decode (it changes no history).
pub fn judge_undecodable(config: &Config) -> Verdict {
    crate::verdict::undecodable(&config.thresholds)
}

/// The top label and its probability, read back from a verdict's scores (`label_<name>`, see
/// [`label_score_name`]); `None` for a verdict without a classifier score.
pub fn top_label(scores: &std::collections::BTreeMap<String, f64>) -> Option<(&str, f64)> {
    scores.iter().find_map(|(name, p)| name.strip_prefix(LABEL_PREFIX).map(|label| (label, *p)))
}

/// Prefix of the score that records the model's top label.
pub const LABEL_PREFIX: &str = "label_";

/// `label_<name>` in the `[a-z_]{1,32}` alphabet the ledger requires for score names.
pub(crate) fn label_score_name(label: &str) -> String {
    let cleaned = label.chars().map(|c| {
        if c.is_ascii_lowercase() {
            c
        } else if c.is_ascii_uppercase() {
            c.to_ascii_lowercase()
        } else {
            '_'
        }
    });
    format!("label_{}", cleaned.collect::<String>()).chars().take(32).collect()
}

#[cfg(test)]
mod tests;
