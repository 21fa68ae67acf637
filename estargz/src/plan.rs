//! The sans-I/O core of reading: which blob bytes are needed, and what to do with them.
//!
//! Nothing here reads from anywhere. A reader (the sync [`crate::Reader`], or the async one in
//! `estargz-io`) asks these functions which byte ranges to fetch, fetches them however it
//! likes, and hands the bytes back:
//!
//! 1. [`tail_range`] → fetch → [`TocLocation::from_tail`]: which footer, where the TOC is;
//! 2. fetch [`TocLocation::toc_range`] (or take the external TOC blob) → [`decode_toc`]:
//!    the TOC JSON and its digest, within size limits;
//! 3. [`TocLocation::build_index`]: the [`Index`];
//! 4. [`ReadPlan::new`] for file bytes `[a, b)` → fetch [`ReadPlan::blob_ranges`] →
//!    [`decode_chunk`] for each chunk → [`ReadPlan::copy_out`].
//!
//! [`decode_chunk`] is the only way to turn compressed bytes into a [`VerifiedChunk`], and it
//! checks the chunk digest before returning, so no unverified byte reaches a caller unless
//! verification was explicitly turned off.

use std::io::{self, Read};
use std::ops::Range;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::footer::Footer;
use crate::index::{Chunk, Index, IndexOptions, NodeId};
use crate::toc::Toc;

/// Limits and policies for opening a blob. The defaults are far above real images and protect
/// against hostile ones.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Maximum size of the TOC as stored in the blob (compressed).
    pub max_toc_compressed_size: u64,
    /// Maximum size of the TOC JSON (decompression stops here).
    pub max_toc_size: u64,
    /// Maximum number of TOC entries.
    pub max_entries: usize,
    /// Maximum uncompressed size of one chunk.
    pub max_chunk_size: u64,
    /// When set, the TOC must hash to this digest (the layer's
    /// `containerd.io/snapshot/stargz/toc.digest` annotation).
    pub expected_toc_digest: Option<Digest>,
    /// Verify every chunk against its digest before returning bytes (default `true`). Turning
    /// this off is only meant for legacy stargz blobs, which have no chunk digests.
    pub verify_chunks: bool,
    /// The TOC blob for a layer whose footer says the TOC is external: `gzip(tar(stargz.index.json))`.
    pub external_toc: Option<Vec<u8>>,
    /// Keep the index's chunk digests in an unlinked file in this directory instead of memory
    /// ([`Index::spill_chunk_digests`]): for processes holding many large indexes. If the
    /// file cannot be written the digests stay in memory.
    pub digest_dir: Option<std::path::PathBuf>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            max_toc_compressed_size: 150 << 20,
            max_toc_size: 150 << 20,
            max_entries: 10_000_000,
            max_chunk_size: 256 << 20,
            expected_toc_digest: None,
            verify_chunks: true,
            external_toc: None,
            digest_dir: None,
        }
    }
}

/// How the payload of a blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip members (eStargz, legacy stargz, external TOC).
    Gzip,
    /// zstd frames (zstd:chunked).
    Zstd,
}

/// The range to fetch first: the last `want` bytes of the blob (at least the largest footer),
/// clamped to the blob. Fetching more than the footer can bring a small TOC in the same request.
///
/// ```
/// use estargz::plan::tail_range;
/// assert_eq!(tail_range(1000, 0), 928..1000);
/// assert_eq!(tail_range(10, 0), 0..10);
/// ```
pub fn tail_range(blob_size: u64, want: u64) -> Range<u64> {
    let want = want.max(Footer::MAX_SIZE as u64);
    blob_size.saturating_sub(want)..blob_size
}

/// Where a blob's TOC is, from its footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocLocation {
    /// The footer found at the end of the blob.
    pub footer: Footer,
    /// Size of the blob.
    pub blob_size: u64,
    /// The TOC's bytes as stored in the blob; `None` when the TOC is external.
    pub toc_range: Option<Range<u64>>,
    /// End of the payload (file data) region: nothing a TOC entry points to may start here or
    /// later.
    pub payload_end: u64,
}

