//! The tamper suite: an insider who can write `ledger.git` and the data dir, but holds neither
//! the signing key (kept outside the data dir) nor the anchor store, changes the ledger with
//! stock git plumbing or file edits; `camledger verify --allowed-signers F` must fail and name
//! the rule, while the untouched ledger passes.
//!
//! One base ledger (20 events from two cameras, verdicts written by the in-process worker in
//! two separate writes, every commit signed) is built once per build of the binary and shared
//! by every test process (nextest runs each test in its own); each case works on a copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use camledger_eventstore::sign::{split_signed_commit, SigningKey};
use serde_json::Value;

use crate::helpers::*;

/// The images of the base ledger, in upload order: `(n, second camera?)`; `jpeg(1)` twice makes
/// event 5 a duplicate of event 2.
const UPLOADS: [(u64, bool); 20] = [
    (0, false),
    (1, false),
    (2, true),
    (3, false),
    (1, false),
    (5, true),
    (6, false),
    (7, false),
    (8, true),
    (9, false),
    (10, false),
    (11, true),
    (12, false),
    (13, false),
    (14, true),
    (15, false),
    (16, false),
    (17, true),
    (18, false),
    (19, false),
];

/// The shared base ledger: `data/` (the data dir), `ledger_ed25519` (the signing key, outside
/// it), `anchors.sqlite` (the anchor store, outside it), `allowed_signers` (what the auditor
/// trusts), `tokens` (camera and auditor token).
struct Base {
    root: PathBuf,
}

impl Base {
    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn allowed_signers(&self) -> PathBuf {
        self.root.join("allowed_signers")
    }

