//! Writing pack files ourselves: one pack (v2, non-delta entries) plus its `.idx` (v2) per
//! batch, and consolidation of small packs (size tiers, written out in paced steps).
//!
//! Why by hand: gix writes loose objects (one file, one fsync each: ~25 events/s measured),
//! and its pack writer is built for fetches. A batch pack needs only the entry header, a
//! zlib stream and the index, and doing it here lets every byte go through one buffered file
//! and every fsync through [`Fsync`].
//!
//! Layout of an entry: the type-and-size varint header, then a zlib stream of the object.
//! Image blobs use level 0 (stored deflate blocks: images don't compress, and level 1 made
//! them ~5% larger and 8× slower to read). Entries are never deltas, so consolidation can copy
//! entry bytes verbatim (and their CRC-32s) into a new pack without re-compressing.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use gix::ObjectId;

use crate::durable::Fsync;

/// A ready-to-copy pack entry: header + zlib stream, and the CRC-32 of those bytes.
#[derive(Debug, Clone)]
pub(crate) struct PackEntry {
    pub(crate) oid: ObjectId,
    pub(crate) crc32: u32,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Commit = 1,
    Tree = 2,
    Blob = 3,
}

impl Kind {
    fn gix(self) -> gix::objs::Kind {
        match self {
            Kind::Commit => gix::objs::Kind::Commit,
            Kind::Tree => gix::objs::Kind::Tree,
            Kind::Blob => gix::objs::Kind::Blob,
        }
    }
}

/// Hashes an object (git SHA-1 with collision detection) and encodes its pack entry.
pub(crate) fn encode(kind: Kind, data: &[u8]) -> io::Result<PackEntry> {
    let oid = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind.gix(), data).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(data.len() + data.len() / 16_000 * 5 + 32);
    // Header: 3 type bits, then the size in little-endian 7-bit groups (4 bits in the first byte).
    let mut size = data.len() as u64;
    let mut first = ((kind as u8) << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        bytes.push(first | 0x80);
        first = (size & 0x7f) as u8;
        size >>= 7;
    }
    bytes.push(first);
    zlib_stored(data, &mut bytes);
    let crc32 = crc32fast::hash(&bytes);
    Ok(PackEntry { oid, crc32, bytes })
}

/// A zlib stream of stored (level 0) deflate blocks: header `78 01`, blocks of at most 65,535
/// bytes (`BFINAL`/`BTYPE=00`, `LEN`, `NLEN`, raw bytes), Adler-32 big-endian. Written by hand
/// because it is a memcpy plus a checksum, while miniz_oxide's level 0 cost 18% of the
/// append path's CPU in a profile.
fn zlib_stored(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(65_535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    let mut adler = simd_adler32::Adler32::new();
    adler.write(data);
    out.extend_from_slice(&adler.finish().to_be_bytes());
}

/// Pack and index trailers are integrity checksums, not object ids: plain (SHA-NI) SHA-1
/// gives the same bytes as git's collision-detecting SHA-1 at a fraction of the CPU on the
/// writer thread. Object ids keep gix's collision detection.
fn sha1_trailer(hasher: sha1::Sha1) -> ObjectId {
    use sha1::Digest as _;
    ObjectId::from_bytes_or_panic(hasher.finalize().as_slice())
}

struct HashingFile {
    out: BufWriter<File>,
    hasher: sha1::Sha1,
}

impl HashingFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        sha1::Digest::update(&mut self.hasher, bytes);
        self.out.write_all(bytes)
    }
}

/// Streams entries into a temporary pack; `finish` writes the index and publishes both.
/// Dropped without `finish` (an error on the way, e.g. a full disk), it removes its temporary
/// file, so failed batches leave nothing behind.
pub(crate) struct PackWriter {
    dir: PathBuf,
    tmp_pack: PathBuf,
    file: Option<HashingFile>,
    offset: u64,
    expected: u32,
    index: Vec<(ObjectId, u32, u64)>,
}

fn tmp_name(dir: &Path, what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("tmp_{what}_{}_{n}", std::process::id()))
}

