//! The first hour with camledger (issue 13): wrong input fails fast, with its cause, and
//! commands that only read never create a ledger.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Runs `camledger ARGS` in `cwd` and returns its output, whatever the exit status.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("CAMLEDGER_DATA_DIR")
        .env_remove("CAMLEDGER_DATABASE_URL")
        .env_remove("CAMLEDGER_LOG")
        .output()
        .expect("running camledger")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A TCP port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_refused_database_port_fails_within_two_seconds_saying_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://root@127.0.0.1:{}/camledger", closed_port());

    let started = Instant::now();
    let out = run_in(dir.path(), &["snapshots", "list", "--database-url", &url]);
    let took = started.elapsed();

    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(took < Duration::from_secs(2), "took {took:?}: {err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert!(!err.contains("pool timed out"), "{err}");
}

#[test]
fn a_database_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/no/such/dir/backups.sqlite", dir.path().display());

    let out = run_in(dir.path(), &["snapshots", "list", "--database-url", &url]);

    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.matches("unable to open database file").count(), 1, "{err}");
}

#[test]
fn push_to_a_server_without_a_scheme_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), jpeg(1)).unwrap();

    let out = run_in(dir.path(), &["push", "--server", "127.0.0.1:8080", "--token", "t", "a.jpg"]);

    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("http://"), "{}", stderr(&out));
}

#[test]
fn push_to_a_closed_port_prints_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), jpeg(1)).unwrap();
    let server = format!("http://127.0.0.1:{}", closed_port());

    let out = run_in(dir.path(), &["push", "--server", &server, "--token", "t", "--retries", "0", "a.jpg"]);

    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).to_lowercase().contains("connection refused"), "{}", stderr(&out));
}

#[test]
fn cameras_list_in_a_directory_without_a_ledger_fails_and_creates_nothing() {
    let cwd = tempfile::tempdir().unwrap();

    let out = run_in(cwd.path(), &["cameras", "list"]);

    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds no ledger"), "{}", stderr(&out));
    assert!(stderr(&out).contains("data"), "{}", stderr(&out));
    assert!(entries(cwd.path()).is_empty(), "{:?}", entries(cwd.path()));
}

#[test]
fn read_only_commands_refuse_an_empty_data_dir_and_leave_it_empty() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["cameras", "list", "--data-dir", d],
        vec!["tokens", "list", "--data-dir", d],
        vec!["cameras", "revoke", "cam", "--data-dir", d],
        vec!["log", "--data-dir", d],
        vec!["verify", "--data-dir", d],
        vec!["snapshot", "--data-dir", d],
        vec!["reindex", "--data-dir", d],
        vec!["stats", "--data-dir", d],
        vec!["events", "search", "--data-dir", d],
        vec!["export", "--data-dir", d],
    ] {
        let out = run_in(dir.path(), &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(d), "{args:?}: {}", stderr(&out));
        assert!(entries(dir.path()).is_empty(), "{args:?} created {:?}", entries(dir.path()));
    }
}

#[test]
fn cameras_add_creates_a_new_ledger_in_a_missing_directory_and_says_so() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("fresh");

    let out = run_in(parent.path(), &["cameras", "add", "cam", "--data-dir", dir.to_str().unwrap()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("created a new ledger at"), "{}", stderr(&out));
    let listed = run_in(parent.path(), &["cameras", "list", "--data-dir", dir.to_str().unwrap()]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("cam"));
}

#[test]
fn creating_commands_refuse_a_directory_that_holds_something_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a ledger").unwrap();
    let d = dir.path().to_str().unwrap();
    for args in [
        vec!["cameras", "add", "cam", "--data-dir", d],
        vec!["tokens", "add", "ann", "--role", "auditor", "--data-dir", d],
        vec!["serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
    ] {
        let out = run_in(dir.path(), &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains("holds no ledger"), "{args:?}: {}", stderr(&out));
        assert_eq!(entries(dir.path()), ["notes.txt"], "{args:?}");
    }
}

#[tokio::test]
async fn snapshots_and_restore_default_to_the_database_snapshot_writes() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let snapshot = run_in(app.path(), &["snapshot", "--data-dir", app.dir()]);
    assert!(snapshot.status.success(), "{}", stderr(&snapshot));
    let key = format!("{}/keys/backup.key", app.dir());

    let listed = run_in(app.path(), &["snapshots", "list", "--data-dir", app.dir()]);
    let verified = run_in(app.path(), &["snapshots", "verify", "--data-dir", app.dir(), "--backup-key", &key]);
    let target = tempfile::tempdir().unwrap();
    let restored_dir = target.path().join("restored");
    let restored = run_in(
        app.path(),
        &["restore", "--data-dir", app.dir(), "--backup-key", &key, "--to", restored_dir.to_str().unwrap()],
    );

    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 2, "a header and one snapshot");
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(seqs_in_git(&restored_dir.join("ledger.git")), vec![1]);
}

