//! `camledger bench judge`: images per core of the judging pipeline with the reduced-scale
//! decode against the full decode, in one run (see `camledger_processor::bench`).
//!
//! `camledger bench ingest`: durable ingest over HTTP against `git fast-import` writing the
//! same commits, on the same machine, in one run.
//!
//! What it measures:
//! 1. closed-loop throughput: N distinct ~100 KiB JPEGs uploaded by C concurrent clients
//!    (each with its own keep-alive connection) for every C in `--concurrency`;
//! 2. the reference: `git fast-import --depth=0` (compression 0) writing the same blobs,
//!    event.json files and commit chain into a fresh bare repository (no fsync: git
//!    fast-import never syncs, camledger does after every batch);
//! 3. open-loop latency at half the peak rate: requests are sent on a fixed schedule and
//!    latency counts from the scheduled send time, so a stall is not hidden by the client
//!    slowing down (no coordinated omission).
//!
//! The client runs in the same process as the server, on the same cores: the figures are
//! a lower bound of what the server does with the machine to itself.
//!
//! `camledger bench push`: `git push` of image commits beside `POST /v1/images` (see [`push`]).
//!
//! `camledger bench soak`: minutes of steady load at a fraction of the peak against the
//! server as its own process; errors, latency and the server's RSS over time (see [`soak`]).

mod push;
mod ratelimit;
mod readmodel;
mod soak;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use camledger_eventstore::{Ledger, LedgerConfig};

use crate::app::Application;
use crate::config::ServeConfig;
use crate::registry::Registry;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Durable ingest over HTTP vs `git fast-import` of the same commits; p50/p99 latency at half the peak rate.
    Ingest(IngestArgs),
    /// Judging images per core on 1080p JPEGs: reduced-scale decode vs full decode, with the model.
    Judge(JudgeBenchArgs),
    /// Minutes at 80% of the peak rate against a server process: errors, p99 and RSS over time.
    Soak(soak::SoakArgs),
    /// Search and stats latency (p50/p99) on a read model filled with synthetic events.
    Readmodel(readmodel::ReadModelBenchArgs),
    /// One burst of large concurrent uploads against a server process: peak RSS, then RSS while idle.
    Burst(soak::BurstArgs),
    /// What per-camera rate limiting costs an upload at 10,000 cameras, beside the registry lookup.
    Ratelimit(ratelimit::RateLimitBenchArgs),
    /// `git push` of one image per commit beside `POST /v1/images`: events/s, same run.
    Push(push::PushBenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct JudgeBenchArgs {
    /// Distinct generated JPEGs per set.
    #[arg(long, default_value_t = 40)]
    pub images: usize,
    /// Noise amplitude of each set (sets the file size: 3 gives ~270 KB, 8 ~540 KB at 1080p q90).
    #[arg(long, value_delimiter = ',', default_value = "3,8")]
    pub noise: Vec<u64>,
    /// Minimum CPU-seconds per measurement.
    #[arg(long, default_value_t = 1.0)]
    pub min_cpu_seconds: f64,
    /// Leave the classifier out (no ONNX Runtime needed).
    #[arg(long)]
    pub no_classifier: bool,
    #[command(flatten)]
    pub judge: crate::processing::JudgeArgs,
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Distinct images per concurrency level.
    #[arg(long, default_value_t = 2000)]
    pub events: usize,
    /// Size of each JPEG in bytes.
    #[arg(long, default_value_t = 100 * 1024)]
    pub image_bytes: usize,
    /// Concurrent clients, one run per value.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    pub concurrency: Vec<usize>,
    /// Seconds of open-loop load for the latency measurement.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// Where to put the benchmark's data dirs (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
    /// Serve without the read model projector (to compare the ingest rate with and without it).
    #[arg(long)]
    pub no_projector: bool,
    /// Keep the benchmark's data dir (e.g. to time `camledger reindex` on it) and print its path.
    #[arg(long)]
    pub keep_data: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Ingest(args) => ingest(args).await,
        BenchCommand::Judge(args) => tokio::task::spawn_blocking(move || judge(&args)).await?,
        BenchCommand::Soak(args) => soak::soak(args).await,
        BenchCommand::Readmodel(args) => readmodel::run(args).await,
        BenchCommand::Burst(args) => soak::burst(args).await,
        BenchCommand::Ratelimit(args) => ratelimit::run(args).await,
        BenchCommand::Push(args) => push::run(args).await,
    }
}

