//! Typed configuration, loaded once from flags and `CAMLEDGER_*` environment variables.
//! Libraries receive values from here; they never read the environment themselves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a data dir lives; shared by every subcommand that touches one.
#[derive(Clone, Debug, clap::Args)]
pub struct DataDirArg {
    /// Directory holding the ledger (`ledger.git`), its indexes and the camera registry.
    #[arg(long, env = "CAMLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Everything `camledger serve` needs.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub data: DataDirArg,

    /// Address to listen on; port 0 picks a free port (the chosen address is printed).
    #[arg(long, env = "CAMLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address that serves only `GET /metrics` (Prometheus), without a token: for
    /// a scraper on a trusted network (bind it to loopback or a private interface). Without
    /// it, `GET /metrics` on --listen needs an auditor or admin token.
    #[arg(long, env = "CAMLEDGER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Largest accepted request body in bytes (a multipart request counts as a whole).
    #[arg(long, env = "CAMLEDGER_MAX_BODY_BYTES", default_value_t = 25 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest accepted image in pixels (width x height, read from the header before decoding).
    #[arg(long, env = "CAMLEDGER_MAX_PIXELS", default_value_t = 50_000_000)]
    pub max_pixels: u64,

    /// Most open client connections; more wait in the accept backlog.
    #[arg(long, env = "CAMLEDGER_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Seconds a request (including its body) may take before it answers 408.
    #[arg(long, env = "CAMLEDGER_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Seconds a connection may stay silent (nothing read or written) before it is closed.
    #[arg(long, env = "CAMLEDGER_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Seconds a client has to send a request's complete headers, however slowly it trickles
    /// them (slowloris); an idle keep-alive connection is closed after the same time.
    #[arg(long, env = "CAMLEDGER_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Most request-body bytes buffered at once, over all requests; an upload waits for
    /// room (503 with Retry-After when none frees up before its timeout). At least
    /// --max-body-bytes.
    #[arg(long, env = "CAMLEDGER_MAX_INFLIGHT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_inflight_bytes: usize,

    /// Most parts in one multipart upload; more answer 413 and nothing is written.
    #[arg(long, env = "CAMLEDGER_MAX_PARTS", default_value_t = 100)]
    pub max_parts: usize,

    /// Events per camera per second (`10/s`, `600/m`, `3600/h`), a token bucket per camera:
    /// over it, 429 with Retry-After and nothing written. Unlimited when not given;
    /// `camledger cameras limit ID RATE` sets one camera's own limit.
    #[arg(long, env = "CAMLEDGER_RATE_LIMIT")]
    pub rate_limit: Option<crate::ratelimit::Rate>,

    /// Quarantine a camera when N of its last M verdicts are spam (`20/25`): its uploads then
    /// answer 429 `quarantined` until `camledger cameras release ID`. Off when not given.
    #[arg(long, env = "CAMLEDGER_QUARANTINE_AFTER")]
    pub quarantine_after: Option<crate::quarantine::Policy>,

    /// Events a camera may send at once under --rate-limit (default: twice the per-second rate).
    #[arg(long, env = "CAMLEDGER_BURST", requires = "rate_limit")]
    pub burst: Option<u32>,

    /// Most events written and made durable as one batch (group commit).
    #[arg(long, env = "CAMLEDGER_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,

    /// The ledger's name: its commits' committer and its checkpoints' origin. Fixed once the
    /// ledger has events (default: the name its commits carry, for a new ledger the host name).
    #[arg(long, env = "CAMLEDGER_NODE_NAME")]
    pub node_name: Option<String>,

    /// Seconds to wait for in-flight requests at shutdown before giving up on them.
    #[arg(long, env = "CAMLEDGER_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Snapshot database for scheduled snapshots: mysql://… or sqlite://… (default:
    /// sqlite://<data-dir>/backups.sqlite when --snapshot-interval is set).
    #[arg(long, env = "CAMLEDGER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// How long an `Idempotency-Key` is remembered (e.g. 7d, 12h); a retry inside it gets the
    /// first answer again, after it the key is forgotten (the trailer in git stays).
    #[arg(long, env = "CAMLEDGER_IDEMPOTENCY_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub idempotency_retention: Duration,

