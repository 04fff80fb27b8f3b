//! Black-box tests of the ledger against real git: every test writes a real repository in its
//! own temp dir and checks it with the stock `git` CLI where it matters.

use std::path::Path;
use std::process::Command;

use camledger_eventstore::{append, EventRecord, EventWriter, Exif, Ledger, LedgerConfig, NewEvent};

mod common;
use common::{image, new_event, temporary_packs};

fn git(git_dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("git").arg("--git-dir").arg(git_dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn git_text(git_dir: &Path, args: &[&str]) -> String {
    String::from_utf8(git(git_dir, args)).expect("git prints UTF-8")
}

fn fsck(ledger: &Ledger) {
    git(&ledger.git_dir(), &["fsck", "--full", "--strict", "--no-dangling"]);
}

fn keyed(camera: &str, bytes: Vec<u8>, key: &str) -> NewEvent {
    NewEvent { idempotency_key: Some(key.to_owned()), ..new_event(camera, bytes) }
}

#[test]
fn ledger_and_writer_handles_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Ledger>();
    assert_send_sync::<EventWriter>();
}

fn open(dir: &Path) -> Ledger {
    Ledger::open(dir, LedgerConfig::default()).expect("ledger opens")
}

fn pack_count(ledger: &Ledger) -> usize {
    std::fs::read_dir(ledger.git_dir().join("objects/pack"))
        .expect("pack dir")
        .filter(|e| e.as_ref().expect("entry").path().extension().is_some_and(|x| x == "pack"))
        .count()
}

#[tokio::test]
async fn an_appended_event_reads_back_byte_identical_and_stock_git_accepts_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    assert_eq!(ledger.head().expect("head"), None, "a new ledger is empty");
    let writer = ledger.start_writer().expect("writer starts");
    let bytes = image(1, 100 * 1024);
    let mut event = new_event("cam-1", bytes.clone());
    event.exif = Some(Exif { make: Some("Canon".into()), model: Some("EOS \"R\"".into()), date_time_original: None });
    event.captured_at = Some("2026-11-22T05:04:05.5+02:00".into());

    let first = writer.append(event).await.expect("append");
    let second = writer.append(new_event("cam-2", image(2, 1000))).await.expect("append");

    assert_eq!((first.seq, second.seq), (1, 2));
    assert!(!first.replayed && first.duplicate_of.is_none());
    // Reads through the handle opened before the packs existed (gix refreshes on a miss).
    let (record, read_back) = ledger.image(1).expect("image");
    assert_eq!(read_back, bytes, "image bytes come back byte-identical");
    assert_eq!(record.captured_at.as_deref(), Some("2026-11-22T03:04:05.500000Z"));
    assert_eq!(record.exif.as_ref().and_then(|e| e.model.as_deref()), Some("EOS \"R\""));
    let stored = ledger.event_by_id(&second.id).expect("event by id");
    assert_eq!(stored.record.seq, 2);
    assert_eq!(stored.parent.as_deref(), Some(first.id.as_str()));
    let head = ledger.head().expect("head").expect("not empty");
    assert_eq!((head.seq, head.id.as_str()), (2, second.id.as_str()));
    let all: Vec<u64> = ledger.events_from(1).map(|e| e.expect("event").record.seq).collect();
    assert_eq!(all, vec![1, 2]);

    fsck(&ledger);
    let git_dir = ledger.git_dir();
    let subjects = git_text(&git_dir, &["log", "--format=%s|%an <%ae>|%cn", "refs/heads/events"]);
    assert_eq!(subjects, "Event 2 from cam-2|cam-2 <cam-2@camera.camledger>|camledger\nEvent 1 from cam-1|cam-1 <cam-1@camera.camledger>|camledger\n");
    let json = git(&git_dir, &["cat-file", "blob", &format!("{}:event.json", first.id)]);
    assert_eq!(json, record.to_canonical_json());
    assert_eq!(EventRecord::from_json(&json).expect("canonical"), record);
    let blob = git(&git_dir, &["cat-file", "blob", &format!("{}:image.jpg", first.id)]);
    assert_eq!(blob, bytes, "stock git reads the same image bytes");
    let trailers = git_text(&git_dir, &["log", "-1", "--format=%(trailers:only)", &first.id]);
    assert!(trailers.contains(&format!("Seq: 1\nCamera: cam-1\nSha256: {}\n", first.sha256)), "{trailers}");
    writer.shutdown().await;
    ledger.verify(|_, _| {}).expect("verifies");
}

