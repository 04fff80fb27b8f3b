//! Cameras push image commits with stock `git push` (`/git/ledger.git`, git-receive-pack):
//! each commit becomes one event through the same admission and writer as `POST /v1/images`,
//! nothing pushed reaches the ledger's refs or object store, and every refusal is told to git.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::helpers::*;

/// A stateless camera: a throwaway bare repository in which it writes one orphan commit per
/// image, as docs/cameras.md shows, with stock git.
struct Camera {
    repo: tempfile::TempDir,
}

/// One tree entry: mode, name and the blob's bytes (or, for a submodule, a commit id).
struct Entry<'a> {
    mode: &'a str,
    name: &'a str,
    content: Vec<u8>,
}

fn file<'a>(name: &'a str, content: &[u8]) -> Entry<'a> {
    Entry { mode: "100644", name, content: content.to_vec() }
}

fn capture(at: &str) -> Entry<'static> {
    file("capture.json", format!("{{\"captured_at\": \"{at}\"}}\n").as_bytes())
}

impl Camera {
    fn new() -> Camera {
        let repo = tempfile::tempdir().expect("a temp dir");
        git_client_ok(repo.path(), &["init", "--quiet", "--bare", "."]);
        Camera { repo }
    }

    fn git_dir(&self) -> &Path {
        self.repo.path()
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(self.git_dir())
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "cam")
            .env("GIT_AUTHOR_EMAIL", "cam@camera")
            .env("GIT_COMMITTER_NAME", "cam")
            .env("GIT_COMMITTER_EMAIL", "cam@camera")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running git");
        child.stdin.take().expect("piped").write_all(stdin).expect("writing to git");
        let out = child.wait_with_output().expect("waiting for git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    }

    /// A commit of `entries` on `parent` (none: an orphan); returns its id.
    fn commit(&self, entries: &[Entry<'_>], parent: Option<&str>) -> String {
        let mut listing = String::new();
        for entry in entries {
            let (kind, id) = match entry.mode {
                "160000" => ("commit", String::from_utf8(entry.content.clone()).expect("a commit id")),
                "040000" => ("tree", self.run(&["mktree"], &[])),
                _ => ("blob", self.run(&["hash-object", "-w", "--stdin"], &entry.content)),
            };
            listing.push_str(&format!("{} {kind} {id}\t{}\n", entry.mode, entry.name));
        }
        let tree = self.run(&["mktree", "--missing"], listing.as_bytes());
        let mut args = vec!["commit-tree", tree.as_str(), "-m", "one image"];
        if let Some(parent) = parent {
            args.extend(["-p", parent]);
        }
        self.run(&args, &[])
    }

    /// `git push URL SPECS…` with the token as Bearer.
    fn push(&self, app: &TestApp, token: &str, specs: &[&str]) -> Output {
        let header = format!("http.extraHeader=Authorization: Bearer {token}");
        let remote = app.url("/git/ledger.git");
        self.push_to(&[&["-c", &header, "push", &remote][..], specs].concat())
    }

    fn push_to(&self, args: &[&str]) -> Output {
        let dir = self.git_dir().to_str().expect("utf-8 path");
        git_client(self.git_dir(), &[&["--git-dir", dir][..], args].concat())
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn short(id: &str) -> &str {
    &id[..8]
}

fn incoming(commit: &str) -> String {
    format!("{commit}:refs/heads/incoming")
}

fn quarantine(app: &TestApp) -> PathBuf {
    app.path().join("push-quarantine")
}

/// `event.json` of event `seq`, read from the ledger with stock git.
fn event(app: &TestApp, seq: usize) -> Value {
    let ids = app.git(&["rev-list", "--reverse", "refs/heads/events"]);
    let id = ids.lines().nth(seq - 1).unwrap_or_else(|| panic!("no event {seq}"));
    serde_json::from_str(&app.git(&["cat-file", "blob", &format!("{id}:event.json")])).expect("event.json")
}

/// What a push leaves behind on the server: only events.
fn assert_nothing_pushed_is_kept(app: &TestApp) {
    let refs = app.git(&["for-each-ref", "--format=%(refname)"]);
    assert!(!refs.contains("incoming"), "the pushed ref is never stored: {refs}");
    let left = std::fs::read_dir(quarantine(app)).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "every quarantine is removed after its push");
    assert_fsck_clean(&app.git_dir());
}

#[tokio::test]
async fn a_pushed_image_commit_becomes_an_event_with_the_images_sha256() {
    let app = TestApp::spawn().await;
    let camera = Camera::new();
    let image = jpeg(1);
    let commit = camera.commit(&[file("frame.jpg", &image), capture("2026-11-22T01:02:03+01:00")], None);

    let out = camera.push(&app, &app.camera_token, &[&incoming(&commit)]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("remote: camledger: {} seq 1", short(&commit))), "{}", stderr(&out));
    let event = event(&app, 1);
    assert_eq!(event["sha256"], sha256_hex(&image));
    assert_eq!(event["camera"], "cam-1");
    assert_eq!(event["captured_at"], "2026-11-22T00:02:03.000000Z");
    let trailers = app.git(&["log", "-1", "--format=%(trailers:key=Idempotency-Key,valueonly)", "refs/heads/events"]);
    assert_eq!(trailers.trim(), commit, "the pushed commit id is the event's idempotency key");
    assert_nothing_pushed_is_kept(&app);
}

#[tokio::test]
async fn pushing_the_same_commit_again_creates_nothing_and_reports_the_first_seq() {
    let app = TestApp::spawn().await;
    let camera = Camera::new();
    let commit = camera.commit(&[file("frame.jpg", &jpeg(1))], None);
    assert!(camera.push(&app, &app.camera_token, &[&incoming(&commit)]).status.success());

    let again = camera.push(&app, &app.camera_token, &[&incoming(&commit)]);

    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("seq 1 (pushed before; nothing new written)"), "{}", stderr(&again));
    assert_eq!(seqs_in_git(&app.git_dir()), vec![1]);
}

#[tokio::test]
async fn a_pushed_image_already_uploaded_becomes_a_duplicate_event() {
    let app = TestApp::spawn().await;
    let image = jpeg(7);
    assert_eq!(app.upload(image.clone()).await.status(), 201);
    let camera = Camera::new();
    let commit = camera.commit(&[file("frame.jpg", &image)], None);

    let out = camera.push(&app, &app.camera_token, &[&incoming(&commit)]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("seq 2 (duplicate of seq 1)"), "{}", stderr(&out));
    let event = event(&app, 2);
    assert_eq!(
        (event["duplicate_of"].as_u64(), event["sha256"].as_str()),
        (Some(1), Some(sha256_hex(&image).as_str()))
    );
}

#[tokio::test]
async fn a_text_file_named_jpg_is_refused_as_unsupported_format_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let camera = Camera::new();
    let commit = camera.commit(&[file("frame.jpg", b"hello, not an image\n")], None);

