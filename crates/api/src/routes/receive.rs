//! `git push` of image commits: a camera pushes over smart HTTP
//! (`GET /git/ledger.git/info/refs?service=git-receive-pack`, then
//! `POST /git/ledger.git/git-receive-pack`) and every pushed commit becomes one event.
//!
//! What is pushed never reaches the ledger directly:
//! - the advertisement is empty (a stateless camera pushes orphan commits and needs no
//!   history), so the client sends every object its commits reach;
//! - the pack goes into a quarantine: a fresh bare repository per push under
//!   `<data-dir>/push-quarantine`, indexed and checked by stock `git index-pack --stdin
//!   --strict` (fsck of every object, every link present: a thin pack whose bases are
//!   missing fails there), with a cleared environment, `--max-input-size` and the push's
//!   deadline; it is deleted when the push is answered (and at start-up, after a crash);
//! - each commit of each pushed ref, oldest first, must have a tree of exactly one image
//!   (`*.jpg|*.jpeg|*.png|*.webp`, a regular file) and optionally `capture.json`
//!   (`{"captured_at": "…"}`); its image then goes through the same admission and writer as
//!   `POST /v1/images` (`images::ingest`), with the commit id as the idempotency key, so a
//!   commit pushed again answers the event it made the first time and writes nothing;
//! - the pushed ref itself is never stored anywhere.
//!
//! Order rule: refs in the order the client sent them; a ref's commits oldest first. The
//! first commit that is refused refuses its ref (`ng`) and the ref's later commits are not
//! attempted; the ref's earlier commits stay recorded, and other refs go on.
//!
//! The answer is report-status (`unpack ok`, then `ok <ref>` or `ng <ref> <code>: <why>` per
//! ref), inside side-band 1 when the client asked for `side-band-64k`; side-band 2 carries
//! one line per commit with the seq it became, which `git push` prints as `remote: …`. The
//! response starts as soon as the request is authenticated; everything after that (a pack
//! too large, a bad pack, a timeout) is reported in the protocol, where git shows it.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;
use gix::ObjectId;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::git::{git_response, pkt_line, read_bounded, stderr_text, Capped, GitError};
use super::images::{self, UploadMeta};
use crate::config::PushLimitArgs;
use crate::error::ApiError;
use crate::state::{AppState, PushService};

const ZERO_ID: &str = "0000000000000000000000000000000000000000";
/// What the server offers: no `delete-refs`, `atomic`, `push-options` or `report-status-v2`.
const CAPABILITIES: &str = "report-status side-band-64k quiet ofs-delta agent=camledger";
/// The command section (one pkt-line per ref) may take at most this many bytes.
const MAX_COMMAND_BYTES: usize = 256 * 1024;
/// A commit, its tree, the image and capture.json: all a valid commit can reach.
pub(crate) const OBJECTS_PER_COMMIT: usize = 4;
const MAX_CAPTURE_JSON: u64 = 4096;
const MAX_REF_NAME: usize = 255;
const CAPTURE_FILE: &str = "capture.json";
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];
/// Largest side-band payload: 65520 bytes per pkt-line, less its length and band byte.
const SIDEBAND_PAYLOAD: usize = 65515;
/// Longest `ng` reason sent (git prints it on one line).
const MAX_REASON: usize = 400;

/// The push service for a ledger at `git_dir`; removes quarantines a crash left behind
/// (nothing in them was ever acknowledged).
pub(crate) fn service(args: &PushLimitArgs, git_dir: &Path) -> PushService {
    let quarantine = git_dir.parent().unwrap_or(Path::new(".")).join("push-quarantine");
    if quarantine.exists() {
        if let Err(e) = std::fs::remove_dir_all(&quarantine) {
            tracing::warn!(error = %e, path = %quarantine.display(), "removing old push quarantines failed");
        }
    }
    PushService {
        quarantine,
        slots: Arc::new(Semaphore::new(args.push_max_concurrent.max(1))),
        max_bytes: args.max_push_bytes.max(1),
        max_commits: args.max_push_commits.max(1),
        timeout: Duration::from_secs(args.push_timeout_secs.max(1)),
    }
}

/// `info/refs?service=git-receive-pack`: an empty ref set (the camera pushes orphan commits)
/// and the capabilities, for a camera token only.
pub(crate) async fn advertise(state: &AppState, headers: &HeaderMap) -> Result<Response, GitError> {
    crate::auth::git_camera(headers, state).await?;
    let mut body = format!("{}0000", pkt_line("# service=git-receive-pack\n"));
    body.push_str(&pkt_line(&format!("{ZERO_ID} capabilities^{{}}\0{CAPABILITIES}\n")));
    body.push_str("0000");
    Ok(git_response("application/x-git-receive-pack-advertisement", Body::from(body)))
}

