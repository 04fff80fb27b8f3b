// Table-test rows are tuples on purpose: one line per case.
#![allow(clippy::type_complexity, clippy::manual_is_multiple_of)]

use image::Rgb;

use super::*;
use crate::testutil::scene;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The real ONNX Runtime library: `CAMLEDGER_ORT_DYLIB`, else the repository's vendor copy
/// (run `scripts/fetch-onnxruntime` once).
fn runtime() -> OnnxRuntime {
    let path = std::env::var_os("CAMLEDGER_ORT_DYLIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(DEFAULT_DYLIB));
    OnnxRuntime::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn tiny_manifest() -> Manifest {
    let text = std::fs::read(fixtures().join("tiny.manifest.json")).expect("fixture exists");
    serde_json::from_slice(&text).expect("fixture is valid")
}

fn model_with(edit: impl FnOnce(&mut Manifest)) -> Result<Model, ModelError> {
    let mut manifest = tiny_manifest();
    edit(&mut manifest);
    Model::from_parts(manifest, Arc::from(&b""[..]))
}

/// What tiny.onnx computes, by hand: channel means of x = u8/255 -> W·x + b -> softmax.
fn tiny_reference(image: &RgbImage) -> Vec<f32> {
    let small = image::imageops::resize(image, 8, 8, image::imageops::FilterType::Triangle);
    let mut means = [0.0f32; 3];
    for p in small.pixels() {
        for c in 0..3 {
            means[c] += f32::from(p[c]) / 255.0 / 64.0;
        }
    }
    let w = [[-2.0, 2.0], [0.5, -0.5], [0.25, -0.25]];
    let logits: Vec<f32> = (0..2).map(|k| [0.1, -0.1][k] + (0..3).map(|c| means[c] * w[c][k]).sum::<f32>()).collect();
    softmax(&logits)
}

#[test]
fn preprocessing_follows_layout_channel_order_and_normalisation() {
    // 2×1 image: pixel 0 = (255, 0, 51), pixel 1 = (0, 255, 102).
    let mut image = RgbImage::new(2, 1);
    image.put_pixel(0, 0, Rgb([255, 0, 51]));
    image.put_pixel(1, 0, Rgb([0, 255, 102]));
    let cases: Vec<(&str, Layout, Channels, [f32; 3], [f32; 3], Vec<f32>)> = vec![
        ("NCHW RGB plain", Layout::Nchw, Channels::Rgb, [0.0; 3], [1.0; 3], vec![1.0, 0.0, 0.0, 1.0, 0.2, 0.4]),
        ("NHWC RGB plain", Layout::Nhwc, Channels::Rgb, [0.0; 3], [1.0; 3], vec![1.0, 0.0, 0.2, 0.0, 1.0, 0.4]),
        ("NCHW BGR plain", Layout::Nchw, Channels::Bgr, [0.0; 3], [1.0; 3], vec![0.2, 0.4, 0.0, 1.0, 1.0, 0.0]),
        (
            "NCHW RGB normalised",
            Layout::Nchw,
            Channels::Rgb,
            [0.5; 3],
            [0.25; 3],
            vec![2.0, -2.0, -2.0, 2.0, -1.2, -0.4],
        ),
    ];
    for (name, layout, channels, mean, std, expected) in cases {
        let model = model_with(|m| {
            m.input.width = 2;
            m.input.height = 1;
            m.input.layout = layout;
            m.input.channels = channels;
            m.input.mean = mean;
            m.input.std = std;
        })
        .expect("valid manifest");
        let tensor = model.tensor(&[&image]);
        assert_eq!(tensor.len(), expected.len(), "{name}");
        for (got, want) in tensor.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-5, "{name}: {tensor:?} != {expected:?}");
        }
    }
}

#[test]
fn scores_sum_the_spam_labels_after_a_softmax_for_logits() {
    let probabilities = model_with(|_| {}).expect("valid");
    let logits = model_with(|m| m.output.kind = OutputKind::Logits).expect("valid");
    let cases: Vec<(&str, &Model, Vec<f32>, f64, &str, bool)> = vec![
        ("probabilities, photo", &probabilities, vec![0.9, 0.1], 0.1, "photo", false),
        ("probabilities, spam at threshold", &probabilities, vec![0.5, 0.5], 0.5, "photo", true),
        ("probabilities, spam", &probabilities, vec![0.2, 0.8], 0.8, "spam", true),
        ("equal logits", &logits, vec![3.0, 3.0], 0.5, "photo", true),
        ("logits favouring photo", &logits, vec![2.0, 0.0], 0.119_202_92, "photo", false),
    ];
    for (name, model, row, score, top, spam) in cases {
        let c = model.score(&row);
        assert!((c.score - score).abs() < 1e-6, "{name}: {c:?}");
        assert_eq!((c.top_label.as_str(), c.spam), (top, spam), "{name}");
    }
}

