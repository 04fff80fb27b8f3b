//! Perceptual hashes: 64-bit pHash (low frequencies of a 32×32 luma DCT) and 64-bit dHash
//! (signs of horizontal gradients on a 9×8 luma grid).
//!
//! Both work on the small decoded image (see [`crate::decode`]); neither needs more than 32×32
//! pixels. [`pdq256`] is a 256-bit PDQ-style candidate that was measured and not adopted.
//!
//! pHash at distance 10 is the default, by measurement on real photographs
//! (`examples/hash_separation.rs` over the training data's 298 photos: the altered copies the
//! specification names, 1,490 of them, against 44,253 distinct pairs; docs/design.md §10):
//!
//! | hash | distance | copies found | distinct pairs matched | closest distinct pair |
//! |---|---|---|---|---|
//! | dHash | ≤ 8 | 98.6% | 1.1e-4 | 6 |
//! | pHash | ≤ 10 | 97.9% | 0 | 14 |
//! | PDQ-style 256 | ≤ 64 | 97.7% | 0 | 92 |
//!
//! A new image is compared with every earlier one in scope, so the false-match rate per pair,
//! times the images in scope, is the share of legitimate photos wrongly flagged: dHash's rate
//! (the first default, chosen on 80 photos) is far too high for that. On the unit tests'
//! smooth synthetic scenes dHash's copies sit lower than pHash's; real photos decide.

use std::sync::OnceLock;

use image::RgbImage;

use crate::decode::luma_at;

/// Which perceptual hash to compute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hasher {
    #[default]
    PHash,
    DHash,
}

impl Hasher {
    pub fn hash(self, image: &RgbImage) -> u64 {
        match self {
            Hasher::PHash => phash(image),
            Hasher::DHash => dhash(image),
        }
    }

    /// The algorithm's name in `verdict.json`'s `perceptual_hash` (`dhash:<16 hex>`).
    pub fn name(self) -> &'static str {
        match self {
            Hasher::PHash => "phash",
            Hasher::DHash => "dhash",
        }
    }

    /// `hash` as recorded in `verdict.json`.
    pub fn record(self, hash: u64) -> String {
        format!("{}:{hash:016x}", self.name())
    }

    /// A recorded hash, if this hasher made it (another algorithm's hash is useless here).
    pub fn parse_record(self, recorded: &str) -> Option<u64> {
        let hex = recorded.strip_prefix(self.name())?.strip_prefix(':')?;
        (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
    }
}

/// Number of differing bits.
pub fn distance(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

const N: usize = 32;
const LOW: usize = 8;

/// DCT-II rows `scale · cos[(2x+1)uπ/2·SIDE]` for the frequencies `u = first..first + ROWS`.
fn dct_rows<const ROWS: usize, const SIDE: usize>(first: usize, scale: f32) -> [[f32; SIDE]; ROWS] {
    let mut table = [[0.0; SIDE]; ROWS];
    for (row, u) in table.iter_mut().zip(first..) {
        for (x, value) in row.iter_mut().enumerate() {
            *value = scale * (((2 * x + 1) as f32) * (u as f32) * std::f32::consts::PI / (2.0 * SIDE as f32)).cos();
        }
    }
    table
}

/// The pHash's 8 lowest DCT frequencies over 32 pixels, computed once.
fn cosines() -> &'static [[f32; N]; LOW] {
    static TABLE: OnceLock<[[f32; N]; LOW]> = OnceLock::new();
    TABLE.get_or_init(|| dct_rows(0, 1.0))
}

