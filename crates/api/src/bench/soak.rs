//! `camledger bench soak`: the server as its own process under a steady open-loop load at a
//! fraction of its measured peak, for minutes; prints errors, latency and the server's resident
//! memory over time, so a leak or a slow drift shows as a rising column, not as an anecdote.
//!
//! The server is the real binary (`serve` of this same executable) on port 0 with a fresh
//! data dir; the load generator is this process. RSS is the server's own (`/proc/PID/status`),
//! so the client's buffers are not counted.
//!
//! The reference is the server itself: after a warm-up burst, the peak is measured first
//! (closed loop, about a minute, so that judging, the read model and pack merges run beside
//! ingest as in the soak), and the soak runs at `--fraction` of it. Targets: no errors, RSS flat after warm-up (the last sample
//! within 10% of the first sample after warm-up) and under 512 MiB.
//!
//! Each report line is followed by where the server's CPU went in that window, per thread
//! name (`/proc/PID/task/*/stat`): the event writer, the pack consolidator, the judging
//! threads, SQLite's workers (the read model) and tokio's threads (HTTP, admission, reads).
//! A part whose share grows with the ledger is what slows the service down.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::Semaphore;

use super::{add_cameras, closed_loop, upload, JpegFactory};

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Minutes of steady load.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Load as a fraction of the measured peak rate.
    #[arg(long, default_value_t = 0.8)]
    pub fraction: f64,
    /// Size of each JPEG in bytes.
    #[arg(long, default_value_t = 100 * 1024)]
    pub image_bytes: usize,
    /// Cameras (one token each) the load is spread over.
    #[arg(long, default_value_t = 64)]
    pub cameras: usize,
    /// Events uploaded by 64 clients to warm the server up before its peak is measured.
    #[arg(long, default_value_t = 20_000)]
    pub peak_events: usize,
    /// Seconds (about) of the closed loop that measures the peak, after the warm-up: long
    /// enough that judging, the read model and pack merges run beside ingest as they do in
    /// the soak, instead of lagging behind a burst.
    #[arg(long, default_value_t = 60)]
    pub peak_secs: u64,
    /// Seconds between report lines.
    #[arg(long, default_value_t = 30)]
    pub sample_secs: u64,
    /// Seconds of load before memory counts as warmed up.
    #[arg(long, default_value_t = 60)]
    pub warmup_secs: u64,
    /// Most requests in flight; a request that cannot be sent on schedule counts as an error.
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,
    /// Verdict workers of the server under test (0: ingest only; judging needs ONNX Runtime).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Where to put the data dir (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
}