impl TocLocation {
    /// Recognises the footer in `tail`, the last `tail.len()` bytes of a blob of `blob_size`
    /// bytes, and checks that the TOC range it gives fits in the blob.
    pub fn from_tail(blob_size: u64, tail: &[u8]) -> Result<TocLocation> {
        if tail.len() as u64 > blob_size {
            return Err(Error::InvalidArgument(format!(
                "tail of {} bytes is longer than the blob ({blob_size} bytes)",
                tail.len()
            )));
        }
        let footer = Footer::parse(tail).map_err(|e| match e {
            Error::NotEstargz { reasons, .. } => Error::NotEstargz { blob_size, reasons },
            other => other,
        })?;
        let toc_range = footer.toc_range(blob_size)?;
        let footer_start = blob_size - footer.size() as u64;
        let payload_end = match (&footer, &toc_range) {
            (Footer::ExternalToc, _) | (_, None) => footer_start,
            // zstd: the TOC frame is preceded by its 8-byte skippable-frame header.
            (Footer::ZstdChunked { .. } | Footer::ZstdChunkedCstorage { .. }, Some(r)) => {
                r.start.saturating_sub(8)
            }
            (_, Some(r)) => r.start,
        };
        Ok(TocLocation {
            footer,
            blob_size,
            toc_range,
            payload_end,
        })
    }

    /// How the payload is compressed.
    pub fn compression(&self) -> Compression {
        match self.footer {
            Footer::ZstdChunked { .. } | Footer::ZstdChunkedCstorage { .. } => Compression::Zstd,
            _ => Compression::Gzip,
        }
    }

    /// Parses the TOC JSON and builds the index, with the limits of `opts`.
    pub fn build_index(&self, toc_json: &[u8], opts: &OpenOptions) -> Result<Index> {
        let toc = Toc::from_json(toc_json)?;
        let mut index = Index::with_options(
            &toc,
            &IndexOptions {
                max_entries: opts.max_entries,
                max_chunk_size: opts.max_chunk_size,
                payload_end: self.payload_end,
            },
        )?;
        if let Some(dir) = &opts.digest_dir {
            // A full disk or a read-only directory costs memory, not the layer.
            let _ = index.spill_chunk_digests(dir);
        }
        Ok(index)
    }
}

/// The decoded TOC: its JSON bytes and their digest.
#[derive(Clone, Debug)]
pub struct DecodedToc {
    /// The uncompressed TOC JSON.
    pub json: Vec<u8>,
    /// `sha256` of `json`: the TOC digest.
    pub digest: Digest,
}

/// Decodes a TOC: `stored` is the blob's [`TocLocation::toc_range`] bytes, or the external TOC
/// blob when the footer is [`Footer::ExternalToc`]. Checks the size limits while decompressing
/// and, when `opts.expected_toc_digest` is set, the digest.
pub fn decode_toc(location: &TocLocation, stored: &[u8], opts: &OpenOptions) -> Result<DecodedToc> {
    if stored.len() as u64 > opts.max_toc_compressed_size {
        return Err(Error::TocTooLarge {
            what: "compressed",
            size: stored.len() as u64,
            limit: opts.max_toc_compressed_size,
        });
    }
    let json = match location.footer {
        Footer::ZstdChunked {
            toc_uncompressed_size,
            ..
        }
        | Footer::ZstdChunkedCstorage {
            toc_uncompressed_size,
            ..
        } => {
            if toc_uncompressed_size > opts.max_toc_size {
                return Err(Error::TocTooLarge {
                    what: "uncompressed",
                    size: toc_uncompressed_size,
                    limit: opts.max_toc_size,
                });
            }
            let dec = zstd::stream::read::Decoder::with_buffer(stored)
                .map_err(|e| Error::Toc(format!("cannot start zstd decoding of the TOC: {e}")))?;
            let json = read_limited(dec, opts.max_toc_size, "zstd TOC")?;
            if json.len() as u64 != toc_uncompressed_size {
                return Err(Error::Toc(format!(
                    "the TOC decompresses to {} bytes but the footer says {toc_uncompressed_size}",
                    json.len()
                )));
            }
            json
        }
        _ => decode_gzip_toc(stored, opts.max_toc_size)?,
    };
    let digest = Digest::of(&json);
    if let Some(want) = opts.expected_toc_digest {
        if want != digest {
            return Err(Error::TocDigestMismatch {
                expected: want.to_string(),
                actual: digest.to_string(),
            });
        }
    }
    Ok(DecodedToc { json, digest })
}