    /// A fresh copy of the data dir and the anchor store for one case.
    fn copy(&self) -> Case {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = dir.path().join("data");
        let status = Command::new("cp").arg("-a").arg(self.data()).arg(&data).status().expect("running cp");
        assert!(status.success(), "copying the base ledger");
        for suffix in ["", "-wal", "-shm"] {
            let from = self.root.join(format!("anchors.sqlite{suffix}"));
            if from.exists() {
                std::fs::copy(&from, dir.path().join(format!("anchors.sqlite{suffix}"))).expect("copying anchors");
            }
        }
        let anchor_url = format!("sqlite://{}", dir.path().join("anchors.sqlite").display());
        Case { _dir: dir, data, anchor_url }
    }
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        // Keyed by the binary's build, so a rebuilt binary builds a new base.
        let built = std::fs::metadata(BIN).and_then(|m| m.modified()).expect("the camledger binary");
        let stamp = built.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos();
        let root = tmp.join(format!("tamper-base-{stamp}"));
        if !root.join("ready").exists() {
            // Bases of earlier builds are not used again.
            for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("tamper-base-") && entry.path() != root {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
            let building = tmp.join(format!("tamper-building-{stamp}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&building);
            std::fs::create_dir_all(&building).expect("creating the base dir");
            let target = building.clone();
            std::thread::spawn(move || {
                tokio::runtime::Runtime::new().expect("a runtime").block_on(build_base(&target));
            })
            .join()
            .expect("building the base ledger");
            std::fs::write(building.join("ready"), b"").expect("marking the base ready");
            // Another test process may have finished first: then its base is used.
            if std::fs::rename(&building, &root).is_err() {
                let _ = std::fs::remove_dir_all(&building);
            }
        }
        Base { root }
    })
}

async fn build_base(root: &Path) {
    let key_path = root.join("ledger_ed25519");
    SigningKey::generate(&key_path, "ledger").expect("a signing key");
    let key = key_path.to_str().expect("utf-8 path");
    let anchors = format!("sqlite://{}", root.join("anchors.sqlite").display());
    let mut app = TestApp::spawn_with(&[
        "--workers",
        "1",
        "--model",
        TINY_MODEL,
        "--signing-key",
        key,
        "--anchor-url",
        &anchors,
        "--checkpoint-interval",
        "1s",
    ])
    .await;
    let second_camera = app.add_camera("cam-2");
    let first_camera = app.camera_token.clone();
    for (half, uploads) in UPLOADS.chunks(10).enumerate() {
        for (n, second) in uploads {
            let token = if *second { &second_camera } else { &first_camera };
            let status = app.upload_as(token, jpeg(*n), "image/jpeg").await.status();
            assert!(status.is_success(), "upload of image {n}: {status}");
        }
        app.wait_for_verdict(10 * (half as u64 + 1)).await;
        // The second half's verdicts are written in a later second: two verdict writes.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(app.signal("-TERM").success(), "the server stops cleanly");
    let status = Command::new("cp").arg("-a").arg(app.path()).arg(root.join("data")).status().expect("cp");
    assert!(status.success());
    let line = last_line(&camledger(&["keys", "show", "--signing-key", key]));
    std::fs::write(root.join("allowed_signers"), format!("{line}\n")).expect("writing allowed_signers");
    std::fs::write(root.join("tokens"), format!("{}\n{}\n", app.camera_token, app.auditor_token)).expect("tokens");
}

fn last_line(text: &str) -> String {
    text.lines().last().expect("a line").to_owned()
}

/// One tampered copy of the base ledger.
struct Case {
    _dir: tempfile::TempDir,
    data: PathBuf,
    /// The copy of the base's anchor store (outside the data dir).
    anchor_url: String,
}

/// What `camledger verify --format json` said.
struct Verdict {
    ok: bool,
    json: Value,
}

impl Verdict {
    fn rule(&self) -> &str {
        self.json["failure"]["rule"].as_str().unwrap_or("(none)")
    }
}

impl Case {
    fn git_dir(&self) -> PathBuf {
        self.data.join("ledger.git")
    }

    /// `camledger verify` as the auditor runs it: with the allowed signers and the anchor store.
    fn verify_audited(&self) -> Verdict {
        self.verify(Some(&base().allowed_signers()), true)
    }

    fn verify(&self, allowed_signers: Option<&Path>, anchored: bool) -> Verdict {
        let mut command = Command::new(BIN);
        command.args(["verify", "--format", "json", "--data-dir"]).arg(&self.data).env("CAMLEDGER_LOG", "warn");
        if let Some(file) = allowed_signers {
            command.arg("--allowed-signers").arg(file);
        }
        if anchored {
            command.args(["--anchor-url", &self.anchor_url]);
        }
        let out = command.output().expect("running camledger verify");
        let json: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("verify printed no JSON: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(out.status.success(), json["ok"] == true, "the exit status agrees with ok: {json}");
        Verdict { ok: out.status.success(), json }
    }

    fn forge(&self, key: Option<SigningKey>) -> Forge {
        Forge { git_dir: self.git_dir(), key }
    }
}

/// Stock git plumbing, as the attacker uses it; commits are re-signed with `key` if given
/// (the attacker's own key), else written unsigned.
struct Forge {
    git_dir: PathBuf,
    key: Option<SigningKey>,
}

impl Forge {
    fn git(&self, args: &[&str]) -> String {
        git(&self.git_dir, args).trim_end().to_owned()
    }

    fn git_in(&self, args: &[&str], input: &[u8]) -> String {
        use std::io::Write as _;
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running git");
        child.stdin.take().expect("stdin").write_all(input).expect("writing to git");
        let out = child.wait_with_output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8").trim_end().to_owned()
    }

    fn blob(&self, bytes: &[u8]) -> String {
        self.git_in(&["hash-object", "-w", "--stdin"], bytes)
    }

    /// The commit's bytes without its signature (what was signed).
    fn commit_text(&self, id: &str) -> String {
        let raw = Command::new("git")
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(["cat-file", "commit", id])
            .output()
            .expect("git cat-file");
        String::from_utf8(split_signed_commit(&raw.stdout).0).expect("utf-8 commit")
    }

    fn write_commit(&self, text: &str) -> String {
        let bytes = match &self.key {
            Some(key) => key.sign_commit(text.as_bytes()),
            None => text.as_bytes().to_vec(),
        };
        self.git_in(&["hash-object", "-t", "commit", "-w", "--stdin"], &bytes)
    }

    /// First-parent chain of `reference`, oldest first (index = seq - 1 for events).
    fn chain(&self, reference: &str) -> Vec<String> {
        self.git(&["rev-list", "--first-parent", "--reverse", reference]).lines().map(str::to_owned).collect()
    }

    fn set_ref(&self, name: &str, id: &str) {
        self.git(&["update-ref", name, id]);
    }

    /// Writes `commits` (oldest first) again onto `parent`, each edited by `edit(i, text)`;
    /// returns the new head.
    fn rechain(
        &self,
        parent: Option<&str>,
        commits: &[String],
        mut edit: impl FnMut(usize, String) -> String,
    ) -> String {
        let mut parent = parent.map(str::to_owned);
        for (i, id) in commits.iter().enumerate() {
            let text = set_parent(&self.commit_text(id), parent.as_deref());
            parent = Some(self.write_commit(&edit(i, text)));
        }
        parent.expect("at least one commit")
    }

    /// The commit text with the file `name` of its (flat) tree replaced by `f(content)`.
    fn edit_file(&self, text: &str, name: &str, f: impl FnOnce(String) -> String) -> String {
        let tree = text.lines().next().and_then(|l| l.strip_prefix("tree ")).expect("a tree line").to_owned();
        let listing = self.git(&["ls-tree", &tree]);
        let old = listing
            .lines()
            .find(|l| l.ends_with(&format!("\t{name}")))
            .and_then(|l| l.split_whitespace().nth(2))
            .expect("the file in the tree")
            .to_owned();
        let new = self.blob(f(self.git(&["cat-file", "blob", &old])).as_bytes());
        let new_tree = self.git_in(&["mktree"], format!("{}\n", listing.replace(&old, &new)).as_bytes());
        text.replacen(&tree, &new_tree, 1)
    }

    /// A tree equal to `tree` but for the blob at `path` (e.g. a note's `ab/cd/ef…`).
    fn replace_path(&self, tree: &str, path: &[&str], blob: &str) -> String {
        let listing = self.git(&["ls-tree", tree]);
        let mut lines = Vec::new();
        for line in listing.lines() {
            let (meta, name) = line.split_once('\t').expect("an ls-tree line");
            if name != path[0] {
                lines.push(line.to_owned());
                continue;
            }
            let id = meta.split_whitespace().nth(2).expect("an id");
            let new = if path.len() == 1 { blob.to_owned() } else { self.replace_path(id, &path[1..], blob) };
            lines.push(format!("{}\t{name}", meta.replace(id, &new)));
        }
        self.git_in(&["mktree"], format!("{}\n", lines.join("\n")).as_bytes())
    }

    /// A new notes commit on top of the notes head (same message and identity) in which the
    /// note on `event` reads `note`.
    fn replace_note(&self, event: &str, note: &str) {
        let head = self.git(&["rev-parse", "refs/notes/verdicts"]);
        let text = self.commit_text(&head);
        let tree = self.git(&["rev-parse", "refs/notes/verdicts^{tree}"]);
        let blob = self.blob(note.as_bytes());
        let new_tree = self.replace_path(&tree, &[&event[..2], &event[2..4], &event[4..]], &blob);
        let new = self.write_commit(&set_parent(&text.replacen(&tree, &new_tree, 1), Some(&head)));
        self.set_ref("refs/notes/verdicts", &new);
    }

    fn note(&self, event: &str) -> String {
        git(&self.git_dir, &["notes", "--ref=verdicts", "show", event])
    }
}

/// The commit text with its parent set to `parent` (or removed).
fn set_parent(text: &str, parent: Option<&str>) -> String {
    let (headers, message) = text.split_once("\n\n").expect("headers and a message");
    let mut out: Vec<String> = Vec::new();
    for line in headers.lines().filter(|l| !l.starts_with("parent ")) {
        out.push(line.to_owned());
        if line.starts_with("tree ") {
            out.extend(parent.map(|p| format!("parent {p}")));
        }
    }
    format!("{}\n\n{message}", out.join("\n"))
}

/// Event `from`'s commit text renumbered to seq `to` (event.json, summary and `Seq:`).
fn renumber(forge: &Forge, text: String, from: u64, to: u64) -> String {
    let text = forge
        .edit_file(&text, "event.json", |json| json.replace(&format!("\"seq\":{from},"), &format!("\"seq\":{to},")));
    let text = text.replace(&format!("\n\nEvent {from} from "), &format!("\n\nEvent {to} from "));
    text.replace(&format!("\nSeq: {from}\n"), &format!("\nSeq: {to}\n"))
}

fn attacker_key() -> SigningKey {
    let dir = tempfile::tempdir().expect("a temp dir");
    SigningKey::generate(&dir.path().join("attacker"), "attacker").expect("a key")
}

/// `verify` with the allowed signers and the anchor store fails with `rule`; with neither it
/// fails with `unsigned_rule`, or passes when `None` (nothing inside the repository can tell).
fn assert_caught(name: &str, case: &Case, rule: &str, unsigned_rule: Option<&str>) {
    let signed = case.verify_audited();
    assert!(!signed.ok && signed.rule() == rule, "{name}: expected rule {rule}, verify said {}", signed.json);
    let unsigned = case.verify(None, false);
    match unsigned_rule {
        Some(expected) => assert!(
            !unsigned.ok && unsigned.rule() == expected,
            "{name}: without allowed signers expected rule {expected}, verify said {}",
            unsigned.json
        ),
        None => assert!(unsigned.ok, "{name}: consistent without signatures, verify said {}", unsigned.json),
    }
}

#[test]
fn the_untouched_ledger_passes_verify_and_stock_git() {
    let case = base().copy();
    let verified = case.verify_audited();
    assert!(verified.ok, "{}", verified.json);
    assert!(verified.json["counts"]["checkpoints"].as_u64() >= Some(2), "{}", verified.json);
    let counts = &verified.json["counts"];
    assert_eq!((counts["events"].as_u64(), counts["verdicts"].as_u64()), (Some(20), Some(20)), "{counts}");
    assert_eq!(counts["duplicates"], 1);
    let notes_commits = git(&case.git_dir(), &["rev-list", "--count", "refs/notes/verdicts"]);
    let expected_signatures = 20 + 20 + notes_commits.trim().parse::<u64>().expect("a count");
    assert_eq!(counts["signatures"].as_u64(), Some(expected_signatures), "every commit's signature is checked");

    // The text form names what was checked; stock git agrees about every signature.
    let text = camledger(&[
        "verify",
        "--data-dir",
        case.data.to_str().expect("utf-8"),
        "--allowed-signers",
        base().allowed_signers().to_str().expect("utf-8"),
    ]);
    assert!(text.starts_with("verified 20 events (1 duplicates"), "{text}");
    let signers = format!("gpg.ssh.allowedSignersFile={}", base().allowed_signers().display());
    let log = git(
        &case.git_dir(),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signers,
            "log",
            "--format=%G?",
            "refs/heads/events",
            "refs/heads/verdicts",
            "refs/notes/verdicts",
        ],
    );
    assert!(log.lines().all(|l| l == "G"), "stock git: every commit has a good signature:\n{log}");
    assert_fsck_clean(&case.git_dir());
}

#[test]
fn the_first_failure_is_named_with_chain_seq_commit_and_rule() {
    let case = base().copy();
    let forge = case.forge(None);
    let events = forge.chain("refs/heads/events");
    let head = forge.rechain(Some(&events[18]), &events[19..], |_, text| text);
    forge.set_ref("refs/heads/events", &head);
    let out = Command::new(BIN)
        .args(["verify", "--data-dir"])
        .arg(&case.data)
        .arg("--allowed-signers")
        .arg(base().allowed_signers())
        .env("CAMLEDGER_LOG", "warn")
        .output()
        .expect("running verify");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("verify: FAILED events seq 20 commit {head}: rule signature: the commit is not signed");
    assert!(stderr.lines().any(|l| l == expected), "expected {expected:?} in:\n{stderr}");
}

#[test]
fn repository_tamperings_are_found() {
    // A replace ref shows another event.json to stock git (and, before, to camledger).
    let case = base().copy();
    let forge = case.forge(None);
    let events = forge.chain("refs/heads/events");
    let json = forge.git(&["rev-parse", &format!("{}:event.json", events[4])]);
    let forged = forge.blob(forge.git(&["cat-file", "blob", &json]).replace("\"width\":96", "\"width\":97").as_bytes());
    forge.git(&["replace", &json, &forged]);
    assert_caught("replace ref", &case, "replace", Some("replace"));

    // Grafts give event 10 another parent for stock git.
    let case = base().copy();
    std::fs::create_dir_all(case.git_dir().join("info")).expect("info/");
    std::fs::write(case.git_dir().join("info/grafts"), format!("{} {}\n", events[9], events[7])).expect("grafts");
    assert_caught("grafts", &case, "replace", Some("replace"));

    // Same id, other content: every pack unpacked to loose objects, then event 5's
    // event.json file swapped for one holding other bytes.
    let case = base().copy();
    let forge = case.forge(None);
    let pack_dir = case.git_dir().join("objects/pack");
    let moved = tempfile::tempdir().expect("a temp dir");
    for entry in std::fs::read_dir(&pack_dir).expect("packs") {
        let path = entry.expect("an entry").path();
        std::fs::rename(&path, moved.path().join(path.file_name().expect("a name"))).expect("moving a pack");
    }
    for entry in std::fs::read_dir(moved.path()).expect("packs") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "pack") {
            let status = Command::new("git")
                .arg("--git-dir")
                .arg(case.git_dir())
                .arg("unpack-objects")
                .stdin(std::fs::File::open(&path).expect("a pack"))
                .status()
                .expect("git unpack-objects");
            assert!(status.success());
        }
    }
    let forged = forge.blob(forge.git(&["cat-file", "blob", &json]).replace("\"width\":96", "\"width\":97").as_bytes());
    let loose = |id: &str| case.git_dir().join("objects").join(&id[..2]).join(&id[2..]);
    std::fs::remove_file(loose(&json)).expect("the original loose object");
    std::fs::rename(loose(&forged), loose(&json)).expect("substituting the object");
    assert_caught("object substituted under the same id", &case, "object-hash", Some("object-hash"));
}

