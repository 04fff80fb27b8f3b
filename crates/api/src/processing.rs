//! Judging wired into the binary: in-process workers of `serve`, the standalone
//! `camledger worker`, and `camledger replay`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use camledger_eventstore::Ledger;
use camledger_processor::classifier::{Classifier, Manifest, Model, OnnxRuntime, DEFAULT_DYLIB};
use camledger_processor::judge;
use camledger_processor::neardup::Scope;
use camledger_processor::phash::Hasher;
use camledger_processor::worker::{self, Worker, WorkerConfig};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{DataDirArg, OutputFormat};
pub use crate::config::{JudgeArgs, NearDuplicateScope, PerceptualHash};

/// The model shipped with camledger, embedded so that a copied or installed binary judges
/// without the checkout it was built in (`--model` replaces it).
const DEFAULT_MANIFEST: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../processor/models/default.manifest.json"));
const DEFAULT_ONNX: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../processor/models/default.onnx"));

/// The embedded default model, its SHA-256 checked against its manifest as for a file.
fn embedded_model() -> anyhow::Result<Model> {
    let manifest: Manifest = serde_json::from_slice(DEFAULT_MANIFEST).context("parsing the embedded model manifest")?;
    let actual = hex::encode(Sha256::digest(DEFAULT_ONNX));
    if actual != manifest.sha256.to_ascii_lowercase() {
        bail!("the embedded model has SHA-256 {actual}, but its manifest says {}", manifest.sha256);
    }
    Ok(Model::from_parts(manifest, DEFAULT_ONNX.into())?)
}

/// Where ONNX Runtime is looked for when neither `--ort-dylib` nor `CAMLEDGER_ORT_DYLIB` is
/// given: next to the executable, in `vendor/onnxruntime/` of the executable's ancestors
/// (a source checkout's `target/…/camledger`), then the system library path.
fn ort_dylib_candidates(exe: Option<&Path>, ld_library_path: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let versioned = Path::new(DEFAULT_DYLIB).file_name().expect("DEFAULT_DYLIB names a file");
    let names = [std::ffi::OsStr::new("libonnxruntime.so"), versioned];
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(exe_dir) = exe.and_then(Path::parent) {
        dirs.push(exe_dir.to_owned());
        dirs.extend(exe_dir.ancestors().map(|a| a.join("vendor").join("onnxruntime")));
    }
    dirs.extend(ld_library_path.into_iter().flat_map(std::env::split_paths).filter(|d| !d.as_os_str().is_empty()));
    dirs.extend(
        ["/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/lib"]
            .map(PathBuf::from),
    );
    dirs.iter().flat_map(|d| names.iter().map(move |n| d.join(n))).collect()
}

/// The ONNX Runtime library to load: the explicit one, else the first candidate that exists;
/// the error lists every place looked at.
fn find_ort_dylib(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().ok();
    let candidates = ort_dylib_candidates(exe.as_deref(), std::env::var_os("LD_LIBRARY_PATH").as_deref());
    if let Some(found) = candidates.iter().find(|c| c.is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|c| format!("  {}", c.display())).collect();
    bail!(
        "ONNX Runtime not found (give --ort-dylib or CAMLEDGER_ORT_DYLIB, run scripts/fetch-onnxruntime, \
         or start with --workers 0); looked in:\n{}",
        looked.join("\n")
    )
}

/// Everything a judge needs, loaded once.
pub(crate) struct Judging {
    pub(crate) config: judge::Config,
    pub(crate) classifiers: Vec<Classifier>,
}

impl JudgeArgs {
    /// Loads the runtime and the model and makes `threads` classifiers (one ONNX session each).
    pub(crate) fn load(&self, threads: usize) -> anyhow::Result<Judging> {
        let runtime = self.runtime()?;
        let model = Arc::new(self.model()?);
        let classifiers = worker::classifiers(&runtime, &model, threads).context("creating ONNX sessions")?;
        let config = self.config(&model);
        Ok(Judging { config, classifiers })
    }

    /// The judging configuration for `model` with these options (the classifier threshold:
    /// `--spam-threshold`, else the manifest's, in millionths as verdicts record it).
    pub(crate) fn config(&self, model: &Model) -> judge::Config {
        let mut config = judge::Config::for_model(model);
        config.thresholds.classifier =
            camledger_processor::verdict::recordable(self.spam_threshold.unwrap_or(config.thresholds.classifier));
        config.scope = match self.near_duplicate_scope {
            NearDuplicateScope::All => Scope::All,
            NearDuplicateScope::Camera => Scope::SameCamera,
        };
        config.window_secs = self.near_duplicate_window_secs;
        config.thresholds.near_duplicate_distance = self.near_duplicate_distance;
        config.hasher = match self.perceptual_hash {
            PerceptualHash::Phash => Hasher::PHash,
            PerceptualHash::Dhash => Hasher::DHash,
        };
        config
    }

    /// The model `--model` names, else the embedded default.
    pub(crate) fn model(&self) -> anyhow::Result<Model> {
        match &self.model {
            Some(path) => Model::load(path).with_context(|| format!("loading the model manifest {}", path.display())),
            None => embedded_model(),
        }
    }

