use super::*;

#[test]
fn labels_files_parse_or_name_the_bad_line() {
    let good = parse_labels("file,label\n\na.jpg,ham\r\nsub/b.png , SPAM\n").expect("valid");
    assert_eq!(
        good,
        vec![
            Labelled { file: "a.jpg".into(), label: Label::Ham },
            Labelled { file: "sub/b.png".into(), label: Label::Spam }
        ]
    );
    let cases = [
        ("a.jpg,maybe\n", "line 1: unknown label \"maybe\" (use ham or spam)"),
        ("a.jpg,ham\nb.jpg\n", "line 2: expected `file,label`, found 1 field(s): \"b.jpg\""),
        ("a.jpg,ham,extra\n", "line 1: expected `file,label`, found 3 field(s)"),
        ("a.jpg,ham\na.jpg,spam\n", "line 2: a.jpg is already labelled on line 1"),
        (",ham\n", "line 1: the file name is empty"),
        ("file,label\n\n", "no labelled files"),
    ];
    for (text, expected) in cases {
        let error = parse_labels(text).expect_err(text).0;
        assert!(error.starts_with(expected), "{text:?}: {error}");
    }
}

fn row(label: Label, reasons: &[&str], classifier: f64) -> Row {
    Row {
        file: String::new(),
        label,
        spam: !reasons.is_empty(),
        reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
        scores: [(CLASSIFIER.to_owned(), classifier)].into(),
        top_label: None,
        refused: None,
    }
}

#[test]
fn the_suggested_threshold_is_the_lowest_that_meets_the_target() {
    // Ten ham with classifier scores 0.05 … 0.95, four spam.
    let mut rows: Vec<Row> = (0..10).map(|i| row(Label::Ham, &[], 0.05 + 0.1 * f64::from(i))).collect();
    rows.extend([0.99, 0.9, 0.6, 0.3].map(|s| row(Label::Spam, &[], s)));
    // 10% of 10 ham: one may be flagged, so the threshold sits just above the second highest.
    let s = suggest(&rows, 0.1).expect("reachable");
    assert_eq!(s.threshold, 0.850001);
    assert_eq!((s.false_positives, s.caught), (1, 2));
    // 0%: above every ham score.
    let s = suggest(&rows, 0.0).expect("reachable");
    assert_eq!(s.threshold, 0.950001);
    assert_eq!((s.false_positives, s.caught), (0, 1));
    // Ham flagged for another reason count against the target whatever the threshold.
    rows[0] = row(Label::Ham, &["blank"], 0.05);
    assert_eq!(suggest(&rows, 0.0), None);
    let s = suggest(&rows, 0.1).expect("the blank frame uses the budget");
    assert_eq!(s.threshold, 0.950001);
}

#[test]
fn score_distributions_summarise_and_bin() {
    let d = Distribution::of(vec![0.95, 0.05, 0.5, 1.0]);
    assert_eq!((d.count, d.min, d.max), (4, Some(0.05), Some(1.0)));
    assert_eq!(d.histogram, [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
    assert_eq!(Distribution::of(Vec::new()).p50, None);
}
