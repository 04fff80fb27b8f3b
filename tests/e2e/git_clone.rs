//! Auditors clone the ledger over git smart HTTP (`/git/ledger.git`) with stock git: they get
//! exactly the three ledger refs, nothing that is not reachable from them, and cannot push;
//! a client that goes away takes its `git upload-pack` with it.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const UPLOAD_PACK: &str = "/git/ledger.git/git-upload-pack";
const REQUEST_TYPE: &str = "application/x-git-upload-pack-request";

fn remote(app: &TestApp) -> String {
    app.url("/git/ledger.git")
}

fn bearer(token: &str) -> String {
    format!("http.extraHeader=Authorization: Bearer {token}")
}

/// `id refname` lines, sorted, of the refs under `refs/`.
fn refs(git_dir: &Path) -> String {
    git(git_dir, &["for-each-ref", "--format=%(objectname) %(refname)", "refs/"])
}

/// One pkt-line.
fn pkt(payload: &str) -> Vec<u8> {
    format!("{:04x}{payload}", payload.len() + 4).into_bytes()
}

/// A protocol v0 fetch request for one object id, as a client that ignores the
/// advertisement would send it.
fn want(id: &str) -> Vec<u8> {
    [pkt(&format!("want {id} side-band-64k ofs-delta\n")), b"0000".to_vec(), pkt("done\n")].concat()
}

async fn post_upload_pack(
    app: &TestApp,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(UPLOAD_PACK))
        .bearer_auth(&app.auditor_token)
        .header("content-type", REQUEST_TYPE)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("an answer")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A PNG of noise, `side`×`side` (about 3 × side² bytes): git cannot compress it.
fn noise_png(seed: u64, side: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    let img = RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).expect("encoding a noise image");
    out.into_inner()
}

/// A ledger of about 24 MB: more than the socket buffers hold, so git is still writing
/// while the test plays a bad client.
async fn upload_24_mb(app: &TestApp) {
    for n in 0..24 {
        let response = app.upload_as(&app.camera_token, noise_png(n, 580), "image/png").await;
        assert_eq!(response.status(), 201);
    }
}

/// The `git upload-pack` and `git pack-objects` processes working in `git_dir` (git
/// changes into the repository it serves).
fn git_processes_in(git_dir: &Path) -> Vec<String> {
    let git_dir = git_dir.canonicalize().expect("the ledger exists");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let cwd = std::fs::read_link(entry.path().join("cwd"));
        if cwd.is_ok_and(|cwd| cwd == git_dir) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    found
}

async fn wait_until_no_git_in(git_dir: &Path, within: Duration) -> Duration {
    let start = Instant::now();
    while !git_processes_in(git_dir).is_empty() {
        assert!(start.elapsed() < within, "still running after {within:?}: {:?}", git_processes_in(git_dir));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// Sends a fetch of refs/heads/events over a raw connection and reads the first bytes of
/// the answer; git is then still busy writing the rest.
async fn start_raw_clone(app: &TestApp) -> TcpStream {
    let head = app.git(&["rev-parse", "refs/heads/events"]);
    let body = want(head.trim());
    let mut socket = TcpStream::connect(app.host_port()).await.expect("connecting");
    let head = format!(
        "POST {UPLOAD_PACK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {REQUEST_TYPE}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        app.auditor_token,
        body.len()
    );
    socket.write_all(&[head.into_bytes(), body].concat()).await.expect("sending");
    let mut first = vec![0u8; 4096];
    let n = socket.read(&mut first).await.expect("reading");
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&first));
    socket
}