    /// Loads ONNX Runtime (`--ort-dylib`, else the first found).
    pub(crate) fn runtime(&self) -> anyhow::Result<OnnxRuntime> {
        let dylib = find_ort_dylib(self.ort_dylib.as_deref())?;
        OnnxRuntime::load(&dylib).context("loading ONNX Runtime")
    }
}

/// Starts a worker (blocking: it rebuilds the near-duplicate index) and runs it until `stop`;
/// `observer` (the server's metrics) hears of every verdict.
pub(crate) async fn run_worker(
    ledger: Ledger,
    judging: Judging,
    observer: Option<Arc<dyn worker::Observer>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let config = WorkerConfig { judge: judging.config, observer, ..WorkerConfig::default() };
    let classifiers = judging.classifiers;
    let worker = tokio::task::spawn_blocking(move || Worker::start(ledger, config, classifiers))
        .await
        .context("the worker start panicked")?
        .context("starting the verdict worker")?;
    tracing::info!(next_seq = worker.next_seq(), "verdict worker running");
    worker.run(stop).await.context("the verdict worker stopped")
}

/// `camledger worker`: judge events standalone until SIGINT/SIGTERM.
pub async fn worker_command(
    data: DataDirArg,
    key: crate::keys::SigningKeyArg,
    judge: JudgeArgs,
    threads: usize,
) -> anyhow::Result<()> {
    let ledger = crate::datadir::open_signing_ledger(&data, &key)?;
    let judging = judge.load(threads.max(1))?;
    let stop = CancellationToken::new();
    let signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::shutdown::shutdown_signal().await;
            stop.cancel();
        })
    };
    let result = run_worker(ledger, judging, None, stop).await;
    signal.abort();
    result
}

/// `camledger replay`: re-judge a range without writing; report what changed.
pub async fn replay_command(
    data: DataDirArg,
    judge: JudgeArgs,
    from: u64,
    to: Option<u64>,
    format: OutputFormat,
    strict: bool,
) -> anyhow::Result<()> {
    let ledger = crate::datadir::open_ledger(&data)?;
    let mut judging = judge.load(1)?;
    let (rows, summary) = tokio::task::spawn_blocking(move || {
        let progress = crate::progress::Bar::new("replaying events");
        let mut classifier = judging.classifiers.remove(0);
        let result =
            camledger_processor::replay::replay(&ledger, from, to, &judging.config, &mut classifier, |done, total| {
                progress.update(done, total)
            });
        progress.finish();
        result
    })
    .await
    .context("the replay panicked")?
    .context("replaying events")?;

    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "events": rows, "summary": summary }))?;
            writeln!(out)?;
        }
        OutputFormat::Text => {
            for row in &rows {
                let recorded = row.recorded.as_ref().map_or("unjudged".to_owned(), |o| describe(o.spam, &o.reasons));
                let recomputed = describe(row.recomputed.spam, &row.recomputed.reasons);
                let mark = if row.agrees { "same" } else { "DIFFERS" };
                writeln!(out, "{:>8} {mark:<7} recorded {recorded:<40} recomputed {recomputed}", row.seq)?;
            }
            writeln!(
                out,
                "{} events: {} agree, {} flipped to spam, {} flipped to not spam, {} other differences, {} unjudged",
                summary.events,
                summary.agreements,
                summary.flips_to_spam,
                summary.flips_to_ok,
                summary.other_differences,
                summary.unjudged
            )?;
        }
    }
    let differences = summary.flips_to_spam + summary.flips_to_ok + summary.other_differences;
    if strict && differences > 0 {
        bail!("{differences} event(s) differ from their recorded verdicts (--strict)");
    }
    Ok(())
}

fn describe(spam: bool, reasons: &[String]) -> String {
    if spam {
        format!("spam ({})", reasons.join(", "))
    } else {
        "not spam".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onnx_runtime_is_looked_for_next_to_the_binary_then_in_vendor_then_on_the_system() {
        let candidates = ort_dylib_candidates(
            Some(Path::new("/src/camledger/target/release/camledger")),
            Some(std::ffi::OsStr::new("/opt/ort/lib:")),
        );
        let position = |p: &str| candidates.iter().position(|c| c == Path::new(p)).unwrap_or_else(|| panic!("{p}"));
        let next_to = position("/src/camledger/target/release/libonnxruntime.so");
        let vendor = position("/src/camledger/vendor/onnxruntime/libonnxruntime.so.1.31.1");
        let ld_path = position("/opt/ort/lib/libonnxruntime.so");
        let system = position("/usr/lib/libonnxruntime.so");
        assert!(next_to < vendor && vendor < ld_path && ld_path < system, "{candidates:#?}");
    }

    #[test]
    fn the_embedded_model_matches_its_manifest() {
        let model = embedded_model().unwrap();
        assert_eq!(model.sha256(), hex::encode(Sha256::digest(DEFAULT_ONNX)));
    }
}
