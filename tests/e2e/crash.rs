//! Durability: an acknowledged event survives SIGKILL at any point, and no 2xx goes out
//! before the event's batch was fsynced (checked by making fsync fail).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// Uploads distinct images from 16 concurrent clients until the server dies or refuses;
/// resolves to what was acknowledged (seq -> sha256).
fn upload_until_stopped(app: &TestApp, first: u64) -> tokio::task::JoinHandle<BTreeMap<u64, String>> {
    let (client, url, token) = (app.client.clone(), app.url("/v1/images"), app.camera_token.clone());
    tokio::spawn(upload_from_clients(client, url, token, first))
}

async fn upload_from_clients(client: reqwest::Client, url: String, token: String, first: u64) -> BTreeMap<u64, String> {
    let mut uploads = tokio::task::JoinSet::new();
    for c in 0..16u64 {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        uploads.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000u64 {
                let bytes = jpeg(first + c * 10_000 + i);
                let sent = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "image/jpeg")
                    .body(bytes.clone())
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 201 {
                    break;
                }
                let Ok(answer) = response.json::<Value>().await else {
                    break;
                };
                acked.push((answer["seq"].as_u64().unwrap(), sha256_hex(&bytes)));
            }
            acked
        });
    }
    let mut acked = BTreeMap::new();
    while let Some(result) = uploads.join_next().await {
        acked.extend(result.unwrap());
    }
    acked
}

fn assert_every_ack_survived(app: &TestApp, acked: &BTreeMap<u64, String>) {
    let seqs = seqs_in_git(&app.git_dir());
    let head = seqs.first().copied().unwrap_or(0);
    assert_eq!(seqs, (1..=head).rev().collect::<Vec<_>>(), "seqs are gapless after the crash");
    for (seq, sha) in acked {
        assert!(*seq <= head, "acknowledged seq {seq} is missing (head {head})");
        let id = app.git(&["rev-parse", &format!("refs/heads/events~{}", head - seq)]);
        let event: Value =
            serde_json::from_str(&app.git(&["cat-file", "blob", &format!("{}:event.json", id.trim())])).unwrap();
        assert_eq!(&event["sha256"], sha, "seq {seq}");
    }
    assert_fsck_clean(&app.git_dir());
}

#[tokio::test]
async fn sigkill_during_uploads_loses_no_acknowledged_event() {
    let mut app = TestApp::spawn().await;
    // Kill at several points of the write path: early, mid-stream, later.
    for (round, delay_ms) in [5u64, 60, 250].into_iter().enumerate() {
        let uploads = upload_until_stopped(&app, round as u64 * 1_000_000);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        app.kill();
        let acked = uploads.await.unwrap();
        assert_every_ack_survived(&app, &acked);

        app.start();
        // The restarted server continues the sequence and verifies clean.
        let response = app.upload(jpeg(9_000_000 + round as u64)).await;
        assert_eq!(response.status(), 201);
        camledger(&["verify", "--data-dir", app.dir()]);
    }
}

#[tokio::test]
async fn a_failing_fsync_answers_no_2xx_and_loses_nothing_acknowledged() {
    let mut app = TestApp::spawn_with(&["--fail-fsync-after", "40"]).await;
    let acked = upload_until_stopped(&app, 0).await.unwrap();
    assert!(!acked.is_empty(), "some batches were durable before fsync failed");
    // Uploads stopped because the server refused (503), not because it died.
    let refused = app.upload(jpeg(5_000_000)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"], "unavailable");
    app.kill();

    // Restarted without the fault, everything acknowledged before the failure is there.
    app.start_without_faults();
    assert_every_ack_survived(&app, &acked);
    assert_eq!(app.upload(jpeg(6_000_000)).await.status(), 201);
}

/// A tmpfs of a fixed size mounted on a temporary directory, unmounted on drop. `None` where
/// this process may not mount (the test then says so and checks nothing).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let options = format!("size={size}");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs { dir })
    }

    fn grow_to(&self, size: &str) {
        let options = format!("remount,size={size}");
        let status = std::process::Command::new("mount").args(["-o", &options]).arg(self.dir.path()).status();
        assert!(status.is_ok_and(|s| s.success()), "remounting the tmpfs larger");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_uploads_with_503_loses_nothing_and_recovers_when_space_returns() {
    let Some(disk) = Tmpfs::mount("6m") else {
        eprintln!("SKIPPED a_full_disk_…: this process may not mount a tmpfs (needs root or CAP_SYS_ADMIN)");
        return;
    };
    let dir = disk.dir.path().join("data");
    let data = dir.to_str().expect("utf-8 path");
    let camera = last_word(&camledger(&["cameras", "add", "cam-1", "--data-dir", data]));
    let auditor = last_word(&camledger(&["tokens", "add", "alice", "--role", "auditor", "--data-dir", data]));
    let mut app = TestApp::spawn_on(dir.clone(), camera, auditor);
    let images = camledger_api::bench::JpegFactory::new(60_000).expect("jpeg factory");

    // ~100 uploads of 60 KB fill 6 MB; keep going until the disk has refused 10 in a row.
    let (mut acked, mut refused_in_a_row, mut refusals) = (BTreeMap::new(), 0, 0);
    for n in 0..400u64 {
        let bytes = images.make(n);
        let response = app.upload(bytes.clone()).await;
        match response.status().as_u16() {
            201 => {
                let answer: Value = response.json().await.unwrap();
                acked.insert(answer["seq"].as_u64().unwrap(), sha256_hex(&bytes));
                refused_in_a_row = 0;
            }
            status => {
                assert_eq!(status, 503, "a full disk is a retryable refusal");
                let body: Value = response.json().await.expect("a JSON error body");
                assert_eq!(body["error"], "unavailable", "{body}");
                refusals += 1;
                refused_in_a_row += 1;
                if refused_in_a_row == 10 {
                    break;
                }
            }
        }
    }
    assert!(refused_in_a_row == 10 && acked.len() > 20, "the disk filled: {} acked, {refusals} refused", acked.len());
    assert_every_ack_survived(&app, &acked);

    // Space comes back: the same server accepts again without a restart.
    disk.grow_to("32m");
    let response = app.upload(images.make(10_000)).await;
    assert_eq!(response.status(), 201, "accepting again once there is space");
    let seq = response.json::<Value>().await.unwrap()["seq"].as_u64().unwrap();
    assert_eq!(seq, acked.keys().max().unwrap() + 1, "the sequence continues without a gap");

    app.kill();
    app.start();
    assert_every_ack_survived(&app, &acked);
    camledger(&["verify", "--data-dir", data]);
}
