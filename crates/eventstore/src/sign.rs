//! SSH signatures on ledger commits (git's `gpgsig` header, namespace `git`, ed25519 with a
//! SHA-512 message hash), as `git commit -S` with `gpg.format=ssh` makes them and
//! `git verify-commit` checks them; and the allowed-signers file that names the keys an
//! auditor trusts, with their validity windows. Normative description: `docs/event-format.md`,
//! "Signatures".
//!
//! The key never prints: [`SigningKey`]'s `Debug` shows its fingerprint only.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The signature namespace git uses for commits and tags.
pub const GIT_NAMESPACE: &str = "git";

/// Why a signing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read the signing key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not create the signing key {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an OpenSSH private key: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "{path} is an encrypted key; camledger needs an unencrypted ed25519 key (protect it with file permissions)"
    )]
    Encrypted { path: PathBuf },
    #[error("{path} holds a {algorithm} key; camledger signs with ed25519 only (ssh-keygen -t ed25519)")]
    NotEd25519 { path: PathBuf, algorithm: String },
}

/// The ledger's ed25519 signing key (an OpenSSH private key file).
pub struct SigningKey {
    key: PrivateKey,
    /// The same key, expanded once: building it per signature doubled the cost of signing
    /// (measured 49–56 µs per commit through `PrivateKey::sign`).
    dalek: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.fingerprint())
    }
}

