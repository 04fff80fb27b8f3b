//! Durable append throughput of the ledger alone (no HTTP): N distinct 100 KiB images from
//! many concurrent tasks, for several `max_batch` values, every batch fsynced.
//!
//! `cargo run -p camledger-eventstore --example append_rate [-- EVENTS [DIR]]`
//! DIR should be on the disk you care about (default: a temp dir).

use std::time::Instant;

use camledger_eventstore::{Ledger, LedgerConfig, NewEvent};

fn image(n: u64, len: usize) -> Vec<u8> {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().map_or(2000, |a| a.parse().expect("EVENTS is a number"));
    let base = args.next().map(std::path::PathBuf::from);
    let images: Vec<bytes::Bytes> = (0..events).map(|i| image(i, 100 * 1024).into()).collect();
    println!("events={events} image=100KiB durable (fsync per batch)");
    for (max_batch, clients) in [(1usize, 64usize), (100, 64), (100, 256), (500, 256)] {
        let dir = match &base {
            Some(base) => tempfile::tempdir_in(base).expect("temp dir"),
            None => tempfile::tempdir().expect("temp dir"),
        };
        let config = LedgerConfig { max_batch, ..LedgerConfig::default() };
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
    }
}
