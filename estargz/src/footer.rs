//! Footers: the fixed-size tail of a blob that says where the TOC is.
//!
//! This module owns the byte layouts of every footer of the family (one enum, [`Footer`]): how
//! to recognise one at the end of a blob ([`Footer::parse`]), how to write one
//! ([`Footer::to_bytes`]) and which blob range holds the TOC it points to
//! ([`Footer::toc_range`]). It does not read blobs or decode TOCs.
//!
//! Parsing is strict (exact lengths, magic numbers, lowercase hex, sizes that fit in `i64`) and
//! never slices out of range; writing produces the exact bytes the reference writers produce.
//!
//! | format | bytes | recognised by |
//! |---|---|---|
//! | zstd:chunked (containers/storage) | 72 | skippable frame, 64-byte payload ending `GNUlInUx` |
//! | zstd:chunked (stargz-snapshotter) | 48 | skippable frame, 40-byte payload ending `GnUlInUx` |
//! | eStargz (external TOC) | 46 | empty gzip member, extra `SG` + `STARGZEXTERNALTOC` |
//! | eStargz | 51 | empty gzip member, extra `SG` + 16 hex digits + `STARGZ` |
//! | stargz (legacy) | 47 | empty gzip member, extra = 16 hex digits + `STARGZ` |
//!
//! The formats are tried in that order. Gzip footers end in eight zero bytes and zstd ones in a
//! magic string, so the two families never both match; a 51-byte eStargz footer can be crafted
//! whose last 47 bytes are also a legacy footer (the MTIME bytes are free), and then eStargz wins,
//! as in Go, which tries eStargz first.

use std::ops::Range;

use crate::error::{Error, Result};

/// Every footer this crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footer {
    /// eStargz: a 51-byte empty gzip member whose extra field holds the TOC offset.
    Estargz {
        /// Blob offset of the gzip member holding the TOC tar entry.
        toc_offset: u64,
    },
    /// Legacy stargz (Google CRFS): a 47-byte empty gzip member.
    Legacy {
        /// Blob offset of the gzip member holding the TOC tar entry.
        toc_offset: u64,
    },
    /// eStargz with an external TOC: a 46-byte marker; the TOC lives in another blob.
    ExternalToc,
    /// zstd:chunked as written by stargz-snapshotter: a skippable frame with a 40-byte payload
    /// (48 bytes on disk), magic `GnUlInUx`.
    ZstdChunked {
        /// Blob offset of the compressed TOC frame (after its skippable-frame header).
        toc_offset: u64,
        /// Length of the compressed TOC frame.
        toc_compressed_size: u64,
        /// Length of the TOC JSON.
        toc_uncompressed_size: u64,
    },
    /// zstd:chunked as written by containers/storage: a skippable frame with a 64-byte payload
    /// (72 bytes on disk), magic `GNUlInUx`, followed by tar-split data positions.
    ZstdChunkedCstorage {
        /// Blob offset of the compressed TOC frame (after its skippable-frame header).
        toc_offset: u64,
        /// Length of the compressed TOC frame.
        toc_compressed_size: u64,
        /// Length of the TOC JSON.
        toc_uncompressed_size: u64,
        /// Blob offset of the compressed tar-split frame.
        tar_split_offset: u64,
        /// Length of the compressed tar-split frame.
        tar_split_compressed_size: u64,
        /// Length of the uncompressed tar-split data.
        tar_split_uncompressed_size: u64,
    },
}

/// Magic of a zstd skippable frame (`0x184D2A50`, little-endian).
pub const ZSTD_SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// The last 8 bytes of a stargz-snapshotter zstd:chunked footer.
pub const ZSTD_CHUNKED_MAGIC: &[u8; 8] = b"GnUlInUx";
/// The last 8 bytes of a containers/storage zstd:chunked footer (note the capital `N`).
pub const ZSTD_CHUNKED_CSTORAGE_MAGIC: &[u8; 8] = b"GNUlInUx";
/// The zstd:chunked manifest type stored in the footer (always 1, "CRFS").
pub const ZSTD_CHUNKED_MANIFEST_TYPE: u64 = 1;

/// Gzip header written by Go: ID1 ID2 CM=deflate FLG=FEXTRA MTIME=0 XFL=0 OS=255.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0x00, 0xff];
/// An empty final stored deflate block.
const DEFLATE_TAIL: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];
const STARGZ: &[u8; 6] = b"STARGZ";
const EXTERNAL_TOC: &[u8; 17] = b"STARGZEXTERNALTOC";
const I64_MAX: u64 = i64::MAX as u64;

const NAME_ESTARGZ: &str = "eStargz";
const NAME_LEGACY: &str = "stargz (legacy)";
const NAME_EXTERNAL: &str = "eStargz (external TOC)";
const NAME_ZSTD: &str = "zstd:chunked (stargz-snapshotter)";
const NAME_CSTORAGE: &str = "zstd:chunked (containers/storage)";

