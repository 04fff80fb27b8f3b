//! The `camledger` command line: one subcommand per job, each a thin call into a library.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::app::Application;
pub use crate::config::OutputFormat;
use crate::config::{DataDirArg, ListArgs, ReadModelArg, SearchArgs, ServeConfig};
use crate::datadir::{open_ledger, prepare_ledger_dir, require_ledger_dir};
pub use crate::error_chain::error_message;
use crate::push::PushArgs;
use crate::readmodel::{Filters, ReadModel, StatsQuery};
use crate::registry::{Registry, Role};
use crate::shutdown::shutdown_signal;
use crate::telemetry::LogFormat;

/// camledger: every camera image becomes a verifiable event in a git ledger.
#[derive(Debug, Parser)]
#[command(name = "camledger", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "CAMLEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (ingest and reads) on a data dir.
    Serve(Box<ServeConfig>),
    /// Manage cameras (upload tokens).
    Cameras {
        #[command(subcommand)]
        action: CamerasCommand,
    },
    /// Manage reader tokens (auditors, admins).
    Tokens {
        #[command(subcommand)]
        action: TokensCommand,
    },
    /// Manage upload links (a camera's uploads without its token, for a while).
    Links {
        #[command(subcommand)]
        action: crate::links::LinksCommand,
    },
    /// Manage webhooks: signed POSTs of new events and verdicts, at least once, in seq order.
    Webhooks {
        #[command(subcommand)]
        action: crate::webhooks::WebhooksCommand,
    },
    /// Upload image files as a camera, retrying safely.
    Push(PushArgs),
    /// Print the events of a ledger, oldest first.
    Log {
        #[command(flatten)]
        data: DataDirArg,
        /// First sequence number to print.
        #[arg(long, env = "CAMLEDGER_FROM", default_value_t = 1)]
        from: u64,
        /// Print at most this many events.
        #[arg(long, env = "CAMLEDGER_LIMIT")]
        limit: Option<usize>,
        /// Output format.
        #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Snapshot the data dir into the snapshot database (incremental after the first).
    Snapshot {
        #[command(flatten)]
        data: DataDirArg,
        /// Snapshot database (default: sqlite://<data-dir>/backups.sqlite).
        #[arg(long, env = "CAMLEDGER_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[command(flatten)]
        key: crate::snapshots::BackupKeyArg,
        /// With the ledger's signing key at hand, a checkpoint goes into the anchor store too.
        #[command(flatten)]
        anchor: crate::anchors::AnchorArg,
        #[command(flatten)]
        signing_key: crate::keys::SigningKeyArg,
        #[command(flatten)]
        node: crate::config::NodeNameArg,
    },
    /// List, verify or prune stored snapshots.
    Snapshots {
        #[command(subcommand)]
        action: crate::snapshots::SnapshotsCommand,
    },
    /// Rebuild a data dir from stored snapshots and prove it identical.
    Restore {
        #[command(flatten)]
        db: crate::snapshots::DatabaseArg,
        #[command(flatten)]
        key: crate::snapshots::ReadKeyArg,
        /// New data dir to create (must not exist or be empty).
        #[arg(long, env = "CAMLEDGER_RESTORE_TO")]
        to: std::path::PathBuf,
        /// Snapshot to restore (default: the latest).
        #[arg(long, env = "CAMLEDGER_RESTORE_SNAPSHOT")]
        snapshot: Option<i64>,
    },
    /// Judge events standalone (no HTTP), writing verdicts, until SIGINT/SIGTERM.
    Worker {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        key: crate::keys::SigningKeyArg,
        #[command(flatten)]
        judge: crate::processing::JudgeArgs,
        /// Judging threads (one ONNX session each); default: the number of cores.
        #[arg(long, env = "CAMLEDGER_WORKER_THREADS")]
        threads: Option<usize>,
    },
    /// Judge a folder of labelled images (csv: file,label with ham or spam) as the service
    /// would; print false positives, recall, score distribution and the threshold that meets
    /// --target-fpr. Exit 2 on a malformed labels file.
    Evaluate(crate::evaluate::EvaluateArgs),
    /// Re-judge a range of events without writing and report what changed.
    Replay {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        judge: crate::processing::JudgeArgs,
        /// First event to re-judge.
        #[arg(long, env = "CAMLEDGER_FROM", default_value_t = 1)]
        from: u64,
        /// Last event to re-judge (default: the head).
        #[arg(long, env = "CAMLEDGER_REPLAY_TO")]
        to: Option<u64>,
        #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Exit non-zero when any verdict differs.
        #[arg(long, env = "CAMLEDGER_STRICT")]
        strict: bool,
    },
    /// Verify everything an auditor relies on: objects, commits, events, verdicts, notes,
    /// cameras and (with --allowed-signers) every signature; exit 1 at the first failure.
    Verify(crate::verify::VerifyArgs),
    /// Write a signed checkpoint of the ledger into the anchor store now.
    Checkpoint {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        anchor: crate::anchors::AnchorArg,
        #[command(flatten)]
        key: crate::keys::SigningKeyArg,
        #[command(flatten)]
        node: crate::config::NodeNameArg,
    },
    /// List anchored checkpoints, or verify the ledger against them.
    Checkpoints {
        #[command(subcommand)]
        action: crate::anchors::CheckpointsCommand,
    },
    /// Show the ledger's signing key (the allowed-signers line auditors verify with).
    Keys {
        #[command(subcommand)]
        action: crate::keys::KeysCommand,
    },
    /// Rebuild the read model (what search, stats and export read) from git, with progress.
    Reindex {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        read_model: ReadModelArg,
    },
    /// Search events in the read model (the filters of GET /v1/events), caught up from git first.
    Events {
        #[command(subcommand)]
        action: EventsCommand,
    },
    /// Upload and spam statistics as JSON (GET /v1/stats), caught up from git first.
    Stats {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        read_model: ReadModelArg,
        /// Only this camera.
        #[arg(long, env = "CAMLEDGER_CAMERA")]
        camera: Option<String>,
        /// Received at or after this time (RFC 3339).
        #[arg(long, env = "CAMLEDGER_SINCE")]
        since: Option<String>,
        /// Received at or before this time (RFC 3339); uploads_per_day ends on its day.
        #[arg(long, env = "CAMLEDGER_UNTIL")]
        until: Option<String>,
    },
    /// Every event as one JSON line (commit id, event.json, verdict or null, image path).
    Export {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        read_model: ReadModelArg,
        /// Events after this seq.
        #[arg(long, env = "CAMLEDGER_AFTER", default_value_t = 0)]
        after: u64,
        /// Last event to export (default: the head).
        #[arg(long, env = "CAMLEDGER_TO")]
        to: Option<u64>,
        /// Write the lines here instead of stdout.
        #[arg(long, env = "CAMLEDGER_OUT")]
        out: Option<std::path::PathBuf>,
    },
    /// Benchmarks that print ratios against a reference run on the same machine.
    Bench {
        #[command(subcommand)]
        which: crate::bench::BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// One page of events matching every filter, oldest first (`next_after` continues).
    Search {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        read_model: ReadModelArg,
        #[command(flatten)]
        filters: SearchArgs,
        #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum CamerasCommand {
    /// Register a camera and print its token (shown once).
    Add {
        /// Camera id: 1-64 characters of A-Z a-z 0-9 . _ -
        id: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List cameras.
    List(ListArgs),
    /// Revoke a camera's token; a running server refuses it from its next request on.
    Revoke {
        id: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Give a camera a new token (printed once); the old one stops working at the same
    /// moment. Also brings a revoked camera back into service under the same id.
    Rotate {
        id: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Set a camera's own rate limit (`10/s`, `600/m`, `3600/h`), in force from its next
    /// request instead of `serve --rate-limit`; `default` puts it back on the server's.
    Limit {
        id: String,
        /// A rate like 10/s, or `default`.
        rate: String,
        /// Events it may send at once (default: twice the per-second rate).
        #[arg(long, env = "CAMLEDGER_BURST")]
        burst: Option<u32>,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Quarantine a camera by hand: its uploads answer 429 `quarantined` (a running server
    /// within a second) until `cameras release`. Recorded on refs/heads/cameras.
    Quarantine {
        id: String,
        #[command(flatten)]
        action: crate::quarantine::ActionArgs,
    },
    /// End a camera's quarantine (a running server accepts it again within a second).
    /// Recorded on refs/heads/cameras.
    Release {
        id: String,
        #[command(flatten)]
        action: crate::quarantine::ActionArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a reader token and print it (shown once).
    Add {
        /// Name of the holder: 1-64 characters of A-Z a-z 0-9 . _ -
        name: String,
        /// auditor or admin
        #[arg(long, env = "CAMLEDGER_ROLE")]
        role: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List every token's holder, kind (camera, auditor, admin) and dates; never a token.
    List(ListArgs),
    /// Revoke the token of NAME; a running server refuses it from its next request on.
    Revoke {
        name: String,
        /// camera, auditor or admin; needed only when NAME has active tokens of several kinds.
        #[arg(long, env = "CAMLEDGER_KIND")]
        kind: Option<String>,
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// Exit status of a command line that parsed but failed (clap exits 2 on a usage error
/// itself, before anything runs): 0 success, 1 failure, 2 usage.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error found after parsing (e.g. a malformed `evaluate --labels` file).
pub const EXIT_USAGE: u8 = 2;

/// The exit status for a failed command: [`EXIT_USAGE`] when its input was unusable
/// ([`crate::evaluate::UsageError`]), else [`EXIT_FAILURE`].
pub fn exit_status(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<crate::evaluate::UsageError>().is_some() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}

/// Runs one parsed command line to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Cameras { action } => cameras(action).await,
        Command::Tokens { action } => tokens(action).await,
        Command::Links { action } => crate::links::run(action).await,
        Command::Webhooks { action } => crate::webhooks::command(action).await,
        Command::Push(args) => crate::push::run(args).await,
        Command::Log { data, from, limit, format } => log(data, from, limit, format).await,
        Command::Verify(args) => crate::verify::run(args).await,
        Command::Evaluate(args) => crate::evaluate::run(args).await,
        Command::Worker { data, key, judge, threads } => {
            crate::processing::worker_command(data, key, judge, threads.unwrap_or_else(crate::config::cores)).await
        }
        Command::Keys { action } => crate::keys::run(action),
        Command::Replay { data, judge, from, to, format, strict } => {
            crate::processing::replay_command(data, judge, from, to, format, strict).await
        }
        Command::Snapshot { data, database_url, key, anchor, signing_key, node } => {
            crate::snapshots::snapshot(data.clone(), database_url, key).await?;
            if let Some(stored) = crate::anchors::checkpoint_after_snapshot(&data, &anchor, &signing_key, &node).await?
            {
                println!("anchored checkpoint {} at events seq {}", stored.id, stored.checkpoint.events_seq);
            }
            Ok(())
        }
        Command::Checkpoint { data, anchor, key, node } => {
            crate::anchors::checkpoint_command(data, anchor, key, node).await
        }
        Command::Checkpoints { action } => crate::anchors::checkpoints_command(action).await,
        Command::Snapshots { action } => crate::snapshots::snapshots(action).await,
        Command::Restore { db, key, to, snapshot } => crate::snapshots::restore(db, key, to, snapshot).await,
        Command::Reindex { data, read_model } => reindex(data, read_model).await,
        Command::Events { action: EventsCommand::Search { data, read_model, filters, format } } => {
            search(data, read_model, filters, format).await
        }
        Command::Stats { data, read_model, camera, since, until } => {
            let params: Vec<(&str, String)> = [("camera", camera), ("since", since), ("until", until)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            let query = StatsQuery::from_params(params.iter().map(|(k, v)| (*k, v.as_str())))?;
            let (_, model) = caught_up_read_model(&data, &read_model).await?;
            let stats = model.stats(&query, &crate::routes::stats::today()).await?;
            model.close().await;
            println!("{}", serde_json::to_string_pretty(&stats)?);
            Ok(())
        }
        Command::Export { data, read_model, after, to, out } => export(data, read_model, after, to, out).await,
        Command::Bench { which } => crate::bench::run(which).await,
    }
}

/// The read model of a data dir, checked against git and caught up with it (a progress bar
/// on a terminal while it projects).
async fn caught_up_read_model(
    data: &DataDirArg,
    read_model: &ReadModelArg,
) -> anyhow::Result<(camledger_eventstore::Ledger, std::sync::Arc<ReadModel>)> {
    let ledger = open_ledger(data)?;
    let model = ReadModel::open_for(&data.data_dir, read_model.read_model_url.as_deref()).await?;
    model.check_against_git(&ledger).await?;
    let bar = crate::progress::Bar::new("projecting events");
    model.catch_up(&ledger, |done, total| bar.update(done, total)).await.context("catching the read model up")?;
    bar.finish();
    Ok((ledger, model))
}

async fn reindex(data: DataDirArg, read_model: ReadModelArg) -> anyhow::Result<()> {
    let ledger = open_ledger(&data)?;
    let model = ReadModel::open_for(&data.data_dir, read_model.read_model_url.as_deref()).await?;
    let started = std::time::Instant::now();
    model.reset().await.context("emptying the read model")?;
    let bar = crate::progress::Bar::new("reindexing");
    let at = model.catch_up(&ledger, |done, total| bar.update(done, total)).await.context("reindexing")?;
    bar.finish();
    model.close().await;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "reindexed {} events and {} verdicts in {seconds:.1} s ({:.0} events/s)",
        at.events_seq,
        at.verdicts_seq,
        at.events_seq as f64 / seconds.max(1e-6)
    );
    Ok(())
}

async fn search(
    data: DataDirArg,
    read_model: ReadModelArg,
    filters: SearchArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let params = filters.params();
    let filters = Filters::from_params(params.iter().map(|(k, v)| (*k, v.as_str())))?;
    let (_, model) = caught_up_read_model(&data, &read_model).await?;
    let page = model.search(&filters).await?;
    model.close().await;
    let events = page.rows.iter().map(crate::routes::events::entry_json).collect::<Result<Vec<_>, _>>()?;
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            writeln!(out, "{}", serde_json::json!({ "events": events, "next_after": page.next_after }))?;
        }
        OutputFormat::Text => {
            for entry in &events {
                let (e, v) = (&entry["event"], &entry["verdict"]);
                let verdict = match v["spam"].as_bool() {
                    None => "pending".to_owned(),
                    Some(true) => {
                        let reasons: Vec<&str> =
                            v["reasons"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
                        format!("spam:{}", reasons.join(","))
                    }
                    Some(false) => "ok".to_owned(),
                };
                let id = entry["id"].as_str().unwrap_or_default();
                writeln!(
                    out,
                    "{:>8} {} {} {} {} verdict={verdict}",
                    e["seq"],
                    &id[..12.min(id.len())],
                    e["received_at"].as_str().unwrap_or_default(),
                    e["camera"].as_str().unwrap_or_default(),
                    e["media_type"].as_str().unwrap_or_default(),
                )?;
            }
            if let Some(next) = page.next_after {
                writeln!(out, "next page: --after {next}")?;
            }
        }
    }
    Ok(())
}

async fn export(
    data: DataDirArg,
    read_model: ReadModelArg,
    after: u64,
    to: Option<u64>,
    out: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    let (_, model) = caught_up_read_model(&data, &read_model).await?;
    let through = to.unwrap_or(u64::MAX).min(model.projected().events_seq);
    let mut sink: Box<dyn Write + Send> = match &out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut pages = std::pin::pin!(crate::routes::export::export_stream(std::sync::Arc::clone(&model), after, through));
    // One line per event: the bar counts lines against the seqs in the range.
    let (bar, total) = (crate::progress::Bar::new("exporting events"), through.saturating_sub(after));
    let mut done = 0;
    while let Some(chunk) = pages.next().await {
        let chunk = chunk.context("reading the read model")?;
        sink.write_all(&chunk).context("writing the export")?;
        done += memchr::memchr_iter(b'\n', &chunk).count() as u64;
        bar.update(done, total);
    }
    bar.finish();
    sink.flush().context("writing the export")?;
    model.close().await;
    Ok(())
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    // Handlers first: a SIGTERM sent as soon as the line below is read must stop the server
    // gracefully, not kill it with the default action.
    let shutdown = shutdown_signal();
    let addr = app.local_addr();
    tracing::info!(%addr, "listening");
    // Scripts and tests read this line to find the port when listening on port 0. The
    // metrics line follows in the same write, so a reader that stops after the first line
    // cannot make the second one fail.
    let mut lines = format!("camledger listening on http://{addr}\n");
    if let Some(metrics) = app.metrics_addr() {
        tracing::info!(%metrics, "serving metrics");
        lines.push_str(&format!("camledger metrics on http://{metrics}/metrics\n"));
    }
    std::io::stdout().write_all(lines.as_bytes()).context("writing to stdout")?;
    std::io::stdout().flush().context("writing to stdout")?;
    app.run(shutdown).await
}

/// Opens the registry of a data dir that already holds a ledger.
async fn open_registry(data: &DataDirArg) -> anyhow::Result<Registry> {
    require_ledger_dir(data)?;
    Registry::open(&data.data_dir).await.context("opening the camera registry")
}

/// Opens the registry, starting a new ledger when the data dir is missing or empty.
async fn create_registry(data: &DataDirArg) -> anyhow::Result<Registry> {
    prepare_ledger_dir(data)?;
    Registry::open(&data.data_dir).await.context("opening the camera registry")
}

fn data_of(action: &crate::quarantine::ActionArgs) -> DataDirArg {
    action.data.clone()
}

async fn cameras(action: CamerasCommand) -> anyhow::Result<()> {
    match action {
        CamerasCommand::Add { id, data } => {
            let registry = create_registry(&data).await?;
            let token = registry.add_camera(&id).await?;
            println!("added camera {id}");
            println!("token (shown once; configure it on the camera): {token}");
        }
        CamerasCommand::List(ListArgs { data, format }) => {
            let registry = open_registry(&data).await?;
            let cameras = registry.list_cameras().await?;
            let quarantined = crate::quarantine::quarantined_now(&data)?;
            match format {
                OutputFormat::Json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&crate::quarantine::with_quarantine(&cameras, &quarantined)?)?
                    )
                }
                OutputFormat::Text => {
                    for camera in cameras {
                        let state = match (&camera.revoked_at, quarantined.get(&camera.id)) {
                            (Some(at), _) => format!("revoked {at}"),
                            (None, Some(reason)) => format!("quarantined ({reason})"),
                            (None, None) => "active".to_owned(),
                        };
                        let limit = camera.rate_limit.map_or("default limit".to_owned(), |l| format!("limit {l}"));
                        println!("{}\tcreated {}\t{state}\t{limit}", camera.id, camera.created_at);
                    }
                }
            }
        }
        CamerasCommand::Revoke { id, data } => {
            let registry = open_registry(&data).await?;
            registry.revoke_camera(&id).await?;
            println!("revoked camera {id}");
        }
        CamerasCommand::Rotate { id, data } => {
            let registry = open_registry(&data).await?;
            let token = registry.rotate_camera(&id).await?;
            println!("rotated camera {id}: the old token no longer works");
            println!("token (shown once; configure it on the camera): {token}");
        }
        CamerasCommand::Limit { id, rate, burst, data } => {
            let limit = match rate.as_str() {
                "default" => {
                    if burst.is_some() {
                        return Err(crate::evaluate::UsageError("--burst needs a rate, not `default`".into()).into());
                    }
                    None
                }
                rate => {
                    Some(crate::ratelimit::RateLimit::new(rate.parse().map_err(crate::evaluate::UsageError)?, burst))
                }
            };
            let registry = open_registry(&data).await?;
            registry.set_camera_limit(&id, limit).await?;
            match limit {
                Some(l) => println!("camera {id}: limit {l}"),
                None => println!("camera {id}: back on the server's default limit"),
            }
        }
        CamerasCommand::Quarantine { id, action } => {
            let registry = open_registry(&data_of(&action)).await?;
            if !registry.list_cameras().await?.iter().any(|c| c.id == id) {
                return Err(crate::evaluate::UsageError(format!("no camera {id:?} in the registry")).into());
            }
            crate::quarantine::act(camledger_eventstore::CameraActionKind::Quarantine, &id, &action)?;
        }
        CamerasCommand::Release { id, action } => {
            crate::quarantine::act(camledger_eventstore::CameraActionKind::Release, &id, &action)?;
        }
    }
    Ok(())
}

async fn tokens(action: TokensCommand) -> anyhow::Result<()> {
    match action {
        TokensCommand::Add { name, role, data } => {
            let role: Role = role.parse()?;
            let registry = create_registry(&data).await?;
            let token = registry.add_reader(&name, role).await?;
            println!("added {} token {name}", role.as_str());
            println!("token (shown once): {token}");
        }
        TokensCommand::List(ListArgs { data, format }) => {
            let registry = open_registry(&data).await?;
            let tokens = registry.list_tokens().await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&tokens)?),
                OutputFormat::Text => {
                    for t in tokens {
                        let state = t.revoked_at.map_or("active".to_owned(), |at| format!("revoked {at}"));
                        let rotated = t.rotated_at.map_or(String::new(), |at| format!("\trotated {at}"));
                        println!("{}\t{}\tcreated {}{rotated}\t{state}", t.name, t.kind.as_str(), t.created_at);
                    }
                }
            }
        }
        TokensCommand::Revoke { name, kind, data } => {
            let kind: Option<Role> = kind.map(|k| k.parse()).transpose()?;
            let registry = open_registry(&data).await?;
            let role = registry.revoke(&name, kind).await?;
            println!("revoked {} token {name}", role.as_str());
        }
    }
    Ok(())
}

async fn log(data: DataDirArg, from: u64, limit: Option<usize>, format: OutputFormat) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let ledger = open_ledger(&data)?;
        let mut out = std::io::stdout().lock();
        let verdicts = ledger.verdicts()?;
        for event in ledger.events_from(from.max(1)).take(limit.unwrap_or(usize::MAX)) {
            let event = event?;
            let r = &event.record;
            let verdict = verdicts.verdict(r.seq)?;
            match format {
                OutputFormat::Json => {
                    let verdict = verdict.map_or(serde_json::Value::Null, |v| crate::routes::events::verdict_json(&v));
                    writeln!(out, "{}", serde_json::json!({ "id": event.id, "event": r, "verdict": verdict }))?;
                }
                OutputFormat::Text => {
                    let duplicate = r.duplicate_of.map_or(String::new(), |d| format!(" duplicate_of={d}"));
                    let verdict = match verdict {
                        None => "pending".to_owned(),
                        Some(v) if v.verdict.spam => {
                            format!("spam:{}{}", v.verdict.reasons.join(","), explain(&v.verdict))
                        }
                        Some(v) => format!("ok{}", explain(&v.verdict)),
                    };
                    writeln!(
                        out,
                        "{:>8} {} {} {} {} {}x{} {} verdict={verdict}{duplicate}",
                        r.seq,
                        &event.id[..12.min(event.id.len())],
                        r.received_at,
                        r.camera,
                        r.media_type,
                        r.width,
                        r.height,
                        &r.sha256[..16.min(r.sha256.len())],
                    )?;
                }
            }
        }
        anyhow::Ok(())
    })
    .await
    .context("the log task panicked")?
}

