//! Table tests for admission, with every fixture generated in code: real encoders from the
//! `image` crate for valid files, then surgery for the broken ones.

use std::io::Cursor;

use super::*;
use crate::testutil::Rng;

fn photo(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) as u8;
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, n / 4])
    })
}

fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(&photo(width, height))
        .expect("encoding to memory cannot fail");
    out
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    photo(width, height)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encoding to memory cannot fail");
    out
}

fn webp(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    photo(width, height)
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::WebP)
        .expect("encoding to memory cannot fail");
    out
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    out.extend_from_slice(&crc32fast::hash(&crc_input).to_be_bytes());
    out
}

/// Inserts `extra` right after the IHDR chunk (signature 8 + IHDR 25 bytes).
fn png_with_chunk_after_ihdr(extra: Vec<u8>) -> Vec<u8> {
    let mut file = png(16, 16);
    file.splice(33..33, extra);
    file
}

/// A PNG whose header claims a huge size and whose data would never decode.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut file = PNG_SIGNATURE.to_vec();
    file.extend(png_chunk(b"IHDR", &ihdr));
    file.extend(png_chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    file.extend(png_chunk(b"IEND", &[]));
    file
}

fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut file = jpeg(16, 16);
    let sof = file.windows(2).position(|w| w == [0xFF, 0xC0]).expect("the baseline encoder writes SOF0");
    file[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    file[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    file
}

fn tiff_with(make: &str, model: &str, date: &str) -> Vec<u8> {
    let ascii = |tag, text: &str| exif::Field {
        tag,
        ifd_num: exif::In::PRIMARY,
        value: exif::Value::Ascii(vec![text.as_bytes().to_vec()]),
    };
    let fields =
        [ascii(exif::Tag::Make, make), ascii(exif::Tag::Model, model), ascii(exif::Tag::DateTimeOriginal, date)];
    let mut writer = exif::experimental::Writer::new();
    for field in &fields {
        writer.push_field(field);
    }
    let mut out = Cursor::new(Vec::new());
    writer.write(&mut out, false).expect("writing EXIF to memory cannot fail");
    out.into_inner()
}

fn jpeg_with_exif(tiff: &[u8]) -> Vec<u8> {
    let mut file = jpeg(32, 24);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(tiff);
    file.splice(2..2, app1);
    file
}

fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_vec();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend(body);
    out
}

fn vp8x(flags: u8, width: u32, height: u32) -> Vec<u8> {
    let mut data = vec![flags, 0, 0, 0];
    data.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    data.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    riff_chunk(b"VP8X", &data)
}

/// The first chunk (`VP8L` from the lossless encoder) of a real WebP.
fn webp_image_chunk() -> Vec<u8> {
    webp(16, 16)[12..].to_vec()
}

fn animated_webp() -> Vec<u8> {
    let frame_header = [0u8; 16];
    let mut frame = frame_header.to_vec();
    frame.extend(webp_image_chunk());
    riff(&[vp8x(0x02, 16, 16), riff_chunk(b"ANIM", &[0; 6]), riff_chunk(b"ANMF", &frame), riff_chunk(b"ANMF", &frame)])
}

fn with_suffix(mut file: Vec<u8>, suffix: &[u8]) -> Vec<u8> {
    file.extend_from_slice(suffix);
    file
}

fn truncated(file: Vec<u8>, keep: usize) -> Vec<u8> {
    file[..keep].to_vec()
}

const ZIP_LOCAL_HEADER: &[u8] = b"PK\x03\x04\x14\x00\x00\x00\x08\x00hello.txt";

#[test]
fn sniffing_recognises_formats_by_magic_bytes_only() {
    let cases: &[(&str, &[u8], Option<Format>)] = &[
        ("jpeg", &[0xFF, 0xD8, 0xFF, 0xE0], Some(Format::Jpeg)),
        ("png", &PNG_SIGNATURE, Some(Format::Png)),
        ("webp", b"RIFF\0\0\0\0WEBPVP8 ", Some(Format::Webp)),
        ("wav is riff but not webp", b"RIFF\0\0\0\0WAVEfmt ", None),
        ("gif", b"GIF89a", None),
        ("empty", b"", None),
        ("short jpeg prefix", &[0xFF, 0xD8], None),
        ("html", b"<!DOCTYPE html>", None),
    ];
    for (name, bytes, expected) in cases {
        assert_eq!(sniff(bytes), *expected, "{name}");
    }
}