/// `git push` of image commits: each becomes one event, as `POST /v1/images` makes them.
#[utoipa::path(
    post,
    path = "/git/ledger.git/git-receive-pack",
    tag = "git",
    security(("bearer" = []), ("basic" = [])),
    request_body(description = "The ref commands and the pack, gzip allowed", content = crate::routes::openapi::Binary,
                 content_type = "application/x-git-receive-pack-request"),
    responses(
        (status = 200, description = "git's report, streamed: `remote: camledger: <commit> seq N` per commit, \
                                      `ok` or `ng` per ref (refusals are reported here, not as statuses)",
         body = crate::routes::openapi::Binary, content_type = "application/x-git-receive-pack-result"),
        (status = 401, description = "`unauthorized`, with `WWW-Authenticate: Basic`", body = crate::error::ErrorBody),
        (status = 403, description = "`forbidden`: a reader token, or a Basic user that is not the token's camera",
         body = crate::error::ErrorBody),
        (status = 405, description = "`method_not_allowed`: use POST", body = crate::error::ErrorBody),
        (status = 413, description = "`push_too_large`: over `--max-push-bytes`", body = crate::error::ErrorBody),
        (status = 415, description = "`unsupported_media_type`, `unsupported_encoding`", body = crate::error::ErrorBody),
        crate::routes::openapi::ServerErrors
    )
)]
#[tracing::instrument(name = "git_receive_pack", skip_all, fields(camera = tracing::field::Empty))]
pub(crate) async fn receive_pack(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GitError> {
    let (camera, own_limit) = crate::auth::git_camera(&headers, &state).await?;
    tracing::Span::current().record("camera", camera.as_str());
    let push = &state.git.push;
    let gzip = crate::routes::git::request_encoding(&headers, "git-receive-pack")?;
    let limit = push.max_bytes.saturating_add(MAX_COMMAND_BYTES);
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "push_too_large",
            format!("a push may send at most {} bytes of pack (--max-push-bytes)", push.max_bytes),
        )
        .into());
    }
    let slot = Arc::clone(&push.slots).try_acquire_owned().map_err(|_| ApiError {
        retry_after: Some(5),
        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many pushes are running; retry later")
    })?;
    let deadline = Instant::now() + push.timeout;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let input = Input::new(body, gzip, limit, deadline);
    let task = receive(Arc::clone(&state), camera, own_limit, input, Reply::new(tx), deadline, slot);
    tokio::spawn(task.instrument(tracing::Span::current()));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, std::io::Error>(bytes), rx))
    });
    Ok(git_response("application/x-git-receive-pack-result", Body::from_stream(stream)))
}

/// One ref update the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefUpdate {
    new: String,
    name: String,
}

/// The command section of a receive-pack request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Commands {
    updates: Vec<RefUpdate>,
    capabilities: Vec<String>,
    /// Bytes of the request the section took (the pack starts after them).
    consumed: usize,
}

impl Commands {
    fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
}

/// Parses the command pkt-lines up to the first flush: `Ok(None)` while more bytes are
/// needed, `Err(why)` for a request that is not a protocol v0/v1 push.
fn parse_commands(bytes: &[u8]) -> Result<Option<Commands>, String> {
    let mut commands = Commands::default();
    let mut at = 0;
    loop {
        let Some(length) = bytes.get(at..at + 4) else { return Ok(None) };
        let length = std::str::from_utf8(length)
            .ok()
            .and_then(|l| usize::from_str_radix(l, 16).ok())
            .ok_or("the request is not pkt-lines")?;
        if length == 0 {
            commands.consumed = at + 4;
            return Ok(Some(commands));
        }
        if length < 5 {
            return Err("the request is not a protocol v0/v1 push".into());
        }
        let Some(line) = bytes.get(at + 4..at + length) else { return Ok(None) };
        at += length;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let (command, capabilities) = match memchr::memchr(0, line) {
            Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
            None => (line, None),
        };
        let command = std::str::from_utf8(command).map_err(|_| "a command is not UTF-8")?;
        if command.starts_with("shallow ") {
            return Err("shallow pushes are not supported; push commits without history".into());
        }
        if command.starts_with("push-cert") {
            return Err("signed pushes are not supported".into());
        }
        let mut words = command.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (words.next(), words.next(), words.next()) else {
            return Err(format!("malformed command {:?}", truncate(command, 120)));
        };
        if !is_hex_id(old) || !is_hex_id(new) {
            return Err(format!("malformed command {:?}: ids are 40 hex digits", truncate(command, 120)));
        }
        if commands.updates.is_empty() {
            if let Some(capabilities) = capabilities {
                commands.capabilities =
                    String::from_utf8_lossy(capabilities).split_whitespace().map(str::to_owned).collect();
            }
        }
        commands.updates.push(RefUpdate { new: new.to_owned(), name: name.to_owned() });
    }
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a ref name is refused, if it is: pushes go to `refs/heads/…`; the name is never
/// stored but is echoed in the report, so it must be one printable word.
fn ref_name_problem(name: &str) -> Option<String> {
    if !name.starts_with("refs/heads/") || name.len() <= "refs/heads/".len() {
        return Some("invalid_ref: push to a branch, e.g. refs/heads/incoming".into());
    }
    if name.len() > MAX_REF_NAME || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!("invalid_ref: a ref name is at most {MAX_REF_NAME} printable ASCII characters"));
    }
    None
}

