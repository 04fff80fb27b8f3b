//! Verification: everything an auditor relies on, read from git alone (never the derived
//! indexes), so it also catches a history rewritten behind the writer's back.
//!
//! Threat model: an insider who can write `ledger.git` and the data dir, but holds neither the
//! signing key (kept outside the data dir) nor the anchor store. What verification checks, one
//! pass over each chain, first failure wins (`docs/event-format.md`, "Auditing with stock
//! tools", lists every [`Rule`]):
//! - the repository: no `refs/replace/*`, grafts, `shallow` or alternates (git would show
//!   other objects than the ones the ids name); replacement refs are never followed here;
//! - every object read is re-hashed: SHA-1 of `<type> <len>\0<data>` must be its id, so a pack
//!   or loose object holding other bytes under an existing id is found;
//! - every commit is parsed strictly: exactly the headers the format allows, in order
//!   (`tree`, at most one `parent`, `author`, `committer`, optional `gpgsig` last), committer
//!   `camledger <node>` with one node name across all three chains;
//! - events: parent links and seq continuity, `event.json`, trailers, tree, author identity
//!   and time, image SHA-256, `duplicate_of`, `received_at` order, camera in the registry;
//! - verdicts: one per event from seq 1 without gaps, each naming the event commit at its seq;
//! - notes: every note agrees with its verdict, no note without a verdict, `Verdicts-Through`
//!   not ahead of the verdicts, notes missing only for the last verdict write (a crash window);
//! - with an allowed-signers file, every commit (events, verdicts, notes) carries a valid
//!   signature by a key valid at its committer time.

use std::collections::HashMap;
use std::path::Path;

use gix::ObjectId;

use crate::format::{self, EventRecord};
use crate::read::{self, EventHead};
use crate::sign::AllowedSigners;
use crate::verdict::{Verdict, VerdictHead, NOTES_REF, VERDICTS_REF};
use crate::Ledger;

/// What to check beyond the repository itself.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Every commit must carry a valid signature by one of these keys, valid at its committer
    /// time. `None`: signatures are not checked (a `gpgsig` header is still allowed).
    pub allowed_signers: Option<AllowedSigners>,
    /// The cameras the registry knows. `None`: cameras are not checked.
    pub cameras: Option<CameraRegistry>,
}

/// The camera registry as verification needs it: id → when it was revoked (if it is now).
#[derive(Clone, Debug, Default)]
pub struct CameraRegistry {
    cameras: HashMap<String, Option<time::OffsetDateTime>>,
}

impl CameraRegistry {
    /// Adds a camera; `revoked_at` is when its token was revoked, if it is revoked now
    /// (a rotated camera keeps its id and is not revoked).
    pub fn insert(&mut self, id: &str, revoked_at: Option<time::OffsetDateTime>) {
        self.cameras.insert(id.to_owned(), revoked_at);
    }
}

/// The chain a failure was found on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// The repository as a whole (refs, grafts, alternates).
    Repository,
    Events,
    Verdicts,
    Notes,
    /// The checkpoints in the anchor store (`camledger verify --anchor-url`).
    Anchors,
    /// `refs/heads/cameras`: quarantines and releases.
    Cameras,
}

impl Chain {
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Repository => "repository",
            Chain::Events => "events",
            Chain::Verdicts => "verdicts",
            Chain::Notes => "notes",
            Chain::Anchors => "anchors",
            Chain::Cameras => "cameras",
        }
    }
}

impl std::fmt::Display for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rule a failure broke. Each code is described in `docs/event-format.md`, "Auditing with
/// stock tools".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `refs/replace/*`, `info/grafts`, `shallow` or `objects/info/alternates` exist.
    Replace,
    /// A ref is missing where another needs it, symbolic, or unreadable.
    Ref,
    /// An object is missing or unreadable.
    ObjectMissing,
    /// An object's bytes do not hash to its id, or it is of the wrong type.
    ObjectHash,
    /// A commit has a header the format does not allow, or they are out of order.
    Header,
    /// The committer is not `camledger <node>`, or the node differs from the ledger's.
    Committer,
    /// The author does not match the camera and `received_at` (events) or the committer.
    Author,
    /// The commit message is not exactly what the format prescribes.
    Message,
    /// Parent links or seq continuity.
    Chain,
    /// The tree's entries.
    Tree,
    /// `event.json` or `verdict.json` breaks its schema or a field rule.
    Record,
    /// Image bytes vs. `size` and `sha256`.
    Image,
    /// `duplicate_of` does not name the first event with the same image.
    Duplicate,
    /// `received_at` goes backwards.
    TimeOrder,
    /// The event's camera is not in the registry.
    CameraUnknown,
    /// The event was received after its camera's token was revoked.
    CameraRevoked,
    /// A verdict names another commit than the event at its seq, or judges out of order.
    Verdict,
    /// The notes ref and the verdicts ref disagree (`Verdicts-Through`, missing notes).
    Notes,
    /// A note is missing, extra, or says something else than its verdict.
    Note,
    /// The commit is unsigned, or its signature is invalid, unknown or outside its window.
    Signature,
    /// An anchored checkpoint is malformed, unsigned by an allowed key, or does not extend
    /// the one before it.
    Checkpoint,
    /// The ledger is behind an anchored checkpoint.
    Rollback,
    /// A chain holds another commit at an anchored checkpoint's seq: rewritten or regenerated.
    Rewritten,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Replace => "replace",
            Rule::Ref => "ref",
            Rule::ObjectMissing => "object-missing",
            Rule::ObjectHash => "object-hash",
            Rule::Header => "header",
            Rule::Committer => "committer",
            Rule::Author => "author",
            Rule::Message => "message",
            Rule::Chain => "chain",
            Rule::Tree => "tree",
            Rule::Record => "record",
            Rule::Image => "image",
            Rule::Duplicate => "duplicate",
            Rule::TimeOrder => "time-order",
            Rule::CameraUnknown => "camera-unknown",
            Rule::CameraRevoked => "camera-revoked",
            Rule::Verdict => "verdict",
            Rule::Notes => "notes",
            Rule::Note => "note",
            Rule::Signature => "signature",
            Rule::Checkpoint => "checkpoint",
            Rule::Rollback => "rollback",
            Rule::Rewritten => "rewritten",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of events checked (= head seq).
    pub events: u64,
    pub head: Option<EventHead>,
    /// Events with `duplicate_of` set.
    pub duplicates: u64,
    /// Image bytes hashed.
    pub image_bytes: u64,
    /// Verdicts checked (= the verdict head's event seq).
    pub verdicts: u64,
    pub verdict_head: Option<VerdictHead>,
    /// `Verdicts-Through` of the notes head: notes checked against their verdicts.
    pub notes_through: u64,
    /// Objects read and re-hashed.
    pub objects: u64,
    /// Commit signatures verified (0 without allowed signers).
    pub signatures: u64,
    /// Camera actions (quarantines, releases) checked on `refs/heads/cameras`.
    pub camera_actions: u64,
    /// The node name every commit's committer carries (`None` for an empty ledger): the
    /// checkpoints' origin is `camledger/<node>`.
    pub node: Option<String>,
}

