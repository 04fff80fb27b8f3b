//! Bounded-memory decoding to the small images that hashing, blank detection and the
//! classifier need.
//!
//! [`decode_scaled`] is the production path. For JPEG (nearly every camera upload) it never
//! decodes at full size: when 1/8 scale still leaves `side` pixels on the short side (1080p to
//! 64: 240×135), the `dc` module reads only the DC coefficient of each 8×8 block, which *is*
//! the block's mean, skipping dequantisation, IDCT, full-size upsampling and colour conversion;
//! other JPEGs (progressive, CMYK, or a larger `side`) go through `jpeg-decoder`'s reduced-scale
//! IDCT (`Decoder::scale`, 1/2, 1/4, 1/8). The `image` crate's decoder (zune-jpeg) cannot scale
//! in the DCT. PNG and WebP have no such trick and are decoded fully through `image`, bounded by
//! the admission pixel limit checked first.
//!
//! [`decode_full`] decodes every pixel (zune-jpeg through `image`) and then shrinks: it exists so
//! that the benchmark can compare images/s of the two paths on the same inputs.
//!
//! Chosen by measurement (`examples/throughput.rs` or `camledger bench judge`, release build,
//! 1920×1080 q90 JPEGs, one thread, images per CPU-second): jpeg-decoder at 1/8 scale was *not*
//! faster than zune-jpeg's full decode (75 vs 88/s on 540 KB files, 108 vs 137/s on 270 KB),
//! because both are bound by Huffman decoding and zune's is faster. So the `dc` module has its
//! own entropy decoder that never produces AC values: a 12-bit table skips several
//! `(run, size)` codes *with their value bits* per lookup, and the bit reader loads up to 8
//! bytes at once when none is `FF`. Measured on 2026-11-22 (quiet 2-core box): the scaled
//! path decodes 305/s on 270 KB files and 229/s on 540 KB (213–285/s including dHash, blank
//! statistics and the classifier), against 80–109/s for the full path (zune + box thumbnail):
//! 2.7–2.9×. The previous one-symbol-per-lookup version managed 145–211/s. Admission's walk
//! over the scan uses `memchr` for the `FF` bytes (9,000+ files/s on 540 KB files). Debug
//! builds distort this (debug assertions in the image crate's resize), so measure in release.
//!
//! The judge needs two sizes: hashes and blank statistics always at 64×64 (so a recorded hash
//! never depends on the classifier's input size), the classifier at its own input size;
//! [`decode_scaled_pair`] gets both from one decode.
//!
//! Both return exactly `side`×`side` RGB (aspect ratio stretched, as the classifier manifest's
//! `"resize": "stretch"` and the perceptual hashes expect), shrunk with the `Triangle` filter.

use image::RgbImage;
use tracing::instrument;

use crate::admission::{self, Format, Limits, Rejection};

mod dc;

