//! Everything that touches the ledger repository: reading the ref manifest, writing an
//! incremental pack, indexing a pack into a fresh repository, setting refs, and
//! `git fsck`. The per-event proof is the ledger's own `Ledger::verify`.
//!
//! All functions here are blocking; callers run them in `spawn_blocking`.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::ObjectId;
use gix_pack::data::output;

use crate::plan::{self, Manifest};

/// The ref that holds the event log (see docs/event-format.md).
pub(crate) use camledger_eventstore::EVENTS_REF;

/// A failure while reading or writing the git repository.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A gix or I/O operation failed; `what` names the step. Not retried: an operator
    /// looks at the repository (CLI exit non-zero, HTTP 500).
    #[error("git: {what}")]
    Op {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A ref value that is not an object id (manual edits of the manifest or repository).
    #[error("git: ref {name} has a malformed value {value:?}")]
    BadRefValue { name: String, value: String },
}

fn op<E: Into<Box<dyn std::error::Error + Send + Sync>>>(what: &'static str) -> impl FnOnce(E) -> GitError {
    move |e| GitError::Op { what, source: e.into() }
}

fn parse_id(name: &str, value: &str) -> Result<ObjectId, GitError> {
    ObjectId::from_hex(value.as_bytes())
        .map_err(|_| GitError::BadRefValue { name: name.to_owned(), value: value.to_owned() })
}

/// What a snapshot records about the repository besides its objects.
#[derive(Debug, Clone)]
pub(crate) struct RepoState {
    pub(crate) manifest: Manifest,
    pub(crate) events_head_seq: Option<i64>,
}

/// Read every ref (direct ones; symbolic refs other than `HEAD` are not used by the ledger)
/// and the event sequence number at the tip of `refs/heads/events`.
pub(crate) fn read_state(git_dir: &Path) -> Result<RepoState, GitError> {
    let repo = gix::open(git_dir).map_err(op("open the ledger repository"))?;
    let manifest = read_manifest(&repo)?;
    let events_head_seq = match manifest.refs.get(EVENTS_REF) {
        Some(hex) => {
            let commit = repo.find_commit(parse_id(EVENTS_REF, hex)?).map_err(op("read the events tip commit"))?;
            let message = commit.message_raw().map_err(op("read the events tip message"))?;
            plan::seq_trailer(&String::from_utf8_lossy(message))
        }
        None => None,
    };
    Ok(RepoState { manifest, events_head_seq })
}

fn read_manifest(repo: &gix::Repository) -> Result<Manifest, GitError> {
    let mut manifest = Manifest::default();
    let platform = repo.references().map_err(op("list refs"))?;
    for reference in platform.all().map_err(op("list refs"))? {
        let reference = reference.map_err(op("read a ref"))?;
        if let Some(id) = reference.target().try_id() {
            manifest.refs.insert(reference.name().as_bstr().to_string(), id.to_hex().to_string());
        }
    }
    manifest.head = repo.head_name().map_err(op("read HEAD"))?.map(|name| name.as_bstr().to_string());
    // No config: a restore creates the repository the way `Ledger::open` does, with
    // camledger's own config (see `init_ledger`).
    Ok(manifest)
}

