//! The judging benchmark behind `camledger bench judge`: images per CPU-second of decode +
//! hash + blank detection + classification on 1080p JPEGs, with the reduced-scale decode
//! ([`decode_scaled_pair`], what the judge runs) and with the full decode ([`decode_full_pair`])
//! side by side, and their ratio.
//!
//! Inputs are generated, so every run sees the same bytes: photo-like 1920×1080 frames (smooth
//! structure plus uniform sensor-like noise), JPEG quality 90. The noise amplitude sets the
//! file size: ±3 gives ~270 KB (a typical camera frame), ±8 ~540 KB (a detailed one). One
//! thread does all the work, and the rate is counted per CPU-second of this process, which is
//! the per-core rate even on a shared machine (wall time would also count waiting for a core).

use std::io::Write;
use std::time::Instant;

use image::{Rgb, RgbImage};

use crate::admission::Limits;
use crate::blank::blank_stats;
use crate::classifier::Classifier;
use crate::decode::{decode_full_pair, decode_scaled_pair, DecodeError};
use crate::judge::HASH_SIDE;
use crate::phash::dhash;

/// Targets from the processor's specification.
pub const TARGET_PER_CORE: f64 = 150.0;
pub const TARGET_RATIO: f64 = 2.0;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Distinct JPEGs per set.
    pub images: usize,
    /// One set per noise amplitude (file size grows with it).
    pub noise: Vec<u64>,
    /// Minimum CPU-seconds per measurement (the 10 ms tick stays below 1% at 1 s).
    pub min_cpu_seconds: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self { images: 40, noise: vec![3, 8], min_cpu_seconds: 1.0 }
    }
}

/// Images per CPU-second of one path on one set.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathRates {
    pub decode: f64,
    pub hash_blank: f64,
    /// `None` without a classifier.
    pub classify: Option<f64>,
}

/// One set's results.
#[derive(Debug, Clone)]
pub struct SetResult {
    pub noise: u64,
    pub mean_bytes: usize,
    pub scaled: PathRates,
    pub full: PathRates,
}

impl SetResult {
    /// The whole pipeline's rate on the scaled path (with the classifier when there is one).
    pub fn scaled_pipeline(&self) -> f64 {
        self.scaled.classify.unwrap_or(self.scaled.hash_blank)
    }

    /// Scaled over full for the whole pipeline.
    pub fn ratio(&self) -> f64 {
        self.scaled_pipeline() / self.full.classify.unwrap_or(self.full.hash_blank)
    }
}

/// A photo-like frame: smooth colour structure plus uniform noise of ±`noise`.
pub fn photo(seed: u64, width: u32, height: u32, noise: u64) -> RgbImage {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let phase: Vec<f32> = (0..6).map(|_| (next() % 1000) as f32 / 100.0).collect();
    let (w, h) = (width as f32, height as f32);
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / w, y as f32 / h);
        let base = |c: usize| {
            let s = (fx * 7.0 + phase[c]).sin() * (fy * 5.0 + phase[c + 3]).cos();
            let t = (fx * 41.0 + fy * 29.0 + phase[c]).sin() * 0.3;
            120.0 + 80.0 * s + 30.0 * t
        };
        let n = (next() % (2 * noise + 1)) as f32 - noise as f32;
        Rgb([0, 1, 2].map(|c| (base(c) + n).clamp(0.0, 255.0) as u8))
    })
}

