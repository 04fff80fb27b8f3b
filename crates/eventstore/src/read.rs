//! Reading events: the head, one event by seq or commit id, its image (SHA-256 checked on the
//! way out), iteration from a seq.

use std::fs::File;
use std::sync::Arc;

use gix::ObjectId;
use sha2::Digest as _;

use crate::format::{self, EventRecord, Trailers, EVENTS_REF};
use crate::{seqidx, Ledger};

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No event with this seq (beyond the head) or this id. HTTP 404.
    #[error("event not found: {0}")]
    NotFound(String),
    /// The commit id is not 40 hex digits. HTTP 400.
    #[error("invalid commit id {0:?}")]
    InvalidId(String),
    /// Stored data contradicts itself (image bytes vs. sha256, seq.idx vs. commit, malformed
    /// objects). HTTP 500, log loudly, run `camledger verify`.
    #[error("corrupt ledger at {id}: {what}")]
    Corrupt { id: String, what: String },
    /// gix failed to read an object or ref (I/O). HTTP 500; retrying may help.
    #[error("git read failed")]
    Git(#[source] gix::Error),
    /// Reading `index/seq.idx` failed. HTTP 500.
    #[error("index read failed")]
    Io(#[source] std::io::Error),
}

/// The newest event: its seq and commit id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHead {
    pub seq: u64,
    pub id: String,
}

/// One event as stored: `event.json`, its commit id and the commit message's trailers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub record: EventRecord,
    /// 40-hex commit id.
    pub id: String,
    pub trailers: Trailers,
    /// 40-hex id of the previous event's commit (none for seq 1).
    pub parent: Option<String>,
}

/// An event commit with everything parsed, and the ids needed to go further.
pub(crate) struct Loaded {
    pub(crate) stored: StoredEvent,
    pub(crate) image_oid: ObjectId,
}

fn corrupt(id: impl std::fmt::Display, what: impl Into<String>) -> Error {
    Error::Corrupt { id: id.to_string(), what: what.into() }
}

pub(crate) fn find(repo: &gix::Repository, id: ObjectId, kind: gix::objs::Kind) -> Result<Vec<u8>, Error> {
    // Pack consolidation removes packs that a lookup may have just chosen; gix then reloads
    // its pack list, but a lookup racing the removal can still fail or miss once. Git's own
    // readers retry after re-scanning packs for the same reason.
    let mut attempt = 0;
    let object = loop {
        match repo.try_find_object(id) {
            Ok(Some(object)) => break object.detach(),
            Ok(None) if attempt >= 2 => return Err(Error::NotFound(id.to_string())),
            Err(e) if attempt >= 2 => return Err(Error::Git(e)),
            Ok(None) | Err(_) => attempt += 1,
        }
    };
    if object.kind != kind {
        return Err(corrupt(id, format!("expected a {kind}, found a {}", object.kind)));
    }
    Ok(object.data)
}

/// Reads one event commit, its tree and `event.json` (not the image).
pub(crate) fn load(repo: &gix::Repository, id: ObjectId) -> Result<Loaded, Error> {
    let commit_data = find(repo, id, gix::objs::Kind::Commit)?;
    let commit = format::parse_commit(&commit_data).ok_or_else(|| corrupt(id, "malformed commit"))?;
    let trailers = format::parse_commit_message(commit.message)
        .ok_or_else(|| corrupt(id, "commit message is not summary + Seq/Camera/Sha256 trailers"))?;
    let tree_data = find(repo, commit.tree, gix::objs::Kind::Tree)?;
    let tree = format::parse_tree(&tree_data).ok_or_else(|| corrupt(id, "malformed tree"))?;
    let json_oid = tree
        .iter()
        .find(|(_, name, _)| name == "event.json")
        .map(|(_, _, oid)| *oid)
        .ok_or_else(|| corrupt(id, "tree has no event.json"))?;
    let json = find(repo, json_oid, gix::objs::Kind::Blob)?;
    let record = EventRecord::from_json(&json).map_err(|e| corrupt(id, format!("event.json: {e}")))?;
    if !trailers.agrees_with(&record) {
        return Err(corrupt(id, "commit trailers disagree with event.json"));
    }
    let image_oid = tree
        .iter()
        .find(|(_, name, _)| *name == record.image)
        .map(|(_, _, oid)| *oid)
        .ok_or_else(|| corrupt(id, format!("tree has no {}", record.image)))?;
    Ok(Loaded {
        stored: StoredEvent {
            id: id.to_string(),
            parent: commit.parents.first().map(ToString::to_string),
            record,
            trailers,
        },
        image_oid,
    })
}