#[test]
fn readers_never_follow_replace_refs() {
    let case = base().copy();
    let forge = case.forge(None);
    let events = forge.chain("refs/heads/events");
    let json = forge.git(&["rev-parse", &format!("{}:event.json", events[4])]);
    let forged = forge.blob(forge.git(&["cat-file", "blob", &json]).replace("\"width\":96", "\"width\":97").as_bytes());
    forge.git(&["replace", &json, &forged]);
    assert!(forge.git(&["cat-file", "blob", &json]).contains("\"width\":97"), "stock git follows the replace ref");

    let data = case.data.to_str().expect("utf-8");
    let log = camledger(&["log", "--data-dir", data, "--from", "5", "--limit", "1", "--format", "json"]);
    let event: Value = serde_json::from_str(log.trim()).expect("one JSON line");
    assert_eq!(event["event"]["width"], 96, "camledger log shows the real event: {event}");

    let tokens = std::fs::read_to_string(base().root.join("tokens")).expect("tokens");
    let mut tokens = tokens.lines().map(str::to_owned);
    let (camera, auditor) = (tokens.next().expect("camera"), tokens.next().expect("auditor"));
    let app = TestApp::spawn_on(case.data.clone(), camera, auditor);
    let served = tokio::runtime::Runtime::new().expect("a runtime").block_on(app.get_json("/v1/events/5"));
    assert_eq!(served["event"]["width"], 96, "GET /v1/events/5 shows the real event: {served}");
}