#[tokio::test]
async fn concurrent_appends_from_many_tasks_get_gapless_seqs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.append(new_event(&format!("cam-{}", i % 20), image(i, 4096))).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task").expect("append").seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    writer.shutdown().await;
    let report = ledger.verify(|_, _| {}).expect("verifies");
    assert_eq!(report.events, 200);
    fsck(&ledger);
}

#[tokio::test]
async fn a_repeated_image_becomes_a_duplicate_event_sharing_one_blob() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.append(new_event("cam-1", image(7, 50_000))).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task").expect("append"));
    }
    let originals: Vec<_> = answers.iter().filter(|a| a.duplicate_of.is_none()).collect();
    assert_eq!(originals.len(), 1, "exactly one original");
    let first = originals[0].seq;
    assert!(answers
        .iter()
        .filter(|a| a.duplicate_of.is_some())
        .all(|a| a.duplicate_of == Some(first) && a.seq > first));
    let later = writer.append(new_event("cam-2", image(7, 50_000))).await.expect("append");
    assert_eq!(later.duplicate_of, Some(first), "dedupe spans batches");
    writer.shutdown().await;

    let git_dir = ledger.git_dir();
    let blobs: std::collections::HashSet<String> = (1..=11)
        .map(|seq| git_text(&git_dir, &["rev-parse", &format!("refs/heads/events~{}:image.jpg", 11 - seq)]))
        .collect();
    assert_eq!(blobs.len(), 1, "git stores the image once");
    ledger.verify(|_, _| {}).expect("verifies");
    fsck(&ledger);
}

#[tokio::test]
async fn an_idempotent_retry_gets_the_first_answer_even_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    // Two copies of one request racing into the same batch: one writes, one replays.
    let (a, b) = tokio::join!(
        writer.append(keyed("cam-1", image(1, 2000), "upload-1")),
        writer.append(keyed("cam-1", image(1, 2000), "upload-1"))
    );
    let (a, b) = (a.expect("append"), b.expect("append"));
    assert_eq!((a.seq, a.id.as_str()), (b.seq, b.id.as_str()));
    assert!(a.replayed != b.replayed, "exactly one of them wrote: {a:?} {b:?}");
    let first = if a.replayed { b } else { a };
    let in_session = writer.append(keyed("cam-1", image(1, 2000), "upload-1")).await.expect("retry");
    assert!(in_session.replayed);
    writer.shutdown().await;

    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer restarts");
    let retry = writer.append(keyed("cam-1", image(1, 2000), "upload-1")).await.expect("retry");
    assert_eq!((retry.seq, retry.id.as_str(), retry.replayed), (first.seq, first.id.as_str(), true));
    assert_eq!(retry.received_at, first.received_at);
    let reused = writer.append(keyed("cam-1", image(2, 2000), "upload-1")).await;
    assert!(matches!(reused, Err(append::Error::IdempotencyKeyReused { seq: 1 })), "{reused:?}");
    let other_camera = writer.append(keyed("cam-2", image(3, 2000), "upload-1")).await.expect("append");
    assert!(!other_camera.replayed, "keys are per camera");
    assert_eq!(ledger.head().expect("head").expect("not empty").seq, 2, "retries wrote nothing");
    let bad = writer.append(keyed("cam-1", image(4, 10), "has space")).await;
    assert!(matches!(bad, Err(append::Error::InvalidIdempotencyKey)));
    writer.shutdown().await;
}

#[tokio::test]
async fn deleted_indexes_are_rebuilt_from_git() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    for i in 0..5 {
        writer.append(keyed("cam-1", image(i, 3000), &format!("k{i}"))).await.expect("append");
    }
    writer.shutdown().await;
    std::fs::remove_dir_all(dir.path().join("index")).expect("delete indexes");

    let ledger = open(dir.path());
    assert_eq!(ledger.event(3).expect("reads without seq.idx").record.seq, 3);
    let seqs: Vec<u64> = ledger.events_from(2).map(|e| e.expect("iterates without seq.idx").record.seq).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5]);
    let writer = ledger.start_writer().expect("writer restarts");
    let retry = writer.append(keyed("cam-1", image(2, 3000), "k2")).await.expect("retry");
    assert_eq!((retry.seq, retry.replayed), (3, true));
    let dup = writer.append(new_event("cam-9", image(4, 3000))).await.expect("append");
    assert_eq!((dup.seq, dup.duplicate_of), (6, Some(5)));
    writer.shutdown().await;
    assert_eq!(std::fs::metadata(dir.path().join("index/seq.idx")).expect("seq.idx").len(), 6 * 20);
}

