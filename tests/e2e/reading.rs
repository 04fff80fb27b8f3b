use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn a_camera_reads_only_its_own_events() {
    let app = TestApp::spawn().await;
    let other = app.add_camera("cam-2");
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    assert_eq!(app.upload_as(&other, jpeg(2), "image/jpeg").await.status(), 201);

    assert_eq!(app.get("/v1/events/1", &app.camera_token).await.status(), 200);
    assert_eq!(app.get("/v1/events/2", &app.camera_token).await.status(), 404);
    assert_eq!(app.get("/v1/events/2/image", &app.camera_token).await.status(), 404);
    let mine: Value = app.get("/v1/events", &app.camera_token).await.json().await.unwrap();
    let seqs: Vec<u64> =
        mine["events"].as_array().unwrap().iter().map(|e| e["event"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1]);
    let all = app.get_json("/v1/events").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn events_are_listed_in_pages() {
    let app = TestApp::spawn().await;
    for n in 0..5 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    let page = app.get_json("/v1/events?after=1&limit=2").await;
    let seqs: Vec<u64> =
        page["events"].as_array().unwrap().iter().map(|e| e["event"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(page["next_after"], 3);
    let rest = app.get_json("/v1/events?after=3&limit=100").await;
    assert_eq!(rest["events"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_after"], Value::Null);

    let bad = app.get("/v1/events?limit=0", &app.auditor_token).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_limit");
    let missing = app.get("/v1/events/99", &app.auditor_token).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"], "not_found");
    assert_eq!(app.get("/v1/events/zero", &app.auditor_token).await.status(), 400);
}

#[tokio::test]
async fn images_support_ranges_and_conditional_requests() {
    let app = TestApp::spawn().await;
    let image = png(5);
    assert_eq!(app.upload_as(&app.camera_token, image.clone(), "image/png").await.status(), 201);

    let part = app
        .client
        .get(app.url("/v1/events/1/image"))
        .bearer_auth(&app.auditor_token)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"].to_str().unwrap(), format!("bytes 10-19/{}", image.len()));
    assert_eq!(part.bytes().await.unwrap().as_ref(), &image[10..20]);

    let beyond = app
        .client
        .get(app.url("/v1/events/1/image"))
        .bearer_auth(&app.auditor_token)
        .header("range", format!("bytes={}-", image.len() + 10))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    let etag = format!("\"{}\"", sha256_hex(&image));
    let cached = app
        .client
        .get(app.url("/v1/events/1/image"))
        .bearer_auth(&app.auditor_token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
}
