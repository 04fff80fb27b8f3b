// Table-test rows are tuples on purpose: one line per case.
#![allow(clippy::type_complexity, clippy::manual_is_multiple_of)]

use super::*;
use crate::testutil::Rng;

fn index() -> NearDupIndex {
    let mut index = NearDupIndex::new(8);
    index.insert(1, "cam-a", 1_000, 0x0000_0000_0000_0000);
    index.insert(2, "cam-b", 2_000, 0x0000_0000_0000_00FF); // 8 bits from seq 1
    index.insert(3, "cam-a", 3_000, 0xFFFF_FFFF_0000_0000);
    index.insert(4, "cam-b", 4_000, 0x0000_0000_0000_0001);
    index
}

fn query(hash: u64) -> Query<'static> {
    Query { hash, max_distance: 8, scope: Scope::All, camera: "cam-a", before_seq: 100, received_since: None }
}

#[test]
fn queries_find_the_closest_earlier_match_within_scope_and_window() {
    let index = index();
    let cases: Vec<(&str, Query<'static>, Option<Match>)> = vec![
        ("an exact copy matches at distance 0", query(0), Some(Match { seq: 1, distance: 0 })),
        (
            "the closest entry wins over an earlier, farther one",
            query(0x0000_0000_0000_0003),
            Some(Match { seq: 4, distance: 1 }),
        ),
        ("nothing within the distance finds nothing", query(0x5555_5555_5555_5555), None),
        (
            "a smaller query distance excludes farther matches",
            Query { max_distance: 0, ..query(0x0000_0000_0000_0003) },
            None,
        ),
        (
            "only lower seqs count as earlier",
            Query { before_seq: 4, ..query(0x0000_0000_0000_0001) },
            Some(Match { seq: 1, distance: 1 }),
        ),
        (
            "same-camera scope ignores other cameras",
            Query { scope: Scope::SameCamera, ..query(0x0000_0000_0000_0001) },
            Some(Match { seq: 1, distance: 1 }),
        ),
        (
            "same-camera scope for an unknown camera finds nothing",
            Query { scope: Scope::SameCamera, camera: "cam-z", ..query(0) },
            None,
        ),
        (
            "the time window drops older entries",
            Query { received_since: Some(1_500), ..query(0) },
            Some(Match { seq: 4, distance: 1 }),
        ),
        (
            "a match at exactly the maximum distance is found",
            query(0xFFFF_FFFF_0000_00FF),
            Some(Match { seq: 3, distance: 8 }),
        ),
    ];
    for (name, q, expected) in cases {
        assert_eq!(index.find(&q), Ok(expected), "{name}");
    }
}

#[test]
fn equal_distances_resolve_to_the_lowest_seq() {
    let mut index = NearDupIndex::new(4);
    index.insert(5, "c", 0, 0b0011);
    index.insert(6, "c", 0, 0b1100);
    let q = Query { max_distance: 4, ..query(0) };
    assert_eq!(index.find(&q), Ok(Some(Match { seq: 5, distance: 2 })));
}

#[test]
fn a_query_beyond_the_index_distance_is_an_error() {
    let index = NearDupIndex::new(4);
    assert_eq!(
        index.find(&Query { max_distance: 5, ..query(0) }),
        Err(QueryError::DistanceTooLarge { asked: 5, max: 4 })
    );
}

#[test]
fn the_index_agrees_with_a_full_scan_on_random_hashes() {
    let mut rng = Rng(42);
    for (max_distance, asked) in [(0, 0), (1, 1), (3, 3), (4, 4), (8, 8), (10, 10), (10, 6), (12, 12), (16, 16)] {
        let mut index = NearDupIndex::new(max_distance);
        let mut all = Vec::new();
        for seq in 1..=2_000u64 {
            let hash = rng.next();
            let camera = if rng.next() % 2 == 0 { "a" } else { "b" };
            let received_at = seq as i64 * 10;
            index.insert(seq, camera, received_at, hash);
            all.push((seq, camera, received_at, hash));
        }
        let mut found = 0;
        for _ in 0..500 {
            // Queries near existing hashes, so that matches actually happen.
            let (_, _, _, base) = all[(rng.next() % all.len() as u64) as usize];
            let mut hash = base;
            for _ in 0..(rng.next() % u64::from(asked + 3)) {
                hash ^= 1 << (rng.next() % 64);
            }
            let q = Query {
                hash,
                max_distance: asked,
                scope: if rng.next() % 2 == 0 { Scope::All } else { Scope::SameCamera },
                camera: "a",
                before_seq: 1 + rng.next() % 2_001,
                received_since: (rng.next() % 2 == 0).then_some((rng.next() % 20_000) as i64),
            };
            let expected = all
                .iter()
                .filter(|(seq, camera, received_at, _)| {
                    *seq < q.before_seq
                        && (q.scope == Scope::All || *camera == q.camera)
                        && q.received_since.is_none_or(|t| *received_at >= t)
                })
                .map(|&(seq, _, _, h)| Match { seq, distance: distance(h, q.hash) })
                .filter(|m| m.distance <= asked)
                .min_by_key(|m| (m.distance, m.seq));
            found += usize::from(expected.is_some());
            assert_eq!(index.find(&q), Ok(expected), "index {max_distance}, asked {asked}, {q:?}");
        }
        assert!(found > 50, "the random queries must hit matches ({found})");
    }
}

