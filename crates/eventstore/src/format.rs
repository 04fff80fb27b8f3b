//! The on-git format: `event.json`, the commit message with its trailers, the tree and the
//! commit object bytes. Everything here is pure (no I/O) so it is table-tested directly.
//!
//! Objects are serialised by hand rather than through `gix-object` so that the exact bytes
//! that `docs/event-format.md` specifies are visible in one place, and verification can
//! rebuild and compare them byte for byte. Every commit and tree camledger writes is built by
//! `commit_bytes` and `tree_bytes`; the commit is signed there when the ledger has a key.

use gix::ObjectId;
use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, macros::format_description, OffsetDateTime};

use crate::sign::SigningKey;

/// Version of the on-git format written by this crate (`format_version` in `event.json`).
pub const FORMAT_VERSION: u32 = 1;
/// The ref whose history is the event log.
pub const EVENTS_REF: &str = "refs/heads/events";

/// EXIF summary of an image; every field is optional because cameras differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exif {
    pub make: Option<String>,
    pub model: Option<String>,
    pub date_time_original: Option<String>,
}

/// Exactly the content of `event.json` (canonical JSON, RFC 8785 JCS: keys sorted, no whitespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRecord {
    pub format_version: u32,
    pub seq: u64,
    pub camera: String,
    /// RFC 3339 UTC with exactly six fractional digits and `Z`.
    pub received_at: String,
    /// Client-supplied capture time normalised to UTC (same form as `received_at`), or null.
    pub captured_at: Option<String>,
    /// 64 lowercase hex digits: SHA-256 of the image bytes.
    pub sha256: String,
    pub size: u64,
    pub media_type: String,
    /// Tree entry name of the image: `image.jpg` | `image.png` | `image.webp`.
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub exif: Option<Exif>,
    pub duplicate_of: Option<u64>,
}

/// Why bytes are not a valid `event.json` of this format version.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not JSON or not the schema (unknown/missing field, wrong type). Verification failure; HTTP 500 if met on read.
    #[error("event.json does not match the schema: {0}")]
    Schema(#[from] serde_json::Error),
    /// Parsed, but the bytes are not the canonical (JCS) serialisation. Verification failure.
    #[error("event.json is not in canonical form")]
    NotCanonical,
    /// Written by a newer (or unknown) format version. Readers must refuse, not guess.
    #[error("unsupported format_version {0}")]
    UnsupportedVersion(u32),
    /// A field violates its rule (camera id, hex digest, timestamp form, image name).
    #[error("invalid field {field}: {why}")]
    Field { field: &'static str, why: String },
}

impl EventRecord {
    /// RFC 8785 (JCS) serialisation. The record holds only strings, non-negative integers
    /// below 2^53, null and objects; for those, serde_json's compact output of a
    /// `serde_json::Value` (whose maps are `BTreeMap`s, i.e. keys in byte order, which equals
    /// UTF-16 order for our ASCII keys) is exactly JCS: same escapes (`\b \t \n \f \r`, `\"`,
    /// `\\`, other controls as lowercase `\u00xx`), non-ASCII emitted as raw UTF-8.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        canonical_json(self)
    }

    /// Parses `event.json`, refusing unknown versions and any non-canonical byte form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
        let record: EventRecord = serde_json::from_slice(bytes)?;
        if record.format_version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(record.format_version));
        }
        if record.to_canonical_json() != bytes {
            return Err(FormatError::NotCanonical);
        }
        Ok(record)
    }

    /// Field rules beyond the JSON schema (used by verification).
    pub(crate) fn check_fields(&self) -> Result<(), FormatError> {
        let field = |field: &'static str, why: &str| FormatError::Field { field, why: why.to_owned() };
        if self.seq == 0 {
            return Err(field("seq", "must be >= 1"));
        }
        if !is_valid_camera(&self.camera) {
            return Err(field("camera", "must match [A-Za-z0-9._-]{1,64}"));
        }
        if !is_sha256_hex(&self.sha256) {
            return Err(field("sha256", "must be 64 lowercase hex digits"));
        }
        if parse_timestamp(&self.received_at).is_none() {
            return Err(field("received_at", "must be RFC 3339 UTC with 6 fractional digits and Z"));
        }
        if let Some(captured) = &self.captured_at {
            if parse_timestamp(captured).is_none() {
                return Err(field("captured_at", "must be RFC 3339 UTC with 6 fractional digits and Z"));
            }
        }
        match media_type_for_image(&self.image) {
            Some(media_type) if media_type == self.media_type => {}
            Some(_) => return Err(field("media_type", "does not match the image entry's extension")),
            None => return Err(field("image", "must be image.jpg, image.png or image.webp")),
        }
        if let Some(dup) = self.duplicate_of {
            if dup == 0 || dup >= self.seq {
                return Err(field("duplicate_of", "must name an earlier event"));
            }
        }
        Ok(())
    }
}

