//! Judging end to end: the server's in-process worker writes verdicts that stock git shows,
//! the API returns them, and a compliance replay reproduces them.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_worker_judges_every_upload_and_stock_git_shows_the_verdicts() {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    assert_eq!(app.upload(jpeg(1)).await.status(), 200);
    assert_eq!(app.upload(flat_black_jpeg()).await.status(), 201);

    let first = app.wait_for_verdict(1).await;
    let duplicate = app.wait_for_verdict(2).await;
    let blank = app.wait_for_verdict(3).await;
    assert_eq!(first["event_seq"], 1);
    assert_eq!(duplicate["spam"], true);
    assert!(duplicate["reasons"].as_array().unwrap().contains(&Value::from("duplicate")), "{duplicate}");
    assert_eq!(blank["spam"], true);
    assert!(blank["reasons"].as_array().unwrap().contains(&Value::from("blank")), "{blank}");

    // Stock git: verdict commits on refs/heads/verdicts, notes on the event commits.
    let verdict: Value =
        serde_json::from_str(&app.git(&["cat-file", "blob", "refs/heads/verdicts:verdict.json"])).unwrap();
    assert_eq!(verdict["event_seq"], 3);
    let hash = verdict["perceptual_hash"].as_str().unwrap_or_default();
    assert!(hash.starts_with("phash:") && hash.len() == 22, "the image's pHash is recorded: {verdict}");
    let log = app.git(&["log", "--notes=verdicts", "refs/heads/events"]);
    assert_eq!(log.matches("Notes (verdicts):").count(), 3, "{log}");
    assert_fsck_clean(&app.git_dir());

    // A camera can see the verdicts of its own events.
    let own = app.get("/v1/events/2", &app.camera_token).await.json::<Value>().await.unwrap();
    assert_eq!(own["verdict"]["spam"], true);

    // Compliance replay with the same model reproduces every verdict exactly.
    let out = Command::new(BIN)
        .args([
            "replay",
            "--data-dir",
            app.dir(),
            "--model",
            TINY_MODEL,
            "--ort-dylib",
            &ort_dylib(),
            "--strict",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["events"], 3);
    assert_eq!(report["summary"]["agreements"], 3);

    // Replayed with another perceptual hash, every recorded hash differs and --strict says so.
    let replay = |hash: &str| {
        Command::new(BIN)
            .args(["replay", "--data-dir", app.dir(), "--model", TINY_MODEL, "--ort-dylib", &ort_dylib()])
            .args(["--strict", "--format", "json", "--perceptual-hash", hash])
            .output()
            .unwrap()
    };
    let out = replay("dhash");
    assert!(!out.status.success(), "a changed hash must fail a strict replay");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["summary"]["agreements"], 0, "{report}");

    // A bad option is refused before anything runs.
    let out = replay("md5");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'md5'"));
}

#[tokio::test]
async fn the_event_list_and_camledger_log_show_each_verdict_or_that_it_is_pending() {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    assert_eq!(app.upload(flat_black_jpeg()).await.status(), 201);
    app.wait_for_verdict(2).await;

    let list = app.get_json("/v1/events").await;
    let verdicts: Vec<&Value> = list["events"].as_array().unwrap().iter().map(|e| &e["verdict"]).collect();
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[0]["event_seq"], 1);
    assert_eq!(verdicts[1]["spam"], true, "{list}");
    assert!(verdicts[1]["reasons"].as_array().unwrap().contains(&Value::from("blank")), "{list}");

    let text = camledger(&["log", "--data-dir", app.dir()]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].contains("verdict=spam:") && lines[1].contains("blank"), "{text}");
    let json = camledger(&["log", "--data-dir", app.dir(), "--format", "json"]);
    let second: Value = serde_json::from_str(json.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["verdict"]["spam"], true);

    // A new upload is listed before it is judged: its verdict is null / pending, never missing.
    let mut app = app;
    app.restart_with(&["--workers", "0"]);
    assert_eq!(app.upload(jpeg(3)).await.status(), 201);
    let third = app.get_json("/v1/events?after=2").await;
    assert!(third["events"][0]["verdict"].is_null(), "{third}");
    assert!(camledger(&["log", "--data-dir", app.dir(), "--from", "3"]).contains("verdict=pending"));
}

#[tokio::test]
async fn a_missing_onnx_runtime_is_a_clear_error_and_workers_zero_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0", "--workers", "1"])
        .args(["--ort-dylib", "/nonexistent/libonnxruntime.so.1.31.1", "--model", TINY_MODEL])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fetch-onnxruntime"), "{stderr}");
    assert!(stderr.contains("--workers 0"), "{stderr}");
}

