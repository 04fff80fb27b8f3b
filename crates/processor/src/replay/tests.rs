use super::*;

fn outcome(spam: bool, reasons: &[&str], scores: &[(&str, f64)], near: Option<u64>) -> Outcome {
    Outcome {
        spam,
        reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
        scores: scores.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        near_duplicate_of: near,
        perceptual_hash: Some("dhash:00000000000000ff".to_owned()),
    }
}

#[test]
fn verdicts_are_the_same_only_when_every_part_agrees() {
    let base = outcome(true, &["blank"], &[("blank", 0.75), ("classifier", 0.1)], None);
    let cases = [
        ("identical", base.clone(), true),
        (
            "scores within a millionth",
            outcome(true, &["blank"], &[("blank", 0.750_000_9), ("classifier", 0.1)], None),
            true,
        ),
        (
            "a score two millionths off",
            outcome(true, &["blank"], &[("blank", 0.750_002), ("classifier", 0.1)], None),
            false,
        ),
        ("spam bit flipped", outcome(false, &["blank"], &[("blank", 0.75), ("classifier", 0.1)], None), false),
        ("another reason", outcome(true, &["classifier"], &[("blank", 0.75), ("classifier", 0.1)], None), false),
        (
            "a near duplicate appears",
            outcome(true, &["blank"], &[("blank", 0.75), ("classifier", 0.1)], Some(3)),
            false,
        ),
        ("a score missing", outcome(true, &["blank"], &[("blank", 0.75)], None), false),
        ("a score renamed", outcome(true, &["blank"], &[("blank", 0.75), ("classifies", 0.1)], None), false),
        ("another hash", Outcome { perceptual_hash: Some("dhash:00000000000000fe".to_owned()), ..base.clone() }, false),
    ];
    for (name, other, expected) in cases {
        assert_eq!(same(&base, &other), expected, "{name}");
    }
    // A verdict from before hashes were recorded is not held to one.
    let unhashed = Outcome { perceptual_hash: None, ..base.clone() };
    assert!(same(&unhashed, &base), "no recorded hash: nothing to compare");
}

#[test]
fn the_summary_counts_flips_each_way() {
    let ok = outcome(false, &[], &[], None);
    let spam = outcome(true, &["blank"], &[], None);
    let rows = [
        Row { seq: 1, recorded: Some(ok.clone()), recomputed: ok.clone(), agrees: true },
        Row { seq: 2, recorded: Some(ok.clone()), recomputed: spam.clone(), agrees: false },
        Row { seq: 3, recorded: Some(spam.clone()), recomputed: ok.clone(), agrees: false },
        Row {
            seq: 4,
            recorded: Some(spam.clone()),
            recomputed: outcome(true, &["classifier"], &[], None),
            agrees: false,
        },
        Row { seq: 5, recorded: None, recomputed: ok, agrees: false },
    ];
    let mut summary = Summary::default();
    rows.iter().for_each(|r| summary.add(r));
    assert_eq!(
        summary,
        Summary { events: 5, agreements: 1, flips_to_spam: 1, flips_to_ok: 1, other_differences: 1, unjudged: 1 }
    );
    assert!(summary.has_differences());
}

#[test]
fn a_score_added_later_is_not_held_against_a_verdict_written_before_it() {
    let old = outcome(false, &[], &[("blank", 0.1), ("classifier", 0.2)], None);
    let new = outcome(
        false,
        &[],
        &[("blank", 0.1), ("classifier", 0.2), ("spam_threshold", 0.9), ("scene_distance", 20.0)],
        None,
    );
    assert!(same(&old, &new), "the old verdict lacks the later scores");
    assert!(!same(&new, &old), "a verdict that records them must get them back");
    let other_later = outcome(false, &[], &[("blank", 0.1), ("classifier", 0.2), ("label_meme", 0.5)], None);
    assert!(!same(&old, &other_later), "any other new score is a difference");
}

#[test]
fn verdicts_without_a_recorded_threshold_replay_at_their_models_manifest_threshold() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny.manifest.json");
    let mut manifest: crate::classifier::Manifest =
        serde_json::from_slice(&std::fs::read(path).expect("fixture exists")).expect("valid manifest");
    manifest.threshold = 0.7;
    let model = Model::from_parts(manifest.clone(), std::sync::Arc::from(&b""[..])).expect("valid manifest");
    assert_eq!(threshold_before_recording(&manifest.sha256, &model), 0.7, "the verdict's own model");
    for shipped in DEFAULT_MODELS_BEFORE_RECORDED_THRESHOLDS {
        assert_eq!(threshold_before_recording(shipped, &model), 0.9, "a shipped default model: {shipped}");
    }
    assert_eq!(threshold_before_recording(&"ab".repeat(32), &model), 0.7, "unknown: the replay's manifest");
}
