//! Signed commits, checked by stock `git verify-commit`, and the one publish path shared by
//! events, verdicts and notes.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use camledger_eventstore::sign::{AllowedSigner, AllowedSigners, SigningKey};
use camledger_eventstore::{append, verdict, Ledger, LedgerConfig, Verdict, NOTES_REF, VERDICTS_REF};
use common::{image, new_event, temporary_packs};

fn run_git(git_dir: &Path, args: &[&str]) -> Output {
    Command::new("git").arg("--git-dir").arg(git_dir).args(args).output().expect("git runs")
}

fn git(git_dir: &Path, args: &[&str]) -> String {
    let out = run_git(git_dir, args);
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn key(dir: &Path, name: &str) -> Arc<SigningKey> {
    Arc::new(SigningKey::generate(&dir.join("keys").join(name), "camledger test").expect("key"))
}

/// An allowed-signers file trusting `key` from an hour ago on.
fn allowed_signers_file(dir: &Path, key: &SigningKey) -> (std::path::PathBuf, AllowedSigners) {
    let signer = AllowedSigner {
        principal: "ledger@camledger".into(),
        key: key.public_key().clone(),
        valid_after: Some(now() - 3600),
        valid_before: None,
    };
    let signers = AllowedSigners { signers: vec![signer] };
    let path = dir.join(format!("allowed_signers-{}", key.fingerprint().replace(['/', '+', ':'], "_")));
    std::fs::write(&path, signers.to_text()).expect("allowed signers file");
    (path, signers)
}

/// Whether stock git accepts the commit's signature with `allowed` as its allowed signers.
fn git_verifies(git_dir: &Path, allowed: &Path, id: &str) -> bool {
    let config = format!("gpg.ssh.allowedSignersFile={}", allowed.display());
    run_git(git_dir, &["-c", "gpg.format=ssh", "-c", &config, "verify-commit", id]).status.success()
}

fn verdict_for(seq: u64, id: &str) -> Verdict {
    let spam = seq.is_multiple_of(2);
    Verdict {
        event_seq: seq,
        event_id: id.to_owned(),
        spam,
        reasons: if spam { vec!["classifier".into()] } else { vec![] },
        scores: [("classifier".to_owned(), 0.5)].into_iter().collect(),
        near_duplicate_of: None,
        model_sha256: "ab".repeat(32),
        processor_version: "test-1".into(),
        perceptual_hash: None,
    }
}

/// Every commit of the three chains, newest first per chain.
fn all_commits(git_dir: &Path) -> Vec<String> {
    git(git_dir, &["rev-list", "refs/heads/events", VERDICTS_REF, NOTES_REF]).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn every_event_verdict_and_notes_commit_is_signed_and_stock_git_verifies_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = key(dir.path(), "ledger");
    let config = LedgerConfig { signing_key: Some(Arc::clone(&key)), ..LedgerConfig::default() };
    let ledger = Ledger::open(&dir.path().join("data"), config.clone()).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let mut ids = Vec::new();
    for n in [1, 2, 1] {
        let mut event = new_event("cam-1", image(n, 2000));
        event.idempotency_key = Some(format!("key-{}", ids.len()));
        ids.push(writer.append(event).await.expect("append").id);
    }
    ledger.append_verdicts(&[verdict_for(1, &ids[0])]).expect("first verdict");
    ledger.append_verdicts(&[verdict_for(2, &ids[1]), verdict_for(3, &ids[2])]).expect("two more verdicts");
    writer.shutdown().await;

    let git_dir = ledger.git_dir();
    assert_eq!(git(&git_dir, &["rev-parse", "refs/heads/events"]).trim(), ids[2], "the acknowledged id is the head");
    let commits = all_commits(&git_dir);
    assert_eq!(commits.len(), 3 + 3 + 2, "three events, three verdicts, two notes commits");
    let (allowed_path, allowed) = allowed_signers_file(dir.path(), &key);
    for id in &commits {
        let bytes = git(&git_dir, &["cat-file", "commit", id]);
        let committer = bytes.lines().find(|l| l.starts_with("committer ")).expect("committer");
        let after = bytes.split_once(&format!("{committer}\n")).expect("committer line").1;
        assert!(after.starts_with("gpgsig -----BEGIN SSH SIGNATURE-----\n"), "gpgsig follows committer: {bytes}");
        assert!(git_verifies(&git_dir, &allowed_path, id), "git verify-commit accepts {id}:\n{bytes}");
        assert_eq!(allowed.verify_commit(bytes.as_bytes(), now()), Ok("ledger@camledger"), "{id}");
    }

    // The auditor's one-liner of docs/event-format.md, section 10: every commit is good ("G").
    let signers = format!("gpg.ssh.allowedSignersFile={}", allowed_path.display());
    let log = git(
        &git_dir,
        &["-c", "gpg.format=ssh", "-c", &signers, "log", "--format=%G?", "refs/heads/events", VERDICTS_REF, NOTES_REF],
    );
    assert_eq!(log, "G\n".repeat(commits.len()), "git log %G? shows a good signature on every commit");

    // Another key's allowed-signers file: stock git refuses every commit.
    let (stranger, _) = allowed_signers_file(dir.path(), &self::key(dir.path(), "stranger"));
    assert!(commits.iter().all(|id| !git_verifies(&git_dir, &stranger, id)), "signed by the ledger's key only");

    git(&git_dir, &["fsck", "--full", "--strict", "--no-dangling"]);
    assert_eq!(ledger.verify(|_, _| {}).expect("events verify").events, 3);
    assert_eq!(ledger.verify_verdicts(|_, _| {}).expect("verdicts verify"), 3);
    let note = git(&git_dir, &["notes", "--ref=verdicts", "show", &ids[1]]);
    let verdict_id = ledger.verdict(2).expect("read").expect("judged").id;
    assert!(note.contains(&format!("Verdict-Commit: {verdict_id}\n")), "the note names the signed commit: {note}");

    // A retry after a restart is answered from the index with the signed commit's id.
    let ledger = Ledger::open(&dir.path().join("data"), config).expect("reopens");
    let writer = ledger.start_writer().expect("writer restarts");
    let mut retry = new_event("cam-1", image(2, 2000));
    retry.idempotency_key = Some("key-1".into());
    let replayed = writer.append(retry).await.expect("replay");
    assert!(replayed.replayed);
    assert_eq!(replayed.id, ids[1]);
    writer.shutdown().await;
}

#[tokio::test]
async fn a_ledger_without_a_key_writes_unsigned_commits_that_still_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let first = writer.append(new_event("cam-1", image(1, 500))).await.expect("append").id;
    let second = writer.append(new_event("cam-1", image(2, 500))).await.expect("append").id;
    writer.shutdown().await;
    ledger.append_verdicts(&[verdict_for(1, &first), verdict_for(2, &second)]).expect("verdicts");

    let git_dir = ledger.git_dir();
    let commits = all_commits(&git_dir);
    assert_eq!(commits.len(), 2 + 2 + 1);
    let key = key(dir.path(), "unused");
    let (allowed, _) = allowed_signers_file(dir.path(), &key);
    for id in &commits {
        assert!(!git(&git_dir, &["cat-file", "commit", id]).contains("gpgsig"), "{id} is unsigned");
        assert!(!git_verifies(&git_dir, &allowed, id), "git verify-commit refuses an unsigned commit");
    }
    git(&git_dir, &["fsck", "--full", "--strict", "--no-dangling"]);
    assert_eq!(ledger.verify(|_, _| {}).expect("verifies").events, 2);
    assert_eq!(ledger.verify_verdicts(|_, _| {}).expect("verdicts verify"), 2);
}

