//! Images/s of the judging pipeline on 1080p JPEGs: reduced-scale decode vs full decode.
//!
//! `cargo run -p camledger-processor --example throughput [-- N [NOISE [MANIFEST]]]`
//!
//! Generates N (default 40) photo-like 1920×1080 JPEGs (quality 90, smooth structure plus
//! uniform sensor-like noise of ±NOISE, default 8: ~0.5 MB each; NOISE 3 gives ~0.3 MB, closer
//! to a typical camera frame), then on one thread measures:
//! decode only, decode + dHash + blank, and, with a model manifest, + classify — once with
//! `decode_scaled` and once with `decode_full`. Dependencies are built optimised even in the
//! dev profile (see the workspace Cargo.toml), so the decoders run at release speed either way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use camledger_processor::admission::Limits;
use camledger_processor::blank::blank_stats;
use camledger_processor::classifier::{Classifier, Model, OnnxRuntime, DEFAULT_DYLIB};
use camledger_processor::decode::{decode_full, decode_scaled};
use camledger_processor::phash::dhash;
use image::{Rgb, RgbImage};

fn photo(seed: u64, noise_amplitude: u64) -> RgbImage {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let phase: Vec<f32> = (0..6).map(|_| (next() % 1000) as f32 / 100.0).collect();
    RgbImage::from_fn(1920, 1080, |x, y| {
        let (fx, fy) = (x as f32 / 1920.0, y as f32 / 1080.0);
        let base = |c: usize| {
            let s = (fx * 7.0 + phase[c]).sin() * (fy * 5.0 + phase[c + 3]).cos();
            let t = (fx * 41.0 + fy * 29.0 + phase[c]).sin() * 0.3;
            120.0 + 80.0 * s + 30.0 * t
        };
        let noise = (next() % (2 * noise_amplitude + 1)) as f32 - noise_amplitude as f32;
        Rgb([0, 1, 2].map(|c| (base(c) + noise).clamp(0.0, 255.0) as u8))
    })
}

/// CPU seconds used by this process so far (all threads), from /proc/self/stat
/// (utime + stime, in clock ticks of 1/100 s on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Prints and returns images per CPU-second (the per-core rate; on a shared machine wall time
/// also counts waiting for a core), with the wall-clock rate beside it.
fn rate(label: &str, n: usize, mut f: impl FnMut(usize)) -> f64 {
    f(0); // warm-up
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let mut rounds = 0;
    // At least 1 CPU-second so the 10 ms tick resolution stays below 1%.
    while rounds < n || cpu_seconds() - cpu_start < 1.0 {
        f(rounds % n);
        rounds += 1;
    }
    let wall = rounds as f64 / start.elapsed().as_secs_f64();
    let per_cpu = rounds as f64 / (cpu_seconds() - cpu_start);
    println!("{label:<48} {per_cpu:8.1} images/CPU-s  ({wall:.1}/s wall)");
    per_cpu
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let noise: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let manifest = args.next().map(PathBuf::from);
    let limits = Limits::default();
    let jpegs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&photo(i as u64, noise))
                .expect("encoding to memory cannot fail");
            out
        })
        .collect();
    let mean_size = jpegs.iter().map(Vec::len).sum::<usize>() / n;
    println!("{n} JPEGs 1920x1080 q90, mean {mean_size} bytes, one calling thread");

    let mut classifier = manifest.map(|path| {
        let dylib = std::env::var_os("CAMLEDGER_ORT_DYLIB").map_or_else(|| PathBuf::from(DEFAULT_DYLIB), PathBuf::from);
        let runtime = OnnxRuntime::load(&dylib).unwrap_or_else(|e| panic!("{e}"));
        let model = Arc::new(Model::load(&path).unwrap_or_else(|e| panic!("{e}")));
        Classifier::new(&runtime, model).unwrap_or_else(|e| panic!("{e}"))
    });
    let side = classifier.as_ref().map_or(64, |c| c.model().input_size().0.max(64));

    // Where the scaled path's time goes.
    rate("breakdown: admission only", n, |i| {
        camledger_processor::admission::admit(&jpegs[i % n], &limits).expect("valid jpeg");
    });
    rate("breakdown: jpeg-decoder at 1/8 only", n, |i| {
        let mut decoder = jpeg_decoder::Decoder::new(&jpegs[i % n][..]);
        decoder.scale(240, 135).expect("valid jpeg");
        std::hint::black_box(decoder.decode().expect("valid jpeg"));
    });
    let full_image = image::load_from_memory(&jpegs[0]).expect("valid jpeg").into_rgb8();
    rate("breakdown: zune-jpeg full decode only", n, |i| {
        std::hint::black_box(image::load_from_memory(&jpegs[i % n]).expect("valid jpeg"));
    });
    rate("breakdown: jpeg-decoder full decode only", n, |i| {
        let mut decoder = jpeg_decoder::Decoder::new(&jpegs[i % n][..]);
        std::hint::black_box(decoder.decode().expect("valid jpeg"));
    });
    rate("breakdown: Triangle resize 1920x1080 -> 64x64", n, |_| {
        std::hint::black_box(image::imageops::resize(&full_image, side, side, image::imageops::FilterType::Triangle));
    });
    rate("breakdown: box thumbnail 1920x1080 -> 64x64", n, |_| {
        std::hint::black_box(image::imageops::thumbnail(&full_image, side, side));
    });
    let eighth = RgbImage::from_pixel(240, 135, Rgb([1, 2, 3]));
    rate("breakdown: Triangle resize 240x135 -> 64x64", n, |_| {
        std::hint::black_box(image::imageops::resize(&eighth, side, side, image::imageops::FilterType::Triangle));
    });

    type Decode = fn(&[u8], u32, &Limits) -> Result<RgbImage, camledger_processor::decode::DecodeError>;
    let paths: [(&str, Decode); 2] = [("scaled", decode_scaled), ("full", decode_full)];
    let mut results = Vec::new();
    for (name, decode) in paths {
        let only = rate(&format!("{name}: decode to {side}x{side}"), n, |i| {
            decode(&jpegs[i % n], side, &limits).expect("valid jpeg");
        });
        let judged = rate(&format!("{name}: decode + dHash + blank"), n, |i| {
            let small = decode(&jpegs[i % n], side, &limits).expect("valid jpeg");
            std::hint::black_box((dhash(&small), blank_stats(&small)));
        });
        let classified = classifier.as_mut().map(|classifier| {
            rate(&format!("{name}: decode + dHash + blank + classify"), n, |i| {
                let small = decode(&jpegs[i % n], side, &limits).expect("valid jpeg");
                let c = classifier.classify(&small).expect("model runs");
                std::hint::black_box((dhash(&small), blank_stats(&small), c));
            })
        });
        results.push((only, judged, classified));
    }
    let (scaled, full) = (results[0], results[1]);
    println!("ratio scaled/full: decode {:.2}x, decode+hash+blank {:.2}x", scaled.0 / full.0, scaled.1 / full.1);
    if let (Some(s), Some(f)) = (scaled.2, full.2) {
        println!("ratio scaled/full with classify: {:.2}x", s / f);
    }
}
