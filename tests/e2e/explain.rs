//! Verdicts that explain themselves and operators who calibrate them: the spam threshold in
//! force recorded in every verdict (and honoured by replay), the top label and scores in the
//! API and in `camledger log`, each camera's scene distance, and `camledger evaluate`.

use std::path::Path;
use std::process::Command;

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::Value;

use crate::helpers::*;

/// `camledger ARGS` with the test's ONNX Runtime; returns (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("CAMLEDGER_LOG", "warn")
        .env("CAMLEDGER_ORT_DYLIB", ort_dylib())
        .envs(env.iter().copied())
        .output()
        .expect("running camledger");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn verdict_json_at(app: &TestApp, rev: &str) -> Value {
    serde_json::from_str(&app.git(&["cat-file", "blob", &format!("{rev}:verdict.json")])).expect("verdict.json")
}

/// A scene seen by a fixed camera: a few large shapes on a gradient; `light` scales exposure,
/// `shift` moves it by some pixels, `person` adds a small dark figure.
fn scene_frame(light: f32, shift: u32, person: bool) -> Vec<u8> {
    let img = RgbImage::from_fn(320, 240, |x, y| {
        let x = x + shift;
        let mut c = [60.0 + y as f32 * 0.6, 90.0 + x as f32 * 0.2, 140.0];
        if (40..140).contains(&x) && (100..220).contains(&y) {
            c = [180.0, 60.0, 40.0]; // a house
        }
        if (200..300).contains(&x) && (60..200).contains(&y) {
            c = [30.0, 120.0, 40.0]; // a tree
        }
        if person && (150..165).contains(&x) && (160..215).contains(&y) {
            c = [20.0, 20.0, 20.0];
        }
        Rgb(c.map(|v| (v * light).min(255.0) as u8))
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Something else entirely: a checkerboard.
fn other_scene() -> Vec<u8> {
    let img = RgbImage::from_fn(320, 240, |x, y| if (x / 40 + y / 40) % 2 == 0 { Rgb([230; 3]) } else { Rgb([25; 3]) });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn the_spam_threshold_in_force_is_recorded_and_replay_judges_with_the_recorded_one() {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL, "--spam-threshold", "0.75"]).await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(500 + n)).await.status(), 201);
    }
    app.wait_for_verdict(3).await;
    // Stock git: every verdict.json records the threshold (millionths, canonical JSON).
    for rev in ["refs/heads/verdicts", "refs/heads/verdicts~1", "refs/heads/verdicts~2"] {
        let verdict = verdict_json_at(&app, rev);
        assert_eq!(verdict["scores"]["spam_threshold"], 750_000, "{verdict}");
    }
    assert!(app.git(&["log", "--notes=verdicts", "-1", "refs/heads/events"]).contains("spam_threshold=0.750000"));

    // Replayed with another threshold, the recorded one still reproduces every verdict.
    let base = ["replay", "--data-dir", app.dir(), "--model", TINY_MODEL, "--strict", "--format", "json"];
    for threshold in ["0.01", "1"] {
        let (code, stdout, stderr) = run(&base, &[("CAMLEDGER_SPAM_THRESHOLD", threshold)]);
        assert_eq!(code, 0, "--spam-threshold {threshold}: {stdout}{stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["summary"]["agreements"], 3, "{report}");
    }
    // A threshold outside (0, 1] is a usage error, for the flag and the variable alike.
    for bad in ["0", "1.5", "-0.2", "high"] {
        let flag = format!("--spam-threshold={bad}");
        let (code, _, stderr) = run(&[&base[..], &[flag.as_str()]].concat(), &[]);
        assert_eq!(code, 2, "--spam-threshold {bad}: {stderr}");
        assert!(stderr.contains("spam-threshold"), "{stderr}");
        let (code, _, stderr) = run(&base, &[("CAMLEDGER_SPAM_THRESHOLD", bad)]);
        assert_eq!(code, 2, "CAMLEDGER_SPAM_THRESHOLD={bad}: {stderr}");
    }
    assert_fsck_clean(&app.git_dir());
}

