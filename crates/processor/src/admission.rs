//! Admission checks: is this upload a single, complete, reasonably sized JPEG, PNG or WebP?
//!
//! Everything here walks the container structure and reads headers; no pixel is decoded.
//! That is what makes the checks cheap enough to run inline in the upload handler and safe
//! against decompression bombs: the dimension limit is applied the moment the header that
//! carries the dimensions is read (JPEG SOF, PNG IHDR, WebP VP8/VP8L/VP8X), before any later
//! byte of the file is looked at, so a 60000×60000 PNG is refused in microseconds.
//!
//! The decode budget is checked at the same moment: `width × height × channels × bytes per
//! sample` as the header declares them must fit [`Limits::max_decode_bytes`], because the pixel
//! limit alone lets a 16-bit RGBA PNG cost 8 bytes a pixel ([`Rejection::TooLargeToDecode`]).
//!
//! What each format walk checks:
//! - **JPEG**: SOI, then every marker segment by its length, exactly one frame header (SOF)
//!   with 1 to 4 components, quantisation tables (and Huffman tables, except for baseline
//!   frames, which may use the standard ones like Motion-JPEG) before the first scan, every
//!   scan's entropy-coded data skipped byte-wise (stuffed `FF 00` and restart markers) up to
//!   the next marker, and an EOI. No EOI = [`Rejection::Truncated`]. Comments (`COM`) may
//!   total 64 KiB and application segments with them 256 KiB ([`Rejection::TooMuchMetadata`]):
//!   enough for EXIF, ICC and XMP, not for a large file smuggled inside; a comment holding a
//!   zip record is refused outright ([`Rejection::EmbeddedArchive`]).
//! - **PNG**: signature, every chunk with its CRC-32, IHDR first, at least one IDAT, IEND last.
//!   An `acTL` chunk (APNG) with more frames than allowed = [`Rejection::Animated`].
//! - **WebP**: the RIFF size must match the file length, every chunk must fit inside it, and
//!   the first chunk must be `VP8 `, `VP8L` or `VP8X`. `ANIM`/`ANMF` = animated.
//!
//! Bytes after the image's end (after JPEG EOI, PNG IEND, or the RIFF size) are refused as
//! [`Rejection::TrailingData`] — that is how JPEG+zip polyglots are caught — unless they are
//! all `0x00` or `0xFF`, the padding some cameras and encoders add.
//!
//! EXIF Make/Model/DateTimeOriginal are read from JPEG APP1, PNG `eXIf` and WebP `EXIF` only
//! after the structure has been accepted, by a walk of IFD0 and the Exif IFD alone whose work
//! is bounded whatever the bytes (see `read_exif`). Broken or hostile EXIF never rejects an
//! image (cameras write plenty of it); it just yields no summary.

use std::fmt;

use tracing::instrument;

/// The EXIF summary recorded in `event.json` (defined by the eventstore, which owns the format).
pub use camledger_eventstore::Exif;

/// Longest EXIF string kept, in characters; longer values are cut (event.json stays small).
const EXIF_MAX_CHARS: usize = 128;

/// Largest EXIF block (TIFF structure) looked at: a JPEG APP1 segment cannot hold more, and
/// a PNG `eXIf` or WebP `EXIF` chunk longer than this is read only up to it.
const EXIF_MAX_BYTES: usize = 64 * 1024;

/// Most IFD entries read from one IFD (a 64 KiB block holds at most 5,461).
const EXIF_MAX_ENTRIES: usize = 1024;

/// Largest total of JPEG `COM` (comment) payloads: one full segment. Cameras write a short
/// text, if anything; camledger's own benchmark pads its JPEGs to size with comments.
const JPEG_MAX_COMMENT_BYTES: usize = 64 * 1024;

/// Zip record signatures (local file header, central directory, end of central directory).
/// A comment is text; one holding these is a JPEG+zip polyglot, which a zip reader opens by
/// finding the end record within the last 64 KiB of the file.
const ZIP_SIGNATURES: [&[u8]; 3] = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"];