#[test]
fn formats_name_their_media_type_and_extension() {
    let cases =
        [(Format::Jpeg, "image/jpeg", "jpg"), (Format::Png, "image/png", "png"), (Format::Webp, "image/webp", "webp")];
    for (format, media_type, extension) in cases {
        assert_eq!(format.media_type(), media_type);
        assert_eq!(format.extension(), extension);
    }
}

#[test]
fn valid_images_are_admitted_with_their_dimensions() {
    let cases = [
        ("jpeg", jpeg(64, 48), Format::Jpeg, 64, 48),
        ("jpeg with zero padding", with_suffix(jpeg(20, 10), &[0; 100]), Format::Jpeg, 20, 10),
        ("png", png(33, 17), Format::Png, 33, 17),
        ("webp lossless", webp(40, 30), Format::Webp, 40, 30),
        ("webp extended still", riff(&[vp8x(0x00, 16, 16), webp_image_chunk()]), Format::Webp, 16, 16),
        (
            "apng with a single frame",
            png_with_chunk_after_ihdr(png_chunk(b"acTL", &[0, 0, 0, 1, 0, 0, 0, 0])),
            Format::Png,
            16,
            16,
        ),
    ];
    for (name, bytes, format, width, height) in cases {
        let admitted = admit(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((admitted.format, admitted.width, admitted.height), (format, width, height), "{name}");
    }
}

#[test]
fn invalid_uploads_are_rejected_with_the_right_reason() {
    let half_jpeg = {
        let file = jpeg(64, 64);
        let half = file.len() / 2;
        truncated(file, half)
    };
    let png_bad_crc = {
        let mut file = png(16, 16);
        let last_crc = file.len() - 1 - 12; // last byte of the chunk before IEND
        file[last_crc] ^= 0x01;
        file
    };
    let png_without_iend = {
        let file = png(16, 16);
        let len = file.len();
        truncated(file, len - 12)
    };
    let webp_truncated = {
        let file = webp(32, 32);
        let len = file.len();
        truncated(file, len - 5)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("zero bytes", vec![], "empty_body"),
        ("text named .jpg", b"hello, I am not an image\n".to_vec(), "unsupported_format"),
        ("html", b"<!DOCTYPE html><html><body>hi</body></html>".to_vec(), "unsupported_format"),
        ("svg", br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#.to_vec(), "unsupported_format"),
        ("pdf", b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n".to_vec(), "unsupported_format"),
        ("zip", with_suffix(ZIP_LOCAL_HEADER.to_vec(), &[0; 30]), "unsupported_format"),
        ("gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(), "unsupported_format"),
        ("png claiming 60000x60000", png_claiming(60_000, 60_000), "too_many_pixels"),
        ("png claiming 2^31 wide", png_claiming(0x7FFF_FFFF, 1), "too_many_pixels"),
        ("jpeg claiming 65000x65000", jpeg_claiming(65_000, 65_000), "too_many_pixels"),
        ("webp claiming 16Mx16M", riff(&[vp8x(0, 1 << 24, 1 << 24), webp_image_chunk()]), "too_many_pixels"),
        ("truncated jpeg", half_jpeg, "truncated_image"),
        ("jpeg cut after SOI", vec![0xFF, 0xD8, 0xFF], "truncated_image"),
        ("png without IEND", png_without_iend, "truncated_image"),
        ("truncated webp", webp_truncated, "truncated_image"),
        ("png with a bad CRC", png_bad_crc, "corrupt_image"),
        ("png with zero width", png_claiming(0, 10), "corrupt_image"),
        ("jpeg with zero height", jpeg_claiming(10, 0), "corrupt_image"),
        ("jpeg with a zip appended", with_suffix(jpeg(32, 32), ZIP_LOCAL_HEADER), "trailing_data"),
        ("png with html appended", with_suffix(png(8, 8), b"<script>"), "trailing_data"),
        ("webp with data after the riff", with_suffix(webp(8, 8), b"PK\x03\x04"), "trailing_data"),
        (
            "apng with two frames",
            png_with_chunk_after_ihdr(png_chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0])),
            "animated_image",
        ),
        ("animated webp", animated_webp(), "animated_image"),
    ];
    for (name, bytes, code) in cases {
        match admit(&bytes, &Limits::default()) {
            Ok(admitted) => panic!("{name}: admitted as {admitted:?}, expected {code}"),
            Err(rejection) => assert_eq!(rejection.code(), code, "{name}: {rejection}"),
        }
    }
}

#[test]
fn rejections_map_to_http_statuses() {
    let cases = [
        (Rejection::Empty, 400),
        (Rejection::UnsupportedFormat, 415),
        (Rejection::TooManyPixels { width: 1, height: 1, max: 0 }, 422),
        (Rejection::Truncated, 422),
        (Rejection::corrupt("x"), 422),
        (Rejection::TrailingData { extra: 1 }, 422),
        (Rejection::Animated, 422),
        (Rejection::TooLargeToDecode { width: 1, height: 1, bytes: 2, max: 1 }, 422),
        (Rejection::TooMuchMetadata { kind: "comments", bytes: 2, max: 1 }, 422),
        (Rejection::EmbeddedArchive, 422),
    ];
    for (rejection, status) in cases {
        assert_eq!(rejection.http_status(), status, "{rejection}");
    }
}

#[test]
fn the_pixel_limit_is_configurable() {
    let file = png(100, 100);
    let tight = Limits { max_pixels: 9_999, ..Limits::default() };
    let exact = Limits { max_pixels: 10_000, ..Limits::default() };
    assert_eq!(admit(&file, &tight), Err(Rejection::TooManyPixels { width: 100, height: 100, max: 9_999 }));
    assert!(admit(&file, &exact).is_ok());
}

#[test]
fn animated_images_are_admitted_when_frames_are_allowed() {
    let limits = Limits { max_frames: 2, ..Limits::default() };
    let apng = png_with_chunk_after_ihdr(png_chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0]));
    assert!(admit(&apng, &limits).is_ok());
    assert!(admit(&animated_webp(), &limits).is_ok());
    let single = Limits { max_frames: 1, ..limits };
    assert_eq!(admit(&animated_webp(), &single), Err(Rejection::Animated));
}