/// Write a pack of every object reachable from `manifest`'s refs and not from `hidden`
/// (the previous snapshot's ref values) to `out`; returns the number of objects.
///
/// Counting walks commits and adds, per commit, only the tree entries that differ from
/// its parent (`TreeAdditionsComparedToAncestor`): everything else is reachable from an
/// older commit and therefore already in this pack or an earlier snapshot. Objects are
/// written whole (never deltas) so each pack indexes on its own.
pub(crate) fn write_pack(
    git_dir: &Path,
    manifest: &Manifest,
    hidden: &[String],
    out: &mut dyn Write,
) -> Result<u64, GitError> {
    use gix::objs::Kind;

    let repo = gix::open(git_dir).map_err(op("open the ledger repository"))?;
    let mut tips = Vec::new();
    let mut direct = Vec::new();
    for (name, value) in &manifest.refs {
        let id = parse_id(name, value)?;
        let object = repo.find_object(id).map_err(op("find a ref target"))?;
        match object.kind {
            Kind::Commit => tips.push(id),
            Kind::Tag => {
                direct.push(id);
                if let Ok(commit) = object.peel_to_commit() {
                    tips.push(commit.id);
                }
            }
            // The ledger's refs all name commits. A ref naming a tree directly would get
            // only the tree object itself (expansion follows trees only from commits);
            // the restore's `git fsck` would then fail rather than pass silently.
            Kind::Tree | Kind::Blob => direct.push(id),
        }
    }
    let mut hidden_commits = Vec::new();
    for value in hidden {
        let id = parse_id("previous snapshot", value)?;
        // A ref value of the previous snapshot may be gone after a history rewrite and gc;
        // then its objects are simply not hidden (the pack gets bigger, never incomplete).
        if let Some(object) = repo.try_find_object(id).map_err(op("look up a previous ref value"))? {
            if let Ok(commit) = object.peel_to_commit() {
                hidden_commits.push(commit.id);
            }
        }
    }

    let mut input = direct;
    if !tips.is_empty() {
        let walk = repo.rev_walk(tips).with_hidden(hidden_commits).all().map_err(op("start the commit walk"))?;
        for info in walk {
            input.push(info.map_err(op("walk commits"))?.id);
        }
    }

    let mut odb = repo.objects.clone().into_inner().into_arc().map_err(op("share the object database"))?;
    // Counts remember pack locations; packs must stay mapped while entries are written.
    odb.prevent_pack_unload();
    let interrupt = AtomicBool::new(false);
    let (counts, _) = output::count::objects_unthreaded(
        &odb,
        &mut input.into_iter().map(Ok),
        &gix::progress::Discard,
        &interrupt,
        output::count::objects::ObjectExpansion::TreeAdditionsComparedToAncestor,
    )
    .map_err(op("count the objects to pack"))?;
    let num_objects = counts.len();
    // One entry at a time: gix's `iter_from_counts` sizes its work chunks by object count
    // (up to 1,000 objects per chunk and thread, whatever `chunk_size` says), which with
    // 100 KiB images held hundreds of MiB. Packed objects are copied as they are stored
    // (no inflate/deflate); loose objects and deltas are stored whole at zlib level 0
    // (a copy): zstd compresses the stream afterwards.
    let version = gix_pack::data::Version::default();
    let mut buf = Vec::new();
    let entries = counts.into_iter().map(move |mut count| -> gix::Result<output::Entry> {
        use gix::error::OptionExt as _;
        use gix_pack::Find as _;
        let location = odb.location_by_oid(&count.id, &mut buf)?;
        if let Some(pack_entry) = location.as_ref().and_then(|l| odb.entry_by_location(l)) {
            count.entry_pack_location = output::count::PackLocation::LookedUp(location);
            let no_thin_bases = None::<fn(u32, u64) -> gix::Result<Option<ObjectId>>>;
            // `None` for a delta: its base is not next to it in our pack; store it whole.
            if let Some(entry) = output::Entry::from_pack_entry(
                pack_entry,
                &count,
                std::slice::from_ref(&count),
                0,
                no_thin_bases,
                version,
            ) {
                return entry;
            }
        }
        let (object, _) = odb
            .try_find(&count.id, &mut buf)?
            .ok_or_raise(|| gix::error::not_found("an object vanished while packing"))?;
        output::Entry::from_data(&count, &object, gix::zlib::Compression::NONE)
    });
    // The pack format (header, entries, SHA-1 trailer) written here rather than through
    // gix-pack's `FromEntriesIter`: that one hashes with collision-detecting SHA-1, which
    // cost about half of the pack-writing time; the trailer is a checksum that every
    // reader (gix, `git index-pack`) recomputes, and our entries are all whole objects.
    let mut out = TrailerWriter { inner: out, sha1: <sha1::Sha1 as sha1::Digest>::new() };
    let write = op("write the pack");
    out.write_all(&gix_pack::data::header::encode(
        version,
        u32::try_from(num_objects).map_err(op("pack object count"))?,
    ))
    .map_err(write)?;
    let mut written = 0usize;
    for entry in entries {
        let entry = entry.map_err(op("read an object to pack"))?;
        if !matches!(entry.kind, output::entry::Kind::Base(_)) {
            return Err(GitError::Op {
                what: "write the pack",
                source: format!("object {} came out as a delta", entry.id).into(),
            });
        }
        // Only deltas consult the closure, and there are none (checked above).
        let header = entry.to_entry_header(version, |_| 0);
        header.write_to(entry.decompressed_size as u64, &mut out).map_err(op("write the pack"))?;
        out.write_all(&entry.compressed_data).map_err(op("write the pack"))?;
        written += 1;
    }
    if written != num_objects {
        return Err(GitError::Op {
            what: "write the pack",
            source: format!("{written} entries written, {num_objects} counted").into(),
        });
    }
    let trailer = sha1::Digest::finalize(out.sha1);
    out.inner.write_all(&trailer).map_err(op("write the pack trailer"))?;
    Ok(num_objects as u64)
}

