//! `GET /metrics` end to end: what a Prometheus scrape sees after real uploads and verdicts,
//! who may scrape, and the token-less `--metrics-listen` listener.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// One sample line of the exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (0.0.4) strictly: every line is `# HELP`, `# TYPE` or a
/// sample of a family whose `# TYPE` came first; names and label syntax as the format says;
/// every histogram's buckets rise and end in `+Inf` equal to its `_count`. Panics otherwise.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (kind, name, rest) = (words.next().unwrap(), words.next().unwrap_or(""), words.next().unwrap_or(""));
            assert!(valid_name(name), "bad metric name in {line:?}");
            match kind {
                "HELP" => assert!(!rest.is_empty(), "empty help in {line:?}"),
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest), "{line:?}");
                    assert!(types.insert(name.to_owned(), rest.to_owned()).is_none(), "{name} typed twice");
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (name, rest) = line.split_at(line.find(['{', ' ']).unwrap_or_else(|| panic!("no value in {line:?}")));
        assert!(valid_name(name), "bad sample name in {line:?}");
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = inner.find("=\"").unwrap_or_else(|| panic!("bad label in {line:?}"));
                let key = &inner[..eq];
                assert!(valid_name(key) && !key.contains(':'), "bad label name in {line:?}");
                let mut value = String::new();
                let mut chars = inner[eq + 2..].char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => value.push(c),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        Some((i, '"')) => break eq + 2 + i + 1,
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                };
                labels.insert(key.to_owned(), value);
                inner = &inner[end..];
                inner = inner.strip_prefix(',').unwrap_or(inner);
            }
        }
        let value_text = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        let value_text = value_text.split(' ').next().unwrap();
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        samples.push(Sample { name: name.to_owned(), labels, value });
    }
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        // Per label set (without `le`): buckets rise, and `+Inf` equals `_count`.
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let mut key = s.labels.clone();
            let le = key.remove("le").expect("a bucket has le");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().expect("a numeric le") };
            series.entry(key).or_default().push((le, s.value));
        }
        for (key, buckets) in series {
            assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{family} {key:?}: {buckets:?}");
            let count = samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && s.labels == key)
                .unwrap_or_else(|| panic!("{family} {key:?} has no _count"));
            assert_eq!(buckets.last().map(|b| (b.0, b.1)), Some((f64::INFINITY, count.value)), "{family} {key:?}");
        }
    }
    samples
}

/// The value of the sample `name` whose labels include `labels` (0 when there is none: a
/// counter that never moved has no series).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v)))
        .map(|s| s.value)
        .sum()
}

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let response = app.get("/metrics", &app.auditor_token).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse_exposition(&response.text().await.unwrap())
}

