//! Signed checkpoints in the anchor store (`camledger_backup::anchor`): the commands
//! (`checkpoint`, `checkpoints list|verify`), the `--anchor-url` flag, and [`Anchoring`], which
//! `serve` uses to write one every `--checkpoint-interval` when a head moved, one with every
//! scheduled snapshot and one at shutdown.
//!
//! Trust: checkpoints are worth something only when the anchor store is out of reach of
//! whoever can write the data dir; the default (`sqlite://<data-dir>/anchors.sqlite`) is for
//! trying camledger out and says so at start-up.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use camledger_backup::{AnchorError, AnchorStore, StoredCheckpoint};
use camledger_eventstore::checkpoint;
use camledger_eventstore::sign::{AllowedSigner, AllowedSigners, SigningKey};
use camledger_eventstore::Ledger;
use tokio_util::sync::CancellationToken;

pub use crate::config::AnchorArg;
use crate::config::{DataDirArg, OutputFormat};

impl AnchorArg {
    /// The URL given, or the data dir's embedded default.
    pub fn url(&self, data_dir: &Path) -> String {
        self.anchor_url.clone().unwrap_or_else(|| default_anchor_url(data_dir))
    }

    /// Whether the anchor store is the default inside the data dir.
    pub fn is_default(&self) -> bool {
        self.anchor_url.is_none()
    }
}

/// `sqlite://<data-dir>/anchors.sqlite`.
pub fn default_anchor_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("anchors.sqlite").display())
}

/// Opens the anchor store (a MariaDB that does not answer fails within 2 s).
pub async fn connect(url: &str) -> anyhow::Result<AnchorStore> {
    AnchorStore::connect(url)
        .await
        .with_context(|| format!("opening the anchor store {}", crate::snapshots::redact(url)))
}

/// The keys a checkpoint of this ledger may be signed with: the data dir's key history
/// (earlier keys sign earlier checkpoints) and `key` itself.
fn signers_with(data_dir: &Path, key: &SigningKey) -> anyhow::Result<AllowedSigners> {
    let mut signers = crate::keys::read_history(data_dir)?;
    if !signers.signers.iter().any(|s| s.key.key_data() == key.public_key().key_data()) {
        signers.signers.push(AllowedSigner {
            principal: crate::keys::PRINCIPAL.to_owned(),
            key: key.public_key().clone(),
            valid_after: None,
            valid_before: None,
        });
    }
    Ok(signers)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// What `/healthz` shows about checkpoints (to auditors and admins).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AnchorStatus {
    /// The newest checkpoint this process wrote or found.
    pub last_checkpoint: Option<CheckpointJson>,
    /// The error of the last attempt, when it failed (a refused checkpoint stays here until
    /// one is anchored again: the ledger no longer extends the anchored history).
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub failures_in_a_row: u32,
}

/// A checkpoint as the API and `checkpoints list --format json` show it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CheckpointJson {
    pub id: i64,
    pub origin: String,
    pub events_seq: u64,
    pub events_head: String,
    pub verdicts_seq: u64,
    pub verdicts_head: String,
    pub time: String,
    /// The signed note (C2SP signed-note text), what auditors check.
    pub note: String,
}

impl From<&StoredCheckpoint> for CheckpointJson {
    fn from(stored: &StoredCheckpoint) -> Self {
        let c = &stored.checkpoint;
        CheckpointJson {
            id: stored.id,
            origin: c.origin.clone(),
            events_seq: c.events_seq,
            events_head: c.events_head.clone(),
            verdicts_seq: c.verdicts_seq,
            verdicts_head: c.verdicts_head.clone(),
            time: c.time_text(),
            note: stored.note.clone(),
        }
    }
}

/// Writes this ledger's checkpoints into the anchor store.
pub struct Anchoring {
    store: AnchorStore,
    ledger: Ledger,
    key: Arc<SigningKey>,
    /// The newest checkpoint anchored (by anyone) that this process knows of.
    last: tokio::sync::Mutex<Option<StoredCheckpoint>>,
    status: Mutex<AnchorStatus>,
}

impl std::fmt::Debug for Anchoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchoring").field("ledger", &self.ledger).finish_non_exhaustive()
    }
}