#[test]
fn commit_header_tamperings_are_found() {
    // The committer of the head event changed (the commit re-hashed, the ref moved).
    let case = base().copy();
    let forge = case.forge(None);
    let events = forge.chain("refs/heads/events");
    let head = forge.rechain(Some(&events[18]), &events[19..], |_, text| {
        let line = text.lines().find(|l| l.starts_with("committer ")).expect("a committer").to_owned();
        let time = line.rsplit_once("> ").expect("an identity").1;
        text.replacen(&line, &format!("committer mallory <mallory@example.org> {time}"), 1)
    });
    forge.set_ref("refs/heads/events", &head);
    assert_caught("committer changed", &case, "committer", Some("committer"));

    // An extra header, signed by the attacker.
    let case = base().copy();
    let forge = case.forge(Some(attacker_key()));
    let head =
        forge.rechain(Some(&events[18]), &events[19..], |_, text| text.replacen("\n\n", "\nx-origin forged\n\n", 1));
    forge.set_ref("refs/heads/events", &head);
    assert_caught("extra header", &case, "header", Some("header"));
}

#[test]
fn verdict_and_note_tamperings_are_found() {
    // Verdict 3's spam flag flipped, the verdicts after it re-chained.
    let case = base().copy();
    let forge = case.forge(None);
    let events = forge.chain("refs/heads/events");
    let verdicts = forge.chain("refs/heads/verdicts");
    let head = forge.rechain(Some(&verdicts[1]), &verdicts[2..], |i, text| {
        if i > 0 {
            return text;
        }
        let spam = forge.git(&["cat-file", "blob", &format!("{}:verdict.json", verdicts[2])]).contains("\"spam\":true");
        let (from, to) = if spam { ("spam", "ok") } else { ("ok", "spam") };
        let text = forge.edit_file(&text, "verdict.json", |json| {
            json.replace(&format!("\"spam\":{spam}"), &format!("\"spam\":{}", !spam))
        });
        text.replace(&format!("Verdict {from} for"), &format!("Verdict {to} for"))
            .replace(&format!("\nVerdict: {from}\n"), &format!("\nVerdict: {to}\n"))
    });
    forge.set_ref("refs/heads/verdicts", &head);
    assert_caught("flipped spam, re-chained", &case, "signature", Some("note"));

    // A note edited to say something else.
    let case = base().copy();
    let forge = case.forge(None);
    let note = forge.note(&events[6]);
    let flipped = if note.starts_with("Verdict: ok") {
        note.replacen("Verdict: ok", "Verdict: spam", 1)
    } else {
        note.replacen("Verdict: spam", "Verdict: ok", 1)
    };
    forge.replace_note(&events[6], &flipped);
    assert_caught("edited note", &case, "signature", Some("note"));

    // Event 5's note replaced by event 6's (it names the wrong verdict commit).
    let case = base().copy();
    let forge = case.forge(None);
    forge.replace_note(&events[4], &forge.note(&events[5]));
    assert_caught("note naming the wrong verdict", &case, "signature", Some("note"));

    // The notes ref deleted: the verdicts of both writes lack their notes.
    let case = base().copy();
    case.forge(None).git(&["update-ref", "-d", "refs/notes/verdicts"]);
    assert_caught("deleted notes ref", &case, "notes", Some("notes"));

    // The verdicts ref deleted: the notes cover verdicts that do not exist.
    let case = base().copy();
    case.forge(None).git(&["update-ref", "-d", "refs/heads/verdicts"]);
    assert_caught("deleted verdicts ref", &case, "notes", Some("notes"));

    // A second verdict for event 20 on top of the first.
    let case = base().copy();
    let forge = case.forge(None);
    let head = forge.rechain(Some(&verdicts[19]), &verdicts[19..], |_, text| text);
    forge.set_ref("refs/heads/verdicts", &head);
    // Without signatures the copy's note names the first verdict, so the note gives it away.
    assert_caught("second verdict for one event", &case, "signature", Some("note"));
}

