//! Judging wired into the binary: in-process workers of `serve`, the standalone
//! `camledger worker`, and `camledger replay`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use camledger_eventstore::Ledger;
use camledger_processor::classifier::{Classifier, Model, OnnxRuntime, DEFAULT_DYLIB};
use camledger_processor::judge;
use camledger_processor::neardup::Scope;
use camledger_processor::phash::Hasher;
use camledger_processor::verdict::Thresholds;
use camledger_processor::worker::{self, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::OutputFormat;
use crate::config::DataDirArg;

/// The model shipped with camledger (source builds find it here; deployments set --model).
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../processor/models/default.manifest.json");

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum NearDuplicateScope {
    /// An earlier image from any camera counts.
    #[default]
    All,
    /// Only earlier images from the same camera count.
    Camera,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum PerceptualHash {
    /// 64-bit pHash (low frequencies of a 32×32 luma DCT): the measured default.
    #[default]
    Phash,
    /// 64-bit dHash (horizontal gradients on a 9×8 grid).
    Dhash,
}

/// How images are judged.
#[derive(Clone, Debug, clap::Args)]
pub struct JudgeArgs {
    /// ONNX Runtime shared library (from `scripts/fetch-onnxruntime`).
    #[arg(long, env = "CAMLEDGER_ORT_DYLIB", default_value = DEFAULT_DYLIB)]
    pub ort_dylib: PathBuf,
    /// Model manifest (JSON) of the ONNX classifier.
    #[arg(long, env = "CAMLEDGER_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Which earlier images count for near-duplicates.
    #[arg(long, env = "CAMLEDGER_NEAR_DUPLICATE_SCOPE", value_enum, default_value_t = NearDuplicateScope::All)]
    pub near_duplicate_scope: NearDuplicateScope,
    /// Only images received at most this many seconds earlier count as near-duplicate originals.
    #[arg(long, env = "CAMLEDGER_NEAR_DUPLICATE_WINDOW_SECS")]
    pub near_duplicate_window_secs: Option<i64>,
    /// Largest Hamming distance (of 64 bits) between perceptual hashes that makes a near-duplicate.
    #[arg(
        long,
        env = "CAMLEDGER_NEAR_DUPLICATE_DISTANCE",
        default_value_t = Thresholds::default().near_duplicate_distance,
        value_parser = clap::value_parser!(u32).range(0..=24)
    )]
    pub near_duplicate_distance: u32,
    /// Perceptual hash used for near-duplicates (recorded in each verdict).
    #[arg(long, env = "CAMLEDGER_PERCEPTUAL_HASH", value_enum, default_value_t = PerceptualHash::Phash)]
    pub perceptual_hash: PerceptualHash,
}

/// Everything a judge needs, loaded once.
pub(crate) struct Judging {
    pub(crate) config: judge::Config,
    pub(crate) classifiers: Vec<Classifier>,
}

impl JudgeArgs {
    /// Loads the runtime and the model and makes `threads` classifiers (one ONNX session each).
    pub(crate) fn load(&self, threads: usize) -> anyhow::Result<Judging> {
        let runtime = OnnxRuntime::load(&self.ort_dylib).context("loading ONNX Runtime")?;
        let model = Arc::new(
            Model::load(&self.model).with_context(|| format!("loading the model manifest {}", self.model.display()))?,
        );
        let classifiers = worker::classifiers(&runtime, &model, threads).context("creating ONNX sessions")?;
        let mut config = judge::Config::for_model(&model);
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
        Ok(Judging { config, classifiers })
    }
}

/// Starts a worker (blocking: it rebuilds the near-duplicate index) and runs it until `stop`.
pub(crate) async fn run_worker(ledger: Ledger, judging: Judging, stop: CancellationToken) -> anyhow::Result<()> {
    let config = WorkerConfig { judge: judging.config, ..WorkerConfig::default() };
    let classifiers = judging.classifiers;
    let worker = tokio::task::spawn_blocking(move || Worker::start(ledger, config, classifiers))
        .await
        .context("the worker start panicked")?
        .context("starting the verdict worker")?;
    tracing::info!(next_seq = worker.next_seq(), "verdict worker running");
    worker.run(stop).await.context("the verdict worker stopped")
}

/// `camledger worker`: judge events standalone until SIGINT/SIGTERM.
pub async fn worker_command(data: DataDirArg, judge: JudgeArgs, threads: usize) -> anyhow::Result<()> {
    let ledger = crate::cli::open_ledger(&data)?;
    let judging = judge.load(threads.max(1))?;
    let stop = CancellationToken::new();
    let signal = {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::cli::shutdown_signal().await;
            stop.cancel();
        })
    };
    let result = run_worker(ledger, judging, stop).await;
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
    let ledger = crate::cli::open_ledger(&data)?;
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
