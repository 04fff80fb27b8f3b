//! The README's quick start, run as written: the block after "Register a camera and upload an
//! image" is taken from README.md and run by bash in a directory holding `data/` (served by
//! the real binary) and `photo.jpg`. Only the binary's path and the port are substituted
//! (the test builds may not be release builds; the server listens on a free port).

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::helpers::*;

fn quick_start_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let after = readme.split("Register a camera and upload an image").nth(1).expect("the quick start's upload step");
    let block = after.split("```sh\n").nth(1).expect("a sh block").split("```").next().unwrap();
    block.to_owned()
}

#[test]
fn the_readme_quick_start_runs_word_for_word() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("photo.jpg"), jpeg(1)).unwrap();
    let mut server = Command::new(BIN)
        .args(["serve", "--data-dir", "./data", "--listen", "127.0.0.1:0", "--workers", "0"])
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_owned();

    let script = quick_start_block().replace("target/release/camledger", BIN).replace("127.0.0.1:8080", &addr);
    let out = Command::new("bash").args(["-euo", "pipefail", "-c", &script]).current_dir(cwd.path()).output().unwrap();
    let _ = server.kill();
    let _ = server.wait();

    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\"seq\":1"), "the upload answered its event: {stdout}");
    assert!(stdout.trim_end().ends_with("cam-1 Event 1 from cam-1"), "git log shows the event: {stdout}");
}
