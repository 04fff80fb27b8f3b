// Table-test rows are tuples on purpose: one line per case.
#![allow(clippy::type_complexity, clippy::manual_is_multiple_of)]

use super::*;

fn near(seq: u64, distance: u32) -> Option<NearDuplicate> {
    Some(NearDuplicate { seq, distance })
}

#[test]
fn the_policy_flags_each_signal_and_only_those_that_fire() {
    let t = Thresholds::default();
    let base = Signals { blank_score: 0.1, classifier_score: Some(0.2), ..Signals::default() };
    let cases: Vec<(&str, Signals, bool, Vec<&str>, Option<u64>)> = vec![
        ("a clean photo is not spam", base, false, vec![], None),
        ("an exact duplicate is spam", Signals { duplicate_of: Some(3), ..base }, true, vec![DUPLICATE], None),
        (
            "a near duplicate within the distance is spam",
            Signals { near_duplicate: near(7, t.near_duplicate_distance), ..base },
            true,
            vec![NEAR_DUPLICATE],
            Some(7),
        ),
        (
            "a match beyond the distance is not a near duplicate",
            Signals { near_duplicate: near(7, t.near_duplicate_distance + 1), ..base },
            false,
            vec![],
            None,
        ),
        ("a blank frame at the threshold is spam", Signals { blank_score: 0.5, ..base }, true, vec![BLANK], None),
        (
            "a classifier score at the threshold is spam",
            Signals { classifier_score: Some(0.5), ..base },
            true,
            vec![CLASSIFIER],
            None,
        ),
        ("no classifier means no classifier reason", Signals { classifier_score: None, ..base }, false, vec![], None),
        (
            "every firing signal is a reason, in a fixed order",
            Signals {
                duplicate_of: Some(1),
                near_duplicate: near(1, 0),
                blank_score: 0.9,
                classifier_score: Some(0.99),
            },
            true,
            vec![DUPLICATE, NEAR_DUPLICATE, BLANK, CLASSIFIER],
            Some(1),
        ),
    ];
    for (name, signals, spam, reasons, near_of) in cases {
        let verdict = decide(&signals, &t);
        assert_eq!(verdict.spam, spam, "{name}");
        assert_eq!(verdict.reasons, reasons, "{name}");
        assert_eq!(verdict.near_duplicate_of, near_of, "{name}");
    }
}

#[test]
fn every_score_is_recorded_whether_it_fired_or_not() {
    let signals =
        Signals { duplicate_of: None, near_duplicate: near(4, 20), blank_score: 0.25, classifier_score: Some(0.125) };
    let verdict = decide(&signals, &Thresholds::default());
    let expected: BTreeMap<String, f64> = [
        ("blank".to_owned(), 0.25),
        ("classifier".to_owned(), 0.125),
        ("near_duplicate_distance".to_owned(), 20.0),
        (SPAM_THRESHOLD.to_owned(), 0.5),
    ]
    .into();
    assert_eq!(verdict.scores, expected);
    assert!(!verdict.spam);
}
