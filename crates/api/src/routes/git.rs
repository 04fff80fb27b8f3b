//! Read-only git smart HTTP: auditors `git clone http://HOST/git/ledger.git`.
//!
//! gitoxide has no server side, so, as Gitea and Gitaly do, stock
//! `git upload-pack --stateless-rpc` does the work:
//! - `GET /git/ledger.git/info/refs?service=git-upload-pack` runs it with `--advertise-refs`
//!   and prefixes the `# service=git-upload-pack` pkt-line and a flush;
//! - `POST /git/ledger.git/git-upload-pack` streams the request (gunzipped when
//!   `Content-Encoding: gzip`) into its stdin and its stdout back as the response.
//!
//! A client gets exactly what is reachable from the three ledger refs, nothing else:
//! - `uploadpack.hideRefs` hides every ref but `refs/heads/events`, `refs/heads/verdicts` and
//!   `refs/notes/verdicts`, `refs/heads/cameras` (`HEAD` is advertised too: it points at events);
//! - only protocol v0 is spoken: the `Git-Protocol` header is not forwarded, because with v2
//!   a fetch of a hidden object *by id* succeeds whatever `hideRefs` says, while v0 refuses
//!   any want not reachable from an advertised ref (all `uploadpack.allow*SHA1InWant` are
//!   forced off on the command line, which overrides the repository's config);
//! - every want must be a commit (checked with `git cat-file` before the request reaches
//!   upload-pack), because upload-pack's reachability check for stateless requests only
//!   sees commits and served a blob no ref reaches;
//! - git runs with a cleared environment (no `GIT_DIR`, no system or global config, no
//!   hooks, no replace objects), in its own process group.
//!
//! Costs are bounded: at most `--git-max-concurrent` upload-packs (503 `busy` beyond), a
//! request body of at most `--git-max-request-bytes` after gunzip (413), and
//! `--git-timeout-secs` for the whole exchange (408 if git had not answered yet). A client
//! that goes away (or stops reading past the listener's idle timeout) drops the response,
//! which kills the process group.
//! git's stderr is logged (bounded), never sent to the client.
//!
//! `git-receive-pack` (cameras pushing image commits) is served by [`super::receive`]: a
//! pushed commit becomes an event through the same admission and writer as
//! `POST /v1/images`; nothing pushed reaches the ledger's object store or refs directly.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::io::ReaderStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::AbortOnDropHandle;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::auth::GitReader;
use crate::config::ServeConfig;
use crate::error::{ApiError, ErrorBody};
use crate::routes::openapi::{Binary, ServerErrors};
use crate::routes::receive;
use crate::state::{AppState, GitService};

/// The refs a clone gets (besides `HEAD`, which points at the first).
pub(crate) const SERVED_REFS: [&str; 4] = [
    camledger_eventstore::EVENTS_REF,
    camledger_eventstore::VERDICTS_REF,
    camledger_eventstore::NOTES_REF,
    camledger_eventstore::CAMERAS_REF,
];
/// Advertising four refs takes milliseconds; this only stops a wedged git.
const ADVERTISE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of git's stderr that is kept for the log.
const STDERR_KEPT: usize = 4096;
const RESPONSE_CHUNK: usize = 64 * 1024;

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(info_refs))
        .routes(post_only(routes!(upload_pack)))
        .routes(post_only(routes!(receive::receive_pack)))
}

/// Another method than POST answers a JSON 405 instead of axum's empty one.
fn post_only((schemas, paths, method): UtoipaMethodRouter<Arc<AppState>>) -> UtoipaMethodRouter<Arc<AppState>> {
    (schemas, paths, method.fallback(method_not_allowed))
}