#[tokio::test]
async fn the_api_and_log_show_reasons_scores_and_the_models_top_label() {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let black = {
        let mut out = std::io::Cursor::new(Vec::new());
        RgbImage::from_pixel(96, 64, Rgb([2, 2, 2])).write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    };
    assert_eq!(app.upload(black).await.status(), 201);
    app.wait_for_verdict(2).await;

    let labels: Vec<String> = {
        let manifest: Value = serde_json::from_slice(&std::fs::read(TINY_MODEL).unwrap()).unwrap();
        manifest["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect()
    };
    for seq in [1, 2] {
        let body = app.get_json(&format!("/v1/events/{seq}")).await;
        let verdict = &body["verdict"];
        let top = verdict["top_label"]["label"].as_str().unwrap_or_else(|| panic!("a top label: {verdict}"));
        assert!(labels.iter().any(|l| l == top), "{top} is one of the manifest's labels {labels:?}");
        let probability = verdict["top_label"]["probability"].as_f64().unwrap();
        assert!((1.0 / labels.len() as f64..=1.0).contains(&probability), "{verdict}");
        assert_eq!(verdict["scores"][format!("label_{top}")], probability, "{verdict}");
        assert!(verdict["scores"]["classifier"].is_number() && verdict["scores"]["blank"].is_number(), "{verdict}");
        assert_eq!(verdict["spam_threshold"], 0.5, "the tiny manifest's threshold: {verdict}");
        assert!(verdict["reasons"].is_array(), "{verdict}");
    }
    let blank = app.get_json("/v1/events/2").await;
    assert!(blank["verdict"]["reasons"].as_array().unwrap().contains(&Value::from("blank")), "{blank}");

    // `log` prints the reason with its score, the top label and the threshold beside each event.
    let text = camledger(&["log", "--data-dir", app.dir(), "--format", "text"]);
    let lines: Vec<&str> = text.lines().collect();
    let blank_score = blank["verdict"]["scores"]["blank"].as_f64().unwrap();
    assert!(lines[1].contains("verdict=spam:blank"), "{text}");
    assert!(lines[1].contains(&format!(" score=blank:{}", trim(blank_score))), "{text}");
    // The first image: whatever the tiny model thinks of it, its classifier score is shown.
    let classifier = app.get_json("/v1/events/1").await["verdict"]["scores"]["classifier"].as_f64().unwrap();
    assert!(lines[0].contains(&format!("score=classifier:{}", trim(classifier))), "{text}");
    for line in &lines {
        assert!(line.contains(" top=") && line.contains(" threshold=0.5"), "{line}");
    }
}

/// A score as `log` prints it: six decimals without trailing zeros.
fn trim(value: f64) -> String {
    format!("{value:.6}").trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[tokio::test]
async fn each_verdict_records_the_distance_to_its_cameras_scene_and_first_frames_get_none() {
    // The classifier never fires (threshold 1): what is measured is the scene alone.
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL, "--spam-threshold", "1"]).await;
    let mut frames: Vec<Vec<u8>> = (0..10).map(|i| scene_frame(0.7 + 0.05 * i as f32, i % 3, i % 2 == 0)).collect();
    frames.push(other_scene());
    frames.push(scene_frame(1.0, 1, true));
    for bytes in &frames {
        assert!(app.upload(bytes.clone()).await.status().is_success());
    }
    let count = frames.len() as u64;
    app.wait_for_verdict(count).await;
    let verdicts: Vec<Value> =
        (1..=count).map(|seq| verdict_json_at(&app, &format!("refs/heads/verdicts~{}", count - seq))).collect();
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(v["event_seq"], i as u64 + 1);
        let reasons: Vec<&str> = v["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert!(reasons.iter().all(|r| ["duplicate", "near_duplicate"].contains(r)), "the scene flags nothing: {v}");
        if i < 8 {
            assert!(v["scores"].get("scene_distance").is_none(), "frame {}: no scene yet: {v}", i + 1);
        } else {
            assert!(v["scores"]["scene_distance"].is_number(), "frame {}: {v}", i + 1);
        }
    }
    let distance = |i: usize| verdicts[i]["scores"]["scene_distance"].as_i64().unwrap() / 1_000_000;
    assert!(distance(8) <= 10 && distance(9) <= 10 && distance(11) <= 10, "the camera's own scene is near");
    assert!(distance(10) > 16, "another scene is far: {}", distance(10));
    assert!(verdicts[10]["spam"] == false, "and still not spam: {}", verdicts[10]);

    // A replay from the middle rebuilds the scenes from the verdicts before it and reproduces
    // every distance.
    let (code, stdout, stderr) = run(
        &["replay", "--data-dir", app.dir(), "--model", TINY_MODEL, "--from", "10", "--strict", "--format", "json"],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["summary"]["agreements"], 3, "{report}");
}

/// A folder of labelled images built from the processor's fixtures, and its labels file.
fn labelled_folder(dir: &Path) -> String {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../processor/models/fixtures");
    let mut csv = String::from("file,label\n");
    for (file, label) in [
        ("photo_plain.png", "ham"),
        ("photo_osd.png", "ham"),
        ("photo_night.png", "ham"),
        ("meme.png", "spam"),
        ("screenshot.png", "spam"),
        ("document.png", "spam"),
        ("flat.png", "spam"),
    ] {
        std::fs::copy(Path::new(fixtures).join(file), dir.join(file)).unwrap();
        csv.push_str(&format!("{file},{label}\n"));
    }
    // A second copy of a photo: the service flags the exact duplicate, so must evaluate.
    std::fs::copy(Path::new(fixtures).join("photo_plain.png"), dir.join("again.png")).unwrap();
    csv.push_str("again.png,ham\n");
    // A covered lens: the blank detector's, whatever the model thinks of it.
    RgbImage::from_pixel(320, 240, Rgb([3, 3, 3])).save(dir.join("lens_cap.png")).unwrap();
    csv.push_str("lens_cap.png,spam\n");
    csv
}