#[test]
fn exif_make_model_and_capture_time_are_extracted_and_trimmed() {
    let cases = [
        ("plain", tiff_with("Canon", "EOS R5", "2024:05:01 12:00:00"), Some(("Canon", "EOS R5"))),
        ("nul and space padded", tiff_with("  NIKON\0\0", "D850   ", "2024:05:01 12:00:00"), Some(("NIKON", "D850"))),
    ];
    for (name, tiff, expected) in cases {
        let admitted = admit(&jpeg_with_exif(&tiff), &Limits::default()).expect(name);
        let exif = admitted.exif.expect(name);
        let (make, model) = expected.expect("cases with EXIF");
        assert_eq!(exif.make.as_deref(), Some(make), "{name}");
        assert_eq!(exif.model.as_deref(), Some(model), "{name}");
        assert_eq!(exif.date_time_original.as_deref(), Some("2024:05:01 12:00:00"), "{name}");
    }
}

#[test]
fn long_exif_strings_are_capped() {
    let long = "x".repeat(1000);
    let admitted = admit(&jpeg_with_exif(&tiff_with(&long, "m", "d")), &Limits::default()).expect("valid jpeg");
    let make = admitted.exif.and_then(|e| e.make).expect("make present");
    assert_eq!(make.chars().count(), EXIF_MAX_CHARS);
}

#[test]
fn broken_exif_does_not_reject_the_image() {
    let admitted = admit(&jpeg_with_exif(b"MM\0\x2a\xff\xff\xff\xff garbage"), &Limits::default())
        .expect("EXIF problems never reject");
    assert_eq!(admitted.exif, None);
}