fn read_limited(r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::Toc(format!("cannot decompress the {what}: {e}")))?;
    if out.len() as u64 > limit {
        return Err(Error::TocTooLarge {
            what: "uncompressed",
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

/// The TOC tar entry's name.
pub const TOC_TAR_NAME: &str = "stargz.index.json";

/// Decodes `gzip(tar header "stargz.index.json" + JSON + ...)` and returns the JSON.
fn decode_gzip_toc(stored: &[u8], limit: u64) -> Result<Vec<u8>> {
    // Single-member mode: the TOC member ends before the footer.
    let mut dec = flate2::read::GzDecoder::new(stored);
    let mut header = [0u8; 512];
    dec.read_exact(&mut header)
        .map_err(|e| Error::Toc(format!("cannot read the TOC's tar header: {e}")))?;
    let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let name = &header[..name_end];
    if name != TOC_TAR_NAME.as_bytes() || header[345] != 0 {
        return Err(Error::Toc(format!(
            "the first tar entry of the TOC member is {:?}, not {TOC_TAR_NAME:?}",
            String::from_utf8_lossy(name)
        )));
    }
    if !matches!(header[156], b'0' | 0) {
        return Err(Error::Toc(format!(
            "the {TOC_TAR_NAME} tar entry has type {:?}, not a regular file",
            header[156] as char
        )));
    }
    let stored_sum = parse_tar_number(&header[148..156])
        .ok_or_else(|| Error::Toc("the TOC's tar header has an unreadable checksum".into()))?;
    let sum: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if sum != stored_sum {
        return Err(Error::Toc(format!(
            "the TOC's tar header checksum is {stored_sum}, but the header sums to {sum}"
        )));
    }
    let size = parse_tar_number(&header[124..136])
        .ok_or_else(|| Error::Toc("the TOC's tar header has an unreadable size".into()))?;
    if size > limit {
        return Err(Error::TocTooLarge {
            what: "uncompressed",
            size,
            limit,
        });
    }
    // The entry is followed by tar padding and the end-of-archive blocks: read `size` bytes.
    let mut json = Vec::with_capacity(size.min(16 << 20) as usize);
    (&mut dec)
        .take(size)
        .read_to_end(&mut json)
        .map_err(|e| Error::Toc(format!("cannot decompress the gzip TOC: {e}")))?;
    if (json.len() as u64) < size {
        return Err(Error::Toc(format!(
            "the TOC's tar entry says {size} bytes, but the member holds only {}",
            json.len()
        )));
    }
    Ok(json)
}

/// Parses a tar numeric field: octal ASCII (NUL/space padded) or base-256.
fn parse_tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // base-256, positive only
        if field[0] & 0x40 != 0 {
            return None;
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ');
    let mut v: u64 = 0;
    let mut any = false;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

/// A chunk's bytes after its digest matched (or with verification explicitly off).
///
/// The only constructor is [`decode_chunk`]: holding one of these means the bytes were checked.
#[derive(Clone, Debug)]
pub struct VerifiedChunk {
    chunk: Chunk,
    data: Vec<u8>,
    /// The digest the bytes matched; `None` when verification was off.
    digest: Option<Digest>,
}

impl VerifiedChunk {
    /// The digest the bytes matched (`None` when verification was turned off).
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// The chunk these bytes belong to.
    pub fn chunk(&self) -> &Chunk {
        &self.chunk
    }

    /// The chunk's uncompressed bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the chunk, returning its bytes.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// False only when verification was turned off (legacy blobs).
    pub fn is_verified(&self) -> bool {
        self.digest.is_some()
    }
}

/// Whether [`decode_chunk`] checks digests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Check the chunk digest; a chunk without one is an error.
    Digest,
    /// Do not check (legacy stargz blobs without digests). Never the default.
    Skip,
}

/// Decodes one chunk from `compressed`, which holds blob bytes starting at
/// `chunk.blob_offset()` (typically the whole [`Chunk::blob_range`]), and checks it against
/// `digest`, the chunk's digest from its index ([`Index::chunk_digest`](crate::Index::chunk_digest)).
/// `path` only names the file in errors.
pub fn decode_chunk(
    path: &str,
    chunk: &Chunk,
    digest: Option<Digest>,
    compression: Compression,
    compressed: &[u8],
    verify: Verify,
) -> Result<VerifiedChunk> {
    let size = usize::try_from(chunk.size())
        .map_err(|_| Error::InvalidArgument(format!("chunk of {} bytes", chunk.size())))?;
    let data = if chunk.is_zeros() {
        vec![0u8; size]
    } else {
        let err = |reason: String| Error::Decompress {
            path: path.to_owned(),
            chunk_offset: chunk.file_offset(),
            blob_offset: chunk.blob_offset(),
            reason,
        };
        let result = match compression {
            Compression::Gzip => {
                extract(flate2::read::MultiGzDecoder::new(compressed), chunk, size)
            }
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(compressed) {
                Ok(d) => extract(d, chunk, size),
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| err(e.to_string()))?
    };
    let verified = match verify {
        Verify::Skip => None,
        Verify::Digest => {
            let Some(want) = digest else {
                return Err(Error::MissingDigest {
                    path: path.to_owned(),
                    chunk_offset: chunk.file_offset(),
                });
            };
            let mut h = Hasher::new();
            h.update(&data);
            let got = h.finish();
            if got != want {
                return Err(Error::ChunkDigestMismatch {
                    path: path.to_owned(),
                    chunk_offset: chunk.file_offset(),
                    chunk_size: chunk.size(),
                    blob_offset: chunk.blob_offset(),
                    expected: want.to_string(),
                    actual: got.to_string(),
                });
            }
            Some(got)
        }
    };
    Ok(VerifiedChunk {
        chunk: *chunk,
        data,
        digest: verified,
    })
}

fn extract(mut r: impl Read, chunk: &Chunk, size: usize) -> io::Result<Vec<u8>> {
    let skipped = io::copy(&mut (&mut r).take(chunk.inner_offset()), &mut io::sink())?;
    if skipped != chunk.inner_offset() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "stream ended after {skipped} of the {} bytes before the chunk",
                chunk.inner_offset()
            ),
        ));
    }
    // Grow with the data actually produced, never by the declared size alone.
    let mut data = Vec::with_capacity(size.min(4 << 20));
    r.take(size as u64).read_to_end(&mut data)?;
    if data.len() != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "stream ended after {} of the chunk's {size} bytes",
                data.len()
            ),
        ));
    }
    Ok(data)
}