#[test]
fn evaluate_judges_a_labelled_folder_as_the_service_would_and_suggests_a_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, labelled_folder(dir.path())).unwrap();
    let (labels, folder) = (labels.to_str().unwrap(), dir.path().to_str().unwrap());

    let (code, stdout, stderr) = run(&["evaluate", "--labels", labels, folder, "--format", "json"], &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!((report["ham"].as_u64(), report["spam"].as_u64()), (Some(4), Some(5)), "{report}");
    let files = report["files"].as_array().unwrap();
    let by_name = |name: &str| files.iter().find(|f| f["file"] == name).unwrap_or_else(|| panic!("{name}"));
    assert!(by_name("lens_cap.png")["reasons"].as_array().unwrap().contains(&Value::from("blank")), "{report}");
    assert!(by_name("again.png")["reasons"].as_array().unwrap().contains(&Value::from("duplicate")), "{report}");
    assert!(by_name("meme.png")["top_label"].is_string(), "{report}");
    // The counts agree with the per-file verdicts.
    let flagged = |label: &str| files.iter().filter(|f| f["label"] == label && f["spam"] == true).count() as u64;
    assert_eq!(report["at_threshold"]["false_positives"], flagged("ham"));
    assert_eq!(report["at_threshold"]["caught"], flagged("spam"));
    assert_eq!(report["false_positive_files"].as_array().unwrap().len() as u64, flagged("ham"));
    assert!(report["false_positive_files"].as_array().unwrap().contains(&Value::from("again.png")));
    assert_eq!(report["scores"]["ham"]["count"], 4);
    // One ham in four is a duplicate whatever the threshold: 25% is reachable, 0% is not.
    assert_eq!(report["target_false_positive_rate"], 0.01);
    assert!(report["suggested"].is_null(), "{report}");
    let (code, stdout, _) =
        run(&["evaluate", "--labels", labels, folder, "--format", "json"], &[("CAMLEDGER_TARGET_FPR", "0.25")]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let suggested = &report["suggested"];
    assert!(suggested["false_positive_rate"].as_f64().unwrap() <= 0.25, "{report}");
    let t = suggested["threshold"].as_f64().unwrap();
    let ham_scores: Vec<f64> = files_of(&report, "ham")
        .iter()
        .filter(|f| f["file"] != "again.png")
        .map(|f| f["scores"]["classifier"].as_f64().unwrap())
        .collect();
    assert!(ham_scores.iter().all(|s| *s < t), "no other ham flagged at {t}: {ham_scores:?}");
    assert!(ham_scores.iter().any(|s| *s >= t - 1e-6 - 1e-9), "and the lowest such threshold: {t} {ham_scores:?}");

    // Text: false positives, recall, the distribution and the threshold.
    let (code, text, _) = run(&["evaluate", "--labels", labels, folder, "--target-fpr", "0.25"], &[]);
    assert_eq!(code, 0);
    for expected in
        ["false positives: ", "recall: ", "classifier scores", "threshold for at most 25.00% false positives: "]
    {
        assert!(text.contains(expected), "{expected}: {text}");
    }
}

fn files_of<'a>(report: &'a Value, label: &str) -> Vec<&'a Value> {
    report["files"].as_array().unwrap().iter().filter(|f| f["label"] == label).collect()
}

#[test]
fn evaluate_names_what_is_wrong_with_a_labels_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), jpeg(1)).unwrap();
    let folder = dir.path().to_str().unwrap();
    let labels = dir.path().join("labels.csv");
    let cases = [
        ("a.jpg,maybe\n", 2, "line 1: unknown label \"maybe\" (use ham or spam)"),
        ("a.jpg;ham\n", 2, "line 1: expected `file,label`"),
        ("missing.jpg,ham\n", 2, "missing.jpg is not a file in"),
        ("file,label\n", 2, "no labelled files"),
    ];
    for (text, code, message) in cases {
        std::fs::write(&labels, text).unwrap();
        let (got, stdout, stderr) = run(&["evaluate", "--labels", labels.to_str().unwrap(), folder], &[]);
        assert_eq!(got, code, "{text:?}: {stdout}{stderr}");
        assert!(stderr.contains(message), "{text:?}: {stderr}");
    }
    let (got, _, stderr) = run(&["evaluate", "--labels", "/nonexistent/labels.csv", folder], &[]);
    assert_eq!(got, 1, "{stderr}");
    assert!(stderr.contains("reading the labels file /nonexistent/labels.csv"), "{stderr}");
    let (got, _, stderr) = run(&["evaluate", "--labels", labels.to_str().unwrap(), folder, "--target-fpr", "2"], &[]);
    assert_eq!(got, 2, "{stderr}");
}
