use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn an_uploaded_image_becomes_an_event_that_stock_git_can_read() {
    let app = TestApp::spawn().await;
    let image = jpeg(1);

    let response = app.upload_captured_at(image.clone(), "2026-11-22T01:02:03+01:00").await;

    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["seq"], 1);
    assert_eq!(answer["sha256"], sha256_hex(&image));
    assert_eq!(answer["duplicate_of"], Value::Null);
    let id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(app.git(&["rev-parse", "refs/heads/events"]).trim(), id);

    // The image is in the commit's tree, byte for byte.
    let blob = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(app.git_dir())
        .args(["cat-file", "blob", &format!("{id}:image.jpg")])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(blob, image);

    // event.json says what was sent.
    let event: Value = serde_json::from_str(&app.git(&["cat-file", "blob", &format!("{id}:event.json")])).unwrap();
    assert_eq!(event["format_version"], 1);
    assert_eq!(event["seq"], 1);
    assert_eq!(event["camera"], "cam-1");
    assert_eq!(event["sha256"], sha256_hex(&image));
    assert_eq!(event["size"], image.len());
    assert_eq!(event["media_type"], "image/jpeg");
    assert_eq!(event["width"], 96);
    assert_eq!(event["height"], 64);
    assert_eq!(event["captured_at"], "2026-11-22T00:02:03.000000Z");
    assert_eq!(event["duplicate_of"], Value::Null);

    // The commit message carries the trailers; the author is the camera.
    let message = app.git(&["log", "-1", "--format=%an%n%B", "refs/heads/events"]);
    assert!(message.starts_with("cam-1\n"), "{message}");
    assert!(message.contains("Seq: 1\n") && message.contains("Camera: cam-1\n"), "{message}");
    assert!(message.contains(&format!("Sha256: {}", sha256_hex(&image))), "{message}");

    // Read back over HTTP, byte-identical.
    let back = app.get("/v1/events/1/image", &app.auditor_token).await;
    assert_eq!(back.status(), 200);
    assert_eq!(back.headers()["content-type"], "image/jpeg");
    assert_eq!(back.headers()["etag"].to_str().unwrap(), format!("\"{}\"", sha256_hex(&image)));
    assert_eq!(back.bytes().await.unwrap().as_ref(), image.as_slice());
    assert_fsck_clean(&app.git_dir());
}

#[tokio::test]
async fn events_are_chained_in_order_and_match_what_was_sent() {
    let app = TestApp::spawn().await;
    let mut sent = Vec::new();
    for n in 0..12u64 {
        let (bytes, content_type) = if n % 2 == 0 { (jpeg(n), "image/jpeg") } else { (png(n), "image/png") };
        let response = app.upload_as(&app.camera_token, bytes.clone(), content_type).await;
        assert_eq!(response.status(), 201);
        sent.push(bytes);
    }

    assert_eq!(seqs_in_git(&app.git_dir()), (1..=12).rev().collect::<Vec<_>>());
    let parents = app.git(&["rev-list", "--parents", "refs/heads/events"]);
    for line in parents.lines() {
        assert!(line.split(' ').count() <= 2, "an event has more than one parent: {line}");
    }
    for (i, bytes) in sent.iter().enumerate() {
        let event = app.get_json(&format!("/v1/events/{}", i + 1)).await;
        assert_eq!(event["event"]["sha256"], sha256_hex(bytes));
        let name = if i % 2 == 0 { "image.jpg" } else { "image.png" };
        let id = event["id"].as_str().unwrap();
        let tree = app.git(&["ls-tree", "--name-only", id]);
        assert_eq!(tree.lines().collect::<Vec<_>>(), vec!["event.json", name]);
    }
    assert_fsck_clean(&app.git_dir());
}

#[tokio::test]
async fn a_repeated_image_becomes_a_duplicate_event_sharing_one_blob() {
    let app = TestApp::spawn().await;
    let image = jpeg(7);
    assert_eq!(app.upload(image.clone()).await.status(), 201);
    let again = app.upload(image.clone()).await;
    assert_eq!(again.status(), 200);
    let answer: Value = again.json().await.unwrap();
    assert_eq!(answer["seq"], 2);
    assert_eq!(answer["duplicate_of"], 1);

    let first = app.git(&["rev-parse", "refs/heads/events~1:image.jpg"]);
    let second = app.git(&["rev-parse", "refs/heads/events:image.jpg"]);
    assert_eq!(first, second, "git stores the image once");
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_gets_the_first_answer_and_writes_nothing() {
    let mut app = TestApp::spawn().await;
    let send = |app: &TestApp, bytes: Vec<u8>, key: &'static str| {
        app.client
            .post(app.url("/v1/images"))
            .bearer_auth(&app.camera_token)
            .header("content-type", "image/jpeg")
            .header("idempotency-key", key)
            .body(bytes)
            .send()
    };
    let first = send(&app, jpeg(1), "upload-0001").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let retry = send(&app, jpeg(1), "upload-0001").await.unwrap();
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(seqs_in_git(&app.git_dir()), vec![1]);

    // The key is remembered across a restart.
    app.signal("-TERM");
    app.start();
    let retry = send(&app, jpeg(1), "upload-0001").await.unwrap();
    assert_eq!(retry.json::<Value>().await.unwrap(), first);
    assert_eq!(seqs_in_git(&app.git_dir()), vec![1]);

    // The same key with other bytes is a client bug, not a retry.
    let reused = send(&app, jpeg(2), "upload-0001").await.unwrap();
    assert_eq!(reused.status(), 422);
    assert_eq!(reused.json::<Value>().await.unwrap()["error"], "idempotency_key_reused");
}

#[tokio::test]
async fn a_multipart_upload_answers_each_part_and_keeps_the_valid_ones() {
    let app = TestApp::spawn().await;
    let form = reqwest::multipart::Form::new()
        .part("a", reqwest::multipart::Part::bytes(jpeg(1)).file_name("a.jpg").mime_str("image/jpeg").unwrap())
        .part("b", reqwest::multipart::Part::bytes(b"<html>not an image</html>".to_vec()).file_name("b.jpg"))
        .part("c", reqwest::multipart::Part::bytes(png(3)).file_name("c.png").mime_str("image/png").unwrap());
    let response =
        app.client.post(app.url("/v1/images")).bearer_auth(&app.camera_token).multipart(form).send().await.unwrap();

    assert_eq!(response.status(), 201);
    let results: Vec<Value> = response.json().await.unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["status"], 201);
    assert_eq!(results[0]["seq"], 1);
    assert_eq!(results[1]["status"], 415);
    assert_eq!(results[1]["error"], "unsupported_format");
    assert_eq!(results[2]["status"], 201);
    assert_eq!(results[2]["seq"], 2);
    assert_eq!(seqs_in_git(&app.git_dir()), vec![2, 1]);
}

#[tokio::test]
async fn sigterm_finishes_gracefully_with_exit_code_zero() {
    let mut app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let status = app.signal("-TERM");
    assert!(status.success(), "{status:?}");
    assert_fsck_clean(&app.git_dir());
}
