//! Pure decisions, kept free of I/O so they are table-tested: the manifest, which
//! snapshots a restore needs, which ones prune may delete, when to start a new full
//! snapshot, and reading the sequence number from a commit message.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// Every ref of the ledger repository and its value at snapshot time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// Full ref name (`refs/heads/events`) to hex object id.
    pub(crate) refs: BTreeMap<String, String>,
    /// What `HEAD` points at symbolically, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) head: Option<String>,
    // No repository config: snapshots before 2026-12 carried one (`"config"`, ignored when
    // parsed). A restore writes camledger's own config; one read from the database could
    // set `core.pager`, `core.fsmonitor`, … and run commands on the restoring host.
}

impl Manifest {
    /// Whether `other` names the same refs and `HEAD`.
    pub(crate) fn same_refs(&self, other: &Manifest) -> bool {
        self.refs == other.refs && self.head == other.head
    }

    /// The first ref name (or `HEAD` target) that is not a plain `refs/…` name: each one
    /// becomes a file path under the repository, so `..`, empty or dot-led components,
    /// and anything outside `[A-Za-z0-9._/-]` are refused before anything is written.
    pub(crate) fn unsafe_ref(&self) -> Option<&str> {
        self.refs.keys().map(String::as_str).chain(self.head.as_deref()).find(|name| !safe_ref_name(name))
    }
}

fn safe_ref_name(name: &str) -> bool {
    name.len() <= 255
        && name.starts_with("refs/")
        && !name.ends_with(".lock")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && name.split('/').all(|part| !part.is_empty() && !part.starts_with('.'))
}

/// Why no restore chain can be built for a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// The requested snapshot is not in the catalog.
    Unknown(i64),
    /// `snapshot` names `parent`, which is gone.
    ParentMissing { snapshot: i64, parent: i64 },
    /// The parent links loop (only possible through manual edits).
    Cycle(i64),
}

/// The snapshots to apply, oldest (the full one) first, to restore `target`.
pub(crate) fn chain(parents: &HashMap<i64, Option<i64>>, target: i64) -> Result<Vec<i64>, ChainError> {
    let mut out = Vec::new();
    let mut current = target;
    if !parents.contains_key(&target) {
        return Err(ChainError::Unknown(target));
    }
    loop {
        if out.contains(&current) || out.len() > parents.len() {
            return Err(ChainError::Cycle(current));
        }
        out.push(current);
        match parents.get(&current) {
            Some(Some(parent)) => {
                if !parents.contains_key(parent) {
                    return Err(ChainError::ParentMissing { snapshot: current, parent: *parent });
                }
                current = *parent;
            }
            Some(None) => break,
            None => unreachable!("every pushed id was checked to be in the map"),
        }
    }
    out.reverse();
    Ok(out)
}

/// The snapshots that `prune --keep N` deletes: everything except the `keep` newest and
/// every ancestor they need, newest first (so a child always goes before its parent).
pub(crate) fn prunable(parents: &HashMap<i64, Option<i64>>, keep: usize) -> Vec<i64> {
    let mut ids: Vec<i64> = parents.keys().copied().collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut needed = BTreeSet::new();
    for &kept in ids.iter().take(keep) {
        let mut current = Some(kept);
        while let Some(id) = current {
            if !needed.insert(id) {
                break;
            }
            current = parents.get(&id).copied().flatten();
        }
    }
    ids.into_iter().filter(|id| !needed.contains(id)).collect()
}

/// How many snapshots the chain ending at `latest` holds (1 for a full snapshot).
pub(crate) fn chain_len(parents: &HashMap<i64, Option<i64>>, latest: i64) -> usize {
    let mut n = 0;
    let mut current = Some(latest);
    while let Some(id) = current {
        n += 1;
        if n > parents.len() {
            break;
        }
        current = parents.get(&id).copied().flatten();
    }
    n
}

/// Whether the next snapshot should be full: there is no previous one, or the chain
/// already holds `full_every` snapshots (restores read the whole chain, and prune can
/// only free space below a full snapshot).
pub(crate) fn next_is_full(previous_chain_len: Option<usize>, full_every: usize) -> bool {
    match previous_chain_len {
        None => true,
        Some(len) => len >= full_every.max(1),
    }
}

