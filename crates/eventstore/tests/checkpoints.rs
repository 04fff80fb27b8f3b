//! Checkpoints against real ledgers: what `satisfies`, `extends` and `verify_anchored` say
//! about a ledger that moved on, one rolled back with stock git, and one rewritten.

mod common;

use std::path::Path;
use std::process::Command;

use camledger_eventstore::checkpoint::{self, AnchoredError, Chain, Checkpoint, Mismatch};
use camledger_eventstore::sign::{AllowedSigners, SigningKey};
use camledger_eventstore::{Ledger, LedgerConfig, Verdict};

fn git(git_dir: &Path, args: &[&str]) {
    let out = Command::new("git").arg("--git-dir").arg(git_dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

async fn append(ledger: &Ledger, from: u64, n: u64) -> Vec<String> {
    let writer = ledger.start_writer().expect("writer starts");
    let mut ids = Vec::new();
    for i in from..from + n {
        ids.push(writer.append(common::new_event("cam-1", common::image(i, 500))).await.expect("append").id);
    }
    writer.shutdown().await;
    ids
}

fn verdict(seq: u64, id: &str) -> Verdict {
    Verdict {
        event_seq: seq,
        event_id: id.to_owned(),
        spam: false,
        reasons: vec![],
        scores: [("classifier".to_owned(), 0.02)].into_iter().collect(),
        near_duplicate_of: None,
        model_sha256: "ab".repeat(32),
        processor_version: "test-1".into(),
        perceptual_hash: None,
    }
}

fn signers(key: &SigningKey) -> AllowedSigners {
    AllowedSigners::only(key)
}

#[tokio::test]
async fn a_ledger_that_moved_on_satisfies_and_extends_its_earlier_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let empty = ledger.current_checkpoint(100).unwrap();
    assert_eq!((empty.events_seq, empty.events_head.as_str()), (0, checkpoint::ZERO_ID));
    assert_eq!(empty.origin, "camledger/camledger.local");

    let ids = append(&ledger, 1, 5).await;
    ledger.append_verdicts(&[verdict(1, &ids[0]), verdict(2, &ids[1])]).unwrap();
    let first = ledger.current_checkpoint(200).unwrap();
    assert_eq!((first.events_seq, first.verdicts_seq), (5, 2));
    assert_eq!(first.events_head, ids[4]);

    let more = append(&ledger, 6, 3).await;
    ledger.append_verdicts(&[verdict(3, &ids[2])]).unwrap();
    let second = ledger.current_checkpoint(300).unwrap();
    assert_eq!(second.events_head, more[2]);

    ledger.satisfies(&first).expect("the earlier checkpoint is on the chains");
    second.extends(&first, &ledger).expect("the later checkpoint extends the earlier");
    first.extends(&empty, &ledger).expect("anything extends the empty ledger");
    assert!(matches!(first.extends(&second, &ledger), Err(Mismatch::GoesBack { chain: Chain::Events, .. })));
    let earlier_time = Checkpoint { time: 250, ..second.clone() };
    assert!(matches!(earlier_time.extends(&second, &ledger), Err(Mismatch::GoesBack { .. })));
}

#[tokio::test]
async fn a_ledger_rolled_back_with_git_update_ref_is_behind_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let ids = append(&ledger, 1, 8).await;
    let checkpoint = ledger.current_checkpoint(100).unwrap();

    git(&ledger.git_dir(), &["update-ref", "refs/heads/events", &ids[2]]);

    let err = ledger.satisfies(&checkpoint).unwrap_err();
    assert!(matches!(err, Mismatch::Behind { chain: Chain::Events, ledger_seq: 3, checkpoint_seq: 8, .. }), "{err}");
    assert!(err.to_string().contains("rollback"), "{err}");
}

#[tokio::test]
async fn a_checkpoint_of_another_history_is_not_on_the_chain_and_does_not_extend() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let other = Ledger::open(other_dir.path(), LedgerConfig::default()).unwrap();
    append(&ledger, 1, 4).await;
    append(&other, 100, 4).await;
    let theirs = other.current_checkpoint(100).unwrap();
    let ours = ledger.current_checkpoint(200).unwrap();

    let err = ledger.satisfies(&theirs).unwrap_err();
    assert!(matches!(&err, Mismatch::NotOnChain { chain: Chain::Events, seq: 4, .. }), "{err}");
    assert!(matches!(ours.extends(&theirs, &ledger), Err(Mismatch::NotOnChain { .. })));
}

#[tokio::test]
async fn verify_anchored_checks_signatures_order_and_the_chains() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(&dir.path().join("key"), "k").unwrap();
    let ledger = Ledger::open(&dir.path().join("data"), LedgerConfig::default()).unwrap();
    let ids = append(&ledger, 1, 6).await;
    let first = ledger.current_checkpoint(100).unwrap().sign(&key);
    append(&ledger, 7, 2).await;
    let second = ledger.current_checkpoint(200).unwrap().sign(&key);

    let report = checkpoint::verify_anchored(&ledger, &[first.clone(), second.clone()], &signers(&key)).unwrap();
    assert_eq!(report.checkpoints, 2);
    assert_eq!(report.latest.unwrap().events_seq, 8);

    let stranger = SigningKey::generate(&dir.path().join("stranger"), "s").unwrap();
    let err = checkpoint::verify_anchored(&ledger, std::slice::from_ref(&first), &signers(&stranger)).unwrap_err();
    assert!(matches!(err, AnchoredError::Note { index: 1, .. }), "{err}");

    let err = checkpoint::verify_anchored(&ledger, &[second.clone(), first.clone()], &signers(&key)).unwrap_err();
    assert!(matches!(err, AnchoredError::NotExtending { index: 2, previous: 1, .. }), "{err}");

    git(&ledger.git_dir(), &["update-ref", "refs/heads/events", &ids[2]]);
    let err = checkpoint::verify_anchored(&ledger, &[first, second], &signers(&key)).unwrap_err();
    assert!(
        matches!(&err, AnchoredError::Ledger { index: 2, events_seq: 8, source, .. } if matches!(**source, Mismatch::Behind { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn a_verdict_chain_rolled_back_or_rewritten_is_named_on_the_verdicts_chain() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let ids = append(&ledger, 1, 3).await;
    let first = ledger.append_verdicts(&[verdict(1, &ids[0])]).unwrap().unwrap();
    ledger.append_verdicts(&[verdict(2, &ids[1]), verdict(3, &ids[2])]).unwrap();
    let checkpoint = ledger.current_checkpoint(100).unwrap();
    assert_eq!(checkpoint.verdicts_seq, 3);

    git(&ledger.git_dir(), &["update-ref", "refs/heads/verdicts", &first.id]);
    let err = ledger.satisfies(&checkpoint).unwrap_err();
    assert!(matches!(err, Mismatch::Behind { chain: Chain::Verdicts, ledger_seq: 1, checkpoint_seq: 3, .. }), "{err}");

    let other = Checkpoint { verdicts_seq: 1, verdicts_head: ids[0].clone(), ..checkpoint };
    let err = ledger.satisfies(&other).unwrap_err();
    assert!(
        matches!(&err, Mismatch::NotOnChain { chain: Chain::Verdicts, seq: 1, found, .. } if *found == first.id),
        "{err}"
    );
}
