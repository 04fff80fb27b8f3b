//! Durable append throughput of the ledger alone (no HTTP): N distinct 100 KiB images from
//! many concurrent tasks, for several `max_batch` values, every batch fsynced.
//!
//! `cargo run -p camledger-eventstore --example append_rate [-- [--signed] EVENTS [DIR]]`
//! DIR should be on the disk you care about (default: a temp dir). `--signed` gives the ledger
//! a fresh ed25519 key (every commit carries its SSH signature, as the binary writes them) and
//! first times `sign_commit` alone. After the events, the last ledger's events are judged in
//! verdict batches of 100 (`append_verdicts`: verdict + notes commits, one publication each).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use camledger_eventstore::sign::SigningKey;
use camledger_eventstore::{Ledger, LedgerConfig, NewEvent, Verdict};

#[tokio::main]
async fn main() {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let signed = all.iter().any(|a| a == "--signed");
    let mut args = all.into_iter().filter(|a| a != "--signed");
    let events: u64 = args.next().map_or(2000, |a| a.parse().expect("EVENTS is a number"));
    let base = args.next().map(std::path::PathBuf::from);
    let key_dir = tempfile::tempdir().expect("temp dir");
    let key = signed.then(|| Arc::new(SigningKey::generate(&key_dir.path().join("key"), "bench").expect("key")));
    if let Some(key) = &key {
        time_signing(key);
    }
    let images: Vec<bytes::Bytes> = (0..events).map(|i| common::image(i, 100 * 1024).into()).collect();
    println!("events={events} image=100KiB durable (fsync per batch) signed={signed}");
    let mut last = None;
    for (max_batch, clients) in [(1usize, 64usize), (100, 64), (100, 256), (500, 256)] {
        let dir = match &base {
            Some(base) => tempfile::tempdir_in(base).expect("temp dir"),
            None => tempfile::tempdir().expect("temp dir"),
        };
        let config = LedgerConfig { max_batch, signing_key: key.clone(), ..LedgerConfig::default() };
        let ledger = Ledger::open(dir.path(), config).expect("ledger opens");
        let writer = ledger.start_writer().expect("writer starts");
        let n = if max_batch == 1 { events.min(300) } else { events };
        let started = Instant::now();
        let per_client = n.div_ceil(clients as u64);
        let tasks: Vec<_> = (0..clients as u64)
            .map(|c| {
                let writer = writer.clone();
                let images = images.clone();
                tokio::spawn(async move {
                    for i in (c * per_client)..((c + 1) * per_client).min(n) {
                        let event = NewEvent {
                            camera: format!("cam-{}", i % 20),
                            image: images[i as usize].clone(),
                            media_type: "image/jpeg".into(),
                            extension: "jpg".into(),
                            width: 1920,
                            height: 1080,
                            exif: None,
                            captured_at: None,
                            idempotency_key: Some(format!("k{i}")),
                        };
                        writer.append(event).await.expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("client task");
        }
        let elapsed = started.elapsed();
        writer.shutdown().await;
        let packs = std::fs::read_dir(ledger.git_dir().join("objects/pack")).expect("pack dir").count() / 2;
        println!(
            "max_batch={max_batch:>3} clients={clients:>3}: {n} events in {:.2}s = {:.0} events/s, {} fsyncs, {packs} packs",
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            ledger.fsync_count(),
        );
        last = Some((dir, ledger));
    }
    if let Some((_dir, ledger)) = last {
        judge_all(&ledger);
    }
}

/// Times `sign_commit` on a typical event commit (339 bytes unsigned, 645 signed).
fn time_signing(key: &SigningKey) {
    let commit = format!(
        "tree {}\nparent {}\nauthor cam-7 <cam-7@camera.camledger> 1764770000 +0000\ncommitter camledger <node-1> 1764770000 +0000\n\nEvent 1234 from cam-7\n\nSeq: 1234\nCamera: cam-7\nSha256: {}\nIdempotency-Key: k1234\n",
        "ab".repeat(20),
        "cd".repeat(20),
        "ef".repeat(32)
    );
    let rounds = 2000u32;
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        bytes += key.sign_commit(commit.as_bytes()).len();
    }
    let per = started.elapsed() / rounds;
    println!(
        "sign_commit: {:.1} µs per commit ({rounds} commits of {} bytes, {} bytes signed)",
        per.as_secs_f64() * 1e6,
        commit.len(),
        bytes / rounds as usize
    );
}

/// Judges every event of `ledger` in verdict batches of 100 and prints the rate.
fn judge_all(ledger: &Ledger) {
    let head = ledger.head().expect("head").map_or(0, |h| h.seq);
    let ids: Vec<String> = (1..=head).map(|seq| ledger.event(seq).expect("event").id).collect();
    let fsyncs = ledger.fsync_count();
    let started = Instant::now();
    let mut appends = 0;
    for chunk in ids.chunks(100) {
        let first = ledger.verdict_head().expect("verdict head").map_or(0, |h| h.event_seq) + 1;
        let verdicts: Vec<Verdict> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| Verdict {
                event_seq: first + i as u64,
                event_id: id.clone(),
                spam: false,
                reasons: vec![],
                scores: [("classifier".to_owned(), 0.01)].into_iter().collect(),
                near_duplicate_of: None,
                model_sha256: "ab".repeat(32),
                processor_version: "bench".into(),
                perceptual_hash: Some("phash:00f0000000000000".into()),
            })
            .collect();
        ledger.append_verdicts(&verdicts).expect("append verdicts");
        appends += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "verdicts: {head} in {appends} appends of up to 100 in {:.2}s = {:.0} verdicts/s, {:.1} ms per append, {} fsyncs",
        elapsed.as_secs_f64(),
        head as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / f64::from(appends.max(1)),
        ledger.fsync_count() - fsyncs,
    );
}