/// Camera ids: `[A-Za-z0-9._-]{1,64}` (ASCII only, so JCS needs no escaping and the id is
/// safe inside a commit's author line and an email local part).
pub fn is_valid_camera(camera: &str) -> bool {
    (1..=64).contains(&camera.len())
        && camera.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Idempotency keys: 1–128 printable ASCII characters, no spaces (they go into a trailer line).
pub fn is_valid_idempotency_key(key: &str) -> bool {
    (1..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Extension (as given by admission) to the image's tree entry name.
pub(crate) fn image_entry_name(extension: &str) -> Option<&'static str> {
    match extension {
        "jpg" => Some("image.jpg"),
        "png" => Some("image.png"),
        "webp" => Some("image.webp"),
        _ => None,
    }
}

fn media_type_for_image(image: &str) -> Option<&'static str> {
    match image {
        "image.jpg" => Some("image/jpeg"),
        "image.png" => Some("image/png"),
        "image.webp" => Some("image/webp"),
        _ => None,
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

const TIMESTAMP: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats a UTC instant the way `event.json` stores it (microseconds, `Z`).
pub(crate) fn format_timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(TIMESTAMP)
        .expect("years 0..=9999 always format; the clock and RFC 3339 inputs stay in that range")
}

/// Parses the stored form; `None` if the string is not exactly that form.
pub(crate) fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    let parsed = time::PrimitiveDateTime::parse(s, TIMESTAMP).ok()?.assume_utc();
    (format_timestamp(parsed) == s).then_some(parsed)
}

/// Normalises a client-supplied RFC 3339 time to the stored UTC form (sub-microsecond digits
/// are truncated). `None` if it is not RFC 3339.
pub fn normalize_captured_at(s: &str) -> Option<String> {
    let parsed = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let micros = parsed.nanosecond() / 1_000 * 1_000;
    let truncated = parsed.replace_nanosecond(micros).ok()?;
    // `to_offset` panics when UTC leaves the supported range (9999-12-31T23:59:59-23:59).
    let utc = truncated.checked_to_offset(time::UtcOffset::UTC)?;
    (0..=9999).contains(&utc.year()).then(|| format_timestamp(utc))
}

/// The trailers of an event commit's message, in the order they are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailers {
    pub seq: u64,
    pub camera: String,
    pub sha256: String,
    pub duplicate_of: Option<u64>,
    pub idempotency_key: Option<String>,
}

impl Trailers {
    pub(crate) fn for_record(record: &EventRecord, idempotency_key: Option<&str>) -> Self {
        Trailers {
            seq: record.seq,
            camera: record.camera.clone(),
            sha256: record.sha256.clone(),
            duplicate_of: record.duplicate_of,
            idempotency_key: idempotency_key.map(str::to_owned),
        }
    }

    /// Whether the trailers say the same as `event.json` does.
    pub(crate) fn agrees_with(&self, record: &EventRecord) -> bool {
        self.seq == record.seq
            && self.camera == record.camera
            && self.sha256 == record.sha256
            && self.duplicate_of == record.duplicate_of
    }
}

/// The full commit message: summary line, blank line, trailers, final newline.
pub(crate) fn commit_message(t: &Trailers) -> String {
    let mut msg =
        format!("Event {} from {}\n\nSeq: {}\nCamera: {}\nSha256: {}\n", t.seq, t.camera, t.seq, t.camera, t.sha256);
    if let Some(dup) = t.duplicate_of {
        msg.push_str(&format!("Duplicate-Of: {dup}\n"));
    }
    if let Some(key) = &t.idempotency_key {
        msg.push_str(&format!("Idempotency-Key: {key}\n"));
    }
    msg
}

