//! `camledger bench readmodel`: search and stats latency on a read model holding
//! `--events` synthetic events (default 1,000,000), filled through the projector's own insert
//! path (`apply`, one transaction per batch, counters included), not over HTTP.
//!
//! Synthetic data: 100 cameras, 3 formats, 25 camera models (one per camera; a tenth of the
//! cameras without EXIF), 90 days,
//! every event judged, 10% spam with one of four reasons. Each query kind runs `--queries`
//! times with random parameters; p50 and p99 are printed with the target (p99 < 50 ms).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use camledger_eventstore::{EventRecord, Exif, Verdict};

use crate::readmodel::project::{apply_rows, camera_model, EventRow, VerdictRow};
use crate::readmodel::{Filters, ReadModel, StatsQuery};

#[derive(Debug, clap::Args)]
pub struct ReadModelBenchArgs {
    /// Synthetic events (each judged) in the read model.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Runs of each query kind.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// Read model to fill (default: a fresh SQLite file in a temporary directory): empty, or
    /// holding exactly --events synthetic events from an earlier run (reused, not refilled);
    /// mysql://… for MariaDB.
    #[arg(long)]
    pub read_model_url: Option<String>,
    /// Where the temporary directory goes (default: the system's).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
}

const CAMERAS: u64 = 100;
const MODELS: u64 = 25;
const DAYS: u64 = 90;
const FORMATS: [(&str, &str); 3] =
    [("image/jpeg", "image.jpg"), ("image/png", "image.png"), ("image/webp", "image.webp")];
const REASONS: [&str; 4] = ["duplicate", "near_duplicate", "blank", "classifier"];

/// A small deterministic generator (xorshift64*), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn day_of(index: u64) -> String {
    let start = time::macros::date!(2026 - 09 - 01);
    let day = start + time::Duration::days(index as i64);
    day.format(time::macros::format_description!("[year]-[month]-[day]")).expect("a date formats")
}