#[test]
fn camera_registry_tamperings_are_found() {
    // The registry no longer knows cam-2 (a registry with cam-1 only).
    let case = base().copy();
    let fresh = tempfile::tempdir().expect("a temp dir");
    camledger(&["cameras", "add", "cam-1", "--data-dir", fresh.path().to_str().expect("utf-8")]);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(case.data.join(format!("camledger.sqlite{suffix}")));
        let from = fresh.path().join(format!("camledger.sqlite{suffix}"));
        if from.exists() {
            std::fs::copy(&from, case.data.join(format!("camledger.sqlite{suffix}"))).expect("copying the registry");
        }
    }
    let verified = case.verify_audited();
    assert!(!verified.ok && verified.rule() == "camera-unknown", "{}", verified.json);
    assert_eq!(verified.json["failure"]["seq"], 18, "the newest event of cam-2: {}", verified.json);

    // cam-2 revoked before its last events were received.
    let case = base().copy();
    let log = camledger(&["log", "--data-dir", case.data.to_str().expect("utf-8"), "--format", "json"]);
    let third: Value = serde_json::from_str(log.lines().nth(2).expect("event 3")).expect("json");
    assert_eq!(third["event"]["camera"], "cam-2");
    let revoked_at = third["event"]["received_at"].as_str().expect("received_at").to_owned();
    let db = case.data.join("camledger.sqlite");
    tokio::runtime::Runtime::new().expect("a runtime").block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.expect("the registry");
        sqlx::query("UPDATE principals SET revoked_at = ? WHERE role = 'camera' AND name = 'cam-2'")
            .bind(&revoked_at)
            .execute(&pool)
            .await
            .expect("revoking cam-2 in the past");
        pool.close().await;
    });
    let verified = case.verify_audited();
    assert!(!verified.ok && verified.rule() == "camera-revoked", "{}", verified.json);
}