#[test]
fn exif_is_read_from_png_and_webp_too() {
    let tiff = tiff_with("Sony", "A7", "2023:01:01 00:00:00");
    let png_file = png_with_chunk_after_ihdr(png_chunk(b"eXIf", &tiff));
    let webp_file = riff(&[vp8x(0x08, 16, 16), webp_image_chunk(), riff_chunk(b"EXIF", &tiff)]);
    for (name, file) in [("png", png_file), ("webp", webp_file)] {
        let exif = admit(&file, &Limits::default()).expect(name).exif.expect(name);
        assert_eq!(exif.make.as_deref(), Some("Sony"), "{name}");
    }
}

#[test]
fn admit_never_panics_on_mutated_files() {
    let seeds = [
        jpeg(24, 24),
        jpeg_with_exif(&tiff_with("Canon", "X", "2024:01:01 00:00:00")),
        png(24, 24),
        png_with_chunk_after_ihdr(png_chunk(b"acTL", &[0, 0, 0, 2, 0, 0, 0, 0])),
        webp(24, 24),
        animated_webp(),
    ];
    let limits = Limits { max_pixels: 1_000, max_frames: 1, ..Limits::default() };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut outcomes = [0usize; 2];
    for round in 0..4_000 {
        let mut file = seeds[round % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            match rng.below(5) {
                0 => {
                    let i = rng.below(file.len());
                    file[i] = rng.next() as u8;
                }
                1 => {
                    let keep = rng.below(file.len());
                    file.truncate(keep);
                }
                2 => {
                    let i = rng.below(file.len());
                    file.insert(i, rng.next() as u8);
                }
                3 => {
                    // Headers are where the interesting bugs are: hit the first 64 bytes hard.
                    let i = rng.below(file.len().min(64));
                    if let Some(b) = file.get_mut(i) {
                        *b = 0xFF;
                    }
                }
                _ => {
                    let i = rng.below(file.len());
                    file.remove(i);
                }
            }
            if file.is_empty() {
                break;
            }
        }
        match admit(&file, &limits) {
            Ok(admitted) => {
                assert!(u64::from(admitted.width) * u64::from(admitted.height) <= limits.max_pixels);
                outcomes[0] += 1;
            }
            Err(_) => outcomes[1] += 1,
        }
    }
    // The mutations must exercise both paths, or the test proves little.
    assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs: each was accepted (or took seconds and gigabytes) before admission bounded
// its work.

/// An EXIF "loop bomb": IFD0 holds `pointers` entries that all point at one child IFD of
/// `children` entries, and IFD0's next-IFD offset points back at IFD0. A parser that follows
/// every pointer and the chain stores `pointers × children × 8` entries.
fn exif_loop_bomb(pointers: u16, children: u16) -> Vec<u8> {
    let ifd0 = 8u32;
    let child = ifd0 + 2 + 12 * u32::from(pointers) + 4;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&ifd0.to_le_bytes());
    tiff.extend_from_slice(&pointers.to_le_bytes());
    for _ in 0..pointers {
        tiff.extend_from_slice(&0x8769u16.to_le_bytes()); // ExifIFDPointer
        tiff.extend_from_slice(&4u16.to_le_bytes()); // LONG
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&child.to_le_bytes());
    }
    tiff.extend_from_slice(&ifd0.to_le_bytes()); // the chain loops back to IFD0
    tiff.extend_from_slice(&children.to_le_bytes());
    for _ in 0..children {
        tiff.extend_from_slice(&0x9000u16.to_le_bytes()); // ExifVersion
        tiff.extend_from_slice(&7u16.to_le_bytes()); // UNDEFINED
        tiff.extend_from_slice(&4u32.to_le_bytes());
        tiff.extend_from_slice(b"0232");
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff
}

/// The whole APP1 segment holds at most 65,533 payload bytes: 2,700 × 2,700 fills it.
fn jpeg_exif_bomb() -> Vec<u8> {
    jpeg_with_exif(&exif_loop_bomb(2_700, 2_700))
}

