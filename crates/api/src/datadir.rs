//! The data dir on disk: what makes a directory one, starting a new one, and opening its
//! ledger for the commands that read or write it.

use anyhow::{bail, Context};
use camledger_eventstore::{Ledger, LedgerConfig};

use crate::config::DataDirArg;

/// What marks a directory as a data dir: the ledger or the camera registry (which
/// `cameras add` creates before the first `serve`).
fn holds_ledger(dir: &std::path::Path) -> bool {
    dir.join("ledger.git").exists() || dir.join(crate::registry::REGISTRY_FILE).exists()
}

/// For commands that only read or change what exists: the data dir must hold a ledger, so
/// a mistyped `--data-dir` fails instead of reading (and creating) an empty one.
pub(crate) fn require_ledger_dir(data: &DataDirArg) -> anyhow::Result<()> {
    if !holds_ledger(&data.data_dir) {
        bail!(
            "{} holds no ledger (no ledger.git or {} inside); check --data-dir",
            data.data_dir.display(),
            crate::registry::REGISTRY_FILE
        );
    }
    Ok(())
}

/// For commands that may start a ledger (`serve`, `cameras add`, `tokens add`): a data dir
/// that holds one is used; a missing or empty directory becomes a new one (said on
/// stderr); anything else is refused, since it is most likely a mistyped path.
pub(crate) fn prepare_ledger_dir(data: &DataDirArg) -> anyhow::Result<()> {
    let dir = &data.data_dir;
    if holds_ledger(dir) {
        return Ok(());
    }
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).with_context(|| format!("reading data dir {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty and holds no ledger (no ledger.git or {} inside); check --data-dir, \
                 or give a new or empty directory to start a ledger",
                dir.display(),
                crate::registry::REGISTRY_FILE
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    tracing::info!(data_dir = %dir.display(), "created a new ledger at {}", dir.display());
    Ok(())
}

pub(crate) fn open_ledger(data: &DataDirArg) -> anyhow::Result<Ledger> {
    open_ledger_with(data, LedgerConfig::default())
}

/// Opens an existing ledger for a command that writes commits, signing with `key`.
pub(crate) fn open_signing_ledger(data: &DataDirArg, key: &crate::config::SigningKeyArg) -> anyhow::Result<Ledger> {
    ensure_ledger_git(data)?;
    let signing_key = Some(key.load_or_create(&data.data_dir)?);
    open_ledger_with(data, LedgerConfig { signing_key, ..LedgerConfig::default() })
}

fn ensure_ledger_git(data: &DataDirArg) -> anyhow::Result<()> {
    if !data.data_dir.join("ledger.git").exists() {
        // Also refuses a data dir with only a registry: there is no event log to read yet.
        bail!("{} holds no ledger (no ledger.git inside); check --data-dir", data.data_dir.display());
    }
    Ok(())
}

fn open_ledger_with(data: &DataDirArg, config: LedgerConfig) -> anyhow::Result<Ledger> {
    ensure_ledger_git(data)?;
    Ledger::open(&data.data_dir, config).with_context(|| format!("opening the ledger in {}", data.data_dir.display()))
}