/// Why an image could not be decoded. The worker records such an event as corrupt (it was
/// admitted, so this means a decoder disagreement or a damaged entropy-coded stream): no retry,
/// log at `warn` with the event's seq.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Admission refused the bytes (only possible for data that bypassed the API).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The JPEG entropy-coded data could not be decoded.
    #[error("JPEG decoding failed: {0}")]
    Jpeg(#[from] jpeg_decoder::Error),
    /// The `image` crate could not decode the PNG/WebP (or, on the full path, the JPEG).
    #[error("image decoding failed: {0}")]
    Image(#[from] image::ImageError),
    /// The JPEG uses a pixel format we do not convert (e.g. 16-bit lossless).
    #[error("unsupported JPEG pixel format {0:?}")]
    PixelFormat(jpeg_decoder::PixelFormat),
}

/// Decodes `bytes` to a `side`×`side` RGB image, using reduced-scale IDCT for JPEG.
#[instrument(level = "debug", skip_all, fields(size = bytes.len(), side), err(level = "debug"))]
pub fn decode_scaled(bytes: &[u8], side: u32, limits: &Limits) -> Result<RgbImage, DecodeError> {
    let admitted = admission::check(bytes, limits)?;
    let image = match admitted.format {
        Format::Jpeg => decode_jpeg_scaled(bytes, side, admitted.width, admitted.height, limits)?,
        Format::Png | Format::Webp => decode_with_image_crate(bytes, admitted.format, limits)?,
    };
    Ok(shrink(image, side))
}

/// Decodes every pixel, then shrinks to `side`×`side`: the reference path for benchmarks.
///
/// The shrink is the image crate's box-filter `thumbnail` (an area average, fast and as good
/// as Triangle for large reductions), so the comparison with [`decode_scaled`] measures the
/// decode, not a needlessly slow resize of a full frame (Triangle from 1080p costs more than
/// decoding it).
#[instrument(level = "debug", skip_all, fields(size = bytes.len(), side), err(level = "debug"))]
pub fn decode_full(bytes: &[u8], side: u32, limits: &Limits) -> Result<RgbImage, DecodeError> {
    let admitted = admission::check(bytes, limits)?;
    let image = decode_with_image_crate(bytes, admitted.format, limits)?;
    if image.width() >= 2 * side && image.height() >= 2 * side {
        return Ok(image::imageops::thumbnail(&image, side, side));
    }
    Ok(shrink(image, side))
}

/// Decodes `bytes` once to two sizes, `a`×`a` and `b`×`b` (the hashes' fixed size and the
/// classifier's input), each *exactly* what [`decode_scaled`] gives for that size: one shared
/// decode when the path allows (DC-only JPEG good for both sizes, PNG, WebP), two otherwise
/// (small or progressive JPEGs). So a hash never depends on which model runs beside it.
pub fn decode_scaled_pair(bytes: &[u8], a: u32, b: u32, limits: &Limits) -> Result<(RgbImage, RgbImage), DecodeError> {
    if a == b {
        let image = decode_scaled(bytes, a, limits)?;
        return Ok((image.clone(), image));
    }
    let admitted = admission::check(bytes, limits)?;
    let shared = match admitted.format {
        Format::Jpeg if admitted.width.min(admitted.height).div_ceil(8) >= a.max(b) => dc::decode_dc(bytes),
        Format::Jpeg => None,
        Format::Png | Format::Webp => Some(decode_with_image_crate(bytes, admitted.format, limits)?),
    };
    match shared {
        // `triangle` reads the shared image; only the last size may take it over.
        Some(image) => Ok((crate::resize::triangle(&image, a, a), shrink(image, b))),
        None => Ok((decode_scaled(bytes, a, limits)?, decode_scaled(bytes, b, limits)?)),
    }
}

/// [`decode_full`] to two sizes from one full decode: the benchmark's reference for
/// [`decode_scaled_pair`].
pub fn decode_full_pair(bytes: &[u8], a: u32, b: u32, limits: &Limits) -> Result<(RgbImage, RgbImage), DecodeError> {
    let admitted = admission::check(bytes, limits)?;
    let image = decode_with_image_crate(bytes, admitted.format, limits)?;
    let to = |side: u32| {
        if image.width() >= 2 * side && image.height() >= 2 * side {
            image::imageops::thumbnail(&image, side, side)
        } else {
            crate::resize::triangle(&image, side, side)
        }
    };
    Ok((to(a), to(b)))
}

/// Decodes `bytes` to at most `max_side` pixels on the long side, keeping the aspect ratio:
/// the dashboard's thumbnails. The same reduced-scale path as [`decode_scaled`] (a 1080p JPEG
/// is read from its DC coefficients, 240×135, then shrunk), bounded by admission's limits.
pub fn decode_thumbnail(bytes: &[u8], max_side: u32, limits: &Limits) -> Result<RgbImage, DecodeError> {
    let admitted = admission::check(bytes, limits)?;
    let (width, height) = (admitted.width.max(1), admitted.height.max(1));
    let scale = (f64::from(max_side.max(1)) / f64::from(width.max(height))).min(1.0);
    let fit = |n: u32| ((f64::from(n) * scale).round() as u32).max(1);
    let (w, h) = (fit(width), fit(height));
    let image = match admitted.format {
        Format::Jpeg => decode_jpeg_scaled(bytes, w.min(h), width, height, limits)?,
        Format::Png | Format::Webp => decode_with_image_crate(bytes, admitted.format, limits)?,
    };
    if image.width() == w && image.height() == h {
        return Ok(image);
    }
    Ok(crate::resize::triangle(&image, w, h))
}

fn decode_with_image_crate(bytes: &[u8], format: Format, limits: &Limits) -> Result<RgbImage, DecodeError> {
    let format = match format {
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::Png => image::ImageFormat::Png,
        Format::Webp => image::ImageFormat::WebP,
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // Admission checked the header's `width × height × channels × bytes per sample` against
    // the same budget; this holds the decoder to it should it allocate more than declared.
    let mut decode_limits = image::Limits::default();
    decode_limits.max_alloc = Some(limits.max_decode_bytes);
    reader.limits(decode_limits);
    // Alpha is dropped (composited onto black), as the model manifest specifies.
    Ok(reader.decode()?.into_rgb8())
}

fn decode_jpeg_scaled(
    bytes: &[u8],
    side: u32,
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<RgbImage, DecodeError> {
    // 1/8 scale is enough: take the DC coefficients directly (see `dc`); out of its scope,
    // jpeg-decoder does the job.
    if width.min(height).div_ceil(8) >= side {
        if let Some(image) = dc::decode_dc(bytes) {
            return Ok(image);
        }
    }
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_decode_bytes).unwrap_or(usize::MAX));
    // jpeg-decoder picks the smallest scale at which EITHER requested side is reached, so ask
    // only for the short side (the other request is unreachable) to keep both sides ≥ `side`.
    let want = u16::try_from(side).unwrap_or(u16::MAX);
    let (out_w, out_h) =
        if width <= height { decoder.scale(want, u16::MAX)? } else { decoder.scale(u16::MAX, want)? };
    let pixels = decoder.decode()?;
    let info = decoder.info().ok_or(jpeg_decoder::Error::Format("no frame header".into()))?;
    let (w, h) = (u32::from(out_w), u32::from(out_h));
    let rgb = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::CMYK32 => pixels
            .chunks_exact(4)
            .flat_map(|p| {
                // Approximation (CMYK cameras are rare): assume Adobe's inverted CMYK, where
                // each stored value is already 255 - ink, so multiply by the inverted black.
                let k = u16::from(p[3]);
                [p[0], p[1], p[2]].map(|c| (u16::from(c) * k / 255) as u8)
            })
            .collect(),
        other @ jpeg_decoder::PixelFormat::L16 => return Err(DecodeError::PixelFormat(other)),
    };
    RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| DecodeError::Jpeg(jpeg_decoder::Error::Format("decoded buffer has the wrong size".into())))
}

fn shrink(image: RgbImage, side: u32) -> RgbImage {
    if image.width() == side && image.height() == side {
        return image;
    }
    crate::resize::triangle(&image, side, side)
}

/// Luma (BT.601) of an RGB image, as `f32` in 0..=255, row-major.
pub fn luma(image: &RgbImage) -> Vec<f32> {
    image.pixels().map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])).collect()
}

/// Shrinks an already small image to `side`×`side` luma (area-weighted), for hashes and stats.
pub fn luma_at(image: &RgbImage, side: u32) -> Vec<f32> {
    if image.width() == side && image.height() == side {
        return luma(image);
    }
    luma(&crate::resize::triangle(image, side, side))
}

#[cfg(test)]
mod tests;
