//! The TOC (`stargz.index.json`): model, lenient parsing, Go-exact writing.
//!
//! This module owns the TOC's JSON form and nothing else: [`Toc`], [`TocEntry`], [`EntryType`],
//! the parser ([`Toc::from_json`]), the writer ([`Toc::to_json`]) and the `modtime` helpers
//! ([`TocEntry::mtime`], [`format_modtime`]).
//!
//! Parsing accepts what the Go reader accepts (absent fields are zero, unknown keys ignored,
//! `entries: null`, keys matched case-insensitively when no exact match exists, duplicate keys
//! last-wins, `null` values leave a field unchanged, invalid UTF-8 and lone surrogate escapes
//! replaced by U+FFFD, bytes after the top-level object ignored), and rejects what it rejects
//! (non-integer or out-of-range numbers, bad base64, wrong JSON types). It additionally rejects
//! entries whose `type` is missing or unknown, naming the entry. Writing reproduces
//! `json.MarshalIndent(toc, "", "\t")` of the Go writer (go1.19 `encoding/json`) byte for byte:
//! key order, `omitempty`, tab indentation, `<>&` and U+2028/U+2029 escaped, so that a TOC read
//! and written back unchanged hashes to the same TOC digest.
//!
//! This module knows nothing about blobs or paths; [`crate::index`] interprets the entries.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// The type of a TOC entry (`type` in the JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryType {
    /// A directory (`dir`).
    #[serde(rename = "dir")]
    Dir,
    /// A regular file, and the first chunk of its data (`reg`).
    #[default]
    #[serde(rename = "reg")]
    Reg,
    /// A symbolic link (`symlink`).
    #[serde(rename = "symlink")]
    Symlink,
    /// A hard link to an earlier entry (`hardlink`).
    #[serde(rename = "hardlink")]
    Hardlink,
    /// A character device (`char`).
    #[serde(rename = "char")]
    Char,
    /// A block device (`block`).
    #[serde(rename = "block")]
    Block,
    /// A named pipe (`fifo`).
    #[serde(rename = "fifo")]
    Fifo,
    /// A further chunk of the preceding regular file (`chunk`).
    #[serde(rename = "chunk")]
    Chunk,
}

impl EntryType {
    /// The JSON spelling (`dir`, `reg`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Dir => "dir",
            EntryType::Reg => "reg",
            EntryType::Symlink => "symlink",
            EntryType::Hardlink => "hardlink",
            EntryType::Char => "char",
            EntryType::Block => "block",
            EntryType::Fifo => "fifo",
            EntryType::Chunk => "chunk",
        }
    }

    /// Parses the JSON spelling (case-sensitive, as Go compares it); `None` for anything else.
    ///
    /// ```
    /// use estargz::EntryType;
    ///
    /// assert_eq!(EntryType::from_json_str("symlink"), Some(EntryType::Symlink));
    /// assert_eq!(EntryType::from_json_str("Reg"), None);
    /// ```
    pub fn from_json_str(s: &str) -> Option<EntryType> {
        Some(match s {
            "dir" => EntryType::Dir,
            "reg" => EntryType::Reg,
            "symlink" => EntryType::Symlink,
            "hardlink" => EntryType::Hardlink,
            "char" => EntryType::Char,
            "block" => EntryType::Block,
            "fifo" => EntryType::Fifo,
            "chunk" => EntryType::Chunk,
            _ => return None,
        })
    }
}

impl fmt::Display for EntryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole TOC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Toc {
    /// `version`; always 1 when written by the reference tools, never checked on read.
    pub version: i64,
    /// `entries`, in blob order.
    pub entries: Vec<TocEntry>,
    /// `tarSplitDigest`: only in TOCs written by containers/storage (zstd:chunked).
    pub tar_split_digest: String,
}

/// One TOC entry. Absent JSON fields are zero / empty.
///
/// Field names follow the JSON keys. Integers are `i64` as in Go, so that a TOC with negative
/// values parses and is then rejected by [`crate::index`] with an error naming the entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TocEntry {
    /// `name`: the path exactly as in the tar header (not normalised).
    pub name: String,
    /// `type`.
    pub entry_type: EntryType,
    /// `size`: file size, `reg` only.
    pub size: i64,
    /// `modtime`: RFC 3339 string as stored (see [`TocEntry::mtime`]).
    pub modtime: String,
    /// `linkName`: symlink target or hardlink target path.
    pub link_name: String,
    /// `mode`: the raw tar mode (only the low 12 bits are meaningful).
    pub mode: i64,
    /// `uid`.
    pub uid: i64,
    /// `gid`.
    pub gid: i64,
    /// `userName`.
    pub user_name: String,
    /// `groupName`.
    pub group_name: String,
    /// `offset`: compressed offset of the member/frame holding this chunk.
    pub offset: i64,
    /// `innerOffset`: uncompressed bytes before this chunk inside that member.
    pub inner_offset: i64,
    /// `devMajor`.
    pub dev_major: i64,
    /// `devMinor`.
    pub dev_minor: i64,
    /// `xattrs`: names to raw values (base64 in the JSON).
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// `digest`: whole-file digest string, `reg` only.
    pub digest: String,
    /// `chunkOffset`: offset of this chunk in the file.
    pub chunk_offset: i64,
    /// `chunkSize`: uncompressed chunk length (0 = to the end of the file).
    pub chunk_size: i64,
    /// `chunkDigest`: digest string of this chunk's bytes.
    pub chunk_digest: String,
    /// `endOffset` (containers/storage zstd:chunked): end of this chunk's compressed frame.
    pub end_offset: i64,
    /// `chunkType` (containers/storage zstd:chunked): empty for data, `zeros` for a hole.
    pub chunk_type: String,
    /// `accesstime` (containers/storage), RFC 3339.
    pub access_time: String,
    /// `changetime` (containers/storage), RFC 3339.
    pub change_time: String,
}

