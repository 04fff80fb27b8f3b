//! The snapshot key, and the HMAC-SHA256 codes it puts on every snapshot.
//!
//! Whoever can write to the snapshot database must not be able to change what a restore
//! builds. So nothing read from the database is used before it is proven with a key the
//! database never holds:
//! - each chunk row carries `mac = HMAC(key, "chunk" ‖ snapshot id ‖ artifact ‖ seq ‖
//!   SHA-256 of its bytes)`: a chunk altered, moved to another snapshot or another place
//!   in the same artifact does not verify, and is never decompressed;
//! - each snapshot row carries `seal = HMAC(key, "snapshot" ‖ id ‖ parent ‖ created_at ‖
//!   manifest ‖ totals ‖ every artifact row)`: the manifest (refs, `HEAD`), the chain
//!   links and the declared sizes and digests that bound decompression are authentic.
//!
//! Every field is length-prefixed (8 bytes, big endian) so no two inputs encode alike; the
//! first field names the format version (`camledger-snapshot-v1`).
//!
//! What a seal cannot prevent: deleting snapshots, or all of them (a restore then takes
//! an older authentic one, or none). Keep the database backed up like any other.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};

use crate::db::{ArtifactRow, SnapshotRow};
use crate::Fault;

type HmacSha256 = hmac::Hmac<sha2_011::Sha256>;

const DOMAIN: &[u8] = b"camledger-snapshot-v1";

/// Why a key file could not be read or created. CLI: message and non-zero exit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("backup key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not hex, or holds fewer than [`BackupKey::MIN_BYTES`] bytes.
    #[error(
        "backup key file {path} must hold at least {} hex digits (a {}-byte key); \
         create one with `head -c 32 /dev/urandom | xxd -p -c 64`",
        2 * BackupKey::MIN_BYTES,
        BackupKey::MIN_BYTES
    )]
    Malformed { path: PathBuf },
}

/// The secret that seals snapshots. Its `Debug` never shows it, and it has no `Display`.
#[derive(Clone)]
pub struct BackupKey {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(<redacted>)")
    }
}

impl BackupKey {
    /// The shortest key accepted: HMAC-SHA256 gains nothing from more than 32 bytes and
    /// loses strength below.
    pub const MIN_BYTES: usize = 32;

    /// A key from raw bytes (tests, or keys from a secret manager); `None` when too short.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<BackupKey> {
        (bytes.len() >= Self::MIN_BYTES).then_some(BackupKey { bytes })
    }

    /// Read a key file: hex digits, surrounding whitespace ignored. Warns when the file is
    /// readable by group or others.
    pub fn read(path: &Path) -> Result<BackupKey, Error> {
        use std::os::unix::fs::PermissionsExt;

        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the backup key file is readable by group or others; chmod 600 it");
            }
        }
        hex::decode(text.trim())
            .ok()
            .and_then(BackupKey::from_bytes)
            .ok_or_else(|| Error::Malformed { path: path.to_owned() })
    }

    /// Create a new random key file at `path` (never replacing one): mode 0600, its
    /// directory created 0700 when missing.
    pub fn create(path: &Path) -> Result<BackupKey, Error> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

        let io = |source| Error::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        let bytes: [u8; 32] = rand::random();
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
        writeln!(file, "{}", hex::encode(bytes)).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(BackupKey { bytes: bytes.to_vec() })
    }

    fn mac(&self) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.bytes).expect("HMAC takes keys of any length");
        field(&mut mac, DOMAIN);
        mac
    }

    /// The `mac` of one chunk, hex.
    pub(crate) fn chunk_mac(&self, snapshot_id: i64, artifact: &str, seq: i64, sha256: &[u8]) -> String {
        hex::encode(self.chunk_input(snapshot_id, artifact, seq, sha256).finalize().into_bytes())
    }

    /// Whether `stored` (hex, from the database) is the `mac` of that chunk.
    pub(crate) fn chunk_mac_matches(
        &self,
        snapshot_id: i64,
        artifact: &str,
        seq: i64,
        sha256: &[u8],
        stored: Option<&str>,
    ) -> bool {
        verify(self.chunk_input(snapshot_id, artifact, seq, sha256), stored)
    }

    fn chunk_input(&self, snapshot_id: i64, artifact: &str, seq: i64, sha256: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        field(&mut mac, b"chunk");
        field(&mut mac, &snapshot_id.to_be_bytes());
        field(&mut mac, artifact.as_bytes());
        field(&mut mac, &seq.to_be_bytes());
        field(&mut mac, sha256);
        mac
    }

    /// The `seal` of a snapshot row and its artifact rows, hex.
    pub(crate) fn seal(&self, row: &SnapshotRow, artifacts: &[ArtifactRow]) -> String {
        hex::encode(self.seal_mac(row, artifacts).finalize().into_bytes())
    }

    /// Whether the row's stored seal is the seal of the row and `artifacts` as read.
    pub(crate) fn seal_matches(&self, row: &SnapshotRow, artifacts: &[ArtifactRow]) -> bool {
        verify(self.seal_mac(row, artifacts), row.seal.as_deref())
    }

    fn seal_mac(&self, row: &SnapshotRow, artifacts: &[ArtifactRow]) -> HmacSha256 {
        let mut mac = self.mac();
        field(&mut mac, b"snapshot");
        field(&mut mac, &row.id.to_be_bytes());
        optional(&mut mac, row.parent_id);
        field(&mut mac, &row.created_at_ms.to_be_bytes());
        field(&mut mac, row.manifest.as_bytes());
        field(&mut mac, &row.objects.to_be_bytes());
        field(&mut mac, &row.raw_bytes.to_be_bytes());
        field(&mut mac, &row.stored_bytes.to_be_bytes());
        optional(&mut mac, row.events_head_seq);
        let mut sorted: Vec<&ArtifactRow> = artifacts.iter().collect();
        sorted.sort_by(|a, b| a.artifact.cmp(&b.artifact));
        field(&mut mac, &(sorted.len() as u64).to_be_bytes());
        for a in sorted {
            field(&mut mac, a.artifact.as_bytes());
            field(&mut mac, &a.chunks.to_be_bytes());
            field(&mut mac, &a.objects.to_be_bytes());
            field(&mut mac, &a.raw_bytes.to_be_bytes());
            field(&mut mac, &a.stored_bytes.to_be_bytes());
            field(&mut mac, a.raw_sha256.as_bytes());
            field(&mut mac, a.stored_sha256.as_bytes());
        }
        mac
    }
}