/// The image entry names a tree may hold: `*.jpg|*.jpeg|*.png|*.webp`, any case.
fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && IMAGE_EXTENSIONS.iter().any(|e| ext.eq_ignore_ascii_case(e)))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// One line for the report: control characters become spaces, at most [`MAX_REASON`].
fn one_line(s: &str) -> String {
    truncate(s, MAX_REASON).chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// A side-band pkt-line on `band` (1 data, 2 progress, 3 error) for each piece of `data`.
fn sideband(band: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for piece in data.chunks(SIDEBAND_PAYLOAD) {
        out.extend_from_slice(format!("{:04x}", piece.len() + 5).as_bytes());
        out.push(band);
        out.extend_from_slice(piece);
    }
    out
}

/// The report-status pkt-lines, flush included.
fn report_status(unpack: &str, refs: &[(String, Result<(), String>)]) -> Vec<u8> {
    let mut report = pkt_line(&format!("unpack {}\n", one_line(unpack)));
    for (name, outcome) in refs {
        match outcome {
            Ok(()) => report.push_str(&pkt_line(&format!("ok {name}\n"))),
            Err(why) => report.push_str(&pkt_line(&format!("ng {name} {}\n", one_line(why)))),
        }
    }
    report.push_str("0000");
    report.into_bytes()
}

/// The response body as it is written: progress and the final report, framed as the client
/// asked. A send fails only when the client went away.
struct Reply {
    tx: mpsc::Sender<Bytes>,
    sideband: bool,
    report: bool,
}

impl Reply {
    fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self { tx, sideband: false, report: true }
    }

    fn negotiate(&mut self, commands: &Commands) {
        self.sideband = commands.has("side-band-64k");
        self.report = commands.has("report-status");
    }

    /// One result line (`remote: …` in git's output); `false` once the client is gone. Sent
    /// even when the client asked for `quiet` (as git does without a terminal): like a hook's
    /// output, these are results, not progress meters.
    async fn progress(&self, line: &str) -> bool {
        if !self.sideband {
            return !self.tx.is_closed();
        }
        self.tx.send(Bytes::from(sideband(2, format!("{line}\n").as_bytes()))).await.is_ok()
    }

    async fn finish(self, unpack: &str, refs: &[(String, Result<(), String>)]) {
        if !self.report {
            return;
        }
        let report = report_status(unpack, refs);
        let body = if self.sideband {
            let mut framed = sideband(1, &report);
            framed.extend_from_slice(b"0000");
            framed
        } else {
            report
        };
        let _ = self.tx.send(Bytes::from(body)).await;
    }
}

/// Why reading the request stopped short.
#[derive(Debug)]
enum Refusal {
    TooLarge,
    Timeout,
    BadGzip,
    Broken(String),
}

impl Refusal {
    fn reason(&self, max_bytes: usize) -> String {
        match self {
            Refusal::TooLarge => format!("push_too_large: a push may send at most {max_bytes} bytes of pack"),
            Refusal::Timeout => "timeout: the request did not arrive within the push's time limit".into(),
            Refusal::BadGzip => "invalid_gzip: the request body is not valid gzip".into(),
            Refusal::Broken(why) => format!("body_error: reading the request failed: {why}"),
        }
    }
}

/// The request body, gunzipped when asked, at most `max` bytes (compressed or not), each
/// read bounded by the push's deadline.
struct Input {
    stream: axum::body::BodyDataStream,
    gunzip: Option<flate2::write::GzDecoder<Capped>>,
    received: usize,
    max: usize,
    deadline: Instant,
    done: bool,
}