impl Toc {
    /// Parses TOC JSON bytes leniently, as the Go reader does.
    ///
    /// Errors are [`Error::Toc`] (malformed JSON, wrong JSON type, float or out-of-range number,
    /// bad base64; the message names the entry index and the line/column) or
    /// [`Error::InvalidEntry`] (an entry whose `type` is missing or not one of the eight known
    /// types).
    ///
    /// ```
    /// use estargz::{EntryType, Toc};
    ///
    /// let toc = Toc::from_json(br#"{"version":1,"entries":[{"name":"a","type":"dir","NumLink":0}]}"#)
    ///     .unwrap();
    /// assert_eq!(toc.entries[0].entry_type, EntryType::Dir);
    /// assert!(Toc::from_json(br#"{"entries":[{"name":"a","type":"reg","size":1.5}]}"#).is_err());
    /// ```
    pub fn from_json(json: &[u8]) -> Result<Toc> {
        match parse_toc(json) {
            Ok(toc) => Ok(toc),
            Err(first) => match go_fixup(json) {
                // Go replaces invalid UTF-8 and lone surrogate escapes by U+FFFD and reads `-0`
                // as an integer, where serde_json fails; retry with the input rewritten the way
                // Go sees it (only ever on the error path, so valid TOCs are parsed once).
                Some(fixed) => parse_toc(&fixed),
                None => Err(first),
            },
        }
    }

    /// Writes the TOC exactly as Go's `json.MarshalIndent(toc, "", "\t")` does.
    ///
    /// Every field but `name` and `type` is omitted when zero/empty, `entries` is `null` when
    /// empty, and `tarSplitDigest` only appears when set. The one intended difference from Go:
    /// U+FFFD in a string is written as the escape `\ufffd`, which is what Go writes for a
    /// non-UTF-8 tar name (see the `q-invalid-utf8-name` vector); Go would write a genuine U+FFFD
    /// raw.
    ///
    /// ```
    /// use estargz::Toc;
    ///
    /// let toc = Toc { version: 1, ..Toc::default() };
    /// assert_eq!(toc.to_json(), b"{\n\t\"version\": 1,\n\t\"entries\": null\n}");
    /// ```
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_json(&mut out);
        out
    }

    /// Appends [`Toc::to_json`]'s bytes to `out` (the builder writes them right after the TOC's
    /// tar header, without a copy).
    ///
    /// ```
    /// use estargz::Toc;
    ///
    /// let toc = Toc { version: 1, ..Toc::default() };
    /// let mut out = b"header".to_vec();
    /// toc.append_json(&mut out);
    /// assert_eq!(&out[6..], &toc.to_json()[..]);
    /// ```
    pub fn append_json(&self, out: &mut Vec<u8>) {
        out.reserve(64 + self.entries.len() * 320);
        out.extend_from_slice(b"{\n\t\"version\": ");
        write_i64(out, self.version);
        out.extend_from_slice(b",\n\t\"entries\": ");
        if self.entries.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            out.push(b'[');
            for (i, e) in self.entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"\n\t\t{");
                write_entry(out, e);
                out.extend_from_slice(b"\n\t\t}");
            }
            out.extend_from_slice(b"\n\t]");
        }
        if !self.tar_split_digest.is_empty() {
            out.extend_from_slice(b",\n\t\"tarSplitDigest\": ");
            write_json_string(out, &self.tar_split_digest);
        }
        out.extend_from_slice(b"\n}");
    }
}

impl TocEntry {
    /// The modification time in Unix seconds, or `None` when `modtime` is absent or unparsable
    /// (Go treats both as the zero time).
    ///
    /// Accepts RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; a fraction is dropped (the
    /// result is the floor, as Go's `Time.Unix`).
    ///
    /// ```
    /// use estargz::TocEntry;
    ///
    /// let e = TocEntry { modtime: "2019-08-20T10:30:43Z".into(), ..TocEntry::default() };
    /// assert_eq!(e.mtime(), Some(1566297043));
    /// assert_eq!(TocEntry::default().mtime(), None);
    /// ```
    pub fn mtime(&self) -> Option<i64> {
        parse_rfc3339(&self.modtime)
    }
}

/// Parses an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, years 0000-9999) into Unix
/// seconds, as Go's `time.Parse(time.RFC3339, s)` followed by `Unix()` does. `None` when the
/// string is empty or malformed (including out-of-range fields such as February 30th).
///
/// ```
/// use estargz::toc::parse_rfc3339;
///
/// assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
/// assert_eq!(parse_rfc3339("1969-12-31T23:59:59.5Z"), Some(-1));
/// assert_eq!(parse_rfc3339("2019-02-29T00:00:00Z"), None);
/// ```
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        let mut v = 0i64;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
        }
        Some(v)
    };
    let lit = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(lit(4, b'-') && lit(7, b'-') && lit(10, b'T') && lit(13, b':') && lit(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    if matches!(b.get(i), Some(b'.' | b',')) && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |x: u8, y: u8| -> Option<i64> {
                (x.is_ascii_digit() && y.is_ascii_digit())
                    .then(|| i64::from(x - b'0') * 10 + i64::from(y - b'0'))
            };
            let (oh, om) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86400 + hour * 3600 + min * 60 + sec - offset)
}

/// Formats Unix seconds as Go's TOC `modtime` (`YYYY-MM-DDTHH:MM:SSZ`, UTC).
///
/// Proleptic Gregorian calendar; negative times and years beyond 9999 work (years are at least
/// four digits, negative years get a leading `-`, as Go's `Time.Format` writes them).
///
/// ```
/// use estargz::toc::format_modtime;
///
/// assert_eq!(format_modtime(1566297043), "2019-08-20T10:30:43Z");
/// assert_eq!(format_modtime(-1), "1969-12-31T23:59:59Z");
/// ```
pub fn format_modtime(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86400);
    let secs = unix_seconds.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    if y < 0 {
        format!(
            "-{:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z",
            y.unsigned_abs()
        )
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146097 + doe - 719468
}

/// The inverse of [`days_from_civil`]; valid for every `i64` day count Unix seconds can give.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