impl PackWriter {
    pub(crate) fn create(pack_dir: &Path, count: u32) -> io::Result<Self> {
        let tmp_pack = tmp_name(pack_dir, "pack");
        let out = BufWriter::with_capacity(1 << 20, File::create(&tmp_pack)?);
        let mut file = HashingFile { out, hasher: <sha1::Sha1 as sha1::Digest>::new() };
        let mut header = Vec::with_capacity(12);
        header.extend_from_slice(b"PACK");
        header.extend_from_slice(&2u32.to_be_bytes());
        header.extend_from_slice(&count.to_be_bytes());
        file.write(&header)?;
        Ok(PackWriter {
            dir: pack_dir.to_owned(),
            tmp_pack,
            file: Some(file),
            offset: 12,
            expected: count,
            index: Vec::with_capacity(count as usize),
        })
    }

    pub(crate) fn add(&mut self, oid: ObjectId, crc32: u32, bytes: &[u8]) -> io::Result<()> {
        self.file.as_mut().expect("the file is only taken by finish, which consumes the writer").write(bytes)?;
        self.index.push((oid, crc32, self.offset));
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Flushes what was added so far and writes it out (`fdatasync`): consolidation calls this
    /// every few megabytes so that the final fsync has little left to flush.
    pub(crate) fn write_out(&mut self, fsync: &Fsync) -> io::Result<()> {
        let file = self.file.as_mut().expect("the file is only taken by finish, which consumes the writer");
        file.out.flush()?;
        fsync.data(file.out.get_ref())
    }

    /// Checksums the pack and writes its index, fsyncs both (concurrently), renames the pack,
    /// then its index (`.pack` before `.idx`, so an index never names a missing pack), then
    /// fsyncs the directory.
    pub(crate) fn finish(self, fsync: &Fsync) -> io::Result<PathBuf> {
        let dir = self.dir.clone();
        let pack = self.finish_unsynced_dir(fsync)?;
        fsync.dir(&dir)?;
        Ok(pack)
    }

    /// [`PackWriter::finish`] without the final directory fsync: the caller fsyncs the pack
    /// directory itself (alongside other fsyncs) before anything refers to the pack.
    pub(crate) fn finish_unsynced_dir(mut self, fsync: &Fsync) -> io::Result<PathBuf> {
        if self.index.len() != self.expected as usize {
            return Err(io::Error::other("pack entry count does not match its header"));
        }
        let file = self.file.take().expect("finish takes the file once");
        let checksum = sha1_trailer(file.hasher);
        let mut out = file.out;
        out.write_all(checksum.as_bytes())?;
        let pack_file = out.into_inner().map_err(|e| e.into_error())?;

        let tmp_idx = tmp_name(&self.dir, "idx");
        let base = self.dir.join(format!("pack-{checksum}"));
        let pack_path = base.with_extension("pack");
        let publish = write_idx_v2(&tmp_idx, &mut self.index, checksum)
            .and_then(|idx_file| fsync.concurrently([&|f: &Fsync| f.file(&pack_file), &|f: &Fsync| f.file(&idx_file)]))
            .and_then(|()| fs::rename(&self.tmp_pack, &pack_path))
            .and_then(|()| fs::rename(&tmp_idx, base.with_extension("idx")));
        drop(pack_file);
        if let Err(e) = publish {
            let _ = fs::remove_file(&tmp_idx);
            return Err(e);
        }
        Ok(pack_path)
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // After a successful `finish` the temporary name no longer exists: NotFound is fine.
        let _ = fs::remove_file(&self.tmp_pack);
    }
}

/// Index v2: magic, version, fanout, sorted ids, CRC-32s, 31-bit offsets (MSB set = index into
/// the 64-bit table), 64-bit offsets, pack checksum, index checksum. Streamed into the file
/// (sorting `entries` in place): a merged pack's index is never built a second time in memory.
fn write_idx_v2(path: &Path, entries: &mut [(ObjectId, u32, u64)], pack_checksum: ObjectId) -> io::Result<File> {
    entries.sort_unstable_by_key(|e| e.0);
    let mut out = HashingFile {
        out: BufWriter::with_capacity(64 << 10, File::create(path)?),
        hasher: <sha1::Sha1 as sha1::Digest>::new(),
    };
    out.write(&IDX_V2_MAGIC)?;
    let mut fanout = [0u32; 256];
    for (oid, _, _) in entries.iter() {
        fanout[oid.as_bytes()[0] as usize] += 1;
    }
    let mut running = 0u32;
    for count in fanout {
        running += count;
        out.write(&running.to_be_bytes())?;
    }
    for (oid, _, _) in entries.iter() {
        out.write(oid.as_bytes())?;
    }
    for (_, crc, _) in entries.iter() {
        out.write(&crc.to_be_bytes())?;
    }
    let mut large = Vec::new();
    for (_, _, offset) in entries.iter() {
        if *offset < 0x8000_0000 {
            out.write(&(*offset as u32).to_be_bytes())?;
        } else {
            out.write(&(0x8000_0000u32 | large.len() as u32).to_be_bytes())?;
            large.push(*offset);
        }
    }
    for offset in large {
        out.write(&offset.to_be_bytes())?;
    }
    out.write(pack_checksum.as_bytes())?;
    let HashingFile { mut out, hasher } = out;
    out.write_all(sha1_trailer(hasher).as_bytes())?;
    out.into_inner().map_err(|e| e.into_error())
}

/// The first 8 bytes of a v2 pack index: magic and version.
const IDX_V2_MAGIC: [u8; 8] = [0xff, b't', b'O', b'c', 0, 0, 0, 2];

fn not_an_index(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a v2 pack index", path.display()))
}

/// Opens a v2 index and reads its header: a reader positioned at the sorted ids, and the
/// number of objects (the last fanout entry).
fn open_idx(path: &Path) -> io::Result<(io::BufReader<File>, usize)> {
    let mut reader = io::BufReader::with_capacity(64 << 10, File::open(path)?);
    let mut header = [0u8; 8 + 1024];
    reader.read_exact(&mut header).map_err(|_| not_an_index(path))?;
    if header[..8] != IDX_V2_MAGIC {
        return Err(not_an_index(path));
    }
    let n = u32::from_be_bytes(header[8 + 255 * 4..].try_into().expect("4-byte slice"));
    Ok((reader, n as usize))
}

/// The number of objects in a pack, from its index's header.
fn idx_object_count(path: &Path) -> io::Result<u64> {
    open_idx(path).map(|(_, n)| n as u64)
}

/// Appends the ids of a v2 index (sorted) to `out`.
fn read_idx_ids(path: &Path, out: &mut Vec<ObjectId>) -> io::Result<()> {
    let (mut reader, n) = open_idx(path)?;
    let mut oid = [0u8; 20];
    for _ in 0..n {
        reader.read_exact(&mut oid).map_err(|_| not_an_index(path))?;
        out.push(ObjectId::from_bytes_or_panic(&oid));
    }
    Ok(())
}

/// What consolidation needs to know about one pack on disk.
#[derive(Debug)]
pub(crate) struct PackOnDisk {
    pub(crate) pack: PathBuf,
    pub(crate) idx: PathBuf,
    pub(crate) size: u64,
}

/// Lists `pack-*.pack` files that have an index and no `.keep` file.
pub(crate) fn list_packs(pack_dir: &Path) -> io::Result<Vec<PackOnDisk>> {
    let mut packs = Vec::new();
    for entry in fs::read_dir(pack_dir)? {
        let path = entry?.path();
        let is_pack = path.extension().is_some_and(|e| e == "pack")
            && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("pack-"));
        if !is_pack {
            continue;
        }
        let idx = path.with_extension("idx");
        if !idx.exists() || path.with_extension("keep").exists() {
            continue;
        }
        let size = fs::metadata(&path)?.len();
        packs.push(PackOnDisk { pack: path, idx, size });
    }
    Ok(packs)
}