    let out = camera.push(&app, &app.camera_token, &[&incoming(&commit)]);

    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("[remote rejected]") && said.contains("(unsupported_format: not a JPEG, PNG or WebP"),
        "{said}"
    );
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new());
    assert_nothing_pushed_is_kept(&app);
}

#[tokio::test]
async fn trees_that_are_not_one_image_are_refused_each_with_its_reason() {
    let app = TestApp::spawn().await;
    let camera = Camera::new();
    let submodule = camera.commit(&[file("frame.jpg", &jpeg(9))], None);
    let cases = [
        ("two", vec![file("a.jpg", &jpeg(1)), file("b.png", &png(2))], "too_many_images"),
        ("none", vec![capture("2026-11-22T00:00:00Z")], "no_image"),
        ("other", vec![file("a.jpg", &jpeg(3)), file("notes.txt", b"hi")], "unexpected_file"),
        ("link", vec![Entry { mode: "120000", name: "a.jpg", content: b"/etc/passwd".to_vec() }], "symlink"),
        ("sub", vec![Entry { mode: "160000", name: "a.jpg", content: submodule.into_bytes() }], "submodule"),
        ("dir", vec![file("a.jpg", &jpeg(4)), Entry { mode: "040000", name: "d", content: vec![] }], "subtree"),
        ("json", vec![file("a.jpg", &jpeg(5)), file("capture.json", b"{\"when\": 1}")], "invalid_capture_json"),
    ];
    let specs: Vec<String> =
        cases.iter().map(|(name, entries, _)| format!("{}:refs/heads/{name}", camera.commit(entries, None))).collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();

    let out = camera.push(&app, &app.camera_token, &specs);

    assert!(!out.status.success());
    let said = stderr(&out);
    for (name, _, reason) in &cases {
        let line =
            said.lines().find(|l| l.contains(&format!("-> {name} ("))).unwrap_or_else(|| panic!("{name}: {said}"));
        assert!(line.contains("[remote rejected]") && line.contains(&format!("({reason}: ")), "{name}: {line}");
    }
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new(), "nothing was written");
    assert_nothing_pushed_is_kept(&app);
}

