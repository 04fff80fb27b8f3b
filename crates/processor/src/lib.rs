//! Image understanding for camledger: everything the processor needs to judge one image.
//!
//! Layout (one module per concern, each a set of pure functions or a plain data structure,
//! so every rule is tested with table tests and no I/O):
//! - [`admission`]: format sniffing and structural validation of uploads without decoding
//!   pixels (used inline by the API before anything is written), plus the EXIF summary.
//! - [`decode`]: bounded-memory decoding to the small images the judges need; JPEG is decoded
//!   at reduced DCT scale ([`decode::decode_scaled`]); [`decode::decode_full`] is the
//!   reference path for benchmarks.
//! - [`phash`]: 64-bit perceptual hashes (pHash, dHash).
//! - [`neardup`]: the multi-index near-duplicate index ("any earlier image within distance d?").
//! - [`blank`]: blank / flat / near-black frame detection.
//! - [`classifier`]: the ONNX classifier behind a JSON model manifest, run with ONNX Runtime.
//! - [`verdict`]: the verdict policy, a pure function from signals to a verdict.
//!
//! The worker loop (tailing the ledger and writing verdict commits) composes these; the API
//! and the worker own the I/O, this crate owns the judgement.

pub mod admission;
pub mod blank;
pub mod classifier;
pub mod decode;
pub mod judge;
pub mod neardup;
pub mod phash;
pub mod replay;
pub mod verdict;
pub mod worker;

#[cfg(test)]
mod testutil;
