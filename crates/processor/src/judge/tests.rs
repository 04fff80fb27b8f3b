use std::path::Path;
use std::sync::Arc;

use image::{Rgb, RgbImage};

use super::*;
use crate::classifier::{Model, OnnxRuntime, DEFAULT_DYLIB};
use crate::testutil::{alter, encode_jpeg, scene, Alteration, ALTERATIONS};
use crate::verdict::{Thresholds, BLANK, CLASSIFIER, DUPLICATE, NEAR_DUPLICATE};

struct Upload {
    camera: &'static str,
    received_at: i64,
    duplicate_of: Option<u64>,
    bytes: Vec<u8>,
}

fn upload(camera: &'static str, received_at: i64, image: &RgbImage) -> Upload {
    Upload { camera, received_at, duplicate_of: None, bytes: encode_jpeg(image, 90) }
}

/// Judges uploads as seq 1, 2, … in order; returns each verdict's reasons and near-dup origin.
fn judge_all(uploads: &[Upload], config: &Config) -> Vec<(Vec<&'static str>, Option<u64>)> {
    let mut history = History::new(config);
    uploads
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let analysis = analyse(&u.bytes, config, None).expect("valid image");
            let event = EventFacts {
                seq: i as u64 + 1,
                camera: u.camera,
                received_at: u.received_at,
                duplicate_of: u.duplicate_of,
            };
            let verdict = judge_in_order(&mut history, &event, &analysis, config).expect("distance within index");
            (verdict.reasons, verdict.near_duplicate_of)
        })
        .collect()
}

#[test]
fn a_stream_of_uploads_gets_the_expected_verdicts() {
    let a = scene(1, 960, 540);
    let b = scene(2, 960, 540);
    let mut uploads = vec![
        upload("cam-1", 0, &a),                                               // 1
        Upload { duplicate_of: Some(1), ..upload("cam-1", 10, &a) },          // 2
        upload("cam-1", 20, &b),                                              // 3
        upload("cam-2", 30, &RgbImage::from_pixel(960, 540, Rgb([3, 3, 3]))), // 4
    ];
    for (i, how) in ALTERATIONS.iter().enumerate() {
        uploads.push(upload("cam-1", 40 + i as i64, &alter(&a, *how))); // 5..=9
    }
    let verdicts = judge_all(&uploads, &Config::default());
    let none: Vec<&str> = vec![];
    assert_eq!(verdicts[0], (none.clone(), None), "the first photo is clean");
    assert_eq!(verdicts[1], (vec![DUPLICATE, NEAR_DUPLICATE], Some(1)), "an exact duplicate");
    assert_eq!(verdicts[2], (none, None), "a distinct photo is clean");
    assert_eq!(verdicts[3].0, vec![BLANK], "a black frame");
    for (i, how) in ALTERATIONS.iter().enumerate() {
        let seq = 5 + i as u64;
        let (reasons, origin) = &verdicts[4 + i];
        assert_eq!(reasons, &vec![NEAR_DUPLICATE], "{how:?} copy");
        // The closest earlier member of photo A's family: the original, its duplicate, or an
        // earlier altered copy — never B or the black frame.
        let origin = origin.expect("a near-duplicate has an origin");
        assert!(origin == 1 || origin == 2 || (5..seq).contains(&origin), "{how:?} copy matched {origin}");
    }
}

#[test]
fn scope_and_time_window_limit_what_counts_as_an_earlier_copy() {
    let a = scene(3, 640, 480);
    let copy = alter(&a, Alteration::Reencoded);
    let cases: Vec<(&str, Config, Upload, Option<u64>)> = vec![
        ("all cameras: another camera's copy matches", Config::default(), upload("cam-2", 100, &copy), Some(1)),
        (
            "same camera: another camera's copy does not match",
            Config { scope: Scope::SameCamera, ..Config::default() },
            upload("cam-2", 100, &copy),
            None,
        ),
        (
            "same camera: the same camera's copy matches",
            Config { scope: Scope::SameCamera, ..Config::default() },
            upload("cam-1", 100, &copy),
            Some(1),
        ),
        (
            "a copy inside the window matches",
            Config { window_secs: Some(100), ..Config::default() },
            upload("cam-1", 100, &copy),
            Some(1),
        ),
        (
            "a copy outside the window does not",
            Config { window_secs: Some(99), ..Config::default() },
            upload("cam-1", 100, &copy),
            None,
        ),
    ];
    for (name, config, second, expected) in cases {
        let verdicts = judge_all(&[upload("cam-1", 0, &a), second], &config);
        assert_eq!(verdicts[1].1, expected, "{name}");
    }
}

#[test]
fn the_classifier_score_and_top_label_are_part_of_the_verdict() {
    let dylib = std::env::var_os("CAMLEDGER_ORT_DYLIB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(DEFAULT_DYLIB));
    let runtime = OnnxRuntime::load(&dylib).unwrap_or_else(|e| panic!("{e}"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.manifest.json");
    let model = Arc::new(Model::load(&manifest).expect("fixture model"));
    let mut classifier = Classifier::new(&runtime, model).expect("session");
    let config = Config::default();
    let red = encode_jpeg(&RgbImage::from_fn(320, 240, |x, _| Rgb([255, (x % 200) as u8, 0])), 90);
    let analysis = analyse(&red, &config, Some(&mut classifier)).expect("valid image");
    let classification = analysis.classification.clone().expect("classifier ran");
    let mut history = History::new(&config);
    let event = EventFacts { seq: 1, camera: "c", received_at: 0, duplicate_of: None };
    let verdict = judge_in_order(&mut history, &event, &analysis, &config).expect("valid query");
    assert!(classification.spam, "{classification:?}");
    assert_eq!(verdict.reasons, vec![CLASSIFIER]);
    assert_eq!(verdict.scores.get("classifier"), Some(&classification.score));
    assert!(verdict.scores.contains_key("label_spam"), "{:?}", verdict.scores);
    assert_eq!(top_label(&verdict.scores).map(|(label, _)| label), Some(classification.top_label.as_str()));
    assert_eq!(verdict.scores.get(crate::verdict::SPAM_THRESHOLD), Some(&config.thresholds.classifier));
}

#[test]
fn label_score_names_fit_the_ledger_alphabet() {
    let cases = [
        ("meme", "label_meme"),
        ("Screen-Shot 2", "label_screen_shot__"),
        ("a_very_long_label_name_that_goes_on", "label_a_very_long_label_name_tha"),
    ];
    for (label, name) in cases {
        assert_eq!(label_score_name(label), name, "{label}");
    }
}

#[test]
fn a_config_for_a_model_takes_the_manifests_threshold() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.manifest.json");
    let mut manifest: crate::classifier::Manifest =
        serde_json::from_slice(&std::fs::read(path).expect("fixture exists")).expect("valid manifest");
    manifest.threshold = 0.7;
    let model = Model::from_parts(manifest, Arc::from(&b""[..])).expect("valid manifest");
    let config = Config::for_model(&model);
    assert_eq!(config.thresholds.classifier, 0.7);
    assert_eq!(Config { thresholds: Thresholds { classifier: 0.5, ..config.thresholds }, ..config }, Config::default());
}