/// What is needed to read bytes `[a, b)` of one file.
#[derive(Clone, Debug)]
pub struct ReadPlan {
    node: NodeId,
    range: Range<u64>,
    chunks: Vec<Chunk>,
}

impl ReadPlan {
    /// Plans reading `len` bytes at `offset` of regular file `node`. The range is clipped to
    /// the file size (a read at or past the end plans nothing).
    pub fn new(index: &Index, node: NodeId, offset: u64, len: u64) -> Result<ReadPlan> {
        let attr = index.attr(node);
        if attr.kind != crate::index::NodeKind::File {
            return Err(Error::InvalidArgument(format!(
                "node {} is a {}, not a regular file",
                node.0,
                attr.kind.as_str()
            )));
        }
        let end = offset.saturating_add(len).min(attr.size);
        let start = offset.min(end);
        let all = index.chunks(node);
        let first = all.partition_point(|c| c.file_offset() + c.size() <= start);
        let chunks = all[first..]
            .iter()
            .take_while(|c| c.file_offset() < end)
            .copied()
            .collect();
        Ok(ReadPlan {
            node,
            range: start..end,
            chunks,
        })
    }

    /// The file.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The file bytes this plan serves.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The chunks to decode, in file order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The compressed blob ranges to fetch, in blob order, merged where they touch or overlap
    /// (chunks sharing a member need one fetch). Holes (`zeros` chunks) need none.
    pub fn blob_ranges(&self) -> Vec<Range<u64>> {
        merge_ranges(
            self.chunks
                .iter()
                .filter(|c| !c.is_zeros())
                .map(|c| c.blob_range())
                .collect(),
        )
    }