/// Reads only the commit's `Seq:` trailer and parents (cheap: no tree or blob).
pub(crate) fn seq_and_parent(repo: &gix::Repository, id: ObjectId) -> Result<(u64, Option<ObjectId>), Error> {
    let data = find(repo, id, gix::objs::Kind::Commit)?;
    let commit = format::parse_commit(&data).ok_or_else(|| corrupt(id, "malformed commit"))?;
    let trailers =
        format::parse_commit_message(commit.message).ok_or_else(|| corrupt(id, "commit message has no trailers"))?;
    Ok((trailers.seq, commit.parents.first().copied()))
}

pub(crate) fn head_of(repo: &gix::Repository) -> Result<Option<(u64, ObjectId)>, Error> {
    let Some(reference) = repo.try_find_reference(EVENTS_REF).map_err(Error::Git)? else {
        return Ok(None);
    };
    let id = match reference.inner.target {
        gix::refs::Target::Object(id) => id,
        gix::refs::Target::Symbolic(_) => return Err(corrupt(EVENTS_REF, "is a symbolic ref")),
    };
    let (seq, _) = seq_and_parent(repo, id)?;
    Ok(Some((seq, id)))
}

/// Checks image bytes against the record.
pub(crate) fn check_image(record: &EventRecord, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() as u64 != record.size {
        return Err(format!("image is {} bytes, event.json says {}", bytes.len(), record.size));
    }
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    if digest != record.sha256 {
        return Err(format!("image SHA-256 is {digest}, event.json says {}", record.sha256));
    }
    Ok(())
}

impl Ledger {
    /// The newest event, from the ref (O(1)).
    #[tracing::instrument(skip_all)]
    pub fn head(&self) -> Result<Option<EventHead>, Error> {
        Ok(head_of(&self.repo())?.map(|(seq, id)| EventHead { seq, id: id.to_string() }))
    }

    /// The node name the newest event's committer carries (`camledger <node> …`), `None`
    /// before the first event. Once a ledger has events this is its name: `verify` requires
    /// one committer node across the ledger and checkpoints name it as their origin.
    pub fn recorded_node_name(&self) -> Result<Option<String>, Error> {
        let repo = self.repo();
        let Some((_, id)) = head_of(&repo)? else { return Ok(None) };
        let data = find(&repo, id, gix::objs::Kind::Commit)?;
        let headers = data.split(|&b| b == b'\n').take_while(|line| !line.is_empty());
        let node = headers
            .filter_map(|line| line.strip_prefix(b"committer camledger <"))
            .find_map(|rest| rest.iter().position(|&b| b == b'>').map(|end| rest[..end].to_vec()))
            .and_then(|node| String::from_utf8(node).ok());
        match node {
            Some(node) => Ok(Some(node)),
            None => {
                Err(Error::Corrupt { id: id.to_string(), what: "the head commit has no camledger committer".into() })
            }
        }
    }

    fn seq_file(&self) -> Option<Arc<File>> {
        let mut guard = self.inner.seq_file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.is_none() {
            *guard = File::open(self.seq_idx_path()).ok().map(Arc::new);
        }
        guard.clone()
    }

    /// seq -> commit id: `seq.idx` when it has the record, else a walk back from the head
    /// (only while the writer has not yet caught the index up).
    pub(crate) fn id_for_seq(&self, repo: &gix::Repository, seq: u64) -> Result<ObjectId, Error> {
        if seq == 0 {
            return Err(Error::NotFound("seq 0".into()));
        }
        if let Some(file) = self.seq_file() {
            if let Some(id) = seqidx::get(&file, seq).map_err(Error::Io)? {
                return Ok(id);
            }
        }
        let Some((head_seq, mut id)) = head_of(repo)? else {
            return Err(Error::NotFound(format!("seq {seq}")));
        };
        if seq > head_seq {
            return Err(Error::NotFound(format!("seq {seq}")));
        }
        for _ in seq..head_seq {
            let (_, parent) = seq_and_parent(repo, id)?;
            id = parent.ok_or_else(|| corrupt(id, "history ends before seq 1"))?;
        }
        Ok(id)
    }