/// Parses the trailers of an event commit message. Strict: the message must be exactly what
/// [`commit_message`] writes for the parsed values, so any extra or reordered line is refused.
pub(crate) fn parse_commit_message(message: &[u8]) -> Option<Trailers> {
    let text = std::str::from_utf8(message).ok()?;
    let (_summary, body) = text.split_once("\n\n")?;
    let mut t =
        Trailers { seq: 0, camera: String::new(), sha256: String::new(), duplicate_of: None, idempotency_key: None };
    for line in body.lines() {
        let (key, value) = line.split_once(": ")?;
        match key {
            "Seq" => t.seq = value.parse().ok()?,
            "Camera" => t.camera = value.to_owned(),
            "Sha256" => t.sha256 = value.to_owned(),
            "Duplicate-Of" => t.duplicate_of = Some(value.parse().ok()?),
            "Idempotency-Key" => t.idempotency_key = Some(value.to_owned()),
            _ => return None,
        }
    }
    (commit_message(&t).as_bytes() == message).then_some(t)
}

/// Git tree bytes from `(mode, name, id)` entries, in the order given: the caller lists them
/// in git's tree order. Every tree camledger writes (event trees, `verdict.json` trees, notes
/// fanout trees) is built here.
pub(crate) fn tree_bytes<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str, ObjectId)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * (7 + 12 + 20));
    for (mode, name, id) in entries {
        out.extend_from_slice(mode.as_bytes());
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(id.as_bytes());
    }
    out
}

/// RFC 8785 (JCS) bytes of a record made of strings, booleans, non-negative integers below
/// 2^53, null, arrays and objects: serde_json's compact output of a `serde_json::Value`, whose
/// maps are `BTreeMap`s (keys in byte order, equal to UTF-16 order for ASCII keys). The one
/// serialiser of `event.json`, `verdict.json` and `camera-action.json`.
pub(crate) fn canonical_json<T: serde::Serialize + ?Sized>(record: &T) -> Vec<u8> {
    let value = serde_json::to_value(record).expect("a record of strings, numbers and maps always converts to JSON");
    serde_json::to_vec(&value).expect("serialising a JSON value into memory cannot fail")
}

/// Git tree bytes for an event: `event.json` then the image (git sorts entries by name; `e` < `i`).
pub(crate) fn event_tree_bytes(event_json: ObjectId, image_name: &str, image: ObjectId) -> Vec<u8> {
    tree_bytes([("100644", "event.json", event_json), ("100644", image_name, image)])
}

/// Parses a tree into `(mode, name, id)` entries.
pub(crate) fn parse_tree(data: &[u8]) -> Option<Vec<(String, String, ObjectId)>> {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let nul = rest.iter().position(|&b| b == 0)?;
        if nul < space || rest.len() < nul + 21 {
            return None;
        }
        let mode = std::str::from_utf8(&rest[..space]).ok()?.to_owned();
        let name = std::str::from_utf8(&rest[space + 1..nul]).ok()?.to_owned();
        let id = ObjectId::from_bytes_or_panic(&rest[nul + 1..nul + 21]);
        entries.push((mode, name, id));
        rest = &rest[nul + 21..];
    }
    Some(entries)
}

/// The author line value for a camera at a time (seconds since the epoch, UTC).
pub(crate) fn author(camera: &str, seconds: i64) -> String {
    format!("{camera} <{camera}@camera.camledger> {seconds} +0000")
}

/// The committer (and, for verdict and notes commits, author) line value of a ledger node.
pub(crate) fn committer(node_name: &str, seconds: i64) -> String {
    format!("camledger <{node_name}> {seconds} +0000")
}

/// What a commit says; [`commit_bytes`] turns it into bytes.
pub(crate) struct CommitSpec<'a> {
    pub(crate) tree: ObjectId,
    pub(crate) parent: Option<ObjectId>,
    /// Identity and time, e.g. [`author`] or [`committer`].
    pub(crate) author: &'a str,
    pub(crate) committer: &'a str,
    pub(crate) message: &'a str,
}