    /// Take a snapshot this often (e.g. 1h, 15m, 90s); off when not set.
    #[arg(long, env = "CAMLEDGER_SNAPSHOT_INTERVAL", value_parser = parse_duration)]
    pub snapshot_interval: Option<Duration>,

    #[command(flatten)]
    pub backup_key: BackupKeyArg,

    #[command(flatten)]
    pub signing_key: SigningKeyArg,

    #[command(flatten)]
    pub anchor: AnchorArg,

    #[command(flatten)]
    pub read_model: ReadModelArg,

    /// Write a signed checkpoint into the anchor store this often when a head moved (also
    /// with every scheduled snapshot and at shutdown), e.g. 60s, 5m.
    #[arg(long, env = "CAMLEDGER_CHECKPOINT_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,

    /// In-process judging threads writing verdicts (0 turns judging off; default: the number
    /// of cores). With 0 no ONNX Runtime library is needed.
    #[arg(long, env = "CAMLEDGER_WORKERS")]
    pub workers: Option<usize>,

    #[command(flatten)]
    pub judge: JudgeArgs,

    /// Most `git upload-pack` processes serving clones and fetches at once; more answer 503
    /// with Retry-After.
    #[arg(long, env = "CAMLEDGER_GIT_MAX_CONCURRENT", default_value_t = 4)]
    pub git_max_concurrent: usize,

    /// Largest git fetch request body in bytes (wants and haves, after gunzip); more answer 413.
    #[arg(long, env = "CAMLEDGER_GIT_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub git_max_request_bytes: usize,

    /// Seconds one clone or fetch may take in all before its `git upload-pack` is killed.
    #[arg(long, env = "CAMLEDGER_GIT_TIMEOUT_SECS", default_value_t = 3600)]
    pub git_timeout_secs: u64,

    #[command(flatten)]
    pub push: PushLimitArgs,

    /// Benchmarks only (`bench ingest --no-projector`): serve without the read model projector.
    #[arg(skip)]
    pub projector_off: bool,

    /// Fault injection for durability tests: every fsync after the N-th fails.
    #[arg(long, env = "CAMLEDGER_FAIL_FSYNC_AFTER", hide = true)]
    pub fail_fsync_after: Option<u64>,
}

/// `--node-name` of the commands that write checkpoints outside `serve`: the origin of a
/// ledger's checkpoints is `camledger/<node-name>`, so it must be the one `serve` uses.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeNameArg {
    /// The ledger's node name, as given to `serve` (default: the host name, as `serve` has it).
    #[arg(long, env = "CAMLEDGER_NODE_NAME")]
    pub node_name: Option<String>,
}

impl NodeNameArg {
    /// The ledger's node name: see [`resolve_node_name`].
    pub fn node_name(&self, data_dir: &std::path::Path) -> anyhow::Result<String> {
        resolve_node_name(data_dir, self.node_name.as_deref())
    }
}

/// The node name a command writes with. A ledger that has events keeps the name its commits
/// carry (`verify` requires one committer node, and checkpoints name it as their origin), so
/// that a restore on another host does not silently rename it: `--node-name` may repeat it
/// but not change it. A new ledger takes `--node-name`, else the host name.
pub fn resolve_node_name(data_dir: &std::path::Path, given: Option<&str>) -> anyhow::Result<String> {
    let recorded = if data_dir.join("ledger.git").exists() {
        let ledger = camledger_eventstore::Ledger::open(data_dir, camledger_eventstore::LedgerConfig::default())?;
        ledger.recorded_node_name()?
    } else {
        None
    };
    match (given, recorded) {
        (Some(given), Some(recorded)) if given != recorded => anyhow::bail!(
            "--node-name {given} differs from this ledger's node name {recorded} (its commits carry it; \
             a ledger keeps one name for life): drop --node-name or give {recorded}"
        ),
        (_, Some(recorded)) => Ok(recorded),
        (Some(given), None) => Ok(given.to_owned()),
        (None, None) => Ok(hostname()),
    }
}

