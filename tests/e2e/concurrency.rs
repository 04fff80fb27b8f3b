use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn two_hundred_uploads_from_twenty_cameras_get_gapless_sequence_numbers() {
    let app = TestApp::spawn().await;
    let tokens: Vec<String> = (0..20).map(|i| app.add_camera(&format!("cam-{i:02}"))).collect();

    let mut uploads = tokio::task::JoinSet::new();
    for n in 0..200u64 {
        let (client, url, token) = (app.client.clone(), app.url("/v1/images"), tokens[(n % 20) as usize].clone());
        uploads.spawn(async move {
            let bytes = jpeg(1000 + n);
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "image/jpeg")
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            let answer: Value = response.json().await.unwrap();
            (answer["seq"].as_u64().unwrap(), sha256_hex(&bytes))
        });
    }
    let mut answered = Vec::new();
    while let Some(result) = uploads.join_next().await {
        answered.push(result.unwrap());
    }

    let seqs: BTreeSet<u64> = answered.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=200).collect(), "every upload got its own seq, no gaps");
    assert_eq!(seqs_in_git(&app.git_dir()), (1..=200).rev().collect::<Vec<_>>());
    for (seq, sha) in answered.iter().step_by(17) {
        let event = app.get_json(&format!("/v1/events/{seq}")).await;
        assert_eq!(&event["event"]["sha256"], sha);
    }
    assert_fsck_clean(&app.git_dir());
}

#[tokio::test]
async fn the_same_image_sent_ten_times_at_once_has_exactly_one_original() {
    let app = TestApp::spawn().await;
    let image = jpeg(42);
    let mut uploads = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (client, url, token, bytes) =
            (app.client.clone(), app.url("/v1/images"), app.camera_token.clone(), image.clone());
        uploads.spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "image/jpeg")
                .body(bytes)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        });
    }
    let mut originals = Vec::new();
    let mut duplicates = Vec::new();
    while let Some(result) = uploads.join_next().await {
        let (status, answer) = result.unwrap();
        match status {
            201 => originals.push(answer),
            200 => duplicates.push(answer),
            other => panic!("unexpected status {other}: {answer}"),
        }
    }
    assert_eq!(originals.len(), 1);
    assert_eq!(duplicates.len(), 9);
    let original = originals[0]["seq"].as_u64().unwrap();
    assert!(duplicates.iter().all(|d| d["duplicate_of"].as_u64() == Some(original)));
    assert!(duplicates.iter().all(|d| d["seq"].as_u64().unwrap() > original));
}
