//! Test fixtures made in code: photo-like synthetic scenes and the alterations that
//! near-duplicate detection must see through.

use std::io::Cursor;

use image::{imageops::FilterType, Rgb, RgbImage};

/// xorshift64*: deterministic randomness without a dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub(crate) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Smooth random field in [0, 1]: value noise with 1/f octaves, like natural image spectra.
fn field(rng: &mut Rng, width: u32, height: u32) -> Vec<f32> {
    let mut out = vec![0.0f32; (width * height) as usize];
    let mut amplitude = 1.0;
    let mut total = 0.0;
    for cells in [3u32, 6, 12, 24, 48] {
        let grid: Vec<f32> = (0..(cells + 1) * (cells + 1)).map(|_| rng.unit()).collect();
        for y in 0..height {
            let gy = y as f32 * cells as f32 / height as f32;
            let (y0, fy) = (gy as u32, gy.fract());
            for x in 0..width {
                let gx = x as f32 * cells as f32 / width as f32;
                let (x0, fx) = (gx as u32, gx.fract());
                let g = |cx: u32, cy: u32| grid[(cy * (cells + 1) + cx) as usize];
                let top = g(x0, y0) * (1.0 - fx) + g(x0 + 1, y0) * fx;
                let bottom = g(x0, y0 + 1) * (1.0 - fx) + g(x0 + 1, y0 + 1) * fx;
                out[(y * width + x) as usize] += amplitude * (top * (1.0 - fy) + bottom * fy);
            }
        }
        total += amplitude;
        amplitude *= 0.55;
    }
    out.iter_mut().for_each(|v| *v /= total);
    out
}

/// A photo-like scene: sky-to-ground gradient, textured regions and a few solid objects.
pub(crate) fn scene(seed: u64, width: u32, height: u32) -> RgbImage {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let channels: Vec<Vec<f32>> = (0..3).map(|_| field(&mut rng, width, height)).collect();
    let horizon = 0.3 + 0.4 * rng.unit();
    let tint: Vec<f32> = (0..3).map(|_| 0.6 + 0.8 * rng.unit()).collect();
    let mut image = RgbImage::from_fn(width, height, |x, y| {
        let i = (y * width + x) as usize;
        let sky = if (y as f32 / height as f32) < horizon { 40.0 } else { -30.0 };
        Rgb([0, 1, 2].map(|c| (channels[c][i] * 230.0 * tint[c] + sky).clamp(0.0, 255.0) as u8))
    });
    for _ in 0..4 {
        let (cx, cy) = (rng.unit() * width as f32, rng.unit() * height as f32);
        let (rx, ry) = (0.05 + 0.15 * rng.unit(), 0.05 + 0.15 * rng.unit());
        let (rx, ry) = (rx * width as f32, ry * height as f32);
        let colour = Rgb([0, 1, 2].map(|_| (rng.unit() * 255.0) as u8));
        for (x, y, pixel) in image.enumerate_pixels_mut() {
            let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
            if dx * dx + dy * dy < 1.0 {
                *pixel = colour;
            }
        }
    }
    image
}

pub(crate) fn encode_jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .expect("encoding to memory cannot fail");
    out
}

pub(crate) fn encode_png(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).expect("encoding to memory cannot fail");
    out
}

/// The alterations the issue lists for near-duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alteration {
    Reencoded,
    Resized90,
    Cropped3,
    Brightened10,
    TextStamped,
}

pub(crate) const ALTERATIONS: [Alteration; 5] = [
    Alteration::Reencoded,
    Alteration::Resized90,
    Alteration::Cropped3,
    Alteration::Brightened10,
    Alteration::TextStamped,
];

pub(crate) fn alter(image: &RgbImage, how: Alteration) -> RgbImage {
    let (w, h) = image.dimensions();
    match how {
        Alteration::Reencoded => {
            image::load_from_memory(&encode_jpeg(image, 55)).expect("we just encoded it").into_rgb8()
        }
        Alteration::Resized90 => image::imageops::resize(image, w * 9 / 10, h * 9 / 10, FilterType::CatmullRom),
        Alteration::Cropped3 => {
            let (dx, dy) = (w * 3 / 100, h * 3 / 100);
            image::imageops::crop_imm(image, dx, dy, w - 2 * dx, h - 2 * dy).to_image()
        }
        Alteration::Brightened10 => {
            let mut out = image.clone();
            out.pixels_mut().for_each(|p| p.0 = p.0.map(|c| (f32::from(c) * 1.1).min(255.0) as u8));
            out
        }
        Alteration::TextStamped => {
            // A caption-like block of glyph strokes along the bottom, white on a dark band.
            let mut out = image.clone();
            let (x0, y0, bw, bh) = (w / 20, h * 85 / 100, w * 6 / 10, h / 12);
            for y in y0..(y0 + bh).min(h) {
                for x in x0..(x0 + bw).min(w) {
                    let (gx, gy) = ((x - x0) % (bh / 2 + 1), (y - y0) * 4 / bh.max(1));
                    let stroke = gx < 2 || gy == 0 || (gx + gy) % 5 == 0;
                    out.put_pixel(x, y, if stroke { Rgb([250, 250, 250]) } else { Rgb([20, 20, 20]) });
                }
            }
            out
        }
    }
}
