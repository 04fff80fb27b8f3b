//! Snapshots into the real MariaDB (and the embedded SQLite), restore, and carry on.

use std::process::Command;

use serde_json::Value;

use crate::helpers::*;

/// A fresh MariaDB database, dropped when the test ends.
pub(crate) struct TestDatabase {
    pub(crate) name: String,
}

impl TestDatabase {
    pub(crate) fn create() -> TestDatabase {
        let name = format!("camledger_e2e_{}", hex::encode(rand_bytes()));
        mariadb(&format!("CREATE DATABASE {name}"));
        TestDatabase { name }
    }

    pub(crate) fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["--protocol=tcp", "-h127.0.0.1", "-uroot", "-e", &format!("DROP DATABASE IF EXISTS {}", self.name)])
            .status();
    }
}

fn rand_bytes() -> [u8; 6] {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mixed = (nanos as u64) ^ (std::process::id() as u64).rotate_left(32);
    mixed.to_le_bytes()[..6].try_into().unwrap()
}

pub(crate) fn mariadb(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["--protocol=tcp", "-h127.0.0.1", "-uroot", "-N", "-e", sql])
        .output()
        .expect("running the mariadb client");
    assert!(out.status.success(), "mariadb {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The key `snapshot` created in the data dir (the default `--backup-key`).
pub(crate) fn backup_key(app: &TestApp) -> String {
    format!("{}/keys/backup.key", app.dir())
}

pub(crate) fn camledger_fails(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).env("CAMLEDGER_LOG", "warn").output().unwrap();
    assert!(!out.status.success(), "camledger {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_restored_ledger_from_mariadb_is_identical_and_the_server_continues_it() {
    let db = TestDatabase::create();
    let mut app = TestApp::spawn().await;
    for n in 0..5 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    let first = camledger(&["snapshot", "--data-dir", app.dir(), "--database-url", &db.url()]);
    assert!(first.contains("full"), "{first}");
    for n in 5..8 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    let second = camledger(&["snapshot", "--data-dir", app.dir(), "--database-url", &db.url()]);
    assert!(second.contains("incremental"), "{second}");
    let unchanged = camledger(&["snapshot", "--data-dir", app.dir(), "--database-url", &db.url()]);
    assert!(unchanged.contains("nothing changed"), "{unchanged}");

    let list: Vec<Value> =
        serde_json::from_str(&camledger(&["snapshots", "list", "--database-url", &db.url(), "--format", "json"]))
            .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["parent"], list[0]["id"]);
    assert_eq!(list[1]["events_head_seq"], 8);
    let key = backup_key(&app);
    camledger(&["snapshots", "verify", "--database-url", &db.url(), "--backup-key", &key]);

    let original_refs = app.git(&["for-each-ref", "--format=%(refname) %(objectname)"]);
    app.signal("-TERM");
    let target = tempfile::tempdir().unwrap();
    let restored_dir = target.path().join("restored");
    camledger(&["restore", "--database-url", &db.url(), "--backup-key", &key, "--to", restored_dir.to_str().unwrap()]);
    assert_eq!(
        git(&restored_dir.join("ledger.git"), &["for-each-ref", "--format=%(refname) %(objectname)"]),
        original_refs
    );
    assert_fsck_clean(&restored_dir.join("ledger.git"));

    // The server starts on the restored dir: the old camera token works, duplicates are
    // still recognised and the sequence continues.
    let mut restored = TestApp::spawn_on(restored_dir, app.camera_token.clone(), app.auditor_token.clone());
    let duplicate = restored.upload(jpeg(0)).await;
    assert_eq!(duplicate.status(), 200);
    let answer: Value = duplicate.json().await.unwrap();
    assert_eq!(answer["seq"], 9);
    assert_eq!(answer["duplicate_of"], 1);
    assert_eq!(restored.upload(jpeg(100)).await.status(), 201);
    restored.signal("-TERM");
    camledger(&["verify", "--data-dir", restored.dir()]);
}

#[tokio::test]
async fn a_flipped_byte_in_a_stored_chunk_fails_verify_and_restore() {
    let db = TestDatabase::create();
    let app = TestApp::spawn().await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    camledger(&["snapshot", "--data-dir", app.dir(), "--database-url", &db.url()]);

    // Flip one bit of byte 101 of the first chunk, as a disk or a careless operator might.
    mariadb(&format!(
        "UPDATE {}.snapshot_chunks SET bytes = CONCAT(SUBSTRING(bytes, 1, 100), CHAR(ASCII(SUBSTRING(bytes, 101, 1)) ^ 1), SUBSTRING(bytes, 102)) \
         ORDER BY snapshot_id, seq LIMIT 1",
        db.name
    ));

    let key = backup_key(&app);
    let fault = camledger_fails(&["snapshots", "verify", "--database-url", &db.url(), "--backup-key", &key]);
    assert!(fault.contains("SHA-256") || fault.contains("fault"), "{fault}");
    let target = tempfile::tempdir().unwrap();
    let restored_dir = target.path().join("restored");
    camledger_fails(&[
        "restore",
        "--database-url",
        &db.url(),
        "--backup-key",
        &key,
        "--to",
        restored_dir.to_str().unwrap(),
    ]);
    assert!(!restored_dir.join("ledger.git").exists(), "a failed restore leaves no ledger behind");
}

#[tokio::test]
async fn snapshots_default_to_sqlite_inside_the_data_dir() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let out = camledger(&["snapshot", "--data-dir", app.dir()]);
    assert!(out.contains("snapshot 1"), "{out}");
    let url = format!("sqlite://{}/backups.sqlite", app.dir());
    let target = tempfile::tempdir().unwrap();
    let restored_dir = target.path().join("r");
    camledger(&[
        "restore",
        "--database-url",
        &url,
        "--backup-key",
        &backup_key(&app),
        "--to",
        restored_dir.to_str().unwrap(),
    ]);
    assert_eq!(seqs_in_git(&restored_dir.join("ledger.git")), vec![1]);
}

#[test]
fn an_unreachable_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = camledger_fails(&["snapshots", "list", "--database-url", "mysql://root@127.0.0.1:1/nope"]);
    assert!(err.contains("snapshot database"), "{err}");
    // A data dir that holds a ledger (an empty one is refused before the URL is looked at).
    camledger(&["cameras", "add", "cam", "--data-dir", dir.path().to_str().unwrap()]);
    let err =
        camledger_fails(&["snapshot", "--data-dir", dir.path().to_str().unwrap(), "--database-url", "postgres://x"]);
    assert!(err.contains("mysql://") || err.contains("URL"), "{err}");
}

#[tokio::test]
async fn the_server_takes_scheduled_snapshots_and_shows_the_last_one_on_healthz() {
    let app = TestApp::spawn_with(&["--snapshot-interval", "1s"]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let mut seen = Value::Null;
    for _ in 0..100 {
        // Snapshot status is shown to reader tokens only (docs/design.md, Hardening).
        let health: Value = app.get("/healthz", &app.auditor_token).await.json().await.unwrap();
        seen = health["snapshots"].clone();
        if seen["last_snapshot"]["events_head_seq"] == 1 {
            assert!(seen["last_snapshot"]["id"].is_i64() && seen["last_snapshot"]["stored_bytes"].is_u64(), "{seen}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no snapshot with event 1 was reported: {seen}");
}
