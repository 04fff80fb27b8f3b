//! Models reproduce their reference outputs in Rust's ONNX Runtime: for each model with a
//! reference set (PNG inputs at the model's input size + the probabilities Python's ONNX
//! Runtime 1.31.1 computed), the Rust pipeline (manifest normalisation, layout, session, score)
//! must give the same numbers within the set's tolerance.
//!
//! Always checked: the tiny test model (`tests/fixtures/tiny_reference`, made by
//! `make_tiny_reference.py`). Also checked once it ships: the default model
//! (`models/default.manifest.json` with `models/fixtures/expected.json`), and every earlier
//! default model kept under `models/v<version>/` so that verdicts recorded with it still replay
//! (`camledger replay --model models/v<version>/default.manifest.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use camledger_processor::classifier::{Classifier, Model, OnnxRuntime, DEFAULT_DYLIB};

#[derive(serde::Deserialize)]
struct Expected {
    model_sha256: String,
    tolerance: f64,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    image: String,
    probabilities: Vec<f64>,
    score: f64,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn runtime() -> OnnxRuntime {
    let path = std::env::var_os("CAMLEDGER_ORT_DYLIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir().join("../..").join(DEFAULT_DYLIB));
    OnnxRuntime::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn check(manifest: &Path, reference_dir: &Path) -> usize {
    let expected: Expected =
        serde_json::from_slice(&std::fs::read(reference_dir.join("expected.json")).expect("reference exists"))
            .expect("reference is valid JSON");
    let model = Arc::new(Model::load(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display())));
    assert_eq!(model.sha256(), expected.model_sha256, "the reference was made from this model file");
    let mut classifier = Classifier::new(&runtime(), Arc::clone(&model)).expect("session");
    for case in &expected.cases {
        let image = image::open(reference_dir.join(&case.image)).expect("reference image").into_rgb8();
        assert_eq!(
            image.dimensions(),
            model.input_size(),
            "{}: reference images are exactly the input size",
            case.image
        );
        let got = classifier.classify(&image).expect("model runs");
        assert_eq!(got.probabilities.len(), case.probabilities.len(), "{}", case.image);
        for (g, e) in got.probabilities.iter().zip(&case.probabilities) {
            assert!(
                (f64::from(*g) - e).abs() <= expected.tolerance,
                "{}: {:?} vs {:?}",
                case.image,
                got.probabilities,
                case.probabilities
            );
        }
        assert!(
            (got.score - case.score).abs() <= expected.tolerance,
            "{}: score {} vs {}",
            case.image,
            got.score,
            case.score
        );
    }
    expected.cases.len()
}

#[test]
fn the_tiny_test_model_reproduces_python_onnx_runtime_outputs() {
    let fixtures = crate_dir().join("tests/fixtures");
    assert_eq!(check(&fixtures.join("tiny.manifest.json"), &fixtures.join("tiny_reference")), 4);
}

#[test]
fn the_default_model_reproduces_its_reference_outputs_once_it_ships() {
    let models = crate_dir().join("models");
    let manifest = models.join("default.manifest.json");
    if !manifest.exists() {
        eprintln!("no default model yet: {} is missing", manifest.display());
        return;
    }
    assert!(check(&manifest, &models.join("fixtures")) > 0, "the default model has reference cases");
}

/// Earlier default models stay in the repository, byte for byte, with their references: a
/// verdict records the model's SHA-256, and replaying it needs that very model.
#[test]
fn every_earlier_default_model_is_kept_and_reproduces_its_reference_outputs() {
    let models = crate_dir().join("models");
    let current = Model::load(&models.join("default.manifest.json")).expect("the default model loads");
    let mut earlier: Vec<PathBuf> = std::fs::read_dir(&models)
        .expect("models/ is readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('v')))
        .collect();
    earlier.sort();
    assert!(!earlier.is_empty(), "the previous default model is kept under models/v<version>/");
    for dir in earlier {
        let manifest = dir.join("default.manifest.json");
        let model = Model::load(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        assert_ne!(model.sha256(), current.sha256(), "{}: a copy of the current model", dir.display());
        assert_eq!(
            dir.file_name().unwrap().to_string_lossy(),
            format!("v{}", model.manifest().version),
            "the folder is named after the model's version"
        );
        assert!(check(&manifest, &dir.join("fixtures")) > 0, "{}: has reference cases", dir.display());
    }
}
