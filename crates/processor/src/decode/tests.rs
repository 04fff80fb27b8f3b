use super::*;
use crate::testutil::{encode_jpeg, encode_png, scene};

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let total: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    total as f64 / a.as_raw().len() as f64
}

#[test]
fn scaled_and_full_decodes_agree_at_the_target_size() {
    let photo = scene(1, 1920, 1080);
    let cases = [("jpeg 1080p", encode_jpeg(&photo, 90)), ("png 1080p", encode_png(&photo))];
    for (name, bytes) in cases {
        let scaled = decode_scaled(&bytes, 64, &Limits::default()).expect(name);
        let full = decode_full(&bytes, 64, &Limits::default()).expect(name);
        assert_eq!(scaled.dimensions(), (64, 64), "{name}");
        assert_eq!(full.dimensions(), (64, 64), "{name}");
        let diff = mean_abs_diff(&scaled, &full);
        assert!(diff < 4.0, "{name}: mean abs difference {diff}");
    }
}

#[test]
fn small_and_odd_sized_jpegs_decode_to_the_target_size() {
    for (w, h) in [(8, 8), (31, 17), (17, 300), (64, 64), (200, 199)] {
        let bytes = encode_jpeg(&scene(2, w, h), 85);
        let image = decode_scaled(&bytes, 64, &Limits::default()).expect("valid jpeg");
        assert_eq!(image.dimensions(), (64, 64), "{w}x{h}");
    }
}

#[test]
fn grayscale_jpegs_decode_to_grey_rgb() {
    let grey = image::DynamicImage::ImageRgb8(scene(3, 320, 240)).into_luma8();
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode_image(&grey)
        .expect("encoding to memory cannot fail");
    let image = decode_scaled(&bytes, 32, &Limits::default()).expect("valid jpeg");
    assert!(image.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn rejected_bytes_are_decode_errors_not_panics() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"not an image".to_vec()),
        ("truncated jpeg", encode_jpeg(&scene(4, 64, 64), 80)[..200].to_vec()),
    ];
    for (name, bytes) in cases {
        assert!(matches!(decode_scaled(&bytes, 32, &Limits::default()), Err(DecodeError::Rejected(_))), "{name}");
        assert!(matches!(decode_full(&bytes, 32, &Limits::default()), Err(DecodeError::Rejected(_))), "{name}");
    }
}

#[test]
fn a_damaged_scan_is_an_error_not_a_panic() {
    let mut bytes = encode_jpeg(&scene(5, 256, 256), 80);
    // Scribble over the middle of the entropy-coded data (no FF, so the structure stays valid).
    let middle = bytes.len() / 2;
    bytes[middle..middle + 64].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 37 % 255) as u8);
    // Either outcome is acceptable for a corrupted scan as long as nothing panics.
    let _ = decode_scaled(&bytes, 32, &Limits::default());
    let _ = decode_full(&bytes, 32, &Limits::default());
}

#[test]
fn a_pair_decode_gives_exactly_what_two_separate_decodes_give() {
    let progressive =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/progressive.jpg"))
            .expect("fixture");
    let cases = [
        ("jpeg 1080p: one DC-only decode serves both", encode_jpeg(&scene(6, 1920, 1080), 90)),
        ("jpeg 600x520: DC-only for 64, not for 96", encode_jpeg(&scene(7, 600, 520), 90)),
        ("small jpeg: reduced-scale IDCT", encode_jpeg(&scene(8, 200, 150), 85)),
        ("png", encode_png(&scene(9, 640, 480))),
        ("progressive jpeg", progressive),
    ];
    for (name, bytes) in cases {
        for (a, b) in [(64, 96), (64, 64), (64, 224)] {
            let (small, large) = decode_scaled_pair(&bytes, a, b, &Limits::default()).expect(name);
            assert!(small == decode_scaled(&bytes, a, &Limits::default()).expect(name), "{name}: {a}");
            assert!(large == decode_scaled(&bytes, b, &Limits::default()).expect(name), "{name}: {b}");
        }
        let (small, large) = decode_full_pair(&bytes, 64, 96, &Limits::default()).expect(name);
        assert_eq!((small.dimensions(), large.dimensions()), ((64, 64), (96, 96)), "{name}");
    }
}

fn png_16bit_rgba(side: u32) -> Vec<u8> {
    let image = image::ImageBuffer::<image::Rgba<u16>, _>::from_fn(side, side, |x, y| {
        image::Rgba([(x * 512) as u16, (y * 512) as u16, 9, u16::MAX])
    });
    let mut out = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png).expect("encoding to memory");
    out
}

#[test]
fn every_decode_path_holds_to_the_decode_budget() {
    // 64×64 16-bit RGBA is 32 KiB decoded: one byte less is over budget on every path.
    let bytes = png_16bit_rgba(64);
    let tight = Limits { max_decode_bytes: 64 * 64 * 8 - 1, ..Limits::default() };
    assert!(decode_scaled(&bytes, 32, &Limits::default()).is_ok());
    assert!(matches!(
        decode_scaled(&bytes, 32, &tight),
        Err(DecodeError::Rejected(Rejection::TooLargeToDecode { .. }))
    ));
    assert!(matches!(decode_full(&bytes, 32, &tight), Err(DecodeError::Rejected(_))));
    assert!(matches!(decode_scaled_pair(&bytes, 32, 48, &tight), Err(DecodeError::Rejected(_))));
    // The decoder itself is held to the budget too, should a header understate the size.
    assert!(matches!(decode_with_image_crate(&bytes, Format::Png, &tight), Err(DecodeError::Image(_))));
    let jpeg = encode_jpeg(&scene(3, 256, 256), 85);
    let jpeg_tight = Limits { max_decode_bytes: 256 * 256 * 3 - 1, ..Limits::default() };
    assert!(matches!(decode_scaled(&jpeg, 16, &jpeg_tight), Err(DecodeError::Rejected(_))));
    assert!(matches!(decode_jpeg_scaled(&jpeg, 200, 256, 256, &jpeg_tight), Err(DecodeError::Jpeg(_))));
}

#[test]
fn thumbnails_keep_the_aspect_ratio_and_look_like_the_image() {
    let photo = scene(3, 1920, 1080);
    for (name, bytes) in [("jpeg", encode_jpeg(&photo, 90)), ("png", encode_png(&photo))] {
        let thumb = decode_thumbnail(&bytes, 160, &Limits::default()).expect(name);
        assert_eq!(thumb.dimensions(), (160, 90), "{name}");
        let reference = image::imageops::thumbnail(&photo, 160, 90);
        let diff = mean_abs_diff(&thumb, &reference);
        assert!(diff < 6.0, "{name}: mean abs difference {diff}");
    }
    let portrait = encode_jpeg(&scene(4, 30, 100), 85);
    assert_eq!(decode_thumbnail(&portrait, 160, &Limits::default()).unwrap().dimensions(), (30, 100), "never enlarged");
}