impl GitService {
    pub(crate) fn new(config: &ServeConfig, git_dir: PathBuf) -> Self {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        Self {
            push: super::receive::service(&config.push, &git_dir),
            git_dir,
            program: std::env::split_paths(&path)
                .map(|dir| dir.join("git"))
                .find(|candidate| candidate.is_file())
                .unwrap_or_else(|| PathBuf::from("git")),
            path,
            slots: Arc::new(Semaphore::new(config.git_max_concurrent.max(1))),
            max_request_bytes: config.git_max_request_bytes.max(1),
            timeout: Duration::from_secs(config.git_timeout_secs.max(1)),
        }
    }

    /// `git` with a cleared environment: the server's `PATH`, no system or global config, no
    /// replace objects, never a prompt.
    pub(crate) fn git(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.git_dir)
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true);
        command
    }

    /// The first want that is not a commit in the ledger, if any.
    ///
    /// Needed because upload-pack's own check, for stateless (HTTP) requests, asks
    /// `rev-list` whether the wants are reachable from the advertised refs, and rev-list
    /// lists only commits: a blob or tree wanted by id passes unchecked. Measured: a loose
    /// blob that no ref reaches was served to a raw protocol v0 request. A commit is then
    /// checked by git itself (reachable from an advertised ref, or `not our ref`).
    async fn first_non_commit(&self, wants: &[String]) -> Result<Option<String>, ApiError> {
        let mut child = self
            .git()
            .arg("--git-dir")
            .arg(&self.git_dir)
            .args(["cat-file", "--batch-check=%(objecttype)"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(ApiError::internal)?;
        let mut stdin = child.stdin.take().ok_or_else(|| ApiError::internal(anyhow::anyhow!("no stdin")))?;
        let input = wants.iter().map(|w| format!("{w}\n")).collect::<String>();
        let writer = tokio::spawn(async move { stdin.write_all(input.as_bytes()).await });
        let output = tokio::time::timeout(ADVERTISE_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| ApiError::internal(anyhow::anyhow!("git cat-file took over 30 s")))?
            .map_err(ApiError::internal)?;
        let _ = writer.await;
        let types = String::from_utf8_lossy(&output.stdout);
        let mut types = types.lines();
        Ok(wants.iter().find(|_| types.next() != Some("commit")).cloned())
    }

    /// `git upload-pack --stateless-rpc` on the ledger, with a clean environment and the
    /// configuration that hides everything but the served refs.
    fn upload_pack(&self, advertise: bool) -> Command {
        let mut command = self.git();
        // Later hideRefs entries win, and command-line entries come after the repository's.
        let mut config = vec!["uploadpack.hideRefs=refs/".to_owned()];
        config.extend(SERVED_REFS.iter().map(|r| format!("uploadpack.hideRefs=!{r}")));
        config.extend(
            [
                "uploadpack.allowTipSHA1InWant=false",
                "uploadpack.allowReachableSHA1InWant=false",
                "uploadpack.allowAnySHA1InWant=false",
                "uploadpack.allowRefInWant=false",
                // Partial clones would let a client ask for trees without their blobs: not
                // needed by an auditor, and one more code path open to anyone with a token.
                "uploadpack.allowFilter=false",
                "core.hooksPath=/dev/null",
            ]
            .map(str::to_owned),
        );
        for entry in config {
            command.arg("-c").arg(entry);
        }
        command.args(["upload-pack", "--stateless-rpc", "--strict"]);
        if advertise {
            command.arg("--advertise-refs");
        }
        command
            .arg(&self.git_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that killing it also kills the `git pack-objects` it runs.
            .process_group(0);
        command
    }

    fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.slots).try_acquire_owned().map_err(|_| ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many clones and fetches are running; retry later",
            )
        })
    }
}

/// An [`ApiError`] that asks for credentials on 401, so git's credential machinery (and
/// curl, which picks the scheme from the challenge) answers with Basic.
pub(crate) struct GitError(pub(crate) ApiError);

impl From<ApiError> for GitError {
    fn from(e: ApiError) -> Self {
        GitError(e)
    }
}

