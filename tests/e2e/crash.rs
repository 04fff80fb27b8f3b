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