#[tokio::test]
async fn an_index_left_behind_by_a_crash_is_caught_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    for i in 0..4 {
        writer.append(keyed("cam-1", image(i, 3000), &format!("k{i}"))).await.expect("append");
    }
    writer.shutdown().await;
    // A crash between the ref update and seq.idx: the index misses the last events.
    let seq_idx = dir.path().join("index/seq.idx");
    let file = std::fs::OpenOptions::new().write(true).open(&seq_idx).expect("open");
    file.set_len(2 * 20 + 7).expect("truncate mid-record");
    drop(file);

    let ledger = open(dir.path());
    assert_eq!(ledger.event(4).expect("falls back to the chain").record.seq, 4);
    let writer = ledger.start_writer().expect("writer restarts");
    let next = writer.append(new_event("cam-1", image(10, 100))).await.expect("append");
    assert_eq!(next.seq, 5);
    writer.shutdown().await;
    assert_eq!(std::fs::metadata(&seq_idx).expect("seq.idx").len(), 5 * 20);
    let seqs: Vec<u64> = ledger.events_from(1).map(|e| e.expect("event").record.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
}

/// `git commit-tree` with the camera's author identity, as a careful forger would.
fn commit_as_camera(g: &Path, tree: &str, parent: &str, message: &str, date: &str) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(g)
        .args(["commit-tree", tree, "-p", parent, "-m", message])
        .env("GIT_AUTHOR_NAME", "cam-1")
        .env("GIT_AUTHOR_EMAIL", "cam-1@camera.camledger")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_NAME", "camledger")
        .env("GIT_COMMITTER_EMAIL", "camledger.local")
        .env("GIT_COMMITTER_DATE", date)
        .output()
        .expect("commit-tree");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf8")
}

async fn three_events(dir: &Path) -> (Ledger, Vec<String>) {
    let ledger = open(dir);
    let writer = ledger.start_writer().expect("writer starts");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(writer.append(new_event("cam-1", image(i, 2000))).await.expect("append").id);
    }
    writer.shutdown().await;
    (ledger, ids)
}