fn judge(args: &JudgeBenchArgs) -> anyhow::Result<()> {
    use camledger_processor::bench::{judge_throughput, Options};
    use camledger_processor::judge::decode_side;

    let mut judging = if args.no_classifier { None } else { Some(args.judge.load(1)?) };
    let mut classifier = judging.as_mut().and_then(|j| j.classifiers.pop());
    let side = decode_side(classifier.as_ref());
    if cfg!(debug_assertions) {
        println!("note: a debug build of camledger; measure with `cargo run --release -- bench judge`");
    }
    let options = Options { images: args.images, noise: args.noise.clone(), min_cpu_seconds: args.min_cpu_seconds };
    judge_throughput(&options, side, classifier.as_mut(), &mut std::io::stdout().lock())?;
    Ok(())
}

/// Distinct valid JPEGs of exactly `size` bytes: one noise JPEG, padded with COM segments
/// whose first bytes carry a counter.
pub struct JpegFactory {
    base: Vec<u8>,
    size: usize,
}

impl JpegFactory {
    pub fn new(size: usize) -> anyhow::Result<Self> {
        let mut side = 64u32;
        loop {
            let base = noise_jpeg(side)?;
            // Leave room for at least one COM segment with a counter.
            if base.len() + 64 > size || side >= 2048 {
                side /= 2;
                let base = noise_jpeg(side.max(8))?;
                if base.len() + 64 > size {
                    bail!("cannot make a JPEG as small as {size} bytes");
                }
                return Ok(Self { base, size });
            }
            if base.len() * 2 > size {
                return Ok(Self { base, size });
            }
            side *= 2;
        }
    }

    pub fn make(&self, n: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size);
        out.extend_from_slice(&self.base[..2]); // SOI
        let mut padding = self.size - self.base.len();
        let mut first = true;
        while padding > 0 {
            // A COM segment is 4 bytes of header plus up to 65533 bytes of payload; never
            // leave a remainder too small for another segment header.
            let segment = if padding <= 65537 {
                padding
            } else if padding - 65537 >= 4 {
                65537
            } else {
                65533
            };
            let payload = segment - 4;
            out.extend_from_slice(&[0xFF, 0xFE]);
            out.extend_from_slice(&((payload + 2) as u16).to_be_bytes());
            let mut body = vec![b' '; payload];
            if first {
                let tag = format!("camledger bench image {n}");
                body[..tag.len().min(payload)].copy_from_slice(&tag.as_bytes()[..tag.len().min(payload)]);
                first = false;
            }
            out.extend_from_slice(&body);
            padding -= segment;
        }
        out.extend_from_slice(&self.base[2..]);
        debug_assert_eq!(out.len(), self.size);
        out
    }
}

fn noise_jpeg(side: u32) -> anyhow::Result<Vec<u8>> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = (state >> 24) as u8;
        image::Rgb([n, (x as u8).wrapping_add(n / 4), (y as u8).wrapping_sub(n / 4)])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&img)?;
    Ok(out)
}

struct Server {
    addr: std::net::SocketAddr,
    tokens: Vec<String>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn add_cameras(data_dir: &Path, cameras: usize) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(data_dir)?;
    let registry = Registry::open(data_dir).await?;
    let mut tokens = Vec::new();
    for i in 0..cameras {
        tokens.push(registry.add_camera(&format!("bench-cam-{i}")).await?);
    }
    registry.close().await;
    Ok(tokens)
}

async fn start_server(data_dir: &Path, tokens: Vec<String>, projector_off: bool) -> anyhow::Result<Server> {
    // Signed and anchored like production: key and anchor store beside the data dir, not in
    // it (so no warnings in the output).
    let key = data_dir.with_extension("ledger_ed25519");
    if !key.exists() {
        camledger_eventstore::sign::SigningKey::generate(&key, "bench")?;
    }
    let mut config = ServeConfig::for_data_dir(data_dir);
    config.signing_key.signing_key = Some(key);
    config.anchor.anchor_url = Some(format!("sqlite://{}", data_dir.with_extension("anchors.sqlite").display()));
    config.projector_off = projector_off;
    let app = Application::build(config).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    Ok(Server { addr, tokens, stop, task })
}