#[test]
fn band_probes_are_every_pattern_within_the_radius() {
    assert_eq!(flips_within(16, 0), vec![0]);
    assert_eq!(flips_within(16, 2).len(), 1 + 16 + 120);
    assert_eq!(flips_within(3, 5).len(), 8, "a radius beyond the width is every pattern");
    let probes = flips_within(16, 3);
    assert!(probes.iter().all(|p| p.count_ones() <= 3 && *p < 1 << 16));
    let unique: std::collections::HashSet<_> = probes.iter().collect();
    assert_eq!(unique.len(), probes.len(), "no pattern twice");
}

#[test]
fn a_rollback_forgets_later_entries_as_if_never_inserted() {
    let mut index = NearDupIndex::new(8);
    index.insert(1, "cam-a", 1_000, 0x0000_0000_0000_0000);
    index.insert(2, "cam-b", 2_000, 0x0000_0000_0000_00FF);
    let mark = index.mark();
    index.insert(3, "cam-a", 3_000, 0xFFFF_FFFF_0000_0000);
    index.insert(4, "cam-b", 4_000, 0x0000_0000_0000_0001);
    index.rollback(mark);
    assert_eq!(index.len(), 2);
    assert_eq!(index.find(&query(0x0000_0000_0000_0001)), Ok(Some(Match { seq: 1, distance: 1 })));
    assert_eq!(index.find(&query(0xFFFF_FFFF_0000_0000)), Ok(None));
    index.insert(3, "cam-a", 3_000, 0x0000_0000_0000_0001);
    assert_eq!(index.find(&query(0x0000_0000_0000_0001)), Ok(Some(Match { seq: 3, distance: 0 })));
}