/// Event `seq` of `total`, spread evenly over [`DAYS`] days.
fn synthetic(seq: u64, total: u64, rng: &mut Rng) -> (EventRow, VerdictRow) {
    let camera_index = rng.below(CAMERAS);
    let camera = format!("cam-{camera_index:03}");
    let (media_type, image) = FORMATS[match rng.below(10) {
        0..=6 => 0,
        7..=8 => 1,
        _ => 2,
    }];
    // A camera has one model (a tenth have no EXIF): the counters hold a row per day, camera
    // and format, as they would in production.
    let model = camera_index % (MODELS * 10 / 9);
    let exif = (model < MODELS).then(|| Exif {
        make: Some(format!("Make{}", model % 5)),
        model: Some(format!("Model {model}")),
        date_time_original: None,
    });
    let day_index = (seq - 1) * DAYS / total.max(1);
    let second = (seq * 86_400 * DAYS / total.max(1)) % 86_400;
    let received_at = format!(
        "{}T{:02}:{:02}:{:02}.{:06}Z",
        day_of(day_index),
        second / 3600,
        second / 60 % 60,
        second % 60,
        seq % 1_000_000
    );
    let sha256 = format!("{:016x}{:016x}{:016x}{:016x}", rng.next(), rng.next(), rng.next(), seq);
    let record = EventRecord {
        format_version: camledger_eventstore::FORMAT_VERSION,
        seq,
        camera,
        received_at,
        captured_at: None,
        sha256,
        size: 100_000 + rng.below(50_000),
        media_type: media_type.to_owned(),
        image: image.to_owned(),
        width: 1920,
        height: 1080,
        exif,
        duplicate_of: None,
    };
    let commit_id = format!("{:016x}{:016x}{:08x}", rng.next(), rng.next(), seq as u32);
    let spam = rng.below(10) == 0;
    let reasons = if spam { vec![REASONS[rng.below(4) as usize].to_owned()] } else { Vec::new() };
    let verdict = Verdict {
        event_seq: seq,
        event_id: commit_id.clone(),
        spam,
        reasons: reasons.clone(),
        scores: BTreeMap::from([("classifier".to_owned(), rng.below(1000) as f64 / 1000.0)]),
        near_duplicate_of: None,
        model_sha256: "0".repeat(64),
        processor_version: "bench".to_owned(),
        perceptual_hash: Some(format!("phash:{:016x}", rng.next())),
    };
    let event = EventRow {
        seq,
        commit_id,
        camera: record.camera.clone(),
        received_at: record.received_at.clone(),
        day: record.received_at[..10].to_owned(),
        media_type: record.media_type.clone(),
        camera_model: camera_model(record.exif.as_ref()),
        event_json: String::from_utf8_lossy(&record.to_canonical_json()).into_owned(),
    };
    let verdict = VerdictRow {
        seq,
        id: format!("{:016x}{:016x}{:08x}", rng.next(), rng.next(), seq as u32),
        spam,
        reasons,
        verdict_json: String::from_utf8_lossy(&verdict.to_canonical_json()).into_owned(),
    };
    (event, verdict)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub(super) async fn run(args: ReadModelBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("camledger-bench-readmodel-")
        .tempdir_in(args.work_dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let url = args.read_model_url.clone().unwrap_or_else(|| crate::readmodel::default_url(temp.path()));
    let model = ReadModel::open(&url).await?;
    let existing = model.projected().events_seq;
    anyhow::ensure!(
        existing == 0 || existing == args.events,
        "the read model at {url} holds {existing} events, neither none nor --events"
    );
    println!("camledger bench readmodel: {} synthetic events into {}", args.events, model_kind(&url));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    if existing == args.events {
        println!("reusing the {existing} events already there");
    } else {
        fill(&model, args.events, &mut rng).await?;
    }
    let total = args.events.max(1);
    let window = |rng: &mut Rng| {
        let day = rng.below(DAYS);
        (format!("{}T00:00:00Z", day_of(day)), format!("{}T23:59:59Z", day_of(day)))
    };
    type Make = Box<dyn Fn(&mut Rng) -> Vec<(&'static str, String)>>;
    let searches: Vec<(&str, Make)> = vec![
        ("search: no filter, random after", Box::new(move |r| vec![("after", r.below(total).to_string())])),
        ("search: camera", Box::new(|r| vec![("camera", format!("cam-{:03}", r.below(CAMERAS)))])),
        (
            "search: spam=true, random after",
            Box::new(move |r| vec![("spam", "true".into()), ("after", r.below(total).to_string())]),
        ),
        ("search: reason", Box::new(|r| vec![("reason", REASONS[r.below(4) as usize].into())])),
        ("search: media_type=image/webp", Box::new(|_| vec![("media_type", "image/webp".into())])),
        (
            "search: camera_model",
            Box::new(|r| {
                let m = r.below(MODELS);
                vec![("camera_model", format!("Make{} Model {m}", m % 5))]
            }),
        ),
        (
            "search: one day (since+until)",
            Box::new(move |r| {
                let (since, until) = window(r);
                vec![("since", since), ("until", until)]
            }),
        ),
        (
            "search: camera + spam=true",
            Box::new(|r| vec![("camera", format!("cam-{:03}", r.below(CAMERAS))), ("spam", "true".into())]),
        ),
        (
            "search: camera + media_type + reason",
            Box::new(|r| {
                vec![
                    ("camera", format!("cam-{:03}", r.below(CAMERAS))),
                    ("media_type", "image/png".into()),
                    ("reason", REASONS[r.below(4) as usize].into()),
                ]
            }),
        ),
    ];
    println!();
    println!("{:<44} {:>10} {:>10} {:>8}", "query (limit 100)", "p50 ms", "p99 ms", "rows");
    let mut worst = Duration::ZERO;
    for (name, make) in &searches {
        let mut times = Vec::with_capacity(args.queries);
        let mut rows = 0;
        for _ in 0..args.queries {
            let params = make(&mut rng);
            let filters = Filters::from_params(params.iter().map(|(k, v)| (*k, v.as_str())))?;
            let t = Instant::now();
            let page = model.search(&filters).await?;
            // What a listing does with each row: parse both stored JSON documents.
            for row in &page.rows {
                let _ = EventRecord::from_json(row.event_json.as_bytes())?;
                if let Some(v) = &row.verdict_json {
                    let _ = Verdict::from_json(v.as_bytes())?;
                }
            }
            times.push(t.elapsed());
            rows += page.rows.len();
        }
        times.sort();
        worst = worst.max(percentile(&times, 0.99));
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>8}",
            name,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            rows / args.queries.max(1)
        );
    }
    type MakeStats = Box<dyn Fn(&mut Rng) -> StatsQuery>;
    let stats_kinds: Vec<(&str, MakeStats)> = vec![
        ("stats: everything", Box::new(|_| StatsQuery::default())),
        (
            "stats: one camera",
            Box::new(|r| StatsQuery { camera: Some(format!("cam-{:03}", r.below(CAMERAS))), ..StatsQuery::default() }),
        ),
        (
            "stats: one day (since+until)",
            Box::new(move |r| {
                let (since, until) = window(r);
                StatsQuery {
                    since: Some(format!("{since:.10}T00:00:00.000000Z")),
                    until: Some(format!("{until:.10}T23:59:59.000000Z")),
                    camera: None,
                }
            }),
        ),
    ];
    let today = day_of(DAYS - 1);
    for (name, make) in &stats_kinds {
        let mut times = Vec::with_capacity(args.queries);
        for _ in 0..args.queries {
            let query = make(&mut rng);
            let t = Instant::now();
            let stats = model.stats(&query, &today).await?;
            times.push(t.elapsed());
            anyhow::ensure!(stats.uploads_per_day.len() == 30, "30 days of uploads");
        }
        times.sort();
        worst = worst.max(percentile(&times, 0.99));
        println!(
            "{:<44} {:>10.2} {:>10.2} {:>8}",
            name,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            "-"
        );
    }
    println!();
    println!("worst p99 {:.1} ms (target < 50 ms)", worst.as_secs_f64() * 1e3);
    model.close().await;
    Ok(())
}

/// Fills an empty read model with `events` synthetic judged events, batch by batch.
async fn fill(model: &ReadModel, events: u64, rng: &mut Rng) -> anyhow::Result<()> {
    let started = Instant::now();
    let bar = crate::progress::Bar::new("filling");
    let mut seq = 0;
    while seq < events {
        let n = (events - seq).min(crate::readmodel::project::BATCH as u64);
        let (rows, verdicts): (Vec<_>, Vec<_>) = (seq + 1..=seq + n).map(|s| synthetic(s, events, rng)).unzip();
        apply_rows(model, rows, verdicts).await.context("filling the read model")?;
        seq += n;
        bar.update(seq, events);
    }
    bar.finish();
    let fill = started.elapsed().as_secs_f64();
    println!("filled in {fill:.1} s ({:.0} events/s through the projector's insert path)", events as f64 / fill);
    Ok(())
}

fn model_kind(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "SQLite"
    } else {
        "MariaDB"
    }
}
