//! How fast does the near-duplicate index answer, against scanning every hash?
//!
//! `cargo run --release -p camledger-processor --example neardup_query -- [ENTRIES] [clustered]`
//!
//! Fills the index with ENTRIES (default 1,000,000) random 64-bit hashes, then asks 10,000
//! queries at the default distance (half near an existing hash, half random) and prints the
//! time per query for the index and for a full scan, and their ratio. With `clustered`, the
//! hashes are those of fixed cameras instead: 16 scenes, each frame its scene's hash with up
//! to 3 bits flipped, so most entries share a hash with many others (the case that made the
//! index a full scan before buckets held distinct hashes).

use std::time::Instant;

use camledger_processor::neardup::{NearDupIndex, Query, Scope};
use camledger_processor::phash::distance;
use camledger_processor::verdict::Thresholds;

/// SplitMix64: reproducible hashes without a dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn main() {
    let entries: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let clustered = std::env::args().nth(2).is_some_and(|a| a == "clustered");
    let d = Thresholds::default().near_duplicate_distance;
    let mut state = 7u64;
    let mut scene_state = 11u64;
    let scenes: Vec<u64> = (0..16).map(|_| splitmix(&mut scene_state)).collect();
    let mut rng = || {
        let r = splitmix(&mut state);
        if !clustered {
            return r;
        }
        let mut h = scenes[(r % 16) as usize];
        for flip in 0..(r >> 8) % 4 {
            h ^= 1 << ((r >> (16 + 6 * flip)) % 64);
        }
        h
    };
    let mut index = NearDupIndex::new(d);
    let mut hashes = Vec::with_capacity(entries as usize);
    let started = Instant::now();
    for seq in 1..=entries {
        let hash = rng();
        index.insert(seq, "cam", 0, hash);
        hashes.push(hash);
    }
    let kind = if clustered { "clustered" } else { "random" };
    println!("{entries} {kind} entries inserted in {:.2} s (distance {d})", started.elapsed().as_secs_f64());
    let queries: Vec<u64> = (0..10_000)
        .map(|i| {
            if i % 2 == 0 {
                let mut h = hashes[(rng() % entries) as usize];
                for _ in 0..rng() % u64::from(d + 1) {
                    h ^= 1 << (rng() % 64);
                }
                h
            } else {
                rng()
            }
        })
        .collect();
    let query = |hash| Query {
        hash,
        max_distance: d,
        scope: Scope::All,
        camera: "cam",
        before_seq: u64::MAX,
        received_since: None,
    };
    let started = Instant::now();
    let found = queries.iter().filter(|&&h| index.find(&query(h)).expect("within the index").is_some()).count();
    let indexed = started.elapsed().as_secs_f64() / queries.len() as f64;
    let scanned_queries = &queries[..200];
    let started = Instant::now();
    // A scan must look at every hash to find the closest (the index's answer), not just any.
    let scanned_found = scanned_queries
        .iter()
        .filter(|&&q| hashes.iter().enumerate().map(|(i, &h)| (distance(h, q), i)).min().is_some_and(|(m, _)| m <= d))
        .count();
    let scanned = started.elapsed().as_secs_f64() / scanned_queries.len() as f64;
    println!("index: {:.1} µs per query ({found} of {} matched)", indexed * 1e6, queries.len());
    println!("scan:  {:.1} µs per query ({scanned_found} of {} matched)", scanned * 1e6, scanned_queries.len());
    println!("index vs scan: {:.1}x faster", scanned / indexed);
}