/// Largest total of JPEG `APPn` + `COM` payloads: room for a full EXIF block (64 KiB), an
/// ICC profile and XMP several times over, but not for a second file.
const JPEG_MAX_METADATA_BYTES: usize = 256 * 1024;

/// Admission limits; callers get them from configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Largest accepted `width × height`. Default 50 megapixels.
    pub max_pixels: u64,
    /// Largest accepted number of frames. Default 1: every animated image is refused.
    pub max_frames: u32,
    /// Largest decoded size, `width × height × channels × bytes per sample` as the header
    /// declares it: what a full decode allocates. Default 200 MB, so every 8-bit image within
    /// the pixel limit fits (50 MP × 4 channels), a 16-bit one only at half the pixels.
    #[serde(default = "default_max_decode_bytes")]
    pub max_decode_bytes: u64,
}

fn default_max_decode_bytes() -> u64 {
    200_000_000
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_pixels: 50_000_000, max_frames: 1, max_decode_bytes: default_max_decode_bytes() }
    }
}

/// An accepted image format, known from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    /// The IANA media type, as stored in `event.json` and sent as `Content-Type`.
    pub fn media_type(&self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
        }
    }

    /// File extension (without dot) of the image blob in the event tree (`image.jpg`, ...).
    pub fn extension(&self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// What an accepted upload is: everything `NewEvent` needs besides the bytes themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub exif: Option<Exif>,
}

impl Admitted {
    /// The ledger event for these admitted `image` bytes from `camera`.
    pub fn into_event(
        self,
        camera: String,
        image: bytes::Bytes,
        captured_at: Option<String>,
        idempotency_key: Option<String>,
    ) -> camledger_eventstore::NewEvent {
        camledger_eventstore::NewEvent {
            camera,
            image,
            media_type: self.format.media_type().to_owned(),
            extension: self.format.extension().to_owned(),
            width: self.width,
            height: self.height,
            exif: self.exif,
            captured_at,
            idempotency_key,
        }
    }
}

/// Why an upload was refused. Nothing is written to the ledger for any of these; they are the
/// client's fault, so none is retried and none is logged above `debug`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The body has no bytes. HTTP 400.
    #[error("the upload is empty")]
    Empty,
    /// The magic bytes are not JPEG, PNG or WebP, whatever the Content-Type said. HTTP 415.
    #[error("not a JPEG, PNG or WebP image (judged by its first bytes)")]
    UnsupportedFormat,
    /// The header declares more pixels than allowed. HTTP 422, not 413: the request body is
    /// within the size limit (413 is kept for that, so clients and metrics can tell the two
    /// apart); it is the content that cannot be processed, typically a decompression bomb.
    #[error("image is {width}x{height} pixels, more than the limit of {max} pixels")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// The file ends before the image does (no JPEG EOI, no PNG IEND, RIFF size beyond the
    /// end). HTTP 422; the client may retry with the complete file.
    #[error("the image is truncated: the file ends before the image does")]
    Truncated,
    /// The structure is broken (bad CRC, missing header, impossible sizes). HTTP 422.
    #[error("the image is corrupt: {detail}")]
    Corrupt { detail: String },
    /// Non-padding bytes follow the end of the image (e.g. a JPEG with a zip appended).
    /// HTTP 422.
    #[error("{extra} bytes of data follow the end of the image")]
    TrailingData { extra: u64 },
    /// More frames than allowed (APNG, animated WebP). HTTP 422.
    #[error("animated images are not accepted")]
    Animated,
    /// Decoding would need more memory than allowed: few enough pixels, but too many channels
    /// or bytes per sample (a 16-bit RGBA PNG needs 8 bytes per pixel). HTTP 422.
    #[error("decoding this {width}x{height} image needs {bytes} bytes, more than the limit of {max}")]
    TooLargeToDecode { width: u32, height: u32, bytes: u64, max: u64 },
    /// A JPEG comment holds a zip archive (a polyglot file, like trailing data). HTTP 422.
    #[error("a comment in the image holds a zip archive")]
    EmbeddedArchive,
    /// The JPEG carries more comment or application-segment bytes than any camera writes: a
    /// place to smuggle a second file. HTTP 422.
    #[error("the image carries {bytes} bytes of {kind}, more than the limit of {max}")]
    TooMuchMetadata { kind: &'static str, bytes: u64, max: u64 },
}

