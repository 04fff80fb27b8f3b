//! Near-duplicate index: "is there an earlier image within Hamming distance `d` of this hash?"
//! answered without scanning every hash.
//!
//! Multi-index hashing: the 64-bit hash is cut into `D + 1` bands (`D` = the largest distance the
//! index is built for). Two hashes within distance `D` differ in at most `D` bits, so by the
//! pigeonhole principle at least one band is identical. Each band has an exact-match table
//! from band value to entries; a query looks up its `D + 1` band values, and only those
//! candidates have their full distance computed and their scope and time window checked. With
//! `D = 8`, bands are 7–8 bits wide, so a table bucket holds about `n / 2^7` entries of random
//! hashes; real photo hashes cluster more, which is why the candidates are filtered cheaply by
//! seq, camera and time before anything else.
//!
//! Entries are kept in insertion order and must be inserted in seq order (the worker applies
//! events in seq order even when several judge in parallel), so "earlier" is a seq comparison.

use std::collections::HashMap;

use crate::phash::distance;

/// Which earlier images count for near-duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only images from the same camera.
    SameCamera,
    /// Images from any camera.
    All,
}

/// One near-duplicate query.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub hash: u64,
    /// Largest Hamming distance that counts as a match; at most the index's `max_distance`.
    pub max_distance: u32,
    pub scope: Scope,
    /// The querying image's camera (used with [`Scope::SameCamera`]).
    pub camera: &'a str,
    /// Only entries with a lower seq match.
    pub before_seq: u64,
    /// Only entries received at or after this time (Unix seconds) match; `None` = no window.
    pub received_since: Option<i64>,
}

/// The closest earlier entry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub seq: u64,
    pub distance: u32,
}

/// A query asked for more than the index can answer exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Configuration error (the worker's distance exceeds the index's): fail the worker at start,
    /// never per event.
    #[error("query distance {asked} exceeds the index's maximum {max}")]
    DistanceTooLarge { asked: u32, max: u32 },
}

#[derive(Debug, Clone)]
struct Entry {
    hash: u64,
    seq: u64,
    camera: u32,
    received_at: i64,
}

/// In-memory multi-index hash table over 64-bit perceptual hashes.
#[derive(Debug, Clone)]
pub struct NearDupIndex {
    max_distance: u32,
    /// `(shift, mask)` of each band.
    bands: Vec<(u32, u64)>,
    tables: Vec<HashMap<u64, Vec<u32>>>,
    entries: Vec<Entry>,
    cameras: HashMap<String, u32>,
}

impl NearDupIndex {
    /// An empty index answering queries up to `max_distance` (clamped to 63).
    pub fn new(max_distance: u32) -> Self {
        let max_distance = max_distance.min(63);
        let count = max_distance + 1;
        let (base, extra) = (64 / count, 64 % count);
        let mut bands = Vec::with_capacity(count as usize);
        let mut shift = 0;
        for i in 0..count {
            let width = base + u32::from(i < extra);
            let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
            bands.push((shift, mask));
            shift += width;
        }
        Self {
            max_distance,
            tables: vec![HashMap::new(); bands.len()],
            bands,
            entries: Vec::new(),
            cameras: HashMap::new(),
        }
    }

    pub fn max_distance(&self) -> u32 {
        self.max_distance
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an image. Insert in seq order.
    pub fn insert(&mut self, seq: u64, camera: &str, received_at: i64, hash: u64) {
        let next_camera = self.cameras.len() as u32;
        let camera = *self.cameras.entry(camera.to_owned()).or_insert(next_camera);
        let index = u32::try_from(self.entries.len()).expect("fewer than 4 billion images per index");
        for (table, &(shift, mask)) in self.tables.iter_mut().zip(&self.bands) {
            table.entry((hash >> shift) & mask).or_default().push(index);
        }
        self.entries.push(Entry { hash, seq, camera, received_at });
    }

    /// Forgets every entry inserted after the first `len` (a worker that lost a race to
    /// append its verdicts undoes its batch before catching up with the winner's).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.entries.len() {
            return;
        }
        let keep = len as u32;
        // Entries are pushed in order, so the ones to drop are at the end of every bucket.
        for table in &mut self.tables {
            table.retain(|_, bucket| {
                while bucket.last().is_some_and(|&i| i >= keep) {
                    bucket.pop();
                }
                !bucket.is_empty()
            });
        }
        self.entries.truncate(len);
    }

    /// The closest matching earlier entry (ties: the lowest seq), if any.
    pub fn find(&self, query: &Query<'_>) -> Result<Option<Match>, QueryError> {
        if query.max_distance > self.max_distance {
            return Err(QueryError::DistanceTooLarge { asked: query.max_distance, max: self.max_distance });
        }
        let camera = match query.scope {
            Scope::All => None,
            Scope::SameCamera => match self.cameras.get(query.camera) {
                Some(&id) => Some(id),
                None => return Ok(None),
            },
        };
        let mut best: Option<Match> = None;
        for (table, &(shift, mask)) in self.tables.iter().zip(&self.bands) {
            let Some(candidates) = table.get(&((query.hash >> shift) & mask)) else {
                continue;
            };
            for &index in candidates {
                let entry = &self.entries[index as usize];
                if entry.seq >= query.before_seq
                    || camera.is_some_and(|c| c != entry.camera)
                    || query.received_since.is_some_and(|t| entry.received_at < t)
                {
                    continue;
                }
                let d = distance(entry.hash, query.hash);
                if d > query.max_distance {
                    continue;
                }
                let candidate = Match { seq: entry.seq, distance: d };
                best = match best {
                    Some(b) if (b.distance, b.seq) <= (d, entry.seq) => Some(b),
                    _ => Some(candidate),
                };
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests;