fn write_entry(out: &mut Vec<u8>, e: &TocEntry) {
    out.extend_from_slice(b"\n\t\t\t\"name\": ");
    write_json_string(out, &e.name);
    out.extend_from_slice(b",\n\t\t\t\"type\": \"");
    out.extend_from_slice(e.entry_type.as_str().as_bytes());
    out.push(b'"');
    write_int_field(out, "size", e.size);
    write_str_field(out, "modtime", &e.modtime);
    write_str_field(out, "linkName", &e.link_name);
    write_int_field(out, "mode", e.mode);
    write_int_field(out, "uid", e.uid);
    write_int_field(out, "gid", e.gid);
    write_str_field(out, "userName", &e.user_name);
    write_str_field(out, "groupName", &e.group_name);
    write_int_field(out, "offset", e.offset);
    write_int_field(out, "innerOffset", e.inner_offset);
    write_int_field(out, "devMajor", e.dev_major);
    write_int_field(out, "devMinor", e.dev_minor);
    if !e.xattrs.is_empty() {
        out.extend_from_slice(b",\n\t\t\t\"xattrs\": {");
        for (i, (k, v)) in e.xattrs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\n\t\t\t\t");
            write_json_string(out, k);
            out.extend_from_slice(b": \"");
            // Standard padded base64 never needs JSON escaping.
            out.extend_from_slice(STANDARD.encode(v).as_bytes());
            out.push(b'"');
        }
        out.extend_from_slice(b"\n\t\t\t}");
    }
    write_str_field(out, "digest", &e.digest);
    write_int_field(out, "chunkOffset", e.chunk_offset);
    write_int_field(out, "chunkSize", e.chunk_size);
    write_str_field(out, "chunkDigest", &e.chunk_digest);
    write_int_field(out, "endOffset", e.end_offset);
    write_str_field(out, "chunkType", &e.chunk_type);
    write_str_field(out, "accesstime", &e.access_time);
    write_str_field(out, "changetime", &e.change_time);
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\n\t\t\t\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\": ");
}

/// An `omitempty` integer field.
fn write_int_field(out: &mut Vec<u8>, key: &str, v: i64) {
    if v != 0 {
        write_key(out, key);
        write_i64(out, v);
    }
}

/// An `omitempty` string field.
fn write_str_field(out: &mut Vec<u8>, key: &str, v: &str) {
    if !v.is_empty() {
        write_key(out, key);
        write_json_string(out, v);
    }
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Per byte: 0 = copy as is; 1 = needs escaping; 2 = `0xE2`, which may start U+2028/U+2029;
/// 3 = `0xEF`, which may start U+FFFD.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = 1;
        i += 1;
    }
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t[b'<' as usize] = 1;
    t[b'>' as usize] = 1;
    t[b'&' as usize] = 1;
    t[0xE2] = 2;
    t[0xEF] = 3;
    t
};

/// Writes `s` as a JSON string exactly as go1.19 `encoding/json` does (HTML escaping on).
///
/// One deliberate choice: U+FFFD is written as `\ufffd`. Go writes that escape for each byte of
/// invalid UTF-8 (which is how a non-UTF-8 tar name reaches a TOC) and a genuine U+FFFD raw;
/// a Rust `String` can only hold the former as U+FFFD, so this reproduces the Go bytes for
/// non-UTF-8 names (the `q-invalid-utf8-name` vector) at the cost of names that really contain
/// U+FFFD, which decode identically but hash differently.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match ESCAPE[c as usize] {
            0 => {
                i += 1;
                continue;
            }
            2 => {
                // U+2028 = E2 80 A8, U+2029 = E2 80 A9.
                if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)) {
                    out.extend_from_slice(&b[start..i]);
                    out.extend_from_slice(if b[i + 2] == 0xA8 {
                        b"\\u2028"
                    } else {
                        b"\\u2029"
                    });
                    i += 3;
                    start = i;
                } else {
                    i += 1;
                }
                continue;
            }
            3 => {
                // U+FFFD = EF BF BD.
                if b.get(i + 1) == Some(&0xBF) && b.get(i + 2) == Some(&0xBD) {
                    out.extend_from_slice(&b[start..i]);
                    out.extend_from_slice(b"\\ufffd");
                    i += 3;
                    start = i;
                } else {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&b[start..i]);
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xF)]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

/// Shared state of one parse: where in `entries` we are, and an entry-level problem found after
/// an entry object was complete (reported as [`Error::InvalidEntry`]).
#[derive(Default)]
struct Ctx {
    current_entry: Cell<Option<usize>>,
    problem: RefCell<Option<(usize, String, String)>>,
}

fn parse_toc(json: &[u8]) -> Result<Toc> {
    let ctx = Ctx::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    // Like Go's json.Decoder, bytes after the top-level value are not looked at.
    match TocSeed(&ctx).deserialize(&mut de) {
        Ok(toc) => Ok(toc),
        Err(e) => {
            if let Some((index, name, reason)) = ctx.problem.take() {
                return Err(Error::entry(index, &name, reason));
            }
            Err(Error::Toc(match ctx.current_entry.get() {
                Some(i) => format!("entry {i}: {e}"),
                None => e.to_string(),
            }))
        }
    }
}

