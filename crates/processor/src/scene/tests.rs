use super::*;

/// A hash `bits` bits away from `base` (the lowest bits flipped).
fn near(base: u64, bits: u32) -> u64 {
    base ^ ((1u64 << bits) - 1)
}

const SCENE: u64 = 0x0123_4567_89ab_cdef;

#[test]
fn a_cameras_first_frames_get_no_distance_whatever_they_show() {
    let mut scenes = Scenes::new();
    for seq in 1..=MIN_FRAMES as u64 {
        assert_eq!(scenes.distance("cam", !SCENE), None, "frame {seq}: no scene yet");
        scenes.record(seq, "cam", Some(near(SCENE, (seq % 3) as u32)), true);
    }
    assert_eq!(scenes.distance("cam", SCENE), Some(0));
    assert_eq!(scenes.distance("cam", !SCENE), Some(62), "the complement is far from every frame");
    assert_eq!(scenes.distance("other", SCENE), None, "scenes are per camera");
}

#[test]
fn only_accepted_decodable_frames_join_the_scene() {
    let cases: [(&[&str], bool); 6] = [
        (&[], true),
        (&["duplicate", "near_duplicate"], true),
        (&["classifier"], false),
        (&["near_duplicate", "blank"], false),
        (&["undecodable"], false),
        (&["near_duplicate", "classifier"], false),
    ];
    for (reasons, expected) in cases {
        assert_eq!(accepts(reasons), expected, "{reasons:?}");
    }
    let mut scenes = Scenes::new();
    for seq in 1..=MIN_FRAMES as u64 - 1 {
        scenes.record(seq, "cam", Some(SCENE), true);
    }
    scenes.record(100, "cam", Some(!SCENE), false); // spam by content
    scenes.record(101, "cam", None, true); // no hash (undecodable)
    assert_eq!(scenes.distance("cam", SCENE), None, "still one frame short");
    scenes.record(102, "cam", Some(near(SCENE, 4)), true);
    assert_eq!(scenes.distance("cam", !SCENE), Some(60), "the spam frame is not part of the scene");
}

#[test]
fn a_moved_camera_scores_far_until_its_new_scene_fills_the_window() {
    let mut scenes = Scenes::new();
    let mut seq = 0;
    for _ in 0..FRAMES {
        seq += 1;
        scenes.record(seq, "cam", Some(SCENE), true);
    }
    let moved = !SCENE;
    assert_eq!(scenes.distance("cam", moved), Some(64));
    // Nothing is flagged, so the new scene is accepted frame by frame: its first frame already
    // scores 0 again (nearest frame), and after FRAMES frames the old scene is forgotten.
    seq += 1;
    scenes.record(seq, "cam", Some(moved), true);
    assert_eq!(scenes.distance("cam", moved), Some(0));
    for _ in 1..FRAMES {
        seq += 1;
        scenes.record(seq, "cam", Some(moved), true);
    }
    assert_eq!(scenes.distance("cam", SCENE), Some(64), "the old scene is gone");
}

#[test]
fn cameras_are_bounded_and_the_longest_quiet_one_is_forgotten_first() {
    let mut scenes = Scenes::with_max_cameras(2);
    for seq in 1..=MIN_FRAMES as u64 {
        scenes.record(seq, "a", Some(SCENE), true);
        scenes.record(100 + seq, "b", Some(SCENE), true);
    }
    scenes.record(200, "a", Some(SCENE), true); // a is now the most recent
    scenes.record(201, "c", Some(SCENE), true); // forgets b
    assert_eq!(scenes.len(), 2);
    assert_eq!(scenes.distance("b", SCENE), None, "b was forgotten");
    assert_eq!(scenes.distance("a", SCENE), Some(0));
    // Spam from an unknown camera takes no slot.
    scenes.record(202, "d", Some(SCENE), false);
    assert_eq!(scenes.len(), 2);
}

#[test]
fn the_same_events_in_the_same_order_give_the_same_distances() {
    let events: Vec<(u64, String, u64, bool)> = (1..=500u64)
        .map(|seq| {
            let x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (seq, format!("cam-{}", x % 7), near(SCENE ^ (x % 5), (x % 13) as u32), x % 11 != 0)
        })
        .collect();
    let run = |max_cameras| {
        let mut scenes = Scenes::with_max_cameras(max_cameras);
        events
            .iter()
            .map(|(seq, camera, hash, accepted)| {
                let d = scenes.distance(camera, *hash);
                scenes.record(*seq, camera, Some(*hash), *accepted);
                d
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(4), run(4), "with forgetting");
    assert_eq!(run(16), run(16));
    assert!(run(16).iter().any(Option::is_some));
}
