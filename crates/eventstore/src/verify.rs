//! Verification: walks `refs/heads/events` from the head to seq 1 and checks everything the
//! format promises. Reads only git (never the derived indexes), so it also catches a history
//! that was rewritten behind the writer's back.

use std::collections::HashMap;

use gix::ObjectId;

use crate::format;
use crate::read::{self, EventHead};
use crate::Ledger;

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
}

/// Why verification failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The first failure met walking from the head: which event, which commit, what is wrong.
    /// `camledger verify` prints it and exits non-zero; an auditor starts here.
    #[error("event seq {seq} (commit {id}): {what}")]
    Broken { seq: u64, id: String, what: String },
    /// The ref itself could not be read. Exit non-zero; nothing was checked.
    #[error("cannot read {ref_name}", ref_name = format::EVENTS_REF)]
    Head(#[source] read::Error),
}

impl Ledger {
    /// Walks the whole chain from the head: parent links, seq continuity (head..=1, no gaps),
    /// `event.json` schema, field rules and canonical form, trailers and message, author identity
    /// and time, tree shape, image SHA-256 and size, and `duplicate_of` pointing to an earlier
    /// event with the same SHA-256. `progress(done, total)` is called after each event.
    #[tracing::instrument(skip_all)]
    pub fn verify(&self, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport, Error> {
        let mut repo = self.repo();
        let Some((head_seq, head_id)) = read::head_of(&repo).map_err(|e| match e {
            read::Error::Corrupt { what, id } => Error::Broken { seq: 0, id, what: format!("head commit: {what}") },
            e => Error::Head(e),
        })?
        else {
            return Ok(VerifyReport { events: 0, head: None, duplicates: 0, image_bytes: 0 });
        };
        // Filled while walking back (newest first). Not sized from the head's `Seq:` trailer: a
        // forged head claiming seq 2^62 made that allocation abort the process.
        let mut digests: Vec<([u8; 32], Option<u64>)> = Vec::with_capacity(head_seq.min(1 << 20) as usize);
        let mut image_bytes = 0u64;
        let mut expected_seq = head_seq;
        let mut id = head_id;
        let mut later_received: Option<String> = None;
        loop {
            if expected_seq % 1024 == 0 {
                repo = self.repo(); // pick up a reopened object store during long walks
            }
            let broken = |what: String| Error::Broken { seq: expected_seq, id: id.to_string(), what };
            let (digest, dup, size, parent, received) = check_one(&repo, id, expected_seq).map_err(broken)?;
            if let Some(later) = &later_received {
                // Same fixed-width UTC form, so string order is time order.
                if received > *later {
                    return Err(broken(format!("received_at {received} is after the next event's {later}")));
                }
            }
            later_received = Some(received);
            digests.push((digest, dup));
            image_bytes += size;
            progress(head_seq - expected_seq + 1, head_seq);
            match parent {
                Some(parent) => {
                    id = parent;
                    expected_seq -= 1;
                }
                None => break,
            }
        }
        // Duplicates: every repeat names the first event with its SHA-256, and every first is
        // really first.
        let mut first: HashMap<[u8; 32], u64> = HashMap::new();
        let mut duplicates = 0;
        digests.reverse();
        for (i, (digest, dup)) in digests.iter().enumerate() {
            let seq = expected_seq + i as u64;
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
            let id = self.id_for_seq(&repo, seq).map(|id| id.to_string()).unwrap_or_else(|_| "?".into());
            return Err(Error::Broken { seq, id, what });
        }
        Ok(VerifyReport {
            events: head_seq,
            head: Some(EventHead { seq: head_seq, id: head_id.to_string() }),
            duplicates,
            image_bytes,
        })
    }
}

/// What verification keeps of one event: image digest, duplicate_of, image size, parent, received_at.
type Checked = ([u8; 32], Option<u64>, u64, Option<ObjectId>, String);

/// Checks one event commit.
fn check_one(repo: &gix::Repository, id: ObjectId, expected_seq: u64) -> Result<Checked, String> {
    let loaded = read::load(repo, id).map_err(|e| e.to_string())?;
    let record = &loaded.stored.record;
    if record.seq != expected_seq {
        return Err(format!("event.json says seq {}, the chain position is seq {expected_seq}", record.seq));
    }
    record.check_fields().map_err(|e| e.to_string())?;
    match (expected_seq, loaded.parents.len()) {
        (1, 0) => {}
        (1, n) => return Err(format!("seq 1 must have no parent, has {n}")),
        (_, 1) => {}
        (_, n) => return Err(format!("must have exactly one parent, has {n}")),
    }
    let names: Vec<(&str, &str)> = loaded.tree.iter().map(|(mode, name, _)| (mode.as_str(), name.as_str())).collect();
    if names != [("100644", "event.json"), ("100644", record.image.as_str())] {
        return Err(format!("tree must hold exactly event.json and {} (mode 100644), holds {names:?}", record.image));
    }
    let received = format::parse_timestamp(&record.received_at).ok_or("received_at unparsable")?;
    let expected_author = format::author(&record.camera, received.unix_timestamp());
    if loaded.author != expected_author {
        return Err(format!("author is {:?}, expected {expected_author:?}", loaded.author));
    }
    let bytes = read::find(repo, loaded.image_oid, gix::objs::Kind::Blob).map_err(|e| e.to_string())?;
    read::check_image(record, &bytes)?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(&record.sha256, &mut digest).map_err(|e| e.to_string())?;
    Ok((digest, record.duplicate_of, bytes.len() as u64, loaded.parents.first().copied(), record.received_at.clone()))
}