/// Go's decoder replaces each byte of invalid UTF-8 and each lone `\uD800`-`\uDFFF` escape by
/// U+FFFD, and reads `-0` as the integer 0; serde_json rejects the first two and reads `-0` as a
/// float. Returns the input rewritten so that serde_json sees what Go sees, or `None` when there
/// is nothing to rewrite.
fn go_fixup(json: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(json.len() + 16);
    let mut changed = false;
    let mut rest = json;
    // 1. Invalid UTF-8: every offending byte becomes one U+FFFD (Go's utf8.DecodeRune width 1).
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => {
                out.extend_from_slice(rest);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.extend_from_slice(good);
                let n = e.error_len().unwrap_or(bad.len());
                for _ in 0..n {
                    out.extend_from_slice("\u{FFFD}".as_bytes());
                }
                rest = bad.get(n..).unwrap_or_default();
                changed = true;
            }
        }
    }
    // 2. Lone surrogate escapes inside strings, replaced in place (same length).
    let hex4 = |b: &[u8], at: usize| -> Option<u32> {
        let h = b.get(at..at + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        u32::from_str_radix(s, 16)
            .ok()
            .filter(|_| h.iter().all(u8::is_ascii_hexdigit))
    };
    let mut in_string = false;
    let mut i = 0;
    while i < out.len() {
        let c = out[i];
        if !in_string {
            // `-0` is an integer for Go's strconv.ParseInt but a float for serde_json.
            if c == b'-'
                && out.get(i + 1) == Some(&b'0')
                && !matches!(out.get(i + 2), Some(b'.' | b'e' | b'E' | b'0'..=b'9'))
            {
                out[i] = b' ';
                changed = true;
            }
            in_string = c == b'"';
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = false;
                i += 1;
            }
            b'\\' if out.get(i + 1) == Some(&b'u') => {
                let Some(u) = hex4(&out, i + 2) else {
                    i += 2;
                    continue;
                };
                if (0xD800..0xDC00).contains(&u)
                    && out.get(i + 6) == Some(&b'\\')
                    && out.get(i + 7) == Some(&b'u')
                    && hex4(&out, i + 8).is_some_and(|l| (0xDC00..0xE000).contains(&l))
                {
                    i += 12; // a valid pair
                } else if (0xD800..0xE000).contains(&u) {
                    out[i + 2..i + 6].copy_from_slice(b"fffd");
                    changed = true;
                    i += 6;
                } else {
                    i += 6;
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    changed.then_some(out)
}

/// Matches a key against `names` (exact spellings) as Go's `encoding/json` does: an exact match
/// wins, otherwise a case-insensitive one (Unicode simple folding, under which only `ſ` and the
/// Kelvin sign fold onto ASCII letters besides ASCII itself).
fn fold_key(key: &str, buf: &mut [u8; 16]) -> Option<usize> {
    let mut n = 0;
    for ch in key.chars() {
        let folded = match ch {
            'a'..='z' | '0'..='9' => ch as u8,
            'A'..='Z' => ch.to_ascii_lowercase() as u8,
            '\u{017F}' => b's',
            '\u{212A}' => b'k',
            _ => return None,
        };
        *buf.get_mut(n)? = folded;
        n += 1;
    }
    Some(n)
}

#[derive(Clone, Copy)]
enum TopKey {
    Version,
    Entries,
    TarSplitDigest,
    Other,
}

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TopKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TOC key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<TopKey, E> {
                Ok(match s {
                    "version" => TopKey::Version,
                    "entries" => TopKey::Entries,
                    "tarSplitDigest" => TopKey::TarSplitDigest,
                    _ => {
                        let mut buf = [0u8; 16];
                        match fold_key(s, &mut buf).and_then(|n| buf.get(..n)) {
                            Some(b"version") => TopKey::Version,
                            Some(b"entries") => TopKey::Entries,
                            Some(b"tarsplitdigest") => TopKey::TarSplitDigest,
                            _ => TopKey::Other,
                        }
                    }
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

#[derive(Clone, Copy)]
enum EntryKey {
    Name,
    Type,
    Size,
    ModTime,
    LinkName,
    Mode,
    Uid,
    Gid,
    UserName,
    GroupName,
    Offset,
    InnerOffset,
    DevMajor,
    DevMinor,
    Xattrs,
    Digest,
    ChunkOffset,
    ChunkSize,
    ChunkDigest,
    EndOffset,
    ChunkType,
    AccessTime,
    ChangeTime,
    Other,
}

impl EntryKey {
    fn exact(s: &[u8]) -> Option<EntryKey> {
        use EntryKey::*;
        Some(match s {
            b"name" => Name,
            b"type" => Type,
            b"size" => Size,
            b"modtime" => ModTime,
            b"linkName" => LinkName,
            b"mode" => Mode,
            b"uid" => Uid,
            b"gid" => Gid,
            b"userName" => UserName,
            b"groupName" => GroupName,
            b"offset" => Offset,
            b"innerOffset" => InnerOffset,
            b"devMajor" => DevMajor,
            b"devMinor" => DevMinor,
            b"xattrs" => Xattrs,
            b"digest" => Digest,
            b"chunkOffset" => ChunkOffset,
            b"chunkSize" => ChunkSize,
            b"chunkDigest" => ChunkDigest,
            b"endOffset" => EndOffset,
            b"chunkType" => ChunkType,
            b"accesstime" => AccessTime,
            b"changetime" => ChangeTime,
            _ => return None,
        })
    }

    fn folded(s: &[u8]) -> Option<EntryKey> {
        use EntryKey::*;
        Some(match s {
            b"linkname" => LinkName,
            b"username" => UserName,
            b"groupname" => GroupName,
            b"inneroffset" => InnerOffset,
            b"devmajor" => DevMajor,
            b"devminor" => DevMinor,
            b"chunkoffset" => ChunkOffset,
            b"chunksize" => ChunkSize,
            b"chunkdigest" => ChunkDigest,
            b"endoffset" => EndOffset,
            b"chunktype" => ChunkType,
            _ => return EntryKey::exact(s),
        })
    }
}

impl<'de> Deserialize<'de> for EntryKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = EntryKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TOC entry key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<EntryKey, E> {
                if let Some(k) = EntryKey::exact(s.as_bytes()) {
                    return Ok(k);
                }
                let mut buf = [0u8; 16];
                Ok(fold_key(s, &mut buf)
                    .and_then(|n| buf.get(..n))
                    .and_then(EntryKey::folded)
                    .unwrap_or(EntryKey::Other))
            }
        }
        d.deserialize_identifier(V)
    }
}

struct TocSeed<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for TocSeed<'_> {
    type Value = Toc;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Toc, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TocSeed<'_> {
    type Value = Toc;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOC object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Toc, A::Error> {
        let mut toc = Toc::default();
        while let Some(key) = map.next_key::<TopKey>()? {
            match key {
                TopKey::Version => {
                    if let Some(v) = map.next_value::<Option<i64>>()? {
                        toc.version = v;
                    }
                }
                TopKey::TarSplitDigest => {
                    if let Some(v) = map.next_value::<Option<String>>()? {
                        toc.tar_split_digest = v;
                    }
                }
                TopKey::Entries => {
                    map.next_value_seed(EntriesSeed {
                        ctx: self.0,
                        entries: &mut toc.entries,
                    })?;
                    self.0.current_entry.set(None);
                }
                TopKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(toc)
    }
}

/// Decodes `entries` into an existing vector, as Go decodes into an existing slice: elements
/// already present (from an earlier duplicate `entries` key) are updated in place.
struct EntriesSeed<'c, 'v> {
    ctx: &'c Ctx,
    entries: &'v mut Vec<TocEntry>,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of TOC entries or null")
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<(), E> {
        self.entries.clear();
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.entries
                .reserve(n.saturating_sub(self.entries.len()).min(1 << 16));
        }
        let mut i = 0;
        loop {
            self.ctx.current_entry.set(Some(i));
            let fresh = i >= self.entries.len();
            if fresh {
                self.entries.push(TocEntry::default());
            }
            let Some(entry) = self.entries.get_mut(i) else {
                break; // unreachable: pushed above
            };
            let seed = EntrySeed {
                ctx: self.ctx,
                index: i,
                fresh,
                entry,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            i += 1;
        }
        self.entries.truncate(i);
        Ok(())
    }
}

struct EntrySeed<'c, 'e> {
    ctx: &'c Ctx,
    index: usize,
    /// True for a new element; false when updating one from an earlier `entries` key.
    fresh: bool,
    entry: &'e mut TocEntry,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

enum TypeSeen {
    Absent,
    Known,
    Unknown(String),
}

impl<'de> Visitor<'de> for EntrySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOC entry object")
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<(), E> {
        // Go stores a nil *TOCEntry and later dereferences it; refuse instead.
        Err(E::custom("entry is null"))
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let e = self.entry;
        let mut ty = TypeSeen::Absent;
        macro_rules! set {
            ($field:expr, $t:ty) => {
                if let Some(v) = map.next_value::<Option<$t>>()? {
                    $field = v;
                }
            };
        }
        while let Some(key) = map.next_key::<EntryKey>()? {
            match key {
                EntryKey::Name => set!(e.name, String),
                EntryKey::Type => match map.next_value::<Option<TypeStr>>()? {
                    None => {}
                    Some(TypeStr(Ok(t))) => {
                        e.entry_type = t;
                        ty = TypeSeen::Known;
                    }
                    Some(TypeStr(Err(s))) => ty = TypeSeen::Unknown(s),
                },
                EntryKey::Size => set!(e.size, i64),
                EntryKey::ModTime => set!(e.modtime, String),
                EntryKey::LinkName => set!(e.link_name, String),
                EntryKey::Mode => set!(e.mode, i64),
                EntryKey::Uid => set!(e.uid, i64),
                EntryKey::Gid => set!(e.gid, i64),
                EntryKey::UserName => set!(e.user_name, String),
                EntryKey::GroupName => set!(e.group_name, String),
                EntryKey::Offset => set!(e.offset, i64),
                EntryKey::InnerOffset => set!(e.inner_offset, i64),
                EntryKey::DevMajor => set!(e.dev_major, i64),
                EntryKey::DevMinor => set!(e.dev_minor, i64),
                EntryKey::Xattrs => map.next_value_seed(XattrsSeed(&mut e.xattrs))?,
                EntryKey::Digest => set!(e.digest, String),
                EntryKey::ChunkOffset => set!(e.chunk_offset, i64),
                EntryKey::ChunkSize => set!(e.chunk_size, i64),
                EntryKey::ChunkDigest => set!(e.chunk_digest, String),
                EntryKey::EndOffset => set!(e.end_offset, i64),
                EntryKey::ChunkType => set!(e.chunk_type, String),
                EntryKey::AccessTime => set!(e.access_time, String),
                EntryKey::ChangeTime => set!(e.change_time, String),
                EntryKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let reason = match ty {
            TypeSeen::Known => return Ok(()),
            TypeSeen::Absent if !self.fresh => return Ok(()),
            TypeSeen::Absent => "missing \"type\"".to_owned(),
            TypeSeen::Unknown(s) => format!(
                "unknown type {s:?} (expected dir, reg, symlink, hardlink, char, block, fifo or chunk)"
            ),
        };
        let msg = format!("entry {} ({:?}): {reason}", self.index, e.name);
        *self.ctx.problem.borrow_mut() = Some((self.index, e.name.clone(), reason));
        Err(de::Error::custom(msg))
    }
}

/// An entry `type` string: a known type, or the unknown spelling (kept for the error message).
struct TypeStr(std::result::Result<EntryType, String>);

impl<'de> Deserialize<'de> for TypeStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TypeStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an entry type string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<TypeStr, E> {
                Ok(TypeStr(
                    EntryType::from_json_str(s).ok_or_else(|| s.to_owned()),
                ))
            }
        }
        d.deserialize_str(V)
    }
}

/// Decodes an `xattrs` object into an existing map, as Go decodes into an existing map (a
/// duplicate `xattrs` key merges; `null` empties it).
struct XattrsSeed<'m>(&'m mut BTreeMap<String, Vec<u8>>);

impl<'de> DeserializeSeed<'de> for XattrsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for XattrsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an xattrs object (names to base64 values) or null")
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<(), E> {
        self.0.clear();
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        self.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value::<Option<Base64Value>>()?;
            let value = match value {
                Some(Base64Value(Ok(v))) => v,
                Some(Base64Value(Err(reason))) => {
                    return Err(de::Error::custom(format!(
                        "xattr {name:?}: invalid base64 value: {reason}"
                    )))
                }
                None => Vec::new(),
            };
            self.0.insert(name, value);
        }
        Ok(())
    }
}

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits tolerated.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// A base64 xattr value, decoded (or why it could not be).
struct Base64Value(std::result::Result<Vec<u8>, String>);

