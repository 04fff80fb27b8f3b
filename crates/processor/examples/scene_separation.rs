//! How far is a fixed camera's next frame from its own recent scene, against a frame of
//! something else? Measures [`camledger_processor::scene`] on sequences built from real photos.
//!
//! `cargo run --release -p camledger-processor --example scene_separation -- DIR [SPAM_DIR] [N]`
//!
//! Each of the first N (default 60) photos of DIR (sorted by name) plays one camera. Its
//! frames are the photo through a day: exposure following a cosine from full daylight down to
//! night (15% light, desaturated, sensor noise) and back over 96 frames, with colour
//! temperature drift, ±1% jitter, JPEG quality 70–95, a "passer-by" (a patch of another photo
//! over 4–12% of the frame) in every third frame and a burned-in timestamp band in every
//! other. Every frame goes through the production path (JPEG upload, scaled decode to 64×64,
//! the 64-bit hash). The camera's scene is fed the frames as accepted, in order, and each
//! frame from the 9th on is measured before it joins (same scene); at every 8th frame the
//! distance of every other photo of DIR (another scene: a moved camera or a foreign photo) and
//! of every image of SPAM_DIR (spam) to that camera's scene is measured too.
//! Not committed data: use any folder of photographs (docs/design.md says which was used).

use std::path::{Path, PathBuf};

use camledger_processor::admission::Limits;
use camledger_processor::decode::decode_scaled;
use camledger_processor::phash::Hasher;
use camledger_processor::scene::Scenes;
use image::{imageops::FilterType, Rgb, RgbImage};

fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("encoding to memory cannot fail");
    out
}

fn hash(hasher: Hasher, image: &RgbImage, quality: u8) -> u64 {
    hasher.hash(&decode_scaled(&jpeg(image, quality), 64, &Limits::default()).expect("valid jpeg"))
}

struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn load(dir: &Path, n: usize) -> Vec<RgbImage> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("readable directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| matches!(e.to_str(), Some("jpg" | "jpeg" | "png" | "webp"))))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|p| image::open(p).ok())
        .map(|i| {
            let i = i.into_rgb8();
            let (w, h) = i.dimensions();
            let s = 640.0 / w.max(h) as f32;
            if s < 1.0 {
                image::imageops::resize(&i, (w as f32 * s) as u32, (h as f32 * s) as u32, FilterType::Triangle)
            } else {
                i
            }
        })
        .take(n)
        .collect()
}

/// Frame `t` of 96 of `photo`'s day (see the module docs).
fn frame(photo: &RgbImage, other: &RgbImage, t: usize, rng: &mut Rng) -> (RgbImage, u8) {
    let (w, h) = photo.dimensions();
    let phase = (t as f32 / 96.0) * std::f32::consts::TAU;
    let light = 0.15 + 0.85 * (0.5 + 0.5 * phase.cos());
    let night = light < 0.35;
    let warm = 1.0 + 0.12 * (phase * 0.5).sin();
    let (dx, dy) = (((rng.unit() - 0.5) * 0.02 * w as f32) as i64, ((rng.unit() - 0.5) * 0.02 * h as f32) as i64);
    let mut out = RgbImage::new(w, h);
    for (x, y, p) in out.enumerate_pixels_mut() {
        let sx = (x as i64 + dx).clamp(0, w as i64 - 1) as u32;
        let sy = (y as i64 + dy).clamp(0, h as i64 - 1) as u32;
        let s = photo.get_pixel(sx, sy).0.map(f32::from);
        let grey = 0.299 * s[0] + 0.587 * s[1] + 0.114 * s[2];
        let mut c = [s[0] * warm, s[1], s[2] / warm];
        if night {
            c = c.map(|v| 0.3 * v + 0.7 * grey);
        }
        let noise = if night { 10.0 } else { 2.0 };
        *p = Rgb(c.map(|v| (v * light + (rng.unit() - 0.5) * 2.0 * noise).clamp(0.0, 255.0) as u8));
    }
    if t.is_multiple_of(3) {
        let side = ((0.2 + 0.15 * rng.unit()) * w.min(h) as f32) as u32;
        let patch = image::imageops::resize(other, side, side, FilterType::Triangle);
        let (px, py) = ((rng.unit() * (w - side) as f32) as i64, (rng.unit() * (h - side) as f32) as i64);
        image::imageops::overlay(&mut out, &patch, px, py);
    }
    if t.is_multiple_of(2) {
        for y in h * 92 / 100..h * 97 / 100 {
            for x in w / 30..w * 45 / 100 {
                let on = (x / 3 + y / 2) % 4 == 0;
                out.put_pixel(x, y, if on { Rgb([255, 255, 255]) } else { Rgb([0, 0, 0]) });
            }
        }
    }
    (out, 70 + (rng.unit() * 25.0) as u8)
}

