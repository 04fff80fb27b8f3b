//! Snapshot commands (`snapshot`, `snapshots list|verify|prune`, `restore`); the scheduled
//! snapshots of `camledger serve --snapshot-interval` run `camledger_backup::schedule`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use camledger_backup::{BackupKey, Progress, SnapshotOptions, SnapshotOutcome, Store};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use crate::config::{BackupKeyArg, DatabaseArg, ReadKeyArg};
use crate::config::{DataDirArg, OutputFormat};

impl DatabaseArg {
    /// The URL to open: the explicit one, else the embedded database of the data dir,
    /// which must exist (a reading command never creates one).
    fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        let path = default_database_path(&self.data.data_dir);
        if !path.exists() {
            bail!(
                "no snapshot database at {} (take a snapshot with `camledger snapshot`, or give --database-url)",
                path.display()
            );
        }
        Ok(default_database_url(&self.data.data_dir))
    }
}

/// Where `snapshot` and `serve` keep the key when `--backup-key` is not given.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("backup.key")
}

impl BackupKeyArg {
    /// Read the key; the default one is created when missing (an explicit path must exist:
    /// a mistyped path would otherwise start a new key silently).
    pub fn load_or_create(&self, data_dir: &Path) -> anyhow::Result<BackupKey> {
        if let Some(path) = &self.backup_key {
            return BackupKey::read(path).context("reading --backup-key");
        }
        let path = default_key_path(data_dir);
        if path.exists() {
            return BackupKey::read(&path).context("reading the default backup key");
        }
        let key = BackupKey::create(&path).context("creating the default backup key")?;
        tracing::warn!(
            path = %path.display(),
            "created a new backup key inside the data dir; copy it somewhere safe (a restore needs it) \
             and in production keep it outside the data dir with --backup-key"
        );
        Ok(key)
    }
}