/// Why verification failed: the first failure met, named precisely.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `camledger verify` prints it and exits non-zero; an auditor starts here. `seq` is the
    /// event seq the commit stands for (0 when none applies), `id` the commit (or ref) id.
    #[error("FAILED {chain} seq {seq} commit {id}: rule {rule}: {what}")]
    Broken { chain: Chain, seq: u64, id: String, rule: Rule, what: String },
}

/// The name the brief and the CLI use for a failed verification.
pub type VerifyFailure = Error;

impl Error {
    pub fn chain(&self) -> Chain {
        match self {
            Error::Broken { chain, .. } => *chain,
        }
    }
    pub fn seq(&self) -> u64 {
        match self {
            Error::Broken { seq, .. } => *seq,
        }
    }
    pub fn commit(&self) -> &str {
        match self {
            Error::Broken { id, .. } => id,
        }
    }
    pub fn rule(&self) -> Rule {
        match self {
            Error::Broken { rule, .. } => *rule,
        }
    }
    pub fn detail(&self) -> &str {
        match self {
            Error::Broken { what, .. } => what,
        }
    }
}

/// A failure before its chain position is attached.
type Fail = (Rule, String);

fn fail<T>(rule: Rule, what: impl Into<String>) -> Result<T, Fail> {
    Err((rule, what.into()))
}

/// Reads objects, re-hashing each one.
struct Objects<'r> {
    repo: &'r gix::Repository,
    read: u64,
}

impl Objects<'_> {
    fn get(&mut self, id: ObjectId, kind: gix::objs::Kind) -> Result<Vec<u8>, Fail> {
        let data = match read::find(self.repo, id, kind) {
            Ok(data) => data,
            Err(read::Error::Corrupt { what, .. }) => return fail(Rule::ObjectHash, format!("object {id}: {what}")),
            Err(e) => return fail(Rule::ObjectMissing, format!("object {id}: {e}")),
        };
        let actual = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, &data)
            .map_err(|e| (Rule::ObjectHash, format!("object {id}: {e}")))?;
        if actual != id {
            return fail(Rule::ObjectHash, format!("the {kind} stored as {id} hashes to {actual}"));
        }
        self.read += 1;
        Ok(data)
    }
}

/// A commit parsed strictly: only the headers camledger writes, in its order.
struct StrictCommit<'a> {
    tree: ObjectId,
    parent: Option<ObjectId>,
    author: &'a str,
    committer: &'a str,
    signed: bool,
    message: &'a [u8],
}

fn parse_id(value: &str) -> Option<ObjectId> {
    (value.len() == 40 && value.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| ObjectId::from_hex(value.as_bytes()).ok())
        .flatten()
}