/// The host name (`/etc/hostname`), or `localhost`: the default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The number of cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl ServeConfig {
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(cores)
    }

    /// Defaults for a data dir, as `camledger serve --data-dir DIR --listen 127.0.0.1:0` would have.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data: DataDirArg { data_dir: data_dir.into() },
            listen: "127.0.0.1:0".parse().expect("a literal socket address"),
            metrics_listen: None,
            max_body_bytes: 25 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_connections: 4096,
            request_timeout_secs: 30,
            idle_timeout_secs: 60,
            header_timeout_secs: 10,
            max_inflight_bytes: 256 * 1024 * 1024,
            max_parts: 100,
            rate_limit: None,
            burst: None,
            quarantine_after: None,
            max_batch: 256,
            node_name: None,
            shutdown_grace_secs: 30,
            database_url: None,
            snapshot_interval: None,
            idempotency_retention: Duration::from_secs(7 * 86400),
            backup_key: Default::default(),
            signing_key: Default::default(),
            anchor: Default::default(),
            read_model: Default::default(),
            checkpoint_interval: Duration::from_secs(60),
            workers: Some(0),
            judge: JudgeArgs {
                ort_dylib: None,
                model: None,
                near_duplicate_scope: NearDuplicateScope::All,
                near_duplicate_window_secs: None,
                near_duplicate_distance: camledger_processor::verdict::Thresholds::default().near_duplicate_distance,
                perceptual_hash: PerceptualHash::default(),
                spam_threshold: None,
            },
            git_max_concurrent: 4,
            git_max_request_bytes: 16 * 1024 * 1024,
            git_timeout_secs: 3600,
            push: PushLimitArgs::default(),
            projector_off: false,
            fail_fsync_after: None,
        }
    }

    /// The default per-camera limit (`--rate-limit`, `--burst`).
    pub fn rate_limit(&self) -> Option<crate::ratelimit::RateLimit> {
        self.rate_limit.map(|rate| crate::ratelimit::RateLimit::new(rate, self.burst))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    /// The ledger's node name: see [`resolve_node_name`].
    pub fn node_name(&self) -> anyhow::Result<String> {
        resolve_node_name(&self.data.data_dir, self.node_name.as_deref())
    }
}

/// A duration as an operator writes it: `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    let seconds = n.checked_mul(scale).ok_or_else(|| format!("{text:?} is too long"))?;
    if seconds == 0 {
        return Err("the duration must be at least one second".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// `--signing-key` of every command that writes commits.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SigningKeyArg {
    /// OpenSSH ed25519 private key (unencrypted, mode 0600) that signs every commit the
    /// ledger writes. Default: <data-dir>/keys/ledger_ed25519, created on the first start;
    /// in production keep the key outside the data dir (an insider who can write the data
    /// dir must not be able to sign). Create one with `ssh-keygen -t ed25519 -N '' -f PATH`.
    #[arg(long, env = "CAMLEDGER_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
}

/// `--anchor-url` of the commands that write or read checkpoints.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AnchorArg {
    /// Anchor store for signed checkpoints: mysql://user:password@host:port/db (production:
    /// on another machine than the data dir) or sqlite://PATH. Default:
    /// sqlite://<data-dir>/anchors.sqlite, which guards against nothing an insider with the
    /// data dir cannot undo.
    #[arg(long, env = "CAMLEDGER_ANCHOR_URL", hide_env_values = true)]
    pub anchor_url: Option<String>,
}

/// `--read-model-url` of `serve` and of the commands that read the read model.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ReadModelArg {
    /// Read model database (events and verdicts projected from git for search, stats and
    /// export): mysql://user:password@host:port/db (production) or sqlite://PATH. Default:
    /// sqlite://<data-dir>/readmodel.sqlite. Derived data: `camledger reindex` rebuilds it.
    #[arg(long, env = "CAMLEDGER_READ_MODEL_URL", hide_env_values = true)]
    pub read_model_url: Option<String>,
}

