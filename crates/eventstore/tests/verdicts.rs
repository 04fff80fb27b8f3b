//! Verdict commits and notes against real git.

use std::path::Path;
use std::process::Command;

use camledger_eventstore::{verdict, Ledger, LedgerConfig, NewEvent, Verdict};

fn git(git_dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("--git-dir").arg(git_dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

async fn ledger_with_events(dir: &Path, n: u64) -> (Ledger, Vec<String>) {
    let ledger = Ledger::open(dir, LedgerConfig::default()).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let mut ids = Vec::new();
    for i in 0..n {
        let event = NewEvent {
            camera: "cam-1".into(),
            image: vec![i as u8; 1000 + i as usize].into(),
            media_type: "image/png".into(),
            extension: "png".into(),
            width: 10,
            height: 10,
            exif: None,
            captured_at: None,
            idempotency_key: None,
        };
        ids.push(writer.append(event).await.expect("append").id);
    }
    writer.shutdown().await;
    (ledger, ids)
}

fn verdict(seq: u64, id: &str, spam: bool) -> Verdict {
    Verdict {
        event_seq: seq,
        event_id: id.to_owned(),
        spam,
        reasons: if spam { vec!["classifier".into()] } else { vec![] },
        scores: [("classifier".to_owned(), if spam { 0.97 } else { 0.02 })].into_iter().collect(),
        near_duplicate_of: None,
        model_sha256: "ab".repeat(32),
        processor_version: "test-1".into(),
        perceptual_hash: Some(format!("dhash:{:016x}", seq * 0x0101)),
    }
}

#[tokio::test]
async fn verdicts_and_their_notes_are_visible_with_stock_git() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger_with_events(dir.path(), 3).await;
    assert_eq!(ledger.verdict_head().expect("head"), None);

    ledger.append_verdicts(&[verdict(1, &ids[0], false), verdict(2, &ids[1], true)]).expect("append");
    let head = ledger.append_verdicts(&[verdict(3, &ids[2], true)]).expect("append").expect("head");

    assert_eq!(head.event_seq, 3);
    assert_eq!(ledger.verdict_head().expect("head"), Some(head));
    let stored = ledger.verdict(2).expect("read").expect("judged");
    assert_eq!(stored.verdict, verdict(2, &ids[1], true));
    let git_dir = ledger.git_dir();
    git(&git_dir, &["fsck", "--full", "--strict", "--no-dangling"]);
    let log = git(&git_dir, &["log", "--notes=verdicts", "--format=%H%n%N", "refs/heads/events"]);
    for (id, word) in [(&ids[0], "ok"), (&ids[1], "spam"), (&ids[2], "spam")] {
        assert!(log.contains(&format!("{id}\nVerdict: {word}\n")), "git log shows the note of {id}: {log}");
    }
    let note = git(&git_dir, &["notes", "--ref=verdicts", "show", &ids[1]]);
    assert!(note.contains(&format!("Verdict-Commit: {}", stored.id)), "{note}");
    let trailers = git(&git_dir, &["log", "-1", "--format=%(trailers:only)", "refs/heads/verdicts"]);
    assert_eq!(trailers, format!("Event: {}\nEvent-Seq: 3\nVerdict: spam\n\n", ids[2]));
    let json = git(&git_dir, &["cat-file", "blob", "refs/heads/verdicts:verdict.json"]);
    assert!(json.contains("\"scores\":{\"classifier\":970000}"), "{json}");
    assert!(json.contains("\"perceptual_hash\":\"dhash:0000000000000303\""), "{json}");
    assert_eq!(ledger.verify_verdicts(|_, _| {}).expect("verdicts verify"), 3);

    let mut walked = Vec::new();
    ledger
        .walk_verdicts_back(|v| {
            walked.push((v.event_seq, v.perceptual_hash.clone()));
            v.event_seq > 2
        })
        .expect("walk");
    let hash = |h: &str| Some(format!("dhash:{h}"));
    assert_eq!(
        walked,
        [(3, hash("0000000000000303")), (2, hash("0000000000000202"))],
        "newest first, stopping when told"
    );
}

#[tokio::test]
async fn verify_verdicts_reports_a_verdict_chain_with_a_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger_with_events(dir.path(), 3).await;
    ledger.append_verdicts(&[verdict(1, &ids[0], false)]).expect("append");
    let first = git(&ledger.git_dir(), &["rev-parse", "refs/heads/verdicts"]);
    ledger.append_verdicts(&[verdict(2, &ids[1], false), verdict(3, &ids[2], true)]).expect("append");
    // Re-parent the verdict for event 3 onto the one for event 1: event 2 loses its verdict.
    let git_dir = ledger.git_dir();
    let tree = git(&git_dir, &["rev-parse", "refs/heads/verdicts^{tree}"]);
    let message = git(&git_dir, &["log", "-1", "--format=%B", "refs/heads/verdicts"]);
    // As camledger itself would commit it (same identity, author = committer).
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["commit-tree", tree.trim(), "-p", first.trim(), "-m", message.trim_end()])
        .envs([("GIT_AUTHOR_NAME", "camledger"), ("GIT_COMMITTER_NAME", "camledger")])
        .envs([("GIT_AUTHOR_EMAIL", "camledger.local"), ("GIT_COMMITTER_EMAIL", "camledger.local")])
        .envs([("GIT_AUTHOR_DATE", "1800000000 +0000"), ("GIT_COMMITTER_DATE", "1800000000 +0000")])
        .output()
        .expect("git commit-tree");
    let forged = String::from_utf8(out.stdout).expect("utf8");
    git(&git_dir, &["update-ref", "refs/heads/verdicts", forged.trim()]);
    let err = ledger.verify_verdicts(|_, _| {}).expect_err("the forged head is found");
    assert!(
        err.to_string().contains("verdicts seq 3") && err.to_string().contains("does not agree with this verdict"),
        "{err}"
    );
    // Without notes to compare with, the gap itself is reported.
    git(&git_dir, &["update-ref", "-d", "refs/notes/verdicts"]);
    let err = ledger.verify_verdicts(|_, _| {}).expect_err("a gap is found");
    assert!(err.to_string().contains("judges event 1, its chain position is event 2"), "{err}");
}