type Parser = fn(&[u8]) -> std::result::Result<Footer, String>;

/// The parsers in the order they are tried, with their format name and footer size.
const PARSERS: [(&str, usize, Parser); 5] = [
    (NAME_CSTORAGE, 72, parse_cstorage),
    (NAME_ZSTD, 48, parse_zstd),
    (NAME_EXTERNAL, 46, parse_external),
    (NAME_ESTARGZ, 51, parse_estargz),
    (NAME_LEGACY, 47, parse_legacy),
];

impl Footer {
    /// The largest footer on disk (containers/storage zstd:chunked, 72 bytes). Reading this many
    /// bytes from the end of a blob (or the whole blob if shorter) is enough for [`Footer::parse`].
    pub const MAX_SIZE: usize = 72;

    /// Recognises the footer at the end of `tail` (the last bytes of a blob, at most
    /// [`Footer::MAX_SIZE`] needed). Tries every format; the error lists why each was rejected.
    ///
    /// Only the suffix of `tail` matters: each format looks at its own size's worth of final
    /// bytes. On failure the error is [`Error::NotEstargz`] whose `blob_size` is `tail.len()`
    /// (a caller that knows the blob size should replace it).
    ///
    /// ```
    /// use estargz::footer::Footer;
    ///
    /// let mut blob = vec![0u8; 100];
    /// blob.extend_from_slice(&Footer::Legacy { toc_offset: 100 }.to_bytes());
    /// assert_eq!(Footer::parse(&blob).unwrap(), Footer::Legacy { toc_offset: 100 });
    /// assert!(Footer::parse(&blob[..blob.len() - 1]).is_err());
    /// ```
    pub fn parse(tail: &[u8]) -> Result<Footer> {
        let mut reasons = Vec::with_capacity(PARSERS.len());
        for (name, size, parser) in PARSERS {
            let Some(start) = tail.len().checked_sub(size) else {
                reasons.push(format!(
                    "{name}: needs {size} bytes, only {} available",
                    tail.len()
                ));
                continue;
            };
            match tail.get(start..).map(parser) {
                Some(Ok(footer)) => return Ok(footer),
                Some(Err(reason)) => reasons.push(format!("{name}: {reason}")),
                None => reasons.push(format!("{name}: internal slicing error")),
            }
        }
        Err(Error::NotEstargz {
            blob_size: tail.len() as u64,
            reasons: reasons.join("; "),
        })
    }

    /// The footer's size on disk in bytes.
    pub fn size(&self) -> usize {
        match self {
            Footer::Estargz { .. } => 51,
            Footer::Legacy { .. } => 47,
            Footer::ExternalToc => 46,
            Footer::ZstdChunked { .. } => 48,
            Footer::ZstdChunkedCstorage { .. } => 72,
        }
    }

