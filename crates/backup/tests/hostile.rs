//! Regression tests for "restore trusts the database": whoever could write to the snapshot
//! database got command execution on the restoring host (a `core.pager` in a manifest's
//! `config` ran on the next `git log`). Each test plays such a writer against the real
//! MariaDB and checks that verify and restore refuse, and that nothing ran.

mod common;

use std::io::Read;
use std::path::Path;

use camledger_backup::{restore, snapshot, verify, Fault, NoProgress, SnapshotOptions, SnapshotOutcome, Store};
use common::*;
use hmac::{KeyInit, Mac};
use sqlx::Row;

fn options() -> SnapshotOptions {
    SnapshotOptions { chunk_size: 64 * 1024, full_every: 1, ..SnapshotOptions::default() }
}

async fn take(store: &Store, data: &Path) -> i64 {
    match snapshot(store, &key(), data, &options(), &NoProgress).await.expect("snapshot") {
        SnapshotOutcome::Created(info) => info.id,
        SnapshotOutcome::Unchanged { latest } => panic!("expected a new snapshot, not unchanged {latest}"),
    }
}

/// A data dir with 6 events and one snapshot of it.
async fn snapshotted(store: &Store) -> (tempfile::TempDir, i64) {
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    ingest(&data, 0, 6, 20 * 1024).await;
    let id = take(store, &data).await;
    (work, id)
}

/// The config `Ledger::open` writes for a new ledger.
fn camledgers_own_config() -> String {
    let fresh = tempfile::tempdir().expect("temp dir");
    camledger_eventstore::Ledger::open(fresh.path(), Default::default()).expect("a new ledger");
    std::fs::read_to_string(fresh.path().join("ledger.git").join("config")).expect("its config")
}

/// `git log` on a terminal (a pty from `script`), `GIT_PAGER` unset: a `core.pager` in the
/// repository's config would run; without one, `PAGER=cat` does.
fn git_log_on_a_terminal(git_dir: &Path) {
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("git --git-dir '{}' log -1", git_dir.display()), "/dev/null"])
        .env_remove("GIT_PAGER")
        .env("PAGER", "cat")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) and git are installed");
    assert!(out.status.success(), "git log: {}", String::from_utf8_lossy(&out.stderr));
}