fn percentiles(name: &str, mut v: Vec<u32>) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<28} n={:>6}  min {:>2}  p1 {:>2}  p5 {:>2}  p50 {:>2}  p95 {:>2}  p99 {:>2}  max {:>2}",
        v.len(),
        v[0],
        at(0.01),
        at(0.05),
        at(0.5),
        at(0.95),
        at(0.99),
        v[v.len() - 1]
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: scene_separation DIR [SPAM_DIR] [N]"));
    let spam_dir = args.next().map(PathBuf::from);
    let n: usize = args.next().map_or(60, |a| a.parse().expect("N is a number"));
    let all = load(&dir, usize::MAX);
    let spam = spam_dir.map(|d| load(&d, usize::MAX)).unwrap_or_default();
    println!("{} photos ({} cameras), {} spam images", all.len(), n.min(all.len()), spam.len());
    for hasher in [Hasher::PHash] {
        let other_hashes: Vec<u64> = all.iter().map(|p| hash(hasher, p, 92)).collect();
        let spam_hashes: Vec<u64> = spam.iter().map(|p| hash(hasher, p, 92)).collect();
        let (mut same, mut night, mut others, mut spams) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for (c, photo) in all.iter().take(n).enumerate() {
            let mut scenes = Scenes::new();
            let camera = format!("cam-{c}");
            for t in 0..96 {
                let other = &all[(c + 1 + t) % all.len()];
                let (f, q) = frame(photo, other, t, &mut rng);
                let h = hash(hasher, &f, q);
                if let Some(d) = scenes.distance(&camera, h) {
                    same.push(d);
                    let phase = (t as f32 / 96.0) * std::f32::consts::TAU;
                    if 0.15 + 0.85 * (0.5 + 0.5 * phase.cos()) < 0.35 {
                        night.push(d);
                    }
                    if t % 8 == 0 {
                        for (_, oh) in other_hashes.iter().enumerate().filter(|(j, _)| *j != c) {
                            others.push(scenes.distance(&camera, *oh).expect("scene established"));
                        }
                        spams.extend(spam_hashes.iter().map(|sh| scenes.distance(&camera, *sh).expect("scene")));
                    }
                }
                scenes.record(t as u64 + 1, &camera, Some(h), true);
            }
        }
        println!("\n{hasher:?}: distance to the camera's scene (nearest of its last accepted frames)");
        percentiles("same scene, all frames", same.clone());
        percentiles("same scene, night frames", night);
        percentiles("another scene (other photo)", others.clone());
        if !spams.is_empty() {
            percentiles("spam", spams.clone());
        }
        println!("  d   same scene > d   another scene <= d   spam <= d");
        for d in [8u32, 10, 12, 14, 16, 18, 20, 22, 24] {
            let frac =
                |v: &[u32], f: &dyn Fn(u32) -> bool| v.iter().filter(|x| f(**x)).count() as f64 / v.len().max(1) as f64;
            println!(
                " {d:>2}   {:>13.4}   {:>18.4}   {:>9.4}",
                frac(&same, &|x| x > d),
                frac(&others, &|x| x <= d),
                frac(&spams, &|x| x <= d)
            );
        }
    }
}