    /// Loads the event `seq.idx` names for `seq`, checking that it really is that event.
    fn load_seq(&self, repo: &gix::Repository, seq: u64) -> Result<(ObjectId, Loaded), Error> {
        let id = self.id_for_seq(repo, seq)?;
        let loaded = load(repo, id)?;
        if loaded.stored.record.seq != seq {
            return Err(corrupt(
                id,
                format!("seq.idx names this commit for seq {seq}, it holds seq {}", loaded.stored.record.seq),
            ));
        }
        Ok((id, loaded))
    }

    /// One event by seq.
    #[tracing::instrument(skip_all, fields(seq))]
    pub fn event(&self, seq: u64) -> Result<StoredEvent, Error> {
        let (_, loaded) = self.load_seq(&self.repo(), seq)?;
        Ok(loaded.stored)
    }

    /// One event by its 40-hex commit id.
    #[tracing::instrument(skip_all, fields(id))]
    pub fn event_by_id(&self, id: &str) -> Result<StoredEvent, Error> {
        if id.len() != 40 {
            return Err(Error::InvalidId(id.to_owned()));
        }
        let oid = ObjectId::from_hex(id.as_bytes()).map_err(|_| Error::InvalidId(id.to_owned()))?;
        Ok(load(&self.repo(), oid)?.stored)
    }

    /// One event's record and image bytes; the bytes are checked against `sha256` and `size`.
    #[tracing::instrument(skip_all, fields(seq))]
    pub fn image(&self, seq: u64) -> Result<(EventRecord, Vec<u8>), Error> {
        let repo = self.repo();
        let (id, loaded) = self.load_seq(&repo, seq)?;
        let bytes = find(&repo, loaded.image_oid, gix::objs::Kind::Blob)?;
        check_image(&loaded.stored.record, &bytes).map_err(|what| corrupt(id, what))?;
        Ok((loaded.stored.record, bytes))
    }

    /// Events `seq, seq + 1, …` up to the head as it was when the iteration started.
    /// Uses `seq.idx`; where it does not reach (no writer has caught it up yet), the missing
    /// ids are collected once by walking back from the head, not once per event.
    pub fn events_from(&self, seq: u64) -> impl Iterator<Item = Result<StoredEvent, Error>> {
        let ledger = self.clone();
        let repo = self.repo();
        let (mut next, end, first_error) = match head_of(&repo) {
            Ok(Some((head_seq, _))) => (seq.max(1), head_seq, None),
            Ok(None) => (1, 0, None),
            Err(e) => (1, 0, Some(e)),
        };
        let mut first_error = first_error;
        // ids[k] = commit of seq `walked_from + k`, for seqs the index lacks.
        let mut walked: Option<(u64, Vec<ObjectId>)> = None;
        std::iter::from_fn(move || {
            if let Some(e) = first_error.take() {
                return Some(Err(e));
            }
            if next > end {
                return None;
            }
            let seq = next;
            next += 1;
            let indexed = match ledger.seq_file().map(|f| seqidx::get(&f, seq)).transpose() {
                Ok(found) => found.flatten(),
                Err(e) => return Some(Err(Error::Io(e))),
            };
            let id = match indexed {
                Some(id) => id,
                None => {
                    if walked.is_none() {
                        match walk_ids(&repo, seq, end) {
                            Ok(ids) => walked = Some((seq, ids)),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    let (from, ids) = walked.as_ref().expect("just filled");
                    match seq.checked_sub(*from).and_then(|k| ids.get(k as usize)) {
                        Some(id) => *id,
                        None => return Some(Err(Error::NotFound(format!("seq {seq}")))),
                    }
                }
            };
            Some(load(&repo, id).and_then(|loaded| {
                if loaded.stored.record.seq == seq {
                    Ok(loaded.stored)
                } else {
                    Err(corrupt(id, format!("expected seq {seq}, the commit holds seq {}", loaded.stored.record.seq)))
                }
            }))
        })
    }
}

/// Commit ids of seqs `from..=to`, walking back from the head (which must be `to`).
fn walk_ids(repo: &gix::Repository, from: u64, to: u64) -> Result<Vec<ObjectId>, Error> {
    let Some((head_seq, mut id)) = head_of(repo)? else { return Ok(Vec::new()) };
    let mut ids = Vec::new();
    let mut seq = head_seq;
    while seq >= from {
        if seq <= to {
            ids.push(id);
        }
        if seq == from {
            break;
        }
        let (_, parent) = seq_and_parent(repo, id)?;
        id = parent.ok_or_else(|| corrupt(id, "history ends before seq 1"))?;
        seq -= 1;
    }
    ids.reverse();
    Ok(ids)
}
