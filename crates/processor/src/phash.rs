//! Perceptual hashes: 64-bit pHash (low frequencies of a 32×32 luma DCT) and 64-bit dHash
//! (signs of horizontal gradients on a 9×8 luma grid).
//!
//! Both work on the small decoded image (see [`crate::decode`]); neither needs more than 32×32
//! pixels. Which one the processor uses for near-duplicates was decided by measurement (the
//! `dhash_separates_altered_copies_from_distinct_photos_at_the_default_distance` test prints
//! the table): on synthetic photo-like scenes re-encoded (q55), resized to 90%, cropped 3%,
//! brightened 10% and text-stamped (16 scenes, 80 copies, 120 distinct pairs), the worst copy
//! was at distance 8 for dHash and 12 for pHash, while the closest pair of distinct photos was
//! 21 and 20 apart. At distance ≤ 8 dHash found 100% of copies (pHash 96%), with no false
//! match for either (a 24-scene run: dHash 100%, pHash 94%, closest distinct 16 and 20).
//! On real photographs (`examples/hash_separation.rs` over 80 photos of the Debian package
//! gcompris-qt-data 3.1-2, the training data's photo source: 400 copies, 3,160 distinct pairs)
//! the order holds: at distance ≤ 8 dHash found 97.8% of copies, pHash 92.7%, neither matched
//! a distinct pair; dHash's worst copies were the 3% crops (median 5, worst 14), pHash's the
//! text stamps (median 6, worst 20). The closest distinct pair was 11 bits apart for dHash and
//! 16 for pHash, so dHash's margin is thinner: do not raise the distance above ~10 with it. dHash is therefore
//! the default ([`Hasher::DHash`]); pHash stays available for data where it does better.
//! (A 256-bit PDQ-style hash was not built; the index is written for 64-bit hashes.)

use std::sync::OnceLock;

use image::RgbImage;

use crate::decode::luma_at;

/// Which perceptual hash to compute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hasher {
    PHash,
    #[default]
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

/// `cos[(2x+1)uπ/2N]` for the DCT-II, computed once.
fn cosines() -> &'static [[f32; N]; LOW] {
    static TABLE: OnceLock<[[f32; N]; LOW]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [[0.0; N]; LOW];
        for (u, row) in table.iter_mut().enumerate() {
            for (x, value) in row.iter_mut().enumerate() {
                *value = (((2 * x + 1) as f32) * (u as f32) * std::f32::consts::PI / (2.0 * N as f32)).cos();
            }
        }
        table
    })
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
    let small = image::imageops::resize(image, 9, 8, image::imageops::FilterType::Triangle);
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

/// The 16×64 DCT-II rows of PDQ (frequencies 1..=16), computed once.
fn pdq_cosines() -> &'static [[f32; PDQ_SIDE]; PDQ_LOW] {
    static TABLE: OnceLock<[[f32; PDQ_SIDE]; PDQ_LOW]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [[0.0; PDQ_SIDE]; PDQ_LOW];
        let scale = (2.0 / PDQ_SIDE as f32).sqrt();
        for (i, row) in table.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                let angle = std::f32::consts::PI / 2.0 / PDQ_SIDE as f32 * (i + 1) as f32 * (2 * j + 1) as f32;
                *value = scale * angle.cos();
            }
        }
        table
    })
}

/// A 256-bit PDQ-style hash (after Facebook's PDQ): the 16×16 lowest non-DC frequencies of a
/// 64×64 luma DCT, each compared with their median. Like PDQ it works on a 64×64 luma image;
/// unlike PDQ the 64×64 comes from the processor's scaled decode with a triangle filter instead
/// of PDQ's Jarosz box filters, and there is no quality score. It is a measured candidate, not
/// the index's hash: `examples/hash_separation.rs` compares it with dHash and pHash and
/// docs/design.md §10 records why dHash stays the default.
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