    /// The format's human-readable name, as used in error messages.
    ///
    /// ```
    /// use estargz::footer::Footer;
    ///
    /// assert_eq!(Footer::ExternalToc.format_name(), "eStargz (external TOC)");
    /// ```
    pub fn format_name(&self) -> &'static str {
        match self {
            Footer::Estargz { .. } => NAME_ESTARGZ,
            Footer::Legacy { .. } => NAME_LEGACY,
            Footer::ExternalToc => NAME_EXTERNAL,
            Footer::ZstdChunked { .. } => NAME_ZSTD,
            Footer::ZstdChunkedCstorage { .. } => NAME_CSTORAGE,
        }
    }

    /// True for the two zstd:chunked footers (the TOC is raw JSON in a zstd frame), false for
    /// the gzip ones (the TOC is a tar entry in a gzip member).
    pub fn is_zstd(&self) -> bool {
        matches!(
            self,
            Footer::ZstdChunked { .. } | Footer::ZstdChunkedCstorage { .. }
        )
    }

    /// The footer's exact bytes, as the reference writers produce them (for the zstd variants
    /// including the 8-byte skippable-frame header).
    ///
    /// Offsets above `i64::MAX` are written as given, but [`Footer::parse`] rejects them.
    ///
    /// ```
    /// use estargz::footer::Footer;
    ///
    /// let b = Footer::Estargz { toc_offset: 0x1a2b3c }.to_bytes();
    /// assert_eq!(&b[16..38], b"00000000001a2b3cSTARGZ");
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        match *self {
            Footer::Estargz { toc_offset } => {
                out.extend_from_slice(&GZIP_HEADER);
                out.extend_from_slice(&26u16.to_le_bytes());
                out.extend_from_slice(b"SG");
                out.extend_from_slice(&22u16.to_le_bytes());
                out.extend_from_slice(format!("{toc_offset:016x}").as_bytes());
                out.extend_from_slice(STARGZ);
                out.extend_from_slice(&DEFLATE_TAIL);
                out.extend_from_slice(&[0; 8]);
            }
            Footer::Legacy { toc_offset } => {
                out.extend_from_slice(&GZIP_HEADER);
                out.extend_from_slice(&22u16.to_le_bytes());
                out.extend_from_slice(format!("{toc_offset:016x}").as_bytes());
                out.extend_from_slice(STARGZ);
                out.extend_from_slice(&DEFLATE_TAIL);
                out.extend_from_slice(&[0; 8]);
            }
            Footer::ExternalToc => {
                out.extend_from_slice(&GZIP_HEADER);
                out.extend_from_slice(&21u16.to_le_bytes());
                out.extend_from_slice(b"SG");
                out.extend_from_slice(&17u16.to_le_bytes());
                out.extend_from_slice(EXTERNAL_TOC);
                out.extend_from_slice(&DEFLATE_TAIL);
                out.extend_from_slice(&[0; 8]);
            }
            Footer::ZstdChunked {
                toc_offset,
                toc_compressed_size,
                toc_uncompressed_size,
            } => {
                out.extend_from_slice(&ZSTD_SKIPPABLE_MAGIC);
                out.extend_from_slice(&40u32.to_le_bytes());
                for v in [
                    toc_offset,
                    toc_compressed_size,
                    toc_uncompressed_size,
                    ZSTD_CHUNKED_MANIFEST_TYPE,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(ZSTD_CHUNKED_MAGIC);
            }
            Footer::ZstdChunkedCstorage {
                toc_offset,
                toc_compressed_size,
                toc_uncompressed_size,
                tar_split_offset,
                tar_split_compressed_size,
                tar_split_uncompressed_size,
            } => {
                out.extend_from_slice(&ZSTD_SKIPPABLE_MAGIC);
                out.extend_from_slice(&64u32.to_le_bytes());
                for v in [
                    toc_offset,
                    toc_compressed_size,
                    toc_uncompressed_size,
                    ZSTD_CHUNKED_MANIFEST_TYPE,
                    tar_split_offset,
                    tar_split_compressed_size,
                    tar_split_uncompressed_size,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(ZSTD_CHUNKED_CSTORAGE_MAGIC);
            }
        }
        out
    }

    /// The byte range of the TOC *as stored* in a blob of `blob_size` bytes that ends with this
    /// footer; `None` for [`Footer::ExternalToc`] (the TOC is in another blob).
    ///
    /// - gzip footers: `[toc_offset, blob_size - footer size)`, the TOC gzip member (which may
    ///   be followed by nothing else before the footer).
    /// - zstd footers: `[toc_offset, toc_offset + compressed size)`, the compressed TOC frame;
    ///   it must end at or before the footer and `toc_offset` must leave room for the TOC's
    ///   8-byte skippable-frame header before it (checking those 8 bytes is the reader's job).
    ///
    /// Errors are [`Error::Footer`] naming the offending values.
    ///
    /// ```
    /// use estargz::footer::Footer;
    ///
    /// let f = Footer::Estargz { toc_offset: 900 };
    /// assert_eq!(f.toc_range(1000).unwrap(), Some(900..949));
    /// assert!(f.toc_range(940).is_err());
    /// ```
    pub fn toc_range(&self, blob_size: u64) -> Result<Option<Range<u64>>> {
        let format = self.format_name();
        let err = |reason: String| Error::Footer { format, reason };
        let size = self.size() as u64;
        let footer_start = blob_size.checked_sub(size).ok_or_else(|| {
            err(format!(
                "blob of {blob_size} bytes is smaller than the {size}-byte footer"
            ))
        })?;
        match *self {
            Footer::ExternalToc => Ok(None),
            Footer::Estargz { toc_offset } | Footer::Legacy { toc_offset } => {
                if toc_offset > footer_start {
                    return Err(err(format!(
                        "TOC offset {toc_offset} is beyond the footer at {footer_start}"
                    )));
                }
                Ok(Some(toc_offset..footer_start))
            }
            Footer::ZstdChunked {
                toc_offset,
                toc_compressed_size,
                ..
            }
            | Footer::ZstdChunkedCstorage {
                toc_offset,
                toc_compressed_size,
                ..
            } => {
                if toc_offset < 8 {
                    return Err(err(format!(
                        "TOC offset {toc_offset} leaves no room for the TOC's 8-byte skippable-frame header"
                    )));
                }
                let end = toc_offset
                    .checked_add(toc_compressed_size)
                    .filter(|&end| end <= footer_start)
                    .ok_or_else(|| {
                        err(format!(
                            "TOC at offset {toc_offset} with compressed size {toc_compressed_size} \
                             extends beyond the footer at {footer_start}"
                        ))
                    })?;
                Ok(Some(toc_offset..end))
            }
        }
    }
}

/// Reads a little-endian u64 at `at`; `None` when out of range.
fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    let bytes: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(bytes))
}

fn short(what: &str) -> String {
    format!("truncated while reading {what}")
}