async fn wait_for_verdicts(app: &TestApp, last_seq: u64) {
    for _ in 0..300 {
        let json = app.get_json(&format!("/v1/events/{last_seq}")).await;
        if !json["verdict"].is_null() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("event {last_seq} got no verdict within 30 s");
}

#[tokio::test]
async fn an_auditor_clone_has_exactly_the_servers_refs_is_fsck_clean_and_verifies_signatures() {
    let app = TestApp::spawn_with(&["--workers", "1", "--model", TINY_MODEL]).await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    wait_for_verdicts(&app, 3).await;
    let server_refs = refs(&app.git_dir());
    assert_eq!(server_refs.lines().count(), 3, "events, verdicts and notes: {server_refs}");

    let work = tempfile::tempdir().unwrap();
    git_client_ok(work.path(), &["-c", &bearer(&app.auditor_token), "clone", "--mirror", &remote(&app), "mirror.git"]);
    let mirror = work.path().join("mirror.git");
    assert_eq!(refs(&mirror), server_refs);
    assert_eq!(git(&mirror, &["symbolic-ref", "HEAD"]).trim(), "refs/heads/events");
    assert_fsck_clean(&mirror);
    let log = git(&mirror, &["log", "--notes=verdicts", "refs/heads/events"]);
    assert_eq!(log.matches("Notes (verdicts):").count(), 3, "stock git shows every verdict: {log}");

    // Every commit of the clone (events, verdicts, notes) verifies with stock git against
    // the allowed-signers file the server publishes; against an empty one, none does.
    let keys = app.get("/v1/keys", &app.auditor_token).await;
    assert_eq!(keys.status(), 200);
    let signers = work.path().join("allowed_signers");
    std::fs::write(&signers, keys.text().await.unwrap()).unwrap();
    let commits = git(&mirror, &["rev-list", "--all"]);
    let commits: Vec<&str> = commits.lines().collect();
    for ledger_ref in ["refs/heads/verdicts", "refs/notes/verdicts"] {
        let own = git(&mirror, &["rev-list", ledger_ref, "--not", "refs/heads/events"]);
        assert!(!own.trim().is_empty(), "{ledger_ref} has commits of its own to verify");
    }
    let verify = |signers: &Path| {
        let allowed = format!("gpg.ssh.allowedSignersFile={}", signers.display());
        let args = [&["-c", "gpg.format=ssh", "-c", &allowed, "verify-commit"][..], &commits].concat();
        git_client(&mirror, &args)
    };
    let verified = verify(&signers);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    let nobody = work.path().join("nobody");
    std::fs::write(&nobody, "").unwrap();
    assert!(!verify(&nobody).status.success(), "verification must depend on the published keys");
}

#[tokio::test]
async fn the_token_also_works_as_the_basic_password_so_urls_and_credential_helpers_work() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let work = tempfile::tempdir().unwrap();
    let url = remote(&app).replace("http://", &format!("http://auditor:{}@", app.auditor_token));

    git_client_ok(work.path(), &["clone", &url, "checkout"]);
    let checkout = work.path().join("checkout");
    // HEAD is refs/heads/events: a working clone checks out the newest event.
    assert!(checkout.join("event.json").exists());
    assert_eq!(git(&checkout.join(".git"), &["rev-parse", "HEAD"]), app.git(&["rev-parse", "refs/heads/events"]));

    // A later fetch negotiates with what the clone has and brings the new events.
    for n in 2..40 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    git_client_ok(&checkout, &["fetch", "origin"]);
    assert_eq!(
        git(&checkout.join(".git"), &["rev-parse", "refs/remotes/origin/events"]),
        app.git(&["rev-parse", "refs/heads/events"])
    );
    assert_fsck_clean(&checkout.join(".git"));
}

