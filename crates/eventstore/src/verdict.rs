//! Result commits: processors' verdicts on `refs/heads/verdicts`, mirrored as git notes on the
//! event commits in `refs/notes/verdicts` so `git log --notes=verdicts refs/heads/events`
//! shows them with stock git.
//!
//! - One verdict commit per judged event, in event-seq order with no gaps (verdict `k` judges
//!   event `k`), so the verdict head is the processors' checkpoint.
//! - Both refs move in one ref transaction (`publish.rs`), each with a compare-and-swap: two workers
//!   racing for the same events cannot both win; the loser gets [`Error::Conflict`] with the
//!   new head and continues from there.
//! - The notes tree uses a fixed 2/2/36 fanout (`ab/cd/ef01…`), so a batch rewrites only the
//!   few small subtrees it touches even at a million notes. Stock git reads any fanout.
//! - The notes commit records how far it covers (`Verdicts-Through:` trailer). Should a crash
//!   ever leave the notes behind the verdicts, [`Ledger::repair_verdict_notes`] (and every
//!   append) adds the missing notes from the verdict commits.
//! - Scores are stored as integers in millionths, so `verdict.json` stays canonical JSON
//!   (RFC 8785) without float formatting rules; readers get `f64` back, exact to 1e-6.

use std::collections::BTreeMap;

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::format::{self, is_sha256_hex};
use crate::pack::{self, PackEntry};
use crate::read::{self, find};
use crate::{publish, Ledger};

/// The ref of verdict commits.
pub const VERDICTS_REF: &str = "refs/heads/verdicts";
/// The notes ref mirroring verdicts onto event commits.
pub const NOTES_REF: &str = "refs/notes/verdicts";
/// Version of `verdict.json`.
pub const VERDICT_FORMAT_VERSION: u32 = 1;

/// A processor's judgement of one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub event_seq: u64,
    /// 40-hex commit id of the judged event.
    pub event_id: String,
    pub spam: bool,
    /// `[a-z_]{1,32}` each, e.g. `duplicate`, `near_duplicate`, `blank`, `classifier`.
    pub reasons: Vec<String>,
    /// Named scores; stored rounded to 1e-6.
    pub scores: BTreeMap<String, f64>,
    pub near_duplicate_of: Option<u64>,
    /// SHA-256 (64 lowercase hex) of the model file.
    pub model_sha256: String,
    pub processor_version: String,
    /// The image's perceptual hash as `<algorithm>:<lowercase hex>` (e.g. `dhash:00f0…`, 1–64
    /// hex digits), so a processor rebuilds its near-duplicate index from verdicts without
    /// decoding images again. `None` for an undecodable image (and in verdicts written before
    /// the field existed).
    pub perceptual_hash: Option<String>,
}

/// `verdict.json` exactly (canonical JSON, keys sorted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictJson {
    format_version: u32,
    event_seq: u64,
    event_id: String,
    spam: bool,
    reasons: Vec<String>,
    /// Millionths.
    scores: BTreeMap<String, i64>,
    near_duplicate_of: Option<u64>,
    model_sha256: String,
    processor_version: String,
    /// `<algorithm>:<hex>`. A string, not a number: canonical JSON numbers are IEEE doubles,
    /// exact only below 2^53. Absent (not null) when unknown, so verdicts written before the
    /// field existed stay canonical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    perceptual_hash: Option<String>,
}

impl Verdict {
    fn to_json(&self) -> VerdictJson {
        VerdictJson {
            format_version: VERDICT_FORMAT_VERSION,
            event_seq: self.event_seq,
            event_id: self.event_id.clone(),
            spam: self.spam,
            reasons: self.reasons.clone(),
            scores: self.scores.iter().map(|(k, v)| (k.clone(), (v * 1e6).round() as i64)).collect(),
            near_duplicate_of: self.near_duplicate_of,
            model_sha256: self.model_sha256.clone(),
            processor_version: self.processor_version.clone(),
            perceptual_hash: self.perceptual_hash.clone(),
        }
    }

