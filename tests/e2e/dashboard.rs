//! The live dashboard: sign-in sessions, the live stream, thumbnails, and the page itself in
//! headless Chromium (tests/browser/dashboard.py).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::*;

/// Signs in with `token`; the answer.
async fn login(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("sending a sign-in")
}

/// The `name=value` of the session cookie an answer sets.
fn session_cookie(response: &reqwest::Response) -> String {
    let set = response.headers().get("set-cookie").expect("a Set-Cookie header").to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().unwrap().to_owned()
}

async fn get_with_cookie(app: &TestApp, path: &str, cookie: &str) -> reqwest::Response {
    app.client.get(app.url(path)).header("cookie", cookie).send().await.expect("sending a GET")
}

#[tokio::test]
async fn a_reader_signs_in_with_a_session_cookie_that_reads_but_never_writes() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);

    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(!page.text().await.unwrap().contains("<script>"), "no inline script");

    let camera = login(&app, &app.camera_token).await;
    assert_eq!(camera.status(), 403, "a camera token cannot sign in");
    assert!(camera.headers().get("set-cookie").is_none());
    let body: Value = camera.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("camera token cannot sign in"), "{body}");
    assert_eq!(login(&app, "aud_nonsense").await.status(), 401);

    let signed_in = login(&app, &app.auditor_token).await;
    assert_eq!(signed_in.status(), 200);
    let cookie = session_cookie(&signed_in);
    assert!(!cookie.contains(&app.auditor_token), "the cookie is a session id, not the token");
    let me: Value = signed_in.json().await.unwrap();
    assert_eq!(me["role"], "auditor");

    for path in ["/v1/stats", "/v1/events", "/v1/events/1", "/v1/events/1/image", "/v1/events/1/thumbnail"] {
        assert_eq!(get_with_cookie(&app, path, &cookie).await.status(), 200, "GET {path} with the session");
    }
    // Only the dashboard's GETs take the cookie: not the export, not git, never a write.
    assert_eq!(get_with_cookie(&app, "/v1/export.jsonl", &cookie).await.status(), 401);
    let upload = app
        .client
        .post(app.url("/v1/images"))
        .header("cookie", &cookie)
        .header("content-type", "image/jpeg")
        .body(jpeg(2))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 401, "an upload never rides on the session cookie");

    // Another site cannot sign a browser in or out.
    let forged = app
        .client
        .post(app.url("/login"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", app.auditor_token))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let forged_out = app
        .client
        .post(app.url("/logout"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await;
    assert_eq!(forged_out.unwrap().status(), 403);
    assert_eq!(get_with_cookie(&app, "/v1/stats", &cookie).await.status(), 200, "still signed in");

    let out = app.client.post(app.url("/logout")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(out.status(), 200);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(get_with_cookie(&app, "/v1/stats", &cookie).await.status(), 401, "signed out");
}

#[tokio::test]
async fn revoking_the_token_ends_its_sessions() {
    let app = TestApp::spawn().await;
    let cookie = session_cookie(&login(&app, &app.auditor_token).await);
    assert_eq!(get_with_cookie(&app, "/v1/stats", &cookie).await.status(), 200);
    camledger(&["tokens", "revoke", "alice", "--data-dir", app.dir()]);
    assert_eq!(get_with_cookie(&app, "/v1/stats", &cookie).await.status(), 401);
}

#[tokio::test]
async fn thumbnails_are_small_jpegs_and_cameras_see_only_their_own() {
    let app = TestApp::spawn().await;
    let other = app.add_camera("cam-2");
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    assert_eq!(app.upload_as(&other, png(2), "image/png").await.status(), 201);

    for seq in [1, 2] {
        let response = app.get(&format!("/v1/events/{seq}/thumbnail"), &app.auditor_token).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/jpeg");
        let thumbnail = image::load_from_memory(&response.bytes().await.unwrap()).expect("a JPEG");
        assert_eq!((thumbnail.width(), thumbnail.height()), (96, 64), "small images are not enlarged");
    }
    assert_eq!(app.get("/v1/events/2/thumbnail", &app.camera_token).await.status(), 404, "cam-2's, not cam-1's");
    assert_eq!(app.get("/v1/events/1/thumbnail", &app.camera_token).await.status(), 200);
    assert_eq!(app.get("/v1/events/3/thumbnail", &app.auditor_token).await.status(), 404);
    assert_eq!(app.get("/v1/events/x/thumbnail", &app.auditor_token).await.status(), 400);
    // Cached: the second answer is the same bytes.
    let a = app.get("/v1/events/1/thumbnail", &app.auditor_token).await.bytes().await.unwrap();
    let b = app.get("/v1/events/1/thumbnail", &app.auditor_token).await.bytes().await.unwrap();
    assert_eq!(a, b);
}

/// Reads SSE messages from `body` until one of `kind` satisfies `wanted`, or `limit` passes.
async fn next_message<B: AsRef<[u8]>>(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<B>> + Unpin),
    buffer: &mut String,
    kind: &str,
    limit: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            let name = message.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim);
            let data = message.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
            if let (Some(name), Some(data)) = (name, data) {
                let data: Value = serde_json::from_str(data).expect("JSON data");
                if name == kind && wanted(&data) {
                    return Some(data);
                }
            }
        }
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => buffer.push_str(&String::from_utf8_lossy(chunk.as_ref())),
            Ok(Some(Err(_)) | None) | Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn the_stream_sends_new_events_and_verdicts_within_two_seconds_and_ends_on_shutdown() {
    let mut app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    let other = app.add_camera("cam-2");
    let stream = app.get("/v1/stream", &app.auditor_token).await;
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let own = app.get("/v1/stream", &app.camera_token).await;
    let (mut body, mut own_body) = (stream.bytes_stream(), own.bytes_stream());
    let (mut buffer, mut own_buffer) = (String::new(), String::new());
    let heads = next_message(&mut body, &mut buffer, "heads", Duration::from_secs(2), |_| true).await;
    assert_eq!(heads.expect("heads first")["events_seq"], 0);

    let started = Instant::now();
    assert_eq!(app.upload_as(&other, jpeg(1), "image/jpeg").await.status(), 201);
    assert_eq!(app.upload(jpeg(2)).await.status(), 201);
    let event = next_message(&mut body, &mut buffer, "event", Duration::from_secs(2), |d| d["event"]["seq"] == 2).await;
    let event = event.expect("the new event within 2 s");
    assert_eq!(event["event"]["camera"], "cam-1");
    eprintln!("stream: event 2 arrived {} ms after its upload began", started.elapsed().as_millis());
    let verdict =
        next_message(&mut body, &mut buffer, "verdict", Duration::from_secs(30), |d| d["event"]["seq"] == 2).await;
    assert!(verdict.expect("its verdict")["verdict"]["spam"].is_boolean());

    // cam-1's stream never carried cam-2's event.
    let first = next_message(&mut own_body, &mut own_buffer, "event", Duration::from_secs(2), |_| true).await;
    assert_eq!(first.expect("cam-1's own event")["event"]["seq"], 2);

    assert_eq!(app.get("/v1/stream?bogus=1", &app.auditor_token).await.status(), 400);
    assert_eq!(app.client.get(app.url("/v1/stream")).send().await.unwrap().status(), 401);

    // Shutdown ends open streams at once instead of waiting out the 30 s grace period.
    let stopping = Instant::now();
    assert!(app.signal("-TERM").success());
    assert!(stopping.elapsed() < Duration::from_secs(10), "stopped in {:?}", stopping.elapsed());
    let rest = next_message(&mut body, &mut buffer, "none", Duration::from_secs(5), |_| true).await;
    assert!(rest.is_none());
}

/// Whether Debian's Chromium and Playwright for Python are here.
pub(crate) fn browser_available() -> Result<(), String> {
    if !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("/usr/bin/chromium is missing (apt-get install chromium chromium-driver)".into());
    }
    let probe = std::process::Command::new("python3").args(["-c", "import playwright.sync_api"]).output();
    match probe {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("Playwright for Python is missing (pip install playwright; no browser download needed)".into()),
    }
}

#[tokio::test]
async fn the_dashboard_shows_uploads_and_verdicts_live_in_chromium() {
    if let Err(why) = browser_available() {
        // CI installs both (.ci/run); a developer machine without them is told loudly.
        assert!(std::env::var_os("CI").is_none(), "CI must run the browser test: {why}");
        eprintln!("\n!!!!!!!! SKIPPED the dashboard browser test: {why} !!!!!!!!\n");
        return;
    }
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    let other = app.add_camera("cam-2");
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    assert_eq!(app.upload(flat_black_jpeg()).await.status(), 201);
    assert_eq!(app.upload_as(&other, jpeg(3), "image/jpeg").await.status(), 201);
    app.wait_for_verdict(3).await;
    let image = app.data_dir.path().join("new.jpg");
    std::fs::write(&image, jpeg(4)).unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/browser/dashboard.py");
    let mut command = std::process::Command::new("python3");
    command.arg(script).args(["--base", &app.base, "--auditor-token", &app.auditor_token]);
    command.args(["--camera-token", &app.camera_token, "--image", image.to_str().unwrap()]);
    command.args(["--expect-uploads", "3", "--other-camera", "cam-2"]);
    if let Some(dir) = std::env::var_os("CAMLEDGER_SCREENSHOTS") {
        command.arg("--screenshots").arg(dir);
    }
    let output = command.output().expect("running python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let measured: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).expect("measurements");
    eprintln!("dashboard in Chromium: {measured}");
    assert!(measured["event_visible_s"].as_f64().unwrap() < 2.0, "{measured}");
}