fn parse_strict(data: &[u8]) -> Result<StrictCommit<'_>, Fail> {
    let header = |what: String| (Rule::Header, what);
    let split =
        data.windows(2).position(|w| w == b"\n\n").ok_or_else(|| header("no blank line after the headers".into()))?;
    let headers = std::str::from_utf8(&data[..split]).map_err(|_| header("headers are not UTF-8".into()))?;
    let message = &data[split + 2..];
    let mut lines = headers.split('\n').peekable();
    let mut next = |name: &str| -> Result<Option<&str>, Fail> {
        match lines.peek().and_then(|l| l.strip_prefix(name)).and_then(|l| l.strip_prefix(' ')) {
            Some(value) => {
                lines.next();
                Ok(Some(value))
            }
            None => Ok(None),
        }
    };
    let tree = next("tree")?.and_then(parse_id).ok_or_else(|| header("the first header must be `tree <id>`".into()))?;
    let mut parent = None;
    if let Some(value) = next("parent")? {
        parent = Some(parse_id(value).ok_or_else(|| header(format!("malformed parent {value:?}")))?);
    }
    if next("parent")?.is_some() {
        return fail(Rule::Chain, "the commit has more than one parent");
    }
    let author = next("author")?.ok_or_else(|| header("`author` must follow tree and parent".into()))?;
    let committer = next("committer")?.ok_or_else(|| header("`committer` must follow author".into()))?;
    let signed = next("gpgsig")?.is_some();
    let mut rest = lines.peekable();
    if signed {
        while rest.peek().is_some_and(|l| l.starts_with(' ')) {
            rest.next();
        }
    }
    if let Some(extra) = rest.next() {
        let name = extra.split(' ').next().unwrap_or(extra);
        return fail(
            Rule::Header,
            format!("header {name:?} is not allowed (only tree, parent, author, committer, gpgsig)"),
        );
    }
    // The readers (`camledger log`, the API) parse commits leniently: they must see the very
    // commit checked here, or a header trick could show them something else.
    let lenient = format::parse_commit(data).ok_or_else(|| header("the readers' parser refuses the commit".into()))?;
    if lenient.tree != tree || lenient.parents.first() != parent.as_ref() || lenient.author != author {
        return fail(Rule::Header, "the readers' parser sees another tree, parent or author");
    }
    Ok(StrictCommit { tree, parent, author, committer, signed, message })
}

/// `camledger <node> <seconds> +0000` → (node, seconds).
fn parse_committer(value: &str) -> Option<(&str, i64)> {
    let rest = value.strip_prefix("camledger <")?;
    let (node, rest) = rest.split_once("> ")?;
    let seconds = rest.strip_suffix(" +0000")?;
    if !format::is_valid_node_name(node) || !seconds.bytes().all(|b| b.is_ascii_digit()) || seconds.is_empty() {
        return None;
    }
    Some((node, seconds.parse().ok()?))
}

/// Checks per-commit rules shared by all chains: committer identity (one node for the whole
/// ledger) and, with allowed signers, the signature at the committer time.
struct Commits<'o> {
    node: Option<String>,
    signers: Option<&'o AllowedSigners>,
    signatures: u64,
}

impl Commits<'_> {
    fn check(&mut self, data: &[u8], commit: &StrictCommit<'_>) -> Result<i64, Fail> {
        let (node, seconds) = parse_committer(commit.committer).ok_or_else(|| {
            (Rule::Committer, format!("committer {:?} is not `camledger <node> <seconds> +0000`", commit.committer))
        })?;
        match &self.node {
            None => self.node = Some(node.to_owned()),
            Some(expected) if expected != node => {
                return fail(Rule::Committer, format!("committer node {node:?}, the ledger's node is {expected:?}"))
            }
            Some(_) => {}
        }
        if let Some(signers) = self.signers {
            if !commit.signed {
                return fail(Rule::Signature, "the commit is not signed");
            }
            signers.verify_commit(data, seconds).map_err(|e| (Rule::Signature, e.to_string()))?;
            self.signatures += 1;
        }
        Ok(seconds)
    }
}

impl Ledger {
    /// Verifies the events only, without signatures or registry (`verify_with` with defaults).
    pub fn verify(&self, progress: impl FnMut(u64, u64)) -> Result<VerifyReport, Error> {
        self.verify_with(&VerifyOptions::default(), progress)
    }

    /// Verifies everything (see the module documentation); returns the verdicts checked.
    /// Kept for callers that care about the verdict chain only.
    pub fn verify_verdicts(&self, progress: impl FnMut(u64, u64)) -> Result<u64, Error> {
        self.verify_with(&VerifyOptions::default(), progress).map(|r| r.verdicts)
    }