impl Rejection {
    /// Stable machine-readable code for the JSON error body (`{"error": code}`).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Empty => "empty_body",
            Rejection::UnsupportedFormat => "unsupported_format",
            Rejection::TooManyPixels { .. } => "too_many_pixels",
            Rejection::Truncated => "truncated_image",
            Rejection::Corrupt { .. } => "corrupt_image",
            Rejection::TrailingData { .. } => "trailing_data",
            Rejection::Animated => "animated_image",
            Rejection::TooLargeToDecode { .. } => "too_large_to_decode",
            Rejection::TooMuchMetadata { .. } => "too_much_metadata",
            Rejection::EmbeddedArchive => "embedded_archive",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Rejection::Empty => 400,
            Rejection::UnsupportedFormat => 415,
            Rejection::TooManyPixels { .. }
            | Rejection::Truncated
            | Rejection::Corrupt { .. }
            | Rejection::TrailingData { .. }
            | Rejection::Animated
            | Rejection::TooLargeToDecode { .. }
            | Rejection::TooMuchMetadata { .. }
            | Rejection::EmbeddedArchive => 422,
        }
    }

    fn corrupt(detail: impl Into<String>) -> Self {
        Rejection::Corrupt { detail: detail.into() }
    }
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// The format by magic bytes alone (a dozen bytes are enough); `None` for anything else.
pub fn sniff(prefix: &[u8]) -> Option<Format> {
    if prefix.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if prefix.starts_with(&PNG_SIGNATURE) {
        Some(Format::Png)
    } else if prefix.len() >= 12 && &prefix[0..4] == b"RIFF" && &prefix[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else {
        None
    }
}

/// Validates a whole upload without decoding pixels; see the module docs for what is checked.
#[instrument(level = "debug", skip_all, fields(size = bytes.len()), err(level = "debug"))]
pub fn admit(bytes: &[u8], limits: &Limits) -> Result<Admitted, Rejection> {
    let (admitted, exif_tiff) = walk(bytes, limits)?;
    Ok(Admitted { exif: exif_tiff.and_then(|tiff| read_exif(tiff).summary), ..admitted })
}

/// [`admit`] without reading EXIF (`exif` is always `None`): what a decoder needs before it
/// allocates anything, at the cost of the structural walk alone.
pub fn check(bytes: &[u8], limits: &Limits) -> Result<Admitted, Rejection> {
    walk(bytes, limits).map(|(admitted, _)| admitted)
}

fn walk<'a>(bytes: &'a [u8], limits: &Limits) -> Result<(Admitted, Option<&'a [u8]>), Rejection> {
    if bytes.is_empty() {
        return Err(Rejection::Empty);
    }
    let format = sniff(bytes).ok_or(Rejection::UnsupportedFormat)?;
    let walked = match format {
        Format::Jpeg => walk_jpeg(bytes, limits)?,
        Format::Png => walk_png(bytes, limits)?,
        Format::Webp => walk_webp(bytes, limits)?,
    };
    check_trailing(&bytes[walked.end..])?;
    Ok((Admitted { format, width: walked.width, height: walked.height, exif: None }, walked.exif_tiff))
}

/// What a container walk found.
struct Walked<'a> {
    width: u32,
    height: u32,
    /// Raw TIFF structure of the EXIF block, parsed only once the image is accepted.
    exif_tiff: Option<&'a [u8]>,
    /// Offset just past the image's last byte.
    end: usize,
}

fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), Rejection> {
    if width == 0 || height == 0 {
        return Err(Rejection::corrupt(format!("zero dimension {width}x{height}")));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(Rejection::TooManyPixels { width, height, max: limits.max_pixels });
    }
    Ok(())
}

/// The pixel limit, then the decode budget: `channels × bytes_per_sample` bytes per pixel as
/// the decoder will hold them. Both from the header, before anything is allocated.
fn check_decode_size(
    width: u32,
    height: u32,
    channels: u64,
    bytes_per_sample: u64,
    limits: &Limits,
) -> Result<(), Rejection> {
    check_pixels(width, height, limits)?;
    let bytes = u64::from(width) * u64::from(height) * channels * bytes_per_sample;
    if bytes > limits.max_decode_bytes {
        return Err(Rejection::TooLargeToDecode { width, height, bytes, max: limits.max_decode_bytes });
    }
    Ok(())
}

fn check_trailing(rest: &[u8]) -> Result<(), Rejection> {
    if rest.iter().all(|&b| b == 0x00 || b == 0xFF) {
        Ok(())
    } else {
        Err(Rejection::TrailingData { extra: rest.len() as u64 })
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le24(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], 0])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

// ---------------------------------------------------------------------------------------------
// JPEG

fn is_sof(marker: u8) -> bool {
    // C0..CF are frame headers except C4 (DHT), C8 (JPG, reserved) and CC (DAC).
    matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC)
}

fn is_lossless(marker: u8) -> bool {
    matches!(marker, 0xC3 | 0xC7 | 0xCB | 0xCF)
}

fn is_arithmetic(marker: u8) -> bool {
    matches!(marker, 0xC9..=0xCB | 0xCD..=0xCF)
}

