//! Upload links (issue 12 part 2): an admin creates `POST /v1/u/<secret>` for a camera; it
//! takes raw and multipart uploads without `Authorization`, recorded as that camera's events,
//! until it expires, is used up or revoked (410, nothing written). The secret is stored only
//! as its hash and never logged.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::*;

/// An admin token for `app`.
fn admin(app: &TestApp) -> String {
    last_word(&camledger(&["tokens", "add", "root", "--role", "admin", "--data-dir", app.dir()]))
}

async fn create(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client.post(app.url("/v1/upload-links")).bearer_auth(token).json(&body).send().await.expect("an answer")
}

/// A link for cam-1 (`expires_in`, `max_uploads`) created over HTTP; its relative URL.
async fn link(app: &TestApp, admin: &str, expires_in: &str, max_uploads: u32) -> String {
    let response =
        create(app, admin, json!({"camera": "cam-1", "expires_in": expires_in, "max_uploads": max_uploads})).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["max_uploads"].as_u64(), answer["camera"].as_str()),
        (Some(u64::from(max_uploads)), Some("cam-1"))
    );
    answer["url"].as_str().expect("a url").to_owned()
}

/// A raw JPEG posted to a link, without any token.
async fn post(app: &TestApp, url: &str, image: Vec<u8>) -> reqwest::Response {
    app.client.post(app.url(url)).header("content-type", "image/jpeg").body(image).send().await.expect("an answer")
}

async fn post_multipart(app: &TestApp, url: &str, images: std::ops::Range<u64>) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new();
    for n in images {
        form = form.part(format!("p{n}"), reqwest::multipart::Part::bytes(jpeg(n)).file_name(format!("{n}.jpg")));
    }
    app.client.post(app.url(url)).multipart(form).send().await.expect("an answer")
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error");
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

fn events(app: &TestApp) -> usize {
    seqs_in_git(&app.git_dir()).len()
}

/// The cameras of every event, oldest first, from the commits' `Camera:` trailers (stock git).
fn cameras_in_git(app: &TestApp) -> Vec<String> {
    let log = app.git(&["log", "--reverse", "--format=%(trailers:key=Camera,valueonly)", "refs/heads/events"]);
    log.lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned()).collect()
}

fn links_json(app: &TestApp) -> Vec<Value> {
    serde_json::from_str(&camledger(&["links", "list", "--format", "json", "--data-dir", app.dir()])).unwrap()
}

#[tokio::test]
async fn a_link_records_raw_and_multipart_uploads_as_its_camera_without_a_token() {
    let app = TestApp::spawn().await;
    let admin = admin(&app);
    let url = link(&app, &admin, "PT1H", 4).await;
    assert!(url.starts_with("/v1/u/upl_"), "{url}");

    let raw = app
        .client
        .post(app.url(&url))
        .header("content-type", "image/jpeg")
        .header("x-captured-at", "2026-11-22T01:02:03+01:00")
        .header("idempotency-key", "job-7-frame-1")
        .body(jpeg(1))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 201);
    let answer: Value = raw.json().await.unwrap();
    assert_eq!(answer["seq"], 1);
    let multipart = post_multipart(&app, &url, 2..5).await;
    assert_eq!(multipart.status(), 201);
    let parts: Vec<Value> = multipart.json().await.unwrap();
    assert_eq!(parts.iter().map(|p| p["status"].as_u64().unwrap()).collect::<Vec<_>>(), [201, 201, 201]);

    assert_eq!(cameras_in_git(&app), ["cam-1"; 4]);
    let first = app.get_json("/v1/events/1").await;
    assert_eq!(first["event"]["camera"], "cam-1");
    assert_eq!(first["event"]["captured_at"], "2026-11-22T00:02:03.000000Z");
    // The camera's own token reads them as its own.
    let mine: Value = app.get("/v1/events/4", &app.camera_token).await.json().await.unwrap();
    assert_eq!(mine["event"]["seq"], 4);
    let listed = links_json(&app);
    assert_eq!((listed[0]["used"].as_u64(), listed[0]["state"].as_str()), (Some(4), Some("used_up")));
    assert_eq!(listed[0]["created_by"], "admin:root");
}