impl IntoResponse for GitError {
    fn into_response(self) -> Response {
        let challenge = self.0.status == StatusCode::UNAUTHORIZED;
        let mut response = self.0.into_response();
        if challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"camledger\""));
        }
        response
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST")
}

/// One pkt-line: four hex digits of length (themselves included), then the payload.
pub(crate) fn pkt_line(payload: &str) -> String {
    format!("{:04x}{payload}", payload.len() + 4)
}

fn service(uri: &Uri) -> Option<&str> {
    uri.query()?.split('&').find_map(|pair| pair.strip_prefix("service="))
}

/// The ref advertisement: for a clone or fetch (reader), or for a push (camera: no refs).
#[utoipa::path(
    get,
    path = "/git/ledger.git/info/refs",
    tag = "git",
    security(("bearer" = []), ("basic" = [])),
    params(("service" = String, Query, description = "`git-upload-pack` (clone, fetch: auditor or admin) or \
                                                       `git-receive-pack` (push: camera)")),
    responses(
        (status = 200, description = "pkt-lines: `# service=…`, then the refs (`HEAD`, `refs/heads/events`, \
                                      `refs/heads/verdicts`, `refs/notes/verdicts`, `refs/heads/cameras`; none for a push)", content(
            (Binary = "application/x-git-upload-pack-advertisement"),
            (Binary = "application/x-git-receive-pack-advertisement")
        )),
        (status = 401, description = "`unauthorized`, with `WWW-Authenticate: Basic`", body = ErrorBody),
        (status = 403, description = "`forbidden`: dumb HTTP, or the wrong kind of token", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(name = "git_info_refs", skip_all)]
async fn info_refs(
    State(state): State<Arc<AppState>>,
    reader: Result<GitReader, ApiError>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, GitError> {
    match service(&uri) {
        Some("git-upload-pack") => {}
        Some("git-receive-pack") => return super::receive::advertise(&state, &headers).await,
        _ => {
            return Err(ApiError::forbidden(
                "only smart HTTP is served (service=git-upload-pack to clone, service=git-receive-pack to push)",
            )
            .into())
        }
    }
    reader?;
    let git = &state.git;
    let _slot = git.slot()?;
    let child = git.upload_pack(true).stdin(Stdio::null()).spawn().map_err(ApiError::internal)?;
    let output = tokio::time::timeout(ADVERTISE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| ApiError::internal(anyhow::anyhow!("git upload-pack --advertise-refs took over 30 s")))?
        .map_err(ApiError::internal)?;
    if !output.status.success() {
        return Err(ApiError::internal(anyhow::anyhow!(
            "git upload-pack --advertise-refs failed ({}): {}",
            output.status,
            stderr_text(&output.stderr)
        ))
        .into());
    }
    let mut body = format!("{}0000", pkt_line("# service=git-upload-pack\n")).into_bytes();
    body.extend_from_slice(&output.stdout);
    Ok(git_response("application/x-git-upload-pack-advertisement", Body::from(body)))
}

pub(crate) fn git_response(content_type: &'static str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache, max-age=0, must-revalidate")),
        ],
        body,
    )
        .into_response()
}

/// Checks a smart HTTP request's `Content-Type` (`application/x-SERVICE-request`) and
/// answers whether its body is gzipped (415 for any other encoding).
pub(crate) fn request_encoding(headers: &HeaderMap, service: &str) -> Result<bool, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.strip_prefix("application/x-").and_then(|t| t.strip_suffix("-request")) != Some(service) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be application/x-{service}-request"),
        ));
    }
    match headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim()) {
        None | Some("identity") => Ok(false),
        Some("gzip" | "x-gzip") => Ok(true),
        Some(_) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "Content-Encoding must be gzip or none",
        )),
    }
}

