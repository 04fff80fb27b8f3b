//! Image understanding for camledger.
//!
//! Layout:
//! - [`admission`]: format sniffing and structural validation of uploads without decoding
//!   pixels (used inline by the API before anything is written), plus the EXIF summary.
//!
//! The crate is a library of pure functions wherever possible: the API and the worker loop
//! own the I/O, this crate owns the judgement, so every rule is testable with table tests.

pub mod admission;