#[tokio::test]
async fn a_used_up_link_answers_410_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let url = link(&app, &admin(&app), "PT1H", 2).await;
    assert_eq!(post(&app, &url, jpeg(1)).await.status(), 201);
    assert_eq!(post(&app, &url, jpeg(2)).await.status(), 201);

    assert_eq!(error_code(post(&app, &url, jpeg(3)).await).await, (410, "link_gone".to_owned()));
    assert_eq!(error_code(post_multipart(&app, &url, 4..6).await).await, (410, "link_gone".to_owned()));
    assert_eq!(events(&app), 2);
}

#[tokio::test]
async fn images_that_write_nothing_give_their_use_back_and_a_duplicate_keeps_it() {
    let app = TestApp::spawn().await;
    let url = link(&app, &admin(&app), "PT1H", 2).await;
    // Rejected by admission (not an image): 415, and the use comes back.
    let refused = app.client.post(app.url(&url)).body(b"not an image".to_vec()).send().await.unwrap();
    assert_eq!(refused.status(), 415);
    // An idempotent retry replays the first answer and spends nothing more.
    for _ in 0..3 {
        let sent = app.client.post(app.url(&url)).header("idempotency-key", "k1").body(jpeg(1)).send().await.unwrap();
        assert_eq!(sent.status(), 201);
    }
    // More images than uses left: refused whole, its reserved use back.
    assert_eq!(error_code(post_multipart(&app, &url, 10..12).await).await, (409, "not_enough_uses".to_owned()));
    assert_eq!(links_json(&app)[0]["used"], 1);
    // A duplicate is an event: it keeps its use, and the link is then used up.
    let duplicate = post(&app, &url, jpeg(1)).await;
    assert_eq!(duplicate.status(), 200);
    assert_eq!(error_code(post(&app, &url, jpeg(5)).await).await.0, 410);
    assert_eq!(events(&app), 2);
}

#[tokio::test]
async fn a_multipart_part_that_is_refused_gives_its_use_back() {
    let app = TestApp::spawn().await;
    let url = link(&app, &admin(&app), "PT1H", 3).await;
    let form = reqwest::multipart::Form::new()
        .part("a", reqwest::multipart::Part::bytes(jpeg(1)).file_name("a.jpg"))
        .part("b", reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("b.jpg"));
    let answer = app.client.post(app.url(&url)).multipart(form).send().await.unwrap();
    assert_eq!(answer.status(), 201);
    let parts: Vec<Value> = answer.json().await.unwrap();
    assert_eq!(parts.iter().map(|p| p["status"].as_u64().unwrap()).collect::<Vec<_>>(), [201, 415]);
    assert_eq!(links_json(&app)[0]["used"], 1, "only the image that became an event keeps its use");
}

#[tokio::test]
async fn the_camera_s_rate_limit_applies_to_its_links_and_a_429_costs_no_use() {
    let app = TestApp::spawn_with(&["--rate-limit", "1/m", "--burst", "2"]).await;
    let url = link(&app, &admin(&app), "PT1H", 10).await;
    assert_eq!(post(&app, &url, jpeg(1)).await.status(), 201);
    assert_eq!(app.upload(jpeg(2)).await.status(), 201, "the camera's own token shares the bucket");
    assert_eq!(error_code(post(&app, &url, jpeg(3)).await).await, (429, "rate_limited".to_owned()));
    assert_eq!(links_json(&app)[0]["used"], 1);
    assert_eq!(events(&app), 2);
}

