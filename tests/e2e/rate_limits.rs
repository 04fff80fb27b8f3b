//! Per-camera rate limits: a camera over its token bucket gets 429 with Retry-After and
//! nothing is written; other cameras are unaffected; `cameras limit` overrides the default
//! from the camera's next request.

use crate::helpers::*;

async fn multipart(app: &TestApp, token: &str, images: std::ops::Range<u64>) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for n in images {
        let part = reqwest::multipart::Part::bytes(jpeg(n)).file_name(format!("{n}.jpg"));
        form = form.part(format!("p{n}"), part);
    }
    app.client.post(app.url("/v1/images")).bearer_auth(token).multipart(form).send().await.expect("an answer")
}

/// Events in the ledger, counted by `git`.
fn events(app: &TestApp) -> usize {
    seqs_in_git(&app.git_dir()).len()
}

#[tokio::test]
async fn a_camera_over_its_burst_gets_429_with_retry_after_and_nothing_is_written() {
    // 1 event per minute, burst 3: the fourth upload in a row is over the limit for a while.
    let app = TestApp::spawn_with(&["--rate-limit", "1/m", "--burst", "3"]).await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201, "upload {n} is within the burst");
    }
    let refused = app.upload(jpeg(3)).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["message"].as_str().unwrap().contains("nothing was written"), "{body}");
    assert_eq!(events(&app), 3, "the refused upload wrote nothing");

    // Another camera has a bucket of its own.
    let other = app.add_camera("cam-2");
    assert_eq!(app.upload_as(&other, jpeg(10), "image/jpeg").await.status(), 201);
}

#[tokio::test]
async fn a_multipart_upload_takes_one_token_per_image_all_or_none() {
    let app = TestApp::spawn_with(&["--rate-limit", "1/m", "--burst", "4"]).await;
    // Three images: three tokens, one left.
    assert_eq!(multipart(&app, &app.camera_token, 0..3).await.status(), 201);
    // Two more images need two tokens: refused whole, nothing written.
    let refused = multipart(&app, &app.camera_token, 3..5).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(events(&app), 3);
    // More images than the burst can ever allow: refused without Retry-After.
    let other = app.add_camera("cam-2");
    let too_many = multipart(&app, &other, 10..15).await;
    assert_eq!(too_many.status(), 429);
    assert!(too_many.headers().get("retry-after").is_none(), "waiting would not help");
    assert!(too_many.text().await.unwrap().contains("smaller requests"));
    assert_eq!(events(&app), 3);
}

#[tokio::test]
async fn cameras_limit_overrides_the_default_from_the_next_request() {
    let app = TestApp::spawn_with(&["--rate-limit", "1000/s"]).await;
    let out = camledger(&["cameras", "limit", "cam-1", "1/h", "--burst", "1", "--data-dir", app.dir()]);
    assert!(out.contains("limit 1/h, burst 1"), "{out}");
    assert_eq!(app.upload(jpeg(0)).await.status(), 201);
    assert_eq!(app.upload(jpeg(1)).await.status(), 429, "the camera's own limit is in force");
    let listed = camledger(&["cameras", "list", "--format", "json", "--data-dir", app.dir()]);
    let cameras: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(cameras[0]["rate_limit"]["burst"], 1);
    // Back on the default: the bucket refills at the server's 1000/s again.
    camledger(&["cameras", "limit", "cam-1", "default", "--data-dir", app.dir()]);
    assert_eq!(app.upload(jpeg(2)).await.status(), 201);
}

#[test]
fn malformed_rates_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    camledger(&["cameras", "add", "cam-1", "--data-dir", dir]);
    let out = std::process::Command::new(BIN)
        .args(["cameras", "limit", "cam-1", "ten/s", "--data-dir", dir])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a rate like 10/s"));
    let out =
        std::process::Command::new(BIN).args(["serve", "--rate-limit", "0/s", "--data-dir", dir]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