    /// Walks the repository, the events, the verdicts and the notes once each and checks
    /// every rule; the first failure is returned. `progress(done, total)` counts events plus
    /// verdicts.
    #[tracing::instrument(skip_all, fields(signatures = options.allowed_signers.is_some(), cameras = options.cameras.is_some()))]
    pub fn verify_with(
        &self,
        options: &VerifyOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<VerifyReport, Error> {
        let git_dir = self.git_dir();
        let at =
            |chain: Chain, seq: u64, id: String| move |(rule, what): Fail| Error::Broken { chain, seq, id, rule, what };
        check_repository(&git_dir).map_err(at(Chain::Repository, 0, git_dir.display().to_string()))?;
        let mut repo = self.repo();
        check_replace_refs(&repo).map_err(at(Chain::Repository, 0, "refs/replace".into()))?;
        let events_head =
            ref_target(&repo, format::EVENTS_REF).map_err(at(Chain::Events, 0, format::EVENTS_REF.into()))?;
        let verdicts_head = ref_target(&repo, VERDICTS_REF).map_err(at(Chain::Verdicts, 0, VERDICTS_REF.into()))?;
        let notes_head = ref_target(&repo, NOTES_REF).map_err(at(Chain::Notes, 0, NOTES_REF.into()))?;

        let mut commits = Commits { node: None, signers: options.allowed_signers.as_ref(), signatures: 0 };
        let mut objects_read = 0;

        // Events, head to seq 1.
        let mut ids: Vec<ObjectId> = Vec::new();
        let mut digests: Vec<([u8; 32], Option<u64>)> = Vec::new();
        let mut image_bytes = 0u64;
        let mut head_seq = 0;
        if let Some(head) = events_head {
            let mut objects = Objects { repo: &repo, read: 0 };
            let data = objects.get(head, gix::objs::Kind::Commit).map_err(at(Chain::Events, 0, head.to_string()))?;
            head_seq = head_seq_of(&data).map_err(at(Chain::Events, 0, head.to_string()))?;
            objects_read += objects.read;
            // Not sized from the head's `Seq:` trailer: a forged head claiming seq 2^62 made
            // that allocation abort the process.
            let cap = head_seq.min(1 << 20) as usize;
            ids.reserve(cap);
            digests.reserve(cap);
            let mut expected_seq = head_seq;
            let mut id = head;
            let mut later_received: Option<String> = None;
            loop {
                if expected_seq % 1024 == 0 {
                    repo = self.repo(); // pick up a reopened object store during long walks
                }
                let mut objects = Objects { repo: &repo, read: 0 };
                let checked = check_event(&mut objects, &mut commits, options, id, expected_seq).map_err(at(
                    Chain::Events,
                    expected_seq,
                    id.to_string(),
                ))?;
                objects_read += objects.read;
                if let Some(later) = &later_received {
                    // Same fixed-width UTC form, so string order is time order.
                    if checked.received > *later {
                        return Err(at(Chain::Events, expected_seq, id.to_string())((
                            Rule::TimeOrder,
                            format!("received_at {} is after the next event's {later}", checked.received),
                        )));
                    }
                }
                later_received = Some(checked.received);
                ids.push(id);
                digests.push((checked.digest, checked.duplicate_of));
                image_bytes += checked.size;
                progress(head_seq - expected_seq + 1, head_seq);
                match checked.parent {
                    Some(parent) => {
                        id = parent;
                        expected_seq -= 1;
                    }
                    None => break,
                }
            }
            ids.reverse();
            digests.reverse();
        }
        // Duplicates: every repeat names the first event with its SHA-256, and every first is
        // really first.
        let mut first: HashMap<[u8; 32], u64> = HashMap::new();
        let mut duplicates = 0;
        for (i, (digest, dup)) in digests.iter().enumerate() {
            let seq = i as u64 + 1;
            let what = match (dup, first.get(digest)) {
                (None, None) => {
                    first.insert(*digest, seq);
                    continue;
                }
                (Some(d), Some(f)) if d == f => {
                    duplicates += 1;
                    continue;
                }
                (None, Some(f)) => format!("image already recorded at seq {f}, but duplicate_of is null"),
                (Some(d), Some(f)) => format!("duplicate_of is {d}, but the first event with this image is seq {f}"),
                (Some(d), None) => format!("duplicate_of is {d}, but no earlier event has this image"),
            };
            return Err(Error::Broken {
                chain: Chain::Events,
                seq,
                id: ids[i].to_string(),
                rule: Rule::Duplicate,
                what,
            });
        }
        drop(digests);

        // Notes: the head's Verdicts-Through and every note in its tree.
        let mut objects = Objects { repo: &repo, read: 0 };
        let (through, notes_time, mut notes) = match notes_head {
            Some(head) => check_notes(&mut objects, &mut commits, head)?,
            None => (0, None, HashMap::new()),
        };
        objects_read += objects.read;

        // Verdicts, head to event 1, each note compared with its verdict on the way.
        let mut verdicts = 0;
        let mut verdict_head = None;
        if let Some(head) = verdicts_head {
            let mut id = head;
            let mut expected: Option<u64> = None;
            let mut head_time = None;
            loop {
                let mut objects = Objects { repo: &repo, read: 0 };
                let checked = check_verdict(&mut objects, &mut commits, id, expected, &ids)
                    .map_err(|(seq, failure)| at(Chain::Verdicts, seq, id.to_string())(failure))?;
                let seq = checked.verdict.event_seq;
                let broken = |rule: Rule, what: String| Error::Broken {
                    chain: Chain::Verdicts,
                    seq,
                    id: id.to_string(),
                    rule,
                    what,
                };
                if expected.is_none() {
                    verdicts = seq;
                    verdict_head = Some(VerdictHead { event_seq: seq, id: id.to_string() });
                    head_time = Some(checked.time);
                    if through > seq {
                        return Err(Error::Broken {
                            chain: Chain::Notes,
                            seq: through,
                            id: notes_head.map(|n| n.to_string()).unwrap_or_default(),
                            rule: Rule::Notes,
                            what: format!(
                                "the notes cover verdicts through event {through}, the verdict head is event {seq}"
                            ),
                        });
                    }
                }
                let event = ids[seq as usize - 1];
                match notes.remove(&event) {
                    Some(blob) if seq <= through => {
                        let note = objects.get(blob, gix::objs::Kind::Blob).map_err(|(r, w)| broken(r, w))?;
                        let expected_note = render_note(&checked.verdict, id);
                        if note != expected_note.as_bytes() {
                            return Err(broken(
                                Rule::Note,
                                format!(
                                    "the note on event commit {event} ({}) does not agree with this verdict",
                                    note_summary(&note)
                                ),
                            ));
                        }
                    }
                    Some(_) => {
                        return Err(broken(
                            Rule::Note,
                            format!(
                            "event commit {event} has a note although the notes cover verdicts through {through} only"
                        ),
                        ))
                    }
                    None if seq <= through => {
                        return Err(broken(Rule::Note, format!("the note on event commit {event} is missing")));
                    }
                    None => {
                        // Notes behind the verdicts: only the last verdict write may lack its
                        // notes (a crash between the two ref updates; the next write repairs it).
                        if Some(checked.time) != head_time || notes_time.is_some_and(|t| t > checked.time) {
                            return Err(broken(
                                Rule::Notes,
                                format!(
                                    "no note for this verdict: the notes stop at event {through}, and this verdict was not written by the last verdict write"
                                ),
                            ));
                        }
                    }
                }
                objects_read += objects.read;
                progress(head_seq + verdicts - seq + 1, head_seq + verdicts);
                match checked.parent {
                    Some(parent) => {
                        id = parent;
                        expected = Some(seq - 1);
                    }
                    None => break,
                }
            }
        } else if through > 0 {
            return Err(Error::Broken {
                chain: Chain::Notes,
                seq: through,
                id: notes_head.map(|n| n.to_string()).unwrap_or_default(),
                rule: Rule::Notes,
                what: format!("the notes cover verdicts through event {through}, but there is no {VERDICTS_REF}"),
            });
        }
        if let Some((event, _)) = notes.into_iter().next() {
            return Err(Error::Broken {
                chain: Chain::Notes,
                seq: ids.iter().position(|i| *i == event).map_or(0, |p| p as u64 + 1),
                id: event.to_string(),
                rule: Rule::Note,
                what: format!("event commit {event} has a note but no verdict"),
            });
        }

        let camera_actions = check_camera_actions(&repo, &mut commits, &mut objects_read)?;

        Ok(VerifyReport {
            camera_actions,
            events: head_seq,
            head: events_head.map(|id| EventHead { seq: head_seq, id: id.to_string() }),
            duplicates,
            image_bytes,
            verdicts,
            verdict_head,
            notes_through: through,
            objects: objects_read,
            signatures: commits.signatures,
            node: commits.node,
        })
    }
}

/// Checks `refs/heads/cameras` (`docs/event-format.md`, section 13): every commit as strictly
/// as a verdict commit, `camera-action.json` canonical and valid, the message agreeing with it,
/// and the actions alternating per camera (no release of a camera that is not quarantined, no
/// second quarantine). Returns the number of actions.
fn check_camera_actions(
    repo: &gix::Repository,
    commits: &mut Commits<'_>,
    objects_read: &mut u64,
) -> Result<u64, Error> {
    use crate::camera_actions::{Action, CameraAction, CAMERAS_REF, CAMERA_ACTION_FILE};
    let head = ref_target(repo, CAMERAS_REF).map_err(|(rule, what)| Error::Broken {
        chain: Chain::Cameras,
        seq: 0,
        id: CAMERAS_REF.into(),
        rule,
        what,
    })?;
    let mut actions: Vec<(ObjectId, CameraAction)> = Vec::new();
    let mut next = head;
    while let Some(id) = next {
        let broken =
            |(rule, what): Fail| Error::Broken { chain: Chain::Cameras, seq: 0, id: id.to_string(), rule, what };
        if actions.len() >= 1 << 20 {
            return Err(broken((Rule::Chain, format!("{CAMERAS_REF} is longer than 2^20 actions"))));
        }
        let mut objects = Objects { repo, read: 0 };
        let data = objects.get(id, gix::objs::Kind::Commit).map_err(broken)?;
        let commit = parse_strict(&data).map_err(broken)?;
        commits.check(&data, &commit).map_err(broken)?;
        if commit.author != commit.committer {
            return Err(broken((Rule::Author, format!("author {:?} differs from the committer", commit.author))));
        }
        let tree = objects.get(commit.tree, gix::objs::Kind::Tree).map_err(broken)?;
        let json_id = match format::parse_tree(&tree).as_deref() {
            Some([(mode, name, id)]) if mode == "100644" && name == CAMERA_ACTION_FILE => *id,
            _ => {
                return Err(broken((
                    Rule::Tree,
                    format!("the tree must hold exactly {CAMERA_ACTION_FILE} (mode 100644)"),
                )))
            }
        };
        let json = objects.get(json_id, gix::objs::Kind::Blob).map_err(broken)?;
        let action =
            CameraAction::from_json(&json).map_err(|e| broken((Rule::Record, format!("{CAMERA_ACTION_FILE}: {e}"))))?;
        if commit.message != action.commit_message().as_bytes() {
            return Err(broken((Rule::Message, format!("the commit message disagrees with {CAMERA_ACTION_FILE}"))));
        }
        *objects_read += objects.read;
        actions.push((id, action));
        next = commit.parent;
    }
    actions.reverse();
    let mut quarantined = std::collections::HashSet::new();
    for (i, (id, action)) in actions.iter().enumerate() {
        let ok = match action.action {
            Action::Quarantine => quarantined.insert(action.camera.clone()),
            Action::Release => quarantined.remove(&action.camera),
        };
        if !ok {
            return Err(Error::Broken {
                chain: Chain::Cameras,
                seq: i as u64 + 1,
                id: id.to_string(),
                rule: Rule::Record,
                what: format!(
                    "{} of camera {}, which is {}",
                    action.action.as_str(),
                    action.camera,
                    if action.action == Action::Quarantine { "already quarantined" } else { "not quarantined" }
                ),
            });
        }
    }
    Ok(actions.len() as u64)
}

/// Grafts, `shallow` and alternates make stock git show other parents or other objects than
/// the ids name; none is ever written by camledger.
fn check_repository(git_dir: &Path) -> Result<(), Fail> {
    for (path, what) in [
        ("info/grafts", "grafts rewrite parents for stock git"),
        ("shallow", "a shallow file cuts history for stock git"),
        ("objects/info/alternates", "alternates bring objects from another repository"),
    ] {
        if git_dir.join(path).exists() {
            return fail(Rule::Replace, format!("{path} exists: {what}"));
        }
    }
    Ok(())
}

/// Replacement refs make stock git (and gix, unless told otherwise) show another object
/// under an id. Their mere presence is a failure.
fn check_replace_refs(repo: &gix::Repository) -> Result<(), Fail> {
    let platform = repo.references().map_err(|e| (Rule::Ref, format!("cannot list refs: {e}")))?;
    let mut replaced = platform.prefixed("refs/replace/").map_err(|e| (Rule::Ref, format!("cannot list refs: {e}")))?;
    if let Some(reference) = replaced.next() {
        let reference = reference.map_err(|e| (Rule::Ref, format!("cannot read a replace ref: {e}")))?;
        let name = reference.name().as_bstr().to_string();
        return fail(Rule::Replace, format!("{name} exists: git would show another object in place of this id"));
    }
    Ok(())
}

fn ref_target(repo: &gix::Repository, name: &str) -> Result<Option<ObjectId>, Fail> {
    let reference = repo.try_find_reference(name).map_err(|e| (Rule::Ref, format!("cannot read {name}: {e}")))?;
    match reference.map(|r| r.inner.target) {
        None => Ok(None),
        Some(gix::refs::Target::Object(id)) => Ok(Some(id)),
        Some(gix::refs::Target::Symbolic(_)) => fail(Rule::Ref, format!("{name} is a symbolic ref")),
    }
}

fn head_seq_of(data: &[u8]) -> Result<u64, Fail> {
    let commit = parse_strict(data)?;
    format::parse_commit_message(commit.message)
        .map(|t| t.seq)
        .ok_or_else(|| (Rule::Message, "the head's message is not summary + Seq/Camera/Sha256 trailers".into()))
}

/// What verification keeps of one event.
struct CheckedEvent {
    digest: [u8; 32],
    duplicate_of: Option<u64>,
    size: u64,
    parent: Option<ObjectId>,
    received: String,
}

fn check_event(
    objects: &mut Objects<'_>,
    commits: &mut Commits<'_>,
    options: &VerifyOptions,
    id: ObjectId,
    expected_seq: u64,
) -> Result<CheckedEvent, Fail> {
    let data = objects.get(id, gix::objs::Kind::Commit)?;
    let commit = parse_strict(&data)?;
    let committed_at = commits.check(&data, &commit)?;
    let trailers = format::parse_commit_message(commit.message)
        .ok_or_else(|| (Rule::Message, "the message is not summary + Seq/Camera/Sha256 trailers".to_owned()))?;
    let tree_data = objects.get(commit.tree, gix::objs::Kind::Tree)?;
    let tree = format::parse_tree(&tree_data).ok_or_else(|| (Rule::Tree, "malformed tree".to_owned()))?;
    let json_id = match tree.first() {
        Some((mode, name, id)) if mode == "100644" && name == "event.json" => *id,
        _ => return fail(Rule::Tree, "the tree's first entry must be event.json (mode 100644)"),
    };
    let json = objects.get(json_id, gix::objs::Kind::Blob)?;
    let record = EventRecord::from_json(&json).map_err(|e| (Rule::Record, format!("event.json: {e}")))?;
    if record.seq != expected_seq {
        return fail(
            Rule::Chain,
            format!("event.json says seq {}, the chain position is seq {expected_seq}", record.seq),
        );
    }
    record.check_fields().map_err(|e| (Rule::Record, e.to_string()))?;
    if !trailers.agrees_with(&record) {
        return fail(Rule::Message, "commit trailers disagree with event.json");
    }
    let expected_summary = format!("Event {} from {}\n", record.seq, record.camera);
    if !commit.message.starts_with(expected_summary.as_bytes()) {
        return fail(Rule::Message, format!("the summary line must be {:?}", expected_summary.trim_end()));
    }
    match (expected_seq, commit.parent) {
        (1, Some(_)) => return fail(Rule::Chain, "seq 1 must have no parent"),
        (1, None) => {}
        (_, None) => return fail(Rule::Chain, "the chain ends before seq 1 (no parent)"),
        (_, Some(_)) => {}
    }
    let names: Vec<(&str, &str)> = tree.iter().map(|(mode, name, _)| (mode.as_str(), name.as_str())).collect();
    if names != [("100644", "event.json"), ("100644", record.image.as_str())] {
        return fail(
            Rule::Tree,
            format!("tree must hold exactly event.json and {} (mode 100644), holds {names:?}", record.image),
        );
    }
    let received = format::parse_timestamp(&record.received_at)
        .ok_or_else(|| (Rule::Record, "received_at unparsable".to_owned()))?;
    let expected_author = format::author(&record.camera, received.unix_timestamp());
    if commit.author != expected_author {
        return fail(Rule::Author, format!("author is {:?}, expected {expected_author:?}", commit.author));
    }
    if committed_at != received.unix_timestamp() {
        return fail(
            Rule::Committer,
            format!("committer time {committed_at} differs from received_at {}", record.received_at),
        );
    }
    if let Some(cameras) = &options.cameras {
        match cameras.cameras.get(&record.camera) {
            None => return fail(Rule::CameraUnknown, format!("camera {:?} is not in the registry", record.camera)),
            Some(Some(revoked)) if received > *revoked => {
                return fail(
                    Rule::CameraRevoked,
                    format!(
                        "received at {} from camera {:?}, whose token was revoked at {revoked}",
                        record.received_at, record.camera
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let image = objects.get(tree[1].2, gix::objs::Kind::Blob)?;
    read::check_image(&record, &image).map_err(|e| (Rule::Image, e))?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&record.sha256, &mut digest).map_err(|e| (Rule::Record, e.to_string()))?;
    Ok(CheckedEvent {
        digest,
        duplicate_of: record.duplicate_of,
        size: image.len() as u64,
        parent: commit.parent,
        received: record.received_at,
    })
}

struct CheckedVerdict {
    verdict: Verdict,
    parent: Option<ObjectId>,
    time: i64,
}

fn verdict_word(verdict: &Verdict) -> &'static str {
    if verdict.spam {
        "spam"
    } else {
        "ok"
    }
}

/// The verdict commit message, as `docs/event-format.md` section 9 prescribes.
fn render_verdict_message(verdict: &Verdict) -> String {
    let word = verdict_word(verdict);
    format!(
        "Verdict {word} for event {seq}\n\nEvent: {id}\nEvent-Seq: {seq}\nVerdict: {word}\n",
        seq = verdict.event_seq,
        id = verdict.event_id
    )
}

/// The note on a judged event, as `docs/event-format.md` section 9 prescribes.
fn render_note(verdict: &Verdict, verdict_commit: ObjectId) -> String {
    let reasons = if verdict.reasons.is_empty() { "-".to_owned() } else { verdict.reasons.join(", ") };
    let mut note = format!("Verdict: {}\nReasons: {reasons}\n", verdict_word(verdict));
    if !verdict.scores.is_empty() {
        let scores: Vec<String> = verdict.scores.iter().map(|(k, v)| format!("{k}={v:.6}")).collect();
        note.push_str(&format!("Scores: {}\n", scores.join(" ")));
    }
    if let Some(d) = verdict.near_duplicate_of {
        note.push_str(&format!("Near-Duplicate-Of: {d}\n"));
    }
    note.push_str(&format!(
        "Model-Sha256: {}\nProcessor: {}\nVerdict-Commit: {verdict_commit}\n",
        verdict.model_sha256, verdict.processor_version
    ));
    note
}

/// The first line of a note, for failure messages.
fn note_summary(note: &[u8]) -> String {
    String::from_utf8_lossy(note).lines().next().unwrap_or_default().to_owned()
}

/// Checks one verdict commit; a failure comes with the event seq it stands for (the chain
/// position, or what `verdict.json` says for the head).
fn check_verdict(
    objects: &mut Objects<'_>,
    commits: &mut Commits<'_>,
    id: ObjectId,
    expected: Option<u64>,
    events: &[ObjectId],
) -> Result<CheckedVerdict, (u64, Fail)> {
    let mut seq = expected.unwrap_or(0);
    check_verdict_at(objects, commits, id, expected, events, &mut seq).map_err(|failure| (seq, failure))
}

fn check_verdict_at(
    objects: &mut Objects<'_>,
    commits: &mut Commits<'_>,
    id: ObjectId,
    expected: Option<u64>,
    events: &[ObjectId],
    seq_out: &mut u64,
) -> Result<CheckedVerdict, Fail> {
    let data = objects.get(id, gix::objs::Kind::Commit)?;
    let commit = parse_strict(&data)?;
    let time = commits.check(&data, &commit)?;
    if commit.author != commit.committer {
        return fail(
            Rule::Author,
            format!("author {:?} differs from the committer {:?}", commit.author, commit.committer),
        );
    }
    let tree = format::parse_tree(&objects.get(commit.tree, gix::objs::Kind::Tree)?)
        .ok_or_else(|| (Rule::Tree, "malformed tree".to_owned()))?;
    let json_id = match tree.as_slice() {
        [(mode, name, id)] if mode == "100644" && name == "verdict.json" => *id,
        _ => return fail(Rule::Tree, "the tree must hold exactly verdict.json (mode 100644)"),
    };
    let verdict = Verdict::from_json(&objects.get(json_id, gix::objs::Kind::Blob)?)
        .map_err(|e| (Rule::Record, format!("verdict.json: {e}")))?;
    let seq = verdict.event_seq;
    if expected.is_none() {
        *seq_out = seq;
    }
    if let Some(expected) = expected {
        if seq != expected {
            return fail(Rule::Verdict, format!("judges event {seq}, its chain position is event {expected}"));
        }
    }
    if commit.message != render_verdict_message(&verdict).as_bytes() {
        return fail(Rule::Message, "the verdict commit message disagrees with verdict.json");
    }
    check_verdict_fields(&verdict)?;
    let Some(event) = seq.checked_sub(1).and_then(|i| events.get(i as usize)) else {
        return fail(Rule::Verdict, format!("judges event {seq}, which is not on {}", format::EVENTS_REF));
    };
    if ObjectId::from_hex(verdict.event_id.as_bytes()).ok() != Some(*event) {
        return fail(Rule::Verdict, format!("names event commit {}, event {seq} is {event}", verdict.event_id));
    }
    match (commit.parent, seq) {
        (None, 1) | (Some(_), 2..) => {}
        (None, s) => return fail(Rule::Verdict, format!("the verdict chain ends at event {s}, before event 1")),
        (Some(_), _) => return fail(Rule::Verdict, "the verdict for event 1 has a parent"),
    }
    Ok(CheckedVerdict { verdict, parent: commit.parent, time })
}

/// The field rules of `verdict.json` (`docs/event-format.md`, section 9) beyond its schema.
fn check_verdict_fields(verdict: &Verdict) -> Result<(), Fail> {
    let word = |s: &str| (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if !verdict.reasons.iter().all(|r| word(r)) {
        return fail(Rule::Record, "verdict.json: reasons must match [a-z_]{1,32}");
    }
    if !verdict.scores.iter().all(|(k, v)| word(k) && v.is_finite() && v.abs() < 1e9) {
        return fail(Rule::Record, "verdict.json: scores must be named [a-z_]{1,32} with values below 1e9");
    }
    if !format::is_sha256_hex(&verdict.model_sha256) {
        return fail(Rule::Record, "verdict.json: model_sha256 must be 64 lowercase hex digits");
    }
    let version = &verdict.processor_version;
    if !(1..=64).contains(&version.len()) || !version.bytes().all(|b| b.is_ascii_graphic()) {
        return fail(Rule::Record, "verdict.json: processor_version must be 1-64 printable ASCII characters");
    }
    if verdict.near_duplicate_of.is_some_and(|d| d == 0 || d >= verdict.event_seq) {
        return fail(Rule::Record, "verdict.json: near_duplicate_of must name an earlier event");
    }
    Ok(())
}

/// Walks the notes commits (format, committer, signatures, `Verdicts-Through` never
/// increasing towards the root) and reads the head's tree. Returns the head's
/// `Verdicts-Through`, its time, and event commit → note blob.
#[allow(clippy::type_complexity)]
fn check_notes(
    objects: &mut Objects<'_>,
    commits: &mut Commits<'_>,
    head: ObjectId,
) -> Result<(u64, Option<i64>, HashMap<ObjectId, ObjectId>), Error> {
    let mut id = head;
    let mut head_info: Option<(u64, i64, ObjectId)> = None;
    let mut later: Option<u64> = None;
    loop {
        let at = |(rule, what): Fail| Error::Broken {
            chain: Chain::Notes,
            seq: later.unwrap_or(0),
            id: id.to_string(),
            rule,
            what,
        };
        let data = objects.get(id, gix::objs::Kind::Commit).map_err(at)?;
        let commit = parse_strict(&data).map_err(at)?;
        let time = commits.check(&data, &commit).map_err(at)?;
        if commit.author != commit.committer {
            return Err(at((Rule::Author, format!("author {:?} differs from the committer", commit.author))));
        }
        let text = std::str::from_utf8(commit.message).unwrap_or_default();
        let through = text
            .strip_prefix("Notes for verdicts through event ")
            .and_then(|rest| rest.split_once("\n\nVerdicts-Through: "))
            .and_then(|(a, b)| (b.strip_suffix('\n') == Some(a)).then_some(a))
            .and_then(|a| a.parse::<u64>().ok().filter(|n| n.to_string() == a))
            .ok_or_else(|| {
                at((
                    Rule::Message,
                    "the notes commit message is not `Notes for verdicts through event N` + `Verdicts-Through: N`"
                        .into(),
                ))
            })?;
        if let Some(later) = later {
            // Equal after a crash that lost a verdicts ref update: the re-judged verdicts'
            // notes replace the orphaned ones at the same Verdicts-Through.
            if through > later {
                return Err(at((
                    Rule::Notes,
                    format!("Verdicts-Through {through} is above the next notes commit's {later}"),
                )));
            }
        }
        if head_info.is_none() {
            head_info = Some((through, time, commit.tree));
        }
        later = Some(through);
        match commit.parent {
            Some(parent) => id = parent,
            None => break,
        }
    }
    let (through, time, tree) = head_info.expect("the loop ran at least once");
    let at = |(rule, what): Fail| Error::Broken { chain: Chain::Notes, seq: through, id: head.to_string(), rule, what };
    let mut notes = HashMap::new();
    read_notes_tree(objects, tree, String::new(), 0, &mut notes).map_err(at)?;
    Ok((through, Some(time), notes))
}

/// The 2/2/36 fanout: two levels of `40000` trees named by two hex digits, then `100644`
/// blobs named by the remaining 36.
fn read_notes_tree(
    objects: &mut Objects<'_>,
    tree: ObjectId,
    prefix: String,
    depth: usize,
    out: &mut HashMap<ObjectId, ObjectId>,
) -> Result<(), Fail> {
    let entries = format::parse_tree(&objects.get(tree, gix::objs::Kind::Tree)?)
        .ok_or_else(|| (Rule::Notes, format!("malformed notes tree {tree}")))?;
    let hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    for (mode, name, id) in entries {
        let path = format!("{prefix}{name}");
        match depth {
            0 | 1 if mode == "40000" && name.len() == 2 && hex(&name) => {
                read_notes_tree(objects, id, path, depth + 1, out)?
            }
            2 if mode == "100644" && name.len() == 36 && hex(&name) => {
                let event = ObjectId::from_hex(path.as_bytes()).map_err(|e| (Rule::Notes, e.to_string()))?;
                out.insert(event, id);
            }
            _ => return fail(Rule::Notes, format!("notes tree entry {path:?} (mode {mode}) breaks the 2/2/36 fanout")),
        }
    }
    Ok(())
}
