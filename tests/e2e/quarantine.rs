//! Quarantine: a camera whose recent verdicts are mostly spam is refused (429 `quarantined`)
//! until an operator releases it; both are signed commits on `refs/heads/cameras`.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// Waits (up to 30 s) until `refs/heads/cameras` holds `count` commits.
async fn wait_for_actions(app: &TestApp, count: usize) -> Vec<String> {
    for _ in 0..300 {
        let out = std::process::Command::new("git")
            .args(["--git-dir", app.git_dir().to_str().unwrap(), "log", "--format=%H %s", "refs/heads/cameras", "--"])
            .output()
            .expect("running git");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if out.status.success() && lines.len() >= count {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("refs/heads/cameras did not reach {count} commits within 30 s");
}

fn events_head(app: &TestApp) -> u64 {
    app.git(&["rev-list", "--count", "refs/heads/events"]).trim().parse().unwrap()
}

async fn refused_as_quarantined(response: reqwest::Response) {
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none(), "only a release ends a quarantine");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "quarantined", "{body}");
}

#[tokio::test]
async fn a_spamming_camera_is_quarantined_on_the_record_until_an_operator_releases_it() {
    let mut app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL, "--quarantine-after", "3/4"]).await;
    let other = app.add_camera("cam-2");
    // Four blank frames (the first blank, the rest its duplicates): four spam verdicts.
    for _ in 0..4 {
        assert!(app.upload(flat_black_jpeg()).await.status().is_success());
    }
    app.wait_for_verdict(4).await;
    let actions = wait_for_actions(&app, 1).await;
    assert!(actions[0].ends_with("Quarantine camera cam-1"), "{actions:?}");

    // Refused, nothing written; another camera is unaffected.
    refused_as_quarantined(app.upload(jpeg(7)).await).await;
    assert_eq!(events_head(&app), 4, "nothing was written");
    assert_eq!(app.upload_as(&other, jpeg(8), "image/jpeg").await.status(), 201);

    // The record: signed, canonical JSON with the evidence, readable with stock git.
    let record: Value =
        serde_json::from_str(&app.git(&["cat-file", "blob", "refs/heads/cameras:camera-action.json"])).unwrap();
    assert_eq!(record["action"], "quarantine");
    assert_eq!(record["camera"], "cam-1");
    assert_eq!(record["by"], "camledger");
    assert_eq!(record["evidence"]["window"], 4);
    assert_eq!(record["evidence"]["spam"], 4);
    assert_eq!(record["evidence"]["last_verdict_seq"], 4);
    let signers = app.path().join("allowed_signers");
    let keys = app.get("/v1/keys", &app.auditor_token).await.text().await.unwrap();
    std::fs::write(&signers, keys).unwrap();
    let allowed = format!("gpg.ssh.allowedSignersFile={}", signers.display());
    let verified =
        git_client(&app.git_dir(), &["-c", "gpg.format=ssh", "-c", &allowed, "verify-commit", "refs/heads/cameras"]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let listed = camledger(&["cameras", "list", "--data-dir", app.dir()]);
    assert!(listed.lines().any(|l| l.starts_with("cam-1\t") && l.contains("quarantined (4 of its last 4")), "{listed}");

    // A restart keeps the quarantine (git is the source of truth).
    app.restart_with(&["--workers", "1", "--model", TINY_MODEL, "--quarantine-after", "3/4"]);
    refused_as_quarantined(app.upload(jpeg(9)).await).await;

    // Released by an operator: accepted again within a second or two, and on the record.
    let released = camledger(&[
        "cameras",
        "release",
        "cam-1",
        "--reason",
        "lens cleaned",
        "--by",
        "alice",
        "--data-dir",
        app.dir(),
    ]);
    assert!(released.contains("release camera cam-1"), "{released}");
    let actions = wait_for_actions(&app, 2).await;
    assert!(actions[0].ends_with("Release camera cam-1"), "{actions:?}");
    let release: Value =
        serde_json::from_str(&app.git(&["cat-file", "blob", "refs/heads/cameras:camera-action.json"])).unwrap();
    assert_eq!((release["action"].as_str(), release["by"].as_str()), (Some("release"), Some("alice")));
    let mut accepted = false;
    for _ in 0..30 {
        let response = app.upload(jpeg(10)).await;
        if response.status() == 201 {
            accepted = true;
            break;
        }
        refused_as_quarantined(response).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "a released camera is accepted within 3 s");
    assert_eq!(events_head(&app), 6, "four blanks, cam-2's frame and the accepted one");
    // Releasing again is refused: it is not quarantined.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_camledger"))
        .args(["cameras", "release", "cam-1", "--data-dir", app.dir()])
        .output()
        .unwrap();
    assert!(!again.status.success());

    // `camledger verify` checks the chain (and, with the published keys, its signatures).
    let verify = camledger(&["verify", "--data-dir", app.dir(), "--allowed-signers", signers.to_str().unwrap()]);
    assert!(verify.contains("2 camera actions"), "{verify}");
}
