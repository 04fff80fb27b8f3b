//! The ONNX spam classifier: a JSON model manifest, preprocessing, and ONNX Runtime sessions.
//!
//! Any ONNX image classifier plugs in through a manifest (format: `crates/processor/models/
//! README.md`): input name and size, layout (NCHW/NHWC), channel order, `scale`/`mean`/`std`
//! normalisation, output name and kind (probabilities or logits), labels, which labels mean
//! spam, and the threshold. Spam score = the sum of the spam labels' probabilities.
//!
//! Pieces and why they are split this way:
//! - [`Model`]: the parsed manifest plus the model bytes, checked against the manifest's
//!   SHA-256 (recorded in every verdict as `model_sha256`). Preprocessing ([`Model::tensor`])
//!   and scoring ([`Model::score`]) are pure and tested without ONNX Runtime.
//! - [`OnnxRuntime`]: the process-wide ONNX Runtime, loaded from a shared library at run time
//!   (`ort` is built with `load-dynamic`; nothing is downloaded at build time). `ort` allows
//!   one environment per process, so this is a shared handle: loading twice returns the same.
//!   A missing library is an error that says how to fix it; the library path comes from the
//!   caller (the binary reads `CAMLEDGER_ORT_DYLIB`), defaulting to [`DEFAULT_DYLIB`].
//! - [`Classifier`]: one ONNX Runtime session. `Session::run` takes `&mut self`, so each worker
//!   thread owns one classifier; sessions use one intra-op thread, since parallelism comes from
//!   the workers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::RgbImage;
use ort::session::Session;
use sha2::{Digest, Sha256};
use tracing::instrument;

/// Where the binary looks for ONNX Runtime when `CAMLEDGER_ORT_DYLIB` is not set, relative to
/// the working directory (where `scripts/fetch-onnxruntime` puts it).
pub const DEFAULT_DYLIB: &str = "vendor/onnxruntime/libonnxruntime.so.1.31.1";

/// Tensor layout of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Layout {
    #[serde(rename = "NCHW")]
    Nchw,
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// Channel order of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Channels {
    #[serde(rename = "RGB")]
    Rgb,
    #[serde(rename = "BGR")]
    Bgr,
}

/// How images are brought to the input size. Only `stretch` (whole image, aspect ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    Stretch,
}

/// What the model's output row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Rows already sum to 1.
    Probabilities,
    /// A softmax is applied first.
    Logits,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub channels: Channels,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: Resize,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct OutputSpec {
    pub name: String,
    pub kind: OutputKind,
}

/// A model manifest (`*.manifest.json`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The `.onnx` file, relative to the manifest's directory.
    pub file: PathBuf,
    /// Lowercase hex SHA-256 of the `.onnx` file.
    pub sha256: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub labels: Vec<String>,
    pub spam_labels: Vec<String>,
    pub threshold: f64,
}

/// Why a model could not be loaded. All are configuration errors: the worker refuses to start
/// and logs the error; nothing is retried.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid model manifest: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("invalid model manifest: {0}")]
    Invalid(String),
    #[error("model file {path} has SHA-256 {actual}, but the manifest says {expected}")]
    Sha256Mismatch { path: PathBuf, expected: String, actual: String },
}

/// A manifest with its verified model bytes.
#[derive(Debug, Clone)]
pub struct Model {
    manifest: Manifest,
    bytes: Arc<[u8]>,
    spam: Vec<bool>,
}