    /// Canonical `verdict.json` bytes.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        format::canonical_json(&self.to_json())
    }

    /// Parses `verdict.json`, refusing unknown versions and non-canonical bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, format::FormatError> {
        let json: VerdictJson = serde_json::from_slice(bytes)?;
        if json.format_version != VERDICT_FORMAT_VERSION {
            return Err(format::FormatError::UnsupportedVersion(json.format_version));
        }
        if format::canonical_json(&json) != bytes {
            return Err(format::FormatError::NotCanonical);
        }
        if json.perceptual_hash.as_deref().is_some_and(|h| !is_perceptual_hash(h)) {
            return Err(format::FormatError::NotCanonical);
        }
        Ok(Verdict {
            event_seq: json.event_seq,
            event_id: json.event_id,
            spam: json.spam,
            reasons: json.reasons,
            scores: json.scores.into_iter().map(|(k, v)| (k, v as f64 / 1e6)).collect(),
            near_duplicate_of: json.near_duplicate_of,
            model_sha256: json.model_sha256,
            processor_version: json.processor_version,
            perceptual_hash: json.perceptual_hash,
        })
    }

    fn check(&self) -> Result<(), Error> {
        let invalid = |what: &'static str| Err(Error::Invalid { seq: self.event_seq, what });
        let word = |s: &str| (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if self.event_id.len() != 40 || ObjectId::from_hex(self.event_id.as_bytes()).is_err() {
            return invalid("event_id must be 40 hex digits");
        }
        if !self.reasons.iter().all(|r| word(r)) {
            return invalid("reasons must match [a-z_]{1,32}");
        }
        if !self.scores.iter().all(|(k, v)| word(k) && v.is_finite() && v.abs() < 1e9) {
            return invalid("scores must be named [a-z_]{1,32} with finite values below 1e9");
        }
        if !is_sha256_hex(&self.model_sha256) {
            return invalid("model_sha256 must be 64 lowercase hex digits");
        }
        if !(1..=64).contains(&self.processor_version.len())
            || !self.processor_version.bytes().all(|b| b.is_ascii_graphic())
        {
            return invalid("processor_version must be 1-64 printable ASCII characters without spaces");
        }
        if self.near_duplicate_of.is_some_and(|d| d == 0 || d >= self.event_seq) {
            return invalid("near_duplicate_of must name an earlier event");
        }
        if self.perceptual_hash.as_deref().is_some_and(|h| !is_perceptual_hash(h)) {
            return invalid("perceptual_hash must be <algorithm [a-z0-9]{1,16}>:<1-64 lowercase hex digits>");
        }
        Ok(())
    }

    fn verdict_word(&self) -> &'static str {
        if self.spam {
            "spam"
        } else {
            "ok"
        }
    }

    /// The verdict commit's message: summary, blank line, trailers.
    fn commit_message(&self) -> String {
        format!(
            "Verdict {} for event {}\n\nEvent: {}\nEvent-Seq: {}\nVerdict: {}\n",
            self.verdict_word(),
            self.event_seq,
            self.event_id,
            self.event_seq,
            self.verdict_word()
        )
    }

    /// The note attached to the event commit: a readable summary plus the verdict commit id.
    fn note(&self, verdict_commit: ObjectId) -> String {
        let reasons = if self.reasons.is_empty() { "-".to_owned() } else { self.reasons.join(", ") };
        let scores: Vec<String> = self.scores.iter().map(|(k, v)| format!("{k}={v:.6}")).collect();
        let mut note = format!("Verdict: {}\nReasons: {reasons}\n", self.verdict_word());
        if !scores.is_empty() {
            note.push_str(&format!("Scores: {}\n", scores.join(" ")));
        }
        if let Some(d) = self.near_duplicate_of {
            note.push_str(&format!("Near-Duplicate-Of: {d}\n"));
        }
        note.push_str(&format!(
            "Model-Sha256: {}\nProcessor: {}\nVerdict-Commit: {verdict_commit}\n",
            self.model_sha256, self.processor_version
        ));
        note
    }
}

