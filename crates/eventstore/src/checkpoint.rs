//! Signed checkpoints: what the ledger's two chains looked like at one moment, signed with the
//! ledger key and kept outside the repository (the anchor store, `camledger_backup::anchor`).
//! Nothing inside a repository can reveal a rollback, a regenerated ledger or a history
//! re-chained to its head; a checkpoint signed by a key the attacker does not hold can.
//!
//! The format is a C2SP signed note (<https://c2sp.org/signed-note>) in the tlog-checkpoint
//! shape; normative description: `docs/event-format.md`, "Checkpoints". Body:
//!
//! ```text
//! camledger/<node_name>
//! <events_seq>
//! <base64(events head commit id, 20 raw bytes)>
//! verdicts <verdicts_seq> <verdicts head commit id, 40 hex>
//! time <RFC 3339 UTC, seconds>
//! ```
//!
//! then an empty line and one `— <origin> <base64(key id || ed25519 signature)>` line per
//! signer. Parsing is strict: anything but exactly this is refused, and a note larger than
//! [`MAX_NOTE_BYTES`] is refused before it is looked at.

use std::collections::{BTreeMap, BTreeSet};

use base64ct::{Base64, Encoding as _};
use gix::ObjectId;
use sha2::Digest as _;

use crate::sign::{AllowedSigners, SigningKey};
use crate::{read, verdict, Ledger};

/// Origins start with this; the rest is the ledger's node name.
pub const ORIGIN_PREFIX: &str = "camledger/";

/// The largest note accepted (a real one is about 250 bytes).
pub const MAX_NOTE_BYTES: usize = 8 * 1024;

/// The most signature lines a note may carry.
const MAX_SIGNATURES: usize = 16;

/// The commit id that stands for "no commit yet" (seq 0).
pub const ZERO_ID: &str = "0000000000000000000000000000000000000000";

/// The signature line's prefix: U+2014 EM DASH and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// One checkpoint: both chains' seqs and heads, the origin, and the time it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// `camledger/<node_name>`.
    pub origin: String,
    /// Seq of the newest event (0 when there is none).
    pub events_seq: u64,
    /// 40-hex commit id of the newest event ([`ZERO_ID`] when there is none).
    pub events_head: String,
    /// `event_seq` of the newest verdict (0 when there is none).
    pub verdicts_seq: u64,
    /// 40-hex commit id of the newest verdict ([`ZERO_ID`] when there is none).
    pub verdicts_head: String,
    /// Seconds since the epoch, UTC.
    pub time: i64,
}

/// Which chain a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    Events,
    Verdicts,
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Chain::Events => "events",
            Chain::Verdicts => "verdicts",
        })
    }
}

/// Why a note was refused (malformed, or not signed by an allowed key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the checkpoint note is {len} bytes; at most {MAX_NOTE_BYTES} are accepted")]
    TooLarge { len: usize },
    #[error("malformed checkpoint note: {0}")]
    Malformed(String),
    #[error(
        "the checkpoint of {origin} at {time} carries no signature by an allowed key \
         (key ids in the note: {key_ids})"
    )]
    UnknownKey { origin: String, time: String, key_ids: String },
    #[error(
        "the checkpoint of {origin} at {time} has an invalid signature by key id {key_id} \
         (forged, altered after signing, or signed outside the key's validity window)"
    )]
    BadSignature { origin: String, time: String, key_id: String },
}

fn malformed(what: impl Into<String>) -> NoteError {
    NoteError::Malformed(what.into())
}

/// Why a ledger does not satisfy a checkpoint, or a checkpoint does not extend another.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    /// The ledger's chain ends before the checkpoint's seq: a rollback (or lost data).
    #[error(
        "the {chain} chain is behind the checkpoint of {time}: its head is at seq {ledger_seq}, \
         the checkpoint says seq {checkpoint_seq} (head {checkpoint_head}): a rollback"
    )]
    Behind { chain: Chain, ledger_seq: u64, checkpoint_seq: u64, checkpoint_head: String, time: String },
    /// The chain holds another commit at the checkpoint's seq: history was rewritten.
    #[error(
        "the {chain} chain has commit {found} at seq {seq}, the checkpoint of {time} says {expected}: \
         the history was rewritten or regenerated"
    )]
    NotOnChain { chain: Chain, seq: u64, expected: String, found: String, time: String },
    /// The checkpoints name different ledgers.
    #[error("the checkpoint is for {found}, the previous one for {expected}")]
    OtherOrigin { expected: String, found: String },
    /// A new checkpoint goes back in seq or time.
    #[error(
        "the new checkpoint ({chain} seq {new_seq}, head {new_head}, time {new_time}) goes back from the previous one \
         ({chain} seq {previous_seq}, head {previous_head}, time {previous_time})"
    )]
    GoesBack {
        chain: Chain,
        new_seq: u64,
        new_head: String,
        new_time: String,
        previous_seq: u64,
        previous_head: String,
        previous_time: String,
    },
    /// Reading the ledger failed.
    #[error(transparent)]
    Read(#[from] read::Error),
}

