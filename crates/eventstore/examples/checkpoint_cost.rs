//! What checkpoints cost: writes N small events with a checkpoint every K events, then times
//! taking and signing one, `satisfies` for the newest and the oldest, and `verify_anchored`
//! over all of them (one walk down the chain).
//!
//! `cargo run -p camledger-eventstore --example checkpoint_cost [-- N K]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use camledger_eventstore::checkpoint;
use camledger_eventstore::sign::{AllowedSigners, SigningKey};
use camledger_eventstore::{Ledger, LedgerConfig};

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args().nth(1).map_or(20_000, |a| a.parse().expect("N is a number"));
    let every: u64 = std::env::args().nth(2).map_or(100, |a| a.parse().expect("K is a number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SigningKey::generate(&dir.path().join("key"), "k").expect("a key");
    let signers = AllowedSigners::only(&key);
    let ledger = Ledger::open(&dir.path().join("data"), LedgerConfig { max_batch: 500, ..LedgerConfig::default() })
        .expect("opens");
    let writer = ledger.start_writer().expect("writer");
    let mut notes = Vec::new();
    let mut written = 0u64;
    while written < n {
        let todo = every.min(n - written);
        let tasks: Vec<_> = (0..todo)
            .map(|i| {
                let writer = writer.clone();
                let seq = written + i;
                tokio::spawn(async move {
                    let mut image = seq.to_le_bytes().repeat(128);
                    image[0] ^= 0x5a;
                    let event = common::new_event("cam-1", image);
                    writer.append(event).await.expect("append");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        written += todo;
        let started = Instant::now();
        let note = ledger.current_checkpoint(written as i64).expect("heads").sign(&key);
        if written == n {
            println!("take and sign one checkpoint: {:?}", started.elapsed());
        }
        notes.push(note);
    }
    writer.shutdown().await;
    let newest = checkpoint::Checkpoint::parse_note(notes.last().unwrap()).unwrap().0;
    let oldest = checkpoint::Checkpoint::parse_note(&notes[0]).unwrap().0;
    let started = Instant::now();
    ledger.satisfies(&newest).expect("satisfied");
    println!("satisfies(newest): {:?}", started.elapsed());
    let started = Instant::now();
    ledger.satisfies(&oldest).expect("satisfied");
    println!("satisfies(oldest, seq {}): {:?}", oldest.events_seq, started.elapsed());
    let started = Instant::now();
    let report = checkpoint::verify_anchored(&ledger, &notes, &signers).expect("verifies");
    let took = started.elapsed();
    println!(
        "verify_anchored: {} checkpoints over {n} events in {took:?} ({:.0} events/s)",
        report.checkpoints,
        n as f64 / took.as_secs_f64()
    );
}