#[tokio::test]
async fn a_refused_commit_stops_its_ref_but_keeps_earlier_commits_and_other_refs() {
    let app = TestApp::spawn().await;
    let camera = Camera::new();
    let first = camera.commit(&[file("1.jpg", &jpeg(1))], None);
    let bad = camera.commit(&[file("2.jpg", b"text")], Some(&first));
    let after = camera.commit(&[file("3.jpg", &jpeg(3))], Some(&bad));
    let other = camera.commit(&[file("4.png", &png(4))], None);

    let out = camera.push(&app, &app.camera_token, &[&incoming(&after), &format!("{other}:refs/heads/other")]);

    let said = stderr(&out);
    assert!(!out.status.success());
    assert!(said.contains(&format!("camledger: {} seq 1", short(&first))), "{said}");
    assert!(
        said.contains(&format!("[commit {}; the 1 earlier commit of this ref is recorded]", short(&bad))),
        "{said}"
    );
    assert!(!said.contains(&format!("{} seq", short(&after))), "a later commit is not attempted: {said}");
    assert!(said.contains(&format!("camledger: {} seq 2", short(&other))), "{said}");
    assert!(said.lines().any(|l| l.contains("[new branch]") && l.contains("-> other")), "{said}");
    assert_eq!(seqs_in_git(&app.git_dir()), vec![2, 1]);
    assert_eq!(event(&app, 2)["sha256"], sha256_hex(&png(4)));
    assert_nothing_pushed_is_kept(&app);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let camera = Camera::new();
    let commit = camera.commit(&[file("frame.jpg", &jpeg(1))], None);

    let out = camera.push(&app, "cam_not_a_token", &[&incoming(&commit)]);

    assert!(!out.status.success());
    let info_refs = app.url("/git/ledger.git/info/refs?service=git-receive-pack");
    let answer = app.client.get(&info_refs).bearer_auth("cam_not_a_token").send().await.unwrap();
    assert_eq!(answer.status(), 401);
    assert!(answer.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic "));
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new());
}

#[tokio::test]
async fn a_camera_cannot_push_under_another_cameras_name_nor_an_auditor_at_all() {
    let app = TestApp::spawn().await;
    app.add_camera("cam-2");
    let camera = Camera::new();
    let commit = camera.commit(&[file("frame.jpg", &jpeg(1))], None);
    let as_user =
        |user: &str, token: &str| app.url("/git/ledger.git").replace("http://", &format!("http://{user}:{token}@"));

    let impostor = camera.push_to(&["push", &as_user("cam-2", &app.camera_token), &incoming(&commit)]);
    let auditor = camera.push(&app, &app.auditor_token, &[&incoming(&commit)]);

    assert!(!impostor.status.success() && stderr(&impostor).contains("403"), "{}", stderr(&impostor));
    assert!(!auditor.status.success() && stderr(&auditor).contains("403"), "{}", stderr(&auditor));
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new());
    // Its own name in the URL works: the token as the Basic password, as credential helpers send it.
    let own = camera.push_to(&["push", &as_user("cam-1", &app.camera_token), &incoming(&commit)]);
    assert!(own.status.success(), "{}", stderr(&own));
    assert_eq!(event(&app, 1)["camera"], "cam-1");
}

#[tokio::test]
async fn a_pack_over_max_push_bytes_is_refused_whole() {
    let app = TestApp::spawn_with(&["--max-push-bytes", "20000"]).await;
    let camera = Camera::new();
    // Noise in a comment segment: git cannot compress it below the limit.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..30_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let commit = camera.commit(&[file("big.jpg", &with_segment(jpeg(1), 0xFE, &noise))], None);

    let out = camera.push(&app, &app.camera_token, &[&incoming(&commit)]);

    assert!(!out.status.success());
    assert!(stderr(&out).contains("push_too_large"), "{}", stderr(&out));
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new());
}

/// A raw receive-pack request: one command, then `pack`.
fn request(new: &str, pack: &[u8]) -> Vec<u8> {
    let zero = "0".repeat(40);
    let command = format!("{zero} {new} refs/heads/incoming\0 report-status side-band-64k\n");
    let mut body = format!("{:04x}{command}0000", command.len() + 4).into_bytes();
    body.extend_from_slice(pack);
    body
}