impl Anchoring {
    /// Opens the store and reads (and checks) the latest checkpoint of this ledger's origin.
    /// A ledger that no longer satisfies it is logged at error level, not refused: serving
    /// goes on, and every checkpoint attempt reports the refusal until an operator looks.
    pub async fn open(url: &str, ledger: Ledger, key: Arc<SigningKey>) -> anyhow::Result<Anchoring> {
        let store = connect(url).await?;
        let anchoring = Anchoring {
            store,
            ledger,
            key,
            last: tokio::sync::Mutex::new(None),
            status: Mutex::new(AnchorStatus::default()),
        };
        let latest = anchoring.latest().await.context("reading the latest anchored checkpoint")?;
        if let Some(latest) = &latest {
            let (ledger, checkpoint) = (anchoring.ledger.clone(), latest.checkpoint.clone());
            let satisfied = tokio::task::spawn_blocking(move || ledger.satisfies(&checkpoint))
                .await
                .context("the check panicked")?;
            if let Err(e) = satisfied {
                let message = format!(
                    "the ledger does not match its latest anchored checkpoint (row {}, events seq {}, time {}): {e}",
                    latest.id,
                    latest.checkpoint.events_seq,
                    latest.checkpoint.time_text()
                );
                tracing::error!(error = %message, "the ledger was rolled back or rewritten; run `camledger checkpoints verify`");
                anchoring.record(Err(message));
            }
            anchoring.status().last_checkpoint = Some(latest.into());
        }
        *anchoring.last.lock().await = latest;
        Ok(anchoring)
    }

    fn status(&self) -> std::sync::MutexGuard<'_, AnchorStatus> {
        self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, outcome: Result<&StoredCheckpoint, String>) {
        let mut status = self.status();
        match outcome {
            Ok(stored) => {
                status.last_checkpoint = Some(stored.into());
                status.last_error = None;
                status.failures_in_a_row = 0;
            }
            Err(message) => {
                status.last_error = Some(message);
                status.failures_in_a_row += 1;
            }
        }
    }

    /// A copy of the status for `/healthz`.
    pub fn status_snapshot(&self) -> AnchorStatus {
        self.status().clone()
    }

    fn origin(&self) -> String {
        checkpoint::origin_for(&self.ledger.config().node_name)
    }

    fn signers(&self) -> anyhow::Result<AllowedSigners> {
        signers_with(self.ledger.data_dir(), &self.key)
    }

    /// The latest anchored checkpoint of this ledger, checked against the key history.
    pub async fn latest(&self) -> anyhow::Result<Option<StoredCheckpoint>> {
        let signers = self.signers()?;
        Ok(self.store.latest(&self.origin(), Some(&signers)).await?)
    }

    /// Writes a checkpoint of the ledger as it is now. Unless `force`, nothing is written
    /// when both heads are where the last anchored checkpoint has them (`Ok(None)`).
    #[tracing::instrument(skip(self))]
    pub async fn checkpoint(&self, force: bool) -> anyhow::Result<Option<StoredCheckpoint>> {
        let mut last = self.last.lock().await;
        let ledger = self.ledger.clone();
        let current = tokio::task::spawn_blocking(move || ledger.current_checkpoint(now()))
            .await
            .context("reading the heads panicked")?
            .context("reading the ledger's heads")?;
        let unchanged = last.as_ref().is_some_and(|l| {
            let c = &l.checkpoint;
            (c.events_seq, &c.events_head, c.verdicts_seq, &c.verdicts_head)
                == (current.events_seq, &current.events_head, current.verdicts_seq, &current.verdicts_head)
        });
        // An empty ledger has nothing to anchor until its first event or verdict.
        let empty = last.is_none() && current.events_seq == 0 && current.verdicts_seq == 0;
        if (unchanged || empty) && !force {
            return Ok(None);
        }
        let note = current.sign(&self.key);
        let outcome =
            async { Ok::<_, anyhow::Error>(self.store.append(&note, &self.ledger, &self.signers()?).await?) }.await;
        match outcome {
            Ok(stored) => {
                self.record(Ok(&stored));
                *last = Some(stored.clone());
                Ok(Some(stored))
            }
            Err(e) => {
                self.record(Err(crate::error_chain::error_message(&e)));
                Err(e)
            }
        }
    }

    /// [`Self::checkpoint`], logging instead of returning failures (for the background task).
    pub async fn checkpoint_logged(&self, force: bool, why: &'static str) {
        match self.checkpoint(force).await {
            Ok(Some(stored)) => tracing::info!(
                why,
                id = stored.id,
                events_seq = stored.checkpoint.events_seq,
                verdicts_seq = stored.checkpoint.verdicts_seq,
                "wrote a checkpoint"
            ),
            Ok(None) => tracing::debug!(why, "no head moved; no checkpoint"),
            Err(e) => {
                let refused =
                    e.downcast_ref::<AnchorError>().is_some_and(|e| matches!(e, AnchorError::NotExtending { .. }));
                if refused {
                    tracing::error!(
                        why,
                        error = crate::error_chain::error_message(&e),
                        "checkpoint refused: the ledger no longer extends the anchored history"
                    );
                } else {
                    tracing::error!(
                        why,
                        error = crate::error_chain::error_message(&e),
                        "could not write a checkpoint; retrying at the next interval"
                    );
                }
            }
        }
    }

    /// Every `interval` a checkpoint when a head moved, and one after every snapshot the
    /// schedule creates, until `stop`. The one at shutdown is written by the caller after the
    /// writer's last batch is durable ([`Self::checkpoint_logged`]).
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        mut snapshots: Option<tokio::sync::watch::Receiver<camledger_backup::ScheduleStatus>>,
        stop: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // `None` when the schedule has stopped (its sender is gone).
            let snapshot_taken = async {
                match snapshots.as_mut() {
                    Some(rx) => match rx.changed().await {
                        Ok(()) => Some(rx.borrow_and_update().last_outcome == Some("created")),
                        Err(_) => None,
                    },
                    None => std::future::pending().await,
                }
            };
            let mut schedule_stopped = false;
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => self.checkpoint_logged(false, "interval").await,
                created = snapshot_taken => match created {
                    Some(true) => self.checkpoint_logged(true, "snapshot").await,
                    Some(false) => {}
                    None => schedule_stopped = true,
                },
            }
            if schedule_stopped {
                snapshots = None;
            }
        }
    }

    pub async fn close(&self) {
        self.store.close().await;
    }
}