/// Checks a zstd skippable-frame header with the given payload length and returns the payload.
fn skippable_payload(b: &[u8], payload_len: u32) -> std::result::Result<&[u8], String> {
    let (header, payload) = b.split_at_checked(8).ok_or_else(|| short("header"))?;
    if header.get(..4) != Some(&ZSTD_SKIPPABLE_MAGIC[..]) {
        return Err(format!(
            "no zstd skippable-frame magic 50 2a 4d 18 (found {})",
            hex::encode(header.get(..4).unwrap_or_default())
        ));
    }
    let len = header
        .get(4..8)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| short("frame size"))?;
    if len != payload_len {
        return Err(format!(
            "skippable frame size is {len}, expected {payload_len}"
        ));
    }
    if payload.len() != payload_len as usize {
        return Err(short("payload"));
    }
    Ok(payload)
}

/// Checks the common fields of both zstd:chunked payloads; returns (offset, compressed, raw).
fn zstd_toc_fields(
    p: &[u8],
    magic: &[u8; 8],
    other_magic: &[u8; 8],
) -> std::result::Result<(u64, u64, u64), String> {
    let found = p
        .len()
        .checked_sub(8)
        .and_then(|at| p.get(at..))
        .ok_or_else(|| short("magic"))?;
    if found != magic {
        let hint = if found == other_magic {
            format!(
                " (found {:?}: the other zstd:chunked layout with a wrong frame size?)",
                String::from_utf8_lossy(found)
            )
        } else {
            format!(" (found {})", hex::encode(found))
        };
        return Err(format!(
            "no magic {:?} at the end{hint}",
            String::from_utf8_lossy(magic)
        ));
    }
    let field = |at: usize, what: &str| le_u64(p, at).ok_or_else(|| short(what));
    let toc_offset = field(0, "TOC offset")?;
    let compressed = field(8, "TOC compressed size")?;
    let raw = field(16, "TOC uncompressed size")?;
    let manifest_type = field(24, "manifest type")?;
    if manifest_type != ZSTD_CHUNKED_MANIFEST_TYPE {
        return Err(format!("manifest type is {manifest_type}, expected 1"));
    }
    if toc_offset < 8 {
        return Err(format!(
            "TOC offset {toc_offset} leaves no room for the TOC's skippable-frame header"
        ));
    }
    for (what, v) in [
        ("TOC offset", toc_offset),
        ("TOC compressed size", compressed),
        ("TOC uncompressed size", raw),
    ] {
        if v > I64_MAX {
            return Err(format!(
                "{what} {v} does not fit in a signed 64-bit integer"
            ));
        }
    }
    Ok((toc_offset, compressed, raw))
}

fn parse_zstd(b: &[u8]) -> std::result::Result<Footer, String> {
    let payload = skippable_payload(b, 40)?;
    let (toc_offset, toc_compressed_size, toc_uncompressed_size) =
        zstd_toc_fields(payload, ZSTD_CHUNKED_MAGIC, ZSTD_CHUNKED_CSTORAGE_MAGIC)?;
    Ok(Footer::ZstdChunked {
        toc_offset,
        toc_compressed_size,
        toc_uncompressed_size,
    })
}

fn parse_cstorage(b: &[u8]) -> std::result::Result<Footer, String> {
    let payload = skippable_payload(b, 64)?;
    let (toc_offset, toc_compressed_size, toc_uncompressed_size) =
        zstd_toc_fields(payload, ZSTD_CHUNKED_CSTORAGE_MAGIC, ZSTD_CHUNKED_MAGIC)?;
    let field = |at: usize, what: &str| le_u64(payload, at).ok_or_else(|| short(what));
    let tar_split_offset = field(32, "tar-split offset")?;
    let tar_split_compressed_size = field(40, "tar-split compressed size")?;
    let tar_split_uncompressed_size = field(48, "tar-split uncompressed size")?;
    for (what, v) in [
        ("tar-split offset", tar_split_offset),
        ("tar-split compressed size", tar_split_compressed_size),
        ("tar-split uncompressed size", tar_split_uncompressed_size),
    ] {
        if v > I64_MAX {
            return Err(format!(
                "{what} {v} does not fit in a signed 64-bit integer"
            ));
        }
    }
    let no_tar_split =
        tar_split_offset == 0 && tar_split_compressed_size == 0 && tar_split_uncompressed_size == 0;
    if !no_tar_split && tar_split_offset < 8 {
        return Err(format!(
            "tar-split offset {tar_split_offset} leaves no room for its skippable-frame header"
        ));
    }
    Ok(Footer::ZstdChunkedCstorage {
        toc_offset,
        toc_compressed_size,
        toc_uncompressed_size,
        tar_split_offset,
        tar_split_compressed_size,
        tar_split_uncompressed_size,
    })
}

