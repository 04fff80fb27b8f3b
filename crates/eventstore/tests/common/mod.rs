//! Helpers shared by the eventstore's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use camledger_eventstore::NewEvent;

/// Distinct pseudo-random bytes per `n` (the ledger does not look inside images).
pub(crate) fn image(n: u64, len: usize) -> Vec<u8> {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub(crate) fn new_event(camera: &str, bytes: Vec<u8>) -> NewEvent {
    NewEvent {
        camera: camera.to_owned(),
        image: bytes.into(),
        media_type: "image/jpeg".into(),
        extension: "jpg".into(),
        width: 640,
        height: 480,
        exif: None,
        captured_at: None,
        idempotency_key: None,
    }
}

/// Temporary pack files (`tmp_*`) left in a data dir's pack directory.
pub(crate) fn temporary_packs(data_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(data_dir.join("ledger.git/objects/pack"))
        .expect("pack dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("tmp_"))
        .collect()
}