impl<'de> Deserialize<'de> for Base64Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Base64Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Base64Value, E> {
                Ok(Base64Value(decode_go_base64(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Decodes standard padded base64 as Go's `encoding/json` does for `[]byte` (`\r` and `\n` are
/// skipped anywhere).
fn decode_go_base64(s: &str) -> std::result::Result<Vec<u8>, String> {
    let r = if s.bytes().any(|b| b == b'\r' || b == b'\n') {
        let stripped: Vec<u8> = s.bytes().filter(|&b| b != b'\r' && b != b'\n').collect();
        GO_STD_BASE64.decode(stripped)
    } else {
        GO_STD_BASE64.decode(s)
    };
    r.map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(name: &str, t: EntryType) -> TocEntry {
        TocEntry {
            name: name.into(),
            entry_type: t,
            ..TocEntry::default()
        }
    }

    fn one(json: &str) -> TocEntry {
        let toc = Toc::from_json(json.as_bytes()).unwrap();
        assert_eq!(toc.entries.len(), 1, "{json}");
        toc.entries.into_iter().next().unwrap()
    }

    fn err(json: &str) -> String {
        Toc::from_json(json.as_bytes()).unwrap_err().to_string()
    }

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn empty_toc_writes_null_entries() {
        let toc = Toc {
            version: 1,
            ..Toc::default()
        };
        assert_eq!(
            s(toc.to_json()),
            "{\n\t\"version\": 1,\n\t\"entries\": null\n}"
        );
        let t2 = Toc::default();
        assert_eq!(
            s(t2.to_json()),
            "{\n\t\"version\": 0,\n\t\"entries\": null\n}"
        );
    }

    #[test]
    fn minimal_entry_layout_and_omitempty() {
        let toc = Toc {
            version: 1,
            entries: vec![entry("a", EntryType::Dir), entry("b", EntryType::Reg)],
            tar_split_digest: String::new(),
        };
        assert_eq!(
            s(toc.to_json()),
            "{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{\n\t\t\t\"name\": \"a\",\n\t\t\t\"type\": \"dir\"\n\t\t},\n\t\t{\n\t\t\t\"name\": \"b\",\n\t\t\t\"type\": \"reg\"\n\t\t}\n\t]\n}"
        );
    }

    #[test]
    fn full_entry_key_order() {
        let mut e = entry("f", EntryType::Reg);
        e.size = 1;
        e.modtime = "m".into();
        e.link_name = "l".into();
        e.mode = -2;
        e.uid = 3;
        e.gid = 4;
        e.user_name = "u".into();
        e.group_name = "g".into();
        e.offset = 5;
        e.inner_offset = 6;
        e.dev_major = 7;
        e.dev_minor = 8;
        e.xattrs.insert("b".into(), vec![0, 1]);
        e.xattrs.insert("a".into(), vec![]);
        e.digest = "d".into();
        e.chunk_offset = 9;
        e.chunk_size = 10;
        e.chunk_digest = "cd".into();
        e.end_offset = 11;
        e.chunk_type = "zeros".into();
        e.access_time = "at".into();
        e.change_time = "ct".into();
        let toc = Toc {
            version: 1,
            entries: vec![e],
            tar_split_digest: "sha256:x".into(),
        };
        let json = s(toc.to_json());
        let keys: Vec<&str> = json
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('"'))
            .map(|l| &l[..l.find('"').unwrap()])
            .collect();
        assert_eq!(
            keys,
            [
                "version",
                "entries",
                "name",
                "type",
                "size",
                "modtime",
                "linkName",
                "mode",
                "uid",
                "gid",
                "userName",
                "groupName",
                "offset",
                "innerOffset",
                "devMajor",
                "devMinor",
                "xattrs",
                "a",
                "b",
                "digest",
                "chunkOffset",
                "chunkSize",
                "chunkDigest",
                "endOffset",
                "chunkType",
                "accesstime",
                "changetime",
                "tarSplitDigest"
            ]
        );
        assert!(json.contains("\t\t\t\"mode\": -2,\n"));
        assert!(json.contains(
            "\t\t\t\"xattrs\": {\n\t\t\t\t\"a\": \"\",\n\t\t\t\t\"b\": \"AAE=\"\n\t\t\t},\n"
        ));
        assert!(json.ends_with("\n\t],\n\t\"tarSplitDigest\": \"sha256:x\"\n}"));
        assert_eq!(Toc::from_json(json.as_bytes()).unwrap(), toc);
    }

    #[test]
    fn go_string_escaping() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("q\"b\\s", r#""q\"b\\s""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("\u{8}\u{c}\u{0}\u{1f}", r#""\u0008\u000c\u0000\u001f""#),
            ("<&>", r#""\u003c\u0026\u003e""#),
            ("a\u{2028}b\u{2029}c", r#""a\u2028b\u2029c""#),
            ("\u{2027}\u{202a}\u{20ac}", "\"\u{2027}\u{202a}\u{20ac}\""),
            ("\u{7f}é日本😀", "\"\u{7f}é日本😀\""),
            (
                "a\u{fffd}b\u{fffe}\u{ffbd}",
                "\"a\\ufffdb\u{fffe}\u{ffbd}\"",
            ),
            ("/'", r#""/'""#),
            ("", r#""""#),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            write_json_string(&mut out, input);
            assert_eq!(s(out.clone()), *want, "{input:?}");
            // serde_json reads back the same string.
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, *input);
        }
    }

    #[test]
    fn integers_format() {
        for v in [0, 1, -1, 9, 10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_i64(&mut out, v);
            assert_eq!(s(out), v.to_string());
        }
    }

    #[test]
    fn null_and_missing_entries_are_empty() {
        assert!(Toc::from_json(br#"{"version":1,"entries":null}"#)
            .unwrap()
            .entries
            .is_empty());
        let t = Toc::from_json(br#"{}"#).unwrap();
        assert_eq!(t, Toc::default());
        assert!(Toc::from_json(br#"{"entries":[]}"#)
            .unwrap()
            .entries
            .is_empty());
        // A later null replaces earlier entries (Go sets the slice to nil).
        let t =
            Toc::from_json(br#"{"entries":[{"name":"a","type":"dir"}],"entries":null}"#).unwrap();
        assert!(t.entries.is_empty());
    }

    #[test]
    fn top_level_must_be_an_object() {
        for bad in ["null", "[]", "1", "\"x\"", "", "{", "{\"entries\":{}}"] {
            assert!(Toc::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn null_entry_rejected() {
        let e = err(r#"{"entries":[{"name":"a","type":"dir"},null]}"#);
        assert!(e.contains("entry 1") && e.contains("null"), "{e}");
    }

    #[test]
    fn absent_fields_are_zero_and_unknown_keys_ignored() {
        let e = one(
            r#"{"version":7,"entries":[{"name":"x","type":"fifo","NumLink":0,"foo":{"a":[1,2.5,null,true]},"bar":-1.5e300}],"extra":[]}"#,
        );
        assert_eq!(e, entry("x", EntryType::Fifo));
        let t = Toc::from_json(br#"{"version":-3}"#).unwrap();
        assert_eq!(t.version, -3);
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let e = one(
            r#"{"entries":[{"name":"a","type":"dir","name":"b","type":"reg","size":1,"size":2}]}"#,
        );
        assert_eq!(e.name, "b");
        assert_eq!(e.entry_type, EntryType::Reg);
        assert_eq!(e.size, 2);
        let t = Toc::from_json(br#"{"version":1,"version":2}"#).unwrap();
        assert_eq!(t.version, 2);
    }

    #[test]
    fn null_values_leave_fields_unchanged() {
        let e = one(
            r#"{"entries":[{"name":"a","type":"reg","size":5,"size":null,"name":null,"mode":null,"type":null}]}"#,
        );
        assert_eq!((e.name.as_str(), e.size, e.mode), ("a", 5, 0));
        assert_eq!(e.entry_type, EntryType::Reg);
        let t = Toc::from_json(br#"{"version":null,"tarSplitDigest":null}"#).unwrap();
        assert_eq!(t, Toc::default());
    }

    #[test]
    fn duplicate_entries_and_xattrs_merge_like_go() {
        // Go decodes the second array into the existing *TOCEntry values.
        let t = Toc::from_json(
            br#"{"entries":[{"name":"a","type":"reg","size":5},{"name":"z","type":"dir"}],
                 "entries":[{"name":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(t.entries.len(), 1);
        assert_eq!(t.entries[0].name, "b");
        assert_eq!(t.entries[0].size, 5);
        assert_eq!(t.entries[0].entry_type, EntryType::Reg);
        let e = one(
            r#"{"entries":[{"name":"a","type":"reg","xattrs":{"x":"QQ=="},"xattrs":{"y":"Qg==","x":"Qw=="}}]}"#,
        );
        assert_eq!(e.xattrs.len(), 2);
        assert_eq!(e.xattrs["x"], b"C");
        assert_eq!(e.xattrs["y"], b"B");
        let e =
            one(r#"{"entries":[{"name":"a","type":"reg","xattrs":{"x":"QQ=="},"xattrs":null}]}"#);
        assert!(e.xattrs.is_empty());
    }

    #[test]
    fn keys_match_case_insensitively_when_not_exact() {
        let e = one(
            r#"{"Entries":[{"NAME":"a","Type":"dir","LINKNAME":"l","uId":3,"ſize":4,"devmajor":1}]}"#,
        );
        assert_eq!(e.name, "a");
        assert_eq!(e.entry_type, EntryType::Dir);
        assert_eq!(e.link_name, "l");
        assert_eq!(e.uid, 3);
        assert_eq!(e.size, 4);
        assert_eq!(e.dev_major, 1);
        // Kelvin sign folds to k; other non-ASCII does not match anything.
        let t =
            Toc::from_json("{\"version\":2,\"tarsplitdigest\":\"d\",\"ENTRIES\":null}".as_bytes())
                .unwrap();
        assert_eq!((t.version, t.tar_split_digest.as_str()), (2, "d"));
        let e = one(
            "{\"entries\":[{\"name\":\"a\",\"type\":\"reg\",\"chun\u{212A}Size\":9,\"sizé\":1}]}",
        );
        assert_eq!((e.chunk_size, e.size), (9, 0));
    }

    #[test]
    fn floats_and_out_of_range_rejected() {
        for v in [
            "1.5",
            "1.0",
            "1e3",
            "-0.0",
            "-0e0",
            "0.0",
            "9223372036854775808",
            "-9223372036854775809",
            "\"1\"",
            "true",
        ] {
            let json = format!(r#"{{"entries":[{{"name":"a","type":"reg","size":{v}}}]}}"#);
            let e = err(&json);
            assert!(e.contains("entry 0"), "{v}: {e}");
        }
        assert!(Toc::from_json(br#"{"version":1.0}"#).is_err());
        let e = one(
            r#"{"entries":[{"name":"a","type":"reg","size":9223372036854775807,"mode":-0,"uid":-9223372036854775808}]}"#,
        );
        assert_eq!((e.size, e.mode, e.uid), (i64::MAX, 0, i64::MIN));
    }

    #[test]
    fn wrong_json_types_rejected() {
        for bad in [
            r#"{"entries":[{"name":1,"type":"reg"}]}"#,
            r#"{"entries":[{"name":"a","type":1}]}"#,
            r#"{"entries":[{"name":"a","type":"reg","xattrs":[]}]}"#,
            r#"{"entries":[{"name":"a","type":"reg","xattrs":{"a":1}}]}"#,
            r#"{"entries":[[]]}"#,
            r#"{"entries":{}}"#,
            r#"{"tarSplitDigest":1}"#,
        ] {
            assert!(Toc::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_or_missing_type_names_the_entry() {
        let e = Toc::from_json(
            br#"{"entries":[{"name":"ok","type":"dir"},{"type":"Reg","name":"bad\n"}]}"#,
        )
        .unwrap_err();
        match e {
            Error::InvalidEntry {
                index,
                ref name,
                ref reason,
            } => {
                assert_eq!(index, 1);
                assert_eq!(name, "bad\n");
                assert!(reason.contains("\"Reg\""), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let e = Toc::from_json(br#"{"entries":[{"name":"n"}]}"#).unwrap_err();
        assert!(matches!(e, Error::InvalidEntry { index: 0, .. }), "{e}");
        assert!(e.to_string().contains("missing \"type\""), "{e}");
        assert!(Toc::from_json(br#"{"entries":[{"name":"n","type":""}]}"#).is_err());
    }

    #[test]
    fn xattr_base64_go_rules() {
        let e = one(
            r#"{"entries":[{"name":"a","type":"reg","xattrs":{"n":null,"e":"","l":"QU\r\nJD\nRA==","t":"QR==","nul":"AAEA"}}]}"#,
        );
        assert_eq!(e.xattrs["n"], b"");
        assert_eq!(e.xattrs["e"], b"");
        assert_eq!(e.xattrs["l"], b"ABCD");
        assert_eq!(e.xattrs["t"], b"A"); // non-zero trailing bits tolerated, as Go's StdEncoding
        assert_eq!(e.xattrs["nul"], [0, 1, 0]);
        for bad in [
            "QQ", "QQ=", "Q", "QQ==QQ==", "Q Q==", "QQ-_", "!!!!", "QQ===", "A===",
        ] {
            let json =
                format!(r#"{{"entries":[{{"name":"a","type":"reg","xattrs":{{"k":"{bad}"}}}}]}}"#);
            let e = err(&json);
            assert!(e.contains("base64") && e.contains("entry 0"), "{bad}: {e}");
        }
    }

    #[test]
    fn extras_of_containers_storage() {
        let t = Toc::from_json(
            br#"{"version":1,"entries":[{"type":"reg","name":"f","endOffset":99,"chunkType":"zeros","accesstime":"2020-01-01T00:00:00Z","changetime":"x"}],"tarSplitDigest":"sha256:ab"}"#,
        )
        .unwrap();
        let e = &t.entries[0];
        assert_eq!(e.end_offset, 99);
        assert_eq!(e.chunk_type, "zeros");
        assert_eq!(e.access_time, "2020-01-01T00:00:00Z");
        assert_eq!(e.change_time, "x");
        assert_eq!(t.tar_split_digest, "sha256:ab");
        assert_eq!(Toc::from_json(&t.to_json()).unwrap(), t);
    }

    #[test]
    fn invalid_utf8_and_lone_surrogates_become_replacement_chars() {
        let mut json = br#"{"entries":[{"name":"a"#.to_vec();
        json.extend_from_slice(&[0xff, 0xe2, 0x82, b'b']);
        json.extend_from_slice(
            br#"","type":"reg","linkName":"\ud800x\udc00\ud83d\ude00\ud800\u0041"}]}"#,
        );
        let e = one(std::str::from_utf8(&go_fixup(&json).unwrap()).unwrap());
        assert_eq!(e.name, "a\u{fffd}\u{fffd}\u{fffd}b");
        assert_eq!(e.link_name, "\u{fffd}x\u{fffd}😀\u{fffd}A");
        let direct = Toc::from_json(&json).unwrap();
        assert_eq!(direct.entries[0], e);
        // An escaped backslash before "u" is not an escape.
        let t = Toc::from_json(br#"{"entries":[{"name":"\\ud800","type":"dir"}]}"#).unwrap();
        assert_eq!(t.entries[0].name, "\\ud800");
    }

    #[test]
    fn trailing_bytes_after_the_object_are_ignored() {
        // Go's json.Decoder stops after the first value.
        let t = Toc::from_json(b"{\"version\":1} trailing junk").unwrap();
        assert_eq!(t.version, 1);
        let t = Toc::from_json(b"  {\"version\":1}\n").unwrap();
        assert_eq!(t.version, 1);
    }

    #[test]
    fn rfc3339_parsing() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2019-08-20T10:30:43Z", Some(1_566_297_043)),
            ("2000-02-29T00:00:00Z", Some(951_782_400)),
            ("1900-02-29T00:00:00Z", None),
            ("2023-04-31T00:00:00Z", None),
            ("1969-12-31T23:59:59Z", Some(-1)),
            ("1969-12-31T23:59:59.999999999Z", Some(-1)),
            ("1970-01-01T00:00:00,5Z", Some(0)),
            ("1970-01-01T00:00:00.Z", None),
            ("1970-01-01T02:00:00+02:00", Some(0)),
            ("1969-12-31T22:30:00-01:30", Some(0)),
            ("0000-01-01T00:00:00Z", Some(-62_167_219_200)),
            ("0001-01-01T00:00:00Z", Some(-62_135_596_800)),
            ("9999-12-31T23:59:59Z", Some(253_402_300_799)),
            ("2242-03-16T12:56:33Z", Some(8_589_934_593)),
            ("1970-01-01T00:00:60Z", None),
            ("1970-01-01T24:00:00Z", None),
            ("1970-13-01T00:00:00Z", None),
            ("1970-00-01T00:00:00Z", None),
            ("1970-01-00T00:00:00Z", None),
            ("1970-01-01t00:00:00Z", None),
            ("1970-01-01T00:00:00z", None),
            ("1970-01-01T00:00:00", None),
            ("1970-01-01T00:00:00Z ", None),
            ("1970-01-01T00:00:00+0100", None),
            ("1970-01-01T00:00:00+24:00", None),
            ("+970-01-01T00:00:00Z", None),
            ("1970-1-01T00:00:00Z", None),
            ("", None),
            ("garbage", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_rfc3339(input), *want, "{input}");
        }
    }

    #[test]
    fn modtime_formatting() {
        assert_eq!(format_modtime(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_modtime(8_589_934_593), "2242-03-16T12:56:33Z");
        assert_eq!(format_modtime(-62_135_596_800), "0001-01-01T00:00:00Z");
        assert_eq!(format_modtime(-62_135_596_801), "0000-12-31T23:59:59Z");
        assert_eq!(format_modtime(-62_167_219_201), "-0001-12-31T23:59:59Z");
        assert_eq!(format_modtime(253_402_300_800), "10000-01-01T00:00:00Z");
        // Extremes do not panic.
        let _ = format_modtime(i64::MAX);
        let _ = format_modtime(i64::MIN);
        // Day-by-day consistency of the two calendar functions over a wide range.
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // Years 0000..=9999 (the parser's range).
        for secs in (-62_167_219_200i64..253_402_300_800).step_by(999_999_937) {
            assert_eq!(parse_rfc3339(&format_modtime(secs)), Some(secs), "{secs}");
        }
    }
}