/// The scores behind a verdict, for `log --format text`: ` score=<reason>:<score>,…` for each
/// reason that has a score (an ok verdict: the classifier's), then ` top=<label>:<probability>`,
/// ` threshold=<spam threshold>` and ` scene=<distance>` where the verdict records them.
fn explain(v: &camledger_eventstore::Verdict) -> String {
    use camledger_processor::verdict::{CLASSIFIER, NEAR_DUPLICATE, SPAM_THRESHOLD};
    let score_of = |reason: &str| {
        let name = if reason == NEAR_DUPLICATE { "near_duplicate_distance" } else { reason };
        v.scores.get(name).map(|s| format!("{reason}:{}", number(*s)))
    };
    let shown: Vec<String> = if v.spam {
        v.reasons.iter().filter_map(|r| score_of(r)).collect()
    } else {
        score_of(CLASSIFIER).into_iter().collect()
    };
    let mut out = String::new();
    if !shown.is_empty() {
        out.push_str(&format!(" score={}", shown.join(",")));
    }
    if let Some((label, p)) = camledger_processor::judge::top_label(&v.scores) {
        out.push_str(&format!(" top={label}:{}", number(p)));
    }
    if let Some(t) = v.scores.get(SPAM_THRESHOLD) {
        out.push_str(&format!(" threshold={}", number(*t)));
    }
    if let Some(d) = v.scores.get(camledger_processor::scene::SCENE_DISTANCE) {
        out.push_str(&format!(" scene={}", number(*d)));
    }
    out
}

/// A score as recorded (millionths), without trailing zeros: `0.9`, `0.953125`, `12`.
fn number(value: f64) -> String {
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every command (benchmarks aside) can be set from the environment.
    #[test]
    fn every_flag_has_a_camledger_environment_variable() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || matches!(id, "help" | "version") {
                    continue;
                }
                match arg.get_env().and_then(|e| e.to_str()) {
                    Some(env) if env.starts_with("CAMLEDGER_") => {}
                    _ => missing.push(format!("{path} --{id}")),
                }
            }
            for sub in command.get_subcommands().filter(|s| s.get_name() != "bench" && s.get_name() != "help") {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&<Cli as clap::CommandFactory>::command(), "camledger", &mut missing);
        assert!(missing.is_empty(), "flags without CAMLEDGER_* variables: {missing:#?}");
    }
}