#[tokio::test]
async fn verify_reports_the_first_forged_event_precisely() {
    // Each case forges the head commit with stock git and names what verify must report.
    type Forge = fn(&Path, &[String]) -> String;
    let cases: Vec<(&str, Forge, &str)> = vec![
        (
            "commit without trailers",
            |g, ids| {
                let tree = git_text(g, &["rev-parse", &format!("{}^{{tree}}", ids[2])]);
                git_text(g, &["commit-tree", tree.trim(), "-p", &ids[1], "-m", "forged"])
            },
            "trailers",
        ),
        (
            "image replaced, message kept",
            |g, ids| {
                let json = git(g, &["cat-file", "blob", &format!("{}:event.json", ids[2])]);
                let fake = std::env::temp_dir().join(format!("fake-{}", std::process::id()));
                std::fs::write(&fake, b"not the original image").expect("write");
                let blob = git_text(g, &["hash-object", "-w", fake.to_str().expect("utf8")]);
                std::fs::write(&fake, &json).expect("write");
                let json_blob = git_text(g, &["hash-object", "-w", fake.to_str().expect("utf8")]);
                let listing =
                    format!("100644 blob {}\tevent.json\n100644 blob {}\timage.jpg\n", json_blob.trim(), blob.trim());
                std::fs::write(&fake, listing).expect("write");
                let tree = Command::new("git")
                    .arg("--git-dir")
                    .arg(g)
                    .arg("mktree")
                    .stdin(std::fs::File::open(&fake).expect("open"))
                    .output()
                    .expect("mktree");
                let message = git_text(g, &["log", "-1", "--format=%B", &ids[2]]);
                let date = git_text(g, &["log", "-1", "--format=%ad", "--date=raw", &ids[2]]);
                let tree = String::from_utf8(tree.stdout).expect("utf8");
                // A perfect forgery but for the image: same author, time and message.
                commit_as_camera(g, tree.trim(), &ids[1], message.trim_end(), date.trim())
            },
            "image is 22 bytes",
        ),
        (
            "event.json re-serialised with whitespace",
            |g, ids| {
                let json = git(g, &["cat-file", "blob", &format!("{}:event.json", ids[2])]);
                let pretty = String::from_utf8(json).expect("utf8").replace(",\"", ", \"");
                let fake = std::env::temp_dir().join(format!("pretty-{}", std::process::id()));
                std::fs::write(&fake, pretty).expect("write");
                let json_blob = git_text(g, &["hash-object", "-w", fake.to_str().expect("utf8")]);
                let image_blob = git_text(g, &["rev-parse", &format!("{}:image.jpg", ids[2])]);
                std::fs::write(
                    &fake,
                    format!(
                        "100644 blob {}\tevent.json\n100644 blob {}\timage.jpg\n",
                        json_blob.trim(),
                        image_blob.trim()
                    ),
                )
                .expect("write");
                let out = Command::new("git")
                    .arg("--git-dir")
                    .arg(g)
                    .arg("mktree")
                    .stdin(std::fs::File::open(&fake).expect("open"))
                    .output()
                    .expect("mktree");
                let tree = String::from_utf8(out.stdout).expect("utf8");
                let message = git_text(g, &["log", "-1", "--format=%B", &ids[2]]);
                let date = git_text(g, &["log", "-1", "--format=%ad", "--date=raw", &ids[2]]);
                commit_as_camera(g, tree.trim(), &ids[1], message.trim_end(), date.trim())
            },
            "not in canonical form",
        ),
        (
            "event 3 dropped, event 2 re-parented",
            |g, ids| {
                let tree = git_text(g, &["rev-parse", &format!("{}^{{tree}}", ids[2])]);
                let message = git_text(g, &["log", "-1", "--format=%B", &ids[2]]);
                let date = git_text(g, &["log", "-1", "--format=%ad", "--date=raw", &ids[2]]);
                commit_as_camera(g, tree.trim(), &ids[0], message.trim_end(), date.trim())
            },
            "event.json says seq 1, the chain position is seq 2",
        ),
    ];
    for (name, forge, expected) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ledger, ids) = three_events(dir.path()).await;
        let git_dir = ledger.git_dir();
        let forged = forge(&git_dir, &ids);
        git(&git_dir, &["update-ref", "refs/heads/events", forged.trim()]);
        let err = ledger.verify(|_, _| {}).expect_err(name);
        let text = err.to_string();
        assert!(text.contains(expected), "{name}: {text}");
        assert!(text.contains("FAILED events seq"), "{name}: names the event: {text}");
    }
}

#[tokio::test]
async fn a_writer_refuses_to_append_onto_a_ref_moved_behind_its_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    let first = writer.append(new_event("cam-1", image(1, 100))).await.expect("append");
    writer.append(new_event("cam-1", image(2, 100))).await.expect("append");
    git(&ledger.git_dir(), &["update-ref", "refs/heads/events", &first.id]);
    let result = writer.append(new_event("cam-1", image(3, 100))).await;
    assert!(matches!(result, Err(append::Error::Unavailable)), "{result:?}");
    assert_eq!(ledger.head().expect("head").expect("not empty").id, first.id, "the CAS refused to move the ref");
    writer.shutdown().await;
}

#[tokio::test]
async fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    assert!(matches!(open(dir.path()).start_writer(), Err(camledger_eventstore::open::Error::Locked)));
    writer.shutdown().await;
    let again = ledger.start_writer().expect("the lock is released by shutdown");
    again.shutdown().await;
}

async fn append_two(config: LedgerConfig, dir: &Path) -> (Ledger, EventWriter, Result<(), append::Error>) {
    let ledger = Ledger::open(dir, config).expect("ledger opens");
    let writer = ledger.start_writer().expect("writer starts");
    writer.append(new_event("cam-1", image(1, 5000))).await.expect("first append");
    let second = writer.append(new_event("cam-1", image(2, 5000))).await.map(|_| ());
    (ledger, writer, second)
}