#[test]
fn deleted_and_reordered_events_are_found() {
    // Event 10 deleted, the events after it re-chained without renumbering.
    let case = base().copy();
    let forge = case.forge(None);
    let events = forge.chain("refs/heads/events");
    let head = forge.rechain(Some(&events[8]), &events[10..], |_, text| text);
    forge.set_ref("refs/heads/events", &head);
    assert_caught("deleted event", &case, "signature", Some("chain"));

    // Event 10 deleted and the later events renumbered, signed with the attacker's key.
    let case = base().copy();
    let forge = case.forge(Some(attacker_key()));
    let head = forge.rechain(Some(&events[8]), &events[10..], |i, text| {
        let from = 11 + i as u64;
        renumber(&forge, text, from, from - 1)
    });
    forge.set_ref("refs/heads/events", &head);
    assert_caught("deleted and renumbered", &case, "signature", Some("verdict"));

    // Events 10 and 11 swapped, seqs kept.
    let case = base().copy();
    let forge = case.forge(None);
    let swapped = [events[10].clone(), events[9].clone()];
    let middle = forge.rechain(Some(&events[8]), &swapped, |_, text| text);
    let head = forge.rechain(Some(&middle), &events[11..], |_, text| text);
    forge.set_ref("refs/heads/events", &head);
    assert_caught("reordered", &case, "signature", Some("chain"));

    // Events 10 and 11 swapped and renumbered.
    let case = base().copy();
    let forge = case.forge(None);
    let middle = forge.rechain(Some(&events[8]), &swapped, |i, text| {
        if i == 0 {
            renumber(&forge, text, 11, 10)
        } else {
            renumber(&forge, text, 10, 11)
        }
    });
    let head = forge.rechain(Some(&middle), &events[11..], |_, text| text);
    forge.set_ref("refs/heads/events", &head);
    assert_caught("reordered and renumbered", &case, "signature", Some("time-order"));

    // The events ref rolled back by five: the verdicts judge events that are gone.
    let case = base().copy();
    case.forge(None).set_ref("refs/heads/events", &events[14]);
    assert_caught("events rolled back", &case, "verdict", Some("verdict"));
}