/// Whether snapshot `row` with `artifacts` (as read from the database) is authentic.
pub(crate) fn authenticate(key: &BackupKey, row: &SnapshotRow, artifacts: &[ArtifactRow]) -> Result<(), Fault> {
    if row.seal.is_none() {
        return Err(Fault::Unsealed { snapshot: row.id });
    }
    if !key.seal_matches(row, artifacts) {
        return Err(Fault::SealMismatch { snapshot: row.id });
    }
    Ok(())
}

fn field(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

fn optional(mac: &mut HmacSha256, value: Option<i64>) {
    match value {
        Some(v) => field(mac, &v.to_be_bytes()),
        None => field(mac, b""),
    }
}

/// Constant-time comparison with a stored hex code; absent or malformed never matches.
fn verify(mac: HmacSha256, stored: Option<&str>) -> bool {
    match stored.and_then(|s| hex::decode(s).ok()) {
        Some(code) => mac.verify_slice(&code).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> BackupKey {
        BackupKey::from_bytes(vec![byte; 32]).expect("32 bytes")
    }

    fn row() -> SnapshotRow {
        SnapshotRow {
            id: 7,
            parent_id: Some(6),
            created_at_ms: 1,
            manifest: r#"{"refs":{}}"#.into(),
            objects: 3,
            raw_bytes: 100,
            stored_bytes: 50,
            events_head_seq: Some(9),
            seal: None,
        }
    }

    fn artifact() -> ArtifactRow {
        ArtifactRow {
            artifact: "pack".into(),
            chunks: 1,
            objects: 3,
            raw_bytes: 100,
            stored_bytes: 50,
            raw_sha256: "aa".repeat(32),
            stored_sha256: "bb".repeat(32),
        }
    }

    #[test]
    fn a_seal_verifies_only_the_rows_it_was_made_for_with_the_same_key() {
        let mut sealed = row();
        sealed.seal = Some(key(1).seal(&sealed, &[artifact()]));
        assert!(key(1).seal_matches(&sealed, &[artifact()]));
        assert!(!key(2).seal_matches(&sealed, &[artifact()]), "another key");
        assert!(!key(1).seal_matches(&sealed, &[]), "an artifact row removed");
        let mut bigger = artifact();
        bigger.raw_bytes += 1;
        assert!(!key(1).seal_matches(&sealed, &[bigger]), "a declared size changed");
        let mut edited = sealed.clone();
        edited.manifest = r#"{"refs":{},"config":"[core]\n\tpager = touch x"}"#.into();
        assert!(!key(1).seal_matches(&edited, &[artifact()]), "the manifest changed");
        let mut relinked = sealed.clone();
        relinked.parent_id = None;
        assert!(!key(1).seal_matches(&relinked, &[artifact()]), "the chain link changed");
        let mut unsealed = sealed;
        unsealed.seal = None;
        assert!(!key(1).seal_matches(&unsealed, &[artifact()]), "no seal at all");
    }

    #[test]
    fn a_chunk_mac_binds_the_snapshot_the_artifact_and_the_position() {
        let k = key(1);
        let mac = k.chunk_mac(7, "pack", 0, &[1; 32]);
        assert!(k.chunk_mac_matches(7, "pack", 0, &[1; 32], Some(&mac)));
        for (snapshot, artifact, seq, digest) in
            [(8, "pack", 0, [1; 32]), (7, "state", 0, [1; 32]), (7, "pack", 1, [1; 32]), (7, "pack", 0, [2; 32])]
        {
            assert!(!k.chunk_mac_matches(snapshot, artifact, seq, &digest, Some(&mac)));
        }
        assert!(!k.chunk_mac_matches(7, "pack", 0, &[1; 32], None));
        assert!(!k.chunk_mac_matches(7, "pack", 0, &[1; 32], Some("not hex")));
    }

    #[test]
    fn a_key_never_prints_and_key_files_are_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;

        assert_eq!(format!("{:?}", key(0xab)), "BackupKey(<redacted>)");
        assert!(BackupKey::from_bytes(vec![0; 31]).is_none());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys").join("backup.key");
        let created = BackupKey::create(&path).expect("a new key file");
        let mode = std::fs::metadata(&path).expect("written").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(BackupKey::create(&path).is_err(), "an existing key is never replaced");
        let read = BackupKey::read(&path).expect("its own format");
        assert_eq!(read.bytes, created.bytes);
        std::fs::write(dir.path().join("short"), "abcd\n").expect("write");
        assert!(matches!(BackupKey::read(&dir.path().join("short")), Err(Error::Malformed { .. })));
    }
}