fn walk_jpeg<'a>(b: &'a [u8], limits: &Limits) -> Result<Walked<'a>, Rejection> {
    let mut pos = 2; // after SOI (sniff checked it)
    let mut dims: Option<(u32, u32)> = None;
    let mut sof_marker = 0u8;
    let mut exif_tiff = None;
    let mut seen_scan = false;
    let (mut seen_dqt, mut seen_dht) = (false, false);
    let (mut comment_bytes, mut metadata_bytes) = (0usize, 0usize);
    loop {
        if pos >= b.len() {
            return Err(Rejection::Truncated);
        }
        if b[pos] != 0xFF {
            return Err(Rejection::corrupt(format!("expected a marker at offset {pos}")));
        }
        while pos < b.len() && b[pos] == 0xFF {
            pos += 1; // fill bytes before a marker are allowed
        }
        let Some(&marker) = b.get(pos) else {
            return Err(Rejection::Truncated);
        };
        pos += 1;
        match marker {
            0xD9 => {
                let Some((width, height)) = dims.filter(|_| seen_scan) else {
                    return Err(Rejection::corrupt("end of image before any scan"));
                };
                return Ok(Walked { width, height, exif_tiff, end: pos });
            }
            0xD8 => return Err(Rejection::corrupt("second start-of-image marker")),
            0x00 => return Err(Rejection::corrupt(format!("invalid marker at offset {}", pos - 1))),
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if b.len() - pos < 2 {
            return Err(Rejection::Truncated);
        }
        let seg_len = usize::from(be16(b, pos));
        if seg_len < 2 {
            return Err(Rejection::corrupt(format!("segment length {seg_len} at offset {pos}")));
        }
        if b.len() - pos < seg_len {
            return Err(Rejection::Truncated);
        }
        let payload = &b[pos + 2..pos + seg_len];
        pos += seg_len;
        if is_sof(marker) {
            if dims.is_some() {
                return Err(Rejection::corrupt("more than one frame header"));
            }
            if payload.len() < 6 {
                return Err(Rejection::corrupt("frame header too short"));
            }
            let precision = payload[0];
            let height = u32::from(be16(payload, 1));
            let width = u32::from(be16(payload, 3));
            let components = usize::from(payload[5]);
            // A frame without components has no pixels at all; more than 4 is not a colour
            // space any decoder knows.
            if !(1..=4).contains(&components) || payload.len() < 6 + 3 * components {
                return Err(Rejection::corrupt(format!("frame header with {components} components")));
            }
            if !matches!(precision, 2..=16) {
                return Err(Rejection::corrupt(format!("sample precision {precision}")));
            }
            let bytes_per_sample = if precision > 8 { 2 } else { 1 };
            check_decode_size(width, height, components as u64, bytes_per_sample, limits)?;
            dims = Some((width, height));
            sof_marker = marker;
        } else if matches!(marker, 0xE0..=0xEF | 0xFE) {
            metadata_bytes += payload.len();
            if marker == 0xFE {
                if ZIP_SIGNATURES.iter().any(|signature| memchr::memmem::find(payload, signature).is_some()) {
                    return Err(Rejection::EmbeddedArchive);
                }
                comment_bytes += payload.len();
                if comment_bytes > JPEG_MAX_COMMENT_BYTES {
                    return Err(Rejection::TooMuchMetadata {
                        kind: "comments",
                        bytes: comment_bytes as u64,
                        max: JPEG_MAX_COMMENT_BYTES as u64,
                    });
                }
            }
            if metadata_bytes > JPEG_MAX_METADATA_BYTES {
                return Err(Rejection::TooMuchMetadata {
                    kind: "metadata",
                    bytes: metadata_bytes as u64,
                    max: JPEG_MAX_METADATA_BYTES as u64,
                });
            }
            if marker == 0xE1 && exif_tiff.is_none() {
                if let Some(tiff) = payload.strip_prefix(b"Exif\0\0") {
                    exif_tiff = Some(tiff);
                }
            }
        } else if marker == 0xDB {
            seen_dqt = true;
        } else if marker == 0xC4 {
            seen_dht = true;
        } else if marker == 0xDA {
            if dims.is_none() {
                return Err(Rejection::corrupt("scan before frame header"));
            }
            let scan_components = payload.first().map_or(0, |&n| usize::from(n));
            if scan_components == 0 || payload.len() < 1 + 2 * scan_components + 3 {
                return Err(Rejection::corrupt("malformed scan header"));
            }
            // Quantisation tables have no default (lossless coding needs none). Huffman
            // tables do, for baseline only: Motion-JPEG frames omit them and decoders use the
            // standard ones; arithmetic coding has its own conditioning instead.
            if !seen_dqt && !is_lossless(sof_marker) {
                return Err(Rejection::corrupt("scan without a quantisation table"));
            }
            if !seen_dht && sof_marker != 0xC0 && !is_arithmetic(sof_marker) {
                return Err(Rejection::corrupt("scan without a Huffman table"));
            }
            seen_scan = true;
            pos = skip_entropy_coded(b, pos)?;
        }
    }
}