#[tokio::test]
async fn a_worker_racing_for_judged_events_gets_a_conflict_and_continues_from_the_tip() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger_with_events(dir.path(), 4).await;
    let other = Ledger::open(dir.path(), LedgerConfig::default()).expect("second handle");
    // Both workers judge events 1..=2 at the same time. (Identical batches written in the
    // same second make identical commits, and both "win" harmlessly; make them differ.)
    let batch_a = vec![verdict(1, &ids[0], false), verdict(2, &ids[1], false)];
    let mut batch_b = batch_a.clone();
    for v in &mut batch_b {
        v.processor_version = "test-2".into();
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| ledger.append_verdicts(&batch_a));
        let b = s.spawn(|| other.append_verdicts(&batch_b));
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    let (won, lost) = if a.is_ok() { (a, b) } else { (b, a) };
    let head = won.expect("one worker wins").expect("head");
    match lost {
        Err(verdict::Error::Conflict { head: Some(tip) }) => assert_eq!(tip, head),
        other => panic!("the loser must get a conflict with the new tip, got {other:?}"),
    }
    // The loser continues after the tip.
    other.append_verdicts(&[verdict(3, &ids[2], true)]).expect("continues");
    let judged: Vec<u64> =
        (1..=3).map(|s| ledger.verdict(s).expect("read").expect("judged").verdict.event_seq).collect();
    assert_eq!(judged, vec![1, 2, 3], "exactly one verdict per event");
    assert_eq!(git(&ledger.git_dir(), &["rev-list", "--count", "refs/heads/verdicts"]).trim(), "3");
    assert_eq!(ledger.verdict(4).expect("read"), None);
}

#[tokio::test]
async fn notes_left_behind_by_a_crash_are_repaired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger_with_events(dir.path(), 3).await;
    ledger.append_verdicts(&[verdict(1, &ids[0], false)]).expect("append");
    let git_dir = ledger.git_dir();
    let notes_after_first = git(&git_dir, &["rev-parse", "refs/notes/verdicts"]);
    ledger.append_verdicts(&[verdict(2, &ids[1], true)]).expect("append");
    // Simulate a crash that persisted the verdicts ref but not the notes ref.
    git(&git_dir, &["update-ref", "refs/notes/verdicts", notes_after_first.trim()]);
    assert_eq!(ledger.verdict(2).expect("read").expect("found by walking").verdict.event_seq, 2);

    ledger.repair_verdict_notes().expect("repair");

    let note = git(&git_dir, &["notes", "--ref=verdicts", "show", &ids[1]]);
    assert!(note.starts_with("Verdict: spam\n"), "{note}");
    ledger.append_verdicts(&[verdict(3, &ids[2], false)]).expect("append continues");
    git(&git_dir, &["notes", "--ref=verdicts", "show", &ids[2]]);
}

#[tokio::test]
async fn verdicts_that_skip_events_or_name_the_wrong_commit_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger_with_events(dir.path(), 3).await;
    let gap = ledger.append_verdicts(&[verdict(2, &ids[1], false)]);
    assert!(matches!(gap, Err(verdict::Error::OutOfOrder { expected: 1, got: 2 })), "{gap:?}");
    let wrong = ledger.append_verdicts(&[verdict(1, &ids[2], false)]);
    assert!(matches!(wrong, Err(verdict::Error::EventMismatch { seq: 1, .. })), "{wrong:?}");
    let beyond = ledger.append_verdicts(&[
        verdict(1, &ids[0], false),
        verdict(2, &ids[1], false),
        verdict(3, &ids[2], false),
        verdict(4, &ids[2], false),
    ]);
    assert!(beyond.is_err(), "no verdict for an event that does not exist");
    assert_eq!(ledger.verdict_head().expect("head"), None, "nothing was written");
}

#[tokio::test]
async fn a_note_whose_verdict_ref_update_was_lost_does_not_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger_with_events(dir.path(), 2).await;
    let git_dir = ledger.git_dir();
    ledger.append_verdicts(&[verdict(1, &ids[0], false)]).expect("append");
    let after_first = git(&git_dir, &["rev-parse", "refs/heads/verdicts"]);
    ledger.append_verdicts(&[verdict(2, &ids[1], true)]).expect("append");
    // A crash that persisted the notes ref but not the verdicts ref.
    git(&git_dir, &["update-ref", "refs/heads/verdicts", after_first.trim()]);

    assert_eq!(ledger.verdict(2).expect("read"), None, "event 2 is not judged on the chain");
    ledger.append_verdicts(&[verdict(2, &ids[1], false)]).expect("judged again");

    assert!(!ledger.verdict(2).expect("read").expect("judged").verdict.spam);
    assert_eq!(ledger.verify_verdicts(|_, _| {}).expect("consistent again"), 2);
    assert!(git(&git_dir, &["notes", "--ref=verdicts", "show", &ids[1]]).starts_with("Verdict: ok\n"));
}