impl Input {
    fn new(body: Body, gzip: bool, max: usize, deadline: Instant) -> Self {
        Self {
            stream: body.into_data_stream(),
            gunzip: gzip.then(|| flate2::write::GzDecoder::new(Capped { buf: Vec::new(), left: max })),
            received: 0,
            max,
            deadline,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>, Refusal> {
        let gunzip_error = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::FileTooLarge {
                Refusal::TooLarge
            } else {
                Refusal::BadGzip
            }
        };
        loop {
            if self.done {
                return Ok(None);
            }
            let chunk =
                tokio::time::timeout_at(self.deadline, self.stream.next()).await.map_err(|_| Refusal::Timeout)?;
            match chunk {
                Some(Ok(chunk)) => {
                    self.received += chunk.len();
                    if self.received > self.max {
                        return Err(Refusal::TooLarge);
                    }
                    match self.gunzip.as_mut() {
                        Some(decoder) => {
                            std::io::Write::write_all(decoder, &chunk).map_err(gunzip_error)?;
                            let out = std::mem::take(&mut decoder.get_mut().buf);
                            if !out.is_empty() {
                                return Ok(Some(out.into()));
                            }
                        }
                        None => return Ok(Some(chunk)),
                    }
                }
                Some(Err(e)) => return Err(Refusal::Broken(e.to_string())),
                None => {
                    self.done = true;
                    if let Some(decoder) = self.gunzip.take() {
                        let rest = decoder.finish().map_err(gunzip_error)?.buf;
                        if !rest.is_empty() {
                            return Ok(Some(rest.into()));
                        }
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// A temporary bare repository that holds one push's objects and nothing else; removed on
/// drop.
struct Quarantine {
    dir: tempfile::TempDir,
}

impl Quarantine {
    fn create(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let dir = tempfile::Builder::new().prefix("push-").tempdir_in(root)?;
        for sub in ["objects/pack", "objects/info", "refs/heads", "refs/tags"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        std::fs::write(dir.path().join("HEAD"), "ref: refs/heads/main\n")?;
        std::fs::write(dir.path().join("config"), "[core]\n\trepositoryformatversion = 0\n\tbare = true\n")?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What a ref's commits are, checked before any is appended.
struct RefPlan {
    name: String,
    /// The ref's commits oldest first, or why the whole ref is refused.
    commits: Result<Vec<PlannedCommit>, String>,
}

struct PlannedCommit {
    id: ObjectId,
    /// The image to append, or why this commit is refused.
    shape: Result<Shape, String>,
}

struct Shape {
    image: ObjectId,
    image_size: u64,
    captured_at: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Capture {
    captured_at: String,
}

/// Everything a push is allowed, for the checks that run on the blocking pool.
#[derive(Clone, Copy)]
struct Budget {
    max_commits: usize,
    max_image_bytes: u64,
}

/// Walks each ref's chain (tip back to its root: linear, every commit present) and checks
/// every commit's tree, without reading images.
fn plan(repo: &gix::Repository, updates: &[RefUpdate], budget: Budget) -> Vec<RefPlan> {
    let mut commits_left = budget.max_commits;
    updates
        .iter()
        .map(|update| {
            let commits =
                ref_problem(update).map_or_else(|| chain(repo, update, &mut commits_left, budget.max_commits), Err);
            let commits = commits.map(|ids| {
                ids.into_iter().map(|id| PlannedCommit { id, shape: check_tree(repo, id, budget) }).collect()
            });
            RefPlan { name: update.name.clone(), commits }
        })
        .collect()
}

fn ref_problem(update: &RefUpdate) -> Option<String> {
    if update.new == ZERO_ID {
        return Some("deletes_unsupported: pushed refs are never stored, so there is nothing to delete".into());
    }
    ref_name_problem(&update.name)
}

/// The ref's commits, oldest first.
fn chain(
    repo: &gix::Repository,
    update: &RefUpdate,
    commits_left: &mut usize,
    max_commits: usize,
) -> Result<Vec<ObjectId>, String> {
    let mut id = ObjectId::from_hex(update.new.as_bytes()).map_err(|_| "invalid_id: not a 40-hex id".to_owned())?;
    let mut ids = Vec::new();
    loop {
        if *commits_left == 0 {
            return Err(format!(
                "too_many_commits: a push may carry at most {max_commits} commits (--max-push-commits); \
                 push the rest in another push"
            ));
        }
        *commits_left -= 1;
        let object = match repo.try_find_object(id) {
            Ok(Some(object)) => object,
            Ok(None) => return Err(format!("missing_object: commit {id} is not in the pack")),
            Err(e) => return Err(format!("bad_object: commit {id} cannot be read: {e}")),
        };
        if object.kind != gix::objs::Kind::Commit {
            return Err(format!("not_a_commit: {id} is a {}", object.kind));
        }
        let commit = gix::objs::CommitRef::from_bytes(&object.data, gix::hash::Kind::Sha1)
            .map_err(|_| format!("bad_object: commit {id} is malformed"))?;
        let mut parents = commit.parents();
        let parent = parents.next();
        if parents.next().is_some() {
            return Err(format!("merge_commit: {id} has several parents; push a linear chain of image commits"));
        }
        ids.push(id);
        match parent {
            Some(parent) => id = parent,
            None => break,
        }
    }
    ids.reverse();
    Ok(ids)
}

/// The commit's tree must hold exactly one image (a regular file) and optionally
/// `capture.json`: no directories, submodules, symlinks or other files.
fn check_tree(repo: &gix::Repository, id: ObjectId, budget: Budget) -> Result<Shape, String> {
    let commit = repo.find_object(id).map_err(|e| format!("bad_object: {e}"))?;
    let tree_id = gix::objs::CommitRef::from_bytes(&commit.data, gix::hash::Kind::Sha1)
        .map_err(|_| "bad_object: malformed commit".to_owned())?
        .tree();
    let tree = match repo.try_find_object(tree_id) {
        Ok(Some(tree)) if tree.kind == gix::objs::Kind::Tree => tree,
        Ok(_) => return Err(format!("missing_object: tree {tree_id} is not in the pack")),
        Err(e) => return Err(format!("bad_object: tree {tree_id}: {e}")),
    };
    let mut image: Option<(String, ObjectId)> = None;
    let mut capture: Option<ObjectId> = None;
    let allowed = "the tree may hold one *.jpg|*.jpeg|*.png|*.webp image and capture.json";
    for (n, entry) in gix::objs::TreeRefIter::from_bytes(&tree.data, gix::hash::Kind::Sha1).enumerate() {
        let entry = entry.map_err(|_| format!("bad_object: tree {tree_id} is malformed"))?;
        if n >= 2 {
            return Err(format!("too_many_files: {allowed}"));
        }
        let name = String::from_utf8_lossy(entry.filename).into_owned();
        let shown = format!("{:?}", truncate(&name, 64));
        match entry.mode.kind() {
            gix::objs::tree::EntryKind::Tree => return Err(format!("subtree: {shown} is a directory; {allowed}")),
            gix::objs::tree::EntryKind::Commit => return Err(format!("submodule: {shown} is a submodule; {allowed}")),
            gix::objs::tree::EntryKind::Link => return Err(format!("symlink: {shown} is a symbolic link; {allowed}")),
            gix::objs::tree::EntryKind::Blob | gix::objs::tree::EntryKind::BlobExecutable => {}
        }
        if name == CAPTURE_FILE {
            capture = Some(entry.oid.to_owned());
        } else if is_image_name(&name) {
            if let Some((first, _)) = &image {
                return Err(format!(
                    "too_many_images: {:?} and {shown} are both images; push one image per commit",
                    truncate(first, 64)
                ));
            }
            image = Some((name, entry.oid.to_owned()));
        } else {
            return Err(format!("unexpected_file: {shown}; {allowed}"));
        }
    }
    let (_, image) = image.ok_or_else(|| format!("no_image: {allowed}"))?;
    let header =
        repo.find_header(image).map_err(|_| format!("missing_object: image blob {image} is not in the pack"))?;
    if header.kind() != gix::objs::Kind::Blob {
        return Err(format!("bad_object: {image} is not a blob"));
    }
    if header.size() > budget.max_image_bytes {
        return Err(format!(
            "body_too_large: the image is {} bytes, more than the limit of {} bytes",
            header.size(),
            budget.max_image_bytes
        ));
    }
    let captured_at = match capture {
        None => None,
        Some(oid) => Some(read_capture(repo, oid)?),
    };
    Ok(Shape { image, image_size: header.size(), captured_at })
}

fn read_capture(repo: &gix::Repository, oid: ObjectId) -> Result<String, String> {
    let invalid =
        |why: &str| format!("invalid_capture_json: {why}; write {{\"captured_at\": \"2026-11-22T03:04:05Z\"}}");
    let header =
        repo.find_header(oid).map_err(|_| format!("missing_object: {CAPTURE_FILE} blob is not in the pack"))?;
    if header.size() > MAX_CAPTURE_JSON {
        return Err(invalid(&format!("it is more than {MAX_CAPTURE_JSON} bytes")));
    }
    let blob = repo.find_object(oid).map_err(|e| format!("bad_object: {e}"))?;
    let capture: Capture = serde_json::from_slice(&blob.data).map_err(|_| invalid("not the expected JSON"))?;
    Ok(capture.captured_at)
}

/// How `git index-pack` refused a pack, as a reason for the client. Git's stderr is logged,
/// not sent (it names server paths); only fsck's `error: object <id>: <problem>` lines are
/// passed on, since they name the client's own object.
fn classify_index_pack(stderr: &str) -> String {
    if stderr.contains("unresolved delta") {
        "thin_pack: the pack has deltas against objects it does not carry; push the whole commit (no history \
         is advertised, so stock git does)"
            .into()
    } else if stderr.contains("maximum allowed size") {
        "push_too_large: the pack is larger than --max-push-bytes".into()
    } else if let Some(line) = stderr.lines().find(|l| l.starts_with("error: object ")) {
        format!("bad_object: {}", line.trim_start_matches("error: "))
    } else {
        "bad_pack: the pack is malformed (git index-pack refused it)".into()
    }
}

/// A pack's object count from its 12-byte header (`PACK`, version 2 or 3, count).
fn pack_objects(header: &[u8]) -> Result<u32, String> {
    if header.len() < 12 || &header[..4] != b"PACK" {
        return Err("bad_pack: the request does not carry a pack after its commands".into());
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != 2 && version != 3 {
        return Err(format!("bad_pack: pack version {version} is not supported"));
    }
    Ok(u32::from_be_bytes([header[8], header[9], header[10], header[11]]))
}

/// Receives one push and answers it through `reply`. Holds its concurrency slot until done.
async fn receive(
    state: Arc<AppState>,
    camera: String,
    own_limit: Option<crate::ratelimit::RateLimit>,
    mut input: Input,
    mut reply: Reply,
    deadline: Instant,
    _slot: OwnedSemaphorePermit,
) {
    let push = &state.git.push;
    let started = std::time::Instant::now();
    // The command section.
    let mut buffered: Vec<u8> = Vec::new();
    let commands = loop {
        match parse_commands(&buffered) {
            Ok(Some(commands)) => break commands,
            Ok(None) if buffered.len() > MAX_COMMAND_BYTES => {
                return reply.finish("too_many_refs: the command section is too long", &[]).await;
            }
            Ok(None) => {}
            Err(why) => return reply.finish(&format!("invalid_request: {why}"), &[]).await,
        }
        match input.next().await {
            Ok(Some(chunk)) => buffered.extend_from_slice(&chunk),
            // git's probe before a large push (a lone flush), or an empty body: nothing to do.
            Ok(None) if buffered.is_empty() => return,
            Ok(None) => return reply.finish("invalid_request: the request ends inside its commands", &[]).await,
            Err(refusal) => return reply.finish(&refusal.reason(push.max_bytes), &[]).await,
        }
    };
    reply.negotiate(&commands);
    let updates = commands.updates;
    if updates.is_empty() {
        return;
    }
    let refuse_all = |why: &str| -> Vec<(String, Result<(), String>)> {
        updates.iter().map(|u| (u.name.clone(), Err(why.to_owned()))).collect()
    };
    if updates.len() > push.max_commits {
        let why = format!("too_many_refs: a push may update at most {} refs", push.max_commits);
        return reply.finish(&why, &refuse_all(&why)).await;
    }
    let mut pending = buffered.split_off(commands.consumed);
    // The pack: header first (to refuse a huge object count before git reads on), then into
    // `git index-pack` in the quarantine.
    let needs_pack = updates.iter().any(|u| u.new != ZERO_ID);
    let quarantine = match Quarantine::create(&push.quarantine) {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "creating a push quarantine failed");
            let why = "unavailable: the server cannot receive pushes right now; retry later";
            return reply.finish(why, &refuse_all(why)).await;
        }
    };
    let received_ms = started.elapsed().as_millis() as u64;
    if needs_pack {
        if let Err(why) = index_pack(&state, &quarantine, &mut input, &mut pending).await {
            tracing::info!(camera, reason = why.as_str(), "push refused before its commits were read");
            remove(quarantine).await;
            return reply.finish(&why, &refuse_all(&why)).await;
        }
    }
    let indexed_ms = started.elapsed().as_millis() as u64;
    let repo = match gix::open_opts(quarantine.path(), gix::open::Options::isolated()) {
        Ok(repo) => repo.into_sync(),
        Err(e) => {
            tracing::error!(error = %e, "opening a push quarantine failed");
            remove(quarantine).await;
            let why = "unavailable: the server cannot read the push; retry later";
            return reply.finish(why, &refuse_all(why)).await;
        }
    };
    let repo = Arc::new(repo);
    let budget = Budget { max_commits: push.max_commits, max_image_bytes: state.max_body_bytes as u64 };
    let plans = {
        let (repo, updates) = (Arc::clone(&repo), updates.clone());
        tokio::task::spawn_blocking(move || plan(&repo.to_thread_local(), &updates, budget)).await
    };
    let plans = match plans {
        Ok(plans) => plans,
        Err(e) => {
            tracing::error!(error = %e, "checking a push panicked");
            drop(repo);
            remove(quarantine).await;
            let why = "internal: checking the push failed; it has been logged";
            return reply.finish(why, &refuse_all(why)).await;
        }
    };
    let planned_ms = started.elapsed().as_millis() as u64;
    let mut results = Vec::with_capacity(plans.len());
    let (mut created, mut replayed) = (0usize, 0usize);
    for plan in plans {
        let outcome = match plan.commits {
            Err(why) => Err(why),
            Ok(commits) => {
                let mut outcome = Ok(());
                let mut kept = 0usize;
                for commit in commits {
                    let short = &commit.id.to_string()[..8];
                    let appended = match commit.shape {
                        Err(why) => Err(why),
                        Ok(shape) => append(&state, &repo, &camera, own_limit, commit.id, shape, deadline).await,
                    };
                    match appended {
                        Ok((line, was_replayed)) => {
                            kept += 1;
                            if was_replayed {
                                replayed += 1;
                            } else {
                                created += 1;
                            }
                            if !reply.progress(&format!("camledger: {short} {line}")).await {
                                tracing::info!(
                                    camera,
                                    "the client went away; the push's later commits are not attempted"
                                );
                                return;
                            }
                        }
                        Err(why) => {
                            let earlier = match kept {
                                0 => String::new(),
                                1 => "; the 1 earlier commit of this ref is recorded".to_owned(),
                                n => format!("; the {n} earlier commits of this ref are recorded"),
                            };
                            let _ = reply.progress(&format!("camledger: {short} refused: {}", one_line(&why))).await;
                            outcome = Err(format!("{why} [commit {short}{earlier}]"));
                            break;
                        }
                    }
                }
                outcome
            }
        };
        results.push((plan.name, outcome));
    }
    let refused = results.iter().filter(|(_, r)| r.is_err()).count();
    tracing::info!(
        camera,
        refs = results.len(),
        refused,
        created,
        replayed,
        received_ms,
        indexed_ms,
        planned_ms,
        ms = started.elapsed().as_millis() as u64,
        "push received"
    );
    drop(repo);
    remove(quarantine).await;
    reply.finish("ok", &results).await;
}

/// Removes a quarantine (file-system work: off the async workers) before the push is
/// answered, so that an answered push has left nothing behind.
async fn remove(quarantine: Quarantine) {
    let _ = tokio::task::spawn_blocking(move || drop(quarantine)).await;
}

/// Streams the pack into `git index-pack --stdin --strict` in the quarantine.
async fn index_pack(
    state: &AppState,
    quarantine: &Quarantine,
    input: &mut Input,
    pending: &mut Vec<u8>,
) -> Result<(), String> {
    let push = &state.git.push;
    while pending.len() < 12 {
        match input.next().await {
            Ok(Some(chunk)) => pending.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(refusal) => return Err(refusal.reason(push.max_bytes)),
        }
    }
    let objects = pack_objects(pending)?;
    let max_objects = push.max_commits.saturating_mul(OBJECTS_PER_COMMIT);
    if objects as usize > max_objects {
        return Err(format!(
            "too_many_objects: the pack holds {objects} objects; a push may carry {max_objects} \
             ({OBJECTS_PER_COMMIT} per commit, --max-push-commits {})",
            push.max_commits
        ));
    }
    let mut child = state
        .git
        .git()
        .arg("--git-dir")
        .arg(quarantine.path())
        .args(["-c", "core.fsync=none", "-c", "core.bigFileThreshold=2g"])
        .args(["index-pack", "--stdin", "--strict"])
        .arg(format!("--max-input-size={}", push.max_bytes))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            tracing::error!(error = %e, "spawning git index-pack failed");
            "unavailable: the server cannot receive pushes right now; retry later".to_owned()
        })?;
    let (Some(mut stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
        return Err("internal: git index-pack was spawned without its pipes".into());
    };
    let stderr = tokio::spawn(read_bounded(stderr));
    let mut refusal = None;
    let mut first = Some(Bytes::from(std::mem::take(pending)));
    loop {
        let chunk = match first.take() {
            Some(chunk) => Some(chunk),
            None => match input.next().await {
                Ok(chunk) => chunk,
                Err(e) => {
                    refusal = Some(e);
                    None
                }
            },
        };
        let Some(chunk) = chunk else { break };
        if stdin.write_all(&chunk).await.is_err() {
            // index-pack stopped reading: it has refused the pack (its stderr says why).
            break;
        }
    }
    drop(stdin);
    if let Some(refusal) = refusal {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err(refusal.reason(push.max_bytes));
    }
    let status = match tokio::time::timeout_at(input.deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "waiting for git index-pack failed");
            return Err("internal: indexing the pack failed; it has been logged".into());
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(Refusal::Timeout.reason(push.max_bytes));
        }
    };
    if status.success() {
        return Ok(());
    }
    let stderr = stderr.await.unwrap_or_default();
    let stderr = stderr_text(&stderr);
    tracing::info!(status = %status, stderr, "git index-pack refused a pushed pack");
    Err(classify_index_pack(&stderr))
}

/// Reads one commit's image from the quarantine and appends it like an HTTP upload, with
/// the commit id as idempotency key. Answers the progress line or why it was refused.
async fn append(
    state: &Arc<AppState>,
    repo: &Arc<gix::ThreadSafeRepository>,
    camera: &str,
    own_limit: Option<crate::ratelimit::RateLimit>,
    id: ObjectId,
    shape: Shape,
    deadline: Instant,
) -> Result<(String, bool), String> {
    if Instant::now() >= deadline {
        return Err("timeout: not attempted within the push's time limit; push it again".into());
    }
    // The same gate as an HTTP upload (quarantine, then one rate-limit token per image).
    if let Err(error) = crate::gate::admit(state, camera, own_limit, 1) {
        return Err(format!("{}: {}", error.code, error.message));
    }
    // The image is held in memory like an upload's body: under the same global budget.
    let size = u32::try_from(shape.image_size).map_err(|_| "body_too_large: the image is too large".to_owned())?;
    let _budget = match tokio::time::timeout_at(deadline, Arc::clone(&state.body_budget).acquire_many_owned(size)).await
    {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) | Err(_) => return Err("busy: too many upload bytes are in flight; push again later".into()),
    };
    let bytes = {
        let repo = Arc::clone(repo);
        tokio::task::spawn_blocking(move || {
            repo.to_thread_local().find_object(shape.image).map(|object| Bytes::from(object.detach().data))
        })
        .await
    };
    let bytes = match bytes {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(format!("bad_object: the image blob cannot be read: {e}")),
        Err(e) => {
            tracing::error!(error = %e, "reading a pushed image panicked");
            return Err("internal: reading the image failed; it has been logged".into());
        }
    };
    let meta =
        UploadMeta { camera: camera.to_owned(), captured_at: shape.captured_at, idempotency_key: Some(id.to_string()) };
    let key = meta.idempotency_key.clone();
    let ingested =
        tokio::time::timeout_at(deadline + images::APPEND_GRACE, images::ingest(state, &meta, bytes, key)).await;
    let appended =
        match ingested {
            Ok(Ok(appended)) => appended,
            Ok(Err(error)) => return Err(format!("{}: {}", error.code, error.message)),
            Err(_) => return Err(
                "outcome_unknown: the append did not finish in time; it may have landed: push the same commit again"
                    .into(),
            ),
        };
    let answer = images::answer(state, camera, &appended).await;
    let mut line = format!("seq {}", appended.seq);
    match &answer["duplicate_of"] {
        serde_json::Value::Null => {}
        serde_json::Value::Number(seq) => line.push_str(&format!(" (duplicate of seq {seq})")),
        other => line.push_str(&format!(" (duplicate of an image from {})", other.as_str().unwrap_or("elsewhere"))),
    }
    if appended.replayed {
        line.push_str(" (pushed before; nothing new written)");
    }
    Ok((line, appended.replayed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> String {
        pkt_line(line)
    }

    #[test]
    fn commands_end_at_the_first_flush_and_carry_the_first_lines_capabilities() {
        let a = "a".repeat(40);
        let request = format!(
            "{}{}0000PACK",
            command(&format!("{ZERO_ID} {a} refs/heads/incoming\0 report-status side-band-64k agent=git/2\n")),
            command(&format!("{ZERO_ID} {a} refs/heads/second\n")),
        );
        let commands = parse_commands(request.as_bytes()).unwrap().unwrap();
        assert_eq!(
            commands.updates,
            vec![
                RefUpdate { new: a.clone(), name: "refs/heads/incoming".into() },
                RefUpdate { new: a.clone(), name: "refs/heads/second".into() }
            ]
        );
        assert!(commands.has("side-band-64k") && commands.has("report-status") && !commands.has("quiet"));
        assert_eq!(&request.as_bytes()[commands.consumed..], b"PACK");
        assert_eq!(parse_commands(&request.as_bytes()[..20]).unwrap(), None, "more bytes are needed");
        assert_eq!(parse_commands(b"0000").unwrap().unwrap().updates, vec![], "git's probe");
    }

    #[test]
    fn requests_that_are_not_v0_pushes_are_refused() {
        let a = "a".repeat(40);
        for bad in [
            "zzzz".to_owned(),
            command("shallow aaaa\n"),
            command(&format!("{ZERO_ID} {a}\n")),
            command(&format!("{ZERO_ID} {} refs/heads/x\n", "A".repeat(40))),
            "0001".to_owned(),
        ] {
            assert!(parse_commands(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_branches_with_printable_names_are_accepted() {
        assert_eq!(ref_name_problem("refs/heads/incoming"), None);
        assert_eq!(ref_name_problem("refs/heads/cam/2026-11-22"), None);
        for bad in
            ["refs/tags/v1", "refs/heads/", "HEAD", "refs/heads/a\tb", &format!("refs/heads/{}", "x".repeat(300))]
        {
            assert!(ref_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn image_names_are_judged_by_extension_in_any_case() {
        for good in ["a.jpg", "IMG_0001.JPEG", "x.png", "frame.WebP"] {
            assert!(is_image_name(good), "{good}");
        }
        for bad in [".jpg", "a.gif", "jpg", "a.jpg.txt", "capture.json"] {
            assert!(!is_image_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_report_is_pkt_lines_inside_side_band_one() {
        let report =
            report_status("ok", &[("refs/heads/a".into(), Ok(())), ("refs/heads/b".into(), Err("no\nway".into()))]);
        assert_eq!(
            String::from_utf8(report.clone()).unwrap(),
            "000eunpack ok\n0014ok refs/heads/a\n001bng refs/heads/b no way\n0000"
        );
        let framed = sideband(1, &report);
        assert_eq!(&framed[..5], format!("{:04x}\u{1}", report.len() + 5).as_bytes());
        let big = sideband(2, &vec![b'x'; SIDEBAND_PAYLOAD + 1]);
        assert_eq!(big.len(), SIDEBAND_PAYLOAD + 1 + 10, "two pkt-lines");
    }

    #[test]
    fn index_pack_failures_become_reasons_without_server_paths() {
        assert!(classify_index_pack("fatal: pack has 1 unresolved delta").starts_with("thin_pack:"));
        assert!(classify_index_pack("fatal: pack exceeds maximum allowed size").starts_with("push_too_large:"));
        let fsck = "error: object 1234: badTimezone: invalid author/committer line - bad time zone\n\
                    fatal: fsck error in packed object";
        assert_eq!(
            classify_index_pack(fsck),
            "bad_object: object 1234: badTimezone: invalid author/committer line - bad time zone"
        );
        let other = classify_index_pack("fatal: cannot open /srv/data/push-quarantine/x");
        assert!(other.starts_with("bad_pack:") && !other.contains("/srv"));
    }

    #[test]
    fn the_pack_header_gives_the_object_count() {
        let mut header = b"PACK".to_vec();
        header.extend(2u32.to_be_bytes());
        header.extend(7u32.to_be_bytes());
        assert_eq!(pack_objects(&header), Ok(7));
        header[7] = 4;
        assert!(pack_objects(&header).is_err());
        assert!(pack_objects(b"PAC").is_err());
    }
}