/// Reads a v2 index: `(oid, crc32, offset)` for every entry. Parsed from a buffered reader,
/// section by section, so memory is the returned entries (32 bytes each) and no copy of the file.
fn read_idx(path: &Path) -> io::Result<Vec<(ObjectId, u32, u64)>> {
    let (mut reader, n) = open_idx(path)?;
    let bad = || not_an_index(path);
    let mut out = Vec::with_capacity(n);
    let mut oid = [0u8; 20];
    for _ in 0..n {
        reader.read_exact(&mut oid).map_err(|_| bad())?;
        out.push((ObjectId::from_bytes_or_panic(&oid), 0, 0));
    }
    let mut word = [0u8; 4];
    for entry in out.iter_mut() {
        reader.read_exact(&mut word).map_err(|_| bad())?;
        entry.1 = u32::from_be_bytes(word);
    }
    // Offsets of 2 GiB and more are indexes into the table of 64-bit offsets that follows:
    // kept as `LARGE | index` until that table is read.
    const LARGE: u64 = 1 << 63;
    let mut large_entries = 0usize;
    for entry in out.iter_mut() {
        reader.read_exact(&mut word).map_err(|_| bad())?;
        let small = u32::from_be_bytes(word);
        entry.2 = if small & 0x8000_0000 == 0 {
            u64::from(small)
        } else {
            let at = (small & 0x7fff_ffff) as usize;
            if at >= n {
                return Err(bad());
            }
            large_entries = large_entries.max(at + 1);
            LARGE | at as u64
        };
    }
    if large_entries > 0 {
        let mut large = Vec::with_capacity(large_entries);
        let mut bytes = [0u8; 8];
        for _ in 0..large_entries {
            reader.read_exact(&mut bytes).map_err(|_| bad())?;
            large.push(u64::from_be_bytes(bytes));
        }
        for entry in out.iter_mut().filter(|e| e.2 & LARGE != 0) {
            entry.2 = large[(entry.2 & !LARGE) as usize];
        }
    }
    Ok(out)
}