#[tokio::test]
async fn no_token_is_401_a_camera_token_403_and_the_ledger_cannot_be_pushed_to() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let info_refs = app.url("/git/ledger.git/info/refs?service=git-upload-pack");

    let anonymous = app.client.get(&info_refs).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let challenge = anonymous.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Basic "), "git needs a challenge to send Basic: {challenge}");
    assert_eq!(anonymous.json::<Value>().await.unwrap()["error"], "unauthorized");
    let revoked = app.client.get(&info_refs).bearer_auth("aud_not_a_token").send().await.unwrap();
    assert_eq!(revoked.status(), 401);
    let camera = app.client.get(&info_refs).bearer_auth(&app.camera_token).send().await.unwrap();
    assert_eq!(camera.status(), 403);
    assert_eq!(camera.json::<Value>().await.unwrap()["error"], "forbidden");
    let camera_basic = app.client.get(&info_refs).basic_auth("cam-1", Some(&app.camera_token)).send().await.unwrap();
    assert_eq!(camera_basic.status(), 403);
    let work = tempfile::tempdir().unwrap();
    let clone = git_client(work.path(), &["-c", &bearer(&app.camera_token), "clone", "--bare", &remote(&app), "c"]);
    assert!(!clone.status.success(), "a camera token cannot clone");

    for (method, path) in [
        (reqwest::Method::GET, "/git/ledger.git/info/refs?service=git-receive-pack"),
        (reqwest::Method::POST, "/git/ledger.git/git-receive-pack"),
    ] {
        let answer = app.client.request(method, app.url(path)).bearer_auth(&app.auditor_token).send().await.unwrap();
        assert_eq!(answer.status(), 403, "{path}");
        assert_eq!(answer.json::<Value>().await.unwrap()["error"], "forbidden");
    }
    for path in ["/git/ledger.git/HEAD", "/git/ledger.git/objects/info/packs", "/git/other.git/info/refs"] {
        let answer = app.get(path, &app.auditor_token).await;
        assert_eq!(answer.status(), 404, "{path}");
        assert_eq!(answer.json::<Value>().await.unwrap()["error"], "not_found");
    }
    let wrong_type = app
        .client
        .post(app.url(UPLOAD_PACK))
        .bearer_auth(&app.auditor_token)
        .header("content-type", "text/plain")
        .body("0000")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);

    // An auditor with a clone tries to push an event of their own: refused, ledger unchanged.
    let before = refs(&app.git_dir());
    git_client_ok(work.path(), &["-c", &bearer(&app.auditor_token), "clone", &remote(&app), "w"]);
    let w = work.path().join("w");
    std::fs::write(w.join("event.json"), "{}").unwrap();
    git_client_ok(&w, &["-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qam", "forged"]);
    let push = git_client(&w, &["-c", &bearer(&app.auditor_token), "push", "origin", "HEAD:refs/heads/events"]);
    assert!(!push.status.success(), "a push must fail");
    assert!(String::from_utf8_lossy(&push.stderr).contains("403"), "{}", String::from_utf8_lossy(&push.stderr));
    assert_eq!(refs(&app.git_dir()), before);
}

