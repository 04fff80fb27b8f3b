//! The scaled decode (DC-only JPEG path, jpeg-decoder fallback, PNG/WebP through `image`) on
//! arbitrary bytes: never a panic, and always `side`×`side` when it succeeds.
#![no_main]

use camledger_processor::admission::Limits;
use camledger_processor::decode::decode_scaled;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run cheap: the fuzzer looks for panics, not for slow big images.
    let limits = Limits { max_pixels: 1 << 20, max_decode_bytes: 1 << 24, ..Limits::default() };
    if let Ok(image) = decode_scaled(data, 16, &limits) {
        assert_eq!(image.dimensions(), (16, 16));
    }
});