/// The pack for a clone or fetch: stock `git upload-pack --stateless-rpc`, protocol v0.
#[utoipa::path(
    post,
    path = "/git/ledger.git/git-upload-pack",
    tag = "git",
    security(("bearer" = []), ("basic" = [])),
    request_body(description = "The client's wants and haves (pkt-lines), gzip allowed",
                 content = Binary, content_type = "application/x-git-upload-pack-request"),
    responses(
        (status = 200, description = "The pack, streamed", body = Binary,
         content_type = "application/x-git-upload-pack-result"),
        (status = 400, description = "`invalid_git_request`, `invalid_gzip`, a want that is not a commit",
         body = ErrorBody),
        (status = 401, description = "`unauthorized`, with `WWW-Authenticate: Basic`", body = ErrorBody),
        (status = 403, description = "`forbidden`: a camera token", body = ErrorBody),
        (status = 405, description = "`method_not_allowed`: use POST", body = ErrorBody),
        (status = 408, description = "`request_timeout`: not done within `--git-timeout-secs`", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over `--git-max-request-bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`, `unsupported_encoding`", body = ErrorBody),
        ServerErrors
    )
)]
#[tracing::instrument(name = "git_upload_pack", skip_all, fields(gzip, request_bytes, outcome))]
async fn upload_pack(
    State(state): State<Arc<AppState>>,
    reader: Result<GitReader, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GitError> {
    reader?;
    let git = &state.git;
    let gzip = request_encoding(&headers, "git-upload-pack")?;
    tracing::Span::current().record("gzip", gzip);
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > git.max_request_bytes as u64) {
        return Err(too_large(git.max_request_bytes).into());
    }
    let slot = git.slot()?;
    let deadline = Instant::now() + git.timeout;
    let mut child = git.upload_pack(false).stdin(Stdio::piped()).spawn().map_err(ApiError::internal)?;
    let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ApiError::internal(anyhow::anyhow!("git upload-pack was spawned without its pipes")).into());
    };
    let stop = CancellationToken::new();
    let (exit_tx, exit_rx) = oneshot::channel();
    tokio::spawn(supervise(child, stderr, deadline, stop.clone(), slot, exit_tx));
    let mut running = Running {
        stdout: ReaderStream::with_capacity(stdout, RESPONSE_CHUNK),
        pump: Some(AbortOnDropHandle::new(tokio::spawn(pump(Arc::clone(&state), body, stdin, gzip)))),
        exit: Some(exit_rx),
        cancel: stop.clone(),
        _stop: stop.drop_guard(),
    };
    // Answer once git has said something (or the request is in and git is done): a request
    // refused while it streams in (too large, bad gzip) still gets its 4xx.
    let first = loop {
        tokio::select! {
            biased;
            pumped = async { running.pump.as_mut().expect("checked").await }, if running.pump.is_some() => {
                running.pump = None;
                match pumped {
                    Ok(Ok(bytes)) => {
                        tracing::Span::current().record("request_bytes", bytes);
                    }
                    Ok(Err(e)) => {
                        tracing::Span::current().record("outcome", "refused");
                        // Git is gone (and its slot free) before the client reads the answer.
                        running.kill().await;
                        return Err(e.into());
                    }
                    Err(e) => {
                        running.kill().await;
                        return Err(ApiError::internal(e).into());
                    }
                }
            }
            chunk = running.stdout.next() => break chunk,
        }
    };
    let first = match first {
        Some(Ok(bytes)) => bytes,
        Some(Err(e)) => return Err(ApiError::internal(e).into()),
        // git ended without a word: a request without wants, or one it refused (a protocol
        // error: a v2 command, garbage). Its stderr is logged, not sent.
        None => {
            return match running.finish().await {
                Outcome::Exited(status) if status.success() => {
                    Ok(git_response("application/x-git-upload-pack-result", Body::empty()))
                }
                Outcome::Exited(_) => Err(ApiError::bad_request(
                    "invalid_git_request",
                    "git upload-pack refused the request (only protocol v0/v1 is served)",
                )
                .into()),
                Outcome::TimedOut => Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!("the fetch did not finish within {} s", state.git.timeout.as_secs()),
                )
                .into()),
                outcome @ (Outcome::ClientGone | Outcome::Lost) => {
                    Err(ApiError::internal(anyhow::anyhow!("git upload-pack answered nothing: {outcome:?}")).into())
                }
            };
        }
    };
    let stream =
        futures_util::stream::once(async { Ok::<_, std::io::Error>(first) })
            .chain(futures_util::stream::unfold(running, |mut running| async move {
                running.next().await.map(|item| (item, running))
            }));
    Ok(git_response("application/x-git-upload-pack-result", Body::from_stream(stream)))
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("a git fetch request may be at most {max} bytes (after gunzip)"),
    )
}