async fn upload(client: &reqwest::Client, url: &str, token: &str, image: Vec<u8>) -> anyhow::Result<()> {
    let response = client.post(url).bearer_auth(token).header("content-type", "image/jpeg").body(image).send().await?;
    if response.status().as_u16() != 201 {
        bail!("upload answered {}: {}", response.status(), response.text().await.unwrap_or_default());
    }
    Ok(())
}

async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("camledger-bench-")
        .tempdir_in(args.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let factory = Arc::new(JpegFactory::new(args.image_bytes)?);
    println!(
        "camledger bench ingest: {} distinct JPEGs of {} bytes per run, {} cores",
        args.events,
        args.image_bytes,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let data_dir = temp.path().join("data");
    let max_clients = args.concurrency.iter().copied().max().unwrap_or(64);
    let tokens = add_cameras(&data_dir, max_clients.clamp(1, 256)).await?;
    let server = start_server(&data_dir, tokens.clone(), args.no_projector).await?;
    let url = format!("http://{}/v1/images", server.addr);
    let mut next_image = 0u64;
    let mut peak = 0f64;
    let mut rows = Vec::new();
    for &clients in &args.concurrency {
        let (rate, elapsed) =
            closed_loop(&url, &server.tokens, &factory, &mut next_image, args.events, clients).await?;
        peak = peak.max(rate);
        rows.push((clients, rate, elapsed));
    }

    // The reference: the same commits through git fast-import, with camledger stopped (its
    // background pack consolidation must not compete with the reference).
    let _ = server.stop.send(());
    server.task.await??;
    let ledger = Ledger::open(&data_dir, LedgerConfig::default())?;
    let (fi_rate, fi_elapsed, fi_events) = fast_import_reference(&ledger, temp.path(), args.events)?;

    // Open-loop latency at half the peak rate, on the same (now larger) ledger.
    let server = start_server(&data_dir, tokens, args.no_projector).await?;
    let url = format!("http://{}/v1/images", server.addr);
    let target = peak / 2.0;
    let latencies =
        open_loop(&url, &server.tokens, &factory, &mut next_image, target, Duration::from_secs(args.latency_secs))
            .await?;

    let _ = server.stop.send(());
    server.task.await??;

    println!();
    println!("{:<44} {:>12} {:>10} {:>12}", "run", "events/s", "seconds", "vs fast-import");
    for (clients, rate, elapsed) in &rows {
        println!(
            "{:<44} {:>12.0} {:>10.2} {:>11.2}x",
            format!("camledger HTTP, durable, {clients} clients"),
            rate,
            elapsed.as_secs_f64(),
            rate / fi_rate
        );
    }
    println!(
        "{:<44} {:>12.0} {:>10.2} {:>11.2}x",
        format!("git fast-import --depth=0, {fi_events} commits"),
        fi_rate,
        fi_elapsed.as_secs_f64(),
        1.0
    );
    let ratio = peak / fi_rate;
    println!();
    println!("peak ratio camledger / fast-import: {ratio:.2} (target >= 1.0)");
    match latencies {
        Some((sent, p50, p99, achieved)) => println!(
            "open loop at {target:.0} events/s (half the peak) for {}s: {sent} requests, achieved {achieved:.0}/s, p50 {:.1} ms, p99 {:.1} ms (target p99 < 50 ms)",
            args.latency_secs,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
        None => println!("open loop: no requests completed"),
    }
    if args.keep_data {
        let kept = temp.keep();
        println!("data dir kept: {}", kept.join("data").display());
    }
    Ok(())
}

async fn closed_loop(
    url: &str,
    tokens: &[String],
    factory: &Arc<JpegFactory>,
    next_image: &mut u64,
    events: usize,
    clients: usize,
) -> anyhow::Result<(f64, Duration)> {
    let first = *next_image;
    *next_image += events as u64;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(first));
    let end = first + events as u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
        let (url, token, factory, counter) =
            (url.to_owned(), tokens[c % tokens.len()].clone(), Arc::clone(factory), Arc::clone(&counter));
        tasks.spawn(async move {
            loop {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= end {
                    return anyhow::Ok(());
                }
                upload(&client, &url, &token, factory.make(n)).await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let elapsed = started.elapsed();
    Ok((events as f64 / elapsed.as_secs_f64(), elapsed))
}

/// Sends requests on a fixed schedule at `rate` per second for `duration`; returns
/// (requests, p50, p99, achieved rate) with latency measured from the scheduled time.
async fn open_loop(
    url: &str,
    tokens: &[String],
    factory: &Arc<JpegFactory>,
    next_image: &mut u64,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Option<(usize, Duration, Duration, f64)>> {
    if rate <= 0.0 {
        return Ok(None);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(512).build()?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * duration.as_secs_f64()).ceil() as u64;
    let images: Vec<Vec<u8>> = (0..total).map(|i| factory.make(*next_image + i)).collect();
    *next_image += total;
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, image) in images.into_iter().enumerate() {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let (client, url, token) = (client.clone(), url.to_owned(), tokens[i % tokens.len()].clone());
        tasks.spawn(async move {
            upload(&client, &url, &token, image).await?;
            anyhow::Ok(scheduled.elapsed())
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.push(result??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1];
    Ok(Some((latencies.len(), pick(0.50), pick(0.99), latencies.len() as f64 / elapsed.as_secs_f64())))
}

/// Writes the first `events` events of `ledger` (same image bytes, same event.json, same
/// chain) with `git fast-import` into a fresh repository; returns (events/s, time, events).
fn fast_import_reference(ledger: &Ledger, work: &Path, events: usize) -> anyhow::Result<(f64, Duration, usize)> {
    let mut stream = Vec::new();
    let mut count = 0usize;
    for (i, event) in ledger.events_from(1).take(events).enumerate() {
        let event = event?;
        let (record, image) = ledger.image(event.record.seq)?;
        let json = record.to_canonical_json();
        let mark = i + 1;
        writeln!(stream, "commit refs/heads/events")?;
        writeln!(stream, "mark :{mark}")?;
        writeln!(stream, "author {} <{}@camera.camledger> 1700000000 +0000", record.camera, record.camera)?;
        writeln!(stream, "committer camledger <bench> 1700000000 +0000")?;
        let message = format!(
            "event {}\n\nSeq: {}\nCamera: {}\nSha256: {}\n",
            record.seq, record.seq, record.camera, record.sha256
        );
        writeln!(stream, "data {}", message.len())?;
        stream.extend_from_slice(message.as_bytes());
        if mark > 1 {
            writeln!(stream, "from :{}", mark - 1)?;
        }
        writeln!(stream, "M 100644 inline event.json")?;
        writeln!(stream, "data {}", json.len())?;
        stream.extend_from_slice(&json);
        writeln!(stream)?;
        writeln!(stream, "M 100644 inline {}", record.image)?;
        writeln!(stream, "data {}", image.len())?;
        stream.extend_from_slice(&image);
        writeln!(stream)?;
        count += 1;
    }
    let repo = work.join("fast-import.git");
    let status =
        Command::new("git").args(["init", "--quiet", "--bare"]).arg(&repo).status().context("running git init")?;
    if !status.success() {
        bail!("git init failed");
    }
    let started = Instant::now();
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["-c", "core.compression=0", "-c", "pack.compression=0", "-c", "core.looseCompression=0"])
        .args(["fast-import", "--quiet", "--depth=0"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running git fast-import")?;
    child.stdin.take().expect("stdin is piped").write_all(&stream)?;
    let status = child.wait()?;
    let elapsed = started.elapsed();
    if !status.success() {
        bail!("git fast-import failed");
    }
    Ok((count as f64 / elapsed.as_secs_f64(), elapsed, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_images_are_distinct_valid_jpegs_of_the_requested_size() {
        let factory = JpegFactory::new(100 * 1024).unwrap();
        let a = factory.make(1);
        let b = factory.make(2);
        assert_eq!(a.len(), 100 * 1024);
        assert_ne!(a, b);
        image::load_from_memory_with_format(&a, image::ImageFormat::Jpeg).unwrap();
    }
}