fn hostile_config(marker: &Path) -> String {
    format!("[core]\n\tpager = touch {m} && cat\n\tfsmonitor = touch {m}\n", m = marker.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pager_written_into_a_manifest_fails_verify_and_restore_and_never_runs() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = snapshotted(&store).await;
    let marker = work.path().join("pwned");
    let config = hostile_config(&marker).replace('\n', "\\n").replace('\t', "\\t");
    db.sql(&format!("UPDATE snapshots SET manifest = JSON_SET(manifest, '$.config', '{config}') WHERE id = {id}"));

    let report = verify(&store, &key(), None, &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::SealMismatch { snapshot: id }]);
    let target = work.path().join("restored");
    let err = restore(&store, &key(), &target, None, &NoProgress).await.expect_err("restore must refuse");
    assert!(matches!(err, restore::Error::Damaged(Fault::SealMismatch { snapshot }) if snapshot == id), "{err:?}");
    assert!(err.to_string().contains("seal does not match"), "{err}");
    assert_eq!(entries(work.path()), vec!["data".to_owned()], "nothing restored, no temporary dir");
    assert!(!marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_repository_gets_camledgers_own_config_whatever_the_snapshot_held() {
    // The key holder's own ledger had a hostile config (or an old snapshot carried one):
    // the restore still writes camledger's config, and `git log` runs no pager of its.
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let work = tempfile::tempdir().expect("temp dir");
    let data = work.path().join("data");
    ingest(&data, 0, 4, 10 * 1024).await;
    let marker = work.path().join("pwned");
    let config_path = data.join("ledger.git").join("config");
    let mut config = std::fs::read_to_string(&config_path).expect("config");
    config.push_str(&hostile_config(&marker));
    std::fs::write(&config_path, config).expect("write config");
    take(&store, &data).await;

    let target = work.path().join("restored");
    restore(&store, &key(), &target, None, &NoProgress).await.expect("restore");
    let restored_git = target.join("ledger.git");
    assert_eq!(std::fs::read_to_string(restored_git.join("config")).expect("config"), camledgers_own_config());
    let hooks: Vec<_> = std::fs::read_dir(restored_git.join("hooks")).expect("hooks dir").collect();
    assert!(hooks.is_empty(), "no hooks restored");
    git_log_on_a_terminal(&restored_git);
    assert!(!marker.exists(), "the snapshot's pager ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_moved_in_the_manifest_fails_verify_and_restore() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = snapshotted(&store).await;
    let parent = git(&work.path().join("data"), &["rev-parse", "refs/heads/events~2"]);
    db.sql(&format!(
        "UPDATE snapshots SET manifest = JSON_SET(manifest, '$.refs.\"refs/heads/events\"', '{parent}') WHERE id = {id}"
    ));

    let report = verify(&store, &key(), Some(id), &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::SealMismatch { snapshot: id }]);
    let err = restore(&store, &key(), &work.path().join("restored"), None, &NoProgress).await.expect_err("refused");
    assert!(matches!(err, restore::Error::Damaged(Fault::SealMismatch { .. })), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_swapped_in_from_another_snapshot_is_not_authentic() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, first) = snapshotted(&store).await;
    ingest(&work.path().join("data"), 100, 3, 20 * 1024).await;
    let second = take(&store, &work.path().join("data")).await;
    // Copy the second (full) snapshot's first pack chunk, digest and MAC over the first's.
    db.sql(&format!(
        "UPDATE snapshot_chunks AS a JOIN snapshot_chunks AS b \
         ON b.snapshot_id = {second} AND b.artifact = 'pack' AND b.seq = 0 \
         SET a.bytes = b.bytes, a.sha256 = b.sha256, a.mac = b.mac \
         WHERE a.snapshot_id = {first} AND a.artifact = 'pack' AND a.seq = 0"
    ));

    let report = verify(&store, &key(), Some(first), &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::ChunkForged { snapshot: first, artifact: "pack".into(), seq: 0 }]);
    let target = work.path().join("restored");
    let err = restore(&store, &key(), &target, Some(first), &NoProgress).await.expect_err("refused");
    assert!(matches!(err, restore::Error::Damaged(Fault::ChunkForged { seq: 0, .. })), "{err:?}");
    assert!(!target.exists());
    assert!(verify(&store, &key(), Some(second), &NoProgress).await.expect("verify runs").is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_without_a_seal_is_refused_and_never_the_base_of_a_new_one() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = snapshotted(&store).await;
    db.sql(&format!("UPDATE snapshots SET seal = NULL WHERE id = {id}"));

    let report = verify(&store, &key(), None, &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::Unsealed { snapshot: id }]);
    let err = restore(&store, &key(), &work.path().join("restored"), None, &NoProgress).await.expect_err("refused");
    assert!(err.to_string().contains("not sealed"), "{err}");

    // With the default full_every the next one would be incremental on an authentic parent.
    let next = snapshot(&store, &key(), &work.path().join("data"), &SnapshotOptions::default(), &NoProgress)
        .await
        .expect("snapshot");
    let SnapshotOutcome::Created(info) = next else { panic!("an unsealed latest is never 'unchanged'") };
    assert_eq!(info.parent, None, "a full snapshot, not one built on an unproven manifest");
    restore(&store, &key(), &work.path().join("restored"), None, &NoProgress).await.expect("the new one restores");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_key_proves_nothing() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = snapshotted(&store).await;
    let other = camledger_backup::BackupKey::from_bytes(vec![1; 32]).expect("32 bytes");
    let report = verify(&store, &other, None, &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::SealMismatch { snapshot: id }]);
    let err = restore(&store, &other, &work.path().join("restored"), None, &NoProgress).await.expect_err("refused");
    assert!(err.to_string().contains("--backup-key"), "the message names the key as a cause: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_bomb_is_refused_unsigned_and_stopped_at_the_declared_size_when_signed() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = snapshotted(&store).await;
    // 256 MiB of zeros in a few KiB of zstd, as the only chunk of the pack.
    let bomb = zstd::stream::encode_all(std::io::repeat(0).take(256 << 20), 3).expect("zstd");
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bomb).into();
    let pool = sqlx::MySqlPool::connect(&db.url()).await.expect("connect");
    sqlx::query("DELETE FROM snapshot_chunks WHERE snapshot_id = ? AND artifact = 'pack' AND seq > 0")
        .bind(id)
        .execute(&pool)
        .await
        .expect("delete");
    sqlx::query(
        "UPDATE snapshot_chunks SET bytes = ?, sha256 = ? WHERE snapshot_id = ? AND artifact = 'pack' AND seq = 0",
    )
    .bind(&bomb)
    .bind(hex::encode(digest))
    .bind(id)
    .execute(&pool)
    .await
    .expect("plant the bomb");

    // Without the key: the chunk is not authentic and never decompressed.
    let report = verify(&store, &key(), Some(id), &NoProgress).await.expect("verify runs");
    assert!(report.faults.contains(&Fault::ChunkForged { snapshot: id, artifact: "pack".into(), seq: 0 }));

    // With the key (a buggy or compromised writer): MAC and seal made to match. The raw
    // size stays the declared one; decompression must stop there.
    let mac = chunk_mac(id, "pack", 0, &digest);
    let stored_sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(digest));
    sqlx::query("UPDATE snapshot_chunks SET mac = ? WHERE snapshot_id = ? AND artifact = 'pack' AND seq = 0")
        .bind(mac)
        .bind(id)
        .execute(&pool)
        .await
        .expect("mac");
    sqlx::query(
        "UPDATE snapshot_artifacts SET chunks = 1, stored_bytes = ?, stored_sha256 = ? \
         WHERE snapshot_id = ? AND artifact = 'pack'",
    )
    .bind(bomb.len() as i64)
    .bind(stored_sha256)
    .bind(id)
    .execute(&pool)
    .await
    .expect("artifact");
    reseal(&pool, id).await;
    let declared: i64 =
        sqlx::query("SELECT raw_bytes FROM snapshot_artifacts WHERE snapshot_id = ? AND artifact = 'pack'")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row")
            .get(0);

    let report = verify(&store, &key(), Some(id), &NoProgress).await.expect("verify runs");
    assert_eq!(report.faults, vec![Fault::TooLarge { snapshot: id, artifact: "pack".into(), declared }]);
    let target = work.path().join("restored");
    restore(&store, &key(), &target, Some(id), &NoProgress).await.expect_err("refused");
    assert!(!target.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_name_that_leaves_the_repository_is_refused_even_under_a_valid_seal() {
    let db = MariaDb::create();
    let store = Store::connect(&db.url()).await.expect("connect");
    let (work, id) = snapshotted(&store).await;
    let head = git(&work.path().join("data"), &["rev-parse", "refs/heads/events"]);
    let escape = work.path().join("escaped");
    db.sql(&format!(
        "UPDATE snapshots SET manifest = JSON_SET(manifest, '$.refs.\"refs/../../../{}\"', '{head}') WHERE id = {id}",
        escape.file_name().expect("a name").to_str().expect("utf-8")
    ));
    let pool = sqlx::MySqlPool::connect(&db.url()).await.expect("connect");
    reseal(&pool, id).await;

    let report = verify(&store, &key(), Some(id), &NoProgress).await.expect("verify runs");
    assert!(matches!(report.faults.as_slice(), [Fault::UnsafeRef { .. }]), "{:?}", report.faults);
    let target = work.path().join("restored");
    let err = restore(&store, &key(), &target, Some(id), &NoProgress).await.expect_err("refused");
    assert!(matches!(err, restore::Error::Damaged(Fault::UnsafeRef { .. })), "{err:?}");
    assert!(!target.exists() && !escape.exists());
}

// The seal format of crates/backup/src/key.rs, written out independently: a test that
// plays the key holder.
type Hmac = hmac::Hmac<sha2_011::Sha256>;

fn start() -> Hmac {
    let mut mac = Hmac::new_from_slice(&[0x5a; 32]).expect("any key length");
    field(&mut mac, b"camledger-snapshot-v1");
    mac
}

fn field(mac: &mut Hmac, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

fn chunk_mac(id: i64, artifact: &str, seq: i64, digest: &[u8]) -> String {
    let mut mac = start();
    field(&mut mac, b"chunk");
    field(&mut mac, &id.to_be_bytes());
    field(&mut mac, artifact.as_bytes());
    field(&mut mac, &seq.to_be_bytes());
    field(&mut mac, digest);
    hex::encode(mac.finalize().into_bytes())
}

async fn reseal(pool: &sqlx::MySqlPool, id: i64) {
    let row = sqlx::query(
        "SELECT parent_id, created_at_ms, manifest, objects, raw_bytes, stored_bytes, events_head_seq \
         FROM snapshots WHERE id = ?",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("row");
    let opt = |mac: &mut Hmac, v: Option<i64>| match v {
        Some(v) => field(mac, &v.to_be_bytes()),
        None => field(mac, b""),
    };
    let mut mac = start();
    field(&mut mac, b"snapshot");
    field(&mut mac, &id.to_be_bytes());
    opt(&mut mac, row.get(0));
    field(&mut mac, &row.get::<i64, _>(1).to_be_bytes());
    field(&mut mac, row.get::<String, _>(2).as_bytes());
    for i in 3..6 {
        field(&mut mac, &row.get::<i64, _>(i).to_be_bytes());
    }
    opt(&mut mac, row.get(6));
    let artifacts = sqlx::query(
        "SELECT artifact, chunks, objects, raw_bytes, stored_bytes, raw_sha256, stored_sha256 \
         FROM snapshot_artifacts WHERE snapshot_id = ? ORDER BY artifact",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("artifacts");
    field(&mut mac, &(artifacts.len() as u64).to_be_bytes());
    for a in &artifacts {
        field(&mut mac, a.get::<String, _>(0).as_bytes());
        for i in 1..5 {
            field(&mut mac, &a.get::<i64, _>(i).to_be_bytes());
        }
        field(&mut mac, a.get::<String, _>(5).as_bytes());
        field(&mut mac, a.get::<String, _>(6).as_bytes());
    }
    sqlx::query("UPDATE snapshots SET seal = ? WHERE id = ?")
        .bind(hex::encode(mac.finalize().into_bytes()))
        .bind(id)
        .execute(pool)
        .await
        .expect("seal");
}