#[tokio::test]
async fn objects_not_reachable_from_the_three_refs_cannot_be_fetched_by_id() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let events = app.git(&["rev-parse", "refs/heads/events"]).trim().to_owned();
    // A secret in the server's repository: a loose blob, a commit on a hidden ref and a
    // replace ref for the head event.
    let secret_file = app.path().join("secret.txt");
    std::fs::write(&secret_file, "not for auditors\n").unwrap();
    let blob = app.git(&["hash-object", "-w", secret_file.to_str().unwrap()]).trim().to_owned();
    let tree_file = app.path().join("tree.txt");
    std::fs::write(&tree_file, format!("100644 blob {blob}\tsecret.txt\n")).unwrap();
    let tree = Command::new("git")
        .arg("--git-dir")
        .arg(app.git_dir())
        .arg("mktree")
        .stdin(std::fs::File::open(&tree_file).unwrap())
        .output()
        .unwrap();
    let tree = String::from_utf8(tree.stdout).unwrap().trim().to_owned();
    let commit =
        app.git(&["-c", "user.name=x", "-c", "user.email=x@x", "commit-tree", &tree, "-m", "hidden"]).trim().to_owned();
    app.git(&["update-ref", "refs/hidden/x", &commit]);
    app.git(&["update-ref", &format!("refs/replace/{events}"), &commit]);
    // Even a repository configured to allow it must not serve them: the command line wins.
    for key in ["uploadpack.allowAnySHA1InWant", "uploadpack.allowTipSHA1InWant", "uploadpack.allowReachableSHA1InWant"]
    {
        app.git(&["config", key, "true"]);
    }
    app.git(&["config", "uploadpack.hideRefs", "!refs/hidden"]);

    let work = tempfile::tempdir().unwrap();
    let advertised = git_client_ok(work.path(), &["-c", &bearer(&app.auditor_token), "ls-remote", &remote(&app)]);
    assert_eq!(advertised, format!("{events}\tHEAD\n{events}\trefs/heads/events\n"));

    git_client_ok(work.path(), &["-c", &bearer(&app.auditor_token), "clone", "--bare", &remote(&app), "c.git"]);
    let clone = work.path().join("c.git");
    for version in ["0", "1", "2"] {
        for id in [&commit, &blob] {
            let fetch = git_client(
                &clone,
                &[
                    "-c",
                    &bearer(&app.auditor_token),
                    "-c",
                    &format!("protocol.version={version}"),
                    "fetch",
                    "origin",
                    id,
                ],
            );
            assert!(!fetch.status.success(), "protocol {version}: fetching {id} must fail");
        }
    }
    for id in [&commit, &blob, &tree] {
        assert!(!git_client(&clone, &["cat-file", "-e", id]).status.success(), "{id} reached the clone");
    }

    // A client that ignores the advertisement and asks anyway, in protocol v0: git refuses
    // the commit; the server refuses the blob and the tree (git's check only covers commits).
    let answer = post_upload_pack(&app, &[], want(&commit)).await;
    assert_eq!(answer.status(), 200);
    let body = answer.bytes().await.unwrap();
    assert!(contains(&body, b"not our ref"), "{}", String::from_utf8_lossy(&body));
    assert!(!contains(&body, b"PACK"), "a pack was sent for the hidden commit");
    for id in [&blob, &tree] {
        let answer = post_upload_pack(&app, &[], want(id)).await;
        assert_eq!(answer.status(), 403, "{id}");
        let json: Value = answer.json().await.unwrap();
        assert!(json["message"].as_str().unwrap().starts_with("not our ref"), "{json}");
    }
    // ... and in protocol v2, which would serve a hidden object by id if the header reached git.
    let v2 =
        [pkt("command=fetch\n"), b"0001".to_vec(), pkt(&format!("want {commit}\n")), pkt("done\n"), b"0000".to_vec()]
            .concat();
    let answer = post_upload_pack(&app, &[("git-protocol", "version=2")], v2).await;
    assert_eq!(answer.status(), 400);
    assert_eq!(answer.json::<Value>().await.unwrap()["error"], "invalid_git_request");
    // The same request for a served object gets its pack: the refusals above are not noise.
    let served = post_upload_pack(&app, &[], want(&events)).await.bytes().await.unwrap();
    assert!(contains(&served, b"PACK"));
}