/// Packs of similar size merged together: a tier holds sizes within a factor of
/// [`TIER_FANOUT`] (everything under [`TIER_BASE`] is the lowest tier), and a tier is merged
/// once it holds [`TIER_FANOUT`] packs.
const TIER_FANOUT: usize = 8;
const TIER_BASE: u64 = 1 << 20;

/// Most objects one merge copies by default ([`crate::LedgerConfig::max_merge_objects`]).
/// A merge holds about 32 bytes per object it copies (the new pack's index entries, sorted
/// at the end) plus, for one source pack at a time, 32 bytes per object of that pack: at
/// 2^19 objects (131,072 events of four objects), at most about 32 MiB, whatever the size of
/// the ledger. Without the bound, a merge's memory grew with the ledger (about 100 bytes per
/// object, 1.6 million objects after 400,000 events) and the server's RSS with it.
pub(crate) const MAX_MERGE_OBJECTS: u64 = 1 << 19;

/// One pack as the selection sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    /// Position in the caller's list.
    pub(crate) index: usize,
    pub(crate) size: u64,
    pub(crate) objects: u64,
}

/// Picks the packs to merge. Normally size-tiered (the smallest tier that holds
/// [`TIER_FANOUT`] packs): every byte is rewritten about once per tier (log8 of the ledger's
/// size), each merge is of packs of similar size, and small merges come often while large
/// ones are rare. A batch pack per group commit at hundreds of batches a second makes this
/// matter: merging geometrically whenever `max_packs` is passed rewrote the whole ledger every
/// few hundred milliseconds under load, and the merged pack's I/O stalled the appends' fsyncs.
/// If tiers still leave more than `max_packs` packs, falls back to [`smallest_selection`].
///
/// A merge copies at most `max_objects` objects, so its memory does not grow with the ledger:
/// a pack holding more than half of that is sealed (no merge could pair it with another) and
/// never selected, and of a full tier only the smallest packs that fit are merged. `max_packs`
/// bounds the unsealed packs; sealed ones add at most one per `max_objects / 2` objects.
pub(crate) fn selection(packs: Vec<Candidate>, max_packs: usize, max_objects: u64) -> Vec<usize> {
    let tier = |size: u64| {
        let mut t = 0u32;
        let mut bound = TIER_BASE;
        while size >= bound && t < 16 {
            bound = bound.saturating_mul(TIER_FANOUT as u64);
            t += 1;
        }
        t
    };
    let open: Vec<Candidate> = packs.into_iter().filter(|p| p.objects <= max_objects / 2).collect();
    let mut tiers: std::collections::BTreeMap<u32, Vec<Candidate>> = std::collections::BTreeMap::new();
    for p in &open {
        tiers.entry(tier(p.size)).or_default().push(*p);
    }
    let tiered = tiers
        .into_values()
        .find(|members| members.len() >= TIER_FANOUT)
        .map(|members| fitting(members, usize::MAX, max_objects))
        .unwrap_or_default();
    let after = open.len() - tiered.len() + usize::from(!tiered.is_empty());
    if after <= max_packs.max(2) {
        return tiered;
    }
    smallest_selection(open, max_packs, max_objects)
}

