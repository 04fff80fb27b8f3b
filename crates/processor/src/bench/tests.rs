use super::*;

#[test]
fn the_judge_bench_measures_both_paths_and_prints_their_ratio() {
    let options = Options { images: 2, noise: vec![3], min_cpu_seconds: 0.0 };
    let mut out = Vec::new();
    let results = judge_throughput(&options, 64, None, &mut out).expect("bench runs");
    let text = String::from_utf8(out).expect("utf8");

    assert_eq!(results.len(), 1);
    let set = &results[0];
    assert!(set.mean_bytes > 50_000, "1080p frames: {}", set.mean_bytes);
    for rate in [set.scaled.decode, set.scaled.hash_blank, set.full.decode, set.full.hash_blank] {
        assert!(rate.is_finite() && rate > 0.0, "{set:?}");
    }
    assert!(set.scaled.classify.is_none() && set.ratio() > 0.0);
    for expected in ["scaled", "full", "ratio", "target >= 150 images/s per core", "target >= 2.0x"] {
        assert!(text.contains(expected), "{expected:?} missing from:\n{text}");
    }
}

#[test]
fn more_noise_makes_bigger_files() {
    let size = |noise| {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&photo(1, 320, 180, noise))
            .expect("encodes");
        bytes.len()
    };
    assert!(size(8) > size(3), "the noise amplitude is what sets the file size");
}
