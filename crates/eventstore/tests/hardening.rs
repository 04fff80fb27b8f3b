//! Regression tests for crash leftovers and bounded arithmetic: what a SIGKILL at the wrong
//! moment leaves in the repository must not block the next start, and absurd seqs are a
//! clean "not found", not a false "corrupt ledger".

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use camledger_eventstore::{read, Ledger, LedgerConfig, NewEvent};

mod common;
use common::{image, new_event};

fn fsck(git_dir: &Path) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["fsck", "--full", "--strict", "--no-dangling"])
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git fsck: {}", String::from_utf8_lossy(&out.stderr));
}

fn open(dir: &Path) -> Ledger {
    Ledger::open(dir, LedgerConfig::default()).expect("ledger opens")
}

/// A pid that no process has: far above `pid_max` on Linux.
const DEAD_PID: u32 = 999_999_999;

fn plant_crash_leftovers(git_dir: &Path) {
    let refs = git_dir.join("refs/heads");
    let head = std::fs::read_to_string(refs.join("events")).expect("events ref");
    // What a SIGKILL between gix creating the lock and renaming it left behind.
    std::fs::write(refs.join("events.lock"), &head).expect("plant ref lock");
    std::fs::write(refs.join("verdicts.lock"), &head).expect("plant verdict ref lock");
    std::fs::write(git_dir.join("packed-refs.lock"), "").expect("plant packed-refs lock");
    let packs = git_dir.join("objects/pack");
    // A temporary pack of a dead writer (our naming: tmp_pack_<pid>_<n>) and one of git's.
    std::fs::write(packs.join(format!("tmp_pack_{DEAD_PID}_0")), b"PACK half").expect("plant tmp pack");
    std::fs::write(packs.join(format!("tmp_idx_{DEAD_PID}_1")), b"half").expect("plant tmp idx");
    std::fs::write(packs.join("tmp_pack_x"), b"PACK half").expect("plant git tmp pack");
    // A pack renamed into place whose index never was: copy a real pack without its idx.
    let real = std::fs::read_dir(&packs)
        .expect("pack dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .expect("a pack exists");
    std::fs::copy(&real, packs.join("pack-0123456789012345678901234567890123456789.pack")).expect("plant pack");
}

#[tokio::test]
async fn a_stale_events_lock_left_by_a_crash_does_not_block_the_next_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    writer.append(new_event("cam-1", image(1, 1000))).await.expect("first append");
    writer.shutdown().await;
    plant_crash_leftovers(&ledger.git_dir());

    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer restarts");
    let appended = writer.append(new_event("cam-1", image(2, 1000))).await.expect("append after the crash");
    assert_eq!(appended.seq, 2);
    writer.shutdown().await;
    let git_dir = ledger.git_dir();
    assert!(!git_dir.join("refs/heads/events.lock").exists(), "events.lock removed");
    assert!(!git_dir.join("refs/heads/verdicts.lock").exists(), "stale verdicts.lock removed");
    assert!(!git_dir.join("packed-refs.lock").exists(), "packed-refs.lock removed");
    fsck(&git_dir);
}

#[tokio::test]
async fn a_pack_without_idx_and_dead_temporary_packs_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    writer.append(new_event("cam-1", image(1, 1000))).await.expect("first append");
    writer.shutdown().await;
    let packs = ledger.git_dir().join("objects/pack");
    plant_crash_leftovers(&ledger.git_dir());
    // Git's own temporary names carry no pid: removed once old enough to be surely dead.
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(packs.join("tmp_pack_x"))
        .expect("open")
        .set_modified(old)
        .expect("mtime");

    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer restarts");
    let mut left: Vec<String> = std::fs::read_dir(&packs)
        .expect("pack dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tmp_") || n.starts_with("pack-0123456789"))
        .collect();
    left.sort();
    assert_eq!(left, Vec::<String>::new(), "crash leftovers were removed");
    writer.append(new_event("cam-1", image(2, 1000))).await.expect("append");
    writer.shutdown().await;
    fsck(&ledger.git_dir());
}

#[tokio::test]
async fn an_absurd_seq_is_not_found_rather_than_a_corrupt_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    writer.append(new_event("cam-1", image(1, 1000))).await.expect("append");
    writer.shutdown().await;
    // (seq - 1) * 20 wraps to 0 for this seq: it read event 1's record and called it corrupt.
    for seq in [4_611_686_018_427_387_905u64, u64::MAX, u64::MAX / 20 + 2, 2] {
        match ledger.event(seq) {
            Err(read::Error::NotFound(_)) => {}
            other => panic!("seq {seq}: expected NotFound, got {other:?}"),
        }
        assert!(matches!(ledger.image(seq), Err(read::Error::NotFound(_))), "image({seq})");
    }
}

