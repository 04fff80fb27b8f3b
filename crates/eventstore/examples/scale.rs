//! Does opening and reading stay flat as the ledger grows? Writes N small events (1 KiB
//! images), then times `Ledger::open`, `head`, `event`/`image` at random seqs, `start_writer`
//! with caught-up indexes, and with `writer.redb` deleted (rebuild from git).
//!
//! `cargo run -p camledger-eventstore --example scale [-- N]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use camledger_eventstore::{Ledger, LedgerConfig};

fn open_and_read(dir: &std::path::Path, n: u64, label: &str) {
    let started = Instant::now();
    let ledger = Ledger::open(dir, LedgerConfig::default()).expect("opens");
    let open = started.elapsed();
    let started = Instant::now();
    let head = ledger.head().expect("head").expect("not empty");
    let head_time = started.elapsed();
    let samples = 2000u64;
    let started = Instant::now();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seq = x % n + 1;
        let (record, _) = ledger.image(seq).expect("image");
        assert_eq!(record.seq, seq);
    }
    let per_read = started.elapsed() / samples as u32;
    println!("{label}: events={} open={:?} head={:?} image(random seq)={:?}/read", head.seq, open, head_time, per_read);
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args().nth(1).map_or(100_000, |a| a.parse().expect("N is a number"));
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig { max_batch: 500, ..LedgerConfig::default() }).expect("opens");
    let writer = ledger.start_writer().expect("writer");
    let started = Instant::now();
    let mut written = 0u64;
    let mut checkpoints = vec![100u64, 1_000, 10_000, 100_000, 1_000_000];
    checkpoints.retain(|&c| c <= n);
    if checkpoints.last() != Some(&n) {
        checkpoints.push(n);
    }
    for checkpoint in checkpoints {
        let clients = 512u64;
        let todo = checkpoint - written;
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut i = c;
                    while i < todo {
                        let seq = written + i;
                        let event = common::new_event("cam-1", common::image(seq, 1024));
                        writer.append(event).await.expect("append");
                        i += clients;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        written = checkpoint;
        println!("wrote {written} events ({:.0} events/s so far)", written as f64 / started.elapsed().as_secs_f64());
        open_and_read(dir.path(), written, "  reads");
    }
    writer.shutdown().await;

    let started = Instant::now();
    let writer = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens").start_writer().expect("writer");
    println!("start_writer with caught-up indexes: {:?}", started.elapsed());
    writer.shutdown().await;
    std::fs::remove_file(dir.path().join("index/writer.redb")).expect("delete redb");
    let started = Instant::now();
    let writer = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens").start_writer().expect("writer");
    println!("start_writer rebuilding writer.redb from git ({written} events): {:?}", started.elapsed());
    writer.shutdown().await;
    let packs = std::fs::read_dir(dir.path().join("ledger.git/objects/pack")).expect("dir").count() / 2;
    println!("packs: {packs}");
}