/// Opens a signed ledger with `fail_fsync_after`, appends two events, judges the first, and
/// returns the fsync count just before judging the second.
async fn ledger_ready_for_a_second_verdict(
    dir: &Path,
    key: &Arc<SigningKey>,
    fail_fsync_after: Option<u64>,
) -> (Ledger, camledger_eventstore::EventWriter, Vec<String>, u64) {
    let config = LedgerConfig { signing_key: Some(Arc::clone(key)), fail_fsync_after, ..LedgerConfig::default() };
    let ledger = Ledger::open(dir, config).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let mut ids = Vec::new();
    for n in 1..=2 {
        ids.push(writer.append(new_event("cam-1", image(n, 3000))).await.expect("append").id);
    }
    ledger.append_verdicts(&[verdict_for(1, &ids[0])]).expect("first verdict");
    let before = ledger.fsync_count();
    (ledger, writer, ids, before)
}

#[tokio::test]
async fn a_failing_fsync_in_the_verdict_path_fails_it_and_poisons_the_event_writer_too() {
    let keys = tempfile::tempdir().expect("temp dir");
    let key = key(keys.path(), "ledger");
    // Count the fsyncs of one verdict append on a clean run.
    let clean = tempfile::tempdir().expect("temp dir");
    let (ledger, writer, ids, before) = ledger_ready_for_a_second_verdict(clean.path(), &key, None).await;
    ledger.append_verdicts(&[verdict_for(2, &ids[1])]).expect("second verdict");
    let per_append = ledger.fsync_count() - before;
    writer.shutdown().await;
    assert!(per_append >= 5, "pack, idx, pack dir, two ref locks, ref dirs: got {per_append}");

    // Fail each of them in turn: the same publish path as events, so the same outcome.
    for k in 0..per_append {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ledger, writer, ids, _) = ledger_ready_for_a_second_verdict(dir.path(), &key, Some(before + k)).await;
        let failed = ledger.append_verdicts(&[verdict_for(2, &ids[1])]);
        assert!(matches!(failed, Err(verdict::Error::Storage(_))), "fsync #{} failing: {failed:?}", before + k + 1);
        let again = ledger.append_verdicts(&[verdict_for(2, &ids[1])]);
        assert!(matches!(again, Err(verdict::Error::Storage(_))), "refused until restart: {again:?}");
        let event = writer.append(new_event("cam-1", image(9, 10))).await;
        assert!(matches!(event, Err(append::Error::Unavailable)), "the event writer is poisoned too: {event:?}");
        writer.shutdown().await;
        let leftovers = temporary_packs(dir.path());
        assert!(leftovers.is_empty(), "a failed publication leaves no temporary files: {leftovers:?}");

        // A restart finds a consistent ledger: the second verdict is there or not, and the
        // chains go on.
        let ledger =
            Ledger::open(dir.path(), LedgerConfig { signing_key: Some(Arc::clone(&key)), ..LedgerConfig::default() })
                .expect("reopens");
        let head = ledger.verdict_head().expect("head").expect("the first verdict is durable").event_seq;
        assert!(head == 1 || head == 2, "only the failed verdict may or may not be there: {head}");
        if head == 1 {
            ledger.append_verdicts(&[verdict_for(2, &ids[1])]).expect("judging again after restart");
        }
        let writer = ledger.start_writer().expect("writer restarts");
        writer.append(new_event("cam-1", image(3, 10))).await.expect("events go on");
        writer.shutdown().await;
        ledger
            .append_verdicts(&[verdict_for(3, &ledger.head().expect("head").expect("3").id)])
            .expect("verdicts go on");
        assert_eq!(ledger.verify_verdicts(|_, _| {}).expect("verdicts verify"), 3);
        git(&ledger.git_dir(), &["fsck", "--full", "--strict", "--no-dangling"]);
    }
}
