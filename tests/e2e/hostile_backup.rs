//! Regression: whoever could write to the snapshot database got command execution on the
//! restoring host (a `core.pager` in a snapshot's manifest ran on `git log` of the restored
//! ledger). The real binary, the real MariaDB, the stock `git` on a terminal.

use std::path::Path;
use std::process::Command;

use crate::backup::{backup_key, camledger_fails, mariadb, TestDatabase};
use crate::helpers::*;

fn hostile_config(marker: &Path) -> String {
    format!("[core]\n\tpager = touch {m} && cat\n\tfsmonitor = touch {m}\n", m = marker.display())
}

/// `git log` on a terminal (a pty from `script`) with `GIT_PAGER` unset: a `core.pager` in
/// the repository's config runs; without one, `PAGER=cat` does.
fn git_log_on_a_terminal(git_dir: &Path) {
    let out = Command::new("script")
        .args(["-qec", &format!("git --git-dir '{}' log -1", git_dir.display()), "/dev/null"])
        .env_remove("GIT_PAGER")
        .env("PAGER", "cat")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script (util-linux) and git are installed");
    assert!(out.status.success(), "git log: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_pager_planted_in_the_snapshot_database_fails_verify_and_restore_and_never_runs() {
    use std::os::unix::fs::PermissionsExt;

    let db = TestDatabase::create();
    let app = TestApp::spawn().await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    camledger(&["snapshot", "--data-dir", app.dir(), "--database-url", &db.url()]);
    let key = backup_key(&app);
    let mode = std::fs::metadata(&key).expect("the first snapshot creates the key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("pwned");
    let config = hostile_config(&marker).replace('\n', "\\n").replace('\t', "\\t");
    mariadb(&format!("UPDATE {}.snapshots SET manifest = JSON_SET(manifest, '$.config', '{config}')", db.name));

    let err = camledger_fails(&["snapshots", "verify", "--database-url", &db.url(), "--backup-key", &key]);
    assert!(err.contains("seal does not match"), "{err}");
    let target = work.path().join("restored");
    let err = camledger_fails(&[
        "restore",
        "--database-url",
        &db.url(),
        "--backup-key",
        &key,
        "--to",
        target.to_str().unwrap(),
    ]);
    assert!(err.contains("seal does not match"), "{err}");
    assert!(!target.exists(), "nothing restored");
    assert!(!marker.exists());

    // A restore is never attempted without the key.
    let err = camledger_fails(&["restore", "--database-url", &db.url(), "--to", target.to_str().unwrap()]);
    assert!(err.contains("--backup-key"), "{err}");
}

#[tokio::test]
async fn a_restored_ledger_gets_camledgers_own_config_and_git_log_runs_no_pager_of_the_snapshot() {
    let db = TestDatabase::create();
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let config_path = app.git_dir().join("config");
    let own = std::fs::read_to_string(&config_path).unwrap();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("pwned");
    std::fs::write(&config_path, format!("{own}{}", hostile_config(&marker))).unwrap();
    camledger(&["snapshot", "--data-dir", app.dir(), "--database-url", &db.url()]);

    let target = work.path().join("restored");
    let key = backup_key(&app);
    camledger(&["restore", "--database-url", &db.url(), "--backup-key", &key, "--to", target.to_str().unwrap()]);
    let restored = target.join("ledger.git");
    assert_eq!(
        std::fs::read_to_string(restored.join("config")).unwrap(),
        own,
        "camledger's config, not the snapshot's"
    );
    git_log_on_a_terminal(&restored);
    assert!(!marker.exists(), "a pager from the snapshot ran");
}

#[tokio::test]
async fn a_chunk_rewritten_with_a_matching_sha256_fails_verify_with_a_clear_message() {
    let db = TestDatabase::create();
    let app = TestApp::spawn().await;
    for n in 0..2 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    camledger(&["snapshot", "--data-dir", app.dir(), "--database-url", &db.url()]);
    mariadb(&format!(
        "UPDATE {}.snapshot_chunks SET bytes = 'forged', sha256 = SHA2('forged', 256) WHERE seq = 0 AND artifact = 'pack'",
        db.name
    ));
    let err = camledger_fails(&["snapshots", "verify", "--database-url", &db.url(), "--backup-key", &backup_key(&app)]);
    assert!(err.contains("not authentic"), "{err}");
}
