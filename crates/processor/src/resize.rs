//! Triangle (bilinear) resampling of RGB images, bit for bit what
//! `image::imageops::resize(image, w, h, FilterType::Triangle)` returns, 2–3× faster.
//!
//! Every small image the judge looks at comes out of this filter (the 64×64 hash and blank
//! image, the classifier's input, the 9×8 dHash and 32×32 pHash inputs, thumbnails), so its
//! output is part of what verdicts record: a perceptual hash, a blank score and a classifier
//! score must not change with the implementation. Hence the same arithmetic in the same order:
//! the kernel weights are computed as the `image` crate computes them (`f32`, normalised by
//! their sequential sum), the vertical pass runs first into `f32` rows without rounding, each
//! output value accumulates `value * weight` tap by tap from 0.0 (a multiply then an add, never
//! fused), and the horizontal pass clamps to 0..=255 and rounds half away from zero.
//!
//! What makes it faster is only the memory order: the `image` crate converts every pixel to a
//! four-channel tuple through bounds-checked `get_pixel` calls and runs its horizontal pass
//! column by column; here both passes walk rows contiguously over the raw bytes (the vertical
//! pass vectorises across a row), with the taps computed once per output row and column.
//! Measured with `examples/throughput.rs` (release, one thread, 2026-12-05): 240×135 to 64×64
//! 11,500/s against the `image` crate's 4,140/s, to 128×128 5,090/s against 1,930/s; on the
//! whole judge (`camledger bench judge`, ~538 KB 1080p) that is 135/s → 141–146/s. The tests
//! compare with the `image` crate on random images of many sizes, up and down.

use image::RgbImage;

/// The source indices and weights that make one output row or column.
struct Taps {
    first: usize,
    weights: Vec<f32>,
}

/// The `image` crate's triangle taps for resampling `from` samples to `to`.
fn taps(from: u32, to: u32) -> Vec<Taps> {
    let ratio = from as f32 / to as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio; // the triangle kernel's support is 1.0
    (0..to)
        .map(|out| {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, i64::from(from) - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, i64::from(from));
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| {
                    let x = ((i as f32 - centre) / sratio).abs();
                    if x < 1.0 {
                        1.0 - x
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut sum = 0.0f32;
            for w in &weights {
                sum += w;
            }
            for w in &mut weights {
                *w /= sum;
            }
            Taps { first: left as usize, weights }
        })
        .collect()
}

/// `image`'s `resize(.., FilterType::Triangle)` for RGB images, bit-identical (module docs).
pub fn triangle(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (from_w, from_h) = image.dimensions();
    if (width, height) == (from_w, from_h) {
        return image.clone();
    }
    let mut resized = RgbImage::new(width, height);
    if [from_w, from_h, width, height].contains(&0) {
        return resized;
    }
    let stride = from_w as usize * 3;
    let source = image.as_raw();
    // Vertical pass: `height` rows of `from_w` pixels, unrounded.
    let mut rows = vec![0.0f32; height as usize * stride];
    for (row, taps) in rows.chunks_exact_mut(stride).zip(taps(from_h, height)) {
        for (k, &w) in taps.weights.iter().enumerate() {
            let line = &source[(taps.first + k) * stride..][..stride];
            for (acc, &v) in row.iter_mut().zip(line) {
                *acc += f32::from(v) * w;
            }
        }
    }
    // Horizontal pass, row by row, rounded to bytes.
    let columns = taps(from_w, width);
    let out: &mut [u8] = &mut resized;
    for (row, out) in rows.chunks_exact(stride).zip(out.chunks_exact_mut(width as usize * 3)) {
        for (taps, out) in columns.iter().zip(out.chunks_exact_mut(3)) {
            let mut acc = [0.0f32; 3];
            for (pixel, &w) in row[taps.first * 3..].chunks_exact(3).zip(&taps.weights) {
                for c in 0..3 {
                    acc[c] += pixel[c] * w;
                }
            }
            for c in 0..3 {
                out[c] = round_to_byte(acc[c]);
            }
        }
    }
    resized
}

/// `v.clamp(0.0, 255.0).round() as u8` (half away from zero) without a call to `roundf`:
/// after the clamp `v` is non-negative, truncation is one instruction, and `v - t` is exact.
fn round_to_byte(v: f32) -> u8 {
    let v = v.clamp(0.0, 255.0);
    let t = v as u8;
    if v - f32::from(t) >= 0.5 {
        t + 1
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use image::imageops::FilterType;
    use image::{Rgb, RgbImage};

    use super::triangle;

    /// A reproducible image: smooth gradients plus noise, so rounding sits at every fraction.
    fn image(seed: u64, width: u32, height: u32) -> RgbImage {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        RgbImage::from_fn(width, height, |x, y| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state % 64) as u32;
            Rgb([((x * 7 + n) % 256) as u8, ((y * 5 + 2 * n) % 256) as u8, ((x + y + 3 * n) % 256) as u8])
        })
    }

    fn assert_same_as_image_crate(from: (u32, u32), to: (u32, u32), seed: u64) {
        let source = image(seed, from.0, from.1);
        let expected = image::imageops::resize(&source, to.0, to.1, FilterType::Triangle);
        let actual = triangle(&source, to.0, to.1);
        assert_eq!(actual.dimensions(), expected.dimensions(), "{from:?} -> {to:?}");
        assert!(actual.as_raw() == expected.as_raw(), "{from:?} -> {to:?} differs from the image crate");
    }

    #[test]
    fn matches_the_image_crate_on_every_size_the_judge_uses() {
        // 1080p and 720p at 1/8 scale to the hash and classifier sizes, then 64 to the hashes'.
        for (from, to) in [
            ((240, 135), (64, 64)),
            ((240, 135), (128, 128)),
            ((240, 135), (96, 96)),
            ((160, 90), (128, 128)),
            ((64, 64), (32, 32)),
            ((64, 64), (9, 8)),
            ((128, 128), (64, 64)),
            ((1920, 1080), (64, 64)),
        ] {
            assert_same_as_image_crate(from, to, 7);
        }
    }

    #[test]
    fn matches_the_image_crate_up_and_down_on_random_sizes() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |max: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % max) as u32 + 1
        };
        for seed in 0..300 {
            let from = (next(300), next(200));
            let to = (next(260), next(260));
            assert_same_as_image_crate(from, to, seed);
        }
    }

    #[test]
    fn keeps_degenerate_sizes_as_the_image_crate_does() {
        for (from, to) in [((1, 1), (5, 3)), ((7, 1), (1, 9)), ((3, 4), (3, 4)), ((5, 5), (0, 4)), ((5, 5), (4, 0))] {
            assert_same_as_image_crate(from, to, 1);
        }
        assert_eq!(triangle(&RgbImage::new(0, 0), 4, 3), RgbImage::new(4, 3));
    }

    #[test]
    fn rounds_as_round_does_at_every_integer_and_every_half() {
        for n in -2..=257 {
            for centre in [n as f32, n as f32 + 0.5] {
                let (mut below, mut above) = (centre, centre);
                for _ in 0..64 {
                    for v in [below, above] {
                        assert_eq!(super::round_to_byte(v), v.clamp(0.0, 255.0).round() as u8, "{v}");
                    }
                    (below, above) = (below.next_down(), above.next_up());
                }
            }
        }
    }
}
