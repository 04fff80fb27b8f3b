//! Token lifecycle against a running server: `tokens list`, `tokens revoke`, `cameras rotate`.
//! Regression: auditor tokens could not be revoked, and a revoked camera id could never get
//! a new token.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Polls `path` with `token` until it answers `status`; returns how long that took.
async fn until_status(app: &TestApp, path: &str, token: &str, status: u16) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if app.get(path, token).await.status() == status {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never answered {status}");
}

#[tokio::test]
async fn a_revoked_auditor_token_is_refused_by_the_running_server_within_a_second() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    assert_eq!(app.get("/v1/events/1", &app.auditor_token).await.status(), 200);

    let out = camledger(&["tokens", "revoke", "alice", "--data-dir", app.dir()]);
    assert!(out.contains("revoked auditor token alice"), "{out}");
    let took = until_status(&app, "/v1/events/1", &app.auditor_token, 401).await;
    assert!(took < Duration::from_secs(1), "the revocation took {took:?}");
    assert_eq!(app.get("/v1/events/1", &app.camera_token).await.status(), 200, "other tokens still work");
}

#[tokio::test]
async fn a_rotated_camera_uploads_only_with_its_new_token() {
    let app = TestApp::spawn().await;
    let old = app.camera_token.clone();
    let new = last_word(&camledger(&["cameras", "rotate", "cam-1", "--data-dir", app.dir()]));
    assert!(new.starts_with("cam_") && new != old);

    assert_eq!(app.upload_as(&old, jpeg(1), "image/jpeg").await.status(), 401);
    assert_eq!(app.upload_as(&new, jpeg(1), "image/jpeg").await.status(), 201);
}

#[tokio::test]
async fn a_revoked_camera_is_rotated_back_into_service_under_the_same_id() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    camledger(&["cameras", "revoke", "cam-1", "--data-dir", app.dir()]);
    assert_eq!(app.upload(jpeg(2)).await.status(), 401);

    let new = last_word(&camledger(&["cameras", "rotate", "cam-1", "--data-dir", app.dir()]));
    assert_eq!(app.upload(jpeg(2)).await.status(), 401, "the revoked token stays dead");
    let answer: Value = {
        let response = app.upload_as(&new, jpeg(2), "image/jpeg").await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    };
    assert_eq!(answer["seq"], 2);
    let mine: Value = app.get("/v1/events", &new).await.json().await.unwrap();
    assert!(mine.to_string().contains("cam-1"), "the camera reads its earlier events too: {mine}");
}

#[tokio::test]
async fn tokens_list_shows_every_holder_kind_and_state_but_never_a_token() {
    let app = TestApp::spawn().await;
    camledger(&["tokens", "revoke", "alice", "--data-dir", app.dir()]);
    let text = camledger(&["tokens", "list", "--data-dir", app.dir()]);
    let json = camledger(&["tokens", "list", "--data-dir", app.dir(), "--format", "json"]);
    for out in [&text, &json] {
        assert!(!out.contains(&app.camera_token) && !out.contains(&app.auditor_token), "{out}");
        assert!(!out.contains("aud_") && !out.contains("cam_"), "no token prefix either: {out}");
    }
    let listed: Vec<Value> = serde_json::from_str(&json).unwrap();
    let alice = listed.iter().find(|t| t["name"] == "alice").expect("alice is listed");
    assert_eq!(alice["kind"], "auditor");
    assert!(alice["revoked_at"].is_string() && alice["created_at"].is_string());
    let camera = listed.iter().find(|t| t["name"] == "cam-1").expect("cam-1 is listed");
    assert_eq!((camera["kind"].as_str(), camera["revoked_at"].is_null()), (Some("camera"), true));
    assert!(text.contains("alice\tauditor") && text.contains("revoked"), "{text}");
}