/// The filters of `camledger events search` (those of `GET /v1/events`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SearchArgs {
    /// Only this camera's events.
    #[arg(long, env = "CAMLEDGER_CAMERA")]
    pub camera: Option<String>,
    /// Received at or after this time (RFC 3339).
    #[arg(long, env = "CAMLEDGER_SINCE")]
    pub since: Option<String>,
    /// Received at or before this time (RFC 3339).
    #[arg(long, env = "CAMLEDGER_UNTIL")]
    pub until: Option<String>,
    /// true: judged spam; false: judged not spam (pending events match neither).
    #[arg(long, env = "CAMLEDGER_SPAM")]
    pub spam: Option<String>,
    /// Only events whose verdict gives this reason (duplicate, near_duplicate, blank, classifier, ...).
    #[arg(long, env = "CAMLEDGER_REASON")]
    pub reason: Option<String>,
    /// Only this media type (image/jpeg, image/png, image/webp).
    #[arg(long, env = "CAMLEDGER_MEDIA_TYPE")]
    pub media_type: Option<String>,
    /// Only this camera model (EXIF Make + Model, as `stats` lists them).
    #[arg(long, env = "CAMLEDGER_CAMERA_MODEL")]
    pub camera_model: Option<String>,
    /// Events after this seq (the previous page's next_after).
    #[arg(long, env = "CAMLEDGER_AFTER")]
    pub after: Option<String>,
    /// Most events (1-1000, default 100).
    #[arg(long, env = "CAMLEDGER_LIMIT")]
    pub limit: Option<String>,
}

impl SearchArgs {
    /// The flags as query parameters, for the one parser both the CLI and HTTP use.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        [
            ("camera", &self.camera),
            ("since", &self.since),
            ("until", &self.until),
            ("spam", &self.spam),
            ("reason", &self.reason),
            ("media_type", &self.media_type),
            ("camera_model", &self.camera_model),
            ("after", &self.after),
            ("limit", &self.limit),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
        .collect()
    }
}

/// The snapshot database, for commands that read it (`snapshots …`, `restore`).
#[derive(Clone, Debug, clap::Args)]
pub struct DatabaseArg {
    /// Snapshot database: mysql://user:password@host:port/db (production) or sqlite://PATH.
    /// Default: sqlite://<data-dir>/backups.sqlite, where `snapshot` writes by default.
    #[arg(long, env = "CAMLEDGER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The data dir whose embedded snapshot database is used when --database-url is not
    /// given (for `restore`: the source, not the target).
    #[command(flatten)]
    pub data: DataDirArg,
}

/// The key that seals snapshots, for commands that write them (`snapshot`, `serve`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct BackupKeyArg {
    /// File holding the key that seals every snapshot (HMAC-SHA256, 64 hex digits); it never
    /// goes into the snapshot database. Default: <data-dir>/keys/backup.key, created (mode
    /// 0600) by the first snapshot. Keep a copy outside the data dir (production: keep it
    /// there only): restoring on another machine needs it.
    #[arg(long, env = "CAMLEDGER_BACKUP_KEY")]
    pub backup_key: Option<PathBuf>,
}