/// Checks the gzip header, `XLEN == xlen`, the empty deflate block and the zero trailer of an
/// empty gzip member that is exactly `b.len()` bytes long; returns the extra field.
fn gzip_extra(b: &[u8], xlen: u16) -> std::result::Result<&[u8], String> {
    let header = b.get(..10).ok_or_else(|| short("gzip header"))?;
    if header.get(..2) != Some(&[0x1f, 0x8b][..]) {
        return Err(format!(
            "no gzip magic 1f 8b (found {})",
            hex::encode(header.get(..2).unwrap_or_default())
        ));
    }
    if header.get(2) != Some(&0x08) {
        return Err(format!(
            "gzip compression method is {:#04x}, expected 0x08 (deflate)",
            header.get(2).copied().unwrap_or_default()
        ));
    }
    // MTIME, XFL and OS are free. FEXTRA is required; FTEXT is harmless; FNAME, FCOMMENT and
    // FHCRC would move the fields below, and the reserved bits must be zero (RFC 1952).
    let flg = header.get(3).copied().unwrap_or_default();
    if flg & !0x01 != 0x04 {
        return Err(format!(
            "gzip flags are {flg:#04x}, expected FEXTRA (0x04) and no name, comment, header CRC or reserved bits"
        ));
    }
    let found_xlen = le_u16(b, 10).ok_or_else(|| short("XLEN"))?;
    if found_xlen != xlen {
        return Err(format!(
            "gzip extra field length is {found_xlen}, expected {xlen}"
        ));
    }
    let extra_end = 12 + usize::from(xlen);
    let extra = b.get(12..extra_end).ok_or_else(|| short("extra field"))?;
    let rest = b.get(extra_end..).unwrap_or_default();
    let (deflate, trailer) = rest
        .split_at_checked(5)
        .ok_or_else(|| short("deflate block"))?;
    if deflate != DEFLATE_TAIL {
        return Err(format!(
            "body is not an empty stored deflate block 01 00 00 ff ff (found {})",
            hex::encode(deflate)
        ));
    }
    if trailer != [0u8; 8] {
        return Err(format!(
            "gzip trailer (CRC32, ISIZE) is not 8 zero bytes (found {})",
            hex::encode(trailer)
        ));
    }
    Ok(extra)
}

/// Checks an RFC 1952 subfield `SG` with the given length; returns its data.
fn sg_subfield(extra: &[u8], len: u16) -> std::result::Result<&[u8], String> {
    let (id, rest) = extra
        .split_at_checked(2)
        .ok_or_else(|| short("subfield ID"))?;
    if id != b"SG" {
        return Err(format!(
            "extra subfield ID is {}, expected 53 47 (\"SG\")",
            hex::encode(id)
        ));
    }
    let found = le_u16(rest, 0).ok_or_else(|| short("subfield length"))?;
    if found != len {
        return Err(format!("subfield length is {found}, expected {len}"));
    }
    let data = rest.get(2..).unwrap_or_default();
    if data.len() != usize::from(len) {
        return Err(short("subfield data"));
    }
    Ok(data)
}

/// Parses 16 lowercase hex digits followed by `STARGZ` into an offset that fits in `i64`.
fn hex_offset_stargz(field: &[u8]) -> std::result::Result<u64, String> {
    let (digits, magic) = field
        .split_at_checked(16)
        .ok_or_else(|| short("TOC offset"))?;
    if magic != STARGZ {
        return Err(format!(
            "no \"STARGZ\" after the TOC offset (found {:?})",
            String::from_utf8_lossy(magic)
        ));
    }
    let mut v: u64 = 0;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => {
                return Err(format!(
                    "TOC offset {:?} is not 16 lowercase hex digits",
                    String::from_utf8_lossy(digits)
                ))
            }
        };
        v = (v << 4) | u64::from(nibble);
    }
    if v > I64_MAX {
        return Err(format!(
            "TOC offset {v:#x} does not fit in a signed 64-bit integer"
        ));
    }
    Ok(v)
}

fn parse_estargz(b: &[u8]) -> std::result::Result<Footer, String> {
    let extra = gzip_extra(b, 26)?;
    let data = sg_subfield(extra, 22)?;
    let toc_offset = hex_offset_stargz(data)?;
    Ok(Footer::Estargz { toc_offset })
}

fn parse_legacy(b: &[u8]) -> std::result::Result<Footer, String> {
    let extra = gzip_extra(b, 22)?;
    let toc_offset = hex_offset_stargz(extra)?;
    Ok(Footer::Legacy { toc_offset })
}

