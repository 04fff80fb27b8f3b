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
use crate::neardup::{NearDupIndex, Query, QueryError, Scope};
use crate::phash::Hasher;
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
    /// `serve`, `worker` and `replay` should start from).
    pub fn for_model(model: &crate::classifier::Model) -> Self {
        let mut config = Self::default();
        config.thresholds.classifier = model.manifest().threshold;
        config
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

/// Looks up earlier near-duplicates, adds this image to the index, and applies the policy.
/// Call in seq order (see the module docs).
pub fn judge_in_order(
    index: &mut NearDupIndex,
    event: &EventFacts<'_>,
    analysis: &Analysis,
    config: &Config,
) -> Result<Verdict, QueryError> {
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
    Ok(verdict)
}

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