impl SigningKey {
    /// Reads an unencrypted OpenSSH ed25519 private key.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?;
        let key = PrivateKey::from_openssh(&text)
            .map_err(|e| KeyError::Invalid { path: path.to_owned(), reason: e.to_string() })?;
        if key.is_encrypted() {
            return Err(KeyError::Encrypted { path: path.to_owned() });
        }
        SigningKey::from_private(key).map_err(|algorithm| KeyError::NotEd25519 { path: path.to_owned(), algorithm })
    }

    fn from_private(key: PrivateKey) -> Result<SigningKey, String> {
        match key.key_data() {
            ssh_key::private::KeypairData::Ed25519(pair) => {
                let dalek = ed25519_dalek::SigningKey::from(&pair.private);
                Ok(SigningKey { key, dalek })
            }
            _ => Err(key.algorithm().to_string()),
        }
    }

    /// Creates a new key at `path` (mode 0600, parent directories 0700); fails if it exists.
    pub fn generate(path: &Path, comment: &str) -> Result<SigningKey, KeyError> {
        let create = |source| KeyError::Create { path: path.to_owned(), source };
        let seed: [u8; 32] = rand::random();
        let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
        let key = PrivateKey::new(ssh_key::private::KeypairData::Ed25519(pair), comment)
            .map_err(|e| create(std::io::Error::other(e)))?;
        let text = key.to_openssh(LineEnding::LF).map_err(|e| create(std::io::Error::other(e)))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(create)?;
        }
        let mut file = open_private(path).map_err(create)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(create)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(create)?;
        }
        Ok(SigningKey::from_private(key).expect("a generated key is ed25519"))
    }

    /// Loads the key at `path`, or creates it when no file is there; says which.
    pub fn load_or_generate(path: &Path, comment: &str) -> Result<(SigningKey, bool), KeyError> {
        if path.exists() {
            return SigningKey::load(path).map(|k| (k, false));
        }
        match SigningKey::generate(path, comment) {
            Ok(key) => Ok((key, true)),
            // Another process created it between the check and the create.
            Err(KeyError::Create { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                SigningKey::load(path).map(|k| (k, false))
            }
            Err(e) => Err(e),
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// `ssh-ed25519 AAAA…` (without a comment), as allowed-signers files and `GET /v1/keys` show it.
    pub fn public_openssh(&self) -> String {
        public_openssh(self.public_key())
    }

    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fn fingerprint(&self) -> String {
        self.public_key().fingerprint(HashAlg::Sha256).to_string()
    }

    /// The raw 32-byte ed25519 public key (for signed notes).
    pub fn ed25519_public(&self) -> [u8; 32] {
        self.dalek.verifying_key().to_bytes()
    }

    /// A raw ed25519 signature of `message` (for signed notes: checkpoints).
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.dalek.sign(message).to_bytes()
    }

    /// The armored SSH signature (`-----BEGIN SSH SIGNATURE-----` …) of `payload` in
    /// namespace `git`.
    pub fn sign_armored(&self, payload: &[u8]) -> String {
        // What `PrivateKey::sign` does, with the expanded key kept in `self`.
        let signed = SshSig::signed_data(GIT_NAMESPACE, HashAlg::Sha512, payload).expect("a non-empty namespace");
        let signature = ssh_key::Signature::new(ssh_key::Algorithm::Ed25519, self.sign_raw(&signed).to_vec())
            .expect("an ed25519 signature has 64 bytes");
        let sig = SshSig::new(self.public_key().key_data().clone(), GIT_NAMESPACE, HashAlg::Sha512, signature)
            .expect("a non-empty namespace");
        sig.to_pem(LineEnding::LF).expect("an SSH signature always encodes")
    }

    /// Signs unsigned commit bytes: returns them with a `gpgsig` header added as the last
    /// header, exactly as `git commit -S` (with `gpg.format=ssh`) places it.
    pub fn sign_commit(&self, unsigned: &[u8]) -> Vec<u8> {
        let armored = self.sign_armored(unsigned);
        let split = unsigned.windows(2).position(|w| w == b"\n\n").map_or(unsigned.len(), |p| p + 1);
        let mut out = Vec::with_capacity(unsigned.len() + armored.len() + 16);
        out.extend_from_slice(&unsigned[..split]);
        out.extend_from_slice(b"gpgsig");
        for line in armored.trim_end_matches('\n').split('\n') {
            out.push(b' ');
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(&unsigned[split..]);
        out
    }
}

/// `ssh-ed25519 AAAA…` without the key's comment.
pub fn public_openssh(key: &PublicKey) -> String {
    let mut key = key.clone();
    key.set_comment("");
    key.to_openssh().expect("a public key always encodes").trim_end().to_owned()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// A commit split into the bytes that were signed and its armored signature
/// (`None` when it carries no `gpgsig` header).
pub fn split_signed_commit(commit: &[u8]) -> (Vec<u8>, Option<String>) {
    let header_end = commit.windows(2).position(|w| w == b"\n\n").map_or(commit.len(), |p| p + 1);
    let mut payload = Vec::with_capacity(commit.len());
    let mut signature: Option<String> = None;
    let mut in_sig = false;
    for line in commit[..header_end].split_inclusive(|&b| b == b'\n') {
        if in_sig {
            if let Some(rest) = line.strip_prefix(b" ") {
                let sig = signature.as_mut().expect("in_sig implies a signature");
                sig.push_str(&String::from_utf8_lossy(rest));
                continue;
            }
            in_sig = false;
        }
        if let Some(rest) = line.strip_prefix(b"gpgsig ") {
            if signature.is_none() {
                signature = Some(String::from_utf8_lossy(rest).into_owned());
                in_sig = true;
                continue;
            }
        }
        payload.extend_from_slice(line);
    }
    payload.extend_from_slice(&commit[header_end..]);
    (payload, signature)
}

/// Why a commit's signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the commit is not signed")]
    Unsigned,
    #[error("the signature is not an SSH signature: {0}")]
    Malformed(String),
    #[error("the signature is not valid for the commit's bytes (key {key})")]
    Invalid { key: String },
    #[error("the signing key {key} is not in the allowed signers")]
    UnknownKey { key: String },
    #[error("the signing key {key} was not valid at {at} (allowed signers window)")]
    OutsideWindow { key: String, at: i64 },
}

/// One line of an allowed-signers file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedSigner {
    pub principal: String,
    pub key: PublicKey,
    /// Seconds since the epoch (UTC); the key verifies commits at or after this time.
    pub valid_after: Option<i64>,
    /// Seconds since the epoch (UTC); the key verifies commits before this time.
    pub valid_before: Option<i64>,
}

impl AllowedSigner {
    /// The line as `ssh-keygen -Y verify` reads it (namespaces `git`, times in UTC).
    pub fn to_line(&self) -> String {
        let mut options = vec![format!("namespaces=\"{GIT_NAMESPACE}\"")];
        if let Some(at) = self.valid_after {
            options.push(format!("valid-after=\"{}\"", ssh_time(at)));
        }
        if let Some(at) = self.valid_before {
            options.push(format!("valid-before=\"{}\"", ssh_time(at)));
        }
        format!("{} {} {}", self.principal, options.join(","), public_openssh(&self.key))
    }

    fn valid_at(&self, at: i64) -> bool {
        self.valid_after.is_none_or(|after| at >= after) && self.valid_before.is_none_or(|before| at < before)
    }
}

/// `YYYYMMDDHHMMSSZ`, the UTC form OpenSSH accepts for validity windows.
fn ssh_time(seconds: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fn parse_ssh_time(text: &str) -> Option<i64> {
    let digits = text.strip_suffix('Z').or_else(|| text.strip_suffix('z'))?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(digits.len(), 8 | 12 | 14) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).map_or(Some(0), |s| s.parse::<u32>().ok());
    let month = time::Month::try_from(u8::try_from(n(4..6)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(n(0..4)?).ok()?, month, u8::try_from(n(6..8)?).ok()?).ok()?;
    let hms = time::Time::from_hms(
        u8::try_from(n(8..10)?).ok()?,
        u8::try_from(n(10..12)?).ok()?,
        u8::try_from(n(12..14)?).ok()?,
    )
    .ok()?;
    Some(date.with_time(hms).assume_utc().unix_timestamp())
}

/// An allowed-signers file: the keys an auditor trusts, each with its validity window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedSigners {
    pub signers: Vec<AllowedSigner>,
}

impl AllowedSigners {
    /// One key, valid at all times (what `camledger keys show` prints), as principal `camledger`.
    pub fn only(key: &SigningKey) -> AllowedSigners {
        let mut public = key.public_key().clone();
        public.set_comment("");
        AllowedSigners {
            signers: vec![AllowedSigner {
                principal: "camledger".into(),
                key: public,
                valid_after: None,
                valid_before: None,
            }],
        }
    }

    /// Parses the lines camledger writes (`principal [options] ssh-ed25519 KEY [comment]`;
    /// `#` comments and blank lines skipped). Times must be UTC (`…Z`): local times would
    /// make verification depend on the auditor's time zone.
    pub fn parse(text: &str) -> Result<AllowedSigners, String> {
        let mut signers = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what}", n + 1);
            let (principal, rest) = line.split_once(char::is_whitespace).ok_or_else(|| bad("no key"))?;
            let rest = rest.trim_start();
            let (options, key_text) = if rest.starts_with("ssh-") {
                ("", rest)
            } else {
                rest.split_once(char::is_whitespace).ok_or_else(|| bad("no key after the options"))?
            };
            let key = PublicKey::from_openssh(key_text.trim()).map_err(|e| bad(&format!("key: {e}")))?;
            let mut signer =
                AllowedSigner { principal: principal.to_owned(), key, valid_after: None, valid_before: None };
            let mut git_allowed = true;
            for option in options.split(',').filter(|o| !o.is_empty()) {
                let (name, value) = option.split_once('=').unwrap_or((option, ""));
                let value = value.trim_matches('"');
                match name.to_ascii_lowercase().as_str() {
                    "namespaces" => git_allowed = value.split(',').any(|ns| ns == GIT_NAMESPACE),
                    "valid-after" => {
                        signer.valid_after =
                            Some(parse_ssh_time(value).ok_or_else(|| bad("valid-after must be YYYYMMDD[HHMM[SS]]Z"))?)
                    }
                    "valid-before" => {
                        signer.valid_before =
                            Some(parse_ssh_time(value).ok_or_else(|| bad("valid-before must be YYYYMMDD[HHMM[SS]]Z"))?)
                    }
                    "cert-authority" => return Err(bad("cert-authority is not supported")),
                    other => return Err(bad(&format!("unknown option {other}"))),
                }
            }
            if git_allowed {
                signers.push(signer);
            }
        }
        Ok(AllowedSigners { signers })
    }

    /// The file's text, one line per signer.
    pub fn to_text(&self) -> String {
        self.signers.iter().map(|s| s.to_line() + "\n").collect()
    }

    /// Checks the `gpgsig` of `commit` (whole commit bytes): a valid signature in namespace
    /// `git` by a listed key whose window holds `at` (the committer time, as git passes it to
    /// `ssh-keygen -Overify-time`). Returns the principal.
    pub fn verify_commit(&self, commit: &[u8], at: i64) -> Result<&str, SignatureError> {
        let (payload, armored) = split_signed_commit(commit);
        let armored = armored.ok_or(SignatureError::Unsigned)?;
        self.verify_armored(&payload, &armored, at)
    }

    /// Checks an armored SSH signature of `payload` (namespace `git`) as [`Self::verify_commit`] does.
    pub fn verify_armored(&self, payload: &[u8], armored: &str, at: i64) -> Result<&str, SignatureError> {
        let sig = SshSig::from_pem(armored.as_bytes()).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let key = PublicKey::from(sig.public_key().clone());
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let candidates: Vec<&AllowedSigner> =
            self.signers.iter().filter(|s| s.key.key_data() == key.key_data()).collect();
        if candidates.is_empty() {
            return Err(SignatureError::UnknownKey { key: fingerprint });
        }
        if sig.namespace() != GIT_NAMESPACE || key.verify(GIT_NAMESPACE, payload, &sig).is_err() {
            return Err(SignatureError::Invalid { key: fingerprint });
        }
        candidates
            .into_iter()
            .find(|s| s.valid_at(at))
            .map(|s| s.principal.as_str())
            .ok_or(SignatureError::OutsideWindow { key: fingerprint, at })
    }

    /// Verifies a raw ed25519 signature (signed notes) by any listed key valid at `at`.
    pub fn verify_raw(&self, message: &[u8], signature: &[u8; 64], key: &[u8; 32], at: i64) -> bool {
        use ed25519_dalek::Verifier as _;
        let listed = self
            .signers
            .iter()
            .any(|s| matches!(s.key.key_data(), ssh_key::public::KeyData::Ed25519(k) if &k.0 == key) && s.valid_at(at));
        listed
            && ed25519_dalek::VerifyingKey::from_bytes(key)
                .is_ok_and(|k| k.verify(message, &ed25519_dalek::Signature::from_bytes(signature)).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path) -> SigningKey {
        SigningKey::generate(&dir.join("keys").join("k"), "test").unwrap()
    }

    #[test]
    fn a_generated_key_is_private_and_loads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let made = key(dir.path());
        let path = dir.path().join("keys").join("k");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let loaded = SigningKey::load(&path).unwrap();
        assert_eq!(loaded.public_openssh(), made.public_openssh());
        assert!(format!("{loaded:?}").starts_with("SigningKey(SHA256:"));
        assert!(matches!(SigningKey::generate(&path, "again"), Err(KeyError::Create { .. })));
    }

    #[test]
    fn a_signed_commit_splits_back_into_its_payload_and_verifies_in_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path());
        let unsigned =
            b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a> 1 +0000\ncommitter c <c> 1 +0000\n\nmsg\n";
        let signed = key.sign_commit(unsigned);
        let (payload, sig) = split_signed_commit(&signed);
        assert_eq!(payload, unsigned);
        assert!(sig.unwrap().starts_with("-----BEGIN SSH SIGNATURE-----\n"));
        let signer = AllowedSigner {
            principal: "ledger".into(),
            key: key.public_key().clone(),
            valid_after: Some(100),
            valid_before: Some(200),
        };
        let allowed = AllowedSigners::parse(&AllowedSigners { signers: vec![signer] }.to_text()).unwrap();
        assert_eq!(allowed.verify_commit(&signed, 150), Ok("ledger"));
        assert!(matches!(allowed.verify_commit(&signed, 99), Err(SignatureError::OutsideWindow { .. })));
        assert!(matches!(allowed.verify_commit(&signed, 200), Err(SignatureError::OutsideWindow { .. })));
        let mut forged = signed.clone();
        let at = forged.len() - 2;
        forged[at] = b'X';
        assert!(matches!(allowed.verify_commit(&forged, 150), Err(SignatureError::Invalid { .. })));
        assert_eq!(allowed.verify_commit(unsigned, 150), Err(SignatureError::Unsigned));
        let other = SigningKey::generate(&dir.path().join("other"), "x").unwrap();
        assert!(matches!(
            allowed.verify_commit(&other.sign_commit(unsigned), 150),
            Err(SignatureError::UnknownKey { .. })
        ));
    }

    #[test]
    fn stock_git_verify_commit_accepts_the_signature_and_refuses_a_change() {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path());
        let git_dir = dir.path().join("r.git");
        let git = |args: &[&str], input: Option<&[u8]>| {
            let mut child = Command::new("git")
                .arg("--git-dir")
                .arg(&git_dir)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.unwrap_or_default()).unwrap();
            child.wait_with_output().unwrap()
        };
        assert!(git(&["init", "--bare", "-q"], None).status.success());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let unsigned = format!(
            "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor cam <cam@camera.camledger> {now} +0000\ncommitter camledger <node> {now} +0000\n\nmsg\n"
        );
        let signers = dir.path().join("allowed_signers");
        let signer = AllowedSigner {
            principal: "ledger".into(),
            key: key.public_key().clone(),
            valid_after: Some(now - 60),
            valid_before: None,
        };
        std::fs::write(&signers, AllowedSigners { signers: vec![signer] }.to_text()).unwrap();
        let check = |commit: &[u8]| {
            let out = git(&["hash-object", "-t", "commit", "-w", "--stdin"], Some(commit));
            assert!(out.status.success());
            let id = String::from_utf8(out.stdout).unwrap();
            let config = format!("gpg.ssh.allowedSignersFile={}", signers.display());
            git(&["-c", "gpg.format=ssh", "-c", &config, "verify-commit", id.trim()], None).status.success()
        };
        let signed = key.sign_commit(unsigned.as_bytes());
        assert!(check(&signed), "git verify-commit accepts camledger's signature");
        let forged = String::from_utf8(signed).unwrap().replace("msg\n", "msh\n");
        assert!(!check(forged.as_bytes()), "git verify-commit refuses changed bytes");
    }

    #[test]
    fn raw_signatures_verify_with_the_listed_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path());
        let allowed = AllowedSigners::only(&key);
        let sig = key.sign_raw(b"note");
        assert!(allowed.verify_raw(b"note", &sig, &key.ed25519_public(), 0));
        assert!(!allowed.verify_raw(b"nope", &sig, &key.ed25519_public(), 0));
        assert!(!AllowedSigners::default().verify_raw(b"note", &sig, &key.ed25519_public(), 0));
    }

    #[test]
    fn utc_validity_times_round_trip() {
        assert_eq!(ssh_time(0), "19700101000000Z");
        assert_eq!(parse_ssh_time("19700101000000Z"), Some(0));
        assert_eq!(parse_ssh_time("20261203Z"), Some(1_796_256_000));
        assert_eq!(parse_ssh_time("20261203"), None, "local times are refused");
    }
}
