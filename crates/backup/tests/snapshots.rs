//! End-to-end tests of snapshot → verify → restore → prune against the real MariaDB
//! (127.0.0.1:3306, root, a fresh database per test) and SQLite, with ledgers written by
//! the real eventstore writer and extra refs made by the stock git CLI.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use camledger_backup::{
    connect, list, prune, restore, snapshot, verify, Fault, NoProgress, Progress, SnapshotOptions, SnapshotOutcome,
    Store,
};
use common::*;

fn small_chunks() -> SnapshotOptions {
    // Small chunks so even test-sized ledgers span many chunk rows.
    SnapshotOptions { chunk_size: 64 * 1024, ..SnapshotOptions::default() }
}

fn created(outcome: SnapshotOutcome) -> camledger_backup::SnapshotInfo {
    match outcome {
        SnapshotOutcome::Created(info) => info,
        SnapshotOutcome::Unchanged { latest } => panic!("expected a new snapshot, got unchanged (latest {latest})"),
    }
}

/// ingest → full snapshot → more events, verdicts, notes → incremental → unchanged →
/// restore into a new dir → same refs, events verified, registry back, sequence continues.
async fn full_incremental_restore_round_trip(store: &Store) {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    ingest(&data, 0, 12, 40 * 1024).await;
    write_registry(&data, "cam-1").await;

    let first = created(snapshot(store, &key(), &data, &small_chunks(), &NoProgress).await.expect("first snapshot"));
    assert_eq!(first.parent, None, "the first snapshot is full");
    assert_eq!(first.events_head_seq, Some(12));

    ingest(&data, 100, 8, 40 * 1024).await;
    add_verdict(&data, "spam");
    let second = created(snapshot(store, &key(), &data, &small_chunks(), &NoProgress).await.expect("second snapshot"));
    assert_eq!(second.parent, Some(first.id), "the second snapshot is incremental");
    assert_eq!(second.events_head_seq, Some(20));
    assert!(
        second.raw_bytes < first.raw_bytes,
        "the incremental pack holds only new objects ({} vs {} bytes)",
        second.raw_bytes,
        first.raw_bytes
    );
    assert!(second.refs.contains_key("refs/notes/verdicts") && second.refs.contains_key("refs/heads/verdicts"));

    let again = snapshot(store, &key(), &data, &small_chunks(), &NoProgress).await.expect("third snapshot");
    assert_eq!(again, SnapshotOutcome::Unchanged { latest: second.id }, "nothing changed, nothing written");
    assert_eq!(list(store).await.expect("list").len(), 2);

    let report = verify(store, &key(), None, &NoProgress).await.expect("verify runs");
    assert!(report.is_clean(), "{:?}", report.faults);
    assert_eq!(report.checked, vec![first.id, second.id]);

    let original_refs = refs(&data);
    std::fs::remove_dir_all(&data).expect("delete the data dir");
    let restored_dir = work.path().join("restored");
    let restored = restore(store, &key(), &restored_dir, None, &NoProgress).await.expect("restore");
    assert_eq!(restored.chain, vec![first.id, second.id]);
    assert_eq!(restored.events, 20);
    assert!(restored.state);
    assert_eq!(refs(&restored_dir), original_refs, "every ref is back with its value");
    assert_eq!(registry_cameras(&restored_dir).await, vec!["cam-1".to_owned()]);
    assert!(git(&restored_dir, &["log", "--notes=verdicts", "-1", "refs/heads/events"]).contains("spam"));

    // An older snapshot restores to the state it recorded.
    let older = restore(store, &key(), &work.path().join("older"), Some(first.id), &NoProgress)
        .await
        .expect("restore the first snapshot");
    assert_eq!((older.chain.clone(), older.events), (vec![first.id], 12));
    assert!(!refs(&work.path().join("older")).contains("refs/heads/verdicts"), "verdicts came later");

    // The restored dir is a working data dir: the writer rebuilds its indexes (there is
    // no index/ in a snapshot), the sequence continues and duplicates are still known.
    assert!(!restored_dir.join("index").exists());
    let fresh = append_one(&restored_dir, 200, 1000).await;
    assert_eq!((fresh.seq, fresh.duplicate_of), (21, None));
    let again = append_one(&restored_dir, 3, 40 * 1024).await;
    assert_eq!((again.seq, again.duplicate_of), (22, Some(4)), "seed 3 was event 4 before the restore");
    assert_eq!(head_seq(&restored_dir), 22);
    assert_eq!(entries(work.path()), vec!["older".to_owned(), "restored".to_owned()], "no temporary directory is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_and_an_incremental_snapshot_in_mariadb_restore_the_same_ledger() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    full_incremental_restore_round_trip(&store).await;
    // Chunks stay under the limit even with the default size.
    let biggest: i64 =
        db.sql("SELECT COALESCE(MAX(LENGTH(bytes)), 0) FROM snapshot_chunks").trim().parse().expect("a number");
    assert!(biggest <= 64 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_and_an_incremental_snapshot_in_sqlite_restore_the_same_ledger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("backups.sqlite").display());
    let store = Store::connect(&url).await.expect("connect");
    full_incremental_restore_round_trip(&store).await;
}

/// A ledger with one full snapshot, for the fault tests.
async fn one_snapshot(store: &Store) -> (tempfile::TempDir, i64) {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    ingest(&data, 0, 10, 30 * 1024).await;
    let info = created(snapshot(store, &key(), &data, &small_chunks(), &NoProgress).await.expect("snapshot"));
    (work, info.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_one_chunk_fails_verify_and_restore_and_leaves_nothing() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = one_snapshot(&store).await;
    db.sql(&format!(
        "UPDATE snapshot_chunks SET bytes = CONCAT(LEFT(bytes, 100), CHAR(ASCII(SUBSTRING(bytes, 101, 1)) ^ 1), SUBSTRING(bytes, 102)) \
         WHERE snapshot_id = {id} AND artifact = 'pack' AND seq = 1"
    ));

    let report = verify(&store, &key(), None, &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::ChunkCorrupt { snapshot: id, artifact: "pack".into(), seq: 1 }]);
    let target = work.path().join("restored");
    let err = restore(&store, &key(), &target, None, &NoProgress).await.expect_err("restore must fail");
    assert!(matches!(err, restore::Error::Damaged(Fault::ChunkCorrupt { seq: 1, .. })), "{err:?}");
    assert_eq!(entries(work.path()), vec!["data".to_owned()], "no restored or temporary directory is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chunk_fails_verify_and_restore() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = one_snapshot(&store).await;
    db.sql(&format!("DELETE FROM snapshot_chunks WHERE snapshot_id = {id} AND artifact = 'pack' AND seq = 2"));

    let report = verify(&store, &key(), Some(id), &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::ChunkMissing { snapshot: id, artifact: "pack".into(), seq: 2 }]);
    let err = restore(&store, &key(), &work.path().join("restored"), Some(id), &NoProgress)
        .await
        .expect_err("restore must fail");
    assert!(matches!(err, restore::Error::Damaged(Fault::ChunkMissing { seq: 2, .. })), "{err:?}");
    assert_eq!(entries(work.path()), vec!["data".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_parent_snapshot_is_reported_and_blocks_restore() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, first) = one_snapshot(&store).await;
    let data = work.path().join("data");
    ingest(&data, 50, 2, 1000).await;
    let second = created(snapshot(&store, &key(), &data, &small_chunks(), &NoProgress).await.expect("snapshot")).id;
    // The foreign key forbids this; simulate a manual deletion that bypassed it.
    db.sql(&format!("SET FOREIGN_KEY_CHECKS = 0; DELETE FROM snapshots WHERE id = {first}"));

    let report = verify(&store, &key(), None, &NoProgress).await.expect("verify runs");
    assert!(report.faults.contains(&Fault::ParentMissing { snapshot: second, parent: first }), "{:?}", report.faults);
    let err =
        restore(&store, &key(), &work.path().join("restored"), None, &NoProgress).await.expect_err("restore must fail");
    assert!(matches!(err, restore::Error::Damaged(Fault::ParentMissing { .. })), "{err:?}");
    assert_eq!(entries(work.path()), vec!["data".to_owned()]);
}

/// Kills every connection to the test database when the first chunk has been written.
struct KillAfterFirstChunk<'a> {
    db: &'a MariaDb,
    killed: AtomicBool,
}

impl Progress for KillAfterFirstChunk<'_> {
    fn start(&self, _what: &str, _total: u64) {}
    fn advance(&self, _n: u64) {
        if !self.killed.swap(true, Ordering::SeqCst) {
            assert!(self.db.kill_connections() > 0, "the snapshot's connection is open");
        }
    }
    fn finish(&self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_snapshot_fails_and_leaves_no_snapshot_listed() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    ingest(&data, 0, 10, 30 * 1024).await;

    let killer = KillAfterFirstChunk { db: &db, killed: AtomicBool::new(false) };
    let err = snapshot(&store, &key(), &data, &small_chunks(), &killer).await.expect_err("the snapshot must fail");
    assert!(killer.killed.load(Ordering::SeqCst), "the kill happened mid-snapshot");
    assert!(matches!(err, camledger_backup::snapshot::Error::Database(_)), "{err:?}");

    let fresh = Store::connect(&db.url()).await.expect("reconnect");
    assert!(list(&fresh).await.expect("list").is_empty(), "no partial snapshot is visible");
    assert_eq!(db.sql("SELECT COUNT(*) FROM snapshot_chunks").trim(), "0", "no orphan chunk rows");
    // And the next snapshot works.
    created(snapshot(&fresh, &key(), &data, &small_chunks(), &NoProgress).await.expect("retry"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_a_newer_schema_is_refused() {
    let db = MariaDb::create();
    Store::connect(&db.url()).await.expect("first connect migrates").close().await;
    db.sql(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, X'00', 0)",
    );
    let err = Store::connect(&db.url()).await.expect_err("must refuse");
    assert!(matches!(err, connect::Error::NewerSchema { found: 99990101000000, .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade camledger"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_and_an_unknown_scheme_are_clear_errors() {
    let err = Store::connect("mysql://root@127.0.0.1:1/none").await.expect_err("nothing listens on port 1");
    assert!(matches!(err, connect::Error::Unreachable(_)), "{err:?}");
    let err = Store::connect("postgres://localhost/x").await.expect_err("unsupported");
    assert!(matches!(err, connect::Error::UnsupportedUrl { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_a_non_empty_target_and_a_ledger_without_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("b.sqlite").display())).await.expect("connect");
    // A data dir whose ledger has no events at all.
    let data = dir.path().join("data");
    camledger_eventstore::Ledger::open(&data, Default::default()).expect("create an empty ledger");
    created(snapshot(&store, &key(), &data, &small_chunks(), &NoProgress).await.expect("snapshot of an empty ledger"));

    let occupied = dir.path().join("occupied");
    std::fs::create_dir(&occupied).expect("mkdir");
    std::fs::write(occupied.join("file"), b"x").expect("write");
    let err = restore(&store, &key(), &occupied, None, &NoProgress).await.expect_err("non-empty target");
    assert!(matches!(err, restore::Error::TargetNotEmpty(_)), "{err:?}");

    let empty_target = dir.path().join("empty");
    std::fs::create_dir(&empty_target).expect("mkdir");
    let err = restore(&store, &key(), &empty_target, None, &NoProgress).await.expect_err("no events");
    assert!(matches!(err, restore::Error::Proof(restore::ProofFailure::NoEvents)), "{err:?}");
    assert!(entries(&empty_target).is_empty(), "the empty target stays empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_only_snapshots_that_no_kept_snapshot_needs() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    let options = SnapshotOptions { full_every: 2, ..small_chunks() };
    let mut ids = Vec::new();
    for round in 0..4u64 {
        ingest(&data, round * 10, 3, 2000).await;
        ids.push(created(snapshot(&store, &key(), &data, &options, &NoProgress).await.expect("snapshot")));
    }
    let parents: Vec<Option<i64>> = ids.iter().map(|s| s.parent).collect();
    assert_eq!(parents, vec![None, Some(ids[0].id), None, Some(ids[2].id)], "a full snapshot every 2");

    let report = prune(&store, 1).await.expect("prune");
    assert_eq!(report.deleted, vec![ids[1].id, ids[0].id]);
    assert_eq!(report.kept, vec![ids[2].id, ids[3].id], "the kept snapshot's full parent stays");
    assert!(matches!(prune(&store, 0).await, Err(camledger_backup::prune::Error::KeepZero)));
    assert_eq!(db.sql(&format!("SELECT COUNT(*) FROM snapshot_chunks WHERE snapshot_id <= {}", ids[1].id)).trim(), "0");

    // Into an existing empty directory this time (a mount point, say).
    let target = work.path().join("restored");
    std::fs::create_dir(&target).expect("mkdir");
    let restored = restore(&store, &key(), &target, None, &NoProgress).await.expect("restore after prune");
    assert_eq!(restored.events, 12);
    assert!(target.join("ledger.git").join("HEAD").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_serializes_with_the_fields_the_cli_contract_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("b.sqlite").display())).await.expect("connect");
    let data = dir.path().join("data");
    ingest(&data, 0, 2, 500).await;
    created(snapshot(&store, &key(), &data, &small_chunks(), &NoProgress).await.expect("snapshot"));
    let json = serde_json::to_value(list(&store).await.expect("list")).expect("serialize");
    let first = &json[0];
    for field in ["id", "parent", "created_at", "objects", "raw_bytes", "stored_bytes", "events_head_seq", "refs"] {
        assert!(first.get(field).is_some(), "missing {field} in {first}");
    }
    assert!(first["parent"].is_null());
    assert_eq!(first["events_head_seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_snapshots_at_once_and_publishes_the_latest_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("b.sqlite").display())).await.expect("connect");
    let data = dir.path().join("data");
    ingest(&data, 0, 3, 500).await;

    let (status_tx, mut status_rx) = tokio::sync::watch::channel(camledger_backup::ScheduleStatus::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = small_chunks();
    let key = key();
    let runner = camledger_backup::run_schedule(
        &store,
        &key,
        &data,
        &options,
        std::time::Duration::from_secs(3600),
        &status_tx,
        async {
            let _ = stopped.await;
        },
    );
    let observer = async {
        let status = status_rx.wait_for(|s| s.last_attempt_at.is_some()).await.expect("the schedule publishes").clone();
        stop.send(()).expect("the schedule is running");
        status
    };
    let ((), status) = tokio::join!(runner, observer);

    assert_eq!(status.last_outcome, Some("created"), "{status:?}");
    assert_eq!(status.failures_in_a_row, 0);
    let latest = status.last_snapshot.expect("a snapshot is published");
    assert_eq!(latest.events_head_seq, Some(3));
    assert!(latest.stored_bytes > 0);
    assert_eq!(list(&store).await.expect("list").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_with_a_forged_image_fails_the_restore_proof_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("b.sqlite").display())).await.expect("connect");
    let data = dir.path().join("data");
    ingest(&data, 0, 3, 2000).await;
    // Forge the tip with stock git: same event.json, another image, same parent.
    let tip = git(&data, &["rev-parse", "refs/heads/events"]);
    let parent = git(&data, &["rev-parse", "refs/heads/events^"]);
    let listing = git(&data, &["ls-tree", &tip]);
    let forged_image = data.join("forged.bin");
    std::fs::write(&forged_image, b"not the image event.json describes").expect("write");
    let forged_blob = git(&data, &["hash-object", "-w", forged_image.to_str().expect("utf-8 path")]);
    let tree_text: String = listing
        .lines()
        .map(|line| {
            let (meta, name) = line.split_once('\t').expect("ls-tree format");
            if name == "event.json" {
                format!("{line}\n")
            } else {
                let mode = meta.split_whitespace().next().expect("mode");
                format!("{mode} blob {forged_blob}\t{name}\n")
            }
        })
        .collect();
    let tree = {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(data.join("ledger.git"))
            .arg("mktree")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("git is installed");
        child.stdin.take().expect("piped").write_all(tree_text.as_bytes()).expect("write to mktree");
        String::from_utf8_lossy(&child.wait_with_output().expect("mktree runs").stdout).trim().to_owned()
    };
    let forged = git(&data, &["commit-tree", &tree, "-p", &parent, "-m", "forged\n\nSeq: 3"]);
    git(&data, &["update-ref", "refs/heads/events", &forged]);
    created(snapshot(&store, &key(), &data, &small_chunks(), &NoProgress).await.expect("snapshot"));

    let report = verify(&store, &key(), None, &NoProgress).await.expect("verify runs");
    assert!(report.is_clean(), "the stored bytes are intact: {:?}", report.faults);
    let target = dir.path().join("restored");
    let err = restore(&store, &key(), &target, None, &NoProgress).await.expect_err("the proof must fail");
    assert!(matches!(err, restore::Error::Proof(restore::ProofFailure::Event(_))), "{err:?}");
    assert!(!target.exists());
    assert!(!entries(dir.path()).iter().any(|e| e.starts_with(".camledger-restore-")), "temporary dir removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_events_are_appended_restore_exactly_their_head() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    ingest(&data, 0, 10, 4000).await;

    let ledger = camledger_eventstore::Ledger::open(&data, Default::default()).expect("open");
    let writer = ledger.start_writer().expect("writer");
    let appender = {
        let writer = writer.clone();
        tokio::spawn(async move {
            for seed in 1000..1150u64 {
                writer
                    .append(camledger_eventstore::NewEvent {
                        camera: "cam-2".into(),
                        image: bytes::Bytes::from(image_bytes(seed, 4000)),
                        media_type: "image/jpeg".into(),
                        extension: "jpg".into(),
                        width: 8,
                        height: 8,
                        exif: None,
                        captured_at: None,
                        idempotency_key: None,
                    })
                    .await
                    .expect("append while snapshotting");
            }
        })
    };
    let mut taken = Vec::new();
    for _ in 0..3 {
        if let SnapshotOutcome::Created(info) =
            snapshot(&store, &key(), &data, &small_chunks(), &NoProgress).await.expect("snapshot")
        {
            taken.push(info);
        }
    }
    appender.await.expect("appender");
    writer.shutdown().await;

    let heads: Vec<Option<i64>> = taken.iter().map(|t| t.events_head_seq).collect();
    eprintln!("snapshot heads while appending: {heads:?}");
    let latest = taken.last().expect("at least one snapshot").clone();
    let restored = restore(&store, &key(), &work.path().join("restored"), None, &NoProgress).await.expect("restore");
    assert_eq!(Some(restored.events as i64), latest.events_head_seq, "exactly the head the snapshot recorded");
    let report = verify(&store, &key(), None, &NoProgress).await.expect("verify runs");
    assert!(report.is_clean(), "{:?}", report.faults);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_rewritten_with_a_matching_digest_is_not_authentic_and_so_is_a_forged_whole() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (_work, id) = one_snapshot(&store).await;
    let chunk = format!("snapshot_id = {id} AND artifact = 'pack' AND seq = 1");
    db.sql(&format!("UPDATE snapshot_chunks SET bytes = 'garbage', sha256 = SHA2('garbage', 256) WHERE {chunk}"));

    let report = verify(&store, &key(), Some(id), &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::ChunkForged { snapshot: id, artifact: "pack".into(), seq: 1 }]);

    // Also forge the digest over the chunk digests: the artifact row is sealed.
    db.sql(&format!(
        "UPDATE snapshot_artifacts SET stored_sha256 = (SELECT SHA2(GROUP_CONCAT(UNHEX(sha256) ORDER BY seq SEPARATOR ''), 256) \
         FROM snapshot_chunks WHERE snapshot_id = {id} AND artifact = 'pack') WHERE snapshot_id = {id} AND artifact = 'pack'"
    ));
    let report = verify(&store, &key(), Some(id), &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::SealMismatch { snapshot: id }]);
}
