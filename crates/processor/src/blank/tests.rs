use image::{Rgb, RgbImage};

use super::*;
use crate::testutil::{scene, Rng};

fn uniform(value: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(640, 480, Rgb(value))
}

fn noisy(base: u8, amplitude: i32, seed: u64) -> RgbImage {
    let mut rng = Rng(seed);
    RgbImage::from_fn(640, 480, |_, _| {
        let v = (i32::from(base) + (rng.next() % (2 * amplitude as u64 + 1)) as i32 - amplitude).clamp(0, 255) as u8;
        Rgb([v, v, v])
    })
}

/// Maps a scene's luma range into `low..=high` (a dark or foggy version of it).
fn remapped(low: f32, high: f32, seed: u64) -> RgbImage {
    let mut image = scene(seed, 640, 480);
    image.pixels_mut().for_each(|p| p.0 = p.0.map(|c| (low + f32::from(c) / 255.0 * (high - low)) as u8));
    image
}

/// Black with sensor noise and a few small street lights (far under 1% of the frame).
fn night_with_lights() -> RgbImage {
    let mut image = noisy(6, 5, 7);
    for (cx, cy) in [(100u32, 200u32), (400, 220), (560, 180)] {
        for y in cy - 3..cy + 3 {
            for x in cx - 3..cx + 3 {
                image.put_pixel(x, y, Rgb([255, 230, 160]));
            }
        }
    }
    image
}

#[test]
fn flat_and_black_frames_are_blank_and_dark_or_foggy_scenes_are_not() {
    let cases: Vec<(&str, RgbImage, bool)> = vec![
        ("mid grey", uniform([128, 128, 128]), true),
        ("white", uniform([255, 255, 255]), true),
        ("a solid colour", uniform([30, 90, 200]), true),
        ("black", uniform([0, 0, 0]), true),
        ("black with sensor noise", noisy(8, 8, 1), true),
        ("grey with heavy sensor noise", noisy(120, 20, 2), true),
        ("an ordinary scene", scene(3, 640, 480), false),
        ("a dark scene with detail (luma 0..40)", remapped(0.0, 40.0, 4), false),
        ("a very dark scene with detail (luma 0..28)", remapped(0.0, 28.0, 5), false),
        ("fog (luma 170..205)", remapped(170.0, 205.0, 6), false),
        ("night with a few small lights", night_with_lights(), false),
    ];
    for (name, image, blank) in cases {
        let stats = blank_stats(&image);
        assert_eq!(stats.score >= 0.5, blank, "{name}: {stats:?}");
        assert!((0.0..=1.0).contains(&stats.score), "{name}: {stats:?}");
    }
}
