//! Camera quarantine (`--quarantine-after N/M`, `camledger cameras release|quarantine`).
//!
//! - Source of truth: `refs/heads/cameras` in the ledger (signed camera-action commits,
//!   `docs/event-format.md` section 13). The in-memory set is rebuilt from it at start and
//!   re-read whenever its head moves (polled every [`POLL`]), so a release or quarantine
//!   written by the CLI reaches a running server within a second. Nothing else records the
//!   state, so nothing can disagree with git after a crash: a quarantine is written to git
//!   first, then put in the set.
//! - Detection: the server follows `refs/heads/verdicts` from its head at start (no replay:
//!   the windows start empty after a restart and after a release) and keeps, per camera, its
//!   last M spam flags. When M verdicts are in and at least N are spam, it writes a
//!   quarantine with the evidence. Memory: at most [`MAX_TRACKED`] cameras × M flags.

use std::collections::{HashMap, HashSet, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use camledger_eventstore::{CameraAction, CameraActionKind, Evidence, Ledger};

/// How often the server looks at the cameras and verdicts refs.
pub const POLL: Duration = Duration::from_millis(500);
/// Most cameras with a window at once; beyond it, the window of an arbitrary other camera is
/// dropped (it starts over).
pub const MAX_TRACKED: usize = 100_000;
/// Most verdicts read in one poll; a larger jump skips ahead (those verdicts are not counted).
const MAX_VERDICTS_PER_POLL: u64 = 100_000;
/// Largest window.
pub const MAX_WINDOW: u32 = 10_000;

/// `N/M`: quarantine a camera when N of its last M verdicts are spam.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub spam: u32,
    pub window: u32,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not N/M with 1 <= N <= M <= {MAX_WINDOW} (e.g. 20/25)");
        let (n, m) = text.trim().split_once('/').ok_or_else(bad)?;
        let (spam, window): (u32, u32) = (n.trim().parse().map_err(|_| bad())?, m.trim().parse().map_err(|_| bad())?);
        if spam == 0 || spam > window || window > MAX_WINDOW {
            return Err(bad());
        }
        Ok(Policy { spam, window })
    }
}

/// The quarantined cameras (camera → reason), shared with every upload path.
#[derive(Clone, Default)]
pub(crate) struct Quarantined(Arc<RwLock<HashMap<String, String>>>);

impl Quarantined {
    /// The reason `camera` is quarantined, if it is.
    pub(crate) fn reason(&self, camera: &str) -> Option<String> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(camera).cloned()
    }

    fn replace(&self, set: HashMap<String, String>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = set;
    }

    fn insert(&self, camera: &str, reason: &str) {
        self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(camera.to_owned(), reason.to_owned());
    }

    /// Reads the set from the ledger (start-up and every head move).
    pub(crate) fn load(&self, ledger: &Ledger) -> anyhow::Result<usize> {
        let actions = ledger.camera_actions()?;
        let set: HashMap<String, String> = camledger_eventstore::camera_actions::quarantined(&actions)
            .into_iter()
            .map(|(camera, stored)| (camera, stored.action.reason))
            .collect();
        self.replace(set);
        Ok(actions.len())
    }
}

/// The per-camera windows of spam flags.
struct Windows {
    policy: Policy,
    windows: HashMap<String, VecDeque<bool>>,
}

impl Windows {
    /// Counts one verdict; `Some(evidence)` when the camera crosses the policy now.
    fn count(&mut self, camera: &str, spam: bool, seq: u64) -> Option<Evidence> {
        if !self.windows.contains_key(camera) && self.windows.len() >= MAX_TRACKED {
            if let Some(victim) = self.windows.keys().next().cloned() {
                self.windows.remove(&victim);
            }
        }
        let window = self.windows.entry(camera.to_owned()).or_default();
        window.push_back(spam);
        if window.len() > self.policy.window as usize {
            window.pop_front();
        }
        let spam_count = window.iter().filter(|s| **s).count() as u32;
        if window.len() == self.policy.window as usize && spam_count >= self.policy.spam {
            self.windows.remove(camera);
            return Some(Evidence { window: self.policy.window, spam: spam_count, last_verdict_seq: seq });
        }
        None
    }
}