#[tokio::test]
async fn idempotency_keys_expire_after_the_retention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LedgerConfig { idempotency_retention: Duration::from_secs(2), ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config.clone()).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let keyed = |n: u64| NewEvent { idempotency_key: Some("k-1".into()), ..new_event("cam-1", image(n, 500)) };
    let first = writer.append(keyed(1)).await.expect("append");
    let retry = writer.append(keyed(1)).await.expect("retry inside the window");
    assert_eq!((retry.seq, retry.replayed), (first.seq, true), "a retry inside the window gets the first answer");
    writer.shutdown().await;

    // Past the retention the key is free again, also after a restart (rebuilt or not).
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let writer = Ledger::open(dir.path(), config).expect("opens").start_writer().expect("restarts");
    let later = writer.append(keyed(2)).await.expect("the key answers no more");
    assert_eq!((later.seq, later.replayed), (2, false));
    let retry = writer.append(keyed(2)).await.expect("retry of the new use");
    assert_eq!((retry.seq, retry.replayed), (2, true));
    writer.shutdown().await;
    // The trailer in git stays.
    assert_eq!(ledger.event(1).expect("event 1").trailers.idempotency_key.as_deref(), Some("k-1"));
}

fn pack_count(git_dir: &Path) -> usize {
    std::fs::read_dir(git_dir.join("objects/pack"))
        .expect("pack dir")
        .filter(|e| e.as_ref().expect("entry").path().extension().is_some_and(|x| x == "pack"))
        .count()
}

#[tokio::test]
async fn a_merge_that_cannot_fit_on_disk_is_not_attempted_after_every_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 2 packs allowed, one batch per append: every batch past the second wants a merge.
    let config = LedgerConfig { max_packs: 2, max_batch: 1, fake_free_space: Some(1 << 20), ..Default::default() };
    let ledger = Ledger::open(dir.path(), config).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let mut fsyncs_per_append = Vec::new();
    for n in 0..8 {
        let before = ledger.fsync_count();
        writer.append(new_event("cam-1", image(n, 2_000))).await.expect("appends still succeed");
        // Let the consolidation thread act on the wake.
        tokio::time::sleep(Duration::from_millis(50)).await;
        fsyncs_per_append.push(ledger.fsync_count() - before);
    }
    writer.shutdown().await;
    // A batch costs a fixed number of fsyncs; a merge attempt would add its own.
    assert!(fsyncs_per_append.windows(2).all(|w| w[0] == w[1]), "{fsyncs_per_append:?}");
    assert_eq!(pack_count(&ledger.git_dir()), 8, "nothing merged, nothing half-written");
    let leftovers = std::fs::read_dir(ledger.git_dir().join("objects/pack"))
        .expect("pack dir")
        .filter(|e| e.as_ref().expect("entry").file_name().to_string_lossy().starts_with("tmp_"))
        .count();
    assert_eq!(leftovers, 0);
}

#[tokio::test]
async fn verify_reports_a_forged_head_with_an_absurd_seq_instead_of_aborting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    let first = writer.append(new_event("cam-1", image(1, 1000))).await.expect("append");
    writer.shutdown().await;
    // A head commit whose Seq trailer claims 2^62 + 1 (verify sized a Vec from it and aborted).
    let git_dir = ledger.git_dir();
    let run = |args: &[&str]| {
        let out = Command::new("git").arg("--git-dir").arg(&git_dir).args(args).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8").trim().to_owned()
    };
    let message = run(&["log", "-1", "--format=%B", &first.id])
        .replace("Event 1 from", "Event 4611686018427387905 from")
        .replace("Seq: 1\n", "Seq: 4611686018427387905\n");
    assert!(message.contains("Seq: 4611686018427387905"), "{message}");
    let tree = run(&["rev-parse", &format!("{}^{{tree}}", first.id)]);
    let forged = run(&["commit-tree", &tree, "-p", &first.id, "-m", &message]);
    run(&["update-ref", "refs/heads/events", &forged]);
    let report = ledger.verify(|_, _| {});
    assert!(
        matches!(&report, Err(camledger_eventstore::verify::Error::Broken { seq: 4_611_686_018_427_387_905, .. })),
        "{report:?}"
    );
}