/// Passes bytes through and feeds them to the pack's SHA-1 trailer.
struct TrailerWriter<'a> {
    inner: &'a mut dyn Write,
    sha1: sha1::Sha1,
}

impl Write for TrailerWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        sha1::Digest::update(&mut self.sha1, &data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Index a pack read from `pack` into `git_dir/objects/pack`; returns its object count.
pub(crate) fn index_pack(git_dir: &Path, pack: &mut dyn BufRead) -> Result<u64, GitError> {
    let interrupt = AtomicBool::new(false);
    let outcome = gix_pack::Bundle::write_to_directory(
        pack,
        Some(&git_dir.join("objects").join("pack")),
        &mut gix::progress::Discard,
        &interrupt,
        // Our packs are never thin (`allow_thin_pack: false`), so no base lookup: with one,
        // gix re-encodes every entry through memory instead of passing the bytes through.
        None::<gix::objs::find::Never>,
        gix::hash::Kind::Sha1,
        gix_pack::bundle::write::Options::default(),
    )
    .map_err(op("index the pack"))?;
    Ok(u64::from(outcome.index.num_objects))
}

/// Create `<data_dir>/ledger.git` for a restore exactly as a new ledger's: camledger's
/// config, `HEAD`, no hooks. Nothing git executes or reads as configuration comes from
/// the snapshot.
pub(crate) fn init_ledger(data_dir: &Path) -> Result<std::path::PathBuf, GitError> {
    camledger_eventstore::create_ledger_repository(data_dir).map_err(op("create the restored repository"))
}

/// Point every ref of `manifest` at its value, and `HEAD` at its symbolic target. The
/// caller has checked the names with [`Manifest::unsafe_ref`]; gix validates them again.
pub(crate) fn set_refs(git_dir: &Path, manifest: &Manifest) -> Result<(), GitError> {
    let repo = gix::open(git_dir).map_err(op("open the restored repository"))?;
    for (name, value) in &manifest.refs {
        let id = parse_id(name, value)?;
        repo.reference(name.as_str(), id, gix::refs::transaction::PreviousValue::Any, "camledger restore")
            .map_err(op("set a restored ref"))?;
    }
    if let Some(head) = &manifest.head {
        std::fs::write(git_dir.join("HEAD"), format!("ref: {head}\n")).map_err(op("write HEAD"))?;
    }
    Ok(())
}

/// The restored repository's refs, to compare with the manifest.
pub(crate) fn manifest_of(git_dir: &Path) -> Result<Manifest, GitError> {
    let repo = gix::open(git_dir).map_err(op("open the restored repository"))?;
    read_manifest(&repo)
}

/// Run the stock `git fsck --full --strict`; `Err` carries its output when it is not clean.
pub(crate) fn fsck(git_dir: &Path) -> Result<Result<(), String>, GitError> {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["fsck", "--full", "--strict", "--no-progress", "--no-dangling"])
        .output()
        .map_err(op("run git fsck (is git installed?)"))?;
    if out.status.success() {
        Ok(Ok(()))
    } else {
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.truncate(4000);
        Ok(Err(text))
    }
}