/// Returns the offset of the `FF` that starts the marker ending this entropy-coded segment.
fn skip_entropy_coded(b: &[u8], mut pos: usize) -> Result<usize, Rejection> {
    loop {
        let Some(i) = memchr::memchr(0xFF, &b[pos..]).map(|i| pos + i) else {
            return Err(Rejection::Truncated);
        };
        let Some(&next) = b.get(i + 1) else {
            return Err(Rejection::Truncated);
        };
        match next {
            // Stuffed zero byte or restart marker: still inside the scan.
            0x00 | 0xD0..=0xD7 => pos = i + 2,
            // Fill byte: the marker starts at the last FF of the run.
            0xFF => pos = i + 1,
            _ => return Ok(i),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PNG

fn walk_png<'a>(b: &'a [u8], limits: &Limits) -> Result<Walked<'a>, Rejection> {
    let mut pos = PNG_SIGNATURE.len();
    let mut first = true;
    let mut seen_idat = false;
    let mut dims = (0, 0);
    let mut exif_tiff = None;
    loop {
        if b.len() - pos < 12 {
            return Err(Rejection::Truncated);
        }
        let len = be32(b, pos);
        if len > 0x7FFF_FFFF {
            return Err(Rejection::corrupt(format!("chunk length {len} at offset {pos}")));
        }
        let len = len as usize;
        let kind: [u8; 4] = [b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]];
        if !kind.iter().all(u8::is_ascii_alphabetic) {
            return Err(Rejection::corrupt(format!("invalid chunk type at offset {pos}")));
        }
        let name = String::from_utf8_lossy(&kind).into_owned();
        if first && &kind != b"IHDR" {
            return Err(Rejection::corrupt("first chunk is not IHDR"));
        }
        if b.len() - pos - 12 < len {
            return Err(Rejection::Truncated);
        }
        let data = &b[pos + 8..pos + 8 + len];
        if &kind == b"IHDR" {
            if !first || len != 13 {
                return Err(Rejection::corrupt("misplaced or malformed IHDR"));
            }
            // Dimensions before the CRC: a bomb is refused as such even if it was forged
            // carelessly, and nothing after the header is read.
            dims = (be32(data, 0), be32(data, 4));
            // Palette images decode to RGB or RGBA; 16-bit samples stay 16-bit.
            let channels = match data[9] {
                0 => 1,
                2 => 3,
                3 | 6 => 4,
                4 => 2,
                other => return Err(Rejection::corrupt(format!("PNG colour type {other}"))),
            };
            let bytes_per_sample = if data[8] == 16 { 2 } else { 1 };
            check_decode_size(dims.0, dims.1, channels, bytes_per_sample, limits)?;
        }
        let stored_crc = be32(b, pos + 8 + len);
        if crc32fast::hash(&b[pos + 4..pos + 8 + len]) != stored_crc {
            return Err(Rejection::corrupt(format!("CRC mismatch in {name} chunk at offset {pos}")));
        }
        first = false;
        pos += 12 + len;
        match &kind {
            b"acTL" => {
                if len != 8 {
                    return Err(Rejection::corrupt("malformed acTL chunk"));
                }
                if be32(data, 0) > limits.max_frames {
                    return Err(Rejection::Animated);
                }
            }
            b"IDAT" => seen_idat = true,
            b"eXIf" => exif_tiff = exif_tiff.or(Some(data)),
            b"IEND" => {
                if !seen_idat {
                    return Err(Rejection::corrupt("no image data (IDAT) before IEND"));
                }
                return Ok(Walked { width: dims.0, height: dims.1, exif_tiff, end: pos });
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WebP

/// WebP decodes to 8-bit RGB or RGBA; the alpha flag is not trusted, so count 4 channels.
const WEBP_CHANNELS: u64 = 4;

fn walk_webp<'a>(b: &'a [u8], limits: &Limits) -> Result<Walked<'a>, Rejection> {
    let riff_size = le32(b, 4) as usize;
    let end = riff_size.checked_add(8).ok_or(Rejection::Truncated)?;
    if end > b.len() {
        return Err(Rejection::Truncated);
    }
    if riff_size < 4 {
        return Err(Rejection::corrupt("RIFF size too small"));
    }
    let body = &b[12..end];
    let mut pos = 0;
    let mut dims: Option<(u32, u32)> = None;
    let mut has_image = false;
    let mut animated = false;
    let mut frames: u32 = 0;
    let mut exif_tiff = None;
    let mut first = true;
    while pos < body.len() {
        if body.len() - pos < 8 {
            return Err(Rejection::corrupt("chunk header cut off by the RIFF size"));
        }
        let kind: [u8; 4] = [body[pos], body[pos + 1], body[pos + 2], body[pos + 3]];
        let len = le32(body, pos + 4) as usize;
        if body.len() - pos - 8 < len {
            return Err(Rejection::corrupt("chunk extends beyond the RIFF size"));
        }
        let data = &body[pos + 8..pos + 8 + len];
        // Chunks are padded to an even size; the last pad byte may be missing in the wild.
        pos = (pos + 8 + len + (len & 1)).min(body.len());
        if first && !matches!(&kind, b"VP8 " | b"VP8L" | b"VP8X") {
            return Err(Rejection::corrupt("first chunk is not VP8, VP8L or VP8X"));
        }
        first = false;
        match &kind {
            b"VP8X" => {
                if data.len() < 10 {
                    return Err(Rejection::corrupt("VP8X chunk too short"));
                }
                let (w, h) = (le24(data, 4) + 1, le24(data, 7) + 1);
                check_decode_size(w, h, WEBP_CHANNELS, 1, limits)?;
                dims = Some((w, h));
                animated |= data[0] & 0x02 != 0;
            }
            b"VP8 " => {
                if data.len() < 10 || data[3..6] != [0x9D, 0x01, 0x2A] {
                    return Err(Rejection::corrupt("VP8 chunk without a key frame header"));
                }
                let (w, h) = (u32::from(le16(data, 6) & 0x3FFF), u32::from(le16(data, 8) & 0x3FFF));
                check_decode_size(w, h, WEBP_CHANNELS, 1, limits)?;
                dims = dims.or(Some((w, h)));
                has_image = true;
            }
            b"VP8L" => {
                if data.len() < 5 || data[0] != 0x2F {
                    return Err(Rejection::corrupt("VP8L chunk without its signature"));
                }
                let bits = le32(data, 1);
                let (w, h) = ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1);
                check_decode_size(w, h, WEBP_CHANNELS, 1, limits)?;
                dims = dims.or(Some((w, h)));
                has_image = true;
            }
            b"ANIM" => animated = true,
            b"ANMF" => {
                animated = true;
                frames = frames.saturating_add(1);
                if frames > limits.max_frames {
                    return Err(Rejection::Animated);
                }
                has_image = true;
            }
            b"EXIF" => {
                exif_tiff = exif_tiff.or(Some(data.strip_prefix(b"Exif\0\0").unwrap_or(data)));
            }
            _ => {}
        }
    }
    if animated && limits.max_frames <= 1 {
        return Err(Rejection::Animated);
    }
    match dims {
        Some((width, height)) if has_image => Ok(Walked { width, height, exif_tiff, end }),
        _ => Err(Rejection::corrupt("no image data")),
    }
}

// ---------------------------------------------------------------------------------------------
// EXIF

/// TIFF tags the summary needs: Make and Model in IFD0, DateTimeOriginal in the Exif IFD
/// that IFD0's `ExifIFDPointer` points at.
const TAG_MAKE: u16 = 0x010F;
const TAG_MODEL: u16 = 0x0110;
const TAG_EXIF_IFD: u16 = 0x8769;
const TAG_DATE_TIME_ORIGINAL: u16 = 0x9003;
const TYPE_ASCII: u16 = 2;
const TYPE_LONG: u16 = 4;

/// The EXIF summary and how much work reading it took.
#[derive(Debug, Default)]
struct ExifRead {
    summary: Option<Exif>,
    /// IFDs walked: at most 2 (IFD0 and the Exif IFD).
    ifds: usize,
    /// IFD entries looked at: at most `2 × EXIF_MAX_ENTRIES`.
    entries: usize,
}

/// Reads the summary from a TIFF structure with a walk whose work is bounded whatever the
/// bytes: only the first [`EXIF_MAX_BYTES`] are looked at, only IFD0 and the Exif IFD are
/// walked (never the IFD chain, never an IFD twice), at most [`EXIF_MAX_ENTRIES`] entries each,
/// and nothing is allocated but the three strings kept. A general EXIF parser (kamadak-exif,
/// before) stores every entry of every IFD it reaches: IFD0 entries all pointing at one large
/// child IFD, with the IFD chain looping back, made it store N·M·8 entries (7.7 s and 2.8 GB
/// for a 65 KB JPEG). Whatever cannot be read is left out; nothing here rejects the image.
fn read_exif(tiff: &[u8]) -> ExifRead {
    let tiff = &tiff[..tiff.len().min(EXIF_MAX_BYTES)];
    let mut read = ExifRead::default();
    let endian = match tiff.get(..4) {
        Some(b"II*\0") => Endian::Little,
        Some(b"MM\0*") => Endian::Big,
        _ => return read,
    };
    let Some(ifd0) = endian.u32(tiff, 4) else { return read };
    let (mut make, mut model, mut date, mut exif_ifd) = (None, None, None, None);
    walk_ifd(tiff, endian, ifd0 as usize, &mut read, |tag, kind, count, value_at| match (tag, kind) {
        (TAG_MAKE, TYPE_ASCII) if make.is_none() => make = ascii(tiff, endian, count, value_at),
        (TAG_MODEL, TYPE_ASCII) if model.is_none() => model = ascii(tiff, endian, count, value_at),
        (TAG_EXIF_IFD, TYPE_LONG) if exif_ifd.is_none() && count == 1 => exif_ifd = endian.u32(tiff, value_at),
        _ => {}
    });
    // The one offset already visited is IFD0's; any other is new, so no loop is possible.
    if let Some(offset) = exif_ifd.filter(|&offset| offset != ifd0) {
        walk_ifd(tiff, endian, offset as usize, &mut read, |tag, kind, count, value_at| {
            if tag == TAG_DATE_TIME_ORIGINAL && kind == TYPE_ASCII && date.is_none() {
                date = ascii(tiff, endian, count, value_at);
            }
        });
    }
    let summary = Exif { make, model, date_time_original: date };
    let empty = summary.make.is_none() && summary.model.is_none() && summary.date_time_original.is_none();
    read.summary = (!empty).then_some(summary);
    read
}

#[derive(Debug, Clone, Copy)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let bytes: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u16::from_le_bytes(bytes),
            Endian::Big => u16::from_be_bytes(bytes),
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        })
    }
}