/// `<algorithm>:<hex>`: `[a-z0-9]{1,16}`, a colon, 1–64 lowercase hex digits.
fn is_perceptual_hash(value: &str) -> bool {
    let Some((algorithm, hex)) = value.split_once(':') else { return false };
    (1..=16).contains(&algorithm.len())
        && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && (1..=64).contains(&hex.len())
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The newest verdict: the checkpoint of the processors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictHead {
    /// Seq of the last judged event (all events up to it are judged).
    pub event_seq: u64,
    /// 40-hex id of the verdict commit.
    pub id: String,
}

/// A verdict as stored, with its commit id.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredVerdict {
    pub verdict: Verdict,
    pub id: String,
}

/// Why verdicts were not written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another worker advanced the verdicts first (or the batch starts at an event already
    /// judged). Not an error for the worker: continue judging after `head`.
    #[error("verdicts were advanced concurrently; continue after {head:?}")]
    Conflict { head: Option<VerdictHead> },
    /// The batch does not continue the verdict chain gaplessly (a bug in the caller). Log; do not retry.
    #[error("verdict for event {got} does not follow the checkpoint (expected event {expected})")]
    OutOfOrder { expected: u64, got: u64 },
    /// `event_id` is not the commit of event `seq` on `refs/heads/events`. Log; do not retry.
    #[error("verdict names {event_id} but event {seq} is {actual}")]
    EventMismatch { seq: u64, event_id: String, actual: String },
    /// A field breaks its rule. Log; do not retry.
    #[error("invalid verdict for event {seq}: {what}")]
    Invalid { seq: u64, what: &'static str },
    /// Reading the ledger failed (see the source). Retry later.
    #[error(transparent)]
    Read(#[from] read::Error),
    /// Writing or syncing failed; nothing was acknowledged. Retry later (after a failed fsync,
    /// restart the process: the on-disk state is unknown).
    #[error("storage error writing verdicts")]
    Storage(#[source] std::io::Error),
}

pub(crate) fn ref_target(repo: &gix::Repository, name: &str) -> Result<Option<ObjectId>, read::Error> {
    let Some(reference) = repo.try_find_reference(name).map_err(read::Error::Git)? else {
        return Ok(None);
    };
    match reference.inner.target {
        gix::refs::Target::Object(id) => Ok(Some(id)),
        gix::refs::Target::Symbolic(_) => {
            Err(read::Error::Corrupt { id: name.to_owned(), what: "is a symbolic ref".into() })
        }
    }
}

fn load_verdict(repo: &gix::Repository, id: ObjectId) -> Result<(Verdict, Option<ObjectId>), read::Error> {
    let corrupt = |what: String| read::Error::Corrupt { id: id.to_string(), what };
    let data = find(repo, id, gix::objs::Kind::Commit)?;
    let commit = format::parse_commit(&data).ok_or_else(|| corrupt("malformed verdict commit".into()))?;
    let tree = format::parse_tree(&find(repo, commit.tree, gix::objs::Kind::Tree)?)
        .ok_or_else(|| corrupt("malformed tree".into()))?;
    let json_id = match tree.as_slice() {
        [(mode, name, id)] if mode == "100644" && name == "verdict.json" => *id,
        _ => return Err(corrupt("tree must hold exactly verdict.json".into())),
    };
    let verdict = Verdict::from_json(&find(repo, json_id, gix::objs::Kind::Blob)?)
        .map_err(|e| corrupt(format!("verdict.json: {e}")))?;
    if commit.message != verdict.commit_message().as_bytes() {
        return Err(corrupt("verdict commit message disagrees with verdict.json".into()));
    }
    Ok((verdict, commit.parents.first().copied()))
}

fn notes_through(repo: &gix::Repository, notes: Option<ObjectId>) -> Result<u64, read::Error> {
    let Some(id) = notes else { return Ok(0) };
    let data = find(repo, id, gix::objs::Kind::Commit)?;
    let commit = format::parse_commit(&data)
        .ok_or_else(|| read::Error::Corrupt { id: id.to_string(), what: "malformed notes commit".into() })?;
    let text = String::from_utf8_lossy(commit.message);
    Ok(text.lines().find_map(|l| l.strip_prefix("Verdicts-Through: ")).and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Splits an event commit id into the notes path `ab/cd/ef…`.
fn note_path(event: ObjectId) -> [String; 3] {
    let hex = event.to_string();
    [hex[..2].to_owned(), hex[2..4].to_owned(), hex[4..].to_owned()]
}

/// Inserts `(path, blob)` items into the tree `base` (or an empty one), writing every changed
/// tree into `out`; returns the new tree id.
fn insert_notes(
    repo: &gix::Repository,
    base: Option<ObjectId>,
    items: &[([String; 3], ObjectId)],
    depth: usize,
    out: &mut Vec<PackEntry>,
) -> Result<ObjectId, Error> {
    let mut entries: BTreeMap<String, (String, ObjectId)> = BTreeMap::new();
    if let Some(base) = base {
        let data = find(repo, base, gix::objs::Kind::Tree)?;
        let parsed = format::parse_tree(&data)
            .ok_or_else(|| read::Error::Corrupt { id: base.to_string(), what: "malformed notes tree".into() })?;
        for (mode, name, id) in parsed {
            entries.insert(name, (mode, id));
        }
    }
    if depth == 2 {
        for (path, blob) in items {
            entries.insert(path[2].clone(), ("100644".to_owned(), *blob));
        }
    } else {
        let mut groups: BTreeMap<&str, Vec<([String; 3], ObjectId)>> = BTreeMap::new();
        for item in items {
            groups.entry(item.0[depth].as_str()).or_default().push(item.clone());
        }
        for (name, group) in groups {
            let existing = entries.get(name).filter(|(mode, _)| mode == "40000").map(|(_, id)| *id);
            let sub = insert_notes(repo, existing, &group, depth + 1, out)?;
            entries.insert(name.to_owned(), ("40000".to_owned(), sub));
        }
    }
    // Names within one level have equal length, so byte order is git's tree order.
    let bytes = format::tree_bytes(entries.iter().map(|(name, (mode, id))| (mode.as_str(), name.as_str(), *id)));
    let entry = pack::encode(pack::Kind::Tree, &bytes).map_err(Error::Storage)?;
    let id = entry.oid;
    out.push(entry);
    Ok(id)
}

impl Ledger {
    /// The processors' checkpoint: the newest verdict, or `None` before the first.
    pub fn verdict_head(&self) -> Result<Option<VerdictHead>, read::Error> {
        let repo = self.repo();
        let Some(id) = ref_target(&repo, VERDICTS_REF)? else { return Ok(None) };
        let (verdict, _) = load_verdict(&repo, id)?;
        Ok(Some(VerdictHead { event_seq: verdict.event_seq, id: id.to_string() }))
    }

    /// Visits verdicts from the head back towards the first, newest first, until `visit`
    /// returns `false` or the chain ends. One pass over the chain (three object reads per
    /// verdict), for rebuilding derived state such as a processor's near-duplicate index.
    pub fn walk_verdicts_back(&self, mut visit: impl FnMut(&Verdict) -> bool) -> Result<(), read::Error> {
        let repo = self.repo();
        let mut next = ref_target(&repo, VERDICTS_REF)?;
        while let Some(id) = next {
            let (verdict, parent) = load_verdict(&repo, id)?;
            if !visit(&verdict) {
                break;
            }
            next = parent;
        }
        Ok(())
    }

    /// The verdict on event `seq`, if judged: found through the note on the event commit,
    /// or by walking back from the verdict head when notes lag behind.
    pub fn verdict(&self, seq: u64) -> Result<Option<StoredVerdict>, read::Error> {
        self.verdicts()?.verdict(seq)
    }

    /// A reader of many events' verdicts against one verdict head, read once (listings ask
    /// for a page of events: one head read, not one per event).
    pub fn verdicts(&self) -> Result<VerdictReader, read::Error> {
        let repo = self.repo();
        let head = match ref_target(&repo, VERDICTS_REF)? {
            Some(id) => Some((id, load_verdict(&repo, id)?.0.event_seq)),
            None => None,
        };
        Ok(VerdictReader { ledger: self.clone(), repo, head })
    }
}

/// See [`Ledger::verdicts`].
pub struct VerdictReader {
    ledger: Ledger,
    repo: gix::Repository,
    /// The verdict head and the event seq it judges.
    head: Option<(ObjectId, u64)>,
}

impl VerdictReader {
    /// The verdict on event `seq`, as [`Ledger::verdict`] finds it.
    pub fn verdict(&self, seq: u64) -> Result<Option<StoredVerdict>, read::Error> {
        let repo = &self.repo;
        // Only events up to the checkpoint are judged: a note written in a transaction whose
        // verdicts ref update was lost in a crash must not count.
        let Some((head, head_seq)) = self.head else { return Ok(None) };
        if seq > head_seq {
            return Ok(None);
        }
        let event = self.ledger.id_for_seq(repo, seq)?;
        if let Some(found) = verdict_from_note(repo, event)? {
            let (verdict, _) = load_verdict(repo, found)?;
            if verdict.event_seq == seq {
                return Ok(Some(StoredVerdict { verdict, id: found.to_string() }));
            }
        }
        let mut id = head;
        loop {
            let (verdict, parent) = load_verdict(repo, id)?;
            if verdict.event_seq == seq {
                return Ok(Some(StoredVerdict { verdict, id: id.to_string() }));
            }
            match parent {
                Some(parent) if verdict.event_seq > seq => id = parent,
                _ => return Ok(None),
            }
        }
    }
}

impl Ledger {
    /// Appends verdicts for consecutive events, starting right after the current checkpoint,
    /// and the matching notes, moving both refs in one transaction with compare-and-swap.
    /// Durable (pack and refs fsynced) when it returns.
    #[tracing::instrument(skip_all, fields(first = verdicts.first().map(|v| v.event_seq), count = verdicts.len()))]
    pub fn append_verdicts(&self, verdicts: &[Verdict]) -> Result<Option<VerdictHead>, Error> {
        if self.fsync().has_failed() {
            // As the event writer: after a failed fsync nothing read from disk is trusted.
            return Err(Error::Storage(std::io::Error::other(
                "an fsync failed earlier: the state on disk is unknown until restart",
            )));
        }
        let repo = self.repo();
        let old_verdicts = ref_target(&repo, VERDICTS_REF)?;
        let old_notes = ref_target(&repo, NOTES_REF)?;
        let checkpoint = match old_verdicts {
            Some(id) => load_verdict(&repo, id)?.0.event_seq,
            None => 0,
        };
        if let Some(first) = verdicts.first() {
            if first.event_seq <= checkpoint {
                return Err(Error::Conflict {
                    head: old_verdicts.map(|id| VerdictHead { event_seq: checkpoint, id: id.to_string() }),
                });
            }
        }
        for (i, verdict) in verdicts.iter().enumerate() {
            let expected = checkpoint + 1 + i as u64;
            if verdict.event_seq != expected {
                return Err(Error::OutOfOrder { expected, got: verdict.event_seq });
            }
            verdict.check()?;
            let actual = self.id_for_seq(&repo, verdict.event_seq)?;
            if ObjectId::from_hex(verdict.event_id.as_bytes()).ok() != Some(actual) {
                return Err(Error::EventMismatch {
                    seq: verdict.event_seq,
                    event_id: verdict.event_id.clone(),
                    actual: actual.to_string(),
                });
            }
        }
        // Notes missing from an earlier crash are re-added in the same transaction.
        let through = notes_through(&repo, old_notes)?;
        let mut notes: Vec<(Verdict, ObjectId)> = Vec::new();
        if through < checkpoint {
            let mut id = old_verdicts;
            while let Some(vid) = id {
                let (verdict, parent) = load_verdict(&repo, vid)?;
                if verdict.event_seq <= through {
                    break;
                }
                notes.push((verdict, vid));
                id = parent;
            }
            notes.reverse();
            tracing::warn!(repaired = notes.len(), "verdict notes were behind the verdicts; repairing");
        }
        if verdicts.is_empty() && notes.is_empty() {
            return Ok(old_verdicts.map(|id| VerdictHead { event_seq: checkpoint, id: id.to_string() }));
        }

        let seconds = time::OffsetDateTime::now_utc().unix_timestamp();
        let identity = format::committer(&self.config().node_name, seconds);
        let key = self.config().signing_key.as_deref();
        // Verdict and notes commits: author = committer = the node, signed like event commits.
        let commit = |tree: ObjectId, parent: Option<ObjectId>, message: &str| {
            let spec = format::CommitSpec { tree, parent, author: &identity, committer: &identity, message };
            pack::encode(pack::Kind::Commit, &format::commit_bytes(&spec, key)).map_err(Error::Storage)
        };
        let mut entries: Vec<PackEntry> = Vec::new();
        let mut parent = old_verdicts;
        for verdict in verdicts {
            let json = pack::encode(pack::Kind::Blob, &verdict.to_canonical_json()).map_err(Error::Storage)?;
            let tree_bytes = format::tree_bytes([("100644", "verdict.json", json.oid)]);
            let tree = pack::encode(pack::Kind::Tree, &tree_bytes).map_err(Error::Storage)?;
            let commit = commit(tree.oid, parent, &verdict.commit_message())?;
            parent = Some(commit.oid);
            notes.push((verdict.clone(), commit.oid));
            entries.extend([json, tree, commit]);
        }
        let new_verdicts = parent.expect("at least one verdict or note exists here");
        let mut items = Vec::with_capacity(notes.len());
        for (verdict, vid) in &notes {
            let blob = pack::encode(pack::Kind::Blob, verdict.note(*vid).as_bytes()).map_err(Error::Storage)?;
            let event = ObjectId::from_hex(verdict.event_id.as_bytes())
                .map_err(|_| Error::Invalid { seq: verdict.event_seq, what: "event_id" })?;
            items.push((note_path(event), blob.oid));
            entries.push(blob);
        }
        let base_tree = match old_notes {
            Some(id) => {
                Some(format::parse_commit(&find(&repo, id, gix::objs::Kind::Commit)?).map(|c| c.tree).ok_or_else(
                    || read::Error::Corrupt { id: id.to_string(), what: "malformed notes commit".into() },
                )?)
            }
            None => None,
        };
        let notes_tree = insert_notes(&repo, base_tree, &items, 0, &mut entries)?;
        let last_seq = notes.last().map_or(checkpoint, |(v, _)| v.event_seq);
        let message = format!("Notes for verdicts through event {last_seq}\n\nVerdicts-Through: {last_seq}\n");
        let notes_commit = commit(notes_tree, old_notes, &message)?;
        let new_notes = notes_commit.oid;
        entries.push(notes_commit);

        // One pack for everything, then both refs in one transaction, verdicts first (a crash
        // between the two renames leaves notes behind, which the next append repairs). Under
        // the git-writers lock, so that the event writer's start (which removes what crashed
        // writers left behind) never mistakes this pack or these ref locks for leftovers.
        let edits = [
            crate::refs::Edit { name: VERDICTS_REF, new: new_verdicts, expected: old_verdicts },
            crate::refs::Edit { name: NOTES_REF, new: new_notes, expected: old_notes },
        ];
        let publication = publish::Publication {
            objects: &entries,
            edits: &edits,
            also_sync: &[],
            holder: publish::Holder::GitWriters,
        };
        match publish::publish(self, &publication) {
            Ok(()) => {}
            Err(publish::Error::Conflict { .. }) => return Err(Error::Conflict { head: self.verdict_head()? }),
            Err(e) => return Err(Error::Storage(std::io::Error::other(e))),
        }
        let head = VerdictHead {
            event_seq: verdicts.last().map_or(checkpoint, |v| v.event_seq),
            id: new_verdicts.to_string(),
        };
        Ok(Some(head))
    }

    /// Adds notes the verdicts have but the notes ref lacks (after a crash between the two
    /// ref updates). Workers call this on start; returns the verdict head.
    pub fn repair_verdict_notes(&self) -> Result<Option<VerdictHead>, Error> {
        self.append_verdicts(&[])
    }
}

fn verdict_from_note(repo: &gix::Repository, event: ObjectId) -> Result<Option<ObjectId>, read::Error> {
    let Some(notes) = ref_target(repo, NOTES_REF)? else { return Ok(None) };
    let data = find(repo, notes, gix::objs::Kind::Commit)?;
    let Some(mut tree) = format::parse_commit(&data).map(|c| c.tree) else { return Ok(None) };
    let path = note_path(event);
    for (depth, part) in path.iter().enumerate() {
        let entries = format::parse_tree(&find(repo, tree, gix::objs::Kind::Tree)?).unwrap_or_default();
        let Some((_, _, id)) = entries.into_iter().find(|(_, name, _)| name == part) else { return Ok(None) };
        if depth == 2 {
            let note = find(repo, id, gix::objs::Kind::Blob)?;
            let text = String::from_utf8_lossy(&note);
            return Ok(text
                .lines()
                .find_map(|l| l.strip_prefix("Verdict-Commit: "))
                .and_then(|h| ObjectId::from_hex(h.as_bytes()).ok()));
        }
        tree = id;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict() -> Verdict {
        Verdict {
            event_seq: 3,
            event_id: "ab".repeat(20),
            spam: true,
            reasons: vec!["classifier".into(), "near_duplicate".into()],
            scores: [("classifier".to_owned(), 0.9123456789), ("blank".to_owned(), 0.0)].into_iter().collect(),
            near_duplicate_of: Some(1),
            model_sha256: "cd".repeat(32),
            processor_version: "0.1.0".into(),
            perceptual_hash: Some("dhash:00f00000000000ab".into()),
        }
    }

    #[test]
    fn the_perceptual_hash_is_a_tagged_hex_string_and_may_be_absent() {
        let json = String::from_utf8(verdict().to_canonical_json()).expect("utf8");
        assert!(json.contains(r#""perceptual_hash":"dhash:00f00000000000ab""#), "{json}");
        let back = Verdict::from_json(json.as_bytes()).expect("parses");
        assert_eq!(back.perceptual_hash.as_deref(), Some("dhash:00f00000000000ab"));

        // A verdict written before the field existed has no such key at all, and stays valid.
        let old = Verdict { perceptual_hash: None, ..verdict() }.to_canonical_json();
        assert!(!String::from_utf8_lossy(&old).contains("perceptual_hash"));
        assert_eq!(Verdict::from_json(&old).expect("parses").perceptual_hash, None);

        for bad in [r#""dhash:00F00000000000AB""#, r#""00f00000000000ab""#, r#""dhash:""#, "null"] {
            let tampered = json.replace(r#""dhash:00f00000000000ab""#, bad);
            assert!(Verdict::from_json(tampered.as_bytes()).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn verdict_json_is_canonical_and_keeps_scores_to_a_millionth() {
        let json = verdict().to_canonical_json();
        let text = String::from_utf8(json.clone()).expect("utf8");
        assert!(text.starts_with(r#"{"event_id":"#), "{text}");
        assert!(text.contains(r#""scores":{"blank":0,"classifier":912346}"#), "{text}");
        let back = Verdict::from_json(&json).expect("parses");
        assert!((back.scores["classifier"] - 0.9123456789).abs() <= 1e-6);
        assert_eq!(back.to_canonical_json(), json, "stable through a round trip");
    }

    #[test]
    fn invalid_verdicts_are_refused() {
        type Mutate = fn(&mut Verdict);
        let cases: Vec<(Mutate, &str)> = vec![
            (|v| v.reasons = vec!["Near Dup".into()], "reasons"),
            (|v| v.model_sha256 = "x".into(), "model_sha256"),
            (|v| v.event_id = "abc".into(), "event_id"),
            (|v| v.near_duplicate_of = Some(3), "near_duplicate_of"),
            (
                |v| {
                    v.scores.insert("nan".into(), f64::NAN);
                },
                "scores",
            ),
            (|v| v.processor_version = "has space".into(), "processor_version"),
            (|v| v.perceptual_hash = Some("DHash:zz".into()), "perceptual_hash"),
        ];
        for (mutate, what) in cases {
            let mut v = verdict();
            mutate(&mut v);
            let err = v.check().expect_err(what);
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
    }
}