#[tokio::test]
async fn a_link_upload_never_learns_another_camera_s_seq() {
    let app = TestApp::spawn().await;
    let other = app.add_camera("cam-2");
    assert_eq!(app.upload_as(&other, jpeg(1), "image/jpeg").await.status(), 201);
    let url = link(&app, &admin(&app), "PT1H", 5).await;
    let duplicate = post(&app, &url, jpeg(1)).await;
    assert_eq!(duplicate.status(), 200);
    let answer: Value = duplicate.json().await.unwrap();
    assert_eq!((answer["seq"].as_u64(), answer["duplicate_of"].as_str()), (Some(2), Some("other-camera")));
}

#[tokio::test]
async fn an_expired_link_answers_410() {
    let app = TestApp::spawn().await;
    let url = link(&app, &admin(&app), "PT1S", 10).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(error_code(post(&app, &url, jpeg(1)).await).await, (410, "link_gone".to_owned()));
    assert_eq!(events(&app), 0);
    assert_eq!(links_json(&app)[0]["state"], "expired");
}

#[tokio::test]
async fn a_link_revoked_with_the_cli_stops_working_on_the_running_server_within_a_second() {
    let app = TestApp::spawn().await;
    let created = camledger(&[
        "links",
        "create",
        "cam-1",
        "--expires-in",
        "PT1H",
        "--max-uploads",
        "100",
        "--format",
        "json",
        "--data-dir",
        app.dir(),
    ]);
    let created: Value = serde_json::from_str(&created).unwrap();
    let (id, url) = (created["id"].as_str().unwrap().to_owned(), created["url"].as_str().unwrap().to_owned());
    assert_eq!(post(&app, &url, jpeg(1)).await.status(), 201);

    let out = camledger(&["links", "revoke", &id, "--data-dir", app.dir()]);
    assert!(out.contains(&format!("revoked upload link {id}")), "{out}");
    let revoked_at = Instant::now();
    let mut n = 2;
    while post(&app, &url, jpeg(n)).await.status() != 410 {
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "the revocation took over a second");
        n += 1;
    }
    assert_eq!(events(&app), usize::try_from(n - 1).unwrap(), "nothing after the 410");
    let listed = camledger(&["links", "list", "--data-dir", app.dir()]);
    assert!(listed.contains(&id) && listed.contains("revoked"), "{listed}");
}

#[tokio::test]
async fn a_revoked_camera_s_links_stop_working_and_new_ones_are_refused() {
    let app = TestApp::spawn().await;
    let admin = admin(&app);
    let url = link(&app, &admin, "PT1H", 10).await;
    camledger(&["cameras", "revoke", "cam-1", "--data-dir", app.dir()]);
    assert_eq!(error_code(post(&app, &url, jpeg(1)).await).await, (410, "link_gone".to_owned()));
    let refused = create(&app, &admin, json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 1})).await;
    assert_eq!(error_code(refused).await, (400, "unknown_camera".to_owned()));
    assert_eq!(events(&app), 0);
}

#[tokio::test]
async fn only_an_admin_token_creates_links_and_bad_input_is_a_400() {
    let app = TestApp::spawn().await;
    let admin = admin(&app);
    let good = json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 100});
    assert_eq!(error_code(create(&app, &app.camera_token, good.clone()).await).await, (403, "forbidden".to_owned()));
    assert_eq!(error_code(create(&app, &app.auditor_token, good.clone()).await).await, (403, "forbidden".to_owned()));
    let anonymous = app.client.post(app.url("/v1/upload-links")).json(&good).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let cases = [
        (json!({"camera": "cam-9", "expires_in": "PT1H", "max_uploads": 1}), "unknown_camera"),
        (json!({"camera": "../etc", "expires_in": "PT1H", "max_uploads": 1}), "unknown_camera"),
        (json!({"camera": "cam-1", "expires_in": "1 hour", "max_uploads": 1}), "invalid_expires_in"),
        (json!({"camera": "cam-1", "expires_in": "P31D", "max_uploads": 1}), "invalid_expires_in"),
        (json!({"camera": "cam-1", "expires_in": "PT0S", "max_uploads": 1}), "invalid_expires_in"),
        (json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 0}), "invalid_max_uploads"),
        (json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 10001}), "invalid_max_uploads"),
        (json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": -1}), "invalid_max_uploads"),
        (json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 2.5}), "invalid_max_uploads"),
        (json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 1e30}), "invalid_max_uploads"),
        (json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": "5"}), "invalid_max_uploads"),
        (json!({"camera": "cam-1", "expires_in": "PT1H"}), "invalid_body"),
        (json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 1, "used": -5}), "invalid_body"),
        (json!(["cam-1"]), "invalid_body"),
    ];
    for (body, code) in cases {
        assert_eq!(error_code(create(&app, &admin, body.clone()).await).await, (400, code.to_owned()), "{body}");
    }
    // Its own client: the server closes a connection whose body it did not read.
    let huge = reqwest::Client::new().post(app.url("/v1/upload-links")).bearer_auth(&admin).body(vec![b' '; 100_000]);
    assert_eq!(error_code(huge.send().await.unwrap()).await, (413, "body_too_large".to_owned()));
    assert!(links_json(&app).is_empty(), "no refused request created a link");
    assert_eq!(create(&app, &admin, good).await.status(), 201);
}