#[test]
fn entries_outside_the_window_are_evicted() {
    let mut index = NearDupIndex::new(8).with_window(Some(100));
    for seq in 0..1_000u64 {
        index.insert(seq, "cam-a", seq as i64 * 10, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    // Received at 9,990: everything received before 9,890 is gone, 9,890..=9,990 stays.
    assert_eq!(index.len(), 11);
    assert_eq!(index.entries.len(), 11, "evicted entries are dropped, not only hidden");
    let bucketed: usize = index.tables[0].values().map(Vec::len).sum();
    assert_eq!(bucketed, 11, "and dropped from the buckets");
    assert_eq!(index.groups.len(), 11, "and from the hash groups");
}

#[test]
fn the_entry_cap_evicts_the_oldest_and_forgets_their_cameras() {
    let mut index = NearDupIndex::new(8).with_max_entries(100);
    for seq in 0..10_000u64 {
        index.insert(seq, &format!("cam-{seq}"), 0, seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    assert_eq!(index.len(), 100);
    assert_eq!(index.cameras.len(), 100);
    let newest = 9_999u64.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let oldest = 0u64;
    assert_eq!(
        index.find(&Query { max_distance: 0, before_seq: u64::MAX, ..query(newest) }),
        Ok(Some(Match { seq: 9_999, distance: 0 }))
    );
    assert_eq!(index.find(&Query { max_distance: 0, ..query(oldest) }), Ok(None));
}

#[test]
fn positions_are_not_limited_to_u32() {
    // Regression: positions were u32 indices with `expect("fewer than 4 billion")`, so the
    // worker stopped judging after 2^32 events. Start just below the old limit.
    let mut index = NearDupIndex::new(8).with_max_entries(4);
    index.first = u64::from(u32::MAX) - 2;
    index.first_live = index.first;
    for seq in 0..10u64 {
        index.insert(seq, "cam-a", 0, seq);
    }
    assert_eq!(index.len(), 4);
    assert_eq!(index.find(&Query { max_distance: 0, ..query(9) }), Ok(Some(Match { seq: 9, distance: 0 })));
}

#[test]
fn a_rollback_restores_what_the_batch_evicted() {
    let mut index = NearDupIndex::new(8).with_max_entries(2);
    index.insert(1, "cam-a", 0, 0x0000_0000_0000_0000);
    index.insert(2, "cam-a", 0, 0xFFFF_0000_0000_0000);
    let mark = index.mark();
    index.insert(3, "cam-a", 0, 0x0000_FFFF_0000_0000);
    index.insert(4, "cam-a", 0, 0x0000_0000_FFFF_0000);
    assert_eq!(index.find(&query(0)), Ok(None), "seq 1 is evicted by the cap");
    index.rollback(mark);
    assert_eq!(index.len(), 2);
    assert_eq!(index.find(&query(0)), Ok(Some(Match { seq: 1, distance: 0 })), "and back after the rollback");
}

#[test]
fn a_frame_repeated_by_many_cameras_is_one_candidate_and_each_camera_finds_its_own_first() {
    let mut index = NearDupIndex::new(10);
    for seq in 1..=30_000u64 {
        let camera = ["cam-a", "cam-b", "cam-c"][(seq % 3) as usize];
        index.insert(seq, camera, seq as i64, 0xABCD);
    }
    assert_eq!(index.groups.len(), 1, "one distinct hash");
    assert!(index.tables.iter().all(|t| t.values().all(|bucket| bucket.len() == 1)), "one slot per band");
    let q = Query { max_distance: 10, before_seq: 30_001, ..query(0xABCF) };
    assert_eq!(index.find(&q), Ok(Some(Match { seq: 1, distance: 1 })), "any camera: the first of all");
    let own = Query { scope: Scope::SameCamera, camera: "cam-c", ..q };
    assert_eq!(index.find(&own), Ok(Some(Match { seq: 2, distance: 1 })), "cam-c's first");
    let windowed = Query { received_since: Some(20_000), ..own };
    assert_eq!(index.find(&windowed), Ok(Some(Match { seq: 20_000, distance: 1 })), "the first in the window");
    let earlier = Query { before_seq: 2, ..own };
    assert_eq!(index.find(&earlier), Ok(None), "nothing of cam-c before seq 2");
}

#[test]
fn the_index_agrees_with_a_full_scan_on_clustered_hashes_through_evictions_and_rollbacks() {
    let mut rng = Rng(7);
    let scenes: Vec<u64> = (0..12).map(|_| rng.next()).collect();
    let mut index = NearDupIndex::new(10).with_max_entries(1_500).with_window(Some(5_000));
    let mut all: Vec<(u64, &str, i64, u64)> = Vec::new();
    let mut seq = 0u64;
    for round in 0..40 {
        let mark = index.mark();
        let before = all.len();
        for _ in 0..100 {
            seq += 1;
            let mut hash = scenes[(rng.next() % scenes.len() as u64) as usize];
            for _ in 0..(rng.next() % 4) {
                hash ^= 1 << (rng.next() % 64);
            }
            let camera = ["a", "b", "c"][(rng.next() % 3) as usize];
            let received_at = seq as i64 * 2;
            index.insert(seq, camera, received_at, hash);
            all.push((seq, camera, received_at, hash));
        }
        if round % 5 == 4 {
            index.rollback(mark);
            all.truncate(before);
            seq -= 100;
        }
        let newest = all.last().map_or(0, |e| e.2);
        let live: Vec<_> = all.iter().rev().take(1_500).filter(|e| e.2 >= newest - 5_000).copied().collect();
        for _ in 0..50 {
            let mut hash = scenes[(rng.next() % scenes.len() as u64) as usize];
            for _ in 0..(rng.next() % 8) {
                hash ^= 1 << (rng.next() % 64);
            }
            let q = Query {
                hash,
                max_distance: 10,
                scope: if rng.next() % 2 == 0 { Scope::All } else { Scope::SameCamera },
                camera: "b",
                before_seq: 1 + rng.next() % (seq + 1),
                received_since: (rng.next() % 2 == 0).then_some((rng.next() % (seq * 2 + 1)) as i64),
            };
            let expected = live
                .iter()
                .filter(|(s, camera, received_at, _)| {
                    *s < q.before_seq
                        && (q.scope == Scope::All || *camera == q.camera)
                        && q.received_since.is_none_or(|t| *received_at >= t)
                })
                .map(|&(s, _, _, h)| Match { seq: s, distance: distance(h, q.hash) })
                .filter(|m| m.distance <= 10)
                .min_by_key(|m| (m.distance, m.seq));
            assert_eq!(index.find(&q), Ok(expected), "round {round}, {q:?}");
        }
    }
}
