use std::path::Path;

use super::*;
use crate::testutil::{encode_jpeg, scene, Rng};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).expect("fixture exists")
}

/// jpeg-decoder at 1/8 scale, the reference.
fn reference(bytes: &[u8]) -> RgbImage {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.scale(1, 1).expect("valid jpeg");
    let pixels = decoder.decode().expect("valid jpeg");
    let info = decoder.info().expect("decoded");
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        _ => pixels,
    };
    RgbImage::from_raw(u32::from(info.width), u32::from(info.height), rgb).expect("sizes agree")
}

/// A smooth scene plus uniform noise of ±`amplitude`.
fn noise(seed: u64, width: u32, height: u32, amplitude: u64) -> RgbImage {
    let mut rng = Rng(seed);
    let mut image = scene(seed, width, height);
    for value in image.iter_mut() {
        let delta = (rng.next() % (2 * amplitude + 1)) as i64 - amplitude as i64;
        *value = (i64::from(*value) + delta).clamp(0, 255) as u8;
    }
    image
}

#[test]
fn dc_decoding_matches_jpeg_decoder_at_one_eighth_scale() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("image crate 4:2:2", encode_jpeg(&scene(1, 640, 480), 90)),
        ("image crate odd size", encode_jpeg(&scene(2, 333, 101), 75)),
        ("image crate grey", {
            let grey = image::DynamicImage::ImageRgb8(scene(3, 200, 120)).into_luma8();
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&grey).expect("encodes");
            out
        }),
        // Every coefficient non-zero: blocks end at index 63 with no end-of-block code.
        ("image crate q100 pure noise", encode_jpeg(&noise(4, 256, 136, 255), 100)),
        // Sparse blocks: long zero runs (ZRL codes) between rare coefficients.
        ("image crate q40 faint noise", encode_jpeg(&noise(5, 320, 200, 6), 40)),
        ("libjpeg 4:2:0 with restart markers", fixture("ycc420_restart.jpg")),
        ("libjpeg 4:2:0 odd size, restart every row", fixture("ycc420_rows.jpg")),
        ("libjpeg 4:4:4", fixture("ycc444.jpg")),
        ("libjpeg grey", fixture("gray.jpg")),
    ];
    for (name, bytes) in cases {
        let ours = decode_dc(&bytes).unwrap_or_else(|| panic!("{name}: out of scope"));
        let theirs = reference(&bytes);
        assert_eq!(ours.dimensions(), theirs.dimensions(), "{name}");
        let diffs: Vec<u8> = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
        let max = diffs.iter().copied().max().unwrap_or(0);
        let mean = diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64;
        // Same DC values and chroma interpolation; only rounding in colour conversion differs.
        assert!(mean < 0.5 && max <= 2, "{name}: mean {mean:.2}, max {max}");
    }
}

#[test]
fn out_of_scope_jpegs_fall_back() {
    assert!(decode_dc(&fixture("progressive.jpg")).is_none(), "progressive");
    assert!(decode_dc(b"\xFF\xD8\xFF\xD9").is_none(), "no frame");
}

#[test]
fn dc_decoding_never_panics_on_mutated_jpegs() {
    let seeds = [encode_jpeg(&scene(5, 96, 64), 80), fixture("ycc420_restart.jpg"), fixture("gray.jpg")];
    let mut rng = Rng(0xDC0D_E5EE_D000_0001);
    let mut decoded = 0;
    for round in 0..3_000 {
        let mut file = seeds[round % seeds.len()].clone();
        for _ in 0..=rng.next() % 4 {
            let i = (rng.next() % file.len() as u64) as usize;
            match rng.next() % 3 {
                0 => file[i] = rng.next() as u8,
                1 => file.truncate(i.max(2)),
                _ => file.insert(i, rng.next() as u8),
            }
        }
        decoded += usize::from(decode_dc(&file).is_some());
    }
    assert!(decoded > 100, "mutations must keep some files decodable ({decoded})");
}