/// The server under test, a child process killed when dropped.
struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    fn start(data_dir: &Path, workers: usize, exe: Option<&Path>) -> anyhow::Result<Self> {
        let exe = match exe {
            Some(exe) => exe.to_owned(),
            None => std::env::current_exe().context("finding the camledger executable")?,
        };
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
            .env("CAMLEDGER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting camledger serve")?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("piped stdout")?)
            .read_line(&mut line)
            .context("reading the server's listening line")?;
        let Some(base) = line.trim().rsplit(' ').next().filter(|u| u.starts_with("http://")) else {
            let _ = child.kill();
            bail!("the server did not start: {line:?}");
        };
        Ok(Self { base: base.to_owned(), child })
    }

    /// Resident memory in bytes, from `/proc/PID/status`.
    fn rss(&self) -> anyhow::Result<u64> {
        self.status("VmRSS:")
    }

    /// One memory figure of `/proc/PID/status` in bytes: `VmRSS:` (resident), `RssAnon:`
    /// (heap and other private memory), `RssFile:` (mapped files: the binary, pack indexes),
    /// `VmHWM:` (peak resident).
    fn status(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the server's /proc status")?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("no {field} line"))?;
        Ok(kib * 1024)
    }

    /// CPU time (clock ticks) the server's threads have used, summed per thread name. Threads
    /// that have exited (the judging threads live for one batch) are no longer listed; their
    /// time is the process's total (`/proc/PID/stat`) less the live threads', under
    /// `(exited threads)`.
    fn cpu_by_thread(&self) -> BTreeMap<String, u64> {
        let mut by_name = BTreeMap::new();
        let pid = self.child.id();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
            if let Some((name, ticks)) = thread_ticks(&stat) {
                *by_name.entry(name).or_default() += ticks;
            }
        }
        let total = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(thread_ticks);
        if let Some((_, total)) = total {
            let live: u64 = by_name.values().sum();
            by_name.insert("(exited threads)".to_owned(), total.saturating_sub(live));
        }
        by_name
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("could not signal the server");
        }
        let exit = self.child.wait()?;
        if !exit.success() {
            bail!("the server exited with {exit} after SIGTERM");
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Completed requests since the last report line: (latency in µs from the scheduled send
/// time, or `u64::MAX` for one dropped because too many were in flight; succeeded).
#[derive(Default)]
struct Window {
    done: std::sync::Mutex<Vec<(u64, bool)>>,
}

impl Window {
    fn record(&self, latency_us: u64, ok: bool) {
        self.done.lock().expect("not poisoned").push((latency_us, ok));
    }
}

pub(super) async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    if !(args.fraction > 0.0 && args.fraction <= 1.0) || args.minutes <= 0.0 {
        bail!("--fraction must be in (0, 1] and --minutes positive");
    }
    let temp = tempfile::Builder::new()
        .prefix("camledger-soak-")
        .tempdir_in(args.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let data_dir = temp.path().join("data");
    let tokens = add_cameras(&data_dir, args.cameras.clamp(1, 1024)).await?;
    let factory = Arc::new(JpegFactory::new(args.image_bytes)?);
    if cfg!(debug_assertions) {
        println!("note: a debug build of camledger; measure with `cargo run --release -- bench soak`");
    }
    let server = ServerProcess::start(&data_dir, args.workers, None)?;
    let url = format!("{}/v1/images", server.base);
    println!(
        "camledger bench soak: {} byte JPEGs, {} cameras, {} cores, server pid {}",
        args.image_bytes,
        tokens.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        server.child.id()
    );

    let mut next_image = 0u64;
    // A burst first: into empty queues, with judging, the read model and merges left behind,
    // it reads high (2,731 events/s where 2,185 was not sustained). The peak is the closed
    // loop that follows it, once the background work runs beside ingest.
    let (burst, _) = closed_loop(&url, &tokens, &factory, &mut next_image, args.peak_events, 64).await?;
    let sustained_events = ((burst * args.peak_secs as f64) as usize).max(1);
    let (peak, took) = closed_loop(&url, &tokens, &factory, &mut next_image, sustained_events, 64).await?;
    let rate = peak * args.fraction;
    println!(
        "burst (64 clients, {} events): {burst:.0} events/s; sustained peak (64 clients, {sustained_events} events, {:.0} s): {peak:.0} events/s; soak at {rate:.0} events/s",
        args.peak_events,
        took.as_secs_f64()
    );
    println!();
    println!(
        "{:>8} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "t (s)", "requests", "errors", "p50 ms", "p99 ms", "RSS MiB", "anon MiB", "file MiB"
    );

    let client = reqwest::Client::builder().pool_max_idle_per_host(args.max_in_flight).build()?;
    let in_flight = Arc::new(Semaphore::new(args.max_in_flight.max(1)));
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let sample = Duration::from_secs(args.sample_secs.max(1));
    let started = tokio::time::Instant::now();
    let window = Arc::new(Window::default());
    let mut next_report = started + sample;
    let (mut total, mut total_errors, mut all_latencies) = (0u64, 0u64, Vec::<u64>::new());
    let mut rss_series: Vec<(f64, u64)> = Vec::new();
    let mut i = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut cpu = Cpu { t: 0.0, ticks: server.cpu_by_thread() };
    loop {
        let scheduled = started + interval.mul_f64(i as f64);
        if scheduled.duration_since(started) >= duration {
            break;
        }
        if scheduled >= next_report {
            let line = report_line(&window, &server, started.elapsed().as_secs_f64(), &mut all_latencies, &mut cpu)?;
            total += line.requests;
            total_errors += line.errors;
            rss_series.push((line.t, line.rss));
            next_report += sample;
        }
        tokio::time::sleep_until(scheduled).await;
        i += 1;
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            window.record(u64::MAX, false);
            continue;
        };
        let image = factory.make(next_image);
        next_image += 1;
        let (client, url, token, window) =
            (client.clone(), url.clone(), tokens[(i as usize) % tokens.len()].clone(), Arc::clone(&window));
        tasks.spawn(async move {
            let ok = upload(&client, &url, &token, image).await.is_ok();
            window.record(scheduled.elapsed().as_micros() as u64, ok);
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let line = report_line(&window, &server, elapsed, &mut all_latencies, &mut cpu)?;
    total += line.requests;
    total_errors += line.errors;
    rss_series.push((line.t, line.rss));
    server.stop()?;

    all_latencies.sort_unstable();
    let p99 = percentile(&all_latencies, 0.99);
    let warm: Vec<&(f64, u64)> = rss_series.iter().filter(|(t, _)| *t >= args.warmup_secs as f64).collect();
    let max_rss = rss_series.iter().map(|(_, r)| *r).max().unwrap_or(0);
    println!();
    println!(
        "{total} requests in {elapsed:.0} s at {rate:.0}/s ({:.0}% of peak): {total_errors} errors (target 0), p99 {} (all requests)",
        args.fraction * 100.0,
        ms(p99)
    );
    match (warm.first(), warm.last()) {
        (Some(first), Some(last)) => {
            let growth = last.1 as f64 / first.1.max(1) as f64;
            println!(
                "RSS after warm-up: {:.0} MiB at {:.0} s -> {:.0} MiB at {:.0} s ({growth:.2}x; target flat, <= 1.10x); max {:.0} MiB (target < 512 MiB)",
                mib(first.1),
                first.0,
                mib(last.1),
                last.0,
                mib(max_rss)
            );
        }
        _ => println!("RSS: run longer than --warmup-secs to judge flatness; max {:.0} MiB", mib(max_rss)),
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BurstArgs {
    /// Uploads sent at once.
    #[arg(long, default_value_t = 64)]
    pub uploads: usize,
    /// Size of each JPEG in bytes.
    #[arg(long, default_value_t = 20 << 20)]
    pub image_bytes: usize,
    /// Seconds to watch the server idle after the burst.
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// The `camledger` executable to run as the server (default: this one), e.g. another
    /// build to compare allocators.
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// Where to put the data dir (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
}

/// `camledger bench burst`: one burst of large concurrent uploads against a server process,
/// then idle: how far its RSS rises (budget, copies) and how much of it the allocator gives
/// back afterwards. The server inherits the environment (e.g. `MALLOC_*` variables, or
/// `CAMLEDGER_MAX_INFLIGHT_BYTES`).
pub(super) async fn burst(args: BurstArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("camledger-burst-")
        .tempdir_in(args.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let data_dir = temp.path().join("data");
    let tokens = add_cameras(&data_dir, 1).await?;
    // Distinct 64 KiB JPEGs padded with zero bytes after the image (padding cameras add,
    // which admission allows; more comment bytes than 64 KiB it does not).
    let factory = JpegFactory::new(64 << 10)?;
    let server = ServerProcess::start(&data_dir, 0, args.server_bin.as_deref())?;
    let url = format!("{}/v1/images", server.base);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss()?;
    println!(
        "camledger bench burst: {} uploads of {} bytes at once; server pid {}, RSS before {:.0} MiB",
        args.uploads,
        args.image_bytes,
        server.child.id(),
        mib(before)
    );
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.uploads).build()?;
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.uploads {
        let mut image = factory.make(n as u64);
        image.resize(args.image_bytes.max(image.len()), 0);
        let (client, url, token) = (client.clone(), url.clone(), tokens[0].clone());
        tasks.spawn(async move { upload(&client, &url, &token, image).await });
    }
    let (mut ok, mut failed) = (0usize, 0usize);
    while let Some(result) = tasks.join_next().await {
        match result? {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    println!("first failure: {e:#}");
                }
            }
        }
    }
    println!(
        "{ok} stored, {failed} failed in {:.1} s; peak RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        mib(server.status("VmHWM:")?)
    );
    println!("{:>8} {:>10} {:>10} {:>10}", "idle s", "RSS MiB", "anon MiB", "file MiB");
    let idle = std::time::Instant::now();
    let mut next = 0u64;
    loop {
        let at = idle.elapsed().as_secs();
        if at >= next || at >= args.idle_secs {
            println!(
                "{at:>8} {:>10.0} {:>10.0} {:>10.0}",
                mib(server.rss()?),
                mib(server.status("RssAnon:")?),
                mib(server.status("RssFile:")?)
            );
            next = if next == 0 { 1 } else { next * 2 };
        }
        if at >= args.idle_secs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop()
}

/// A thread's name and its user + system clock ticks from one `/proc/PID/task/TID/stat`
/// line: `tid (name) state ...` with utime and stime the 14th and 15th fields. The name may
/// hold spaces and parentheses, so it runs to the last `)`. Numbered threads of one pool
/// (`sqlx-sqlite-wor`, truncated by the kernel to 15 bytes) count together.
fn thread_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is the state (3rd field), so utime (14th) is fields[11].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name.to_owned(), utime + stime))
}

/// Per thread name, the share of one core used since `before` (ticks are 1/100 s on Linux).
fn cpu_line(before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>, secs: f64) -> String {
    let mut shares: Vec<(u64, &str)> =
        now.iter().map(|(name, t)| (t.saturating_sub(before.get(name).copied().unwrap_or(0)), name.as_str())).collect();
    shares.sort_unstable_by(|a, b| b.cmp(a));
    let parts: Vec<String> = shares
        .iter()
        .filter(|(ticks, _)| *ticks > 0)
        .map(|(ticks, name)| format!("{name} {:.0}%", *ticks as f64 / secs.max(0.001)))
        .collect();
    format!("{:>8} cpu: {}", "", parts.join(", "))
}

/// The server's CPU ticks per thread name at the last report line (at `t` seconds).
#[derive(Default)]
struct Cpu {
    t: f64,
    ticks: BTreeMap<String, u64>,
}

struct Line {
    t: f64,
    requests: u64,
    errors: u64,
    rss: u64,
}

fn report_line(
    window: &Window,
    server: &ServerProcess,
    t: f64,
    all: &mut Vec<u64>,
    cpu: &mut Cpu,
) -> anyhow::Result<Line> {
    let done = std::mem::take(&mut *window.done.lock().expect("not poisoned"));
    let errors = done.iter().filter(|(_, ok)| !ok).count() as u64;
    let mut latencies: Vec<u64> = done.into_iter().map(|(latency, _)| latency).collect();
    latencies.sort_unstable();
    let rss = server.rss()?;
    println!(
        "{t:>8.0} {:>10} {errors:>8} {:>10} {:>10} {:>10.0} {:>10.0} {:>10.0}",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        mib(rss),
        mib(server.status("RssAnon:")?),
        mib(server.status("RssFile:")?)
    );
    let now = server.cpu_by_thread();
    println!("{}", cpu_line(&cpu.ticks, &now, t - cpu.t));
    *cpu = Cpu { t, ticks: now };
    all.extend_from_slice(&latencies);
    Ok(Line { t, requests: latencies.len() as u64, errors, rss })
}

fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u64>) -> String {
    match us {
        None => "-".to_owned(),
        Some(u64::MAX) => "dropped".to_owned(),
        Some(us) => format!("{:.1}", us as f64 / 1000.0),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[], 0.99), None);
    }

    #[test]
    fn thread_cpu_is_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (a (b) c-3) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 9 0";
        assert_eq!(thread_ticks(stat), Some(("a (b) c".to_owned(), 150)));
        let before = BTreeMap::from([("w".to_owned(), 100)]);
        let now = BTreeMap::from([("w".to_owned(), 250), ("x".to_owned(), 0)]);
        assert_eq!(cpu_line(&before, &now, 3.0).trim_start(), "cpu: w 50%");
    }
}