/// The value of the last `Seq:` trailer in a commit message.
pub(crate) fn seq_trailer(message: &str) -> Option<i64> {
    message.lines().rev().find_map(|line| line.strip_prefix("Seq:").map(str::trim)).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parents(links: &[(i64, Option<i64>)]) -> HashMap<i64, Option<i64>> {
        links.iter().copied().collect()
    }

    #[test]
    fn a_restore_chain_runs_from_the_full_snapshot_to_the_target() {
        let p = parents(&[(1, None), (2, Some(1)), (3, Some(2)), (4, None), (5, Some(4)), (6, Some(2))]);
        let table: &[(i64, Result<Vec<i64>, ChainError>)] = &[
            (1, Ok(vec![1])),
            (3, Ok(vec![1, 2, 3])),
            (5, Ok(vec![4, 5])),
            (6, Ok(vec![1, 2, 6])),
            (9, Err(ChainError::Unknown(9))),
        ];
        for (target, expected) in table {
            assert_eq!(&chain(&p, *target), expected, "target {target}");
        }
    }

    #[test]
    fn a_chain_with_a_deleted_parent_or_a_loop_is_refused() {
        let gone = parents(&[(2, Some(1)), (3, Some(2))]);
        assert_eq!(chain(&gone, 3), Err(ChainError::ParentMissing { snapshot: 2, parent: 1 }));
        let looped = parents(&[(1, Some(2)), (2, Some(1))]);
        assert!(matches!(chain(&looped, 1), Err(ChainError::Cycle(_))));
    }

    #[test]
    fn prune_never_deletes_what_a_kept_snapshot_needs() {
        // 1 full <- 2 <- 3, 4 full <- 5 <- 6
        let p = parents(&[(1, None), (2, Some(1)), (3, Some(2)), (4, None), (5, Some(4)), (6, Some(5))]);
        let table: &[(usize, &[i64])] =
            &[(0, &[6, 5, 4, 3, 2, 1]), (1, &[3, 2, 1]), (2, &[3, 2, 1]), (3, &[3, 2, 1]), (4, &[]), (10, &[])];
        for &(keep, expected) in table {
            assert_eq!(prunable(&p, keep), expected, "keep {keep}");
        }
    }

    #[test]
    fn a_new_full_snapshot_starts_when_the_chain_is_long_enough() {
        let table = [
            (None, 24, true),
            (Some(1), 24, false),
            (Some(23), 24, false),
            (Some(24), 24, true),
            (Some(1), 0, true),
            (Some(1), 1, true),
        ];
        for (len, every, expected) in table {
            assert_eq!(next_is_full(len, every), expected, "chain {len:?}, every {every}");
        }
        let p = parents(&[(1, None), (2, Some(1)), (3, Some(2))]);
        assert_eq!((chain_len(&p, 1), chain_len(&p, 3)), (1, 3));
    }

    #[test]
    fn the_sequence_number_comes_from_the_last_seq_trailer() {
        let table = [
            ("event 7 from cam-1\n\nSeq: 7\nCamera: cam-1\nSha256: ab\n", Some(7)),
            ("summary\n\nSeq:   12  \n", Some(12)),
            ("summary\n\nSeq: 1\nSeq: 2\n", Some(2)),
            ("summary without trailers\n", None),
            ("summary\n\nSeq: seven\n", None),
        ];
        for (message, expected) in table {
            assert_eq!(seq_trailer(message), expected, "{message:?}");
        }
    }

    #[test]
    fn refs_that_could_leave_the_repository_are_unsafe() {
        let table = [
            ("refs/heads/events", true),
            ("refs/notes/verdicts", true),
            ("refs/heads/v1.2_x-y", true),
            ("refs/../config", false),
            ("refs/heads/../../hooks/post-checkout", false),
            ("/etc/passwd", false),
            ("HEAD", false),
            ("config", false),
            ("refs//heads", false),
            ("refs/heads/.hidden", false),
            ("refs/heads/x.lock", false),
            ("refs/heads/new\nline", false),
            ("refs/heads/sp ace", false),
        ];
        for (name, safe) in table {
            let mut m = Manifest::default();
            m.refs.insert(name.into(), "aa".repeat(20));
            assert_eq!(m.unsafe_ref().is_none(), safe, "{name:?}");
            let m = Manifest { refs: BTreeMap::new(), head: Some(name.into()) };
            assert_eq!(m.unsafe_ref().is_none(), safe, "HEAD -> {name:?}");
        }
    }

    #[test]
    fn an_old_manifest_with_a_config_parses_and_the_config_is_dropped() {
        let old = r#"{"refs":{"refs/heads/events":"aa"},"head":"refs/heads/events","config":"[core]\n\tpager = sh"}"#;
        let m: Manifest = serde_json::from_str(old).expect("old manifests parse");
        assert!(!serde_json::to_string(&m).expect("serializes").contains("pager"));
    }

    #[test]
    fn a_manifest_round_trips_through_json_and_compares_by_value() {
        let mut m = Manifest::default();
        m.refs.insert("refs/heads/events".into(), "aa".repeat(20));
        m.head = Some("refs/heads/events".into());
        let json = serde_json::to_string(&m).expect("plain data serializes");
        let back: Manifest = serde_json::from_str(&json).expect("own output parses");
        assert_eq!(back, m);
        let mut other = m.clone();
        other.refs.insert("refs/heads/verdicts".into(), "bb".repeat(20));
        assert_ne!(other, m);
    }
}
