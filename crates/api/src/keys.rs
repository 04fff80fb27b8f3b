//! The ledger's signing key for the commands that write commits (`serve`, `worker`,
//! `checkpoint`): where it lives, creating it on a first start, and the key history
//! (`<data-dir>/keys/allowed_signers`) that `GET /v1/keys` serves and auditors verify with.
//!
//! Trust: the history sits in the data dir, which an insider can write. It is a convenience
//! for auditors who already pinned the key's fingerprint out of band (`camledger keys show`
//! on the machine that holds the key); `docs/event-format.md`, "Signatures".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use camledger_eventstore::sign::{AllowedSigner, AllowedSigners, SigningKey};

pub use crate::config::SigningKeyArg;

/// The principal camledger writes in allowed-signers lines (git does not check it).
pub const PRINCIPAL: &str = "camledger";

/// Where the key lives when `--signing-key` is not given.
pub fn default_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("ledger_ed25519")
}

/// Every key that signed this ledger, with its validity window.
pub fn history_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("allowed_signers")
}

impl SigningKeyArg {
    /// For writing commands: the key given (it must exist: a mistyped path must not start a
    /// new key silently), or the data dir's default, created when missing. The key is
    /// recorded in the data dir's key history.
    pub fn load_or_create(&self, data_dir: &Path) -> anyhow::Result<Arc<SigningKey>> {
        let key = match &self.signing_key {
            Some(path) => SigningKey::load(path).context("reading --signing-key")?,
            None => {
                let path = default_key_path(data_dir);
                let (key, created) = SigningKey::load_or_generate(&path, PRINCIPAL)
                    .context("reading or creating the default signing key")?;
                if created {
                    tracing::warn!(
                        path = %path.display(),
                        fingerprint = %key.fingerprint(),
                        "created a new ledger signing key inside the data dir; in production keep the key \
                         outside it (--signing-key) and publish its fingerprint to auditors"
                    );
                }
                key
            }
        };
        record_in_history(data_dir, &key, time::OffsetDateTime::now_utc().unix_timestamp())?;
        Ok(Arc::new(key))
    }

    /// Fails when `--signing-key` names a file that is not a usable key (checked before
    /// anything touches the data dir).
    pub fn check_given(&self) -> anyhow::Result<()> {
        match &self.signing_key {
            Some(path) => SigningKey::load(path).map(drop).context("reading --signing-key"),
            None => Ok(()),
        }
    }

    /// For commands that only show the key: the one given, or the data dir's; never creates.
    pub fn load_existing(&self, data_dir: &Path) -> anyhow::Result<SigningKey> {
        match &self.signing_key {
            Some(path) => SigningKey::load(path).context("reading --signing-key"),
            None => {
                let path = default_key_path(data_dir);
                anyhow::ensure!(
                    path.exists(),
                    "{} holds no signing key ({} is missing); pass --signing-key or start `camledger serve` once",
                    data_dir.display(),
                    path.display()
                );
                SigningKey::load(&path).context("reading the data dir's signing key")
            }
        }
    }
}

/// The allowed-signers line of a key without a validity window (what `keys show` prints).
pub fn allowed_signers_line(key: &SigningKey) -> String {
    AllowedSigner {
        principal: PRINCIPAL.to_owned(),
        key: key.public_key().clone(),
        valid_after: None,
        valid_before: None,
    }
    .to_line()
}

/// The data dir's key history; empty when none was recorded yet.
pub fn read_history(data_dir: &Path) -> anyhow::Result<AllowedSigners> {
    let path = history_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => AllowedSigners::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AllowedSigners::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Records `key` as the current signer at time `now` when it is not already: the previous
/// current key's window closes one second later (commits of the same second stay valid
/// under both), the new key's opens at `now`. Written to a temporary file, fsynced, renamed.
pub fn record_in_history(data_dir: &Path, key: &SigningKey, now: i64) -> anyhow::Result<AllowedSigners> {
    let mut history = read_history(data_dir)?;
    let current = history.signers.iter().rev().find(|s| s.valid_before.is_none());
    if current.is_some_and(|s| s.key.key_data() == key.public_key().key_data()) {
        return Ok(history);
    }
    for signer in history.signers.iter_mut().filter(|s| s.valid_before.is_none()) {
        signer.valid_before = Some(now + 1);
    }
    let first = history.signers.is_empty();
    let mut public = key.public_key().clone();
    public.set_comment("");
    history.signers.push(AllowedSigner {
        principal: PRINCIPAL.to_owned(),
        key: public,
        // The first key also covers what was written before the history existed.
        valid_after: if first { None } else { Some(now) },
        valid_before: None,
    });
    let path = history_path(data_dir);
    let dir = path.parent().expect("the history lives in keys/");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".allowed_signers.tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(history.to_text().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("recording the signing key in {}", path.display()))?;
    tracing::info!(fingerprint = %key.fingerprint(), "recorded a new ledger signing key in the key history");
    Ok(history)
}

/// `camledger keys …`
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Print the signing key's fingerprint and, as the last line, its allowed-signers line
    /// (give that line to auditors through a channel the server does not control).
    Show {
        #[command(flatten)]
        key: SigningKeyArg,
        #[command(flatten)]
        data: crate::config::DataDirArg,
    },
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Show { key, data } => {
            let key = key.load_existing(&data.data_dir)?;
            println!("fingerprint {}", key.fingerprint());
            println!("{}", allowed_signers_line(&key));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_closes_the_old_window_and_opens_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = SigningKey::generate(&dir.path().join("a"), "a").unwrap();
        let second = SigningKey::generate(&dir.path().join("b"), "b").unwrap();
        record_in_history(dir.path(), &first, 100).unwrap();
        assert_eq!(record_in_history(dir.path(), &first, 150).unwrap().signers.len(), 1, "same key: no change");
        let history = record_in_history(dir.path(), &second, 200).unwrap();
        assert_eq!(history, read_history(dir.path()).unwrap(), "written durably and read back");
        let windows: Vec<_> = history.signers.iter().map(|s| (s.valid_after, s.valid_before)).collect();
        assert_eq!(windows, [(None, Some(201)), (Some(200), None)]);
    }
}
