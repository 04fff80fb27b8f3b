//! `camledger bench push`: the ingest rate of `git push` (one image per commit) beside
//! `POST /v1/images`, same images, same clients, same server, in one run.
//!
//! Three closed-loop runs of C concurrent cameras, each its own keep-alive connection:
//! 1. `POST /v1/images` with the raw JPEG;
//! 2. `POST /git/ledger.git/git-receive-pack` with what `git push` sends for one orphan
//!    commit (commands, then a pack of commit, tree and image, zlib at git's default level),
//!    built in process before the clock starts: the server's cost of a push, without the
//!    client's;
//! 3. stock `git push` processes (fewer images: each push is a git, a git-remote-http and a
//!    pack-objects on the same cores as the server): what a camera running the script of
//!    docs/cameras.md sees.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{add_cameras, start_server, upload, JpegFactory};

#[derive(Debug, clap::Args)]
pub struct PushBenchArgs {
    /// Distinct images per in-process run (uploads, then pushes).
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Distinct images pushed by stock `git push` processes (0 skips that run).
    #[arg(long, default_value_t = 256)]
    pub git_events: usize,
    /// Size of each JPEG in bytes.
    #[arg(long, default_value_t = 100 * 1024)]
    pub image_bytes: usize,
    /// Concurrent cameras.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Where to put the benchmark's data dir (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
}

pub(super) async fn run(args: PushBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("camledger-bench-push-")
        .tempdir_in(args.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let factory = Arc::new(JpegFactory::new(args.image_bytes)?);
    let clients = args.concurrency.max(1);
    println!(
        "camledger bench push: {} images of {} bytes per run, {clients} concurrent cameras, {} cores",
        args.events,
        args.image_bytes,
        crate::config::cores()
    );
    let data_dir = temp.path().join("data");
    let tokens = add_cameras(&data_dir, clients).await?;
    let server = start_server(&data_dir, tokens.clone(), false).await?;
    let base = format!("http://{}", server.addr);
    let mut rows = Vec::new();

    let tokens = Arc::new(tokens);
    let (url, t, f) = (format!("{base}/v1/images"), Arc::clone(&tokens), Arc::clone(&factory));
    let rate = closed_loop(args.events, clients, move |client, c, n| {
        let (url, token, image) = (url.clone(), t[c].clone(), f.make(n));
        async move { upload(&client, &url, &token, image).await }
    })
    .await?;
    rows.push((format!("POST /v1/images, {clients} cameras"), rate, args.events));

    let first = args.events as u64;
    let started = Instant::now();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.events as u64)
            .map(|n| push_request(&format!("bench-cam-{}", n as usize % clients), &factory.make(first + n)))
            .collect::<anyhow::Result<_>>()?,
    );
    let packed = started.elapsed();
    let (url, t) = (format!("{base}/git/ledger.git/git-receive-pack"), Arc::clone(&tokens));
    let rate = closed_loop(args.events, clients, move |client, c, n| {
        let (url, token, body) = (url.clone(), t[c].clone(), bodies[n as usize].clone());
        async move { receive_pack(&client, &url, &token, body).await }
    })
    .await?;
    rows.push((format!("git-receive-pack, in-process client, {clients} cameras"), rate, args.events));

    if args.git_events > 0 {
        let first = 2 * args.events as u64;
        let repo = temp.path().join("camera.git");
        let commits = make_commits(&repo, &factory, first, args.git_events)?;
        let (url, t) = (format!("{base}/git/ledger.git"), Arc::clone(&tokens));
        let rate = closed_loop(args.git_events, clients, move |_, c, n| {
            let (repo, url, token, commit) = (repo.clone(), url.clone(), t[c].clone(), commits[n as usize].clone());
            async move { tokio::task::spawn_blocking(move || git_push(&repo, &url, &token, &commit)).await? }
        })
        .await?;
        rows.push((format!("stock git push processes, {clients} cameras"), rate, args.git_events));
    }
    let _ = server.stop.send(());
    server.task.await??;

    println!();
    println!("{:<56} {:>10} {:>8}", "run", "events/s", "events");
    for (name, rate, events) in &rows {
        println!("{name:<56} {rate:>10.0} {events:>8}");
    }
    println!("(building the {} in-process pushes took {:.2} s, outside the clock)", args.events, packed.as_secs_f64());
    Ok(())
}

