//! Where the judging time goes: the parts that `camledger bench judge` measures as a whole,
//! one by one, plus the alternatives the design rejected (jpeg-decoder's own 1/8 scale).
//!
//! `cargo run --release -p camledger-processor --example throughput [-- N [NOISE]]`
//!
//! N (default 40) generated 1920×1080 q90 JPEGs with noise ±NOISE (default 8: ~540 KB; 3 gives
//! ~270 KB), one thread, images per CPU-second.

use std::convert::Infallible;

use camledger_processor::admission::{admit, Limits};
use camledger_processor::bench::{photo, rate};
use camledger_processor::decode::decode_scaled;
use camledger_processor::resize::triangle;
use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

/// One measured part: a label and what it does to input `i`.
type Part<'a> = (&'static str, Box<dyn Fn(usize) + 'a>);

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let noise: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let limits = Limits::default();
    let jpegs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode_image(&photo(i as u64, 1920, 1080, noise))
                .expect("encoding to memory cannot fail");
            out
        })
        .collect();
    println!("{n} JPEGs 1920x1080 q90, mean {} bytes, one thread", jpegs.iter().map(Vec::len).sum::<usize>() / n);
    let full_image = image::load_from_memory(&jpegs[0]).expect("valid jpeg").into_rgb8();
    let eighth = RgbImage::from_pixel(240, 135, Rgb([1, 2, 3]));
    let parts: Vec<Part> = vec![
        ("admission (structural walk)", Box::new(|i| drop(admit(&jpegs[i], &limits).expect("valid jpeg")))),
        ("camledger DC-only decode to 64x64", Box::new(|i| drop(decode_scaled(&jpegs[i], 64, &limits)))),
        (
            "jpeg-decoder at 1/8 scale",
            Box::new(|i| {
                let mut decoder = jpeg_decoder::Decoder::new(&jpegs[i][..]);
                decoder.scale(240, 135).expect("valid jpeg");
                std::hint::black_box(decoder.decode().expect("valid jpeg"));
            }),
        ),
        ("zune-jpeg full decode", Box::new(|i| drop(image::load_from_memory(&jpegs[i]).expect("valid jpeg")))),
        (
            "jpeg-decoder full decode",
            Box::new(|i| drop(jpeg_decoder::Decoder::new(&jpegs[i][..]).decode().expect("valid jpeg"))),
        ),
        (
            "Triangle resize 1920x1080 -> 64x64",
            Box::new(|_| drop(imageops::resize(&full_image, 64, 64, FilterType::Triangle))),
        ),
        ("box thumbnail 1920x1080 -> 64x64", Box::new(|_| drop(imageops::thumbnail(&full_image, 64, 64)))),
        (
            "Triangle resize 240x135 -> 64x64",
            Box::new(|_| drop(imageops::resize(&eighth, 64, 64, FilterType::Triangle))),
        ),
        ("camledger triangle 240x135 -> 64x64", Box::new(|_| drop(triangle(&eighth, 64, 64)))),
        (
            "Triangle resize 240x135 -> 128x128",
            Box::new(|_| drop(imageops::resize(&eighth, 128, 128, FilterType::Triangle))),
        ),
        ("camledger triangle 240x135 -> 128x128", Box::new(|_| drop(triangle(&eighth, 128, 128)))),
    ];
    for (label, part) in parts {
        let per_cpu = rate(n, 1.0, |i| {
            part(i);
            Ok::<_, Infallible>(())
        })
        .unwrap_or_else(|never| match never {});
        println!("{label:<40} {per_cpu:8.0} images/CPU-s");
    }
}