#[tokio::test]
async fn a_failing_fsync_acknowledges_nothing_and_poisons_the_writer() {
    // Count the fsyncs of "open, start, one append" and of one more batch on a clean run.
    let clean = tempfile::tempdir().expect("temp dir");
    let ledger = Ledger::open(clean.path(), LedgerConfig::default()).expect("opens");
    let writer = ledger.start_writer().expect("starts");
    writer.append(new_event("cam-1", image(1, 5000))).await.expect("append");
    let after_first = ledger.fsync_count();
    writer.append(new_event("cam-1", image(2, 5000))).await.expect("append");
    let per_batch = ledger.fsync_count() - after_first;
    writer.shutdown().await;
    assert!(per_batch >= 6, "pack, idx, pack dir, ref, ref dir, seq.idx: got {per_batch}");

    // Fail each fsync of the second batch in turn.
    for k in 0..per_batch {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LedgerConfig { fail_fsync_after: Some(after_first + k), ..LedgerConfig::default() };
        let (_, writer, second) = append_two(config, dir.path()).await;
        assert!(
            matches!(second, Err(append::Error::Unavailable)),
            "fsync #{} failing must not ack: {second:?}",
            after_first + k + 1
        );
        let third = writer.append(new_event("cam-1", image(3, 10))).await;
        assert!(matches!(third, Err(append::Error::Unavailable)), "poisoned: {third:?}");
        writer.shutdown().await;
        let leftovers = temporary_packs(dir.path());
        assert!(leftovers.is_empty(), "a failed batch leaves no temporary files: {leftovers:?}");

        // A restart (no injection) finds a consistent ledger and goes on gaplessly.
        let ledger = open(dir.path());
        let head = ledger.head().expect("head").expect("event 1 is there").seq;
        assert!(head == 1 || head == 2, "only the unacknowledged event may or may not be there");
        let writer = ledger.start_writer().expect("writer restarts");
        let next = writer.append(new_event("cam-1", image(4, 10))).await.expect("append after restart");
        assert_eq!(next.seq, head + 1);
        writer.shutdown().await;
        ledger.verify(|_, _| {}).expect("verifies");
        fsck(&ledger);
    }
}

#[tokio::test]
async fn pack_consolidation_keeps_the_pack_count_bounded_and_events_readable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LedgerConfig { max_packs: 4, max_batch: 1, ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let mut max_seen = 0;
    for i in 0..60 {
        writer.append(new_event("cam-1", image(i % 50, 4000))).await.expect("append");
        max_seen = max_seen.max(pack_count(&ledger));
        // Reads keep working while packs are merged and removed underneath.
        ledger.image(i / 2 + 1).expect("readable during consolidation");
    }
    writer.shutdown().await;
    // Consolidation runs beside the writer, so more packs may exist in between (how many
    // depends on the machine's load); once the writer has stopped, the bound holds.
    assert!(max_seen >= 2, "the test wrote several packs");
    assert!(pack_count(&ledger) <= 4, "at most max_packs packs once the writer has stopped");
    let reopened = open(dir.path());
    for seq in 1..=60 {
        reopened.image(seq).expect("every event readable after consolidation");
    }
    let report = reopened.verify(|_, _| {}).expect("verifies");
    assert_eq!((report.events, report.duplicates), (60, 10));
    fsck(&reopened);
}

/// Objects in each pack, from its index's header (the last fanout entry).
fn objects_per_pack(ledger: &Ledger) -> Vec<u32> {
    std::fs::read_dir(ledger.git_dir().join("objects/pack"))
        .expect("pack dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .map(|p| {
            let idx = std::fs::read(&p).expect("index reads");
            u32::from_be_bytes(idx[8 + 255 * 4..8 + 256 * 4].try_into().expect("4 bytes"))
        })
        .collect()
}