impl Model {
    /// Reads a manifest and its model file, validates the manifest and checks the SHA-256.
    #[instrument(skip_all, fields(manifest = %manifest_path.display()), err)]
    pub fn load(manifest_path: &Path) -> Result<Self, ModelError> {
        let read = |path: &Path| std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_owned(), source });
        let manifest: Manifest = serde_json::from_slice(&read(manifest_path)?)
            .map_err(|source| ModelError::Json { path: manifest_path.to_owned(), source })?;
        let model_path = manifest_path.parent().unwrap_or(Path::new(".")).join(&manifest.file);
        let bytes = read(&model_path)?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != manifest.sha256.to_ascii_lowercase() {
            return Err(ModelError::Sha256Mismatch { path: model_path, expected: manifest.sha256, actual });
        }
        Self::from_parts(manifest, bytes.into())
    }

    /// Validates a manifest against model bytes already in memory (the SHA-256 is not checked).
    pub fn from_parts(manifest: Manifest, bytes: Arc<[u8]>) -> Result<Self, ModelError> {
        let invalid = |detail: String| Err(ModelError::Invalid(detail));
        let input = &manifest.input;
        if !(1..=4096).contains(&input.width) || !(1..=4096).contains(&input.height) {
            return invalid(format!("input size {}x{} outside 1..=4096", input.width, input.height));
        }
        if input.std.iter().any(|s| *s == 0.0 || !s.is_finite()) || !input.scale.is_finite() {
            return invalid("std must be finite and non-zero, scale finite".into());
        }
        if manifest.labels.is_empty() {
            return invalid("no labels".into());
        }
        if let Some(unknown) = manifest.spam_labels.iter().find(|l| !manifest.labels.contains(l)) {
            return invalid(format!("spam label {unknown:?} is not one of the labels"));
        }
        if !(0.0..=1.0).contains(&manifest.threshold) {
            return invalid(format!("threshold {} outside [0, 1]", manifest.threshold));
        }
        let spam = manifest.labels.iter().map(|l| manifest.spam_labels.contains(l)).collect();
        Ok(Self { manifest, bytes, spam })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model file's SHA-256, as recorded in verdicts.
    pub fn sha256(&self) -> &str {
        &self.manifest.sha256
    }

    /// The input size the images are stretched to (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        (self.manifest.input.width, self.manifest.input.height)
    }

    /// The input tensor data for a batch, with the manifest's resize, layout, channel order and
    /// normalisation. Images of another size are stretched (Triangle filter) first.
    pub fn tensor(&self, images: &[&RgbImage]) -> Vec<f32> {
        let input = &self.manifest.input;
        let (w, h) = (input.width as usize, input.height as usize);
        let plane = w * h;
        let mut out = vec![0.0f32; images.len() * plane * 3];
        for (n, image) in images.iter().enumerate() {
            let resized;
            let image = if image.dimensions() == (input.width, input.height) {
                *image
            } else {
                resized = crate::resize::triangle(image, input.width, input.height);
                &resized
            };
            let batch = &mut out[n * plane * 3..(n + 1) * plane * 3];
            for (i, pixel) in image.pixels().enumerate() {
                for c in 0..3 {
                    let source = match input.channels {
                        Channels::Rgb => c,
                        Channels::Bgr => 2 - c,
                    };
                    let value = (f32::from(pixel[source]) * input.scale - input.mean[c]) / input.std[c];
                    let at = match input.layout {
                        Layout::Nchw => c * plane + i,
                        Layout::Nhwc => i * 3 + c,
                    };
                    batch[at] = value;
                }
            }
        }
        out
    }

    /// Turns one output row into probabilities, the spam score and the top label.
    pub fn score(&self, row: &[f32]) -> Classification {
        let probabilities: Vec<f32> = match self.manifest.output.kind {
            OutputKind::Probabilities => row.to_vec(),
            OutputKind::Logits => softmax(row),
        };
        let score: f64 =
            probabilities.iter().zip(&self.spam).filter(|(_, spam)| **spam).map(|(p, _)| f64::from(*p)).sum();
        // The first label wins ties, so the reason detail is deterministic.
        let top =
            (1..probabilities.len()).fold(0, |best, i| if probabilities[i] > probabilities[best] { i } else { best });
        Classification {
            score: score.clamp(0.0, 1.0),
            top_label: self.manifest.labels[top].clone(),
            spam: score >= self.manifest.threshold,
            probabilities,
        }
    }
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// The classifier's opinion on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    /// One per label, in label order.
    pub probabilities: Vec<f32>,
    /// Sum of the spam labels' probabilities, in `[0, 1]`.
    pub score: f64,
    /// The most likely label (reason detail, e.g. `classifier: meme`).
    pub top_label: String,
    /// `score >= threshold`.
    pub spam: bool,
}

/// ONNX Runtime could not be set up. Configuration errors: the worker refuses to start (the
/// API keeps ingesting; `--workers 0` needs no library); no retry.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found at {path}: run scripts/fetch-onnxruntime (it prints the \
         library's path as its last line) and set CAMLEDGER_ORT_DYLIB to that path, or run with \
         --workers 0 to turn judging off"
    )]
    LibraryMissing { path: PathBuf },
    #[error("cannot load ONNX Runtime from {path} (expected libonnxruntime 1.31.x): {source}")]
    Load { path: PathBuf, source: ort::LoadDynamicError },
    #[error("ONNX Runtime was already loaded from {loaded}; cannot switch to {requested} in one process")]
    OtherLibraryLoaded { loaded: PathBuf, requested: PathBuf },
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(#[source] ort::Error),
}

/// The process-wide ONNX Runtime (see the module docs).
#[derive(Clone)]
pub struct OnnxRuntime {
    environment: ort::environment::Environment,
    path: PathBuf,
}