impl Checkpoint {
    /// The body the signature covers (every line ends with `\n`).
    pub fn body(&self) -> String {
        let events_head =
            ObjectId::from_hex(self.events_head.as_bytes()).map_or_else(|_| vec![0; 20], |id| id.as_bytes().to_vec());
        format!(
            "{}\n{}\n{}\nverdicts {} {}\ntime {}\n",
            self.origin,
            self.events_seq,
            Base64::encode_string(&events_head),
            self.verdicts_seq,
            self.verdicts_head,
            format_time(self.time)
        )
    }

    /// The checkpoint's time as the body writes it (`2026-12-03T13:00:00Z`).
    pub fn time_text(&self) -> String {
        format_time(self.time)
    }

    /// `events seq S head H, verdicts seq S head H, time T`, as the commands print it.
    pub fn summary(&self) -> String {
        format!(
            "events seq {} head {}, verdicts seq {} head {}, time {}",
            self.events_seq,
            self.events_head,
            self.verdicts_seq,
            self.verdicts_head,
            self.time_text()
        )
    }

    /// Parses a body strictly: exactly the five lines, canonical numbers and encodings.
    pub fn parse_body(body: &str) -> Result<Checkpoint, NoteError> {
        if body.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: body.len() });
        }
        let lines: Vec<&str> =
            body.strip_suffix('\n').ok_or_else(|| malformed("the body must end with a newline"))?.split('\n').collect();
        let [origin, events_seq, events_head, verdicts, time] = lines.as_slice() else {
            return Err(malformed(format!("the body has {} lines, a checkpoint has 5", lines.len())));
        };
        let node = origin
            .strip_prefix(ORIGIN_PREFIX)
            .ok_or_else(|| malformed(format!("the origin must start with {ORIGIN_PREFIX}")))?;
        if !crate::format::is_valid_node_name(node) {
            return Err(malformed("the origin's node name is not printable ASCII without spaces, '<' or '>'"));
        }
        let events_seq = parse_seq(events_seq).ok_or_else(|| malformed("the events seq is not a canonical decimal"))?;
        let raw = Base64::decode_vec(events_head).map_err(|_| malformed("the events head is not standard base64"))?;
        let raw: [u8; 20] = raw.try_into().map_err(|_| malformed("the events head is not 20 bytes"))?;
        if Base64::encode_string(&raw) != *events_head {
            return Err(malformed("the events head is not canonical base64"));
        }
        let events_head = hex::encode(raw);
        let rest = verdicts.strip_prefix("verdicts ").ok_or_else(|| malformed("line 4 must be 'verdicts SEQ ID'"))?;
        let (verdicts_seq, verdicts_head) =
            rest.split_once(' ').ok_or_else(|| malformed("line 4 must be 'verdicts SEQ ID'"))?;
        let verdicts_seq =
            parse_seq(verdicts_seq).ok_or_else(|| malformed("the verdicts seq is not a canonical decimal"))?;
        if verdicts_head.len() != 40 || !verdicts_head.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(malformed("the verdicts head is not 40 lowercase hex digits"));
        }
        let time = time.strip_prefix("time ").ok_or_else(|| malformed("line 5 must be 'time RFC3339'"))?;
        let time = parse_time(time).ok_or_else(|| malformed("the time is not RFC 3339 UTC with seconds (…T…Z)"))?;
        for (chain, seq, head) in
            [(Chain::Events, events_seq, events_head.as_str()), (Chain::Verdicts, verdicts_seq, verdicts_head)]
        {
            if (seq == 0) != (head == ZERO_ID) {
                return Err(malformed(format!("the {chain} seq is 0 exactly when its head is all zeros")));
            }
        }
        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            events_seq,
            events_head,
            verdicts_seq,
            verdicts_head: verdicts_head.to_owned(),
            time,
        })
    }

    /// The signed note: the body, an empty line and the signature line of `key`.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let mut blob = key_id(&self.origin, &key.ed25519_public()).to_vec();
        blob.extend_from_slice(&key.sign_raw(body.as_bytes()));
        format!("{body}\n{SIGNATURE_PREFIX}{} {}\n", self.origin, Base64::encode_string(&blob))
    }

    /// Parses a note and checks it carries a valid signature by a key in `signers` that was
    /// valid at the checkpoint's time. Signature lines by other names or unknown keys are
    /// ignored (C2SP: cosigners a verifier does not know); at least one must verify.
    pub fn verify_note(note: &str, signers: &AllowedSigners) -> Result<Checkpoint, NoteError> {
        let (checkpoint, signatures) = Checkpoint::parse_note(note)?;
        let body = &note[..note.find("\n\n").expect("parse_note found the empty line") + 1];
        let mut ids = Vec::new();
        let keys = ed25519_keys(signers);
        let mut bad = None;
        for signature in signatures.iter().filter(|s| s.name == checkpoint.origin) {
            ids.push(hex::encode(signature.key_id));
            // Key ids are 4 bytes: more than one allowed key may carry the same id.
            for key in keys.iter().filter(|k| key_id(&checkpoint.origin, k) == signature.key_id) {
                if signers.verify_raw(body.as_bytes(), &signature.signature, key, checkpoint.time) {
                    return Ok(checkpoint);
                }
                bad.get_or_insert(signature.key_id);
            }
        }
        if let Some(key_id) = bad {
            return Err(NoteError::BadSignature {
                origin: checkpoint.origin.clone(),
                time: checkpoint.time_text(),
                key_id: hex::encode(key_id),
            });
        }
        Err(NoteError::UnknownKey {
            origin: checkpoint.origin.clone(),
            time: checkpoint.time_text(),
            key_ids: if ids.is_empty() { "none".into() } else { ids.join(", ") },
        })
    }

    /// Parses a note strictly without checking signatures: the checkpoint and its signature
    /// lines (each well-formed: name, 4-byte key id, 64-byte ed25519 signature).
    pub fn parse_note(note: &str) -> Result<(Checkpoint, Vec<NoteSignature>), NoteError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge { len: note.len() });
        }
        let split = note.find("\n\n").ok_or_else(|| malformed("no empty line between body and signatures"))?;
        let checkpoint = Checkpoint::parse_body(&note[..split + 1])?;
        if note.len() == split + 2 {
            return Err(malformed("the note carries no signature"));
        }
        let lines = note[split + 2..]
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the note must end with a newline after its last signature"))?;
        let mut signatures = Vec::new();
        for line in lines.split('\n') {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| malformed("a signature line must start with an em dash and a space"))?;
            let (name, blob) = rest.split_once(' ').ok_or_else(|| malformed("a signature line is '— NAME BASE64'"))?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(malformed("a signature's key name is not printable ASCII"));
            }
            let blob = Base64::decode_vec(blob).map_err(|_| malformed("a signature is not standard base64"))?;
            if blob.len() != 68 {
                return Err(malformed("a signature is not a 4-byte key id and a 64-byte ed25519 signature"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_id: blob[..4].try_into().expect("4 bytes"),
                signature: blob[4..].try_into().expect("64 bytes"),
            });
            if signatures.len() > MAX_SIGNATURES {
                return Err(malformed(format!("more than {MAX_SIGNATURES} signature lines")));
            }
        }
        Ok((checkpoint, signatures))
    }

    /// Whether this checkpoint extends `previous` on `ledger`: same origin, seqs and time not
    /// going back, and both checkpoints' heads on the ledger's chains at their seqs (so the
    /// earlier heads are ancestors of the later ones).
    pub fn extends(&self, previous: &Checkpoint, ledger: &Ledger) -> Result<(), Mismatch> {
        if self.origin != previous.origin {
            return Err(Mismatch::OtherOrigin { expected: previous.origin.clone(), found: self.origin.clone() });
        }
        for (chain, new_seq, new_head, previous_seq, previous_head) in [
            (Chain::Events, self.events_seq, &self.events_head, previous.events_seq, &previous.events_head),
            (Chain::Verdicts, self.verdicts_seq, &self.verdicts_head, previous.verdicts_seq, &previous.verdicts_head),
        ] {
            if new_seq < previous_seq || self.time < previous.time {
                return Err(Mismatch::GoesBack {
                    chain,
                    new_seq,
                    new_head: new_head.clone(),
                    new_time: self.time_text(),
                    previous_seq,
                    previous_head: previous_head.clone(),
                    previous_time: previous.time_text(),
                });
            }
        }
        ledger.satisfies_all(&[self.clone(), previous.clone()])
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: [u8; 4],
    pub signature: [u8; 64],
}

