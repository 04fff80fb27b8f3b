//! Camera actions: quarantines and releases, one signed commit each on `refs/heads/cameras`
//! (`docs/event-format.md`, section 13), so an auditor sees with stock git who stopped which
//! camera, when, why and on what evidence, and who let it upload again.
//!
//! - One commit per action, parent = the previous action (none for the first): a linear chain
//!   written through the one publish path ([`publish`]) with a compare-and-swap on the old
//!   head, under the git-writers lock (the CLI and a running server may both write).
//! - Tree: exactly `camera-action.json`, canonical JSON (RFC 8785, as `verdict.json`).
//! - The chain is the source of truth for which cameras are quarantined now: the last action
//!   of a camera decides ([`quarantined`]).
//! - Version-1 readers of the events and verdicts refs see nothing new: this ref is separate.

use std::collections::HashMap;

use gix::ObjectId;
use serde::{Deserialize, Serialize};

use crate::format::{self, FormatError};
use crate::pack::{self, PackEntry};
use crate::read::{self, find};
use crate::{publish, refs, Ledger};

/// The ref of camera-action commits.
pub const CAMERAS_REF: &str = "refs/heads/cameras";
/// Version of `camera-action.json`.
pub const CAMERA_ACTION_FORMAT_VERSION: u32 = 1;
/// The tree entry holding the record.
pub const CAMERA_ACTION_FILE: &str = "camera-action.json";
/// Longest `reason` and `by` (characters).
pub const MAX_TEXT: usize = 256;
/// Most actions read back from the chain at once (a chain longer than this is refused as
/// corrupt rather than read without bound).
const MAX_ACTIONS: usize = 1 << 20;

/// What happened to the camera.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Quarantine,
    Release,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Quarantine => "quarantine",
            Action::Release => "release",
        }
    }
}

/// The verdicts that made camledger quarantine a camera.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The window: the camera's last `window` verdicts were counted.
    pub window: u32,
    /// How many of them were spam.
    pub spam: u32,
    /// The event seq of the last verdict counted.
    pub last_verdict_seq: u64,
}

/// One quarantine or release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraAction {
    pub action: Action,
    pub camera: String,
    /// RFC 3339 UTC, 6 fractional digits (as `received_at`).
    pub at: String,
    /// Free text, 1–256 characters, no control characters.
    pub reason: String,
    /// Set by automatic quarantines; `None` for an operator's action.
    pub evidence: Option<Evidence>,
    /// `camledger` for automatic quarantines, else the operator's name (same rules as `reason`).
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionJson {
    format_version: u32,
    action: Action,
    camera: String,
    at: String,
    reason: String,
    evidence: Option<Evidence>,
    by: String,
}

fn is_valid_text(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_TEXT && !s.chars().any(char::is_control)
}

impl CameraAction {
    /// A record stamped now.
    pub fn now(action: Action, camera: &str, reason: &str, evidence: Option<Evidence>, by: &str) -> Self {
        Self {
            action,
            camera: camera.to_owned(),
            at: format::format_timestamp(time::OffsetDateTime::now_utc()),
            reason: reason.to_owned(),
            evidence,
            by: by.to_owned(),
        }
    }

    fn to_json(&self) -> ActionJson {
        ActionJson {
            format_version: CAMERA_ACTION_FORMAT_VERSION,
            action: self.action,
            camera: self.camera.clone(),
            at: self.at.clone(),
            reason: self.reason.clone(),
            evidence: self.evidence.clone(),
            by: self.by.clone(),
        }
    }

