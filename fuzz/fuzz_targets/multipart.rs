//! The multipart parser of `POST /v1/images`: any body, any `Content-Type` (first line of the
//! input), must end in parts within the limits or a 4xx, never a panic or a 5xx.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| camledger_api::fuzz_multipart(data));
