//! How fast does `Ledger::verify_with` check a large ledger? Writes N small events (1 KiB
//! images) and a verdict (with its note) for each, then times a full verification: events,
//! verdicts and notes, every object re-hashed, and with `--signed` every commit's signature.
//!
//! `cargo run -p camledger-eventstore --example verify_rate [-- [--signed] N]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use camledger_eventstore::sign::{AllowedSigners, SigningKey};
use camledger_eventstore::verify::VerifyOptions;
use camledger_eventstore::{Ledger, LedgerConfig, Verdict};

#[tokio::main]
async fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let signed = all.iter().any(|a| a == "--signed");
    let n: u64 = all.iter().find(|a| *a != "--signed").map_or(100_000, |a| a.parse().expect("N is a number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let key_dir = tempfile::tempdir().expect("temp dir");
    let key = signed.then(|| Arc::new(SigningKey::generate(&key_dir.path().join("key"), "bench").expect("key")));
    let config = LedgerConfig { max_batch: 500, signing_key: key.clone(), ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config).expect("opens");
    let writer = ledger.start_writer().expect("writer");
    let started = Instant::now();
    let clients = 512u64;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut i = c;
                while i < n {
                    let event = common::new_event("cam-1", common::image(i, 1024));
                    writer.append(event).await.expect("append");
                    i += clients;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    writer.shutdown().await;
    println!("wrote {n} events in {:.1} s (signed={signed})", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let mut seq = 1;
    while seq <= n {
        let batch: Vec<Verdict> = (seq..=n.min(seq + 999))
            .map(|s| Verdict {
                event_seq: s,
                event_id: ledger.event(s).expect("event").id,
                spam: s.is_multiple_of(7),
                reasons: if s.is_multiple_of(7) { vec!["classifier".into()] } else { Vec::new() },
                scores: [("classifier".to_owned(), (s % 1000) as f64 / 1000.0)].into_iter().collect(),
                near_duplicate_of: None,
                model_sha256: "ab".repeat(32),
                processor_version: "bench".into(),
                perceptual_hash: Some(format!("phash:{s:016x}")),
            })
            .collect();
        seq += batch.len() as u64;
        ledger.append_verdicts(&batch).expect("verdicts");
    }
    println!("wrote {n} verdicts in {:.1} s", started.elapsed().as_secs_f64());

    let allowed_signers = key.map(|key| AllowedSigners::only(&key));
    let options = VerifyOptions { allowed_signers, cameras: None };
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens");
    let started = Instant::now();
    let report = ledger.verify_with(&options, |_, _| {}).expect("the ledger verifies");
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "verify: {} events + {} verdicts + notes in {seconds:.1} s = {:.0} events/s ({} objects re-hashed, {} signatures)",
        report.events,
        report.verdicts,
        report.events as f64 / seconds,
        report.objects,
        report.signatures
    );
}