/// The C2SP key id of an ed25519 key under `name`: the first 4 bytes of
/// SHA-256(name || 0x0A || 0x01 || public key).
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut hash = sha2::Sha256::new();
    hash.update(name.as_bytes());
    hash.update([0x0a, 0x01]);
    hash.update(public);
    hash.finalize()[..4].try_into().expect("SHA-256 is 32 bytes")
}

/// The origin of a ledger whose node name is `node_name`.
pub fn origin_for(node_name: &str) -> String {
    format!("{ORIGIN_PREFIX}{node_name}")
}

fn ed25519_keys(signers: &AllowedSigners) -> Vec<[u8; 32]> {
    let mut keys: Vec<[u8; 32]> = signers
        .signers
        .iter()
        .filter_map(|s| match s.key.key_data() {
            ssh_key::public::KeyData::Ed25519(key) => Some(key.0),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// A decimal without sign or leading zeros that fits u64.
fn parse_seq(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

const TIME_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

fn format_time(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(TIME_FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

fn parse_time(text: &str) -> Option<i64> {
    if text.len() != 20 {
        return None;
    }
    let at = time::PrimitiveDateTime::parse(text, TIME_FORMAT).ok()?.assume_utc().unix_timestamp();
    (format_time(at) == text).then_some(at)
}

impl Ledger {
    /// The checkpoint of the ledger as it is now (both heads), stamped with `time`.
    pub fn current_checkpoint(&self, time: i64) -> Result<Checkpoint, read::Error> {
        let events = self.head()?;
        let verdicts = self.verdict_head()?;
        Ok(Checkpoint {
            origin: origin_for(&self.config().node_name),
            events_seq: events.as_ref().map_or(0, |h| h.seq),
            events_head: events.map_or_else(|| ZERO_ID.to_owned(), |h| h.id),
            verdicts_seq: verdicts.as_ref().map_or(0, |h| h.event_seq),
            verdicts_head: verdicts.map_or_else(|| ZERO_ID.to_owned(), |h| h.id),
            time,
        })
    }

    /// Whether the ledger has the checkpoint's heads at its seqs on both chains, and is not
    /// behind it. Walks the chains from their heads (never `seq.idx`, which an attacker could
    /// rewrite along with history).
    pub fn satisfies(&self, checkpoint: &Checkpoint) -> Result<(), Mismatch> {
        self.satisfies_all(std::slice::from_ref(checkpoint))
    }

    /// [`Self::satisfies`] for many checkpoints with one walk down each chain (to the lowest
    /// seq named): what verifying a whole anchor store costs.
    pub fn satisfies_all(&self, checkpoints: &[Checkpoint]) -> Result<(), Mismatch> {
        self.check_checkpoints(checkpoints).map_err(|failure| failure.1)
    }

    /// Like [`Self::satisfies_all`]; on failure also says which checkpoint (its index),
    /// checking the newest first so that a rollback is reported against the latest.
    fn check_checkpoints(&self, checkpoints: &[Checkpoint]) -> Result<(), Box<(usize, Mismatch)>> {
        let repo = self.repo();
        let unindexed = |e: read::Error| Box::new((checkpoints.len().saturating_sub(1), Mismatch::Read(e)));
        let events = read::head_of(&repo).map_err(unindexed)?;
        let events_seq = events.map_or(0, |(seq, _)| seq);
        let verdict_head = verdict_head_target(&repo).map_err(unindexed)?;
        let verdicts_seq = match verdict_head {
            Some(id) => verdict_seq_and_parent(&repo, id).map_err(unindexed)?.0,
            None => 0,
        };
        for (n, c) in checkpoints.iter().enumerate().rev() {
            for (chain, have, seq, head) in [
                (Chain::Events, events_seq, c.events_seq, &c.events_head),
                (Chain::Verdicts, verdicts_seq, c.verdicts_seq, &c.verdicts_head),
            ] {
                if have < seq {
                    return Err(Box::new((
                        n,
                        Mismatch::Behind {
                            chain,
                            ledger_seq: have,
                            checkpoint_seq: seq,
                            checkpoint_head: head.clone(),
                            time: c.time_text(),
                        },
                    )));
                }
            }
        }
        let wanted =
            |f: fn(&Checkpoint) -> u64| -> BTreeSet<u64> { checkpoints.iter().map(f).filter(|&s| s > 0).collect() };
        let mut event_ids: BTreeMap<u64, ObjectId> = BTreeMap::new();
        let event_seqs = wanted(|c| c.events_seq);
        if let (Some(&lowest), Some((mut seq, mut id))) = (event_seqs.first(), events) {
            loop {
                if event_seqs.contains(&seq) {
                    event_ids.insert(seq, id);
                }
                if seq <= lowest {
                    break;
                }
                let (_, parent) = read::seq_and_parent(&repo, id).map_err(unindexed)?;
                let corrupt = |what: String| unindexed(read::Error::Corrupt { id: id.to_string(), what });
                let parent =
                    parent.ok_or_else(|| corrupt(format!("the events chain ends at seq {seq}, before seq 1")))?;
                let (parent_seq, _) = read::seq_and_parent(&repo, parent).map_err(unindexed)?;
                if parent_seq.checked_add(1) != Some(seq) {
                    return Err(corrupt(format!("its parent {parent} holds seq {parent_seq}, not {}", seq - 1)));
                }
                (seq, id) = (parent_seq, parent);
            }
        }
        let mut verdict_ids: BTreeMap<u64, ObjectId> = BTreeMap::new();
        let verdict_seqs = wanted(|c| c.verdicts_seq);
        if let (Some(&lowest), Some(mut id)) = (verdict_seqs.first(), verdict_head) {
            loop {
                let (seq, parent) = verdict_seq_and_parent(&repo, id).map_err(unindexed)?;
                if verdict_seqs.contains(&seq) {
                    verdict_ids.insert(seq, id);
                }
                match parent {
                    Some(parent) if seq > lowest => id = parent,
                    _ => break,
                }
            }
        }
        for (n, c) in checkpoints.iter().enumerate().rev() {
            for (chain, ids, seq, head) in [
                (Chain::Events, &event_ids, c.events_seq, &c.events_head),
                (Chain::Verdicts, &verdict_ids, c.verdicts_seq, &c.verdicts_head),
            ] {
                if seq == 0 {
                    continue;
                }
                let found = ids.get(&seq).map_or_else(|| "none".to_owned(), ToString::to_string);
                if &found != head {
                    return Err(Box::new((
                        n,
                        Mismatch::NotOnChain { chain, seq, expected: head.clone(), found, time: c.time_text() },
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The commit `refs/heads/verdicts` names, if any.
fn verdict_head_target(repo: &gix::Repository) -> Result<Option<ObjectId>, read::Error> {
    let Some(reference) = repo.try_find_reference(verdict::VERDICTS_REF).map_err(read::Error::Git)? else {
        return Ok(None);
    };
    match reference.inner.target {
        gix::refs::Target::Object(id) => Ok(Some(id)),
        gix::refs::Target::Symbolic(_) => {
            Err(read::Error::Corrupt { id: verdict::VERDICTS_REF.to_owned(), what: "is a symbolic ref".into() })
        }
    }
}

/// A verdict commit's `event_seq` (from its `verdict.json`) and first parent.
fn verdict_seq_and_parent(repo: &gix::Repository, id: ObjectId) -> Result<(u64, Option<ObjectId>), read::Error> {
    let corrupt = |what: &str| read::Error::Corrupt { id: id.to_string(), what: what.to_owned() };
    let data = read::find(repo, id, gix::objs::Kind::Commit)?;
    let commit = crate::format::parse_commit(&data).ok_or_else(|| corrupt("malformed verdict commit"))?;
    let tree = crate::format::parse_tree(&read::find(repo, commit.tree, gix::objs::Kind::Tree)?)
        .ok_or_else(|| corrupt("malformed verdict tree"))?;
    let json = match tree.as_slice() {
        [(_, name, json)] if name == "verdict.json" => *json,
        _ => return Err(corrupt("the verdict tree must hold exactly verdict.json")),
    };
    let verdict = verdict::Verdict::from_json(&read::find(repo, json, gix::objs::Kind::Blob)?)
        .map_err(|e| corrupt(&format!("verdict.json: {e}")))?;
    Ok((verdict.event_seq, commit.parents.first().copied()))
}

/// What [`verify_anchored`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchoredReport {
    /// Checkpoints whose signature, heads and order were checked.
    pub checkpoints: usize,
    /// The newest checkpoint (the ledger is not behind it); `None` when there were none.
    pub latest: Option<Checkpoint>,
}

/// Why [`verify_anchored`] failed; names the checkpoint (its position, oldest first, from 1).
#[derive(Debug, thiserror::Error)]
pub enum AnchoredError {
    #[error("anchored checkpoint {index}: {source}")]
    Note {
        index: usize,
        #[source]
        source: NoteError,
    },
    #[error("anchored checkpoint {index} is for {found}, the others for {expected}")]
    OtherOrigin { index: usize, expected: String, found: String },
    #[error("anchored checkpoint {index} does not extend checkpoint {previous}: {source}")]
    NotExtending {
        index: usize,
        previous: usize,
        #[source]
        source: Box<Mismatch>,
    },
    #[error("anchored checkpoint {index} (events seq {events_seq}, time {time}): {source}")]
    Ledger {
        index: usize,
        events_seq: u64,
        time: String,
        #[source]
        source: Box<Mismatch>,
    },
}

/// The anchored-checkpoint rule of `camledger verify --anchor-url`: every note (oldest first,
/// all of one origin) carries a valid signature by a key in `signers` valid at its time, each
/// extends the one before, every checkpoint's heads are on the ledger's chains at their seqs,
/// and the ledger is not behind the latest. Stops at the first failure and names it.
pub fn verify_anchored(
    ledger: &Ledger,
    notes: &[String],
    signers: &AllowedSigners,
) -> Result<AnchoredReport, AnchoredError> {
    let mut checkpoints: Vec<Checkpoint> = Vec::with_capacity(notes.len());
    for (n, note) in notes.iter().enumerate() {
        let index = n + 1;
        let checkpoint =
            Checkpoint::verify_note(note, signers).map_err(|source| AnchoredError::Note { index, source })?;
        if let Some(previous) = checkpoints.last() {
            if previous.origin != checkpoint.origin {
                return Err(AnchoredError::OtherOrigin {
                    index,
                    expected: previous.origin.clone(),
                    found: checkpoint.origin,
                });
            }
            let (chain, new_seq, new_head, previous_seq, previous_head) =
                if checkpoint.verdicts_seq < previous.verdicts_seq {
                    (
                        Chain::Verdicts,
                        checkpoint.verdicts_seq,
                        &checkpoint.verdicts_head,
                        previous.verdicts_seq,
                        &previous.verdicts_head,
                    )
                } else {
                    (
                        Chain::Events,
                        checkpoint.events_seq,
                        &checkpoint.events_head,
                        previous.events_seq,
                        &previous.events_head,
                    )
                };
            if new_seq < previous_seq || checkpoint.time < previous.time {
                return Err(AnchoredError::NotExtending {
                    index,
                    previous: n,
                    source: Box::new(Mismatch::GoesBack {
                        chain,
                        new_seq,
                        new_head: new_head.clone(),
                        new_time: checkpoint.time_text(),
                        previous_seq,
                        previous_head: previous_head.clone(),
                        previous_time: previous.time_text(),
                    }),
                });
            }
        }
        checkpoints.push(checkpoint);
    }
    ledger.check_checkpoints(&checkpoints).map_err(|failure| {
        let (n, source) = *failure;
        AnchoredError::Ledger {
            index: n + 1,
            events_seq: checkpoints[n].events_seq,
            time: checkpoints[n].time_text(),
            source: Box::new(source),
        }
    })?;
    Ok(AnchoredReport { checkpoints: checkpoints.len(), latest: checkpoints.last().cloned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::AllowedSigner;

    fn key(dir: &std::path::Path, name: &str) -> SigningKey {
        SigningKey::generate(&dir.join(name), name).unwrap()
    }

    fn allowed(keys: &[&SigningKey]) -> AllowedSigners {
        AllowedSigners {
            signers: keys
                .iter()
                .map(|k| AllowedSigner {
                    principal: "camledger".into(),
                    key: k.public_key().clone(),
                    valid_after: None,
                    valid_before: None,
                })
                .collect(),
        }
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "camledger/node-1".into(),
            events_seq: 42,
            events_head: "0123456789abcdef0123456789abcdef01234567".into(),
            verdicts_seq: 40,
            verdicts_head: "89abcdef0123456789abcdef0123456789abcdef".into(),
            time: 1_796_302_800,
        }
    }

    #[test]
    fn the_body_is_the_five_lines_of_the_format() {
        assert_eq!(
            checkpoint().body(),
            "camledger/node-1\n42\nASNFZ4mrze8BI0VniavN7wEjRWc=\n\
             verdicts 40 89abcdef0123456789abcdef0123456789abcdef\ntime 2026-12-03T13:00:00Z\n"
        );
        assert_eq!(Checkpoint::parse_body(&checkpoint().body()).unwrap(), checkpoint());
    }

    #[test]
    fn an_empty_ledger_has_zero_seqs_and_zero_heads() {
        let empty = Checkpoint {
            events_seq: 0,
            events_head: ZERO_ID.into(),
            verdicts_seq: 0,
            verdicts_head: ZERO_ID.into(),
            ..checkpoint()
        };
        assert!(empty.body().contains("\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nverdicts 0 0000"));
        assert_eq!(Checkpoint::parse_body(&empty.body()).unwrap(), empty);
    }

    #[test]
    fn a_signed_note_verifies_with_the_key_and_names_it_by_its_c2sp_key_id() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), "k");
        let note = checkpoint().sign(&key);
        let (parsed, signatures) = Checkpoint::parse_note(&note).unwrap();
        assert_eq!(parsed, checkpoint());
        assert_eq!(signatures.len(), 1);
        assert_eq!(signatures[0].name, "camledger/node-1");
        assert_eq!(signatures[0].key_id, key_id("camledger/node-1", &key.ed25519_public()));
        assert!(note.starts_with(&(checkpoint().body() + "\n\u{2014} camledger/node-1 ")));
        assert_eq!(Checkpoint::verify_note(&note, &allowed(&[&key])).unwrap(), checkpoint());
    }

    #[test]
    fn a_note_signed_by_another_key_is_refused_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (key(dir.path(), "ours"), key(dir.path(), "theirs"));
        let forged = checkpoint().sign(&theirs);
        assert!(matches!(Checkpoint::verify_note(&forged, &allowed(&[&ours])), Err(NoteError::UnknownKey { .. })));
        assert_eq!(Checkpoint::verify_note(&forged, &allowed(&[&ours, &theirs])).unwrap(), checkpoint());
    }

    #[test]
    fn a_body_changed_after_signing_fails_its_signature() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), "k");
        let altered = checkpoint().sign(&key).replacen("\n42\n", "\n43\n", 1);
        assert!(matches!(Checkpoint::verify_note(&altered, &allowed(&[&key])), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn a_key_outside_its_validity_window_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), "k");
        let mut signers = allowed(&[&key]);
        signers.signers[0].valid_before = Some(checkpoint().time);
        let note = checkpoint().sign(&key);
        assert!(matches!(Checkpoint::verify_note(&note, &signers), Err(NoteError::BadSignature { .. })));
    }

    #[test]
    fn a_signature_with_a_wrong_key_id_is_not_matched_to_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), "k");
        let note = checkpoint().sign(&key);
        let (_, signatures) = Checkpoint::parse_note(&note).unwrap();
        let mut blob = vec![0xde, 0xad, 0xbe, 0xef];
        blob.extend_from_slice(&signatures[0].signature);
        let body = checkpoint().body();
        let wrong_id = format!("{body}\n\u{2014} camledger/node-1 {}\n", Base64::encode_string(&blob));
        let err = Checkpoint::verify_note(&wrong_id, &allowed(&[&key])).unwrap_err();
        assert!(matches!(&err, NoteError::UnknownKey { key_ids, .. } if key_ids == "deadbeef"), "{err}");
    }

    #[test]
    fn a_signature_under_another_name_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), "k");
        let note = checkpoint().sign(&key).replace("\u{2014} camledger/node-1 ", "\u{2014} camledger/other ");
        assert!(matches!(Checkpoint::verify_note(&note, &allowed(&[&key])), Err(NoteError::UnknownKey { .. })));
    }

    #[test]
    fn hostile_notes_are_refused_as_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), "k");
        let good = checkpoint().sign(&key);
        let body = checkpoint().body();
        let signature_line = &good[body.len() + 1..];
        let cases: Vec<(&str, String)> = vec![
            ("no signature", format!("{body}\n")),
            ("no empty line", format!("{body}{signature_line}")),
            ("bad base64 in the signature", good.replace(signature_line, "\u{2014} camledger/node-1 !!!!\n")),
            ("short signature", format!("{body}\n\u{2014} camledger/node-1 AAAA\n")),
            ("ascii dash", good.replace('\u{2014}', "-")),
            ("extra body line", good.replacen("time ", "extra\ntime ", 1)),
            ("extra line after the signatures", format!("{good}trailing\n")),
            ("no final newline", good.trim_end().to_owned()),
            ("crlf", good.replace('\n', "\r\n")),
            ("leading zero seq", good.replacen("\n42\n", "\n042\n", 1)),
            ("signed seq", good.replacen("\n42\n", "\n+42\n", 1)),
            ("bad base64 head", good.replacen("ASNFZ4mrze8BI0VniavN7wEjRWc=", "ASNFZ4mrze8BI0VniavN7wEjRWc", 1)),
            ("short head", good.replacen("ASNFZ4mrze8BI0VniavN7wEjRWc=", "ASNFZ4mrze8BI0Vn", 1)),
            ("uppercase verdict head", good.replacen("89abcdef0123", "89ABCDEF0123", 1)),
            ("local time", good.replacen("13:00:00Z", "13:00:00+01:00", 1)),
            ("fractional time", good.replacen("13:00:00Z", "13:00:00.5Z", 1)),
            ("impossible date", good.replacen("2026-12-03", "2026-02-30", 1)),
            ("origin without prefix", good.replacen("camledger/node-1\n", "node-1\n", 1)),
            ("origin with a space", good.replacen("camledger/node-1\n", "camledger/node 1\n", 1)),
            ("seq without head", Checkpoint { events_seq: 0, ..checkpoint() }.sign(&key)),
        ];
        for (what, note) in cases {
            let err = Checkpoint::verify_note(&note, &allowed(&[&key])).expect_err(what);
            assert!(matches!(err, NoteError::Malformed(_)), "{what}: {err}");
        }
    }

    #[test]
    fn a_huge_note_is_refused_before_parsing() {
        let huge = "camledger/x\n".repeat(1 << 20);
        assert!(matches!(Checkpoint::parse_note(&huge), Err(NoteError::TooLarge { .. })));
        let many = format!("{}\n{}", checkpoint().body(), "\u{2014} a AAAA\n".repeat(1000));
        assert!(matches!(Checkpoint::parse_note(&many), Err(NoteError::TooLarge { .. })));
    }

    #[test]
    fn every_single_byte_change_is_refused_or_fails_the_signature() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(dir.path(), "k");
        let good = checkpoint().sign(&key).into_bytes();
        let signers = allowed(&[&key]);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut note = good.clone();
            let at = (state % note.len() as u64) as usize;
            note[at] ^= 1 << (state >> 60 & 7);
            let Ok(text) = String::from_utf8(note) else { continue };
            if let Ok((parsed, _)) = Checkpoint::parse_note(&text) {
                assert!(text.starts_with(&parsed.body()), "accepted bodies are canonical: {text:?}");
            }
            assert!(Checkpoint::verify_note(&text, &signers).is_err(), "a changed note verified: {text:?}");
        }
    }

    #[test]
    fn times_round_trip_in_rfc3339_utc() {
        for at in [0, 1_796_302_800, 253_402_300_799] {
            assert_eq!(parse_time(&format_time(at)), Some(at));
        }
        assert_eq!(parse_time("2026-12-03t13:00:00z"), None);
    }
}
