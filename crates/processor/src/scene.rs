//! Each camera's own scene: evidence no image classifier has.
//!
//! A fixed camera sees the same scene day after day. [`Scenes`] keeps, per camera, the
//! perceptual hashes (the 64-bit hash of the 64×64 scaled decode that every verdict records)
//! of its last [`FRAMES`] accepted frames, and a new frame's
//! [`SCENE_DISTANCE`] is its Hamming distance to the nearest of them: small for the camera's
//! own scene under other light, large for a frame that shows something else.
//!
//! A frame is *accepted* into its camera's scene when its content was ([`accepts`]): no
//! `classifier`, `blank` or `undecodable` reason. Duplicates and near-duplicates are accepted:
//! a fixed camera's frames of a static scene are near-duplicates of each other by default
//! (scope `all`, distance 10), and they are exactly the scene.
//!
//! What it is allowed to do (measured in docs/design.md, "The camera's own scene"):
//! - It never changes `spam` and adds no reason: the distance is recorded as a score only.
//! - It says nothing (no score) until the camera has [`MIN_FRAMES`] accepted frames, so a
//!   camera's first frames are never measured against a scene that is not there yet.
//! - A camera that is moved sees a new scene: its first frame after the move scores far (it
//!   is judged on its other signals like any frame), and once accepted it is part of the
//!   scene, so the next frame of the new view scores near; after [`FRAMES`] accepted frames
//!   the old scene is forgotten. Nothing else happens.
//!
//! State is bounded and a pure function of the verdict chain: at most [`MAX_CAMERAS`] cameras
//! (the one whose last accepted frame is oldest is forgotten first) × [`FRAMES`] hashes of 8
//! bytes, about 400 bytes per camera with its name and bookkeeping: 1.6 MB at most. It is rebuilt like the near-duplicate index, from the recorded
//! verdicts in seq order (`perceptual_hash` and `reasons`), so a restarted worker and a replay
//! from any seq compute the same distances as the worker that wrote the verdicts.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::phash::distance;
use crate::verdict::{BLANK, CLASSIFIER, UNDECODABLE};

/// Score name: Hamming distance (0–64) from the frame's hash to the nearest of its camera's
/// recent accepted frames.
pub const SCENE_DISTANCE: &str = "scene_distance";
/// Accepted frames kept per camera.
pub const FRAMES: usize = 32;
/// Accepted frames a camera needs before its frames get a [`SCENE_DISTANCE`].
pub const MIN_FRAMES: usize = 8;
/// Cameras kept; beyond it the camera whose last accepted frame is oldest is forgotten (and
/// starts again from no frames when it comes back).
pub const MAX_CAMERAS: usize = 4096;

/// Whether a frame with these verdict reasons joins its camera's scene: none of them is about
/// its content (`classifier`, `blank`, `undecodable`).
pub fn accepts<S: AsRef<str>>(reasons: &[S]) -> bool {
    !reasons.iter().any(|r| matches!(r.as_ref(), CLASSIFIER | BLANK | UNDECODABLE))
}

#[derive(Debug, Clone, Default)]
struct Camera {
    /// Seq of the last accepted frame (eviction order).
    last_seq: u64,
    hashes: VecDeque<u64>,
}

/// The recent accepted frames of every camera (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct Scenes {
    cameras: HashMap<String, Camera>,
    /// `last_seq` → camera, to find the camera to forget.
    by_last_seq: BTreeMap<u64, String>,
    max_cameras: usize,
}

impl Scenes {
    pub fn new() -> Self {
        Self::with_max_cameras(MAX_CAMERAS)
    }

    pub fn with_max_cameras(max_cameras: usize) -> Self {
        Self { cameras: HashMap::new(), by_last_seq: BTreeMap::new(), max_cameras: max_cameras.max(1) }
    }

    /// Cameras held.
    pub fn len(&self) -> usize {
        self.cameras.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cameras.is_empty()
    }

    /// The distance from `hash` to `camera`'s scene, `None` while it has fewer than
    /// [`MIN_FRAMES`] accepted frames.
    pub fn distance(&self, camera: &str, hash: u64) -> Option<u32> {
        let scene = self.cameras.get(camera)?;
        if scene.hashes.len() < MIN_FRAMES {
            return None;
        }
        scene.hashes.iter().map(|h| distance(*h, hash)).min()
    }

    /// Records the outcome of event `seq` (call in seq order, for every judged event): an
    /// accepted frame ([`accepts`]) joins its camera's scene; others change nothing.
    pub fn record(&mut self, seq: u64, camera: &str, hash: Option<u64>, accepted: bool) {
        let Some(hash) = hash.filter(|_| accepted) else { return };
        match self.cameras.get_mut(camera) {
            Some(scene) => {
                self.by_last_seq.remove(&scene.last_seq);
                scene.last_seq = seq;
                if scene.hashes.len() == FRAMES {
                    scene.hashes.pop_front();
                }
                scene.hashes.push_back(hash);
            }
            None => {
                if self.cameras.len() >= self.max_cameras {
                    if let Some((_, oldest)) = self.by_last_seq.pop_first() {
                        self.cameras.remove(&oldest);
                    }
                }
                self.cameras.insert(camera.to_owned(), Camera { last_seq: seq, hashes: VecDeque::from([hash]) });
            }
        }
        self.by_last_seq.insert(seq, camera.to_owned());
    }
}

#[cfg(test)]
mod tests;
