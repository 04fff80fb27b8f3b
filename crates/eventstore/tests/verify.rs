//! `Ledger::verify_with` against real git: signatures and their windows, the notes' crash
//! window, the camera registry, and replace refs (the tamper suite with the real binary is
//! `tests/e2e/tamper.rs`).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use camledger_eventstore::sign::{AllowedSigner, AllowedSigners, SigningKey};
use camledger_eventstore::verify::{CameraRegistry, Chain, Rule, VerifyOptions};
use camledger_eventstore::{Ledger, LedgerConfig, Verdict};
use common::{image, new_event};

fn git(git_dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("--git-dir").arg(git_dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8").trim_end().to_owned()
}

fn verdict(seq: u64, id: &str) -> Verdict {
    Verdict {
        event_seq: seq,
        event_id: id.to_owned(),
        spam: seq.is_multiple_of(2),
        reasons: if seq.is_multiple_of(2) { vec!["classifier".into()] } else { vec![] },
        scores: [("classifier".to_owned(), 0.25)].into_iter().collect(),
        near_duplicate_of: None,
        model_sha256: "ab".repeat(32),
        processor_version: "test-1".into(),
        perceptual_hash: None,
    }
}

/// A ledger of `n` events by cam-1, signed with `key` when given; returns it and the event ids.
async fn ledger(dir: &Path, n: u64, key: Option<Arc<SigningKey>>) -> (Ledger, Vec<String>) {
    let ledger = Ledger::open(dir, LedgerConfig { signing_key: key, ..LedgerConfig::default() }).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(writer.append(new_event("cam-1", image(i, 500))).await.expect("append").id);
    }
    writer.shutdown().await;
    (ledger, ids)
}

fn signers(key: &SigningKey, valid_before: Option<i64>) -> AllowedSigners {
    AllowedSigners {
        signers: vec![AllowedSigner {
            principal: "ledger".into(),
            key: key.public_key().clone(),
            valid_after: None,
            valid_before,
        }],
    }
}

fn with_signers(signers: AllowedSigners) -> VerifyOptions {
    VerifyOptions { allowed_signers: Some(signers), cameras: None }
}

#[tokio::test]
async fn a_signed_ledger_verifies_with_its_key_and_with_no_other() {
    let keys = tempfile::tempdir().expect("temp dir");
    let key = Arc::new(SigningKey::generate(&keys.path().join("ledger"), "ledger").expect("key"));
    let other = SigningKey::generate(&keys.path().join("other"), "other").expect("key");
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger(dir.path(), 3, Some(key.clone())).await;
    ledger.append_verdicts(&[verdict(1, &ids[0]), verdict(2, &ids[1])]).expect("verdicts");

    let report = ledger.verify_with(&with_signers(signers(&key, None)), |_, _| {}).expect("verifies");
    assert_eq!((report.events, report.verdicts, report.notes_through), (3, 2, 2));
    assert_eq!(report.signatures, 3 + 2 + 1, "every event, verdict and notes commit");

    let err = ledger.verify_with(&with_signers(signers(&other, None)), |_, _| {}).expect_err("another key");
    assert_eq!(
        (err.chain(), err.seq(), err.commit(), err.rule()),
        (Chain::Events, 3, ids[2].as_str(), Rule::Signature)
    );
    assert!(err.detail().contains("is not in the allowed signers"), "{err}");

    let expired = signers(&key, Some(1_000_000_000));
    let err = ledger.verify_with(&with_signers(expired), |_, _| {}).expect_err("a key that expired in 2001");
    assert_eq!(err.rule(), Rule::Signature);
    assert!(err.detail().contains("was not valid at"), "{err}");
}

#[tokio::test]
async fn notes_may_lag_behind_the_last_verdict_write_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger(dir.path(), 3, None).await;
    let git_dir = ledger.git_dir();
    ledger.append_verdicts(&[verdict(1, &ids[0])]).expect("verdicts");
    let first_notes = git(&git_dir, &["rev-parse", "refs/notes/verdicts"]);
    // The second write in a later second, so the two writes are told apart.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ledger.append_verdicts(&[verdict(2, &ids[1]), verdict(3, &ids[2])]).expect("verdicts");

    // A crash between the two ref updates of the second write.
    git(&git_dir, &["update-ref", "refs/notes/verdicts", &first_notes]);
    let report = ledger.verify(|_, _| {}).expect("the crash window verifies");
    assert_eq!((report.verdicts, report.notes_through), (3, 1));

    // No notes at all: the first write's verdict lacks its note too.
    git(&git_dir, &["update-ref", "-d", "refs/notes/verdicts"]);
    let err = ledger.verify(|_, _| {}).expect_err("notes lag two writes");
    assert_eq!((err.chain(), err.seq(), err.rule()), (Chain::Verdicts, 1, Rule::Notes), "{err}");

    // The next write repairs the notes.
    ledger.repair_verdict_notes().expect("repair");
    assert_eq!(ledger.verify(|_, _| {}).expect("repaired").notes_through, 3);
}