fn parse_external(b: &[u8]) -> std::result::Result<Footer, String> {
    let extra = gzip_extra(b, 21)?;
    let data = sg_subfield(extra, 17)?;
    if data != EXTERNAL_TOC {
        return Err(format!(
            "subfield is {:?}, expected \"STARGZEXTERNALTOC\"",
            String::from_utf8_lossy(data)
        ));
    }
    Ok(Footer::ExternalToc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    const SPEC_ESTARGZ: &str = "1f 8b 08 04 00 00 00 00 00 ff 1a 00 53 47 16 00
        30 30 30 30 30 30 30 30 30 30 31 61 32 62 33 63
        53 54 41 52 47 5a 01 00 00 ff ff 00 00 00 00 00
        00 00 00";
    const SPEC_LEGACY: &str = "1f 8b 08 04 00 00 00 00 00 ff 16 00 30 30 30 30
        30 30 30 30 30 30 31 61 32 62 33 63 53 54 41 52
        47 5a 01 00 00 ff ff 00 00 00 00 00 00 00 00";
    const SPEC_EXTERNAL: &str = "1f 8b 08 04 00 00 00 00 00 ff 15 00 53 47 11 00
        53 54 41 52 47 5a 45 58 54 45 52 4e 41 4c 54 4f
        43 01 00 00 ff ff 00 00 00 00 00 00 00 00";
    const SPEC_ZSTD: &str = "50 2a 4d 18 28 00 00 00 34 12 00 00 00 00 00 00
        00 03 00 00 00 00 00 00 00 08 00 00 00 00 00 00
        01 00 00 00 00 00 00 00 47 6e 55 6c 49 6e 55 78";

    fn all_variants() -> Vec<Footer> {
        vec![
            Footer::Estargz { toc_offset: 0 },
            Footer::Estargz {
                toc_offset: 0x1a2b3c,
            },
            Footer::Estargz {
                toc_offset: i64::MAX as u64,
            },
            Footer::Legacy { toc_offset: 0 },
            Footer::Legacy {
                toc_offset: 0x1a2b3c,
            },
            Footer::ExternalToc,
            Footer::ZstdChunked {
                toc_offset: 0x1234,
                toc_compressed_size: 0x300,
                toc_uncompressed_size: 0x800,
            },
            Footer::ZstdChunkedCstorage {
                toc_offset: 8,
                toc_compressed_size: 1,
                toc_uncompressed_size: 2,
                tar_split_offset: 17,
                tar_split_compressed_size: 3,
                tar_split_uncompressed_size: 4,
            },
            Footer::ZstdChunkedCstorage {
                toc_offset: 100,
                toc_compressed_size: 1,
                toc_uncompressed_size: 2,
                tar_split_offset: 0,
                tar_split_compressed_size: 0,
                tar_split_uncompressed_size: 0,
            },
        ]
    }

    #[test]
    fn spec_examples_byte_exact() {
        let cases = [
            (
                SPEC_ESTARGZ,
                Footer::Estargz {
                    toc_offset: 0x1a2b3c,
                },
            ),
            (
                SPEC_LEGACY,
                Footer::Legacy {
                    toc_offset: 0x1a2b3c,
                },
            ),
            (SPEC_EXTERNAL, Footer::ExternalToc),
            (
                SPEC_ZSTD,
                Footer::ZstdChunked {
                    toc_offset: 0x1234,
                    toc_compressed_size: 0x300,
                    toc_uncompressed_size: 0x800,
                },
            ),
        ];
        for (hex, footer) in cases {
            let bytes = unhex(hex);
            assert_eq!(footer.to_bytes(), bytes, "{footer:?}");
            assert_eq!(Footer::parse(&bytes).unwrap(), footer);
            assert_eq!(bytes.len(), footer.size());
        }
    }

    #[test]
    fn cstorage_layout() {
        let f = Footer::ZstdChunkedCstorage {
            toc_offset: 0x0102,
            toc_compressed_size: 0x0304,
            toc_uncompressed_size: 0x0506,
            tar_split_offset: 0x0708,
            tar_split_compressed_size: 0x090a,
            tar_split_uncompressed_size: 0x0b0c,
        };
        let b = f.to_bytes();
        assert_eq!(b.len(), 72);
        assert_eq!(&b[..8], &[0x50, 0x2a, 0x4d, 0x18, 0x40, 0, 0, 0]);
        assert_eq!(&b[8..10], &[0x02, 0x01]);
        assert_eq!(&b[32..40], &1u64.to_le_bytes());
        assert_eq!(&b[40..42], &[0x08, 0x07]);
        assert_eq!(&b[64..], b"GNUlInUx");
        assert_eq!(Footer::parse(&b).unwrap(), f);
    }

    #[test]
    fn round_trip_every_variant_with_prefix() {
        for f in all_variants() {
            let b = f.to_bytes();
            assert_eq!(b.len(), f.size());
            assert_eq!(Footer::parse(&b).unwrap(), f, "{f:?}");
            for prefix_len in [1, 5, 30, 100] {
                let mut blob = vec![0xaa; prefix_len];
                blob.extend_from_slice(&b);
                assert_eq!(Footer::parse(&blob).unwrap(), f, "{f:?} after {prefix_len}");
            }
        }
    }

    #[test]
    fn format_names() {
        let names: Vec<_> = all_variants().iter().map(Footer::format_name).collect();
        for n in [
            "eStargz",
            "stargz (legacy)",
            "eStargz (external TOC)",
            "zstd:chunked (stargz-snapshotter)",
            "zstd:chunked (containers/storage)",
        ] {
            assert!(names.contains(&n), "{n}");
        }
    }

    #[test]
    fn every_truncation_rejected() {
        for f in all_variants() {
            let b = f.to_bytes();
            for n in 0..b.len() {
                // Dropping the last bytes changes the suffix; it must never parse.
                assert!(Footer::parse(&b[..n]).is_err(), "{f:?} cut to {n}");
            }
        }
        for n in 0..=Footer::MAX_SIZE {
            let e = Footer::parse(&vec![0u8; n]).unwrap_err();
            assert!(matches!(e, Error::NotEstargz { .. }), "{e}");
        }
    }

    #[test]
    fn error_lists_every_format() {
        let e = Footer::parse(b"hello").unwrap_err().to_string();
        for name in [
            NAME_CSTORAGE,
            NAME_ZSTD,
            NAME_EXTERNAL,
            NAME_ESTARGZ,
            NAME_LEGACY,
        ] {
            assert!(e.contains(&format!("{name}: needs")), "{e}");
        }
        assert_eq!(e.matches("; ").count(), 4, "{e}");
    }

    #[test]
    fn hex_field_rules() {
        let base = unhex(SPEC_ESTARGZ);
        let mut upper = base.clone();
        upper[16 + 11] = b'A'; // "00000000001a2b3c" -> "00000000001A2b3c"
        assert!(Footer::parse(&upper).is_err());
        for sign in [b'+', b'-', b' '] {
            let mut b = base.clone();
            b[16] = sign;
            assert!(Footer::parse(&b).is_err(), "{}", sign as char);
        }
        // Largest accepted / smallest rejected.
        let mut b = base.clone();
        b[16..32].copy_from_slice(b"7fffffffffffffff");
        assert_eq!(
            Footer::parse(&b).unwrap(),
            Footer::Estargz {
                toc_offset: i64::MAX as u64
            }
        );
        b[16..32].copy_from_slice(b"8000000000000000");
        assert!(Footer::parse(&b).is_err());
        let mut l = unhex(SPEC_LEGACY);
        l[12..28].copy_from_slice(b"ffffffffffffffff");
        assert!(Footer::parse(&l).is_err());
    }

    #[test]
    fn gzip_header_fields() {
        let base = unhex(SPEC_ESTARGZ);
        // MTIME, XFL, OS are free.
        let mut b = base.clone();
        b[4..10].copy_from_slice(&[1, 2, 3, 4, 2, 3]);
        assert!(Footer::parse(&b).is_ok());
        // FTEXT is tolerated.
        b[3] = 0x05;
        assert!(Footer::parse(&b).is_ok());
        for flg in [0x00, 0x0c, 0x14, 0x06, 0x24, 0x84, 0x08] {
            let mut b = base.clone();
            b[3] = flg;
            assert!(Footer::parse(&b).is_err(), "{flg:#x}");
        }
    }

    #[test]
    fn crafted_estargz_legacy_overlap_prefers_estargz() {
        // MTIME of the 51-byte footer spells a gzip header whose XLEN is the SG LEN (22).
        let mut b = unhex(SPEC_ESTARGZ);
        b[4..8].copy_from_slice(&[0x1f, 0x8b, 0x08, 0x04]);
        assert_eq!(
            Footer::parse(&b).unwrap(),
            Footer::Estargz {
                toc_offset: 0x1a2b3c
            }
        );
        assert_eq!(
            Footer::parse(&b[4..]).unwrap(),
            Footer::Legacy {
                toc_offset: 0x1a2b3c
            }
        );
    }

    #[test]
    fn short_sg_extras_error_instead_of_panicking() {
        // Go panics when the extra passes SG/LEN=22 but is 4..19 bytes long. In a fixed 51-byte
        // layout XLEN must be 26, so such extras fail on XLEN; build them anyway at every length.
        for xlen in 0u16..=25 {
            let mut b = Vec::new();
            b.extend_from_slice(&GZIP_HEADER);
            b.extend_from_slice(&xlen.to_le_bytes());
            let mut extra = b"SG\x16\x00".to_vec();
            extra.extend_from_slice(b"00000000001a2b3cSTARGZ");
            extra.truncate(usize::from(xlen));
            b.extend_from_slice(&extra);
            b.extend_from_slice(&DEFLATE_TAIL);
            b.extend_from_slice(&[0; 8]);
            let r = Footer::parse(&b);
            assert!(r.is_err(), "xlen {xlen}: {r:?}");
        }
        // External footer with an empty extra (Go panics).
        let mut b = GZIP_HEADER.to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&DEFLATE_TAIL);
        b.extend_from_slice(&[0; 8]);
        assert!(Footer::parse(&b).is_err());
    }

    #[test]
    fn zstd_field_rules() {
        let base = unhex(SPEC_ZSTD);
        for toc_offset in [0u64, 7] {
            let mut b = base.clone();
            b[8..16].copy_from_slice(&toc_offset.to_le_bytes());
            assert!(Footer::parse(&b).is_err());
        }
        let mut b = base.clone();
        b[32..40].copy_from_slice(&2u64.to_le_bytes());
        assert!(Footer::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("manifest type is 2"));
        let mut b = base.clone();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Footer::parse(&b).is_err());
        // Without the skippable header (Go does not check it) we reject.
        let mut b = base.clone();
        b[0] = 0;
        assert!(Footer::parse(&b).is_err());
        // The capital-N magic in a 40-byte frame is not accepted as either layout.
        let mut b = base.clone();
        b[41] = b'N';
        let e = Footer::parse(&b).unwrap_err().to_string();
        assert!(e.contains("other zstd:chunked layout"), "{e}");
        // cstorage with a tar-split offset < 8 but non-empty tar-split.
        let mut c = all_variants()[7].to_bytes();
        c[40..48].copy_from_slice(&3u64.to_le_bytes());
        assert!(Footer::parse(&c).is_err());
    }

    #[test]
    fn every_single_byte_change_in_fixed_fields_rejected() {
        // (footer, byte ranges that are fixed: magic, lengths, hex digits, tails)
        let cases: Vec<(Vec<u8>, Vec<Range<usize>>)> = vec![
            (unhex(SPEC_ESTARGZ), vec![0..3, 10..16, 32..51]),
            (unhex(SPEC_LEGACY), vec![0..3, 10..12, 28..47]),
            (unhex(SPEC_EXTERNAL), vec![0..3, 10..46]),
            (unhex(SPEC_ZSTD), vec![0..8, 32..48]),
            (all_variants()[7].to_bytes(), vec![0..8, 32..40, 64..72]),
        ];
        for (bytes, ranges) in cases {
            let original = Footer::parse(&bytes).unwrap();
            for r in ranges {
                for i in r {
                    for v in 0..=255u8 {
                        if v == bytes[i] {
                            continue;
                        }
                        let mut b = bytes.clone();
                        b[i] = v;
                        assert!(
                            Footer::parse(&b).is_err(),
                            "{original:?}: byte {i} = {v:#04x} accepted"
                        );
                    }
                }
            }
        }
        // Hex digits: any non-lowercase-hex byte is rejected; any lowercase hex digit is fine.
        let base = unhex(SPEC_ESTARGZ);
        for i in 16..32 {
            for v in 0..=255u8 {
                let mut b = base.clone();
                b[i] = v;
                let ok = if i == 16 {
                    (b'0'..=b'7').contains(&v) // the top bit would exceed i64::MAX
                } else {
                    v.is_ascii_digit() || (b'a'..=b'f').contains(&v)
                };
                assert_eq!(Footer::parse(&b).is_ok(), ok, "byte {i} = {v:#04x}");
            }
        }
    }

    #[test]
    fn toc_ranges() {
        let f = Footer::Estargz { toc_offset: 100 };
        assert_eq!(f.toc_range(151).unwrap(), Some(100..100));
        assert_eq!(f.toc_range(1000).unwrap(), Some(100..949));
        let e = f.toc_range(150).unwrap_err().to_string();
        assert!(
            e.contains("TOC offset 100 is beyond the footer at 99"),
            "{e}"
        );
        assert!(f.toc_range(10).is_err());
        let l = Footer::Legacy { toc_offset: 0 };
        assert_eq!(l.toc_range(47).unwrap(), Some(0..0));
        assert_eq!(Footer::ExternalToc.toc_range(46).unwrap(), None);
        assert!(Footer::ExternalToc.toc_range(45).is_err());
        let z = Footer::ZstdChunked {
            toc_offset: 8,
            toc_compressed_size: 10,
            toc_uncompressed_size: 20,
        };
        assert_eq!(z.toc_range(18 + 48).unwrap(), Some(8..18));
        assert!(z.toc_range(17 + 48).is_err());
        let z0 = Footer::ZstdChunked {
            toc_offset: 7,
            toc_compressed_size: 1,
            toc_uncompressed_size: 1,
        };
        assert!(z0.toc_range(1000).is_err());
        let zmax = Footer::ZstdChunkedCstorage {
            toc_offset: u64::MAX,
            toc_compressed_size: u64::MAX,
            toc_uncompressed_size: 0,
            tar_split_offset: 0,
            tar_split_compressed_size: 0,
            tar_split_uncompressed_size: 0,
        };
        assert!(zmax.toc_range(u64::MAX).is_err());
        let c = all_variants()[7];
        assert_eq!(c.toc_range(9 + 72).unwrap(), Some(8..9));
    }
}