#[test]
fn snapshots_list_without_a_snapshot_database_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let added = run_in(dir.path(), &["cameras", "add", "cam", "--data-dir", d]);
    assert!(added.status.success(), "{}", stderr(&added));
    let before = entries(dir.path());

    let out = run_in(dir.path(), &["snapshots", "list", "--data-dir", d]);

    assert!(!out.status.success());
    assert!(stderr(&out).contains("backups.sqlite"), "{}", stderr(&out));
    assert_eq!(entries(dir.path()), before);
}

#[tokio::test]
async fn a_snapshot_result_is_printed_once() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);

    let out = run_in(app.path(), &["snapshot", "--data-dir", app.dir()]);

    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("snapshot 1"));
    assert!(!stderr(&out).contains("snapshot committed"), "{}", stderr(&out));
}

#[tokio::test]
async fn replay_finds_onnx_runtime_and_the_embedded_model_from_any_directory() {
    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let elsewhere = tempfile::tempdir().unwrap();

    let out = Command::new(BIN)
        .args(["replay", "--data-dir", app.dir()])
        .current_dir(elsewhere.path())
        .env_remove("CAMLEDGER_ORT_DYLIB")
        .env_remove("CAMLEDGER_MODEL")
        .output()
        .unwrap();

    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn help_shows_no_path_into_the_build_checkout() {
    let out = run_in(Path::new("/"), &["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(!help.contains(env!("CARGO_MANIFEST_DIR")), "{help}");
    assert!(!help.contains("[default: vendor/"), "{help}");
    assert!(!help.contains("default.manifest.json]"), "{help}");
}

#[tokio::test]
async fn a_binary_far_from_onnx_runtime_lists_every_place_it_looked() {
    let app = TestApp::spawn().await;
    let far = tempfile::tempdir().unwrap();
    let copy = far.path().join("camledger");
    std::fs::copy(BIN, &copy).unwrap();

    let out = Command::new(&copy)
        .args(["replay", "--data-dir", app.dir()])
        .current_dir(far.path())
        .env_remove("CAMLEDGER_ORT_DYLIB")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();

    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--ort-dylib"), "{err}");
    assert!(err.contains(&far.path().join("libonnxruntime.so").display().to_string()), "{err}");
    assert!(err.contains("/usr/lib"), "{err}");
}

#[test]
fn serve_with_a_bad_flag_or_a_missing_library_creates_no_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new-ledger");
    let data = data.to_str().unwrap();
    let attempts: [&[&str]; 3] = [
        &["--max-inflight-bytes", "1"],
        &["--workers", "1", "--ort-dylib", "/nonexistent/libonnxruntime.so"],
        &["--signing-key", "/nonexistent/ledger_ed25519"],
    ];
    for flags in attempts {
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", data])
            .args(flags)
            .env_remove("CAMLEDGER_ORT_DYLIB")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", stderr(&out));
        assert!(!Path::new(data).exists(), "{flags:?} left {data} behind");
    }
}

#[tokio::test]
async fn a_ledger_keeps_its_node_name_when_served_again_without_one() {
    let mut app = TestApp::spawn_with(&["--node-name", "alpha"]).await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    // As after a restore on another host: no --node-name, a different host name.
    app.restart_with(&[]);
    assert_eq!(app.upload(jpeg(2)).await.status(), 201);
    let committers = app.git(&["log", "--format=%cn <%ce>", "refs/heads/events"]);
    assert_eq!(committers, "camledger <alpha>\ncamledger <alpha>\n");
    assert!(camledger(&["verify", "--data-dir", app.dir()]).contains("verified"));

    assert!(app.signal("-TERM").success());
    let renamed = run_in(
        app.path(),
        &["serve", "--listen", "127.0.0.1:0", "--workers", "0", "--node-name", "beta", "--data-dir", app.dir()],
    );
    assert_eq!(renamed.status.code(), Some(1));
    assert!(stderr(&renamed).contains("differs from this ledger's node name alpha"), "{}", stderr(&renamed));
}

/// `cargo install --path crates/api`, as the README says, into a scratch root (reusing this
/// build's artifacts, so it links rather than rebuilds), then the installed binary serves and
/// judges from an unrelated directory. It relinks `target/*/camledger`, so nextest runs it
/// alone (`.config/nextest.toml`).
#[tokio::test]
async fn cargo_install_gives_a_camledger_that_works_from_anywhere() {
    let root = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let profile = if bin_dir.ends_with("release") { "release" } else { "dev" };
    let install = Command::new(env!("CARGO"))
        .args(["install", "--offline", "--quiet", "--locked", "--profile", profile, "--path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR")))
        .arg("--root")
        .arg(root.path())
        .env("CARGO_TARGET_DIR", bin_dir.parent().unwrap())
        .output()
        .unwrap();
    assert!(install.status.success(), "{}", stderr(&install));
    let installed = root.path().join("bin").join("camledger");

    let app = TestApp::spawn().await;
    assert_eq!(app.upload(jpeg(1)).await.status(), 201);
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(&installed)
        .args(["replay", "--data-dir", app.dir(), "--ort-dylib", &ort_dylib()])
        .current_dir(elsewhere.path())
        .env_remove("CAMLEDGER_MODEL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let log = Command::new(&installed).args(["log", "--data-dir", app.dir()]).current_dir("/").output().unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("cam-1"), "{}", stderr(&log));
}