/// A standalone `camledger worker` process with one judging thread.
fn spawn_worker(app: &TestApp) -> std::process::Child {
    Command::new(BIN)
        .args(["worker", "--data-dir", app.dir(), "--model", TINY_MODEL, "--ort-dylib", &ort_dylib()])
        .args(["--threads", "1"])
        .env("CAMLEDGER_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning camledger worker")
}

/// The `Event-Seq:` trailer of every verdict commit, read with stock git (empty before the
/// first verdict).
fn judged_seqs(app: &TestApp) -> Vec<u64> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(app.git_dir())
        .args(["log", "--format=%(trailers:key=Event-Seq,valueonly)", "refs/heads/verdicts", "--"])
        .output()
        .expect("running git");
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(|s| s.parse().expect("a seq")).collect()
}

async fn wait_until_judged(app: &TestApp, count: usize) {
    for _ in 0..1500 {
        if judged_seqs(app).len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("only {} of {count} events judged within 30 s", judged_seqs(app).len());
}

#[tokio::test]
async fn worker_processes_killed_mid_stream_or_running_side_by_side_judge_every_event_exactly_once() {
    let app = TestApp::spawn().await; // the server itself judges nothing (--workers 0)
    const FIRST: u64 = 150;
    const MORE: u64 = 30;
    for n in 0..FIRST {
        assert_eq!(app.upload(jpeg(10_000 + n)).await.status(), 201);
    }

    // SIGKILL a worker as soon as its first verdicts land.
    let mut first = spawn_worker(&app);
    wait_until_judged(&app, 1).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let judged_when_killed = judged_seqs(&app).len();
    eprintln!("worker killed after {judged_when_killed} of {FIRST} verdicts");

    // Two workers at once take over while cameras keep uploading.
    let mut workers = [spawn_worker(&app), spawn_worker(&app)];
    for n in FIRST..FIRST + MORE {
        assert_eq!(app.upload(jpeg(10_000 + n)).await.status(), 201);
    }
    let total = (FIRST + MORE) as usize;
    wait_until_judged(&app, total).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // time for a double verdict to show
    for worker in &mut workers {
        worker.kill().expect("SIGKILL");
        worker.wait().expect("reaped");
    }

    let mut seqs = judged_seqs(&app);
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=FIRST + MORE).collect::<Vec<_>>(), "every event judged exactly once");
    let log = app.git(&["log", "--notes=verdicts", "refs/heads/events"]);
    assert_eq!(log.matches("Notes (verdicts):").count(), total, "a note on every event");
    assert_fsck_clean(&app.git_dir());
}

#[tokio::test]
async fn a_camera_long_polls_its_verdict_and_gets_it_as_soon_as_a_worker_writes_it() {
    let app = TestApp::spawn().await; // the server judges nothing: a separate worker will
    let created: Value = app.upload(jpeg(1)).await.json().await.unwrap();
    let seq = created["seq"].as_u64().unwrap();
    let path = format!("/v1/events/{seq}/verdict");

    // Not judged yet: wait=0 answers 204 at once, wait=1 after about a second.
    assert_eq!(app.get(&path, &app.camera_token).await.status(), 204);
    let started = Instant::now();
    assert_eq!(app.get(&format!("{path}?wait=1"), &app.camera_token).await.status(), 204);
    assert!(started.elapsed() >= Duration::from_millis(900), "answered after {:?}", started.elapsed());

    // A long poll in flight is answered once the worker's verdict lands.
    let poll = {
        let (client, url, token) = (app.client.clone(), app.url(&format!("{path}?wait=30")), app.camera_token.clone());
        tokio::spawn(async move { client.get(url).bearer_auth(token).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut worker = spawn_worker(&app);
    let answered = poll.await.unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(answered.status(), 200);
    let verdict: Value = answered.json().await.unwrap();
    assert_eq!(verdict["event_seq"], seq, "{verdict}");
    assert!(verdict["spam"].is_boolean(), "{verdict}");
    assert_eq!(judged_seqs(&app), vec![seq]);
    // Afterwards it answers at once, whatever the wait.
    assert_eq!(app.get(&format!("{path}?wait=60"), &app.camera_token).await.status(), 200);
}

#[tokio::test]
async fn verdict_polls_are_refused_for_other_cameras_unknown_seqs_and_long_waits() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let other = app.add_camera("cam-2");
    let started = Instant::now();
    // Another camera's event is as unknown as a seq past the head: 404 at once, no waiting.
    assert_eq!(app.get("/v1/events/1/verdict?wait=30", &other).await.status(), 404);
    assert_eq!(app.get("/v1/events/99/verdict?wait=30", &app.camera_token).await.status(), 404);
    assert!(started.elapsed() < Duration::from_secs(5));
    for bad in ["wait=61", "wait=-1", "wait=soon", "timeout=5"] {
        let answer = app.get(&format!("/v1/events/1/verdict?{bad}"), &app.camera_token).await;
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().starts_with("invalid_"), "{body}");
    }
}