/// The bytes of every commit camledger writes (events, verdicts, notes): `tree`, `parent`
/// (if any), `author`, `committer`, then, when the ledger has a key, the `gpgsig` SSH
/// signature of those unsigned bytes as the last header (`docs/event-format.md`,
/// "Signatures"). The commit id is the hash of these bytes, signature included.
pub(crate) fn commit_bytes(spec: &CommitSpec<'_>, key: Option<&SigningKey>) -> Vec<u8> {
    let mut out = format!("tree {}\n", spec.tree);
    if let Some(parent) = spec.parent {
        out.push_str(&format!("parent {parent}\n"));
    }
    out.push_str(&format!("author {}\ncommitter {}\n\n{}", spec.author, spec.committer, spec.message));
    match key {
        Some(key) => key.sign_commit(out.as_bytes()),
        None => out.into_bytes(),
    }
}

/// The parts of a commit this crate needs, parsed strictly enough for verification.
#[derive(Debug)]
pub(crate) struct ParsedCommit<'a> {
    pub(crate) tree: ObjectId,
    pub(crate) parents: Vec<ObjectId>,
    pub(crate) author: &'a str,
    pub(crate) message: &'a [u8],
}

pub(crate) fn parse_commit(data: &[u8]) -> Option<ParsedCommit<'_>> {
    let split = data.windows(2).position(|w| w == b"\n\n")?;
    let headers = std::str::from_utf8(&data[..split]).ok()?;
    let message = &data[split + 2..];
    let mut tree = None;
    let mut parents = Vec::new();
    let mut author = None;
    for line in headers.lines() {
        if line.starts_with(' ') {
            // A continuation line of a multi-line header (the `gpgsig` signature).
            continue;
        }
        let (key, value) = line.split_once(' ')?;
        match key {
            "tree" => tree = Some(ObjectId::from_hex(value.as_bytes()).ok()?),
            "parent" => parents.push(ObjectId::from_hex(value.as_bytes()).ok()?),
            "author" => author = Some(value),
            _ => {}
        }
    }
    Some(ParsedCommit { tree: tree?, parents, author: author?, message })
}