/// CPU seconds used by this process so far (all threads), from `/proc/self/stat`
/// (utime + stime, in ticks of 1/100 s on Linux); 0 where that file does not exist.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `f` over the inputs round-robin for at least `min_cpu` CPU-seconds; images per
/// CPU-second (falls back to wall time where CPU time cannot be read).
pub fn rate<E>(n: usize, min_cpu: f64, mut f: impl FnMut(usize) -> Result<(), E>) -> Result<f64, E> {
    f(0)?; // warm-up
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let mut rounds = 0usize;
    loop {
        f(rounds % n)?;
        rounds += 1;
        let cpu = cpu_seconds() - cpu_start;
        let wall = start.elapsed().as_secs_f64();
        if rounds >= n && (cpu >= min_cpu || (cpu == 0.0 && wall >= min_cpu)) {
            return Ok(rounds as f64 / if cpu > 0.0 { cpu } else { wall });
        }
    }
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("decoding a generated JPEG failed")]
    Decode(#[from] DecodeError),
    #[error("classifying failed")]
    Classify(#[from] crate::classifier::ClassifyError),
    #[error("encoding a generated JPEG failed")]
    Encode(#[from] image::ImageError),
    #[error("writing the report failed")]
    Io(#[from] std::io::Error),
}

type Decode = fn(&[u8], u32, u32, &Limits) -> Result<(RgbImage, RgbImage), DecodeError>;

/// Measures every set, printing a table to `out` as it goes, then the ratios and whether the
/// targets are met. `side` is the classifier's input size (see `judge::decode_side`); hashes
/// and blank statistics are computed at [`HASH_SIDE`], as the judge does.
pub fn judge_throughput(
    options: &Options,
    side: u32,
    mut classifier: Option<&mut Classifier>,
    out: &mut impl Write,
) -> Result<Vec<SetResult>, BenchError> {
    let limits = Limits::default();
    let n = options.images.max(1);
    writeln!(
        out,
        "judge bench: {n} JPEGs 1920x1080 q90 per set, decoded to {HASH_SIDE}x{HASH_SIDE} and {side}x{side}, one thread"
    )?;
    writeln!(out, "images per CPU-second (the per-core rate):")?;
    writeln!(
        out,
        "{:<16} {:<8} {:>10} {:>14} {:>12}",
        "set",
        "path",
        "decode",
        "+hash+blank",
        if classifier.is_some() { "+classify" } else { "(no model)" }
    )?;
    let mut results = Vec::new();
    for &noise in &options.noise {
        let jpegs = (0..n)
            .map(|i| {
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode_image(&photo(i as u64, 1920, 1080, noise))?;
                Ok(bytes)
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        let mean_bytes = jpegs.iter().map(Vec::len).sum::<usize>() / n;
        let set = format!("~{} KB (±{noise})", mean_bytes / 1000);
        let mut rates = [PathRates::default(); 2];
        for (slot, (name, decode)) in
            [("scaled", decode_scaled_pair as Decode), ("full", decode_full_pair as Decode)].into_iter().enumerate()
        {
            let min = options.min_cpu_seconds;
            let decode_rate = rate(n, min, |i| decode(&jpegs[i], HASH_SIDE, side, &limits).map(drop))?;
            let hash_blank = rate(n, min, |i| {
                let (small, _) = decode(&jpegs[i], HASH_SIDE, side, &limits)?;
                std::hint::black_box((dhash(&small), blank_stats(&small)));
                Ok::<_, BenchError>(())
            })?;
            let classify = match classifier.as_deref_mut() {
                Some(classifier) => Some(rate(n, min, |i| {
                    let (small, input) = decode(&jpegs[i], HASH_SIDE, side, &limits)?;
                    let label = classifier.classify(&input)?;
                    std::hint::black_box((dhash(&small), blank_stats(&small), label));
                    Ok::<_, BenchError>(())
                })?),
                None => None,
            };
            rates[slot] = PathRates { decode: decode_rate, hash_blank, classify };
            let label = if slot == 0 { set.as_str() } else { "" };
            let classify = classify.map_or("-".to_owned(), |c| format!("{c:.0}"));
            writeln!(out, "{label:<16} {name:<8} {decode_rate:>10.0} {hash_blank:>14.0} {classify:>12}")?;
        }
        let [scaled, full] = rates;
        let ratio = |s: f64, f: f64| format!("{:.2}x", s / f);
        let classify_ratio = match (scaled.classify, full.classify) {
            (Some(s), Some(f)) => ratio(s, f),
            _ => "-".to_owned(),
        };
        writeln!(
            out,
            "{:<16} {:<8} {:>10} {:>14} {:>12}",
            "",
            "ratio",
            ratio(scaled.decode, full.decode),
            ratio(scaled.hash_blank, full.hash_blank),
            classify_ratio
        )?;
        results.push(SetResult { noise, mean_bytes, scaled, full });
    }
    let slowest = results.iter().map(SetResult::scaled_pipeline).fold(f64::INFINITY, f64::min);
    let lowest_ratio = results.iter().map(SetResult::ratio).fold(f64::INFINITY, f64::min);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let what = if classifier.is_some() { "decode + hash + blank + classify" } else { "decode + hash + blank" };
    writeln!(
        out,
        "target >= {TARGET_PER_CORE:.0} images/s per core ({what}, scaled): slowest set {slowest:.0}/s, {}",
        verdict(slowest >= TARGET_PER_CORE)
    )?;
    writeln!(
        out,
        "target >= {TARGET_RATIO:.1}x the full-decode path: lowest ratio {lowest_ratio:.2}x, {}",
        verdict(lowest_ratio >= TARGET_RATIO)
    )?;
    Ok(results)
}

#[cfg(test)]
mod tests;
