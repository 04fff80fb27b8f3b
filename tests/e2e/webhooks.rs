//! Webhooks: a real receiver on 127.0.0.1 gets every new event, signed, in seq order, at
//! least once, across failures, a kill -9 and a remove.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::*;

const SECRET: &str = "test-secret-0123456789";

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Received {
    delivery: String,
    kind: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

impl Received {
    fn seq(&self) -> u64 {
        self.json()["seq"].as_u64().expect("a seq in the body")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on 127.0.0.1:0 that records every POST; it answers 500 to the next
/// `fail_next` requests, then 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    fail_next: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let router = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the receiver");
        let url = format!("http://{}/hook", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (receiver, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("the receiver's lock").clone()
    }

    /// The seqs answered 200, in arrival order.
    fn delivered(&self) -> Vec<u64> {
        self.got().iter().filter(|r| r.answered == 200).map(Received::seq).collect()
    }

    /// Waits (up to 30 s) until `n` deliveries were answered 200.
    async fn wait_for(&self, n: usize) {
        for _ in 0..300 {
            if self.delivered().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{n} deliveries expected within 30 s; got {:?}", self.got());
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let fail = receiver.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let answered = if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    receiver.got.lock().expect("the receiver's lock").push(Received {
        delivery: header("x-camledger-delivery"),
        kind: header("x-camledger-event"),
        signature: header("x-camledger-signature"),
        body: body.to_vec(),
        answered: answered.as_u16(),
    });
    answered
}

/// `camledger webhooks add URL --events event --secret SECRET`; returns the hook's id.
fn add_hook(app: &TestApp, url: &str) -> String {
    last_word(&camledger(&["webhooks", "add", url, "--events", "event", "--secret", SECRET, "--data-dir", app.dir()]))
}

fn webhooks_json(app: &TestApp, args: &[&str]) -> Value {
    let mut all = vec!["webhooks"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--data-dir", app.dir(), "--format", "json"]);
    serde_json::from_str(&camledger(&all)).expect("JSON output")
}

/// Waits (up to 5 s) until the only hook's event checkpoint is `seq` (it moves just after the 2xx).
async fn wait_for_checkpoint(app: &TestApp, seq: u64) {
    for _ in 0..50 {
        if webhooks_json(app, &["list"])[0]["events_seq"] == seq {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the checkpoint did not reach {seq}: {}", webhooks_json(app, &["list"]));
}

async fn upload_images(app: &TestApp, numbers: std::ops::RangeInclusive<u64>) {
    for n in numbers {
        assert_eq!(app.upload(jpeg(7000 + n)).await.status(), 201);
    }
}

fn signed_with_secret(received: &Received) -> bool {
    let Some(hex_mac) = received.signature.strip_prefix("sha256=") else { return false };
    let Ok(mac_bytes) = hex::decode(hex_mac) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(&received.body);
    mac.verify_slice(&mac_bytes).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_arrive_in_seq_order_signed_with_the_hooks_secret() {
    let app = TestApp::spawn().await;
    let (receiver, url) = Receiver::start().await;
    let hook = add_hook(&app, &url);
    upload_images(&app, 1..=5).await;
    receiver.wait_for(5).await;

    assert_eq!(receiver.delivered(), vec![1, 2, 3, 4, 5]);
    for received in receiver.got() {
        let body = received.json();
        let id = format!("{hook}-event-{}", received.seq());
        assert!(signed_with_secret(&received), "a valid X-Camledger-Signature on {id}");
        assert_eq!(received.delivery, id);
        assert_eq!(body["delivery"], id.as_str());
        assert_eq!((received.kind.as_str(), body["kind"].as_str()), ("event", Some("event")));
        let commit = body["commit"].as_str().expect("the event's commit");
        assert_eq!(app.git(&["cat-file", "-t", commit]).trim(), "commit", "the body names a commit in the ledger");
        assert!(body["event"].is_object(), "the event as git holds it: {body}");
    }
    wait_for_checkpoint(&app, 5).await;
    let hooks = webhooks_json(&app, &["list"]);
    assert_eq!(hooks[0]["id"], hook.as_str());
    assert!(!hooks.to_string().contains(SECRET), "list masks the secret: {hooks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_three_times_gets_the_same_delivery_again_and_order_is_kept() {
    let app = TestApp::spawn().await;
    let (receiver, url) = Receiver::start().await;
    receiver.fail_next.store(3, Ordering::SeqCst);
    let hook = add_hook(&app, &url);
    upload_images(&app, 1..=3).await;
    receiver.wait_for(3).await;
    wait_for_checkpoint(&app, 3).await;

    let got = receiver.got();
    let seqs: Vec<(u64, u16)> = got.iter().map(|r| (r.seq(), r.answered)).collect();
    assert_eq!(seqs, vec![(1, 500), (1, 500), (1, 500), (1, 200), (2, 200), (3, 200)], "retried, in order");
    assert!(got[..4].iter().all(|r| r.delivery == format!("{hook}-event-1")), "one delivery id for every retry");
    // Backoff: 0.5-1 s, then 1-2 s, then 2-4 s between the four tries of seq 1 (jittered).
    let failures = webhooks_json(&app, &["deliveries", "--failed"]);
    let failures = failures.as_array().expect("a list");
    assert_eq!(failures.len(), 3, "{failures:?}");
    for (failure, attempt) in failures.iter().zip([3, 2, 1]) {
        assert_eq!(failure["delivery"], format!("{hook}-event-1").as_str());
        assert_eq!(failure["status"], 500);
        assert_eq!(failure["attempt"], attempt, "newest first");
    }
    let all = webhooks_json(&app, &["deliveries"]);
    assert_eq!(all.as_array().expect("a list").len(), 6, "failures and successes are both kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_delivery_resumes_from_the_checkpoint_without_a_replay() {
    let mut app = TestApp::spawn().await;
    let (receiver, url) = Receiver::start().await;
    add_hook(&app, &url);
    upload_images(&app, 1..=3).await;
    receiver.wait_for(3).await;
    wait_for_checkpoint(&app, 3).await;

    // The receiver goes down while 4..=6 are pending; the server dies mid-retry.
    receiver.fail_next.store(usize::MAX, Ordering::SeqCst);
    upload_images(&app, 4..=6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.kill();
    receiver.fail_next.store(0, Ordering::SeqCst);
    let before = receiver.got().len();
    app.start();
    receiver.wait_for(6).await;

    assert_eq!(receiver.delivered(), vec![1, 2, 3, 4, 5, 6], "every event once, in order");
    let after_restart: Vec<u64> = receiver.got()[before..].iter().map(Received::seq).collect();
    assert_eq!(after_restart.first(), Some(&4), "resumed after the checkpoint, not from 0: {after_restart:?}");
    wait_for_checkpoint(&app, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_hook_gets_nothing_more() {
    let app = TestApp::spawn().await;
    let (receiver, url) = Receiver::start().await;
    let hook = add_hook(&app, &url);
    upload_images(&app, 1..=1).await;
    receiver.wait_for(1).await;

    assert!(camledger(&["webhooks", "remove", &hook, "--data-dir", app.dir()]).contains(&hook));
    tokio::time::sleep(Duration::from_secs(3)).await;
    upload_images(&app, 2..=3).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    assert_eq!(receiver.delivered(), vec![1]);
    assert_eq!(receiver.got().len(), 1);
    assert_eq!(webhooks_json(&app, &["list"]), serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_or_kind_is_refused_with_exit_2() {
    let app = TestApp::spawn().await;
    for (url, events) in [
        ("ftp://127.0.0.1/hook", "event"),
        ("http://user:pw@127.0.0.1/hook", "event"),
        ("127.0.0.1/hook", "event"),
        ("file:///etc/passwd", "event"),
        ("http://127.0.0.1/hook", "push"),
    ] {
        let out = Command::new(BIN)
            .args(["webhooks", "add", url, "--events", events, "--secret", SECRET, "--data-dir", app.dir()])
            .output()
            .expect("running camledger");
        assert_eq!(out.status.code(), Some(2), "{url} {events}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("pw@"), "credentials are not echoed back");
    }
    assert_eq!(webhooks_json(&app, &["list"]), serde_json::json!([]), "nothing was added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_follow_their_events_in_seq_order() {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    let (receiver, url) = Receiver::start().await;
    let hook = last_word(&camledger(&[
        "webhooks",
        "add",
        &url,
        "--events",
        "event,verdict",
        "--secret",
        SECRET,
        "--data-dir",
        app.dir(),
    ]));
    upload_images(&app, 1..=3).await;
    receiver.wait_for(6).await;

    let got = receiver.got();
    let of_kind = |kind: &str| got.iter().filter(|r| r.kind == kind).map(Received::seq).collect::<Vec<_>>();
    assert_eq!(of_kind("event"), vec![1, 2, 3]);
    assert_eq!(of_kind("verdict"), vec![1, 2, 3]);
    for seq in 1..=3 {
        let at = |kind: &str| got.iter().position(|r| r.kind == kind && r.seq() == seq).expect("delivered");
        assert!(at("event") < at("verdict"), "event {seq} goes before its verdict");
    }
    for verdict in got.iter().filter(|r| r.kind == "verdict") {
        assert!(signed_with_secret(verdict));
        assert_eq!(verdict.delivery, format!("{hook}-verdict-{}", verdict.seq()));
        assert!(verdict.json()["verdict"].is_object(), "the verdict as git holds it");
    }
}