/// How an upload-pack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Exited(ExitStatus),
    /// Killed at `--git-timeout-secs`.
    TimedOut,
    /// Killed because the response was dropped (the client went away).
    ClientGone,
    /// `wait` itself failed; the child was killed on drop.
    Lost,
}

/// A running upload-pack, as the response body sees it.
struct Running {
    stdout: ReaderStream<tokio::process::ChildStdout>,
    /// Streams the request into stdin; `None` once it has finished well.
    pump: Option<AbortOnDropHandle<Result<usize, ApiError>>>,
    exit: Option<oneshot::Receiver<Outcome>>,
    /// Dropping the response cancels this, and the supervisor kills git.
    _stop: DropGuard,
    cancel: CancellationToken,
}

impl Running {
    /// The next piece of the response; an error aborts it (the client sees a broken transfer,
    /// never a clean end of a truncated pack).
    async fn next(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            tokio::select! {
                biased;
                pumped = async { self.pump.as_mut().expect("checked").await }, if self.pump.is_some() => {
                    self.pump = None;
                    match pumped {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(Err(std::io::Error::other(e.to_string()))),
                        Err(e) => return Some(Err(std::io::Error::other(e))),
                    }
                }
                chunk = self.stdout.next() => {
                    return match chunk {
                        Some(item) => Some(item),
                        None => match self.finish().await {
                            // A non-zero exit after output has told the client why (an ERR
                            // line or a sideband message); end cleanly so it can print that.
                            Outcome::Exited(_) => None,
                            other => Some(Err(std::io::Error::other(format!("git upload-pack {other:?}")))),
                        },
                    };
                }
            }
        }
    }

    /// Kills git and waits until it is gone.
    async fn kill(&mut self) {
        self.cancel.cancel();
        self.finish().await;
    }

    /// Waits for the supervisor's verdict on the child (stdout has closed).
    async fn finish(&mut self) -> Outcome {
        match self.exit.take() {
            Some(exit) => exit.await.unwrap_or(Outcome::Lost),
            None => Outcome::Lost,
        }
    }
}

