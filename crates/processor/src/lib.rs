//! Image understanding for camledger: admission of uploads, judging of events, the worker
//! that writes verdicts, and compliance replay.
//!
//! Layout (one module per concern; everything but `classifier`, `worker` and `replay` is pure
//! functions or plain data structures, tested with table tests and no I/O):
//! - [`admission`]: format sniffing and structural validation of uploads without decoding
//!   pixels (used inline by the API before anything is written), plus the EXIF summary.
//! - [`decode`]: bounded-memory decoding to the small images the judges need; JPEG is decoded
//!   at reduced DCT scale ([`decode::decode_scaled`]); [`decode::decode_full`] is the
//!   reference path for benchmarks.
//! - [`resize`]: the triangle filter every small image comes out of, bit-identical to the
//!   `image` crate's and several times faster.
//! - [`phash`]: 64-bit perceptual hashes; dHash is the default, chosen by measurement.
//! - [`neardup`]: the multi-index near-duplicate index ("any earlier image within distance d?").
//! - [`blank`]: blank / flat / near-black frame detection.
//! - [`classifier`]: the ONNX classifier behind a JSON model manifest, run with ONNX Runtime
//!   loaded at run time from `libonnxruntime.so.1.31.1`.
//! - [`scene`]: each camera's recent accepted frames, and a new frame's distance to them.
//! - [`verdict`]: the verdict policy, a pure function from signals to a verdict.
//! - [`judge`]: the composition: `analyse` (order-independent, parallel) and
//!   `judge_in_order` (near-duplicate lookup and policy, in seq order).
//! - [`worker`]: tails the ledger from the verdict checkpoint and appends verdicts.
//! - [`replay`]: re-judges a range without writing and compares with what was recorded.
//! - [`bench`]: the judging throughput benchmark (`camledger bench judge`): scaled vs full
//!   decode, images per CPU-second, ratios printed in one run.
//!
//! Known limitations:
//! - A worker start rebuilds the in-memory near-duplicate index from the `perceptual_hash`
//!   recorded in each verdict: one walk down the verdict chain plus one `event.json` read per
//!   event, no decoding (only verdicts without a hash send it back to the image). A replay
//!   deliberately recomputes every hash from the images, so it does not trust what it checks.
//! - Near-duplicate scope defaults to all cameras: a fixed camera's consecutive frames of a
//!   static scene can be within the distance of each other and would be flagged; deployments
//!   with static scenes should use a time window or a smaller distance.
//! - The hash choice (dHash, distance 8) was measured on synthetic scenes and on 80 real
//!   photos (see [`phash`]); a PDQ-style 256-bit hash was not built.
//! - The near-duplicate index lives in memory: 64-bit hash + seq + camera + time per event,
//!   about 40 bytes plus one bucket slot per band (9 with the default distance 8).

pub mod admission;
pub mod bench;
pub mod blank;
pub mod classifier;
pub mod decode;
pub mod judge;
pub mod neardup;
pub mod phash;
pub mod replay;
pub mod resize;
pub mod scene;
pub mod verdict;
pub mod worker;

#[cfg(test)]
mod testutil;
