//! The read model end to end: search, stats and export answered from SQL tables projected
//! from git by the server's projector, rebuilt by `camledger reindex`, caught up after
//! restarts and crashes, on the embedded SQLite and on MariaDB.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backup::{mariadb, TestDatabase};
use crate::helpers::*;

/// Every event `GET /v1/events` lists with `query`, following `next_after`.
async fn all_pages(app: &TestApp, token: &str, query: &[(&str, &str)]) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = "0".to_owned();
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("after", &after));
        let response = app.client.get(app.url("/v1/events")).bearer_auth(token).query(&q).send().await.unwrap();
        assert_eq!(response.status(), 200, "{q:?}");
        let page: Value = response.json().await.unwrap();
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_after"].as_u64() {
            Some(next) => after = next.to_string(),
            None => return events,
        }
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["event"]["seq"].as_u64().unwrap()).collect()
}

/// Seqs of `GET /v1/events` with `query` (auditor).
async fn search(app: &TestApp, query: &[(&str, &str)]) -> Vec<u64> {
    seqs(&all_pages(app, &app.auditor_token, query).await)
}

async fn stats(app: &TestApp, query: &[(&str, &str)]) -> Value {
    let response =
        app.client.get(app.url("/v1/stats")).bearer_auth(&app.auditor_token).query(query).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body: Value = response.json().await.unwrap();
    body.as_object_mut().unwrap().remove("head");
    body
}

fn today() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::now_utc().date().format(format).unwrap()
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// Uploads `n` distinct JPEGs as the test camera, 16 at a time.
async fn upload_many(app: &TestApp, from: u64, n: u64) {
    use futures_util::StreamExt as _;
    let statuses: Vec<u16> = futures_util::stream::iter(from..from + n)
        .map(|i| async move { app.upload(jpeg(i)).await.status().as_u16() })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
}

/// A server with judging on, two cameras and five events: an EXIF JPEG, a PNG, a blank frame,
/// an exact repeat of the first (cam-1), and another camera's EXIF JPEG (cam-2). Waits until
/// all five are judged.
async fn judged_app() -> TestApp {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    let other = app.add_camera("cam-2");
    let canon = jpeg_from_camera(1, "Canon", "Canon EOS 5D");
    assert_eq!(app.upload(canon.clone()).await.status(), 201);
    assert_eq!(app.upload_as(&app.camera_token, png(2), "image/png").await.status(), 201);
    assert_eq!(app.upload(flat_black_jpeg()).await.status(), 201);
    assert_eq!(app.upload(canon).await.status(), 200, "the repeat is a duplicate event");
    assert_eq!(app.upload_as(&other, jpeg_from_camera(3, "NIKON", "D750"), "image/jpeg").await.status(), 201);
    app.wait_for_verdict(5).await;
    app
}

