//! Test helpers that speak the API's language: a real `camledger` process on port 0 with a
//! fresh data dir, real HTTP, and the real `git` to inspect what it wrote.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_camledger");

/// Runs `camledger ARGS` to completion; panics with its output if it fails.
pub fn camledger(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).env("CAMLEDGER_LOG", "warn").output().expect("running camledger");
    assert!(
        out.status.success(),
        "camledger {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// The token printed as the last word of the last line of stdout.
pub fn last_word(output: &str) -> String {
    output.lines().last().and_then(|l| l.split_whitespace().last()).expect("a token").to_owned()
}

/// The ONNX Runtime library: as scripts/test exports it, else where scripts/fetch-onnxruntime puts it.
pub fn ort_dylib() -> String {
    std::env::var("CAMLEDGER_ORT_DYLIB").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../vendor/onnxruntime/libonnxruntime.so.1.31.1").to_owned()
    })
}

/// A tiny real ONNX model (the processor's test fixture) with its manifest.
pub const TINY_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../processor/tests/fixtures/tiny.manifest.json");

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A distinct, photo-sized-ish image: a gradient with a pattern derived from `n`.
pub fn image_bytes(n: u64, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(96, 64, |x, y| {
        let v = (n.wrapping_mul(2654435761) >> 8) as u32;
        Rgb([((x * 3 + v) % 256) as u8, ((y * 5 + v / 7) % 256) as u8, (((x ^ y) + v / 13) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encoding a test image");
    out.into_inner()
}

pub fn jpeg(n: u64) -> Vec<u8> {
    image_bytes(n, ImageFormat::Jpeg)
}

pub fn png(n: u64) -> Vec<u8> {
    image_bytes(n, ImageFormat::Png)
}

/// A uniformly dark JPEG: judged spam with reason `blank`.
pub fn flat_black_jpeg() -> Vec<u8> {
    let img = RgbImage::from_pixel(96, 64, Rgb([2, 2, 2]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).expect("encoding a test image");
    out.into_inner()
}

/// `file` (a JPEG) with a marker segment inserted right after SOI.
pub fn with_segment(mut file: Vec<u8>, marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut segment = vec![0xFF, marker];
    segment.extend_from_slice(&u16::try_from(payload.len() + 2).expect("a segment fits 64 KiB").to_be_bytes());
    segment.extend_from_slice(payload);
    file.splice(2..2, segment);
    file
}

/// [`jpeg`]`(n)` with an EXIF block (APP1) naming the camera's Make and Model.
pub fn jpeg_from_camera(n: u64, make: &str, model: &str) -> Vec<u8> {
    // Little-endian TIFF: header, IFD0 with Make (0x010F) and Model (0x0110) as ASCII, the strings.
    let (make, model) = (format!("{make}\0"), format!("{model}\0"));
    let data_at = 8 + 2 + 2 * 12 + 4;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend(8u32.to_le_bytes());
    tiff.extend(2u16.to_le_bytes());
    for (tag, text, at) in [(0x010Fu16, &make, data_at), (0x0110, &model, data_at + make.len())] {
        tiff.extend(tag.to_le_bytes());
        tiff.extend(2u16.to_le_bytes());
        tiff.extend((text.len() as u32).to_le_bytes());
        tiff.extend((at as u32).to_le_bytes());
    }
    tiff.extend(0u32.to_le_bytes());
    tiff.extend(make.as_bytes());
    tiff.extend(model.as_bytes());
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend(tiff);
    with_segment(jpeg(n), 0xE1, &app1)
}

pub struct TestApp {
    pub data_dir: tempfile::TempDir,
    /// A data dir the test made elsewhere (used instead of `data_dir`).
    owned_dir: Option<PathBuf>,
    pub base: String,
    /// `http://ADDR/metrics` of the `--metrics-listen` listener, when spawned with one.
    pub metrics_url: Option<String>,
    pub camera_token: String,
    pub auditor_token: String,
    pub client: reqwest::Client,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl TestApp {
    /// A server with one camera (`cam-1`) and one auditor token.
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    pub async fn spawn_with(extra_args: &[&str]) -> TestApp {
        let data_dir = tempfile::tempdir().expect("a temp dir");
        let dir = data_dir.path().to_str().expect("utf-8 path").to_owned();
        let camera_token = last_word(&camledger(&["cameras", "add", "cam-1", "--data-dir", &dir]));
        let auditor_token = last_word(&camledger(&["tokens", "add", "alice", "--role", "auditor", "--data-dir", &dir]));
        let mut app = TestApp {
            data_dir,
            owned_dir: None,
            base: String::new(),
            metrics_url: None,
            camera_token,
            auditor_token,
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("a client"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        app.start();
        app
    }

    /// A server on an existing data dir (e.g. a restored one) with known tokens.
    pub fn spawn_on(data_dir: PathBuf, camera_token: String, auditor_token: String) -> TestApp {
        let mut app = TestApp {
            data_dir: tempfile::TempDir::with_prefix("unused").expect("a temp dir"),
            owned_dir: Some(data_dir),
            base: String::new(),
            metrics_url: None,
            camera_token,
            auditor_token,
            client: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("a client"),
            extra_args: Vec::new(),
            child: None,
        };
        app.start();
        app
    }

    pub fn dir(&self) -> &str {
        self.path().to_str().expect("utf-8 path")
    }

    pub fn path(&self) -> &Path {
        self.owned_dir.as_deref().unwrap_or(self.data_dir.path())
    }

    pub fn git_dir(&self) -> PathBuf {
        self.path().join("ledger.git")
    }

    /// Starts the server process and waits for its "listening on" line (and its "metrics on"
    /// line when started with `--metrics-listen`).
    pub fn start(&mut self) {
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir", self.dir(), "--listen", "127.0.0.1:0"])
            .args(["--ort-dylib", &ort_dylib()])
            // Judging is off unless a test turns it on (its own tests are in verdicts.rs).
            .args(if self.extra_args.iter().any(|a| a == "--workers") { vec![] } else { vec!["--workers", "0"] })
            .args(&self.extra_args)
            .env("CAMLEDGER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning camledger serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading the listening line");
        let url = line.trim().rsplit(' ').next().expect("a URL").to_owned();
        assert!(url.starts_with("http://"), "unexpected first line {line:?}");
        self.base = url;
        self.metrics_url = None;
        if self.extra_args.iter().any(|a| a == "--metrics-listen") {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("reading the metrics line");
            let url = line.trim().rsplit(' ').next().expect("a URL").to_owned();
            assert!(url.starts_with("http://") && url.ends_with("/metrics"), "unexpected second line {line:?}");
            self.metrics_url = Some(url);
        }
        self.child = Some(child);
    }

    /// Restarts with none of the extra flags the app was spawned with (e.g. fault injection).
    pub fn start_without_faults(&mut self) {
        self.extra_args.clear();
        self.start();
    }

    /// Stops the server (SIGTERM) and starts it again with `extra_args` instead of its own.
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        assert!(self.signal("-TERM").success(), "the server stops cleanly");
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.start();
    }

    /// The server process's id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `127.0.0.1:PORT`, for raw TCP clients.
    pub fn host_port(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub fn add_camera(&self, id: &str) -> String {
        last_word(&camledger(&["cameras", "add", id, "--data-dir", self.dir()]))
    }

    pub async fn upload_as(&self, token: &str, bytes: Vec<u8>, content_type: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/images"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("sending an upload")
    }

    /// A JPEG upload by the test camera with an `X-Captured-At` header.
    pub async fn upload_captured_at(&self, bytes: Vec<u8>, captured_at: &str) -> reqwest::Response {
        self.client
            .post(self.url("/v1/images"))
            .bearer_auth(&self.camera_token)
            .header("content-type", "image/jpeg")
            .header("x-captured-at", captured_at)
            .body(bytes)
            .send()
            .await
            .expect("an answer, not a reset")
    }

    pub async fn upload(&self, bytes: Vec<u8>) -> reqwest::Response {
        self.upload_as(&self.camera_token.clone(), bytes, "image/jpeg").await
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(token).send().await.expect("sending a GET")
    }

    /// Waits (up to 30 s) until event `seq` has a verdict; returns it.
    pub async fn wait_for_verdict(&self, seq: u64) -> Value {
        for _ in 0..300 {
            let event = self.get_json(&format!("/v1/events/{seq}")).await;
            if !event["verdict"].is_null() {
                return event["verdict"].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("event {seq} got no verdict within 30 s");
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path, &self.auditor_token.clone()).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("a JSON body")
    }

    /// Runs stock git on the ledger repository.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.git_dir(), args)
    }

    /// Sends a signal to the server and waits for it to exit; returns its exit status.
    pub fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let pid = child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("running kill");
        assert!(status.success());
        child.wait().expect("waiting for the server")
    }

    /// SIGKILL: the process dies at once, wherever it is.
    pub fn kill(&mut self) {
        self.signal("-KILL");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn git(git_dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("--git-dir").arg(git_dir).args(args).output().expect("running git");
    git_stdout(out, args)
}

/// The stdout of a git run that must have succeeded (else both outputs in the panic).
fn git_stdout(out: std::process::Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs stock git as a client would (in `dir`), cut off from the user's and the system's
/// configuration and never prompting; the caller checks the outcome.
pub fn git_client(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .output()
        .expect("running git")
}

/// [`git_client`] that must succeed; returns its stdout.
pub fn git_client_ok(dir: &Path, args: &[&str]) -> String {
    git_stdout(git_client(dir, args), args)
}

/// `git fsck --full --strict` must be clean.
pub fn assert_fsck_clean(git_dir: &Path) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["fsck", "--full", "--strict", "--no-dangling"])
        .output()
        .expect("running git fsck");
    // "notice:" lines (e.g. an unborn HEAD before the first event) are not problems.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("notice:")).collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "git fsck failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every event seq on refs/heads/events, newest first, read with stock git.
pub fn seqs_in_git(git_dir: &Path) -> Vec<u64> {
    let refs = git(git_dir, &["for-each-ref", "--format=%(refname)", "refs/heads/events"]);
    if refs.trim().is_empty() {
        return Vec::new();
    }
    git(git_dir, &["log", "--format=%(trailers:key=Seq,valueonly)", "refs/heads/events"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().expect("a numeric Seq trailer"))
        .collect()
}