    /// Canonical `camera-action.json` bytes.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        format::canonical_json(&self.to_json())
    }

    /// Parses `camera-action.json`, refusing unknown versions, unknown fields, non-canonical
    /// bytes and broken field rules.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
        let json: ActionJson = serde_json::from_slice(bytes)?;
        if json.format_version != CAMERA_ACTION_FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(json.format_version));
        }
        if format::canonical_json(&json) != bytes {
            return Err(FormatError::NotCanonical);
        }
        let action = CameraAction {
            action: json.action,
            camera: json.camera,
            at: json.at,
            reason: json.reason,
            evidence: json.evidence,
            by: json.by,
        };
        action.check().map_err(|why| FormatError::Field { field: "camera-action.json", why: why.into() })?;
        Ok(action)
    }

    /// The field rules (`docs/event-format.md`, section 13).
    pub fn check(&self) -> Result<(), &'static str> {
        if !format::is_valid_camera(&self.camera) {
            return Err("camera is not [A-Za-z0-9._-]{1,64}");
        }
        if format::parse_timestamp(&self.at).is_none() {
            return Err("at is not RFC 3339 UTC with 6 fractional digits");
        }
        if !is_valid_text(&self.reason) {
            return Err("reason must be 1-256 characters without control characters");
        }
        if !is_valid_text(&self.by) {
            return Err("by must be 1-256 characters without control characters");
        }
        if let Some(e) = &self.evidence {
            if self.action != Action::Quarantine || e.window == 0 || e.spam > e.window {
                return Err("evidence belongs to a quarantine, with 0 < window and spam <= window");
            }
        }
        Ok(())
    }

    /// The commit message: a summary line, a blank line, the trailers.
    pub fn commit_message(&self) -> String {
        let summary = match self.action {
            Action::Quarantine => "Quarantine",
            Action::Release => "Release",
        };
        format!("{summary} camera {c}\n\nCamera: {c}\nAction: {a}\n", c = self.camera, a = self.action.as_str())
    }
}

/// An action as stored, with its commit id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCameraAction {
    pub action: CameraAction,
    /// 40-hex commit id.
    pub id: String,
}