#[tokio::test]
async fn a_thin_pack_with_missing_bases_and_garbage_are_refused_with_a_reason() {
    let app = TestApp::spawn().await;
    let camera = Camera::new();
    // Two commits whose images differ by a few bytes: the second's pack, thin, carries its
    // image as a delta against the first's, which it leaves out.
    let base = with_segment(jpeg(1), 0xFE, &[b'a'; 20_000]);
    let mut changed = base.clone();
    changed[30] = b'b';
    let first = camera.commit(&[file("a.jpg", &base)], None);
    let second = camera.commit(&[file("a.jpg", &changed)], Some(&first));
    let dir = camera.git_dir().to_str().unwrap().to_owned();
    let thin = {
        use std::io::Write;
        let mut child = std::process::Command::new("git")
            .args(["--git-dir", &dir, "pack-objects", "--thin", "--stdout", "--revs"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{second}\n^{first}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let post = |body: Vec<u8>| {
        app.client
            .post(app.url("/git/ledger.git/git-receive-pack"))
            .bearer_auth(&app.camera_token)
            .header("content-type", "application/x-git-receive-pack-request")
            .body(body)
            .send()
    };

    let thin_answer = post(request(&second, &thin)).await.unwrap();
    let garbage_answer = post(request(&second, b"PACK\0\0\0\x02\0\0\0\x01garbage")).await.unwrap();

    assert_eq!(thin_answer.status(), 200);
    let thin_text = String::from_utf8_lossy(&thin_answer.bytes().await.unwrap()).into_owned();
    assert!(
        thin_text.contains("unpack thin_pack:") && thin_text.contains("ng refs/heads/incoming thin_pack"),
        "{thin_text}"
    );
    let garbage_text = String::from_utf8_lossy(&garbage_answer.bytes().await.unwrap()).into_owned();
    assert!(garbage_text.contains("unpack bad_pack:"), "{garbage_text}");
    assert_eq!(seqs_in_git(&app.git_dir()), Vec::<u64>::new());
    assert_nothing_pushed_is_kept(&app);
}

#[tokio::test]
async fn the_camera_script_in_docs_pushes_one_image_per_commit() {
    let app = TestApp::spawn().await;
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cameras.md")).unwrap();
    let script = docs
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/cameras.md starts with the git push script");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("frame.jpg");
    std::fs::write(&image, jpeg(3)).unwrap();

    let out = std::process::Command::new("sh")
        .args(["-c", script, "camera-push"])
        .arg(app.url(""))
        .args(["cam-1", &app.camera_token])
        .arg(&image)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("seq 1"), "{}", stderr(&out));
    let event = event(&app, 1);
    assert_eq!(event["sha256"], sha256_hex(&jpeg(3)));
    assert!(event["captured_at"].is_string(), "the script sends capture.json");
}

#[tokio::test]
async fn pushed_images_count_against_the_cameras_rate_limit_like_uploads() {
    let app = TestApp::spawn_with(&["--rate-limit", "1/m", "--burst", "2"]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201, "an HTTP upload takes the first token");
    let camera = Camera::new();
    let first = camera.commit(&[file("2.jpg", &jpeg(2))], None);
    let second = camera.commit(&[file("3.jpg", &jpeg(3))], Some(&first));

    let out = camera.push(&app, &app.camera_token, &[&incoming(&second)]);

    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("camledger: {} seq 2", short(&first))), "{said}");
    assert!(said.contains("rate_limited"), "{said}");
    assert_eq!(seqs_in_git(&app.git_dir()).len(), 2, "the image over the limit wrote nothing");
    assert_nothing_pushed_is_kept(&app);
}

#[tokio::test]
async fn a_quarantined_camera_cannot_push_and_another_camera_still_can() {
    let app = TestApp::spawn().await;
    let other = app.add_camera("cam-2");
    camledger(&["cameras", "quarantine", "cam-1", "--reason", "tampered housing", "--data-dir", app.dir()]);
    // A running server reads refs/heads/cameras every 0.5 s.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let camera = Camera::new();
    let commit = camera.commit(&[file("1.jpg", &jpeg(1))], None);

    let out = camera.push(&app, &app.camera_token, &[&incoming(&commit)]);

    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("quarantined") && said.contains("tampered housing"), "{said}");
    assert_eq!(seqs_in_git(&app.git_dir()).len(), 0, "a quarantined camera wrote nothing");
    let as_cam2 = app.url("/git/ledger.git").replace("http://", &format!("http://cam-2:{other}@"));
    let pushed = camera.push_to(&["push", &as_cam2, &incoming(&commit)]);
    assert!(pushed.status.success(), "another camera is unaffected: {}", stderr(&pushed));
    assert_eq!(seqs_in_git(&app.git_dir()).len(), 1);
}