#[test]
fn links_create_refuses_bad_flags_as_usage_errors_and_list_never_shows_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    camledger(&["cameras", "add", "cam-1", "--data-dir", dir]);
    let run = |args: &[&str]| Command::new(BIN).args(args).args(["--data-dir", dir]).output().unwrap();
    for (expires_in, max_uploads) in [("P31D", "1"), ("1h", "1"), ("PT1H", "0"), ("PT1H", "10001")] {
        let out = run(&["links", "create", "cam-1", "--expires-in", expires_in, "--max-uploads", max_uploads]);
        assert_eq!(out.status.code(), Some(2), "{expires_in} {max_uploads}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let unknown = run(&["links", "create", "cam-9", "--expires-in", "PT1H", "--max-uploads", "1"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no active camera named \"cam-9\""));

    let created =
        camledger(&["links", "create", "cam-1", "--expires-in", "P1DT12H", "--max-uploads", "3", "--data-dir", dir]);
    let url = created.lines().last().unwrap().split_whitespace().last().unwrap();
    let secret = url.strip_prefix("/v1/u/upl_").expect("the URL is the last word");
    let text = camledger(&["links", "list", "--data-dir", dir]);
    let json = camledger(&["links", "list", "--format", "json", "--data-dir", dir]);
    for out in [&text, &json] {
        assert!(out.contains("cam-1") && !out.contains(secret) && !out.contains("upl_"), "{out}");
    }
    assert!(text.contains("active\tused 0/3"), "{text}");
    let missing = run(&["links", "revoke", "lnk_0000000000000000"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test]
async fn an_unknown_secret_gets_the_same_410_as_a_revoked_link_whatever_token_it_carries() {
    let app = TestApp::spawn().await;
    let url = link(&app, &admin(&app), "PT1H", 10).await;
    let id = links_json(&app)[0]["id"].as_str().unwrap().to_owned();
    camledger(&["links", "revoke", &id, "--data-dir", app.dir()]);

    let revoked = post(&app, &url, jpeg(1)).await;
    assert_eq!(revoked.status(), 410);
    let revoked: Value = revoked.json().await.unwrap();
    let bogus = format!("/v1/u/upl_{}", "0".repeat(64));
    for path in [bogus.as_str(), "/v1/u/x", "/v1/u/upl_%41", &url[..url.len() - 1]] {
        let answer = post(&app, path, jpeg(1)).await;
        assert_eq!(answer.status(), 410, "{path}");
        assert_eq!(answer.json::<Value>().await.unwrap(), revoked, "{path}: the same answer as a revoked link");
    }
    // A camera token does not open a dead link either.
    let with_token = app.client.post(app.url(&bogus)).bearer_auth(&app.camera_token).body(jpeg(2)).send().await;
    assert_eq!(with_token.unwrap().status(), 410);
    assert_eq!(events(&app), 0);
}

#[tokio::test]
async fn twenty_parallel_uploads_through_a_link_of_five_write_exactly_five_events() {
    let app = TestApp::spawn().await;
    let url = link(&app, &admin(&app), "PT1H", 5).await;
    let started = Instant::now();
    let answers = futures_util::future::join_all((0..20).map(|n| post(&app, &url, jpeg(100 + n)))).await;
    let took = started.elapsed();
    let mut statuses: Vec<u16> = answers.iter().map(|a| a.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [[201u16; 5].as_slice(), &[410; 15]].concat());
    assert_eq!(events(&app), 5);
    assert_eq!(links_json(&app)[0]["used"], 5);
    eprintln!("20 parallel link uploads (5 admitted) answered in {took:?}");
}

/// A server whose log (debug level, JSON) goes to a file, for the secret's absence.
struct LoggedServer {
    child: std::process::Child,
    base: String,
    log: std::path::PathBuf,
}

impl LoggedServer {
    fn start(data_dir: &str, log_dir: &std::path::Path) -> LoggedServer {
        let log = log_dir.join("server.log");
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "serve", "--data-dir", data_dir, "--listen", "127.0.0.1:0"])
            .args(["--ort-dylib", &ort_dylib(), "--workers", "0"])
            .env("CAMLEDGER_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning camledger serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(base.starts_with("http://"), "{line:?}");
        LoggedServer { child, base, log }
    }

    fn stop(mut self) -> String {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
        assert!(self.child.wait().unwrap().success());
        std::fs::read_to_string(&self.log).unwrap()
    }
}