/// Why an action was not written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid camera action: {0}")]
    Invalid(&'static str),
    /// Someone else moved the ref between our read and our write, every time we tried.
    #[error("{CAMERAS_REF} kept moving; nothing was written")]
    Conflict,
    /// The action would not alternate with the camera's last one on the chain it extends
    /// (a quarantine of a quarantined camera, a release of one that is not): nothing written.
    #[error("camera {camera} is {state}; nothing was written")]
    Redundant { camera: String, state: &'static str },
    #[error(transparent)]
    Read(#[from] read::Error),
    #[error("writing the camera action failed")]
    Storage(#[source] std::io::Error),
}

/// The cameras quarantined after `actions` (oldest first): camera → its quarantine.
pub fn quarantined(actions: &[StoredCameraAction]) -> HashMap<String, StoredCameraAction> {
    let mut out = HashMap::new();
    for stored in actions {
        match stored.action.action {
            Action::Quarantine => {
                out.insert(stored.action.camera.clone(), stored.clone());
            }
            Action::Release => {
                out.remove(&stored.action.camera);
            }
        }
    }
    out
}

/// The last action on `camera` in the chain ending at `head`, walking back from it.
fn last_action_of(repo: &gix::Repository, head: Option<ObjectId>, camera: &str) -> Result<Option<Action>, read::Error> {
    let mut next = head;
    let mut walked = 0usize;
    while let Some(id) = next {
        if walked >= MAX_ACTIONS {
            return Err(read::Error::Corrupt {
                id: id.to_string(),
                what: format!("{CAMERAS_REF} is longer than {MAX_ACTIONS} actions"),
            });
        }
        let (action, parent) = load_action(repo, id)?;
        if action.camera == camera {
            return Ok(Some(action.action));
        }
        walked += 1;
        next = parent;
    }
    Ok(None)
}

pub(crate) fn load_action(
    repo: &gix::Repository,
    id: ObjectId,
) -> Result<(CameraAction, Option<ObjectId>), read::Error> {
    let corrupt = |what: String| read::Error::Corrupt { id: id.to_string(), what };
    let data = find(repo, id, gix::objs::Kind::Commit)?;
    let commit = format::parse_commit(&data).ok_or_else(|| corrupt("malformed camera-action commit".into()))?;
    let tree = format::parse_tree(&find(repo, commit.tree, gix::objs::Kind::Tree)?)
        .ok_or_else(|| corrupt("malformed tree".into()))?;
    let json_id = match tree.as_slice() {
        [(mode, name, id)] if mode == "100644" && name == CAMERA_ACTION_FILE => *id,
        _ => return Err(corrupt(format!("tree must hold exactly {CAMERA_ACTION_FILE}"))),
    };
    let action = CameraAction::from_json(&find(repo, json_id, gix::objs::Kind::Blob)?)
        .map_err(|e| corrupt(format!("{CAMERA_ACTION_FILE}: {e}")))?;
    if commit.message != action.commit_message().as_bytes() {
        return Err(corrupt("camera-action commit message disagrees with its record".into()));
    }
    Ok((action, commit.parents.first().copied()))
}

impl Ledger {
    /// The head of `refs/heads/cameras` (40 hex), read from the ref file itself: one small
    /// read, so a server may poll it every second.
    pub fn camera_actions_head(&self) -> Result<Option<String>, read::Error> {
        refs::read(&self.git_dir(), CAMERAS_REF).map(|id| id.map(|id| id.to_string())).map_err(read::Error::Io)
    }

    /// Every camera action, oldest first.
    pub fn camera_actions(&self) -> Result<Vec<StoredCameraAction>, read::Error> {
        let repo = self.repo();
        let mut next = crate::verdict::ref_target(&repo, CAMERAS_REF)?;
        let mut out = Vec::new();
        while let Some(id) = next {
            if out.len() >= MAX_ACTIONS {
                return Err(read::Error::Corrupt {
                    id: id.to_string(),
                    what: format!("{CAMERAS_REF} is longer than {MAX_ACTIONS} actions"),
                });
            }
            let (action, parent) = load_action(&repo, id)?;
            out.push(StoredCameraAction { action, id: id.to_string() });
            next = parent;
        }
        out.reverse();
        Ok(out)
    }

    /// Appends one action to `refs/heads/cameras` (signed like every commit, durable when it
    /// returns) and returns its commit id. A concurrent writer's action is kept: the append
    /// is retried on top of it a few times.
    pub fn append_camera_action(&self, action: &CameraAction) -> Result<String, Error> {
        action.check().map_err(Error::Invalid)?;
        if self.fsync().has_failed() {
            return Err(Error::Storage(std::io::Error::other(
                "an fsync failed earlier: the state on disk is unknown until restart",
            )));
        }
        for _ in 0..8 {
            let repo = self.repo();
            let old = crate::verdict::ref_target(&repo, CAMERAS_REF)?;
            // Checked against the very head the compare-and-swap expects, so two writers (an
            // operator and the server, or two operators) cannot both append the same action:
            // the loser retries on top of the winner and finds it redundant.
            let quarantined = last_action_of(&repo, old, &action.camera)? == Some(Action::Quarantine);
            match (action.action, quarantined) {
                (Action::Quarantine, true) => {
                    return Err(Error::Redundant { camera: action.camera.clone(), state: "already quarantined" })
                }
                (Action::Release, false) => {
                    return Err(Error::Redundant { camera: action.camera.clone(), state: "not quarantined" })
                }
                _ => {}
            }
            let seconds = time::OffsetDateTime::now_utc().unix_timestamp();
            let identity = format::committer(&self.config().node_name, seconds);
            let json = pack::encode(pack::Kind::Blob, &action.to_canonical_json()).map_err(Error::Storage)?;
            let tree_bytes = format::tree_bytes([("100644", CAMERA_ACTION_FILE, json.oid)]);
            let tree = pack::encode(pack::Kind::Tree, &tree_bytes).map_err(Error::Storage)?;
            let message = action.commit_message();
            let spec = format::CommitSpec {
                tree: tree.oid,
                parent: old,
                author: &identity,
                committer: &identity,
                message: &message,
            };
            let key = self.config().signing_key.as_deref();
            let commit = pack::encode(pack::Kind::Commit, &format::commit_bytes(&spec, key)).map_err(Error::Storage)?;
            let id = commit.oid;
            let entries: Vec<PackEntry> = vec![json, tree, commit];
            let edits = [refs::Edit { name: CAMERAS_REF, new: id, expected: old }];
            let publication = publish::Publication {
                objects: &entries,
                edits: &edits,
                also_sync: &[],
                holder: publish::Holder::GitWriters,
            };
            match publish::publish(self, &publication) {
                Ok(()) => return Ok(id.to_string()),
                Err(publish::Error::Conflict { .. }) => continue,
                Err(e) => return Err(Error::Storage(std::io::Error::other(e))),
            }
        }
        Err(Error::Conflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LedgerConfig;

    fn quarantine(camera: &str) -> CameraAction {
        let evidence = Evidence { window: 4, spam: 3, last_verdict_seq: 9 };
        CameraAction::now(Action::Quarantine, camera, "3 of its last 4 verdicts were spam", Some(evidence), "camledger")
    }

    #[test]
    fn records_round_trip_canonically_and_hostile_ones_are_refused() {
        let action = quarantine("cam-1");
        let bytes = action.to_canonical_json();
        assert_eq!(CameraAction::from_json(&bytes).expect("parses"), action);
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.starts_with("{\"action\":\"quarantine\",\"at\":"), "{text}");
        let spaced = text.replace(",\"by\"", ", \"by\"");
        assert!(CameraAction::from_json(spaced.as_bytes()).is_err(), "non-canonical bytes parsed");
        let unknown = text.replace("{\"action\"", "{\"a\":1,\"action\"");
        assert!(CameraAction::from_json(unknown.as_bytes()).is_err(), "an unknown field parsed");
        let v2 = text.replace("\"format_version\":1", "\"format_version\":2");
        assert!(matches!(CameraAction::from_json(v2.as_bytes()), Err(FormatError::UnsupportedVersion(2))));
        let mut bad = quarantine("cam/../1");
        assert!(bad.check().is_err());
        bad = quarantine("cam-1");
        bad.reason = "line\nbreak".into();
        assert!(bad.check().is_err());
        bad.reason = "x".repeat(MAX_TEXT + 1);
        assert!(bad.check().is_err());
        let mut release = quarantine("cam-1");
        release.action = Action::Release;
        assert!(release.check().is_err(), "a release carries no evidence");
    }

    #[test]
    fn actions_chain_and_the_last_one_of_a_camera_decides() {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("opens");
        assert_eq!(ledger.camera_actions_head().expect("reads"), None);
        ledger.append_camera_action(&quarantine("cam-1")).expect("writes");
        ledger.append_camera_action(&quarantine("cam-2")).expect("writes");
        let release = CameraAction::now(Action::Release, "cam-1", "false alarm", None, "alice");
        let head = ledger.append_camera_action(&release).expect("writes");
        assert_eq!(ledger.camera_actions_head().expect("reads"), Some(head.clone()));
        let actions = ledger.camera_actions().expect("reads");
        assert_eq!(actions.len(), 3);
        assert_eq!(actions[2].id, head);
        let now: Vec<String> = quarantined(&actions).into_keys().collect();
        assert_eq!(now, vec!["cam-2".to_owned()]);
        // Checked against the head each append extends: a second quarantine of cam-2 (the
        // server's, racing an operator's) and a second release of cam-1 write nothing.
        let again = ledger.append_camera_action(&quarantine("cam-2"));
        assert!(matches!(again, Err(Error::Redundant { state: "already quarantined", .. })), "{again:?}");
        let release_again = ledger.append_camera_action(&release);
        assert!(matches!(release_again, Err(Error::Redundant { state: "not quarantined", .. })), "{release_again:?}");
        assert_eq!(ledger.camera_actions_head().expect("reads"), Some(head));
    }
}