#[tokio::test]
async fn a_client_that_disconnects_mid_clone_leaves_no_git_process_behind() {
    let app = TestApp::spawn().await;
    upload_24_mb(&app).await;
    let socket = start_raw_clone(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!git_processes_in(&app.git_dir()).is_empty(), "git is still writing the clone");

    drop(socket);
    let gone_after = wait_until_no_git_in(&app.git_dir(), Duration::from_secs(10)).await;
    eprintln!("git gone {gone_after:?} after the client disconnected");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_at_the_idle_timeout_but_a_slow_reader_is_not() {
    let app = TestApp::spawn_with(&["--idle-timeout-secs", "2"]).await;
    upload_24_mb(&app).await;

    let stalled = start_raw_clone(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!git_processes_in(&app.git_dir()).is_empty(), "git is waiting for the client to read");
    let gone_after = wait_until_no_git_in(&app.git_dir(), Duration::from_secs(15)).await;
    eprintln!("git gone {gone_after:?} after the client stopped reading");
    drop(stalled);

    // Reading steadily (64 KiB, then a 5 ms pause) takes several idle timeouts in all: the
    // connection sends nothing, yet it is busy and must not be cut.
    let mut reader = start_raw_clone(&app).await;
    let (start, mut received, mut tail) = (Instant::now(), 0usize, Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await.expect("reading the clone");
        if n == 0 {
            break;
        }
        received += n;
        tail = [&tail[tail.len().saturating_sub(16)..], &buf[..n]].concat();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("slow reader: {received} bytes in {:?}", start.elapsed());
    assert!(received > 24_000_000, "the whole pack arrived: {received} bytes");
    assert!(tail.ends_with(b"0000\r\n0\r\n\r\n"), "the response ended cleanly: {:?}", String::from_utf8_lossy(&tail));
}

#[tokio::test]
async fn oversized_requests_and_gzip_bombs_get_413_and_a_busy_server_503() {
    let app = TestApp::spawn_with(&["--git-max-request-bytes", "65536", "--git-max-concurrent", "1"]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let events = app.git(&["rev-parse", "refs/heads/events"]).trim().to_owned();

    // Declared too large: refused before git runs (and before the body is sent).
    let mut socket = TcpStream::connect(app.host_port()).await.unwrap();
    let head = format!(
        "POST {UPLOAD_PACK} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {REQUEST_TYPE}\r\n\
         Content-Length: 100000\r\nConnection: close\r\n\r\n",
        app.auditor_token
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":"body_too_large""#), "{answer}");
    // Chunked (no length): a want and thousands of haves, cut while streaming into git.
    let mut request = pkt(&format!("want {events} side-band-64k\n"));
    request.extend_from_slice(b"0000");
    for n in 0..2000u32 {
        request.extend(pkt(&format!("have {n:040x}\n")));
    }
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = request.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    let chunked = post_upload_pack(&app, &[], reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))).await;
    assert_eq!(chunked.status(), 413);
    assert_eq!(chunked.json::<Value>().await.unwrap()["error"], "body_too_large");
    // 1 MiB of zeros in about a kilobyte of gzip.
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![0u8; 1 << 20]).unwrap();
    let bomb = post_upload_pack(&app, &[("content-encoding", "gzip")], bomb.finish().unwrap()).await;
    assert_eq!(bomb.status(), 413);
    // A gzipped request within the cap is served.
    let mut gzipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzipped.write_all(&want(&events)).unwrap();
    let served = post_upload_pack(&app, &[("content-encoding", "gzip")], gzipped.finish().unwrap()).await;
    assert_eq!(served.status(), 200);
    assert!(contains(&served.bytes().await.unwrap(), b"PACK"));

    // One fetch whose request never ends holds the only slot (once the fetches above have
    // given theirs back): the next one is told to wait.
    let info_refs = "/git/ledger.git/info/refs?service=git-upload-pack";
    wait_for_a_free_slot(&app, info_refs).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok([pkt(&format!("want {events}\n")), b"0000".to_vec()].concat())).await.unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let holder = tokio::spawn({
        let (client, url, token) = (app.client.clone(), app.url(UPLOAD_PACK), app.auditor_token.clone());
        async move {
            let _ = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", REQUEST_TYPE)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await;
        }
    });
    let start = Instant::now();
    while git_processes_in(&app.git_dir()).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "the holder's git upload-pack never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let busy = app.get(info_refs, &app.auditor_token).await;
    assert_eq!(busy.status(), 503);
    assert!(busy.headers().contains_key("retry-after"));
    assert_eq!(busy.json::<Value>().await.unwrap()["error"], "busy");
    // The holder goes away: its git is killed and the slot is free again.
    holder.abort();
    drop(tx);
    wait_until_no_git_in(&app.git_dir(), Duration::from_secs(10)).await;
    wait_for_a_free_slot(&app, info_refs).await;
}

#[tokio::test]
async fn a_fetch_past_git_timeout_secs_is_ended_and_its_git_killed() {
    let app = TestApp::spawn_with(&["--git-timeout-secs", "1"]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let events = app.git(&["rev-parse", "refs/heads/events"]).trim().to_owned();
    // Wants, then nothing more: git waits for the rest of the request until it is killed.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok([pkt(&format!("want {events}\n")), b"0000".to_vec()].concat())).await.unwrap();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let start = Instant::now();
    let answer = post_upload_pack(&app, &[], reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(answer.status(), 408);
    assert_eq!(answer.json::<Value>().await.unwrap()["error"], "request_timeout");
    assert!(start.elapsed() < Duration::from_secs(10), "ended after {:?}", start.elapsed());
    assert!(git_processes_in(&app.git_dir()).is_empty(), "{:?}", git_processes_in(&app.git_dir()));
    drop(tx);
}

async fn wait_for_a_free_slot(app: &TestApp, info_refs: &str) {
    for _ in 0..100 {
        if app.get(info_refs, &app.auditor_token).await.status() == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the git slot stayed taken for 5 s");
}