#[test]
fn invalid_manifests_are_refused() {
    let cases: Vec<(&str, Box<dyn FnOnce(&mut Manifest)>)> = vec![
        ("unknown spam label", Box::new(|m| m.spam_labels = vec!["cats".into()])),
        ("zero std", Box::new(|m| m.input.std = [1.0, 0.0, 1.0])),
        ("zero width", Box::new(|m| m.input.width = 0)),
        ("no labels", Box::new(|m| m.labels.clear())),
        ("threshold above one", Box::new(|m| m.threshold = 1.5)),
    ];
    for (name, edit) in cases {
        assert!(matches!(model_with(edit), Err(ModelError::Invalid(_))), "{name}");
    }
}

#[test]
fn a_model_file_that_does_not_match_its_manifest_hash_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut manifest = tiny_manifest();
    std::fs::copy(fixtures().join("tiny.onnx"), dir.path().join("tiny.onnx")).expect("copy");
    manifest.sha256 = "00".repeat(32);
    let path = dir.path().join("m.json");
    std::fs::write(&path, serde_json::to_vec(&manifest).expect("serialisable")).expect("write");
    assert!(matches!(Model::load(&path), Err(ModelError::Sha256Mismatch { .. })));
    std::fs::write(&path, b"{ not json").expect("write");
    assert!(matches!(Model::load(&path), Err(ModelError::Json { .. })));
    assert!(matches!(Model::load(&dir.path().join("missing.json")), Err(ModelError::Io { .. })));
}

#[test]
fn a_missing_runtime_library_says_how_to_fetch_it() {
    let error = OnnxRuntime::load(Path::new("/nonexistent/libonnxruntime.so.1.31.1")).expect_err("missing");
    assert!(matches!(error, RuntimeError::LibraryMissing { .. }));
    let message = error.to_string();
    assert!(message.contains("scripts/fetch-onnxruntime") && message.contains("CAMLEDGER_ORT_DYLIB"), "{message}");
}

#[test]
fn the_tiny_model_reproduces_the_hand_computed_reference_in_onnx_runtime() {
    let model = Arc::new(Model::load(&fixtures().join("tiny.manifest.json")).expect("fixture loads"));
    let mut classifier = Classifier::new(&runtime(), model).expect("session");
    let cases = [
        ("red", RgbImage::from_pixel(8, 8, Rgb([255, 0, 0])), true),
        ("green", RgbImage::from_pixel(8, 8, Rgb([0, 255, 0])), false),
        ("black", RgbImage::from_pixel(8, 8, Rgb([0, 0, 0])), false),
        ("a scene at another size", scene(9, 64, 48), true),
    ];
    for (name, image, spam) in &cases {
        let got = classifier.classify(image).expect(name);
        let want = tiny_reference(image);
        for (g, w) in got.probabilities.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{name}: {:?} != {want:?}", got.probabilities);
        }
        assert_eq!(got.spam, *spam, "{name}: {got:?}");
        assert_eq!(got.spam, want[1] >= 0.5, "{name}: {got:?}");
    }
    let images: Vec<&RgbImage> = cases.iter().map(|(_, image, _)| image).collect();
    let batch = classifier.classify_batch(&images).expect("batch");
    for ((name, image, _), from_batch) in cases.iter().zip(&batch) {
        let single = classifier.classify(image).expect(name);
        assert!((single.score - from_batch.score).abs() < 1e-6, "{name}");
    }
}

#[test]
fn a_manifest_naming_an_input_the_model_lacks_is_refused_at_session_creation() {
    let bytes: Arc<[u8]> = std::fs::read(fixtures().join("tiny.onnx")).expect("fixture").into();
    let mut manifest = tiny_manifest();
    manifest.input.name = "pixels".into();
    let model = Arc::new(Model::from_parts(manifest, bytes).expect("valid manifest"));
    assert!(matches!(Classifier::new(&runtime(), model), Err(ClassifyError::Output(_))));
}

#[test]
fn loading_the_runtime_twice_returns_the_same_library() {
    let first = runtime();
    let second = runtime();
    assert_eq!(first.path(), second.path());
}
