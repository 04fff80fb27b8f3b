//! Blank, flat and near-black frame detection on the small decoded image.
//!
//! Measured on 64×64 luma. At that size every pixel averages hundreds of sensor pixels, so
//! sensor noise, which makes a covered lens look "busy" at full size, is averaged away, while
//! real structure (edges, lights, horizons) survives. Two robust statistics decide:
//! - the dynamic range between the 1st and 99th luma percentiles: a flat frame (grey, white,
//!   a wall filling the view, a uniform colour) has almost none;
//! - the brightest (averaged) pixel: a near-black frame (lens cap, dead sensor at night
//!   without lights) never gets bright anywhere, while a night scene with a single street light
//!   does. The maximum, not a percentile, because such lights cover far less than 1% of the view.
//!
//! Dark night scenes keep a few bright points (lights, lit windows) or a spread of dark
//! detail, and fog keeps a low-contrast but real gradient: both stay above the thresholds,
//! which the tests check.

use image::RgbImage;

use crate::decode::luma_at;

/// A 1st-to-99th percentile range below this is "flat" (score 0.5 exactly at this value).
const FLAT_RANGE: f32 = 12.0;
/// A brightest pixel below this is "near-black" (score 0.5 exactly at this value).
const DARK_MAX: f32 = 16.0;

/// Statistics behind the blank score, recorded for auditability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlankStats {
    pub p1: f32,
    pub p99: f32,
    pub max: f32,
    /// In `[0, 1]`; `>= 0.5` means blank with the default policy threshold.
    pub score: f64,
}

/// Blank score of an image: `max(flat, dark)` where each goes linearly from 1 (no range / no
/// light at all) through 0.5 (at the threshold) to 0 (twice the threshold).
pub fn blank_stats(image: &RgbImage) -> BlankStats {
    let mut luma = luma_at(image, 64);
    luma.sort_by(f32::total_cmp);
    let at = |q: f32| luma[((luma.len() - 1) as f32 * q).round() as usize];
    let (p1, p99, max) = (at(0.01), at(0.99), at(1.0));
    let flat = 1.0 - (max - p1) / (2.0 * FLAT_RANGE);
    let dark = 1.0 - max / (2.0 * DARK_MAX);
    BlankStats { p1, p99, max, score: f64::from(flat.max(dark).clamp(0.0, 1.0)) }
}

#[cfg(test)]
mod tests;