/// `camledger checkpoints …`
#[derive(Debug, clap::Subcommand)]
pub enum CheckpointsCommand {
    /// List anchored checkpoints, oldest first (every row is parsed and checked).
    List {
        #[command(flatten)]
        anchor: AnchorArg,
        /// The data dir whose embedded anchor store is read when --anchor-url is not given.
        #[command(flatten)]
        data: DataDirArg,
        /// Only this ledger's checkpoints (`camledger/<node-name>`); default: all.
        #[arg(long, env = "CAMLEDGER_ORIGIN")]
        origin: Option<String>,
        /// Also check every signature against this allowed-signers file.
        #[arg(long, env = "CAMLEDGER_ALLOWED_SIGNERS")]
        allowed_signers: Option<PathBuf>,
        #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Check the ledger against every anchored checkpoint: signatures, heads on the chains at
    /// their seqs, and the ledger not behind the latest.
    Verify {
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        anchor: AnchorArg,
        /// Allowed-signers file with the keys auditors trust (e.g. from `camledger keys show`
        /// on the key's machine). Default: the data dir's key history, which whoever can
        /// write the data dir can change.
        #[arg(long, env = "CAMLEDGER_ALLOWED_SIGNERS")]
        allowed_signers: Option<PathBuf>,
        /// The ledger's origin (`camledger/<node-name>`); default: the only one in the store.
        #[arg(long, env = "CAMLEDGER_ORIGIN")]
        origin: Option<String>,
    },
}

fn read_allowed_signers(path: &Path) -> anyhow::Result<AllowedSigners> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    AllowedSigners::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The anchor store of a reading command: the URL given, else the data dir's, which must exist.
fn reading_url(anchor: &AnchorArg, data: &DataDirArg) -> anyhow::Result<String> {
    if let Some(url) = &anchor.anchor_url {
        return Ok(url.clone());
    }
    let path = data.data_dir.join("anchors.sqlite");
    if !path.exists() {
        bail!("no anchor store at {} (give --anchor-url)", path.display());
    }
    Ok(default_anchor_url(&data.data_dir))
}

/// `camledger checkpoint`: write one checkpoint now (even when no head moved).
pub async fn checkpoint_command(
    data: DataDirArg,
    anchor: AnchorArg,
    key: crate::keys::SigningKeyArg,
    node: crate::config::NodeNameArg,
) -> anyhow::Result<()> {
    crate::datadir::require_ledger_dir(&data)?;
    if !data.data_dir.join("ledger.git").exists() {
        bail!("{} holds no ledger.git yet: nothing to checkpoint", data.data_dir.display());
    }
    let key = Arc::new(key.load_existing(&data.data_dir)?);
    let ledger = Ledger::open(
        &data.data_dir,
        camledger_eventstore::LedgerConfig { node_name: node.node_name(&data.data_dir)?, ..Default::default() },
    )
    .with_context(|| format!("opening the ledger in {}", data.data_dir.display()))?;
    let anchoring = Anchoring::open(&anchor.url(&data.data_dir), ledger, key).await?;
    let written = anchoring.checkpoint(true).await;
    anchoring.close().await;
    let stored = written.context("writing the checkpoint")?.expect("a forced checkpoint is written or fails");
    let c = &stored.checkpoint;
    println!("anchored checkpoint {} of {}: {}", stored.id, c.origin, c.summary());
    Ok(())
}

/// After `camledger snapshot`: a checkpoint when the data dir's key is at hand.
pub async fn checkpoint_after_snapshot(
    data: &DataDirArg,
    anchor: &AnchorArg,
    key: &crate::keys::SigningKeyArg,
    node: &crate::config::NodeNameArg,
) -> anyhow::Result<Option<StoredCheckpoint>> {
    let key = match key.load_existing(&data.data_dir) {
        Ok(key) => Arc::new(key),
        Err(e) => {
            tracing::warn!(
                error = crate::error_chain::error_message(&e),
                "no signing key: the snapshot has no checkpoint"
            );
            return Ok(None);
        }
    };
    let ledger = Ledger::open(
        &data.data_dir,
        camledger_eventstore::LedgerConfig { node_name: node.node_name(&data.data_dir)?, ..Default::default() },
    )?;
    let anchoring = Anchoring::open(&anchor.url(&data.data_dir), ledger, key).await?;
    let written = anchoring.checkpoint(true).await;
    anchoring.close().await;
    written
}

pub async fn checkpoints_command(command: CheckpointsCommand) -> anyhow::Result<()> {
    match command {
        CheckpointsCommand::List { anchor, data, origin, allowed_signers, format } => {
            let signers = allowed_signers.as_deref().map(read_allowed_signers).transpose()?;
            let store = connect(&reading_url(&anchor, &data)?).await?;
            let listed = store.list(origin.as_deref(), signers.as_ref()).await;
            store.close().await;
            let listed = listed.context("reading the anchored checkpoints")?;
            match format {
                OutputFormat::Json => {
                    let json: Vec<CheckpointJson> = listed.iter().map(CheckpointJson::from).collect();
                    println!("{}", serde_json::to_string_pretty(&json)?);
                }
                OutputFormat::Text => {
                    for stored in &listed {
                        let c = &stored.checkpoint;
                        println!(
                            "{}\t{}\t{}\tevents {} {}\tverdicts {} {}",
                            stored.id,
                            c.time_text(),
                            c.origin,
                            c.events_seq,
                            c.events_head,
                            c.verdicts_seq,
                            c.verdicts_head
                        );
                    }
                }
            }
        }
        CheckpointsCommand::Verify { data, anchor, allowed_signers, origin } => {
            crate::datadir::require_ledger_dir(&data)?;
            let signers = match &allowed_signers {
                Some(path) => read_allowed_signers(path)?,
                None => {
                    tracing::warn!(
                        "checking signatures against the data dir's key history; give --allowed-signers with the \
                         keys you trust"
                    );
                    crate::keys::read_history(&data.data_dir)?
                }
            };
            let ledger = Ledger::open(&data.data_dir, camledger_eventstore::LedgerConfig::default())
                .with_context(|| format!("opening the ledger in {}", data.data_dir.display()))?;
            let store = connect(&reading_url(&anchor, &data)?).await?;
            let report = camledger_backup::anchor::verify_ledger(&store, &ledger, &signers, origin.as_deref()).await;
            store.close().await;
            let report = report.context("the ledger failed the anchored checkpoints")?;
            match &report.latest {
                Some(c) => println!(
                    "verified {} anchored checkpoints of {}; the ledger holds the latest ({})",
                    report.checkpoints,
                    c.origin,
                    c.summary()
                ),
                None => println!("no anchored checkpoints to verify"),
            }
        }
    }
    Ok(())
}