#[tokio::test]
async fn the_secret_is_never_logged_labelled_or_stored() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    camledger(&["cameras", "add", "cam-1", "--data-dir", dir]);
    let admin = last_word(&camledger(&["tokens", "add", "root", "--role", "admin", "--data-dir", dir]));
    let server = LoggedServer::start(dir, logs.path());
    let client = reqwest::Client::new();

    let created: Value = client
        .post(format!("{}/v1/upload-links", server.base))
        .bearer_auth(&admin)
        .json(&json!({"camera": "cam-1", "expires_in": "PT1H", "max_uploads": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = created["url"].as_str().unwrap();
    let secret = url.strip_prefix("/v1/u/").unwrap().to_owned();
    let hex_part = secret.strip_prefix("upl_").unwrap().to_owned();
    let send = |image: Vec<u8>| client.post(format!("{}{url}", server.base)).body(image).send();
    assert_eq!(send(jpeg(1)).await.unwrap().status(), 201);
    assert_eq!(send(b"not an image".to_vec()).await.unwrap().status(), 415);
    assert_eq!(send(jpeg(2)).await.unwrap().status(), 201);
    assert_eq!(send(jpeg(3)).await.unwrap().status(), 410);
    let metrics = client.get(format!("{}/metrics", server.base)).bearer_auth(&admin).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("/v1/u/{secret}"), "the route template is the label");
    assert!(!metrics.contains(&hex_part), "a metric label holds the secret");

    let log = server.stop();
    assert!(log.contains(created["id"].as_str().unwrap()), "the log names the link by its id");
    assert!(log.contains("/v1/u/{secret}"), "the log names the route template");
    assert!(!log.contains(&hex_part), "the log holds the secret");
    let mut stored = Vec::new();
    for file in ["camledger.sqlite", "camledger.sqlite-wal"] {
        stored.extend(std::fs::read(data.path().join(file)).unwrap_or_default());
    }
    for needle in [secret.as_bytes(), hex_part.as_bytes()] {
        assert!(!stored.windows(needle.len()).any(|w| w == needle), "the registry holds the secret");
    }
    let hash = hex::decode(sha256_hex(secret.as_bytes())).unwrap();
    assert!(stored.windows(32).any(|w| w == hash.as_slice()), "the registry keeps the secret's SHA-256");
}