/// Follows the cameras ref (always) and the verdicts (with a policy) until `stop`.
pub(crate) async fn run(
    ledger: Ledger,
    quarantined: Quarantined,
    policy: Option<Policy>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut follower = Follower {
        ledger,
        quarantined,
        windows: policy.map(|policy| Windows { policy, windows: HashMap::new() }),
        actions_head: None,
        actions_seen: 0,
        verdicts_seq: None,
    };
    loop {
        let step = tokio::task::spawn_blocking(move || {
            if let Err(e) = follower.step() {
                tracing::warn!(error = format!("{e:#}"), "following camera actions and verdicts failed; retrying");
            }
            follower
        })
        .await;
        follower = match step {
            Ok(follower) => follower,
            Err(e) => {
                tracing::error!(error = %e, "the quarantine follower panicked; quarantines are no longer detected");
                return;
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

struct Follower {
    ledger: Ledger,
    quarantined: Quarantined,
    windows: Option<Windows>,
    actions_head: Option<String>,
    actions_seen: usize,
    /// The last verdict counted (`None` until the first step, which starts at the head).
    verdicts_seq: Option<u64>,
}

impl Follower {
    fn step(&mut self) -> anyhow::Result<()> {
        self.reload_actions()?;
        let Some(windows) = &mut self.windows else { return Ok(()) };
        let head = self.ledger.verdict_head()?.map_or(0, |h| h.event_seq);
        let from = match self.verdicts_seq {
            None => {
                // No replay: verdicts judged before this start are not counted.
                self.verdicts_seq = Some(head);
                return Ok(());
            }
            Some(seq) if head.saturating_sub(seq) > MAX_VERDICTS_PER_POLL => head - MAX_VERDICTS_PER_POLL,
            Some(seq) => seq,
        };
        if head <= from {
            return Ok(());
        }
        let mut verdicts = Vec::new();
        self.ledger.walk_verdicts_back(|v| {
            if v.event_seq <= from {
                return false;
            }
            verdicts.push((v.event_seq, v.spam));
            true
        })?;
        verdicts.reverse();
        for (seq, spam) in verdicts {
            let camera = self.ledger.event(seq)?.record.camera;
            self.verdicts_seq = Some(seq);
            if self.quarantined.reason(&camera).is_some() {
                continue;
            }
            if let Some(evidence) = windows.count(&camera, spam, seq) {
                let reason = format!(
                    "{} of its last {} verdicts were spam (through event {seq})",
                    evidence.spam, evidence.window
                );
                let action =
                    CameraAction::now(CameraActionKind::Quarantine, &camera, &reason, Some(evidence), "camledger");
                // Git first, then the set: a crash in between leaves the quarantine in git,
                // and the next start reads it.
                let id = match self.ledger.append_camera_action(&action) {
                    Ok(id) => id,
                    // An operator quarantined it between our read and our write: their record
                    // stands, and the next step's reload (0.5 s) puts it in the set.
                    Err(camledger_eventstore::camera_actions::Error::Redundant { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                self.quarantined.insert(&camera, &reason);
                self.actions_seen += 1;
                self.actions_head = Some(id.clone());
                tracing::warn!(camera, commit = id, reason, "camera quarantined");
            }
        }
        Ok(())
    }

    /// Re-reads the set when the cameras ref moved; a camera named by a new action (a release,
    /// an operator's quarantine) starts with an empty window.
    fn reload_actions(&mut self) -> anyhow::Result<()> {
        let head = self.ledger.camera_actions_head()?;
        if head == self.actions_head {
            return Ok(());
        }
        let actions = self.ledger.camera_actions()?;
        let set = camledger_eventstore::camera_actions::quarantined(&actions);
        if let Some(windows) = &mut self.windows {
            let named: HashSet<&str> =
                actions.iter().skip(self.actions_seen).map(|a| a.action.camera.as_str()).collect();
            windows.windows.retain(|camera, _| !named.contains(camera.as_str()));
        }
        self.quarantined.replace(set.into_iter().map(|(camera, stored)| (camera, stored.action.reason)).collect());
        self.actions_seen = actions.len();
        self.actions_head = head;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_operators_write_them() {
        assert_eq!("20/25".parse(), Ok(Policy { spam: 20, window: 25 }));
        assert_eq!(" 3 / 4 ".parse(), Ok(Policy { spam: 3, window: 4 }));
        for bad in ["0/4", "5/4", "4", "a/b", "1/10001", "-1/4", ""] {
            assert!(bad.parse::<Policy>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_camera_is_caught_only_with_a_full_window() {
        let mut windows = Windows { policy: Policy { spam: 3, window: 4 }, windows: HashMap::new() };
        for seq in 1..=3 {
            assert_eq!(windows.count("cam-1", true, seq), None, "fewer than M verdicts never quarantine");
        }
        assert_eq!(windows.count("cam-2", true, 4), None, "another camera has its own window");
        let caught = windows.count("cam-1", false, 5).expect("3 of the last 4 are spam");
        assert_eq!(caught, Evidence { window: 4, spam: 3, last_verdict_seq: 5 });
        // The window starts over afterwards.
        assert_eq!(windows.count("cam-1", true, 6), None);
        // Old spam slides out of the window.
        let mut slide = Windows { policy: Policy { spam: 2, window: 3 }, windows: HashMap::new() };
        for (seq, spam) in [(1, true), (2, false), (3, false), (4, true), (5, false)] {
            assert_eq!(slide.count("cam", spam, seq), None, "seq {seq}");
        }
    }
}

/// What `cameras quarantine` and `cameras release` take besides the camera id.
#[derive(Clone, Debug, clap::Args)]
pub struct ActionArgs {
    /// Why (recorded in the camera-action commit; 1-256 characters).
    #[arg(long, env = "CAMLEDGER_ACTION_REASON")]
    pub reason: Option<String>,
    /// Who acts (recorded as `by`; default: $USER, else `operator`).
    #[arg(long, env = "CAMLEDGER_OPERATOR")]
    pub by: Option<String>,
    #[command(flatten)]
    pub data: crate::config::DataDirArg,
    #[command(flatten)]
    pub signing_key: crate::keys::SigningKeyArg,
    #[command(flatten)]
    pub node: crate::config::NodeNameArg,
}

/// The cameras quarantined now (camera → reason); none when the data dir has no ledger yet.
pub(crate) fn quarantined_now(data: &crate::config::DataDirArg) -> anyhow::Result<HashMap<String, String>> {
    if !data.data_dir.join("ledger.git").exists() {
        return Ok(HashMap::new());
    }
    let set = Quarantined::default();
    set.load(&crate::datadir::open_ledger(data)?)?;
    let map = set.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Ok(map)
}

/// `cameras list --format json`: each camera with `quarantined` (its reason, or null).
pub(crate) fn with_quarantine(
    cameras: &[crate::registry::CameraInfo],
    quarantined: &HashMap<String, String>,
) -> anyhow::Result<Vec<serde_json::Value>> {
    cameras
        .iter()
        .map(|camera| {
            let mut value = serde_json::to_value(camera)?;
            value["quarantined"] = quarantined.get(&camera.id).map_or(serde_json::Value::Null, |r| r.clone().into());
            Ok(value)
        })
        .collect()
}

/// Writes a quarantine or release by an operator (the CLI); a release of a camera that is not
/// quarantined, or a quarantine of one that is, is refused.
pub(crate) fn act(kind: CameraActionKind, camera: &str, args: &ActionArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let usage = |what: String| anyhow::Error::from(crate::evaluate::UsageError(what));
    if !camledger_eventstore::format::is_valid_camera(camera) {
        return Err(usage(format!("{camera:?} is not a camera id")));
    }
    let data_dir = &args.data.data_dir;
    let node_name = args.node.node_name(data_dir)?;
    let signing_key = Some(args.signing_key.load_or_create(data_dir)?);
    let ledger =
        Ledger::open(data_dir, camledger_eventstore::LedgerConfig { node_name, signing_key, ..Default::default() })
            .with_context(|| format!("opening the ledger in {}", data_dir.display()))?;
    let now = quarantined_now(&args.data)?;
    let default_reason = match (kind, now.contains_key(camera)) {
        (CameraActionKind::Release, false) => return Err(usage(format!("camera {camera} is not quarantined"))),
        (CameraActionKind::Quarantine, true) => return Err(usage(format!("camera {camera} is already quarantined"))),
        (CameraActionKind::Release, true) => "released by an operator",
        (CameraActionKind::Quarantine, false) => "quarantined by an operator",
    };
    let reason = args.reason.clone().unwrap_or_else(|| default_reason.to_owned());
    let by = args.by.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "operator".to_owned());
    let action = CameraAction::now(kind, camera, &reason, None, &by);
    action.check().map_err(|e| usage(e.to_owned()))?;
    let id = match ledger.append_camera_action(&action) {
        Ok(id) => id,
        // Another writer got there first (checked against the head the append extends).
        Err(e @ camledger_eventstore::camera_actions::Error::Redundant { .. }) => return Err(usage(e.to_string())),
        Err(e) => return Err(e.into()),
    };
    println!("{} camera {camera}: commit {id} on {}", kind.as_str(), camledger_eventstore::CAMERAS_REF);
    Ok(())
}