impl ReadKeyArg {
    pub fn load(&self) -> anyhow::Result<BackupKey> {
        BackupKey::read(&self.backup_key).context("reading --backup-key")
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotsCommand {
    /// List snapshots, oldest first.
    List {
        #[command(flatten)]
        db: DatabaseArg,
        #[arg(long, env = "CAMLEDGER_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Read every chunk back and check every hash and the chain to a full snapshot.
    Verify {
        /// Snapshot to verify (with the chain it needs); all snapshots when omitted.
        id: Option<i64>,
        #[command(flatten)]
        db: DatabaseArg,
        #[command(flatten)]
        key: ReadKeyArg,
    },
    /// Delete old snapshots, keeping the newest N and every snapshot they need.
    Prune {
        /// Snapshots to keep, newest first (with every snapshot they need).
        #[arg(long, env = "CAMLEDGER_KEEP")]
        keep: usize,
        #[command(flatten)]
        db: DatabaseArg,
    },
}

/// A terminal progress bar for the backup crate's phases; hidden when stderr is no terminal.
struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    fn new() -> Self {
        let target = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self { bar: ProgressBar::with_draw_target(None, target) }
    }
}

impl Progress for BarProgress {
    fn start(&self, what: &str, total: u64) {
        self.bar.reset();
        let template = if total > 0 {
            "{msg} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})"
        } else {
            "{msg} {spinner} {bytes} ({bytes_per_sec})"
        };
        self.bar.set_style(ProgressStyle::with_template(template).expect("a valid progress template"));
        self.bar.set_length(total);
        self.bar.set_message(what.to_owned());
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn items(&self, what: &str, done: u64, total: u64) {
        if self.bar.message() != what {
            self.bar.reset();
            self.bar.set_style(crate::progress::count_style());
            self.bar.set_message(what.to_owned());
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub(crate) async fn connect(url: &str) -> anyhow::Result<Store> {
    Store::connect(url).await.with_context(|| format!("opening the snapshot database {}", redact(url)))
}

/// The URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// The embedded default: a SQLite database inside the data dir.
pub fn default_database_url(data_dir: &Path) -> String {
    format!("sqlite://{}", default_database_path(data_dir).display())
}

fn default_database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("backups.sqlite")
}

pub async fn snapshot(data: DataDirArg, database_url: Option<String>, key: BackupKeyArg) -> anyhow::Result<()> {
    crate::datadir::require_ledger_dir(&data)?;
    let key = key.load_or_create(&data.data_dir)?;
    let url = database_url.unwrap_or_else(|| default_database_url(&data.data_dir));
    let store = connect(&url).await?;
    let progress = BarProgress::new();
    let outcome =
        camledger_backup::snapshot(&store, &key, &data.data_dir, &SnapshotOptions::default(), &progress).await;
    progress.finish();
    store.close().await;
    match outcome.context("taking the snapshot")? {
        SnapshotOutcome::Created(info) => println!(
            "snapshot {} ({}, parent {}): {} objects, {} raw bytes, {} stored bytes, events head seq {}",
            info.id,
            if info.is_full() { "full" } else { "incremental" },
            info.parent.map_or("none".to_owned(), |p| p.to_string()),
            info.objects,
            info.raw_bytes,
            info.stored_bytes,
            info.events_head_seq.map_or("none".to_owned(), |s| s.to_string()),
        ),
        SnapshotOutcome::Unchanged { latest } => {
            println!("nothing changed since snapshot {latest}: nothing written")
        }
    }
    Ok(())
}

pub async fn snapshots(command: SnapshotsCommand) -> anyhow::Result<()> {
    match command {
        SnapshotsCommand::List { db, format } => {
            let store = connect(&db.url()?).await?;
            let all = camledger_backup::list(&store).await.context("listing snapshots")?;
            store.close().await;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                OutputFormat::Text => {
                    println!(
                        "{:>6} {:>6} {:<26} {:>10} {:>14} {:>14} {:>10}",
                        "id", "parent", "created_at", "objects", "raw_bytes", "stored_bytes", "head_seq"
                    );
                    for s in all {
                        println!(
                            "{:>6} {:>6} {:<26} {:>10} {:>14} {:>14} {:>10}",
                            s.id,
                            s.parent.map_or("-".to_owned(), |p| p.to_string()),
                            s.created_at.format(&time::format_description::well_known::Rfc3339)?,
                            s.objects,
                            s.raw_bytes,
                            s.stored_bytes,
                            s.events_head_seq.map_or("-".to_owned(), |h| h.to_string()),
                        );
                    }
                }
            }
        }
        SnapshotsCommand::Verify { id, db, key } => {
            let key = key.load()?;
            let store = connect(&db.url()?).await?;
            let progress = BarProgress::new();
            let report = camledger_backup::verify(&store, &key, id, &progress).await;
            progress.finish();
            store.close().await;
            let report = report.context("verifying snapshots")?;
            if !report.is_clean() {
                for fault in &report.faults {
                    eprintln!("fault: {fault}");
                }
                bail!("{} fault(s) in {} snapshot(s) checked", report.faults.len(), report.checked.len());
            }
            println!(
                "verified {} snapshot(s), {} artifact(s): every seal, chunk and chain intact",
                report.checked.len(),
                report.artifacts
            );
        }
        SnapshotsCommand::Prune { keep, db } => {
            let store = connect(&db.url()?).await?;
            let report = camledger_backup::prune(&store, keep).await.context("pruning snapshots")?;
            store.close().await;
            println!("deleted {:?}; kept {:?}", report.deleted, report.kept);
        }
    }
    Ok(())
}

pub async fn restore(db: DatabaseArg, key: ReadKeyArg, to: PathBuf, snapshot: Option<i64>) -> anyhow::Result<()> {
    let key = key.load()?;
    let store = connect(&db.url()?).await?;
    let progress = BarProgress::new();
    let report = camledger_backup::restore(&store, &key, &to, snapshot, &progress).await;
    progress.finish();
    store.close().await;
    let report = report.with_context(|| format!("restoring into {}", to.display()))?;
    println!(
        "restored snapshot {} (chain {:?}) into {}: {} objects, {} refs, {} events, registry {}; seals, refs, git fsck and every event's SHA-256 verified",
        report.snapshot,
        report.chain,
        report.data_dir.display(),
        report.objects,
        report.refs,
        report.events,
        if report.state { "restored" } else { "absent" },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn intervals_read_like_an_operator_writes_them() {
        assert_eq!(crate::config::parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(crate::config::parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(crate::config::parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(crate::config::parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(crate::config::parse_duration("0s").is_err());
        assert!(crate::config::parse_duration("1w").is_err());
        assert!(crate::config::parse_duration("soon").is_err());
        assert!(crate::config::parse_duration("999999999999999999d").is_err(), "overflow is an error, not a wrap");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("mysql://root:hunter2@db:3306/x"), "mysql://root:***@db:3306/x");
        assert_eq!(redact("mysql://root@127.0.0.1:3306/test"), "mysql://root@127.0.0.1:3306/test");
        assert_eq!(redact("sqlite:///var/lib/b.sqlite"), "sqlite:///var/lib/b.sqlite");
    }
}