#[tokio::test]
async fn a_pack_merge_copies_at_most_max_merge_objects() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Four objects per event, one batch (one pack) per append; a merge may copy 40 objects
    // (ten events), so a pack of more than 20 is never merged again.
    let config = LedgerConfig { max_packs: 4, max_batch: 1, max_merge_objects: 40, ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    for i in 0..60 {
        // Ten repeated images: their blobs are in two packs, and a merge copies them once.
        writer.append(new_event("cam-1", image(i % 50, 3000))).await.expect("append");
    }
    writer.shutdown().await;
    let objects = objects_per_pack(&ledger);
    assert!(objects.iter().all(|&n| n <= 40), "no pack holds more than one merge may copy: {objects:?}");
    let sealed = objects.iter().filter(|&&n| n > 20).count();
    assert!(sealed >= 2, "merges happened up to the bound: {objects:?}");
    assert!(objects.len() <= 4 + sealed, "max_packs bounds the packs that can still be merged: {objects:?}");
    let reopened = open(dir.path());
    for seq in 1..=60 {
        reopened.image(seq).expect("every event readable after consolidation");
    }
    let report = reopened.verify(|_, _| {}).expect("verifies");
    assert_eq!((report.events, report.duplicates), (60, 10));
    fsck(&reopened);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = open(dir.path());
    let writer = ledger.start_writer().expect("writer starts");
    let mut bad_camera = new_event("kamera-ü", image(1, 10));
    let r = writer.append(bad_camera.clone()).await;
    assert!(matches!(r, Err(append::Error::InvalidCamera)), "{r:?}");
    bad_camera.camera = "cam-1".into();
    bad_camera.captured_at = Some("yesterday".into());
    assert!(matches!(writer.append(bad_camera).await, Err(append::Error::InvalidCapturedAt)));
    let mut gif = new_event("cam-1", image(1, 10));
    gif.extension = "gif".into();
    assert!(matches!(writer.append(gif).await, Err(append::Error::UnsupportedImage { .. })));
    assert_eq!(ledger.head().expect("head"), None);
    writer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_in_other_threads_stay_correct_while_packs_are_merged_under_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LedgerConfig { max_packs: 3, max_batch: 4, ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (ledger, stop) = (ledger.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(head) = ledger.head().expect("head reads during consolidation") else { continue };
                for seq in [1, head.seq / 2 + 1, head.seq] {
                    let (record, bytes) = ledger.image(seq).expect("image reads during consolidation");
                    assert_eq!((record.seq, bytes.len()), (seq, 3000), "image() checked the bytes against sha256");
                    reads += 1;
                }
            }
            reads
        })
    };
    let tasks: Vec<_> = (1..=300u64)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move { (i, writer.append(new_event("cam-r", image(i, 3000))).await.expect("append")) })
        })
        .collect();
    let mut by_seq = std::collections::HashMap::new();
    for task in tasks {
        let (i, appended) = task.await.expect("task");
        by_seq.insert(appended.seq, i);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader never saw an error");
    assert!(reads > 0);
    writer.shutdown().await;
    for (seq, i) in by_seq {
        assert_eq!(ledger.image(seq).expect("image").1, image(i, 3000));
    }
    assert!(pack_count(&ledger) <= 3);
    ledger.verify(|_, _| {}).expect("verifies");
    fsck(&ledger);
}

#[tokio::test]
async fn a_ledger_repacked_by_stock_git_keeps_working_and_consolidating() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LedgerConfig { max_packs: 2, max_batch: 1, ..LedgerConfig::default() };
    let ledger = Ledger::open(dir.path(), config.clone()).expect("opens");
    let writer = ledger.start_writer().expect("writer starts");
    for i in 0..10 {
        writer.append(new_event("cam-1", image(i, 2000))).await.expect("append");
    }
    writer.shutdown().await;
    // An operator runs git gc: one pack with deltas (the event.json blobs are alike).
    git(&ledger.git_dir(), &["repack", "-a", "-d", "-f", "--window=50", "--depth=50"]);
    let listing = git_text(&ledger.git_dir(), &["verify-pack", "-v", &format!("{}", pack_idx(&ledger).display())]);
    assert!(listing.contains("chain length"), "git made deltas: {listing}");

    let ledger = Ledger::open(dir.path(), config).expect("reopens");
    let writer = ledger.start_writer().expect("writer restarts");
    for i in 10..20 {
        writer.append(new_event("cam-1", image(i, 2000))).await.expect("append next to a delta pack");
    }
    writer.shutdown().await;
    assert!(pack_count(&ledger) <= 3, "our packs merged, git's delta pack left alone");
    for seq in 1..=20 {
        ledger.image(seq).expect("readable");
    }
    ledger.verify(|_, _| {}).expect("verifies");
    fsck(&ledger);
}

fn pack_idx(ledger: &Ledger) -> std::path::PathBuf {
    std::fs::read_dir(ledger.git_dir().join("objects/pack"))
        .expect("pack dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "idx"))
        .expect("one index")
}
