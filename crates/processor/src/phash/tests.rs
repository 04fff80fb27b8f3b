use image::{Rgb, RgbImage};

use super::*;
use crate::admission::Limits;
use crate::decode::decode_scaled;
use crate::testutil::{alter, encode_jpeg, scene, Alteration, ALTERATIONS};

/// The production path: the image as a camera would upload it, decoded at reduced scale.
fn hash_of(image: &RgbImage, hasher: Hasher) -> u64 {
    let small = decode_scaled(&encode_jpeg(image, 92), 64, &Limits::default()).expect("valid jpeg");
    hasher.hash(&small)
}

#[test]
fn distance_counts_differing_bits() {
    let cases = [(0u64, 0u64, 0u32), (0, 1, 1), (0, u64::MAX, 64), (0b1010, 0b0101, 4)];
    for (a, b, d) in cases {
        assert_eq!(distance(a, b), d, "{a:#x} {b:#x}");
    }
}

#[test]
fn phash_leaves_the_dc_bit_clear_and_sets_about_half_the_others() {
    let hash = phash(&scene(1, 256, 256));
    assert_eq!(hash & 1, 0);
    let ones = hash.count_ones();
    assert!((24..=40).contains(&ones), "{ones} bits set");
}

#[test]
fn a_horizontal_ramp_has_the_dhash_of_all_rising_gradients() {
    let ramp = RgbImage::from_fn(90, 80, |x, _| Rgb([(x * 2) as u8; 3]));
    assert_eq!(dhash(&ramp), u64::MAX);
    let falling = RgbImage::from_fn(90, 80, |x, _| Rgb([(255 - x * 2) as u8; 3]));
    assert_eq!(dhash(&falling), 0);
}

/// Distances of altered copies to their originals and between distinct photos.
struct Distances {
    copies: Vec<(Alteration, u32)>,
    distinct: Vec<u32>,
}

impl Distances {
    fn measure(hasher: Hasher, photos: &[RgbImage]) -> Self {
        let originals: Vec<u64> = photos.iter().map(|p| hash_of(p, hasher)).collect();
        let mut copies = Vec::new();
        for how in ALTERATIONS {
            for (photo, &original) in photos.iter().zip(&originals) {
                copies.push((how, distance(original, hash_of(&alter(photo, how), hasher))));
            }
        }
        let mut distinct = Vec::new();
        for i in 0..originals.len() {
            for j in i + 1..originals.len() {
                distinct.push(distance(originals[i], originals[j]));
            }
        }
        Self { copies, distinct }
    }

    fn recall(&self, threshold: u32) -> f64 {
        let hits = self.copies.iter().filter(|(_, d)| *d <= threshold).count();
        hits as f64 / self.copies.len() as f64
    }

    fn false_match_rate(&self, threshold: u32) -> f64 {
        let hits = self.distinct.iter().filter(|d| **d <= threshold).count();
        hits as f64 / self.distinct.len() as f64
    }

    fn worst_copy(&self, how: Alteration) -> u32 {
        self.copies.iter().filter(|(h, _)| *h == how).map(|(_, d)| *d).max().unwrap_or(0)
    }
}

/// The default hash and distance find altered copies of synthetic scenes and match no two
/// distinct scenes (run with `--nocapture` for both hashes' tables). The choice of pHash itself
/// was made on real photographs (`examples/hash_separation.rs`, numbers in [`crate::phash`]):
/// on these smooth synthetic scenes dHash's copies sit lower, on real photos its distinct
/// pairs come much closer.
#[test]
fn the_default_hash_separates_altered_copies_from_distinct_scenes_at_the_default_distance() {
    let photos: Vec<RgbImage> = (0..16).map(|seed| scene(100 + seed, 480, 360)).collect();
    let threshold = crate::verdict::Thresholds::default().near_duplicate_distance;
    for hasher in [Hasher::PHash, Hasher::DHash] {
        let m = Distances::measure(hasher, &photos);
        let worst: Vec<(Alteration, u32)> = ALTERATIONS.iter().map(|&a| (a, m.worst_copy(a))).collect();
        let closest = m.distinct.iter().min().copied().unwrap_or(64);
        println!("{hasher:?}: worst copies {worst:?}, closest distinct pair {closest}");
        for d in [6, 8, 10, 12] {
            println!("  d<={d}: recall {:.3}, false match rate {:.4}", m.recall(d), m.false_match_rate(d));
        }
    }
    let default = Distances::measure(Hasher::default(), &photos);
    assert!(default.recall(threshold) >= 0.95, "recall {}", default.recall(threshold));
    assert_eq!(default.false_match_rate(threshold), 0.0);
    assert_eq!(Hasher::default(), Hasher::PHash, "the default follows the measurement on real photos");
}

#[test]
fn a_recorded_hash_reads_back_only_for_its_own_algorithm() {
    let recorded = Hasher::DHash.record(0x00f0_0000_0000_00ab);
    assert_eq!(recorded, "dhash:00f00000000000ab");
    assert_eq!(Hasher::DHash.parse_record(&recorded), Some(0x00f0_0000_0000_00ab));
    assert_eq!(Hasher::PHash.parse_record(&recorded), None, "a dHash is no pHash");
    assert_eq!(Hasher::DHash.parse_record("dhash:abc"), None);
    assert_eq!(Hasher::DHash.parse_record("dhashx:00f00000000000ab"), None);
}

#[test]
fn a_pdq_hash_splits_at_its_median_and_keeps_a_reencoded_copy_closer_than_another_scene() {
    let decoded =
        |image: &RgbImage| decode_scaled(&encode_jpeg(image, 92), 64, &Limits::default()).expect("valid jpeg");
    let photo = scene(7, 480, 360);
    let hash = pdq256(&decoded(&photo));
    assert_eq!(hash.iter().map(|h| h.count_ones()).sum::<u32>(), 128, "half above the median");
    let copy = pdq256(&decoded(&alter(&photo, Alteration::Reencoded)));
    let other = pdq256(&decoded(&scene(8, 480, 360)));
    assert!(distance256(&hash, &copy) <= 31, "copy at {}", distance256(&hash, &copy));
    assert!(distance256(&hash, &other) > 64, "distinct scene at {}", distance256(&hash, &other));
    assert_eq!(distance256(&hash, &hash), 0);
}