/// The key, for commands that only read snapshots (`snapshots verify`, `restore`).
#[derive(Clone, Debug, clap::Args)]
pub struct ReadKeyArg {
    /// File holding the key the snapshots were sealed with (the `--backup-key` of
    /// `snapshot`/`serve`, by default <data-dir>/keys/backup.key). Nothing from the snapshot
    /// database is trusted without it.
    #[arg(long, env = "CAMLEDGER_BACKUP_KEY")]
    pub backup_key: PathBuf,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum NearDuplicateScope {
    /// An earlier image from any camera counts.
    #[default]
    All,
    /// Only earlier images from the same camera count.
    Camera,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum PerceptualHash {
    /// 64-bit pHash (low frequencies of a 32×32 luma DCT): the measured default.
    #[default]
    Phash,
    /// 64-bit dHash (horizontal gradients on a 9×8 grid).
    Dhash,
}

/// How images are judged.
#[derive(Clone, Debug, clap::Args)]
pub struct JudgeArgs {
    /// ONNX Runtime shared library (from `scripts/fetch-onnxruntime`). Default: the first
    /// found next to the executable, in vendor/onnxruntime/ of the executable's ancestors, or
    /// on the system library path.
    #[arg(long, env = "CAMLEDGER_ORT_DYLIB")]
    pub ort_dylib: Option<PathBuf>,
    /// Model manifest (JSON) of the ONNX classifier. Default: the model embedded in the
    /// binary (crates/processor/models/default.manifest.json).
    #[arg(long, env = "CAMLEDGER_MODEL")]
    pub model: Option<PathBuf>,
    /// Which earlier images count for near-duplicates.
    #[arg(long, env = "CAMLEDGER_NEAR_DUPLICATE_SCOPE", value_enum, default_value_t = NearDuplicateScope::All)]
    pub near_duplicate_scope: NearDuplicateScope,
    /// Only images received at most this many seconds earlier count as near-duplicate originals.
    #[arg(long, env = "CAMLEDGER_NEAR_DUPLICATE_WINDOW_SECS")]
    pub near_duplicate_window_secs: Option<i64>,
    /// Largest Hamming distance (of 64 bits) between perceptual hashes that makes a near-duplicate.
    #[arg(
        long,
        env = "CAMLEDGER_NEAR_DUPLICATE_DISTANCE",
        default_value_t = camledger_processor::verdict::Thresholds::default().near_duplicate_distance,
        value_parser = clap::value_parser!(u32).range(0..=24)
    )]
    pub near_duplicate_distance: u32,
    /// Perceptual hash used for near-duplicates (recorded in each verdict).
    #[arg(long, env = "CAMLEDGER_PERCEPTUAL_HASH", value_enum, default_value_t = PerceptualHash::Phash)]
    pub perceptual_hash: PerceptualHash,
    /// Classifier score at or above which an image is spam, in (0, 1], kept to 6 decimals
    /// (default: the model manifest's). Recorded in every verdict; `replay` judges a recorded
    /// verdict with the threshold it records and uses this one for unjudged events only.
    #[arg(long, env = "CAMLEDGER_SPAM_THRESHOLD", value_parser = parse_threshold)]
    pub spam_threshold: Option<f64>,
}

/// A spam threshold: a number in (0, 1], rounded to millionths (the resolution `verdict.json`
/// records it at, so a replay uses exactly the threshold the worker used).
pub fn parse_threshold(text: &str) -> Result<f64, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number"))?;
    let rounded = camledger_processor::verdict::recordable(value);
    if !(value > 0.0 && value <= 1.0) || rounded <= 0.0 {
        return Err(format!("{text}: a spam threshold must be in (0, 1], at least 0.000001"));
    }
    Ok(rounded)
}

/// A target false-positive rate: a number in [0, 1).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?}: a rate must be a number in [0, 1), e.g. 0.01 for 1%")),
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The arguments of the registry's `list` commands (cameras, tokens, links, webhooks): which
/// data dir, and how to print.
#[derive(Clone, Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub data: DataDirArg,
    #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Limits on `git push` of image commits (`POST /git/ledger.git/git-receive-pack`).
#[derive(Clone, Debug, clap::Args)]
pub struct PushLimitArgs {
    /// Largest pack one `git push` may send, in bytes (after gunzip); a larger one is refused
    /// whole ("unpack push_too_large") and nothing of it is written.
    #[arg(long, env = "CAMLEDGER_MAX_PUSH_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_push_bytes: usize,

    /// Most image commits one push may carry over all its refs; a ref past the limit is
    /// refused. A pack may hold at most 4 objects per commit (commit, tree, image,
    /// capture.json).
    #[arg(long, env = "CAMLEDGER_MAX_PUSH_COMMITS", default_value_t = 100)]
    pub max_push_commits: usize,

    /// Most pushes received at once; more answer 503 with Retry-After.
    #[arg(long, env = "CAMLEDGER_PUSH_MAX_CONCURRENT", default_value_t = 64)]
    pub push_max_concurrent: usize,

    /// Seconds one push may take in all (receiving its pack and appending its commits); the
    /// commits not attempted by then are refused ("timeout") and may be pushed again.
    #[arg(long, env = "CAMLEDGER_PUSH_TIMEOUT_SECS", default_value_t = 300)]
    pub push_timeout_secs: u64,
}

impl Default for PushLimitArgs {
    fn default() -> Self {
        Self {
            max_push_bytes: 64 * 1024 * 1024,
            max_push_commits: 100,
            push_max_concurrent: 64,
            push_timeout_secs: 300,
        }
    }
}