/// `total` requests from `clients` concurrent tasks, each with its own connection, taking
/// the next request number as they go; `send` makes request `n` for client `c`. Returns
/// requests per second.
async fn closed_loop<F, Fut>(total: usize, clients: usize, send: F) -> anyhow::Result<f64>
where
    F: Fn(reqwest::Client, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let counter = Arc::new(AtomicU64::new(0));
    let send = Arc::new(send);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(300)).build()?;
        let (counter, send) = (Arc::clone(&counter), Arc::clone(&send));
        tasks.spawn(async move {
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= total as u64 {
                    return anyhow::Ok(());
                }
                send(client.clone(), c, n).await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The body `git push URL <commit>:refs/heads/incoming` sends for one orphan commit holding
/// `image` as `frame.jpg`.
fn push_request(camera: &str, image: &[u8]) -> anyhow::Result<Vec<u8>> {
    use gix::objs::Kind;
    let id = |kind: Kind, data: &[u8]| gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data);
    let blob = id(Kind::Blob, image)?;
    let mut tree = b"100644 frame.jpg\0".to_vec();
    tree.extend_from_slice(blob.as_bytes());
    let tree_id = id(Kind::Tree, &tree)?;
    let commit = format!(
        "tree {tree_id}\nauthor {camera} <{camera}@camera> 1700000000 +0000\n\
         committer {camera} <{camera}@camera> 1700000000 +0000\n\nimage {blob}\n"
    );
    let commit_id = id(Kind::Commit, commit.as_bytes())?;
    let mut pack = b"PACK".to_vec();
    pack.extend(2u32.to_be_bytes());
    pack.extend(3u32.to_be_bytes());
    for (kind, data) in [(1u8, commit.as_bytes()), (2, &tree[..]), (3, image)] {
        let mut size = data.len() as u64;
        let mut byte = (kind << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(data)?;
        pack.extend(zlib.finish()?);
    }
    let trailer = {
        use sha1::Digest as _;
        sha1::Sha1::digest(&pack)
    };
    pack.extend_from_slice(trailer.as_slice());
    let zero = "0".repeat(40);
    let command = format!("{zero} {commit_id} refs/heads/incoming\0 report-status side-band-64k agent=bench\n");
    let mut body = format!("{:04x}{command}0000", command.len() + 4).into_bytes();
    body.extend(pack);
    Ok(body)
}

async fn receive_pack(client: &reqwest::Client, url: &str, token: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/x-git-receive-pack-request")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer = response.bytes().await?;
    if status != 200 || !answer.windows(22).any(|w| w == b"ok refs/heads/incoming") {
        bail!("push answered {status}: {}", String::from_utf8_lossy(&answer));
    }
    Ok(())
}

/// One orphan commit per image in a fresh bare repository, as docs/cameras.md makes them.
fn make_commits(repo: &Path, factory: &JpegFactory, first: u64, count: usize) -> anyhow::Result<Vec<String>> {
    let git = |args: &[&str], stdin: &[u8]| -> anyhow::Result<String> {
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(repo)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "cam")
            .env("GIT_AUTHOR_EMAIL", "cam@camera")
            .env("GIT_COMMITTER_NAME", "cam")
            .env("GIT_COMMITTER_EMAIL", "cam@camera")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("running git")?;
        child.stdin.take().context("stdin")?.write_all(stdin)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("git {args:?} failed");
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    git(&["init", "--quiet", "--bare"], &[])?;
    (0..count as u64)
        .map(|n| {
            let blob = git(&["hash-object", "-w", "--stdin"], &factory.make(first + n))?;
            let tree = git(&["mktree"], format!("100644 blob {blob}\tframe.jpg\n").as_bytes())?;
            git(&["commit-tree", &tree, "-m", "image"], &[])
        })
        .collect()
}

fn git_push(repo: &Path, url: &str, token: &str, commit: &str) -> anyhow::Result<()> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["-c", &format!("http.extraHeader=Authorization: Bearer {token}")])
        .args(["push", "--quiet", url, &format!("{commit}:refs/heads/incoming")])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("git push failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_push_request_is_a_pack_git_accepts() {
        let body = push_request("cam", b"not really an image").unwrap();
        // One command pkt-line, a flush, then the pack.
        let command = usize::from_str_radix(std::str::from_utf8(&body[..4]).unwrap(), 16).unwrap();
        assert_eq!(&body[command..command + 4], b"0000");
        let pack = &body[command + 4..];
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("git").args(["init", "--quiet", "--bare"]).arg(dir.path()).status().unwrap();
        assert!(status.success());
        let mut child = Command::new("git")
            .arg("--git-dir")
            .arg(dir.path())
            .args(["index-pack", "--stdin", "--strict"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(pack).unwrap();
        assert!(child.wait().unwrap().success(), "git index-pack --strict accepts the pack");
    }
}
