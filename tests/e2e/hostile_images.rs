//! Hostile images against the real server: each one is answered quickly, either admitted
//! without EXIF (201) or refused with a JSON 4xx, and the server stays responsive meanwhile.
//! Before admission bounded its work, the EXIF loop bombs took seconds and gigabytes (the PNG
//! one aborted the server) and the structural ones were admitted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Far above what any of these uploads takes; only a hang or a crash goes past it.
const QUICK: Duration = Duration::from_secs(5);

/// IFD0 holds `pointers` Exif-IFD pointers, all to one child IFD of `children` entries, and
/// the IFD chain loops back to IFD0: `pointers × children × 8` entries for a naive parser.
fn exif_loop_bomb(pointers: u16, children: u16) -> Vec<u8> {
    let ifd0 = 8u32;
    let child = ifd0 + 2 + 12 * u32::from(pointers) + 4;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&ifd0.to_le_bytes());
    tiff.extend_from_slice(&pointers.to_le_bytes());
    for _ in 0..pointers {
        tiff.extend_from_slice(&[0x69, 0x87, 4, 0, 1, 0, 0, 0]);
        tiff.extend_from_slice(&child.to_le_bytes());
    }
    tiff.extend_from_slice(&ifd0.to_le_bytes());
    tiff.extend_from_slice(&children.to_le_bytes());
    for _ in 0..children {
        tiff.extend_from_slice(&[0x00, 0x90, 7, 0, 4, 0, 0, 0]);
        tiff.extend_from_slice(b"0232");
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff
}

/// `file` (a JPEG) with a `marker` segment holding `payload` right after SOI.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&out[4..]).to_be_bytes());
    out
}

fn jpeg_exif_bomb() -> Vec<u8> {
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(exif_loop_bomb(2_700, 2_700));
    with_segment(jpeg(11), 0xE1, &app1)
}

fn png_exif_bomb() -> Vec<u8> {
    let mut file = png(12);
    file.splice(33..33, png_chunk(b"eXIf", &exif_loop_bomb(20_000, 20_000)));
    file
}

/// A 16-bit RGBA PNG header: within the pixel limit, 392 MB decoded.
fn png_16bit_rgba_7000() -> Vec<u8> {
    let mut file = png(13);
    file[16..20].copy_from_slice(&7_000u32.to_be_bytes());
    file[20..24].copy_from_slice(&7_000u32.to_be_bytes());
    file[24] = 16;
    file[25] = 6;
    let crc = crc32(&file[12..29]);
    file[29..33].copy_from_slice(&crc.to_be_bytes());
    file
}

/// Uploads `bytes` while probing `/healthz`; returns the upload's status and JSON body and
/// the slowest health answer seen meanwhile (and once more after the upload was answered).
async fn upload_while_probing(app: &TestApp, bytes: Vec<u8>, content_type: &str) -> (u16, Value, Duration) {
    let done = AtomicBool::new(false);
    let upload = async {
        let response = app.upload_as(&app.camera_token, bytes, content_type).await;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.expect("a JSON body");
        done.store(true, Ordering::Relaxed);
        (status, body)
    };
    let probe = async {
        let mut slowest = Duration::ZERO;
        loop {
            let started = Instant::now();
            let health = app.client.get(app.url("/healthz")).send().await.expect("the server answers");
            assert_eq!(health.status(), 200);
            slowest = slowest.max(started.elapsed());
            if done.load(Ordering::Relaxed) {
                return slowest;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((status, body), slowest) = tokio::time::timeout(QUICK, async { tokio::join!(upload, probe) })
        .await
        .unwrap_or_else(|_| panic!("no answer within {QUICK:?}"));
    (status, body, slowest)
}

#[tokio::test]
async fn exif_loop_bombs_are_admitted_quickly_without_exif_and_the_server_stays_healthy() {
    let app = TestApp::spawn().await;
    for (what, bytes, content_type) in
        [("jpeg app1 bomb", jpeg_exif_bomb(), "image/jpeg"), ("png eXIf bomb", png_exif_bomb(), "image/png")]
    {
        let (status, body, slowest_probe) = upload_while_probing(&app, bytes, content_type).await;
        assert_eq!(status, 201, "{what}: {body}");
        assert!(slowest_probe < Duration::from_secs(1), "{what}: /healthz took {slowest_probe:?}");
        let seq = body["seq"].as_u64().expect("a seq");
        let event = app.get_json(&format!("/v1/events/{seq}")).await;
        assert_eq!(event["event"]["exif"], Value::Null, "{what}: {event}");
    }
}

#[tokio::test]
async fn structurally_hostile_images_are_refused_quickly_with_json() {
    let app = TestApp::spawn().await;
    let zero_components = vec![
        0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x08, 0x08, 0x00, 0x01, 0x00, 0x01, 0x00, 0xFF, 0xDA, 0x00, 0x02, 0xFF, 0xD9,
    ];
    let mut zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00hello.txt".to_vec();
    zip.extend((0..2_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("18-byte jpeg with zero components", zero_components, "image/jpeg", "corrupt_image"),
        ("jpeg with a zip in a comment", with_segment(jpeg(14), 0xFE, &zip), "image/jpeg", "embedded_archive"),
        ("16-bit rgba png over the decode budget", png_16bit_rgba_7000(), "image/png", "too_large_to_decode"),
    ];
    for (what, bytes, content_type, code) in cases {
        let (status, body, slowest_probe) = upload_while_probing(&app, bytes, content_type).await;
        assert_eq!((status, body["error"].as_str()), (422, Some(code)), "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
        assert!(slowest_probe < Duration::from_secs(1), "{what}: /healthz took {slowest_probe:?}");
    }
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new(), "a refused upload writes nothing");
}