/// Committer identities go inside `<…>`: refuse anything git would mis-parse.
pub(crate) fn is_valid_node_name(node: &str) -> bool {
    !node.is_empty() && node.len() <= 255 && node.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> EventRecord {
        EventRecord {
            format_version: 1,
            seq: 7,
            camera: "cam-1".into(),
            received_at: "2026-11-22T03:04:05.123456Z".into(),
            captured_at: None,
            sha256: "ab".repeat(32),
            size: 10,
            media_type: "image/jpeg".into(),
            image: "image.jpg".into(),
            width: 4,
            height: 3,
            exif: Some(Exif { make: Some("Canon \"EOS\"\n\u{1}é".into()), model: None, date_time_original: None }),
            duplicate_of: None,
        }
    }

    #[test]
    fn canonical_json_sorts_keys_without_whitespace_and_escapes_like_jcs() {
        let json = String::from_utf8(record().to_canonical_json()).expect("utf8");
        let expected = concat!(
            r#"{"camera":"cam-1","captured_at":null,"duplicate_of":null,"exif":{"date_time_original":null,"make":"Canon \"EOS\"\n\u0001é","model":null},"#,
            r#""format_version":1,"height":3,"image":"image.jpg","media_type":"image/jpeg","received_at":"2026-11-22T03:04:05.123456Z","#,
            r#""seq":7,"sha256":"abababababababababababababababababababababababababababababababab","size":10,"width":4}"#
        );
        assert_eq!(json, expected);
        assert_eq!(EventRecord::from_json(json.as_bytes()).expect("parses"), record());
    }

    #[test]
    fn non_canonical_or_unknown_event_json_is_refused() {
        let canonical = String::from_utf8(record().to_canonical_json()).expect("utf8");
        let cases: Vec<(String, &str)> = vec![
            (canonical.replacen("{", "{ ", 1), "whitespace"),
            (
                canonical
                    .replace("\"camera\":\"cam-1\",\"captured_at\":null", "\"captured_at\":null,\"camera\":\"cam-1\""),
                "key order",
            ),
            (canonical.replace("é", "\\u00e9"), "escaped non-ASCII"),
            (canonical.replace("\"format_version\":1", "\"format_version\":2"), "version"),
            (canonical.replace("\"width\":4}", "\"width\":4,\"x\":1}"), "unknown field"),
        ];
        for (input, what) in cases {
            assert!(EventRecord::from_json(input.as_bytes()).is_err(), "{what} must be refused");
        }
    }

    #[test]
    fn camera_ids_follow_the_documented_alphabet() {
        let cases = [
            ("cam-1", true),
            ("A.b_c-9", true),
            (&"x".repeat(64) as &str, true),
            (&"x".repeat(65) as &str, false),
            ("", false),
            ("cam 1", false),
            ("kamera-ü", false),
            ("cam<1>", false),
            ("cam\n", false),
        ];
        for (camera, ok) in cases {
            assert_eq!(is_valid_camera(camera), ok, "{camera:?}");
        }
    }

    #[test]
    fn a_captured_at_whose_utc_leaves_the_calendar_is_refused_not_a_panic() {
        assert_eq!(normalize_captured_at("9999-12-31T23:59:59-23:59"), None);
        assert_eq!(normalize_captured_at("0000-01-01T00:00:00+23:59"), None);
        assert_eq!(normalize_captured_at("9999-12-31T23:59:59Z").as_deref(), Some("9999-12-31T23:59:59.000000Z"));
    }

    #[test]
    fn idempotency_keys_are_printable_ascii_without_spaces() {
        let long = "k".repeat(129);
        let cases = [
            ("abc-123", true),
            ("k", true),
            ("", false),
            ("a b", false),
            ("é", false),
            (long.as_str(), false),
            ("a\tb", false),
        ];
        for (key, ok) in cases {
            assert_eq!(is_valid_idempotency_key(key), ok, "{key:?}");
        }
    }

    #[test]
    fn captured_at_is_normalised_to_utc_microseconds() {
        let cases = [
            ("2026-01-02T03:04:05Z", Some("2026-01-02T03:04:05.000000Z")),
            ("2026-01-02T05:04:05.1234567+02:00", Some("2026-01-02T03:04:05.123456Z")),
            ("2026-01-02 03:04:05", None),
            ("yesterday", None),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_captured_at(input).as_deref(), expected, "{input}");
        }
    }

    #[test]
    fn commit_messages_round_trip_through_their_trailers() {
        let cases = [
            Trailers { seq: 1, camera: "c".into(), sha256: "00".repeat(32), duplicate_of: None, idempotency_key: None },
            Trailers {
                seq: 9,
                camera: "c".into(),
                sha256: "00".repeat(32),
                duplicate_of: Some(3),
                idempotency_key: Some("k-1".into()),
            },
        ];
        for t in cases {
            let msg = commit_message(&t);
            assert_eq!(parse_commit_message(msg.as_bytes()), Some(t.clone()));
            let tampered = msg.replace("Seq: ", "Seq:  ");
            assert_eq!(parse_commit_message(tampered.as_bytes()), None);
        }
    }

    #[test]
    fn stored_timestamps_accept_only_the_exact_form() {
        let cases = [
            ("2026-11-22T03:04:05.123456Z", true),
            ("2026-11-22T03:04:05Z", false),
            ("2026-11-22T03:04:05.123456+00:00", false),
            ("2026-11-22T03:04:05.1234567Z", false),
        ];
        for (s, ok) in cases {
            assert_eq!(parse_timestamp(s).is_some(), ok, "{s}");
        }
    }

    #[test]
    fn a_signed_commit_parses_to_the_same_fields_as_the_unsigned_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = SigningKey::generate(&dir.path().join("key"), "test").expect("key");
        let (author, committer) = (author("cam-1", 1_700_000_000), committer("node", 1_700_000_000));
        let spec = CommitSpec {
            tree: ObjectId::from_bytes_or_panic(&[1; 20]),
            parent: Some(ObjectId::from_bytes_or_panic(&[2; 20])),
            author: &author,
            committer: &committer,
            message: "Event 2 from cam-1\n\nSeq: 2\n",
        };
        let unsigned = commit_bytes(&spec, None);
        let signed = commit_bytes(&spec, Some(&key));
        let text = String::from_utf8(signed.clone()).expect("ascii");
        let committer_at = text.find("\ncommitter ").expect("committer");
        assert!(text[committer_at..]
            .starts_with(&format!("\ncommitter {committer}\ngpgsig -----BEGIN SSH SIGNATURE-----\n")));
        assert_eq!(crate::sign::split_signed_commit(&signed).0, unsigned, "the signed payload is the unsigned commit");
        let (a, b) = (parse_commit(&unsigned).expect("unsigned"), parse_commit(&signed).expect("signed"));
        assert_eq!((a.tree, &a.parents, a.author, a.message), (b.tree, &b.parents, b.author, b.message));
    }
}