#[tokio::test]
async fn events_from_unknown_or_revoked_cameras_fail_with_the_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger(dir.path(), 2, None).await;
    let registry = |cameras: &[(&str, Option<time::OffsetDateTime>)]| {
        let mut registry = CameraRegistry::default();
        for (id, revoked_at) in cameras {
            registry.insert(id, *revoked_at);
        }
        VerifyOptions { allowed_signers: None, cameras: Some(registry) }
    };
    ledger.verify_with(&registry(&[("cam-1", None)]), |_, _| {}).expect("a registered camera");
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    ledger.verify_with(&registry(&[("cam-1", Some(later))]), |_, _| {}).expect("revoked after its events");

    let err = ledger.verify_with(&registry(&[("cam-2", None)]), |_, _| {}).expect_err("unknown");
    assert_eq!((err.seq(), err.commit(), err.rule()), (2, ids[1].as_str(), Rule::CameraUnknown));
    let err = ledger
        .verify_with(&registry(&[("cam-1", Some(time::OffsetDateTime::UNIX_EPOCH))]), |_, _| {})
        .expect_err("revoked before its events");
    assert_eq!(err.rule(), Rule::CameraRevoked, "{err}");
}

#[tokio::test]
async fn readers_do_not_follow_a_replace_ref_and_verify_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger(dir.path(), 2, None).await;
    let git_dir = ledger.git_dir();
    // Event 2's commit replaced by event 1's for everyone who follows replace refs.
    git(&git_dir, &["replace", &ids[1], &ids[0]]);
    assert_eq!(
        git(&git_dir, &["rev-parse", &format!("{}^{{tree}}", ids[1])]),
        git(&git_dir, &["rev-parse", &format!("{}^{{tree}}", ids[0])])
    );

    let reopened = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens");
    assert_eq!(reopened.event(2).expect("event 2").record.seq, 2, "the real event 2");
    assert_eq!(reopened.event_by_id(&ids[1]).expect("by id").record.seq, 2);
    let err = reopened.verify(|_, _| {}).expect_err("a replace ref");
    assert_eq!((err.chain(), err.rule()), (Chain::Repository, Rule::Replace));
    assert!(err.detail().contains(&format!("refs/replace/{}", ids[1])), "{err}");
}

#[tokio::test]
async fn a_verdict_breaking_a_field_rule_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ledger, ids) = ledger(dir.path(), 2, None).await;
    ledger.append_verdicts(&[verdict(1, &ids[0]), verdict(2, &ids[1])]).expect("verdicts");
    let git_dir = ledger.git_dir();
    // Verdict 2 again, with a reason that is not [a-z_]{1,32}, committed as camledger would.
    let json = git(&git_dir, &["cat-file", "blob", "refs/heads/verdicts:verdict.json"]);
    let forged = json.replace("\"reasons\":[\"classifier\"]", "\"reasons\":[\"Bad Reason\"]");
    assert_ne!(forged, json);
    let file = dir.path().join("verdict.json");
    std::fs::write(&file, forged).expect("write");
    let blob = git(&git_dir, &["hash-object", "-w", file.to_str().expect("utf-8")]);
    std::fs::write(&file, format!("100644 blob {blob}\tverdict.json\n")).expect("write");
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .arg("mktree")
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("mktree");
    let tree = String::from_utf8(out.stdout).expect("utf8");
    let message = git(&git_dir, &["log", "-1", "--format=%B", "refs/heads/verdicts"]);
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&git_dir)
        .args(["commit-tree", tree.trim(), "-p", "refs/heads/verdicts~1", "-m", &message])
        .envs([("GIT_AUTHOR_NAME", "camledger"), ("GIT_COMMITTER_NAME", "camledger")])
        .envs([("GIT_AUTHOR_EMAIL", "camledger.local"), ("GIT_COMMITTER_EMAIL", "camledger.local")])
        .envs([("GIT_AUTHOR_DATE", "1800000000 +0000"), ("GIT_COMMITTER_DATE", "1800000000 +0000")])
        .output()
        .expect("commit-tree");
    let commit = String::from_utf8(out.stdout).expect("utf8");
    git(&git_dir, &["update-ref", "refs/heads/verdicts", commit.trim()]);

    let err = ledger.verify(|_, _| {}).expect_err("a bad reason");
    assert_eq!((err.chain(), err.seq(), err.rule()), (Chain::Verdicts, 2, Rule::Record), "{err}");
    assert!(err.detail().contains("reasons must match"), "{err}");
}
