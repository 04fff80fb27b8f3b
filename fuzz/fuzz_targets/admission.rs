//! Admission on arbitrary bytes (JPEG, PNG, WebP and the EXIF inside them): never a panic,
//! and whatever is admitted is within the limits.
#![no_main]

use camledger_processor::admission::{admit, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_pixels: 1 << 20, ..Limits::default() };
    if let Ok(admitted) = admit(data, &limits) {
        assert!(u64::from(admitted.width) * u64::from(admitted.height) <= limits.max_pixels);
    }
});