/// Streams the request body into git's stdin, gunzipping when asked, and refuses more than
/// `max` bytes (compressed or not). Returns the bytes given to git. Git closing its stdin
/// early is not the client's fault: git has answered (or failed, which is logged) already.
async fn pump(state: Arc<AppState>, body: Body, mut stdin: ChildStdin, gzip: bool) -> Result<usize, ApiError> {
    let max = state.git.max_request_bytes;
    let mut stream = body.into_data_stream();
    // The request is held back until its want section is in and checked.
    let mut held: Option<Vec<u8>> = Some(Vec::new());
    let mut gunzip = gzip.then(|| flate2::write::GzDecoder::new(Capped { buf: Vec::new(), left: max }));
    let (mut received, mut given) = (0usize, 0usize);
    let bad_gzip = || ApiError::bad_request("invalid_gzip", "the request body is not valid gzip");
    let gunzip_error = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            too_large(max)
        } else {
            bad_gzip()
        }
    };
    loop {
        let piece: Bytes = match stream.next().await {
            Some(Ok(chunk)) => {
                received += chunk.len();
                if received > max {
                    return Err(too_large(max));
                }
                match gunzip.as_mut() {
                    Some(decoder) => {
                        std::io::Write::write_all(decoder, &chunk).map_err(gunzip_error)?;
                        std::mem::take(&mut decoder.get_mut().buf).into()
                    }
                    None => chunk,
                }
            }
            Some(Err(e)) => {
                return Err(ApiError::bad_request("body_error", format!("reading the request body failed: {e}")))
            }
            None => break,
        };
        let piece: Bytes = match held.as_mut() {
            None => piece,
            Some(buffer) => {
                buffer.extend_from_slice(&piece);
                match want_section(buffer) {
                    None => continue,
                    Some(wants) => {
                        if let Some(id) = state.git.first_non_commit(&wants).await? {
                            return Err(not_our_ref(&id));
                        }
                        held.take().unwrap_or_default().into()
                    }
                }
            }
        };
        given += piece.len();
        if stdin.write_all(&piece).await.is_err() {
            return Ok(given);
        }
    }
    if let Some(decoder) = gunzip {
        let mut rest = decoder.finish().map_err(gunzip_error)?.buf;
        if let Some(mut buffer) = held.take() {
            buffer.append(&mut rest);
            if let Some(wants) = want_section(&buffer) {
                if let Some(id) = state.git.first_non_commit(&wants).await? {
                    return Err(not_our_ref(&id));
                }
            }
            rest = buffer;
        }
        given += rest.len();
        if stdin.write_all(&rest).await.is_err() {
            return Ok(given);
        }
    }
    // A request that ended before its want section did: git refuses it as incomplete.
    if let Some(buffer) = held {
        given += buffer.len();
        let _ = stdin.write_all(&buffer).await;
    }
    // Dropping stdin closes it: git sees the end of the request.
    let _ = stdin.shutdown().await;
    Ok(given)
}

fn not_our_ref(id: &str) -> ApiError {
    ApiError::forbidden(format!("not our ref {id}: only commits reachable from {} are served", SERVED_REFS.join(", ")))
}

/// The object ids wanted by a protocol v0 request, once its want section (the pkt-lines
/// before the first flush) is complete; `None` while more bytes are needed. A malformed
/// section yields the wants seen so far: git refuses the rest itself.
fn want_section(bytes: &[u8]) -> Option<Vec<String>> {
    let mut wants = Vec::new();
    let mut at = 0;
    loop {
        let length = bytes.get(at..at + 4)?;
        let length = std::str::from_utf8(length).ok().and_then(|l| usize::from_str_radix(l, 16).ok());
        match length {
            Some(0) => return Some(wants),
            Some(n @ 4..) => {
                let line = bytes.get(at + 4..at + n)?;
                if let Some(id) = line.strip_prefix(b"want ").and_then(|rest| rest.get(..40)) {
                    wants.push(String::from_utf8_lossy(id).into_owned());
                }
                at += n;
            }
            // A delimiter (v2) or garbage: not a v0 want section.
            _ => return Some(wants),
        }
    }
}