#[tokio::test]
async fn a_scrape_after_uploads_and_verdicts_counts_exactly_what_happened() {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    assert_eq!(app.upload(jpeg(0)).await.status(), 200, "a duplicate");
    assert_eq!(app.upload(flat_black_jpeg()).await.status(), 201);
    assert_eq!(app.upload(b"not an image".to_vec()).await.status(), 415);
    app.wait_for_verdict(5).await;

    // The writer and the worker report right after they answer: give them a moment.
    let mut samples = scrape(&app).await;
    for _ in 0..50 {
        let reported = |name: &str| value(&samples, name, &[]) == 5.0;
        if reported("camledger_verdicts_total") && reported("camledger_batch_size_count") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples = scrape(&app).await;
    }
    let v = |name: &str, labels: &[(&str, &str)]| value(&samples, name, labels);
    assert_eq!(v("camledger_uploads_total", &[("status", "201")]), 4.0);
    assert_eq!(v("camledger_uploads_total", &[("status", "200")]), 1.0);
    assert_eq!(v("camledger_uploads_total", &[("status", "415")]), 1.0);
    assert_eq!(v("camledger_events_head_seq", &[]), 5.0);
    assert_eq!(v("camledger_verdicts_head_seq", &[]), 5.0);
    assert_eq!(v("camledger_verdict_lag_events", &[]), 0.0);
    // Five appends reached the writer (the 415 did not); one after the other, so five batches.
    assert_eq!(v("camledger_batch_size_sum", &[]), 5.0);
    assert_eq!(v("camledger_batch_size_count", &[]), 5.0);
    assert_eq!(v("camledger_batch_duration_seconds_count", &[]), 5.0);
    assert!(v("camledger_batch_duration_seconds_sum", &[]) > 0.0);
    assert!(v("camledger_fsync_duration_seconds_count", &[]) >= 5.0, "at least one fsync per batch");
    assert!(v("camledger_packs", &[]) >= 1.0);
    // Judging: five verdicts, the duplicate and the blank frame spam, each analysis timed.
    assert_eq!(v("camledger_verdicts_total", &[]), 5.0);
    assert_eq!(v("camledger_judge_duration_seconds_count", &[]), 5.0);
    assert_eq!(v("camledger_spam_total", &[("reason", "duplicate")]), 1.0);
    assert_eq!(v("camledger_spam_total", &[("reason", "blank")]), 1.0);
    // HTTP by route template: the uploads, and the polls for verdict 5 under one series.
    let uploads = [("method", "POST"), ("route", "/v1/images"), ("status", "201")];
    assert_eq!(v("camledger_http_request_duration_seconds_count", &uploads), 4.0);
    assert!(v("camledger_http_request_duration_seconds_count", &[("route", "/v1/events/{seq}")]) >= 1.0);
    let routes: Vec<&str> = samples.iter().filter_map(|s| s.labels.get("route")).map(String::as_str).collect();
    assert!(routes.iter().all(|r| !r.starts_with("/v1/events/5")), "raw paths never become labels: {routes:?}");
}

#[tokio::test]
async fn metrics_need_an_auditor_or_admin_token() {
    let app = TestApp::spawn().await;
    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.json::<Value>().await.unwrap()["error"], "unauthorized");

    let camera = app.get("/metrics", &app.camera_token).await;
    assert_eq!(camera.status(), 403);
    let body: Value = camera.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("auditor or admin"), "{body}");

    // Refusals are requests too: they show under the route, not the raw path.
    let samples = scrape(&app).await;
    let refused = [("route", "/metrics"), ("status", "403")];
    assert_eq!(value(&samples, "camledger_http_request_duration_seconds_count", &refused), 1.0);
}

#[tokio::test]
async fn the_metrics_listener_serves_metrics_without_a_token_and_nothing_else() {
    let app = TestApp::spawn_with(&["--metrics-listen", "127.0.0.1:0", "--snapshot-interval", "1s"]).await;
    let metrics_url = app.metrics_url.clone().expect("the metrics line");
    assert_ne!(metrics_url, app.url("/metrics"), "a listener of its own");
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);

    // The scheduled snapshot shows up within a few seconds; no token needed here.
    let mut samples = Vec::new();
    for _ in 0..100 {
        let response = app.client.get(&metrics_url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        samples = parse_exposition(&response.text().await.unwrap());
        if value(&samples, "camledger_last_snapshot_stored_bytes", &[]) > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(value(&samples, "camledger_uploads_total", &[("status", "201")]), 1.0);
    assert_eq!(value(&samples, "camledger_events_head_seq", &[]), 1.0);
    let taken = value(&samples, "camledger_last_snapshot_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(now - 60.0 < taken && taken <= now + 1.0, "a snapshot just now: {taken} vs {now}");
    assert!(value(&samples, "camledger_last_snapshot_stored_bytes", &[]) > 0.0);
    assert_eq!(value(&samples, "camledger_snapshot_failures_in_a_row", &[]), 0.0);

    // Only /metrics there: the API stays behind tokens on its own listener.
    let origin = metrics_url.trim_end_matches("/metrics");
    let other = app.client.get(format!("{origin}/v1/events")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    assert_eq!(other.json::<Value>().await.unwrap()["error"], "not_found");
    assert_eq!(app.client.get(app.url("/metrics")).send().await.unwrap().status(), 401);
}