/// Calls `entry(tag, type, count, offset of the value field)` for the entries of the IFD at
/// `offset`, at most [`EXIF_MAX_ENTRIES`] of them, stopping at the end of the block.
fn walk_ifd(
    tiff: &[u8],
    endian: Endian,
    offset: usize,
    read: &mut ExifRead,
    mut entry: impl FnMut(u16, u16, u32, usize),
) {
    let Some(count) = endian.u16(tiff, offset) else { return };
    read.ifds += 1;
    for i in 0..usize::from(count).min(EXIF_MAX_ENTRIES) {
        let at = offset + 2 + 12 * i;
        let (Some(tag), Some(kind), Some(n)) =
            (endian.u16(tiff, at), endian.u16(tiff, at + 2), endian.u32(tiff, at + 4))
        else {
            return;
        };
        read.entries += 1;
        entry(tag, kind, n, at + 8);
    }
}

/// An ASCII value's text up to its first NUL, cleaned; `None` when it lies outside the block.
fn ascii(tiff: &[u8], endian: Endian, count: u32, value_at: usize) -> Option<String> {
    let len = count as usize;
    let start = if len <= 4 { value_at } else { endian.u32(tiff, value_at)? as usize };
    let raw = tiff.get(start..start.checked_add(len)?)?;
    let text = raw.split(|&b| b == 0).next().unwrap_or_default();
    Some(clean_exif_text(text)).filter(|s| !s.is_empty())
}

/// Cameras pad EXIF strings with NULs and spaces; some write garbage. Keep printable text,
/// trimmed, at most [`EXIF_MAX_CHARS`] characters.
fn clean_exif_text(raw: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(raw);
    let printable: String = lossy.chars().filter(|c| !c.is_control()).collect();
    printable.trim().chars().take(EXIF_MAX_CHARS).collect::<String>().trim_end().to_owned()
}

#[cfg(test)]
mod tests;