/// The fallback when tiers leave more than `max_packs` packs: the smallest packs, just enough
/// of them to get back to `max_packs` (as many as fit in `max_objects`). Never the large ones:
/// a merge that rewrote the whole ledger (what `git repack --geometric=2` picks when a pile
/// of small packs outweighs the large one) ran for seconds while hundreds of batch packs
/// piled up behind it.
pub(crate) fn smallest_selection(packs: Vec<Candidate>, max_packs: usize, max_objects: u64) -> Vec<usize> {
    let max_packs = max_packs.max(2);
    if packs.len() <= max_packs {
        return Vec::new();
    }
    let wanted = packs.len() - max_packs + 1;
    fitting(packs, wanted, max_objects)
}

/// The smallest packs, at most `wanted` of them and at most `max_objects` objects together;
/// nothing unless at least two fit.
fn fitting(mut packs: Vec<Candidate>, wanted: usize, max_objects: u64) -> Vec<usize> {
    packs.sort_by_key(|p| p.size);
    let mut objects = 0u64;
    let chosen: Vec<usize> = packs
        .iter()
        .take(wanted)
        .take_while(|p| {
            objects = objects.saturating_add(p.objects);
            objects <= max_objects
        })
        .map(|p| p.index)
        .collect();
    if chosen.len() < 2 {
        return Vec::new();
    }
    chosen
}

/// Free space a merge leaves for appends: a merge that would leave less is not started.
pub(crate) const FREE_SPACE_RESERVE: u64 = 64 << 20;