impl std::fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxRuntime").field("path", &self.path).finish()
    }
}

static RUNTIME: Mutex<Option<OnnxRuntime>> = Mutex::new(None);

impl OnnxRuntime {
    /// Loads ONNX Runtime from `dylib` (relative paths are taken from the working directory),
    /// or returns the runtime already loaded from the same file.
    #[instrument(skip_all, fields(dylib = %dylib.display()), err)]
    pub fn load(dylib: &Path) -> Result<Self, RuntimeError> {
        let path = std::path::absolute(dylib).unwrap_or_else(|_| dylib.to_owned());
        if !path.is_file() {
            return Err(RuntimeError::LibraryMissing { path });
        }
        let path = path.canonicalize().unwrap_or(path);
        // A poisoned lock only means another thread panicked while loading; the Option is
        // still either None or a complete runtime.
        let mut current = RUNTIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(runtime) = current.as_ref() {
            if runtime.path != path {
                return Err(RuntimeError::OtherLibraryLoaded { loaded: runtime.path.clone(), requested: path });
            }
            return Ok(runtime.clone());
        }
        let builder = ort::init_from(&path).map_err(|source| RuntimeError::Load { path: path.clone(), source })?;
        let environment =
            builder.with_name("camledger").with_telemetry(false).build().map_err(RuntimeError::Environment)?;
        let runtime = OnnxRuntime { environment, path };
        *current = Some(runtime.clone());
        Ok(runtime)
    }

    /// The library this runtime was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A session could not be created or run. Creating: configuration error (the model does not
/// fit ONNX Runtime), the worker refuses to start. Running: logged with the event's seq and
/// retried once by the worker, then the event is judged without a classifier score.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    #[error("the model's output does not match its manifest: {0}")]
    Output(String),
}

/// One ONNX Runtime session for one worker thread.
pub struct Classifier {
    session: Session,
    model: Arc<Model>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier").field("model", &self.model.manifest.name).finish()
    }
}

impl Classifier {
    /// Creates a session for `model` (single intra-op thread: parallelism comes from workers).
    #[instrument(skip_all, fields(model = %model.manifest.name), err)]
    pub fn new(runtime: &OnnxRuntime, model: Arc<Model>) -> Result<Self, ClassifyError> {
        let session = Session::builder(&runtime.environment)?
            .with_intra_threads(1)
            .map_err(ort::Error::from)?
            .with_inter_threads(1)
            .map_err(ort::Error::from)?
            .commit_from_memory(&model.bytes)?;
        if !session.inputs().iter().any(|i| i.name() == model.manifest.input.name) {
            return Err(ClassifyError::Output(format!("no input named {:?}", model.manifest.input.name)));
        }
        if !session.outputs().iter().any(|o| o.name() == model.manifest.output.name) {
            return Err(ClassifyError::Output(format!("no output named {:?}", model.manifest.output.name)));
        }
        Ok(Self { session, model })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Classifies one image (any size; it is stretched to the input size).
    pub fn classify(&mut self, image: &RgbImage) -> Result<Classification, ClassifyError> {
        let mut all = self.classify_batch(&[image])?;
        all.pop().ok_or_else(|| ClassifyError::Output("empty output".into()))
    }

    /// Classifies a batch in one run (the model must accept a dynamic batch dimension).
    #[instrument(level = "debug", skip_all, fields(batch = images.len()), err)]
    pub fn classify_batch(&mut self, images: &[&RgbImage]) -> Result<Vec<Classification>, ClassifyError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let model = Arc::clone(&self.model);
        let spec = &model.manifest.input;
        let (n, h, w) = (images.len() as i64, i64::from(spec.height), i64::from(spec.width));
        let shape = match spec.layout {
            Layout::Nchw => vec![n, 3, h, w],
            Layout::Nhwc => vec![n, h, w, 3],
        };
        let tensor = ort::value::Tensor::from_array((shape, model.tensor(images)))?;
        let outputs = self.session.run(ort::inputs![spec.name.as_str() => tensor])?;
        let output = outputs
            .get(model.manifest.output.name.as_str())
            .ok_or_else(|| ClassifyError::Output(format!("no output {:?}", model.manifest.output.name)))?;
        let (_, values) = output.try_extract_tensor::<f32>()?;
        let labels = model.manifest.labels.len();
        if values.len() != images.len() * labels {
            return Err(ClassifyError::Output(format!(
                "{} values for {} images and {labels} labels",
                values.len(),
                images.len()
            )));
        }
        Ok(values.chunks_exact(labels).map(|row| model.score(row)).collect())
    }
}

#[cfg(test)]
mod tests;