/// A gunzip sink that fails with `FileTooLarge` past its allowance, so a gzip bomb stops
/// within one write instead of inflating into memory.
pub(crate) struct Capped {
    pub(crate) buf: Vec<u8>,
    pub(crate) left: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.len() > self.left {
            return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "over the request cap"));
        }
        self.left -= data.len();
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Owns the child until it ends: kills its process group at the deadline or when the
/// response is dropped, logs its stderr when it fails, and frees the concurrency slot only
/// once git is gone.
async fn supervise(
    mut child: Child,
    stderr: tokio::process::ChildStderr,
    deadline: Instant,
    stop: CancellationToken,
    slot: OwnedSemaphorePermit,
    exit: oneshot::Sender<Outcome>,
) {
    let stderr = tokio::spawn(read_bounded(stderr));
    let pid = child.id();
    let outcome = tokio::select! {
        status = child.wait() => status.map_or(Outcome::Lost, Outcome::Exited),
        () = tokio::time::sleep_until(deadline) => Outcome::TimedOut,
        () = stop.cancelled() => Outcome::ClientGone,
    };
    if !matches!(outcome, Outcome::Exited(_)) {
        // Killed before it is reaped, so the group id cannot have been reused yet. (A
        // normal exit needs nothing: upload-pack waits for its pack-objects.)
        kill_group(pid);
        let _ = child.wait().await;
    }
    let stderr =
        tokio::time::timeout(Duration::from_secs(5), stderr).await.ok().and_then(Result::ok).unwrap_or_default();
    match outcome {
        Outcome::Exited(status) if status.success() => {
            tracing::debug!(outcome = "served", "git upload-pack finished");
        }
        Outcome::ClientGone => {
            tracing::info!(outcome = "client_gone", "the client went away; git upload-pack killed");
        }
        other => tracing::warn!(
            outcome = format!("{other:?}"),
            stderr = stderr_text(&stderr),
            "git upload-pack did not finish well"
        ),
    }
    drop(slot);
    let _ = exit.send(outcome);
}

/// SIGKILL to the child's process group (upload-pack and its pack-objects). A group that is
/// already gone is fine.
pub(crate) fn kill_group(pid: Option<u32>) {
    let pid = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Reads all of git's stderr (so it never blocks on a full pipe) and keeps the first
/// [`STDERR_KEPT`] bytes.
pub(crate) async fn read_bounded(mut stderr: tokio::process::ChildStderr) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stderr.read(&mut buf).await {
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

pub(crate) fn stderr_text(stderr: &[u8]) -> String {
    String::from_utf8_lossy(&stderr[..stderr.len().min(STDERR_KEPT)]).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkt_lines_count_their_own_length_prefix() {
        assert_eq!(pkt_line("# service=git-upload-pack\n"), "001e# service=git-upload-pack\n");
    }

    #[test]
    fn the_service_is_read_from_the_query() {
        let uri: Uri = "/git/ledger.git/info/refs?service=git-upload-pack".parse().unwrap();
        assert_eq!(service(&uri), Some("git-upload-pack"));
        let uri: Uri = "/git/ledger.git/info/refs?x=1&service=git-receive-pack".parse().unwrap();
        assert_eq!(service(&uri), Some("git-receive-pack"));
        let uri: Uri = "/git/ledger.git/info/refs".parse().unwrap();
        assert_eq!(service(&uri), None);
    }

    #[test]
    fn the_want_section_ends_at_the_first_flush() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let request = format!(
            "{}{}0000{}",
            pkt_line(&format!("want {a} side-band-64k\n")),
            pkt_line(&format!("want {b}\n")),
            pkt_line("done\n")
        );
        assert_eq!(want_section(request.as_bytes()), Some(vec![a.clone(), b]));
        assert_eq!(want_section(&request.as_bytes()[..30]), None, "more bytes are needed");
        let v2 = format!("{}0001{}0000", pkt_line("command=fetch\n"), pkt_line(&format!("want {a}\n")));
        assert_eq!(want_section(v2.as_bytes()), Some(vec![]), "v2 ends the section at its delimiter");
        assert_eq!(want_section(b"zzzz"), Some(vec![]));
    }

    #[test]
    fn the_gunzip_sink_stops_at_its_allowance() {
        use std::io::Write;
        let mut compressed = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        compressed.write_all(&vec![0u8; 1 << 20]).unwrap();
        let compressed = compressed.finish().unwrap();
        assert!(compressed.len() < 4096, "a 1 MiB bomb in {} bytes", compressed.len());
        let mut gunzip = flate2::write::GzDecoder::new(Capped { buf: Vec::new(), left: 64 * 1024 });
        let error = gunzip.write_all(&compressed).and_then(|()| gunzip.try_finish()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(gunzip.get_ref().buf.len() <= 64 * 1024);
    }
}