/// Bytes available to unprivileged writers on the filesystem holding `path` (`statvfs`).
pub(crate) fn available_space(path: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Consolidation writes its new pack out (`fdatasync`) every this many bytes.
const WRITE_OUT_STEP: u64 = 1 << 20;

/// What the consolidation thread keeps between merges.
#[derive(Debug, Default)]
pub(crate) struct MergeState {
    /// Packs found to hold deltas (e.g. after someone ran `git gc` on the ledger) or with an
    /// index this code cannot read: left alone from then on instead of being retried after
    /// every batch.
    unmergeable: std::collections::HashSet<PathBuf>,
    /// Object counts, read once per pack from its index header (packs never change).
    objects: std::collections::HashMap<PathBuf, u64>,
}

/// Merges the selected packs into one new pack, then removes them. Entries are copied verbatim;
/// a pack holding delta entries (written by stock git) is left alone.
///
/// Memory: the new pack's index entries (32 bytes per object, at most `max_objects`), one
/// source pack's index at a time, and the duplicates' ids; nothing per object beyond that.
#[allow(clippy::too_many_arguments)]
pub(crate) fn consolidate(
    pack_dir: &Path,
    max_packs: usize,
    max_objects: u64,
    fsync: &Fsync,
    state: &mut MergeState,
    free_space: impl Fn(&Path) -> io::Result<u64>,
    mut pace: impl FnMut(),
    before_removal: impl FnOnce() -> io::Result<()>,
) -> io::Result<Option<usize>> {
    let mut packs = list_packs(pack_dir)?;
    packs.retain(|p| !state.unmergeable.contains(&p.pack));
    let listed: std::collections::HashSet<&PathBuf> = packs.iter().map(|p| &p.pack).collect();
    state.objects.retain(|path, _| listed.contains(path));
    drop(listed);
    let mut candidates = Vec::with_capacity(packs.len());
    for (index, p) in packs.iter().enumerate() {
        let objects = match state.objects.get(&p.pack) {
            Some(&n) => n,
            None => match idx_object_count(&p.idx) {
                Ok(n) => *state.objects.entry(p.pack.clone()).or_insert(n),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    tracing::warn!(pack = %p.pack.display(), error = %e, "pack not consolidated: unreadable index");
                    state.unmergeable.insert(p.pack.clone());
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        candidates.push(Candidate { index, size: p.size, objects });
    }
    let chosen = selection(candidates, max_packs, max_objects);
    if chosen.is_empty() {
        return Ok(None);
    }
    // The merged pack needs at most the selected packs' size. Checked first: on a full disk a
    // merge wrote its whole pack before failing, again after every batch (observed: 90 MB
    // written for 5 tiny uploads), and took the space the appends needed.
    let needed: u64 = chosen.iter().map(|&p| packs[p].size).sum();
    let free = free_space(pack_dir)?;
    if free < needed.saturating_add(FREE_SPACE_RESERVE) {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "merging {} packs needs {needed} bytes plus a {FREE_SPACE_RESERVE}-byte reserve; {free} free",
                chosen.len()
            ),
        ));
    }
    // Objects in more than one of the packs (the same image uploaded twice is the same blob,
    // written by two batches) are copied once, from the first pack that holds them. Found by
    // sorting all ids once (20 bytes each, freed before copying) instead of a set of every id.
    let total: u64 = chosen.iter().map(|&p| state.objects[&packs[p].pack]).sum();
    let mut ids = Vec::with_capacity(usize::try_from(total).map_err(io::Error::other)?);
    for &p in &chosen {
        read_idx_ids(&packs[p].idx, &mut ids)?;
    }
    ids.sort_unstable();
    let mut duplicates = std::collections::HashSet::new();
    for pair in ids.windows(2) {
        if pair[0] == pair[1] {
            duplicates.insert(pair[0]);
        }
    }
    let count = ids.len() - ids.windows(2).filter(|pair| pair[0] == pair[1]).count();
    drop(ids);
    let count = u32::try_from(count).map_err(io::Error::other)?;
    let mut writer = PackWriter::create(pack_dir, count)?;
    let mut copied_duplicates = std::collections::HashSet::new();
    let mut buf = Vec::new();
    let mut unsynced = 0u64;
    for &p in &chosen {
        let mut entries = read_idx(&packs[p].idx)?;
        entries.sort_unstable_by_key(|e| e.2);
        let end_of_entries = packs[p].size.saturating_sub(20);
        let mut file = File::open(&packs[p].pack)?;
        for i in 0..entries.len() {
            let (oid, crc, offset) = entries[i];
            let end = entries.get(i + 1).map_or(end_of_entries, |e| e.2);
            if duplicates.contains(&oid) && !copied_duplicates.insert(oid) {
                continue;
            }
            let len = end.checked_sub(offset).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "pack index offset past the end of its pack")
            })?;
            file.seek(SeekFrom::Start(offset))?;
            buf.clear();
            // `take` + `read_to_end` instead of zero-filling `buf` first: copying is the whole job.
            (&mut file).take(len).read_to_end(&mut buf)?;
            if buf.len() as u64 != len || buf.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "pack shorter than its index says"));
            }
            let kind = (buf[0] >> 4) & 0x7;
            if !(1..=4).contains(&kind) || crc32fast::hash(&buf) != crc {
                // Deltas cannot be copied without rewriting their bases; a CRC mismatch must not spread.
                tracing::warn!(pack = %packs[p].pack.display(), "pack not consolidated: delta entry or CRC mismatch");
                state.unmergeable.insert(packs[p].pack.clone());
                return Ok(None);
            }
            writer.add(oid, crc, &buf)?;
            unsynced += len;
            if unsynced >= WRITE_OUT_STEP {
                // Small steps, each started when the event writer is between fsyncs: a batch's
                // fsync then never waits behind hundreds of megabytes of a merged pack.
                pace();
                writer.write_out(fsync)?;
                unsynced = 0;
            }
        }
    }
    // One large entry must not keep its buffer for the life of the thread.
    drop(buf);
    let new_pack = writer.finish(fsync)?;
    before_removal()?;
    for &p in &chosen {
        if packs[p].pack == new_pack {
            continue;
        }
        fs::remove_file(&packs[p].idx)?;
        fs::remove_file(&packs[p].pack)?;
    }
    fsync.dir(pack_dir)?;
    Ok(Some(chosen.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Candidates of the given sizes, one object per 4 KiB (none sealed below 1 GiB).
    fn candidates(sizes: &[u64]) -> Vec<Candidate> {
        sizes.iter().enumerate().map(|(index, &size)| Candidate { index, size, objects: size / 4096 }).collect()
    }

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort_unstable();
        v
    }

    #[test]
    fn past_max_packs_the_smallest_are_merged() {
        let cases: Vec<(Vec<u64>, usize, Vec<usize>)> = vec![
            (vec![100], 8, vec![]),
            (vec![100, 40, 10], 8, vec![]),
            (vec![100, 10, 10], 2, vec![1, 2]),
            (vec![1, 1, 1, 1, 1000], 3, vec![0, 1, 2]),
            (vec![1000, 300, 100, 30, 10], 3, vec![4, 3, 2]),
        ];
        for (sizes, max, expected) in cases {
            let got = smallest_selection(candidates(&sizes), max, MAX_MERGE_OBJECTS);
            assert_eq!(sorted(got), sorted(expected), "sizes {sizes:?} max {max}");
        }
    }

    #[test]
    fn tiers_merge_packs_of_similar_size() {
        const M: u64 = 1 << 20;
        let sel = |sizes: &[u64], max: usize| sorted(selection(candidates(sizes), max, MAX_MERGE_OBJECTS));
        // Seven small packs: nothing to do yet; the eighth merges them (not the big one).
        assert_eq!(sel(&[500 * M, M / 2, M / 2, M / 3, M / 4, M / 2, M / 2, M / 5], 64), Vec::<usize>::new());
        assert_eq!(
            sel(&[500 * M, M / 2, M / 2, M / 3, M / 4, M / 2, M / 2, M / 5, M / 8], 64),
            (1..=8).collect::<Vec<_>>()
        );
        // The smallest full tier goes first; larger tiers wait for their own eight.
        let mut sizes = vec![2 * M, 3 * M, 2 * M, 4 * M, 5 * M, 2 * M, 7 * M, 2 * M];
        sizes.extend([M / 2; 8]);
        assert_eq!(sel(&sizes, 64), (8..16).collect::<Vec<_>>());
        // Past max_packs, the smallest packs are merged.
        assert_eq!(sel(&[100, 10, 10], 2), vec![1, 2]);
        assert_eq!(sel(&[100, 10, 10], 8), Vec::<usize>::new());
    }

    #[test]
    fn a_merge_never_copies_more_than_max_objects() {
        let pack = |index: usize, size: u64, objects: u64| Candidate { index, size, objects };
        // A full tier whose objects add up past the bound: only the smallest packs that fit.
        let tier: Vec<Candidate> = (0..8).map(|i| pack(i, 100 + i as u64, 30)).collect();
        assert_eq!(sorted(selection(tier.clone(), 64, 100)), vec![0, 1, 2]);
        assert_eq!(sorted(selection(tier, 64, 1000)), (0..8).collect::<Vec<_>>());
        // Packs with more than half the bound are sealed: never merged, even past max_packs,
        // and they do not count against it.
        let mut packs: Vec<Candidate> = (0..4).map(|i| pack(i, 1 << 30, 60)).collect();
        assert_eq!(selection(packs.clone(), 2, 100), Vec::<usize>::new());
        packs.extend([pack(4, 10, 5), pack(5, 20, 5), pack(6, 30, 5)]);
        assert_eq!(sorted(selection(packs.clone(), 2, 100)), vec![4, 5]);
        assert_eq!(selection(packs, 3, 100), Vec::<usize>::new());
        // Past max_packs, the fallback stops at the bound too.
        let small: Vec<Candidate> = (0..6).map(|i| pack(i, 10 + i as u64, 20)).collect();
        assert_eq!(sorted(selection(small, 2, 50)), vec![0, 1]);
    }

    #[test]
    fn entry_headers_encode_type_and_size() {
        let small = encode(Kind::Blob, b"hello").expect("encodes");
        assert_eq!(small.bytes[0], (3 << 4) | 5);
        let big = encode(Kind::Blob, &[0u8; 300]).expect("encodes");
        assert_eq!(&big.bytes[..2], &[0x80 | (3 << 4) | (300 & 0xf) as u8, (300 >> 4) as u8]);
        assert_eq!(small.oid.to_string(), "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0");
    }

    #[test]
    fn stored_zlib_streams_inflate_back_to_the_input() {
        use std::io::Read as _;
        for len in [0usize, 1, 65_534, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut stream = Vec::new();
            zlib_stored(&data, &mut stream);
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(stream.as_slice()).read_to_end(&mut back).expect("valid zlib");
            assert_eq!(back, data, "len {len}");
        }
    }
}