#[test]
fn a_consistent_rollback_is_found_only_by_the_anchored_checkpoints() {
    // Every ref back to the end of the first verdict write (event 10): a ledger that was
    // really like this, signed by the real key, only older than the latest checkpoint.
    let case = base().copy();
    let forge = case.forge(None);
    let events = forge.chain("refs/heads/events");
    let verdicts = forge.chain("refs/heads/verdicts");
    let notes = forge.git(&["log", "--format=%H %(trailers:key=Verdicts-Through,valueonly)", "refs/notes/verdicts"]);
    let at_ten = notes.lines().find(|l| l.ends_with(" 10")).expect("a notes commit through event 10");
    forge.set_ref("refs/heads/events", &events[9]);
    forge.set_ref("refs/heads/verdicts", &verdicts[9]);
    forge.set_ref("refs/notes/verdicts", at_ten.split(' ').next().expect("an id"));
    assert_caught("consistent rollback", &case, "rollback", None);
    let verified = case.verify_audited();
    assert_eq!(verified.json["failure"]["chain"], "anchors", "{}", verified.json);
}

#[test]
fn a_self_consistent_rewrite_is_found_only_by_its_signatures() {
    for attacker in [None, Some(attacker_key())] {
        let signed = attacker.is_some();
        // Event 1 changed and every later event re-chained onto it; the verdicts and notes,
        // which would name the old commits, removed.
        let case = base().copy();
        let forge = case.forge(attacker);
        let events = forge.chain("refs/heads/events");
        let head = forge.rechain(None, &events, |i, text| {
            if i == 0 {
                forge.edit_file(&text, "event.json", |json| json.replace("\"width\":96", "\"width\":97"))
            } else {
                text
            }
        });
        forge.set_ref("refs/heads/events", &head);
        forge.git(&["update-ref", "-d", "refs/heads/verdicts"]);
        forge.git(&["update-ref", "-d", "refs/notes/verdicts"]);
        let name = if signed { "rewrite signed by the attacker" } else { "unsigned rewrite" };
        assert_caught(name, &case, "signature", None);
        let verified = case.verify_audited();
        let detail = verified.json["failure"]["detail"].as_str().unwrap_or_default().to_owned();
        let expected = if signed { "is not in the allowed signers" } else { "the commit is not signed" };
        assert!(detail.contains(expected), "{name}: {detail}");
    }
}

#[tokio::test]
async fn a_ledger_regenerated_by_camledger_with_another_key_is_found() {
    // The attacker runs camledger itself on the same uploads minus one: a perfectly
    // consistent ledger, signed by the key camledger made inside the attacker's data dir.
    let app = TestApp::spawn().await;
    for (n, _) in UPLOADS.iter().filter(|(n, _)| *n != 7) {
        assert!(app.upload(jpeg(*n)).await.status().is_success());
    }
    let case = Case { data: app.path().to_owned(), ..base().copy() };
    let verified = case.verify_audited();
    assert!(!verified.ok && verified.rule() == "signature", "{}", verified.json);
    assert!(case.verify(None, false).ok, "consistent without the allowed signers and the anchors");
    // The anchored checkpoints alone, their signatures checked against the keys the attacker's
    // data dir lists, name it too.
    let anchored = case.verify(None, true);
    assert!(!anchored.ok && anchored.rule() == "checkpoint", "{}", anchored.json);
}
