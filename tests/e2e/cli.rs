use std::process::Command;

use crate::helpers::*;

#[tokio::test]
async fn push_uploads_files_and_log_and_verify_see_them() {
    let app = TestApp::spawn().await;
    let files = tempfile::tempdir().unwrap();
    let a = files.path().join("a.jpg");
    let b = files.path().join("b.png");
    std::fs::write(&a, jpeg(1)).unwrap();
    std::fs::write(&b, png(2)).unwrap();

    let out = camledger(&[
        "push",
        "--server",
        &app.base,
        "--token",
        &app.camera_token,
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(out.contains("seq=1") && out.contains("seq=2"), "{out}");

    let log = camledger(&["log", "--data-dir", app.dir()]);
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(log.contains("image/png"), "{log}");
    let verified = camledger(&["verify", "--data-dir", app.dir()]);
    assert!(verified.contains('2'), "{verified}");
}

#[tokio::test]
async fn push_reports_a_refused_file_and_exits_non_zero() {
    let app = TestApp::spawn().await;
    let files = tempfile::tempdir().unwrap();
    let text = files.path().join("notes.jpg");
    std::fs::write(&text, b"not an image").unwrap();
    let out = Command::new(BIN)
        .args(["push", "--server", &app.base, "--token", &app.camera_token, text.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("415"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn verify_fails_on_a_history_rewritten_with_git() {
    let mut app = TestApp::spawn().await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    app.signal("-TERM");
    // Forge event 2: same tree as event 3's parent, different message, and re-point the ref.
    let tree = app.git(&["rev-parse", "refs/heads/events~1^{tree}"]);
    let parent = app.git(&["rev-parse", "refs/heads/events~2"]);
    let forged = Command::new("git")
        .arg("--git-dir")
        .arg(app.git_dir())
        .args(["commit-tree", tree.trim(), "-p", parent.trim(), "-m", "forged"])
        .output()
        .unwrap();
    let forged = String::from_utf8(forged.stdout).unwrap();
    app.git(&["update-ref", "refs/heads/events", forged.trim()]);

    let out = Command::new(BIN).args(["verify", "--data-dir", app.dir()]).output().unwrap();
    assert!(!out.status.success(), "verify accepted a rewritten history");
    assert!(!out.stderr.is_empty());
}

#[test]
fn cameras_add_refuses_a_bad_id_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["cameras", "add", "no spaces please", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid name"));
}

#[test]
fn bench_judge_prints_both_paths_their_ratio_and_the_targets() {
    let dylib = ort_dylib();
    let out = camledger(&[
        "bench",
        "judge",
        "--images",
        "2",
        "--noise",
        "3",
        "--min-cpu-seconds",
        "0",
        "--model",
        TINY_MODEL,
        "--ort-dylib",
        &dylib,
    ]);
    for expected in ["scaled", "full", "ratio", "+classify", "target >= 150 images/s per core", "target >= 2.0x"] {
        assert!(out.contains(expected), "{expected:?} missing from:\n{out}");
    }
}

#[test]
fn bench_judge_without_the_runtime_library_says_how_to_get_it() {
    let out = Command::new(BIN)
        .args(["bench", "judge", "--images", "1", "--ort-dylib", "/nonexistent/libonnxruntime.so.1.31.1"])
        .output()
        .expect("running camledger");
    assert!(!out.status.success(), "a missing library is an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fetch-onnxruntime"), "the message says how to fix it: {stderr}");
}

#[tokio::test]
async fn long_commands_draw_no_progress_bars_into_pipes() {
    let mut app = TestApp::spawn().await;
    for n in 0..3 {
        assert_eq!(app.upload(jpeg(n)).await.status(), 201);
    }
    assert!(app.signal("-TERM").success());
    let dir = app.dir().to_owned();
    let target = tempfile::tempdir().unwrap();
    let restored = target.path().join("restored");
    let export = target.path().join("export.jsonl");
    let key = app.path().join("keys").join("backup.key");
    let database = format!("sqlite://{dir}/backups.sqlite");
    let ort = ort_dylib();
    let commands: [Vec<&str>; 6] = [
        vec!["reindex", "--data-dir", &dir],
        vec!["verify", "--data-dir", &dir],
        vec!["replay", "--data-dir", &dir, "--ort-dylib", &ort, "--model", TINY_MODEL],
        vec!["export", "--data-dir", &dir, "--out", export.to_str().unwrap()],
        vec!["snapshot", "--data-dir", &dir],
        vec![
            "restore",
            "--database-url",
            &database,
            "--backup-key",
            key.to_str().unwrap(),
            "--to",
            restored.to_str().unwrap(),
        ],
    ];
    for args in commands {
        // stdout and stderr are pipes here, as in a script or CI log.
        let out = Command::new(BIN).args(&args).env("CAMLEDGER_LOG", "warn").output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        for text in [&stdout, &stderr] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\r'),
                "{args:?} drew a progress bar into a pipe: {text:?}"
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), 3);
    assert_eq!(seqs_in_git(&restored.join("ledger.git")), vec![3, 2, 1]);
}