/// 64-bit pHash: the 8×8 lowest-frequency DCT coefficients of the 32×32 luma, each compared
/// with the median of the 63 AC coefficients. The DC term only measures overall brightness, so
/// it is left out: bit 0 is always 0 and the hash carries 63 informative bits.
pub fn phash(image: &RgbImage) -> u64 {
    let pixels = luma_at(image, N as u32);
    let cos = cosines();
    // Separable DCT, computing only the 8 low frequencies in each direction: rows first.
    let mut rows = [[0.0f32; LOW]; N]; // rows[y][u]
    for y in 0..N {
        let line = &pixels[y * N..(y + 1) * N];
        for u in 0..LOW {
            rows[y][u] = line.iter().zip(cos[u].iter()).map(|(p, c)| p * c).sum();
        }
    }
    let mut coeffs = [0.0f32; LOW * LOW]; // coeffs[v * 8 + u]
    for v in 0..LOW {
        for u in 0..LOW {
            coeffs[v * LOW + u] = (0..N).map(|y| rows[y][u] * cos[v][y]).sum();
        }
    }
    let mut ac: Vec<f32> = coeffs[1..].to_vec();
    ac.sort_by(f32::total_cmp);
    let median = (ac[ac.len() / 2 - 1] + ac[ac.len() / 2]) / 2.0;
    coeffs.iter().enumerate().skip(1).fold(0u64, |hash, (i, &c)| if c > median { hash | (1 << i) } else { hash })
}

/// 64-bit dHash: 8 rows × 8 comparisons of horizontally adjacent pixels of a 9×8 luma image.
pub fn dhash(image: &RgbImage) -> u64 {
    let small = crate::resize::triangle(image, 9, 8);
    let pixels = crate::decode::luma(&small);
    let mut hash = 0u64;
    for y in 0..8 {
        for x in 0..8 {
            if pixels[y * 9 + x + 1] > pixels[y * 9 + x] {
                hash |= 1 << (y * 8 + x);
            }
        }
    }
    hash
}

/// Side of the luma image a PDQ-style hash transforms.
const PDQ_SIDE: usize = 64;
/// Frequencies a PDQ-style hash keeps in each direction (1..=16; the DC row is skipped).
const PDQ_LOW: usize = 16;

/// The 16×64 DCT-II rows of PDQ (frequencies 1..=16, orthonormal scale), computed once.
fn pdq_cosines() -> &'static [[f32; PDQ_SIDE]; PDQ_LOW] {
    static TABLE: OnceLock<[[f32; PDQ_SIDE]; PDQ_LOW]> = OnceLock::new();
    TABLE.get_or_init(|| dct_rows(1, (2.0 / PDQ_SIDE as f32).sqrt()))
}

/// A 256-bit PDQ-style hash (after Facebook's PDQ): the 16×16 lowest non-DC frequencies of a
/// 64×64 luma DCT, each compared with their median. Like PDQ it works on a 64×64 luma image;
/// unlike PDQ the 64×64 comes from the processor's scaled decode with a triangle filter instead
/// of PDQ's Jarosz box filters, and there is no quality score. It is a measured candidate, not
/// the index's hash: `examples/hash_separation.rs` compares it with dHash and pHash and
/// docs/design.md §10 records why pHash is the default.
pub fn pdq256(image: &RgbImage) -> [u64; 4] {
    let pixels = luma_at(image, PDQ_SIDE as u32);
    let cos = pdq_cosines();
    // D · X · Dᵀ with D the 16×64 rows above: first D · X (16×64), then (D·X) · Dᵀ (16×16).
    let mut left = [[0.0f32; PDQ_SIDE]; PDQ_LOW];
    for (i, out) in left.iter_mut().enumerate() {
        for (y, row) in pixels.chunks_exact(PDQ_SIDE).enumerate() {
            let c = cos[i][y];
            out.iter_mut().zip(row).for_each(|(o, p)| *o += c * p);
        }
    }
    let mut coeffs = [0.0f32; PDQ_LOW * PDQ_LOW];
    for i in 0..PDQ_LOW {
        for j in 0..PDQ_LOW {
            coeffs[i * PDQ_LOW + j] = left[i].iter().zip(cos[j].iter()).map(|(a, b)| a * b).sum();
        }
    }
    let mut sorted = coeffs;
    sorted.sort_by(f32::total_cmp);
    let median = (sorted[127] + sorted[128]) / 2.0;
    let mut hash = [0u64; 4];
    for (k, &c) in coeffs.iter().enumerate() {
        if c > median {
            hash[k / 64] |= 1 << (k % 64);
        }
    }
    hash
}

/// Number of differing bits between two 256-bit hashes.
pub fn distance256(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

#[cfg(test)]
mod tests;
