//! Signed checkpoints in an anchor store outside the repository: `serve` writes them, and
//! `camledger checkpoints verify` names the attacks nothing inside a repository can reveal —
//! a rollback, a history re-chained to its head, a ledger regenerated without the key. The
//! attacker here can write the data dir but holds neither the signing key (kept outside
//! it) nor the anchor store (a MariaDB database).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::backup::{camledger_fails, TestDatabase};
use crate::helpers::*;

/// The ledger's key, outside every data dir, and its allowed-signers file (what auditors
/// got from `camledger keys show` on the key's machine).
struct LedgerKey {
    dir: tempfile::TempDir,
}

impl LedgerKey {
    fn create() -> LedgerKey {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ledger_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ledger", "-f"])
            .arg(&key)
            .output()
            .expect("ssh-keygen runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let shown = camledger(&["keys", "show", "--signing-key", key.to_str().unwrap()]);
        std::fs::write(dir.path().join("allowed_signers"), shown.lines().last().unwrap().to_owned() + "\n").unwrap();
        LedgerKey { dir }
    }

    fn key(&self) -> String {
        self.dir.path().join("ledger_ed25519").to_str().unwrap().to_owned()
    }

    fn allowed_signers(&self) -> String {
        self.dir.path().join("allowed_signers").to_str().unwrap().to_owned()
    }
}

async fn serve_anchored(key: &LedgerKey, anchor_url: &str) -> TestApp {
    TestApp::spawn_with(&["--signing-key", &key.key(), "--checkpoint-interval", "1s", "--anchor-url", anchor_url]).await
}

/// Waits until `GET /v1/checkpoint` shows events seq `seq`; returns the checkpoint.
async fn checkpoint_at(app: &TestApp, seq: u64) -> Value {
    for _ in 0..100 {
        let response = app.get("/v1/checkpoint", &app.auditor_token).await;
        if response.status() == 200 {
            let checkpoint: Value = response.json().await.unwrap();
            if checkpoint["events_seq"] == seq {
                return checkpoint;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no checkpoint at events seq {seq} within 10 s");
}

fn verify(data_dir: &str, anchor_url: &str, key: &LedgerKey) -> std::process::Output {
    Command::new(BIN)
        .args(["checkpoints", "verify", "--data-dir", data_dir, "--anchor-url", anchor_url])
        .args(["--allowed-signers", &key.allowed_signers()])
        .env("CAMLEDGER_LOG", "warn")
        .output()
        .expect("running camledger")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn events(app: &TestApp) -> Vec<String> {
    app.git(&["rev-list", "--reverse", "refs/heads/events"]).lines().map(str::to_owned).collect()
}

/// A ledger with eight events whose checkpoint at seq 8 is anchored in MariaDB; the server
/// is stopped (so the attacker's changes are not checkpointed over).
async fn anchored_ledger(key: &LedgerKey, db: &TestDatabase) -> TestApp {
    let mut app = serve_anchored(key, &db.url()).await;
    for n in 0..8 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    checkpoint_at(&app, 8).await;
    app.signal("-TERM");
    app
}

#[tokio::test]
async fn serve_anchors_signed_checkpoints_in_mariadb_and_the_ledger_verifies_against_them() {
    let (key, db) = (LedgerKey::create(), TestDatabase::create());
    let app = serve_anchored(&key, &db.url()).await;
    let none = app.get("/v1/checkpoint", &app.auditor_token).await;
    assert_eq!(none.status(), 404, "no checkpoint before the first event");
    assert_eq!(none.json::<Value>().await.unwrap()["error"], "not_found");

    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    let checkpoint = checkpoint_at(&app, 3).await;
    let head = app.git(&["rev-parse", "refs/heads/events"]);
    assert_eq!(checkpoint["events_head"], head.trim());
    let note = checkpoint["note"].as_str().unwrap();
    assert!(note.starts_with(&format!("{}\n3\n", checkpoint["origin"].as_str().unwrap())), "{note}");
    assert!(note.contains("\n\n\u{2014} camledger/"), "{note}");
    assert_eq!(app.client.get(app.url("/v1/checkpoint")).send().await.unwrap().status(), 401);
    assert_eq!(app.get("/v1/checkpoint", &app.camera_token).await.status(), 200, "any valid token reads it");

    let listed: Vec<Value> =
        serde_json::from_str(&camledger(&["checkpoints", "list", "--anchor-url", &db.url(), "--format", "json"]))
            .unwrap();
    assert_eq!(listed.last().unwrap()["note"], note, "the latest listed is the one served");
    let healthz = app.get_json("/healthz").await;
    assert_eq!(healthz["checkpoints"]["last_checkpoint"]["events_seq"], 3);

    let verified = verify(app.dir(), &db.url(), &key);
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(String::from_utf8_lossy(&verified.stdout).contains("verified 1 anchored checkpoints"));
}

#[tokio::test]
async fn a_rollback_by_five_events_is_named_and_a_checkpoint_of_it_is_refused() {
    let (key, db) = (LedgerKey::create(), TestDatabase::create());
    let app = anchored_ledger(&key, &db).await;
    let ids = events(&app);

    app.git(&["update-ref", "refs/heads/events", &ids[2]]);

    let out = verify(app.dir(), &db.url(), &key);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("events chain is behind"), "{err}");
    assert!(err.contains("head is at seq 3") && err.contains("says seq 8"), "{err}");
    assert!(err.contains("rollback"), "{err}");

    let refused = camledger_fails(&[
        "checkpoint",
        "--data-dir",
        app.dir(),
        "--anchor-url",
        &db.url(),
        "--signing-key",
        &key.key(),
    ]);
    assert!(refused.contains("does not extend the previous one"), "{refused}");
    assert!(refused.contains("events seq 3") && refused.contains("events seq 8"), "{refused}");
    assert!(refused.contains(&ids[7]) && refused.contains(&ids[2]), "names both heads: {refused}");
}

#[tokio::test]
async fn event_1_changed_and_re_chained_to_the_head_is_named() {
    let (key, db) = (LedgerKey::create(), TestDatabase::create());
    let app = anchored_ledger(&key, &db).await;
    let old_head = events(&app).pop().unwrap();

    let new_head = rechain_with_event_1_changed(&app.git_dir());
    app.git(&["update-ref", "refs/heads/events", &new_head]);
    assert_eq!(seqs_in_git(&app.git_dir()), (1..=8).rev().collect::<Vec<u64>>(), "a self-consistent chain");

    let out = verify(app.dir(), &db.url(), &key);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("has commit {new_head} at seq 8")), "{err}");
    assert!(err.contains(&old_head) && err.contains("rewritten or regenerated"), "{err}");
}

#[tokio::test]
async fn a_ledger_regenerated_by_camledger_without_the_key_is_named() {
    let (key, db) = (LedgerKey::create(), TestDatabase::create());
    let app = anchored_ledger(&key, &db).await;

    // The attacker runs camledger on a fresh data dir with a key of their own and uploads the
    // same images minus one (and one of their own, to reach the same length).
    let regenerated = TestApp::spawn().await;
    for n in (0..8).filter(|&n| n != 3).chain([100]) {
        assert_eq!(regenerated.upload(jpeg(n)).await.status(), 201);
    }

    let out = verify(regenerated.dir(), &db.url(), &key);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("anchored checkpoint") && err.contains("events seq 8"), "{err}");
    assert!(err.contains("rewritten or regenerated"), "{err}");
    assert!(verify(app.dir(), &db.url(), &key).status.success(), "the real ledger still verifies");
}

#[tokio::test]
async fn a_sqlite_anchor_store_round_trips_checkpoints() {
    let key = LedgerKey::create();
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", store_dir.path().join("anchors.sqlite").display());
    let app = serve_anchored(&key, &url).await;
    for n in 0..2 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    checkpoint_at(&app, 2).await;

    let written =
        camledger(&["checkpoint", "--data-dir", app.dir(), "--anchor-url", &url, "--signing-key", &key.key()]);
    assert!(written.contains("events seq 2"), "{written}");
    let listed: Vec<Value> = serde_json::from_str(&camledger(&[
        "checkpoints",
        "list",
        "--anchor-url",
        &url,
        "--allowed-signers",
        &key.allowed_signers(),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(listed.iter().map(|c| c["events_seq"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 2]);
    assert!(verify(app.dir(), &url, &key).status.success());
}

/// Rewrites `refs/heads/events` history with stock git: event 1's `event.json` and message
/// name another camera, and every later commit is re-made on top (same trees and messages),
/// so the chain is consistent in itself. Returns the new head (the ref is not moved).
fn rechain_with_event_1_changed(git_dir: &Path) -> String {
    let ids: Vec<String> =
        git(git_dir, &["rev-list", "--reverse", "refs/heads/events"]).lines().map(str::to_owned).collect();
    let mut parent: Option<String> = None;
    for (i, id) in ids.iter().enumerate() {
        let raw = git(git_dir, &["cat-file", "commit", id]);
        let (headers, mut message) = raw.split_once("\n\n").map(|(h, m)| (h.to_owned(), m.to_owned())).unwrap();
        let mut tree = git(git_dir, &["rev-parse", &format!("{id}^{{tree}}")]).trim().to_owned();
        if i == 0 {
            tree = tree_with_other_camera(git_dir, &tree);
            message = message.replace("cam-1", "cam-9");
        }
        let mut text = format!("tree {tree}\n");
        if let Some(parent) = &parent {
            text.push_str(&format!("parent {parent}\n"));
        }
        for line in headers.lines().filter(|l| l.starts_with("author ") || l.starts_with("committer ")) {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&message);
        parent = Some(git_stdin(git_dir, &["hash-object", "-t", "commit", "-w", "--stdin"], &text));
    }
    parent.unwrap()
}

fn tree_with_other_camera(git_dir: &Path, tree: &str) -> String {
    let mut listing = String::new();
    for line in git(git_dir, &["ls-tree", tree]).lines() {
        let (meta, name) = line.split_once('\t').unwrap();
        if name == "event.json" {
            let oid = meta.rsplit(' ').next().unwrap();
            let json = git(git_dir, &["cat-file", "blob", oid]).replace("cam-1", "cam-9");
            let changed = git_stdin(git_dir, &["hash-object", "-w", "--stdin"], &json);
            listing.push_str(&format!("100644 blob {changed}\tevent.json\n"));
        } else {
            listing.push_str(line);
            listing.push('\n');
        }
    }
    git_stdin(git_dir, &["mktree"], &listing)
}

fn git_stdin(git_dir: &Path, args: &[&str], input: &str) -> String {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running git");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn audit(repo: &Path, key: &LedgerKey, checkpoint: &Path) -> std::process::Output {
    audit_with(repo, key, checkpoint, &[])
}

fn audit_with(repo: &Path, key: &LedgerKey, checkpoint: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/audit-ledger"))
        .arg("--repo")
        .arg(repo)
        .args(["--allowed-signers", &key.allowed_signers()])
        .arg("--checkpoint")
        .arg(checkpoint)
        .args(extra)
        .output()
        .expect("running scripts/audit-ledger")
}

#[tokio::test]
async fn the_auditor_script_passes_a_clone_and_names_a_rolled_back_one() {
    let (key, db) = (LedgerKey::create(), TestDatabase::create());
    let app = serve_anchored(&key, &db.url()).await;
    for n in 0..8 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    let checkpoint = checkpoint_at(&app, 8).await;
    let work = tempfile::tempdir().unwrap();
    let note = work.path().join("checkpoint.json");
    std::fs::write(&note, checkpoint.to_string()).unwrap();
    let clone = work.path().join("clone.git");
    let cloned = Command::new("git").args(["clone", "-q", "--mirror"]).arg(app.git_dir()).arg(&clone).status().unwrap();
    assert!(cloned.success());

    let passed = audit(&clone, &key, &note);
    let report = String::from_utf8_lossy(&passed.stdout);
    assert!(passed.status.success(), "{report}");
    assert!(report.contains("seq 1..8") && report.contains("ok: 8 event commit signatures"), "{report}");
    assert!(report.contains("signed by an allowed key"), "{report}");

    let stranger = LedgerKey::create();
    let forged = audit(&clone, &stranger, &note);
    assert!(!forged.status.success());
    assert!(String::from_utf8_lossy(&forged.stdout).contains("seq 1 commit"), "the first commit's signature fails");
    let forged = audit_with(&clone, &stranger, &note, &["--skip-commit-signatures"]);
    assert!(!forged.status.success());
    assert!(String::from_utf8_lossy(&forged.stdout).contains("no signature by a key in the allowed-signers file"));

    let third = git(&clone, &["rev-list", "--reverse", "refs/heads/events"]).lines().nth(2).unwrap().to_owned();
    git(&clone, &["update-ref", "refs/heads/events", &third]);
    let rolled_back = audit(&clone, &key, &note);
    let report = String::from_utf8_lossy(&rolled_back.stdout);
    assert!(!rolled_back.status.success(), "{report}");
    assert!(report.contains("ends at seq 3, the checkpoint says seq 8: the ledger was rolled back"), "{report}");
}

fn listed(url: &str) -> Vec<u64> {
    let json: Vec<Value> =
        serde_json::from_str(&camledger(&["checkpoints", "list", "--anchor-url", url, "--format", "json"])).unwrap();
    json.iter().map(|c| c["events_seq"].as_u64().unwrap()).collect()
}

/// Serves with an hour between interval checkpoints: every checkpoint the test sees comes
/// from a snapshot or the shutdown (the first tick finds the ledger empty and writes none).
async fn serve_without_interval_checkpoints(key: &LedgerKey, url: &str, extra: &[&str]) -> TestApp {
    let key_path = key.key();
    let mut args = vec!["--signing-key", &key_path, "--anchor-url", url, "--checkpoint-interval", "1h"];
    args.extend_from_slice(extra);
    TestApp::spawn_with(&args).await
}

#[tokio::test]
async fn the_last_batch_is_checkpointed_at_shutdown() {
    let key = LedgerKey::create();
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", store_dir.path().join("anchors.sqlite").display());
    let mut app = serve_without_interval_checkpoints(&key, &url, &[]).await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    assert_eq!(app.get("/v1/checkpoint", &app.auditor_token).await.status(), 404, "none before shutdown");

    assert!(app.signal("-TERM").success());

    assert_eq!(listed(&url), [3]);
}

#[tokio::test]
async fn every_snapshot_writes_a_checkpoint() {
    let key = LedgerKey::create();
    let store_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", store_dir.path().join("anchors.sqlite").display());
    let mut app = serve_without_interval_checkpoints(&key, &url, &["--snapshot-interval", "1s"]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    checkpoint_at(&app, 1).await;
    assert_eq!(app.upload(jpeg(2)).await.status(), 201);
    checkpoint_at(&app, 2).await;
    app.signal("-TERM");

    let out = camledger(&["snapshot", "--data-dir", app.dir(), "--anchor-url", &url, "--signing-key", &key.key()]);
    assert!(out.contains("anchored checkpoint"), "{out}");
    let seqs = listed(&url);
    assert_eq!(seqs[seqs.len() - 2..], [2, 2], "camledger snapshot wrote one more at the same heads: {seqs:?}");
}

#[tokio::test]
async fn checkpoints_cover_the_verdicts_and_a_rolled_back_verdict_chain_is_named() {
    let (key, db) = (LedgerKey::create(), TestDatabase::create());
    let key_path = key.key();
    let url = db.url();
    let mut app = TestApp::spawn_with(&[
        "--signing-key",
        &key_path,
        "--checkpoint-interval",
        "1s",
        "--anchor-url",
        &url,
        "--workers",
        "1",
        "--model",
        TINY_MODEL,
    ])
    .await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    let mut checkpoint = checkpoint_at(&app, 3).await;
    for _ in 0..100 {
        if checkpoint["verdicts_seq"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        checkpoint = app.get_json("/v1/checkpoint").await;
    }
    assert_eq!(checkpoint["verdicts_seq"], 3, "{checkpoint}");
    assert_eq!(checkpoint["verdicts_head"], app.git(&["rev-parse", "refs/heads/verdicts"]).trim());
    app.signal("-TERM");
    let work = tempfile::tempdir().unwrap();
    let note = work.path().join("checkpoint.txt");
    std::fs::write(&note, checkpoint["note"].as_str().unwrap()).unwrap();
    let passed = audit(&app.git_dir(), &key, &note);
    assert!(passed.status.success(), "{}", String::from_utf8_lossy(&passed.stdout));
    assert!(String::from_utf8_lossy(&passed.stdout).contains("verdicts seq 3"));

    let first_verdict = app.git(&["rev-list", "--reverse", "refs/heads/verdicts"]).lines().next().unwrap().to_owned();
    app.git(&["update-ref", "refs/heads/verdicts", &first_verdict]);

    let out = verify(app.dir(), &db.url(), &key);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("verdicts chain is behind"), "{}", stderr(&out));
    let audited = audit(&app.git_dir(), &key, &note);
    let report = String::from_utf8_lossy(&audited.stdout);
    assert!(!audited.status.success() && report.contains("the verdicts were rolled back"), "{report}");
}

#[test]
fn serve_refuses_to_start_when_the_anchor_store_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--workers", "0"])
        .args(["--anchor-url", "mysql://root@127.0.0.1:1/anchors"])
        .env("CAMLEDGER_LOG", "error")
        .output()
        .unwrap();
    let took = started.elapsed();

    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(took < Duration::from_secs(3), "took {took:?}: {err}");
    assert!(err.contains("opening the anchor store mysql://root@127.0.0.1:1/anchors"), "{err}");
    assert!(err.to_lowercase().contains("connection refused") && !err.contains("snapshot"), "{err}");
}

#[tokio::test]
async fn serve_on_a_rolled_back_ledger_keeps_serving_and_shows_the_refusal_to_readers() {
    let (key, db) = (LedgerKey::create(), TestDatabase::create());
    let mut app = anchored_ledger(&key, &db).await;
    let ids = events(&app);
    app.git(&["update-ref", "refs/heads/events", &ids[2]]);

    app.start();

    let healthz = app.get_json("/healthz").await;
    let error = healthz["checkpoints"]["last_error"].as_str().unwrap_or_default().to_owned();
    // The start check's refusal, or the first interval checkpoint's if that one came first:
    // either way the reader learns the ledger went back from what was anchored.
    let start_check = error.contains("does not match its latest anchored checkpoint") && error.contains("rollback");
    let interval = error.contains("does not extend the previous one") && error.contains("goes back");
    assert!(start_check || interval, "{healthz}");
    let anonymous: Value = app.client.get(app.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert!(anonymous.get("checkpoints").is_none(), "only readers see checkpoint errors: {anonymous}");
    assert_eq!(app.upload(jpeg(50)).await.status(), 201, "uploads go on");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let healthz = app.get_json("/healthz").await;
    let error = healthz["checkpoints"]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("does not extend the previous one"), "{healthz}");
    assert_eq!(listed(&db.url()).last(), Some(&8), "nothing that does not extend is anchored");
}
