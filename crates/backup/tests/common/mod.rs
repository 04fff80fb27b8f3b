//! Fixtures for the backup tests: a real ledger written by the eventstore's writer, extra
//! refs made with the stock `git` CLI, a registry file, and a fresh MariaDB database per
//! test (dropped when the guard goes out of scope).
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use camledger_eventstore::{Ledger, LedgerConfig, NewEvent, Verdict};

/// A database on the local MariaDB, dropped on drop.
pub struct MariaDb {
    pub name: String,
}

impl MariaDb {
    pub fn create() -> MariaDb {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .subsec_nanos();
        let name =
            format!("camledger_test_{}_{}_{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed));
        sql_as_root(&format!("CREATE DATABASE {name}"));
        MariaDb { name }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    /// Run SQL in this database through the stock `mariadb` client; returns stdout.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["-uroot", "-h127.0.0.1", "-P3306", "-N", "-B", &self.name, "-e", sql])
            .output()
            .expect("the mariadb client is installed");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kill every server connection that uses this database.
    pub fn kill_connections(&self) -> usize {
        let ids = sql_as_root(&format!(
            "SELECT id FROM information_schema.processlist WHERE db = '{}' AND id <> CONNECTION_ID()",
            self.name
        ));
        let ids: Vec<&str> = ids.split_whitespace().collect();
        for id in &ids {
            // A connection may end on its own in between; ignore "unknown thread".
            let _ =
                Command::new("mariadb").args(["-uroot", "-h127.0.0.1", "-P3306", "-e", &format!("KILL {id}")]).output();
        }
        ids.len()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // A failed test can leave a pool connection holding locks (its cleanup needs the
        // runtime this drop is blocking): end those first, and never wait long on a lock.
        self.kill_connections();
        let _ = Command::new("mariadb")
            .args([
                "-uroot",
                "-h127.0.0.1",
                "-P3306",
                "-e",
                &format!("SET SESSION lock_wait_timeout = 10; DROP DATABASE IF EXISTS {}", self.name),
            ])
            .output();
    }
}

fn sql_as_root(sql: &str) -> String {
    let out = Command::new("mariadb")
        .args(["-uroot", "-h127.0.0.1", "-P3306", "-N", "-B", "-e", sql])
        .output()
        .expect("the mariadb client is installed");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The backup key of the tests (a fixed one: the tests are about the database, not the key).
pub fn key() -> camledger_backup::BackupKey {
    camledger_backup::BackupKey::from_bytes(vec![0x5a; 32]).expect("32 bytes is long enough")
}

/// Deterministic incompressible-looking bytes (xorshift), `len` long.
pub fn image_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Append `count` events (images of `size` bytes, seeds from `first_seed`) to the
/// ledger in `data_dir` through the real group-commit writer.
pub async fn ingest(data_dir: &Path, first_seed: u64, count: u64, size: usize) {
    let ledger = Ledger::open(data_dir, LedgerConfig::default()).expect("open the ledger");
    let writer = ledger.start_writer().expect("start the writer");
    for seed in first_seed..first_seed + count {
        writer
            .append(NewEvent {
                camera: "cam-1".into(),
                image: bytes::Bytes::from(image_bytes(seed, size)),
                media_type: "image/jpeg".into(),
                extension: "jpg".into(),
                width: 64,
                height: 48,
                exif: None,
                captured_at: None,
                idempotency_key: None,
            })
            .await
            .expect("append an event");
    }
    writer.shutdown().await;
}

/// Append one event (image from `seed`) and return the ledger's answer.
pub async fn append_one(data_dir: &Path, seed: u64, size: usize) -> camledger_eventstore::Appended {
    let ledger = Ledger::open(data_dir, LedgerConfig::default()).expect("open the ledger");
    let writer = ledger.start_writer().expect("start the writer");
    let appended = writer
        .append(NewEvent {
            camera: "cam-1".into(),
            image: bytes::Bytes::from(image_bytes(seed, size)),
            media_type: "image/jpeg".into(),
            extension: "jpg".into(),
            width: 64,
            height: 48,
            exif: None,
            captured_at: None,
            idempotency_key: None,
        })
        .await
        .expect("append an event");
    writer.shutdown().await;
    appended
}

/// The head sequence number of the ledger in `data_dir`.
pub fn head_seq(data_dir: &Path) -> u64 {
    let ledger = Ledger::open(data_dir, LedgerConfig::default()).expect("open the ledger");
    ledger.head().expect("read the head").map(|h| h.seq).unwrap_or(0)
}

/// Run stock git on the ledger of `data_dir`; returns trimmed stdout.
pub fn git(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(data_dir.join("ledger.git"))
        .args(args)
        .env("GIT_AUTHOR_NAME", "processor")
        .env("GIT_AUTHOR_EMAIL", "processor@camledger.local")
        .env("GIT_COMMITTER_NAME", "processor")
        .env("GIT_COMMITTER_EMAIL", "processor@camledger.local")
        .output()
        .expect("git is installed");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Judge every event not judged yet, up to the head, as the processor does: real verdict
/// commits on `refs/heads/verdicts` and their notes (`Ledger::append_verdicts`), so that the
/// restore's proof (`Ledger::verify`, which checks verdicts and notes) holds. `text`: `spam`
/// or `ok`.
pub fn add_verdict(data_dir: &Path, text: &str) {
    let ledger = Ledger::open(data_dir, LedgerConfig::default()).expect("open the ledger");
    let from = ledger.verdict_head().expect("read the verdict head").map_or(1, |h| h.event_seq + 1);
    let head = ledger.head().expect("read the head").map_or(0, |h| h.seq);
    let spam = text == "spam";
    let verdicts: Vec<Verdict> = (from..=head)
        .map(|seq| Verdict {
            event_seq: seq,
            event_id: ledger.event(seq).expect("read the event").id,
            spam,
            reasons: if spam { vec!["classifier".into()] } else { Vec::new() },
            scores: Default::default(),
            near_duplicate_of: None,
            model_sha256: "ab".repeat(32),
            processor_version: "test-1".into(),
            perceptual_hash: None,
        })
        .collect();
    ledger.append_verdicts(&verdicts).expect("append the verdicts");
}

/// Every ref and its value, as stock git lists them.
pub fn refs(data_dir: &Path) -> String {
    git(data_dir, &["for-each-ref", "--format=%(refname) %(objectname)"])
}

/// Create `<data_dir>/camledger.sqlite` with one registered camera (as the API would).
pub async fn write_registry(data_dir: &Path, camera: &str) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("camledger.sqlite"))
        .create_if_missing(true)
        .connect()
        .await
        .expect("open the registry");
    sqlx::query("CREATE TABLE IF NOT EXISTS principals (role TEXT NOT NULL, name TEXT NOT NULL, token_hash BLOB NOT NULL, PRIMARY KEY (role, name))")
        .execute(&mut conn)
        .await
        .expect("create the table");
    sqlx::query("INSERT INTO principals (role, name, token_hash) VALUES ('camera', ?, ?)")
        .bind(camera)
        .bind(vec![7u8; 32])
        .execute(&mut conn)
        .await
        .expect("insert a camera");
    sqlx::Connection::close(conn).await.expect("close the registry");
}

/// The camera names in `<data_dir>/camledger.sqlite`.
pub async fn registry_cameras(data_dir: &Path) -> Vec<String> {
    use sqlx::{ConnectOptions, Row};
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.join("camledger.sqlite"))
        .connect()
        .await
        .expect("open the restored registry");
    let rows =
        sqlx::query("SELECT name FROM principals ORDER BY name").fetch_all(&mut conn).await.expect("read cameras");
    rows.iter().map(|r| r.get::<String, _>("name")).collect()
}

/// Entries in `dir` (to check that a failed restore left nothing behind).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}