    /// Copies the part of `chunk` that falls in this plan's range into `buf`, where `buf[0]`
    /// is file offset `self.range().start`. Returns the number of bytes copied.
    pub fn copy_out(&self, chunk: &VerifiedChunk, buf: &mut [u8]) -> usize {
        self.copy_chunk_data(chunk.chunk(), chunk.data(), buf)
    }

    /// Like [`ReadPlan::copy_out`], for verified chunk bytes kept elsewhere after
    /// [`decode_chunk`] returned them (a cache of verified chunks keyed by digest): `data` must
    /// be the whole uncompressed content of `chunk`. Returns the number of bytes copied (0 when
    /// `data` is shorter than the chunk says).
    ///
    /// ```
    /// use estargz::{plan::ReadPlan, Reader};
    ///
    /// # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/vectors/edge-gzip-chunk64k/blob.esgz");
    /// let reader = Reader::open(std::fs::File::open(path)?)?;
    /// let node = reader.index().lookup("sizes/64k+1").unwrap();
    /// let plan = ReadPlan::new(reader.index(), node, 65530, 10)?;
    /// let mut buf = [0u8; 10];
    /// let mut n = 0;
    /// for chunk in plan.chunks() {
    ///     let verified = reader.read_chunk("sizes/64k+1", chunk)?;
    ///     let kept: Vec<u8> = verified.into_data(); // e.g. stored in a cache
    ///     n += plan.copy_chunk_data(chunk, &kept, &mut buf);
    /// }
    /// assert_eq!(n, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn copy_chunk_data(&self, chunk: &Chunk, data: &[u8], buf: &mut [u8]) -> usize {
        let c = chunk;
        let from = self.range.start.max(c.file_offset());
        let to = self.range.end.min(c.file_offset() + c.size());
        if from >= to {
            return 0;
        }
        let Some(src) =
            data.get((from - c.file_offset()) as usize..(to - c.file_offset()) as usize)
        else {
            return 0;
        };
        let dst_start = (from - self.range.start) as usize;
        let Some(dst) = buf.get_mut(dst_start..dst_start + src.len()) else {
            return 0;
        };
        dst.copy_from_slice(src);
        src.len()
    }
}

/// Sorts and merges ranges that overlap or touch.
///
/// ```
/// use estargz::plan::merge_ranges;
/// assert_eq!(merge_ranges(vec![5..8, 0..2, 2..4, 7..9]), vec![0..4, 5..9]);
/// ```
pub fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_numbers() {
        assert_eq!(parse_tar_number(b"00000001750\0"), Some(1000));
        assert_eq!(parse_tar_number(b"     1750 \0"), Some(1000));
        assert_eq!(parse_tar_number(b"\0\0\0"), None);
        assert_eq!(parse_tar_number(b"0009\0"), None);
        assert_eq!(
            parse_tar_number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
    }
}
