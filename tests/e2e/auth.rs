use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn uploads_without_a_valid_camera_token_are_refused() {
    let app = TestApp::spawn().await;
    let no_token =
        app.client.post(app.url("/v1/images")).header("content-type", "image/jpeg").body(jpeg(1)).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(no_token.json::<Value>().await.unwrap()["error"], "unauthorized");
    assert_eq!(app.upload_as("cam_not-a-real-token", jpeg(1), "image/jpeg").await.status(), 401);
    let auditor = app.upload_as(&app.auditor_token, jpeg(1), "image/jpeg").await;
    assert_eq!(auditor.status(), 403);
    assert_eq!(auditor.json::<Value>().await.unwrap()["error"], "forbidden");
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new());
}

#[tokio::test]
async fn a_revoked_camera_is_refused_by_the_running_server_within_a_second() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    camledger(&["cameras", "revoke", "cam-1", "--data-dir", app.dir()]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(app.upload(jpeg(2)).await.status(), 401);
    assert_eq!(seqs_in_git(&app.git_dir()), vec![1]);
    let list = camledger(&["cameras", "list", "--data-dir", app.dir()]);
    assert!(list.contains("cam-1") && list.contains("revoked"), "{list}");
}

#[tokio::test]
async fn reading_needs_a_token_but_health_does_not() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let anonymous = app.client.get(app.url("/v1/events/1")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let health: Value = app.client.get(app.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["events_head_seq"], 1);
}