/// A PNG `eXIf` chunk has no 64 KiB segment limit: 20,000 × 20,000 is 480 KB.
fn png_exif_bomb() -> Vec<u8> {
    png_with_chunk_after_ihdr(png_chunk(b"eXIf", &exif_loop_bomb(20_000, 20_000)))
}

/// A frame header with zero components and a scan header with none: 18 bytes.
const ZERO_COMPONENT_JPEG: [u8; 18] =
    [0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x08, 0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD9];

/// `file` with a segment `marker` holding `payload` inserted right after SOI.
fn jpeg_with_segment(mut file: Vec<u8>, marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut segment = vec![0xFF, marker];
    segment.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    segment.extend_from_slice(payload);
    file.splice(2..2, segment);
    file
}

/// `file` without its header segments of type `marker` (everything before the first scan).
fn jpeg_without(file: &[u8], marker: u8) -> Vec<u8> {
    let mut out = file[..2].to_vec();
    let mut pos = 2;
    while file[pos + 1] != 0xDA {
        let len = usize::from(be16(file, pos + 2));
        if file[pos + 1] != marker {
            out.extend_from_slice(&file[pos..pos + 2 + len]);
        }
        pos += 2 + len;
    }
    out.extend_from_slice(&file[pos..]);
    out
}

/// A zip local file header followed by incompressible-looking bytes, as a COM payload.
fn zip_payload(len: usize) -> Vec<u8> {
    let mut rng = Rng(7);
    let mut payload = ZIP_LOCAL_HEADER.to_vec();
    payload.extend((payload.len()..len).map(|_| rng.next() as u8));
    payload
}

fn png_16bit_rgba(width: u32, height: u32) -> Vec<u8> {
    let image = image::ImageBuffer::<image::Rgba<u16>, _>::from_fn(width, height, |x, y| {
        image::Rgba([(x * 1000) as u16, (y * 1000) as u16, 7, u16::MAX])
    });
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).expect("encoding to memory cannot fail");
    out
}

/// A PNG header of the given bit depth and colour type (and no real pixels).
fn png_header_only(width: u32, height: u32, depth: u8, colour: u8) -> Vec<u8> {
    let mut file = png_claiming(width, height);
    file[24] = depth;
    file[25] = colour;
    let crc = crc32fast::hash(&file[12..29]);
    file[29..33].copy_from_slice(&crc.to_be_bytes());
    file
}

#[test]
fn an_exif_loop_bomb_is_read_with_bounded_work_and_yields_no_summary() {
    // Regression: kamadak-exif stored every entry reached through every pointer and around
    // the IFD chain: 7.7 s and 2.8 GB for the JPEG, an abort asking 6 GiB for the PNG.
    for (name, tiff) in [("jpeg-sized", exif_loop_bomb(2_700, 2_700)), ("png-sized", exif_loop_bomb(20_000, 20_000))] {
        let read = read_exif(&tiff);
        assert!(read.ifds <= 2, "{name}: {} IFDs walked", read.ifds);
        assert!(read.entries <= 2 * EXIF_MAX_ENTRIES, "{name}: {} entries visited", read.entries);
        assert_eq!(read.summary, None, "{name}");
    }
}

