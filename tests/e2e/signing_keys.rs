//! The ledger's signing key as an operator and an auditor meet it: created privately on the
//! first start, shown by `camledger keys show`, served with its history by `GET /v1/keys`,
//! rotated without losing the old key's window, refused clearly when unusable.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use crate::helpers::*;

/// A fresh ed25519 key made by stock `ssh-keygen`, as an operator would make one.
fn ssh_keygen(path: &Path, kind: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "operator", "-f"])
        .arg(path)
        .status()
        .expect("running ssh-keygen");
    assert!(status.success());
}

async fn allowed_signers(app: &TestApp) -> String {
    let response = app.get("/v1/keys", &app.auditor_token).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    response.text().await.unwrap()
}

#[tokio::test]
async fn a_first_start_creates_a_private_key_whose_line_keys_show_and_the_api_agree_on() {
    let app = TestApp::spawn().await;
    let key = app.path().join("keys").join("ledger_ed25519");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    let shown = camledger(&["keys", "show", "--data-dir", app.dir()]);
    let line = shown.lines().last().unwrap();
    assert!(line.starts_with("camledger namespaces=\"git\" ssh-ed25519 "), "{shown}");
    assert!(shown.starts_with("fingerprint SHA256:"), "{shown}");
    assert_eq!(allowed_signers(&app).await, format!("{line}\n"));
    assert_eq!(app.get("/v1/keys", &app.camera_token).await.status(), 200, "public keys are no secret");
    let anonymous = app.client.get(app.url("/v1/keys")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_rotated_key_keeps_the_old_one_listed_with_a_closed_window() {
    let keys = tempfile::tempdir().unwrap();
    let (old, new) = (keys.path().join("old"), keys.path().join("new"));
    ssh_keygen(&old, "ed25519");
    ssh_keygen(&new, "ed25519");
    let mut app = TestApp::spawn_with(&["--signing-key", old.to_str().unwrap()]).await;
    assert!(!app.path().join("keys").join("ledger_ed25519").exists(), "no key is created beside a given one");
    app.restart_with(&["--signing-key", new.to_str().unwrap()]);

    let history = allowed_signers(&app).await;
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    let old_line = camledger(&["keys", "show", "--signing-key", old.to_str().unwrap(), "--data-dir", app.dir()]);
    let new_line = camledger(&["keys", "show", "--signing-key", new.to_str().unwrap(), "--data-dir", app.dir()]);
    let key_of = |line: &str| line.split(' ').skip(2).collect::<Vec<_>>().join(" ");
    assert_eq!(key_of(lines[0]), key_of(old_line.lines().last().unwrap()));
    assert_eq!(key_of(lines[1]), key_of(new_line.lines().last().unwrap()));
    assert!(lines[0].contains("valid-before=\"") && !lines[0].contains("valid-after"), "{history}");
    assert!(lines[1].contains("valid-after=\"") && !lines[1].contains("valid-before"), "{history}");
}

#[test]
fn a_missing_or_non_ed25519_signing_key_stops_serve_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = |key: &Path| {
        Command::new(BIN)
            .args(["serve", "--workers", "0", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--signing-key")
            .arg(key)
            .output()
            .unwrap()
    };
    let missing = run(&dir.path().join("nowhere"));
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("--signing-key") && stderr.contains("nowhere"), "{stderr}");

    let rsa = dir.path().join("rsa");
    ssh_keygen(&rsa, "rsa");
    let refused = run(&rsa);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("ed25519"), "{stderr}");
}

#[test]
fn keys_show_never_creates_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["keys", "show", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no signing key"));
    assert!(!dir.path().join("keys").exists());
}