#[tokio::test]
async fn search_filters_agree_with_git_and_reindex_gives_identical_answers() {
    let before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let mut app = judged_app().await;
    let after = time::OffsetDateTime::now_utc() + time::Duration::minutes(1);

    // The expected answers, computed from each event as read from git.
    let mut truth = Vec::new();
    for seq in 1..=5 {
        truth.push(app.get_json(&format!("/v1/events/{seq}")).await);
    }
    let expect = |keep: &dyn Fn(&Value) -> bool| -> Vec<u64> {
        truth.iter().filter(|e| keep(e)).map(|e| e["event"]["seq"].as_u64().unwrap()).collect()
    };
    let listed = all_pages(&app, &app.auditor_token, &[]).await;
    assert_eq!(listed, truth, "the listing shows what git holds, verdicts included");

    assert_eq!(search(&app, &[("camera", "cam-2")]).await, vec![5]);
    assert_eq!(search(&app, &[("media_type", "image/png")]).await, vec![2]);
    assert_eq!(search(&app, &[("camera_model", "Canon EOS 5D")]).await, vec![1, 4]);
    assert_eq!(search(&app, &[("camera_model", "NIKON D750")]).await, vec![5]);
    let spam = expect(&|e| e["verdict"]["spam"] == true);
    assert!(spam.contains(&3) && spam.contains(&4), "blank and duplicate are spam: {truth:?}");
    assert_eq!(search(&app, &[("spam", "true")]).await, spam);
    assert_eq!(search(&app, &[("spam", "false")]).await, expect(&|e| e["verdict"]["spam"] == false));
    for reason in ["blank", "duplicate"] {
        let has = |e: &Value| e["verdict"]["reasons"].as_array().unwrap().iter().any(|r| r == reason);
        assert_eq!(search(&app, &[("reason", reason)]).await, expect(&has), "reason={reason}");
    }
    assert_eq!(
        search(&app, &[("camera", "cam-1"), ("spam", "true"), ("media_type", "image/jpeg")]).await,
        expect(&|e| {
            e["event"]["camera"] == "cam-1" && e["verdict"]["spam"] == true && e["event"]["media_type"] == "image/jpeg"
        })
    );
    let (since, until) = (rfc3339(before), rfc3339(after));
    assert_eq!(search(&app, &[("since", &since), ("until", &until)]).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(search(&app, &[("since", &until)]).await, Vec::<u64>::new());
    assert_eq!(search(&app, &[("until", &since)]).await, Vec::<u64>::new());
    let page = app.get_json("/v1/events?camera=cam-1&limit=2&after=1").await;
    assert_eq!(seqs(page["events"].as_array().unwrap()), vec![2, 3]);
    assert_eq!(page["next_after"], 3);

    // The CLI answers the same from the same tables.
    let cli: Value = serde_json::from_str(&camledger(&[
        "events",
        "search",
        "--data-dir",
        app.dir(),
        "--spam",
        "true",
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(seqs(cli["events"].as_array().unwrap()), spam);
    assert_eq!(cli["events"].as_array().unwrap(), &all_pages(&app, &app.auditor_token, &[("spam", "true")]).await);

    // Rebuilt from git: identical answers.
    let listing = all_pages(&app, &app.auditor_token, &[]).await;
    let numbers = stats(&app, &[]).await;
    assert!(app.signal("-TERM").success());
    let out = camledger(&["reindex", "--data-dir", app.dir()]);
    assert!(out.contains("reindexed 5 events and 5 verdicts"), "{out}");
    app.start();
    assert_eq!(all_pages(&app, &app.auditor_token, &[]).await, listing);
    assert_eq!(stats(&app, &[]).await, numbers);
    assert_eq!(search(&app, &[("reason", "blank")]).await, vec![3]);
}

#[tokio::test]
async fn stats_count_formats_models_days_spam_and_cameras() {
    let app = judged_app().await;
    let truth: Vec<Value> = all_pages(&app, &app.auditor_token, &[]).await;
    let spam_of = |camera: &str| {
        truth.iter().filter(|e| e["event"]["camera"] == camera && e["verdict"]["spam"] == true).count() as u64
    };
    let total_spam = spam_of("cam-1") + spam_of("cam-2");

    let s = stats(&app, &[]).await;
    assert_eq!(
        s["formats"],
        serde_json::json!([{"format": "image/jpeg", "uploads": 4}, {"format": "image/png", "uploads": 1}])
    );
    assert_eq!(
        s["top_camera_models"],
        serde_json::json!([{"model": "Canon EOS 5D", "uploads": 2}, {"model": "NIKON D750", "uploads": 1}])
    );
    let days = s["uploads_per_day"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29], serde_json::json!({"date": today(), "uploads": 5, "spam": total_spam}));
    assert!(days[..29].iter().all(|d| d["uploads"] == 0));
    assert_eq!(s["spam"]["total"], total_spam);
    assert!(s["spam"]["by_reason"]["blank"].as_u64() >= Some(1), "{s}");
    assert!(s["spam"]["by_reason"]["duplicate"].as_u64() >= Some(1), "{s}");
    let cameras = s["cameras"].as_array().unwrap();
    assert_eq!(cameras.len(), 2);
    assert_eq!((cameras[0]["camera"].as_str(), cameras[0]["uploads"].as_u64()), (Some("cam-1"), Some(4)));
    assert_eq!(cameras[0]["spam"], spam_of("cam-1"));
    assert_eq!(cameras[1]["last_seen"], truth[4]["event"]["received_at"]);
    assert_eq!(s["verdict_lag"], 0);
    assert_eq!(s["projected"], serde_json::json!({"events_seq": 5, "verdicts_seq": 5}));

    // Filters: one camera; a time range (answered from the events themselves, not the counters).
    let mine = stats(&app, &[("camera", "cam-2")]).await;
    assert_eq!(mine["formats"], serde_json::json!([{"format": "image/jpeg", "uploads": 1}]));
    assert_eq!(mine["cameras"].as_array().unwrap().len(), 1);
    let since = truth[2]["event"]["received_at"].as_str().unwrap();
    let ranged = stats(&app, &[("since", since)]).await;
    assert_eq!(ranged["uploads_per_day"][29]["uploads"], 3, "{ranged}");
    assert_eq!(
        ranged["top_camera_models"],
        serde_json::json!([
            {"model": "Canon EOS 5D", "uploads": 1}, {"model": "NIKON D750", "uploads": 1}
        ])
    );
    let cli: Value = serde_json::from_str(&camledger(&["stats", "--data-dir", app.dir(), "--since", since])).unwrap();
    assert_eq!(cli, ranged, "camledger stats answers as GET /v1/stats does");

    // Readers only; bad filters are 400 JSON.
    assert_eq!(app.get("/v1/stats", &app.camera_token).await.status(), 403);
    let bad = app.get("/v1/stats?since=yesterday", &app.auditor_token).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_since");
}

#[tokio::test]
async fn a_camera_token_searches_only_its_own_events() {
    let app = TestApp::spawn().await;
    let other = app.add_camera("cam-2");
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    assert_eq!(app.upload_as(&other, jpeg(2), "image/jpeg").await.status(), 201);
    assert_eq!(app.upload(jpeg(3)).await.status(), 201);

    assert_eq!(seqs(&all_pages(&app, &app.camera_token, &[]).await), vec![1, 3]);
    assert_eq!(seqs(&all_pages(&app, &app.camera_token, &[("camera", "cam-1")]).await), vec![1, 3]);
    assert!(all_pages(&app, &app.camera_token, &[("camera", "cam-2")]).await.is_empty());
    assert_eq!(seqs(&all_pages(&app, &other, &[("media_type", "image/jpeg")]).await), vec![2]);
    assert_eq!(app.get("/v1/export.jsonl", &app.camera_token).await.status(), 403);
}

#[tokio::test]
async fn bad_search_filters_answer_400_with_json() {
    let app = TestApp::spawn().await;
    for (query, code) in [
        ("spam=maybe", "invalid_spam"),
        ("since=yesterday", "invalid_since"),
        ("until=2026-02-30T00:00:00Z", "invalid_until"),
        ("limit=1001", "invalid_limit"),
        ("after=-3", "invalid_after"),
        ("camara=cam-1", "invalid_filter"),
        ("camera=", "invalid_filter"),
    ] {
        let response = app.get(&format!("/v1/events?{query}"), &app.auditor_token).await;
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{query}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let export = app.get("/v1/export.jsonl?to=x", &app.auditor_token).await;
    assert_eq!(export.status(), 400);
}

fn copy_read_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("readmodel.sqlite{suffix}");
        let _ = std::fs::remove_file(to.join(&name));
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }
}

#[tokio::test]
async fn the_projection_catches_up_on_start_from_an_older_read_model() {
    let mut app = TestApp::spawn().await;
    upload_many(&app, 0, 3).await;
    assert_eq!(search(&app, &[]).await, vec![1, 2, 3]);
    assert!(app.signal("-TERM").success());
    let saved = tempfile::tempdir().unwrap();
    copy_read_model(app.path(), saved.path());

    app.start();
    upload_many(&app, 3, 5).await;
    let listing = all_pages(&app, &app.auditor_token, &[]).await;
    assert_eq!(seqs(&listing), (1..=8).collect::<Vec<_>>());
    assert!(app.signal("-TERM").success());

    // Back to the read model of 3 events: the next start projects 4..8 and nothing twice.
    copy_read_model(saved.path(), app.path());
    app.start();
    assert_eq!(all_pages(&app, &app.auditor_token, &[]).await, listing);
    let s = stats(&app, &[]).await;
    assert_eq!(s["cameras"][0]["uploads"], 8);
    assert_eq!(s["formats"][0]["uploads"], 8);
}

#[tokio::test]
async fn a_server_killed_mid_projection_leaves_a_consistent_read_model_that_catches_up() {
    let mut app = TestApp::spawn().await;
    upload_many(&app, 0, 400).await;
    assert!(app.signal("-TERM").success());
    // No read model: the next start projects 400 events; kill it while it does.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(app.path().join(format!("readmodel.sqlite{suffix}")));
    }
    app.start();
    tokio::time::sleep(Duration::from_millis(30)).await;
    app.kill();

    app.start();
    let listing = all_pages(&app, &app.auditor_token, &[]).await;
    assert_eq!(seqs(&listing), (1..=400).collect::<Vec<_>>());
    let s = stats(&app, &[]).await;
    assert_eq!(s["cameras"][0]["uploads"], 400, "every event counted once");
    assert_eq!(s["uploads_per_day"][29]["uploads"], 400);
    assert!(app.signal("-TERM").success());
    camledger(&["reindex", "--data-dir", app.dir()]);
    app.start();
    assert_eq!(stats(&app, &[]).await, s, "identical to a rebuild from git");
}

#[tokio::test]
async fn the_export_has_one_line_per_event_matching_git() {
    let app = judged_app().await;
    let response = app.get("/v1/export.jsonl", &app.auditor_token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/jsonl");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    let commits: Vec<String> =
        app.git(&["log", "--reverse", "--format=%H", "refs/heads/events"]).lines().map(str::to_owned).collect();
    for (line, commit) in lines.iter().zip(&commits) {
        let seq = line["event"]["seq"].as_u64().unwrap();
        assert_eq!(line["id"], commit.as_str());
        let stored: Value = serde_json::from_str(&app.git(&["show", &format!("{commit}:event.json")])).unwrap();
        assert_eq!(line["event"], stored, "seq {seq}");
        let one = app.get_json(&format!("/v1/events/{seq}")).await;
        assert_eq!(line["verdict"], one["verdict"], "seq {seq}");
        assert_eq!(line["image"], format!("/v1/events/{seq}/image"));
        let image = app.get(line["image"].as_str().unwrap(), &app.auditor_token).await.bytes().await.unwrap();
        assert_eq!(sha256_hex(&image), line["event"]["sha256"].as_str().unwrap());
    }

    let range = app.get("/v1/export.jsonl?after=1&to=3", &app.auditor_token).await.text().await.unwrap();
    let range_seqs: Vec<u64> =
        range.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["event"]["seq"].as_u64().unwrap()).collect();
    assert_eq!(range_seqs, vec![2, 3]);
    let out = app.path().join("export.jsonl");
    camledger(&["export", "--data-dir", app.dir(), "--after", "1", "--to", "3", "--out", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), range, "the CLI writes the same lines");
    assert_eq!(camledger(&["export", "--data-dir", app.dir()]), text);
}

#[tokio::test]
async fn the_read_model_in_mariadb_answers_as_the_embedded_one() {
    let db = TestDatabase::create();
    let url = db.url();
    let mut app = TestApp::spawn_with(&["--read-model-url", &url]).await;
    let other = app.add_camera("cam-2");
    assert_eq!(app.upload(jpeg_from_camera(1, "Canon", "Canon EOS 5D")).await.status(), 201);
    assert_eq!(app.upload_as(&other, png(2), "image/png").await.status(), 201);
    assert_eq!(app.upload(jpeg(3)).await.status(), 201);

    assert_eq!(search(&app, &[("camera", "cam-1")]).await, vec![1, 3]);
    assert_eq!(search(&app, &[("camera_model", "Canon EOS 5D")]).await, vec![1]);
    let listing = all_pages(&app, &app.auditor_token, &[]).await;
    let numbers = stats(&app, &[]).await;
    assert_eq!(numbers["formats"][0], serde_json::json!({"format": "image/jpeg", "uploads": 2}));
    assert_eq!(mariadb(&format!("SELECT COUNT(*) FROM {}.rm_events", db.name)).trim(), "3");
    assert!(app.signal("-TERM").success());

    // The embedded read model, rebuilt from the same git, gives the same answers.
    let cli: Value = serde_json::from_str(&camledger(&["stats", "--data-dir", app.dir()])).unwrap();
    assert_eq!(cli, numbers);
    let out = camledger(&["reindex", "--data-dir", app.dir(), "--read-model-url", &url]);
    assert!(out.contains("reindexed 3 events"), "{out}");
    app.start();
    assert_eq!(all_pages(&app, &app.auditor_token, &[]).await, listing);
    let started = Instant::now();
    assert_eq!(stats(&app, &[]).await, numbers);
    assert!(started.elapsed() < Duration::from_secs(5));
    let distinct: BTreeSet<u64> = seqs(&listing).into_iter().collect();
    assert_eq!(distinct.len(), 3);
}