#[test]
fn images_carrying_an_exif_loop_bomb_are_admitted_quickly_without_exif() {
    for (name, file) in [("jpeg app1", jpeg_exif_bomb()), ("png exif chunk", png_exif_bomb())] {
        let started = std::time::Instant::now();
        let admitted = admit(&file, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // A sanity bound only, far above the microseconds this takes.
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{name}: {:?}", started.elapsed());
        assert_eq!(admitted.exif, None, "{name}");
    }
}

#[test]
fn exif_summary_fields_are_found_only_in_ifd0_and_the_exif_ifd() {
    let tiff = tiff_with("Canon", "EOS R5", "2024:05:01 12:00:00");
    let read = read_exif(&tiff);
    assert_eq!(read.ifds, 2);
    let exif = read.summary.expect("the writer's EXIF has all three");
    assert_eq!(
        (exif.make.as_deref(), exif.model.as_deref(), exif.date_time_original.as_deref()),
        (Some("Canon"), Some("EOS R5"), Some("2024:05:01 12:00:00"))
    );
    // An Exif IFD pointer back at IFD0 is not walked twice.
    let mut looping = b"MM\0*\0\0\0\x08\0\x01".to_vec();
    looping.extend_from_slice(&[0x87, 0x69, 0, 4, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 0]);
    let read = read_exif(&looping);
    assert_eq!((read.ifds, read.entries, read.summary), (1, 1, None));
}

#[test]
fn structurally_hostile_jpegs_are_rejected_with_a_clear_reason() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("18-byte jpeg with zero components", ZERO_COMPONENT_JPEG.to_vec(), "corrupt_image"),
        ("jpeg without quantisation tables", jpeg_without(&jpeg(32, 32), 0xDB), "corrupt_image"),
        (
            "progressive jpeg without huffman tables",
            {
                let mut file = jpeg_without(&jpeg(32, 32), 0xC4);
                let sof = file.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
                file[sof + 1] = 0xC2;
                file
            },
            "corrupt_image",
        ),
        (
            "jpeg with a zip in a comment",
            jpeg_with_segment(jpeg(32, 32), 0xFE, &zip_payload(2_000)),
            "embedded_archive",
        ),
        (
            "jpeg with 70 KB of comments",
            (0..2).fold(jpeg(32, 32), |file, _| jpeg_with_segment(file, 0xFE, &[b' '; 35_000])),
            "too_much_metadata",
        ),
        (
            "jpeg with a zip spread over application segments",
            (0..5).fold(jpeg(32, 32), |file, _| jpeg_with_segment(file, 0xEA, &zip_payload(60_000))),
            "too_much_metadata",
        ),
    ];
    for (name, bytes, code) in cases {
        match admit(&bytes, &Limits::default()) {
            Ok(admitted) => panic!("{name}: admitted as {admitted:?}, expected {code}"),
            Err(rejection) => assert_eq!(rejection.code(), code, "{name}: {rejection}"),
        }
    }
}

#[test]
fn ordinary_metadata_and_motion_jpeg_frames_are_still_admitted() {
    let cases = [
        ("a short comment", jpeg_with_segment(jpeg(32, 32), 0xFE, b"Trail camera 3, 12C")),
        ("a full comment segment (the benchmark's padding)", jpeg_with_segment(jpeg(32, 32), 0xFE, &[b' '; 65_000])),
        ("a full-size exif segment", jpeg_with_segment(jpeg(32, 32), 0xE1, &[0; 65_000])),
        ("baseline without huffman tables (motion-jpeg frame)", jpeg_without(&jpeg(32, 32), 0xC4)),
    ];
    for (name, file) in cases {
        assert!(admit(&file, &Limits::default()).is_ok(), "{name}");
    }
}

#[test]
fn the_decode_budget_counts_channels_and_bytes_per_sample() {
    // Regression: 7000×7000 is within the 50 MP pixel limit, but as 16-bit RGBA it decodes to
    // 392 MB (a 381 KB file cost 526 MB per worker thread).
    let cases = [
        ("16-bit rgba", png_header_only(7_000, 7_000, 16, 6), Some(392_000_000)),
        ("8-bit rgba", png_header_only(7_000, 7_000, 8, 6), None),
        ("16-bit grey", png_header_only(7_000, 7_000, 16, 0), None),
        ("8-bit palette", png_header_only(7_000, 7_000, 8, 3), None),
    ];
    for (name, file, refused) in cases {
        match (admit(&file, &Limits::default()), refused) {
            (Err(Rejection::TooLargeToDecode { bytes, .. }), Some(expected)) => assert_eq!(bytes, expected, "{name}"),
            (Ok(_), None) => {}
            (other, _) => panic!("{name}: {other:?}"),
        }
    }
    assert!(admit(&png_16bit_rgba(16, 16), &Limits::default()).is_ok(), "small 16-bit images are fine");
    let tight = Limits { max_decode_bytes: 16 * 16 * 8 - 1, ..Limits::default() };
    assert_eq!(admit(&png_16bit_rgba(16, 16), &tight).map_err(|e| e.code()), Err("too_large_to_decode"));
}
