//! How long a worker takes to start on a ledger with N judged events: rebuilding the
//! near-duplicate index from the hashes recorded in the verdicts, against re-hashing every
//! image (what a start costs when the verdicts carry no usable hash: written before the field
//! existed, or with another algorithm; forced here by asking for pHash).
//!
//! `cargo run --release -p camledger-processor --example worker_start [-- N [THREADS]]`
//!
//! N (default 2000) distinct 1280×720 JPEGs (~150 KB), judged once with the default model,
//! then two timed starts. Needs the ONNX Runtime library (`scripts/fetch-onnxruntime`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use camledger_eventstore::{Ledger, LedgerConfig};
use camledger_processor::admission::{admit, Limits};
use camledger_processor::bench::photo;
use camledger_processor::classifier::{Model, OnnxRuntime, DEFAULT_DYLIB};
use camledger_processor::judge::Config;
use camledger_processor::phash::Hasher;
use camledger_processor::worker::{classifiers, Worker, WorkerConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dylib =
        std::env::var_os("CAMLEDGER_ORT_DYLIB").map_or_else(|| root.join("../..").join(DEFAULT_DYLIB), PathBuf::from);
    let runtime = OnnxRuntime::load(&dylib).unwrap_or_else(|e| panic!("{e}"));
    let model = Arc::new(Model::load(&root.join("models/default.manifest.json")).unwrap_or_else(|e| panic!("{e}")));

    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("ledger opens");
    let writer = ledger.start_writer().expect("writer starts");
    for i in 0..n {
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&photo(i, 1280, 720, 3))
            .expect("encodes");
        let admitted = admit(&bytes, &Limits::default()).expect("valid");
        writer.append(admitted.into_event(format!("cam-{}", i % 50), bytes.into(), None, None)).await.expect("durable");
    }
    writer.shutdown().await;

    let config = |hasher| {
        let mut config = WorkerConfig { batch: 64, ..WorkerConfig::default() };
        config.judge = Config { hasher, ..Config::for_model(&model) };
        config
    };
    let sessions = || classifiers(&runtime, &model, threads).expect("sessions");
    let mut first = Worker::start(ledger.clone(), config(Hasher::DHash), sessions()).expect("starts");
    let started = Instant::now();
    while first.step().expect("judges") > 0 {}
    println!("{n} events judged in {:.1} s with {threads} threads", started.elapsed().as_secs_f64());
    drop(first);

    let time_start = |hasher| {
        let started = Instant::now();
        let worker = Worker::start(ledger.clone(), config(hasher), sessions()).expect("starts");
        assert_eq!(worker.next_seq(), n + 1);
        started.elapsed().as_secs_f64()
    };
    let recorded = time_start(Hasher::DHash);
    let rehashed = time_start(Hasher::PHash);
    println!("worker start, index from recorded hashes: {:8.3} s ({:.0} events/s)", recorded, n as f64 / recorded);
    println!("worker start, re-hashing every image:     {:8.3} s ({:.0} events/s)", rehashed, n as f64 / rehashed);
    println!("ratio: {:.1}x faster", rehashed / recorded);
}
