//! How well do dHash, pHash and a 256-bit PDQ-style hash separate altered copies from distinct
//! photos, on real photos?
//!
//! `cargo run --release -p camledger-processor --example hash_separation -- DIR [N]`
//!
//! Takes the first N (default 60) JPEG/PNG files of DIR (sorted by name), makes the copies the
//! issue lists (re-encoded at q55, resized to 90%, cropped 3% per side, brightened 10%,
//! text-stamped), hashes everything through the production path (JPEG q92 upload, scaled
//! decode to 64×64) and prints, per hash: the worst distance per alteration, recall and
//! false-match rate between distinct photos at several distances. The unit tests measure the
//! same on synthetic scenes; this is for real photographs (not committed: use any folder).

use std::path::PathBuf;

use camledger_processor::admission::Limits;
use camledger_processor::decode::{decode_scaled, luma_at};
use camledger_processor::phash::{distance, distance256, pdq256, Hasher};
use camledger_processor::verdict::Thresholds;
use image::{imageops::FilterType, Rgb, RgbImage};

fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("encoding to memory cannot fail");
    out
}

/// The production path: the image uploaded as a q92 JPEG, decoded at reduced scale to 64×64.
fn uploaded(image: &RgbImage) -> RgbImage {
    decode_scaled(&jpeg(image, 92), 64, &Limits::default()).expect("valid jpeg")
}

fn alterations(image: &RgbImage) -> Vec<(&'static str, RgbImage)> {
    let (w, h) = image.dimensions();
    let reencoded = image::load_from_memory(&jpeg(image, 55)).expect("just encoded").into_rgb8();
    let resized = image::imageops::resize(image, w * 9 / 10, h * 9 / 10, FilterType::CatmullRom);
    let (dx, dy) = (w * 3 / 100, h * 3 / 100);
    let cropped = image::imageops::crop_imm(image, dx, dy, w - 2 * dx, h - 2 * dy).to_image();
    let mut brightened = image.clone();
    brightened.pixels_mut().for_each(|p| p.0 = p.0.map(|c| (f32::from(c) * 1.1).min(255.0) as u8));
    let mut stamped = image.clone();
    let (x0, y0, bw, bh) = (w / 20, h * 85 / 100, w * 6 / 10, h / 12);
    for y in y0..(y0 + bh).min(h) {
        for x in x0..(x0 + bw).min(w) {
            let (gx, gy) = ((x - x0) % (bh / 2 + 1), (y - y0) * 4 / bh.max(1));
            let stroke = gx < 2 || gy == 0 || (gx + gy) % 5 == 0;
            stamped.put_pixel(x, y, if stroke { Rgb([250, 250, 250]) } else { Rgb([20, 20, 20]) });
        }
    }
    vec![
        ("reencoded", reencoded),
        ("resized90", resized),
        ("cropped3", cropped),
        ("brightened10", brightened),
        ("text_stamped", stamped),
    ]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: hash_separation DIR [N]"));
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("readable directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| matches!(x.to_str(), Some("jpg" | "jpeg" | "png"))))
        .collect();
    files.sort();
    let photos: Vec<RgbImage> = files
        .iter()
        .filter_map(|p| image::open(p).ok().map(|i| i.into_rgb8()))
        .filter(|i| i.width().min(i.height()) >= 128)
        .take(n)
        .collect();
    // A folder may hold the same photo twice (one picture in two bundles). Those pairs are not
    // distinct photos: drop later copies, judged by pixels (mean absolute luma difference at
    // 32×32 under 6 of 255), not by any of the hashes under test.
    let thumbs: Vec<Vec<f32>> = photos.iter().map(|p| luma_at(p, 32)).collect();
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32 <= 6.0;
    let keep: Vec<bool> = (0..photos.len()).map(|i| !(0..i).any(|j| same(&thumbs[i], &thumbs[j]))).collect();
    let before = photos.len();
    let photos: Vec<RgbImage> = photos.into_iter().zip(&keep).filter(|(_, &k)| k).map(|(p, _)| p).collect();
    println!("{} photos from {} ({} repeated photos left out)", photos.len(), dir.display(), before - photos.len());
    // Each candidate: name, bits, hash of an upload, distance between two hashes.
    type Candidate = (&'static str, u32, fn(&RgbImage) -> [u64; 4], fn(&[u64; 4], &[u64; 4]) -> u32);
    let candidates: [Candidate; 3] = [
        ("dHash", 64, |i| [Hasher::DHash.hash(&uploaded(i)), 0, 0, 0], |a, b| distance(a[0], b[0])),
        ("pHash", 64, |i| [Hasher::PHash.hash(&uploaded(i)), 0, 0, 0], |a, b| distance(a[0], b[0])),
        ("PDQ-256", 256, |i| pdq256(&uploaded(i)), distance256),
    ];
    // The default distance (for 64 bits), scaled to the hash's length.
    let default = Thresholds::default().near_duplicate_distance;
    for (name, bits, hash, dist) in &candidates {
        let scaled_default = default * bits / 64;
        let originals: Vec<[u64; 4]> = photos.iter().map(hash).collect();
        let mut copies: Vec<(&str, u32)> = Vec::new();
        for (photo, original) in photos.iter().zip(&originals) {
            for (how, altered) in alterations(photo) {
                copies.push((how, dist(original, &hash(&altered))));
            }
        }
        let mut distinct = Vec::new();
        for i in 0..originals.len() {
            for j in i + 1..originals.len() {
                distinct.push(dist(&originals[i], &originals[j]));
            }
        }
        distinct.sort_unstable();
        println!("{name}: closest distinct pairs {:?}", &distinct[..distinct.len().min(5)]);
        for how in ["reencoded", "resized90", "cropped3", "brightened10", "text_stamped"] {
            let mut d: Vec<u32> = copies.iter().filter(|c| c.0 == how).map(|c| c.1).collect();
            d.sort_unstable();
            let within = d.iter().filter(|&&x| x <= scaled_default).count() as f64 / d.len() as f64;
            println!(
                "  {how:<13} median {:>3}  worst {:>3}  within {scaled_default}: {within:.3}",
                d[d.len() / 2],
                d[d.len() - 1]
            );
        }
        // The same fractions of the hash's length: 64-bit d<=8 is 256-bit d<=32.
        for t in [6, 8, 10, 12, 14, 16, 20, 24].map(|t| t * bits / 64) {
            let recall = copies.iter().filter(|c| c.1 <= t).count() as f64 / copies.len() as f64;
            let false_rate = distinct.iter().filter(|&&d| d <= t).count() as f64 / distinct.len() as f64;
            println!("  d<={t:<3}: recall {recall:.3}  false match rate {false_rate:.5}");
        }
        // Separation independent of a threshold: the best recall at zero false matches, and the
        // gap between the worst copy and the closest distinct pair as a fraction of the bits.
        let closest = distinct.first().copied().unwrap_or(*bits);
        let clean = copies.iter().filter(|c| c.1 < closest).count() as f64 / copies.len() as f64;
        let worst = copies.iter().map(|c| c.1).max().unwrap_or(0);
        let gap = (f64::from(closest) - f64::from(worst)) / f64::from(*bits);
        println!("  recall below the closest distinct pair ({closest}): {clean:.3}; gap to the worst copy {gap:+.3} of the bits");
    }
}
