//! The builder: a tar (or tar.gz / tar.zst) in, an eStargz or zstd:chunked blob out
//! (ESTARGZ-FORMAT.md §9–§13).
//!
//! ```
//! use estargz::build::{BuildOptions, Builder};
//!
//! // A one-file tar, built with the `tar` crate.
//! let mut tar = tar::Builder::new(Vec::new());
//! let mut h = tar::Header::new_ustar();
//! h.set_size(5);
//! h.set_mode(0o644);
//! h.set_cksum();
//! tar.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
//! let tar = tar.into_inner().unwrap();
//!
//! let mut blob = Vec::new();
//! let report = Builder::new(BuildOptions::default()).build(&tar[..], &mut blob).unwrap();
//! assert_eq!(report.blob_size, blob.len() as u64);
//! assert_eq!(report.toc.entries[0].name, ".no.prefetch.landmark");
//! assert_eq!(report.toc.entries[1].name, "hello.txt");
//!
//! // The blob reads back with this crate's reader.
//! let reader = estargz::Reader::open(blob).unwrap();
//! assert_eq!(reader.toc_digest(), report.toc_digest);
//! ```
//!
//! # How it works
//!
//! Two passes over the (decompressed) tar, so that duplicates (the later entry wins) and the
//! prioritised order are known before anything is written. A seekable plain tar is read in
//! place; anything else (a pipe, a gzip or zstd stream) is first spooled, decompressed, to an
//! anonymous temporary file. Pass 1 reads only headers (payloads are skipped by seeking);
//! pass 2 walks the entries in output order, reads payloads chunk by chunk and cuts the
//! uncompressed tar stream into members as §10.4 describes: every chunk starts a new gzip
//! member / zstd frame holding the chunk, then (for a file's last chunk) the tar padding and
//! the headers of the following entries up to the next payload. A chunk longer than
//! [`MEMBER_SIZE`] (512 KiB) continues in new members (see below).
//!
//! Members are compressed on a pool of threads ([`BuildOptions::threads`]) and written in
//! order; each member is compressed in one shot, a pure function of its bytes, so the blob is
//! byte-identical for any thread count (unlike the Go builder, whose output depends on
//! GOMAXPROCS). Memory stays at a few members per thread, a few MiB, whatever the layer and
//! chunk sizes (plus the TOC, which must be held until the end, and one small record per tar
//! entry). Chunk digests and file digests are computed as the payload is read.
//!
//! Differences from the Go builder, all deliberate:
//!
//! - Min chunk size packing ([`BuildOptions::min_chunk_size`]) decides whether a chunk opens a
//!   new member on the *uncompressed* size of the current member (Go uses the compressed size
//!   so far, which would make the layout depend on compression, hence on threads).
//! - A chunk is cut into members of [`MEMBER_SIZE`] (512 KiB) uncompressed bytes, the last
//!   one taking the rest (less than 1 MiB): a 4 MiB chunk (the default chunk size) is eight
//!   members, a 700 KiB one a single member. A long run of header-only entries is cut every
//!   512 KiB too. No member holds more than 1 MiB, plus the tar padding and one header after
//!   a payload. Go puts each chunk in one member. §2.2 allows member boundaries anywhere,
//!   and readers decode a chunk from its `offset` through the following members (§7:
//!   stargz-snapshotter, the Go library and this crate's reader all do; `esgz-oracle verify`
//!   is run on such blobs in the tests). Compressing a 4 MiB chunk in one shot needs it whole
//!   in memory, on every thread: the builder used 2–3 times the Go tool's peak memory on
//!   layers of large files. The cost is output 0.01–0.3 % larger on real layers (no match
//!   reaches across a member boundary), still smaller than the Go tool's.
//! - With min chunk size packing, a chunk opens a new member once the current one holds
//!   `min(min chunk size, MEMBER_SIZE)` bytes: larger min chunk sizes act as 512 KiB.
//! - A prioritised file whose parent directory has no tar entry is found: the missing
//!   directories are synthesised (`dir`, mode 0755, uid/gid 0, no mtime) right before it.
//! - PAX global headers, sparse and contiguous files are an error naming the entry by
//!   default, or skipped / converted ([`UnsupportedEntries`]); sparse files are expanded.
//! - Hardlink chains in the prioritised list are followed at most 256 deep (Go recurses
//!   forever on a cycle).
//! - A zero block followed by a non-zero block is an error (as in Go), never silently the end.
//! - A non-directory entry whose name cleans to the root (an empty name, `.`, `/`, `..`) is an
//!   error naming the entry: no reader could place it (found by the `build_tar` fuzz target).
//!
//! # Deflate implementation and level
//!
//! Measured on this project's inputs (one-shot compression of each member, single thread):
//!
//! | input | libdeflate 9 | zlib-rs 9 (flate2) |
//! |---|---|---|
//! | /usr/share/doc tar (53 MB) | 70.9 MB/s, 42.53 MB | 36.5 MB/s, 42.56 MB |
//! | Go sources tar (317 MB) | 68.2 MB/s, 80.20 MB | 58.1 MB/s, 80.40 MB |
//! | random.tar (84 MB) | 39.1 MB/s, 67.66 MB | 33.0 MB/s, 67.63 MB |
//!
//! libdeflate is used. Gzip levels are libdeflate's: 0 (store) to 12, where 10–12 are its
//! much slower near-optimal levels (smallest output). They are not zlib's: libdeflate's level
//! 7 already gives output no larger than zlib's (and Go's) level 9 on real layers. The
//! default is therefore 7, the fastest level whose blobs are no larger than the Go tool's
//! defaults (`cargo bench -p estargz-benches --bench build`, 2 cores, medians of 3, members
//! of 512 KiB; this machine's speed varies by ±20 % from run to run, compare within a row):
//!
//! | input | level 7 | level 9 | Go tool (level 9) |
//! |---|---|---|---|
//! | /usr/share/doc (121 MB) | 132.3 MB/s, 68.94 MB | 92.0 MB/s, 68.84 MB | 24.7 MB/s, 69.02 MB |
//! | large Go executables (129 MB) | 84.9 MB/s, 44.63 MB | 43.4 MB/s, 44.45 MB | 10.9 MB/s, 45.53 MB |
//! | Go sources (316 MB) | 134.0 MB/s, 82.61 MB | 96.9 MB/s, 82.42 MB | 24.8 MB/s, 82.68 MB |
//!
//! Level 6 is about 13 % faster, but its blobs are larger than the Go tool's: by 11 KB on
//! /usr/share/doc (69,028,311 bytes) and by 180 KB on the Go sources (82,859,881 bytes).
//!
//! The exception is synthetic text of a few words in random order (the vectors' `random.tar`
//! and `edge.tar`, the bench's input (d)): there libdeflate's shorter match search loses, and
//! even level 9 is about 0.8 % larger than Go's level 9 (level 10 is 7 %
//! smaller). zstd:chunked uses zstd levels (default 3).
//!
//! File contents that look already compressed are kept in stored deflate blocks whatever the
//! level, with the padding and headers after them deflated; those that still hold repeats
//! deflate can use are deflated at level 1 (see the `compress` module). On the /usr/share/doc
//! tar (41 % of its bytes are `.gz` and other compressed files) `estargz convert` takes
//! 0.75 s with 2 threads, against 0.88 s when all of them were deflated at level 1 (medians of
//! 5, interleaved), for output of 68,906,266 bytes (the Go tool: 69,017,201).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::footer::{Footer, ZSTD_SKIPPABLE_MAGIC};
use crate::toc::{format_modtime, EntryType, Toc, TocEntry};

mod compress;
mod order;
mod tar_in;
mod tar_out;

use compress::{Codec, Compressor, Done, Job, Pool};
use order::Item;
pub use order::{NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use tar_in::{Data, TarEntry, TarReader};
use tar_out::{write_header, OutHeader};

/// The default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// The default gzip level: libdeflate level 7, the fastest whose output is no larger than the
/// Go tool's (zlib-style level 9) on real layers (see the module docs).
pub const DEFAULT_GZIP_LEVEL: i32 = 7;
/// The default bound of [`BuildOptions::max_sparse_expansion`]: 16 GiB.
pub const DEFAULT_MAX_SPARSE_EXPANSION: u64 = 16 << 30;
/// The default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// The content of a landmark file: one byte `0x0f`.
pub const LANDMARK_CONTENTS: u8 = 0x0f;
/// Annotation: the TOC digest.
pub const ANNOTATION_TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Annotation: the uncompressed size (decimal).
pub const ANNOTATION_UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";
/// Annotation (zstd:chunked): digest of the compressed TOC frame.
pub const ANNOTATION_ZSTD_MANIFEST_CHECKSUM: &str = "io.containers.zstd-chunked.manifest-checksum";
/// Annotation (zstd:chunked): `offset:compressed:uncompressed:1` of the TOC frame.
pub const ANNOTATION_ZSTD_MANIFEST_POSITION: &str = "io.containers.zstd-chunked.manifest-position";

/// The blob format to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// eStargz: gzip members, TOC in a gzip member (or external), 51-byte footer.
    #[default]
    Estargz,
    /// zstd:chunked as written by stargz-snapshotter: zstd frames, TOC in a skippable frame.
    ZstdChunked,
}

/// What to do with tar entries the format cannot carry: PAX global headers (`g`), sparse
/// files (`S` and PAX `GNU.sparse.*`), contiguous files (`7`) and unknown typeflags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnsupportedEntries {
    /// Fail the build with [`Error::UnsupportedEntry`] naming the entry (Go's behaviour).
    #[default]
    Error,
    /// Leave them out.
    Skip,
    /// Expand sparse files into regular files (holes read as zeros), write contiguous files
    /// as regular files, ignore PAX global headers and leave other unknown types out.
    Convert,
}

/// Progress of a build, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Copying (and decompressing) the input to a temporary file: bytes read so far.
    Spooling {
        /// Input bytes consumed so far.
        bytes: u64,
    },
    /// Writing the blob: payload bytes processed so far out of the total.
    Building {
        /// Payload bytes done.
        done: u64,
        /// Payload bytes in all.
        total: u64,
    },
}

/// A progress callback (called from the thread that runs the build).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Options of a build. `BuildOptions::default()` is what the Go tool does by default.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// Blob format (default eStargz).
    pub format: OutputFormat,
    /// Compression level; `None` = [`DEFAULT_GZIP_LEVEL`] or [`DEFAULT_ZSTD_LEVEL`]. gzip:
    /// 0..=12 (libdeflate levels); zstd: its level range. A gzip member whose bytes look
    /// already compressed (nearly uniform byte values: gzip, xz, zstd, PNG, JPEG payloads) is
    /// deflated at level 1 when the level is higher: on such bytes higher levels shrink the
    /// output by about 0.1 % for 40 % more time. The test is on the member's bytes only, so
    /// the output stays the same on every machine and for every number of threads.
    pub level: Option<i32>,
    /// Chunk size in bytes; 0 = [`DEFAULT_CHUNK_SIZE`].
    pub chunk_size: u64,
    /// Min chunk size: a chunk shares the current member (`innerOffset`) while that member
    /// holds fewer than this many uncompressed bytes (values above [`MEMBER_SIZE`] act as
    /// that). 0 = off (every chunk opens a member). Readable by stargz-snapshotter ≥ v0.13
    /// only.
    pub min_chunk_size: u64,
    /// Paths to put first, in this order (any of `a`, `/a`, `./a` name the same file).
    /// Non-empty: `.prefetch.landmark` follows them; empty: `.no.prefetch.landmark` first.
    pub prioritized: Vec<String>,
    /// Report missing prioritised paths in [`BuildReport::missed_prioritized`] instead of
    /// failing with [`Error::PrioritizedNotFound`].
    pub allow_missing_prioritized: bool,
    /// eStargz only: write the TOC to [`BuildReport::external_toc`] (a separate blob,
    /// `gzip(tar(stargz.index.json))`) and end the blob with the 46-byte external-TOC footer.
    pub external_toc: bool,
    /// Compression threads; 0 = all available cores. Does not change the output.
    pub threads: usize,
    /// What to do with entries the format cannot carry.
    pub unsupported: UnsupportedEntries,
    /// With [`UnsupportedEntries::Convert`], the largest size a sparse file may expand to
    /// (its holes become zeros in the layer); a larger one is an error naming the entry, so
    /// that a tiny untrusted tar cannot make a build write an endless stream of zeros.
    /// 0 = [`DEFAULT_MAX_SPARSE_EXPANSION`].
    pub max_sparse_expansion: u64,
    /// Called with progress updates.
    pub progress: Option<ProgressFn>,
}

impl fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuildOptions")
            .field("format", &self.format)
            .field("level", &self.level)
            .field("chunk_size", &self.chunk_size)
            .field("min_chunk_size", &self.min_chunk_size)
            .field("prioritized", &self.prioritized)
            .field("allow_missing_prioritized", &self.allow_missing_prioritized)
            .field("external_toc", &self.external_toc)
            .field("threads", &self.threads)
            .field("unsupported", &self.unsupported)
            .field("max_sparse_expansion", &self.max_sparse_expansion)
            .field("progress", &self.progress.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// Digest of the TOC JSON (annotation `containerd.io/snapshot/stargz/toc.digest`).
    pub toc_digest: Digest,
    /// Digest of the uncompressed stream (the layer's DiffID).
    pub diff_id: Digest,
    /// Length of the uncompressed stream.
    pub uncompressed_size: u64,
    /// Digest of the blob.
    pub blob_digest: Digest,
    /// Length of the blob.
    pub blob_size: u64,
    /// The annotations the layer descriptor needs.
    pub annotations: BTreeMap<String, String>,
    /// Prioritised paths (as given) that the input does not have.
    pub missed_prioritized: Vec<String>,
    /// The TOC as written.
    pub toc: Toc,
    /// With [`BuildOptions::external_toc`]: the TOC blob, `gzip(tar(stargz.index.json))`.
    pub external_toc: Option<Vec<u8>>,
}

/// Builds eStargz / zstd:chunked blobs. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Builder {
    opts: BuildOptions,
}

/// The input's compression, from its first bytes.
fn sniff(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0x1f, 0x8b, 0x08]) {
        Some("gzip")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else {
        None
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl Builder {
    /// A builder with these options.
    pub fn new(opts: BuildOptions) -> Builder {
        Builder { opts }
    }

    /// The options.
    pub fn options(&self) -> &BuildOptions {
        &self.opts
    }

    /// Builds from a stream (tar, tar.gz or tar.zst, detected by magic), spooling the
    /// decompressed tar to a temporary file, and writes the blob to `output`.
    pub fn build<R: Read, W: Write>(&self, mut input: R, output: W) -> Result<BuildReport> {
        let mut magic = [0u8; 4];
        let n =
            read_up_to(&mut input, &mut magic).map_err(|e| Error::io("reading the input", e))?;
        let head = io::Cursor::new(magic[..n].to_vec());
        let (file, len) = self.spool(sniff(&magic[..n]), head.chain(input))?;
        self.run(file, len, output)
    }

    /// Builds from a seekable input. A plain tar is read in place (no temporary file);
    /// a compressed one is decompressed to a temporary file first.
    pub fn build_seekable<R: Read + Seek, W: Write>(
        &self,
        mut input: R,
        output: W,
    ) -> Result<BuildReport> {
        let ctx = |e| Error::io("reading the input", e);
        input.seek(SeekFrom::Start(0)).map_err(ctx)?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut input, &mut magic).map_err(ctx)?;
        input.seek(SeekFrom::Start(0)).map_err(ctx)?;
        match sniff(&magic[..n]) {
            None => {
                let len = input.seek(SeekFrom::End(0)).map_err(ctx)?;
                self.run(input, len, output)
            }
            kind => {
                let (file, len) = self.spool(kind, input)?;
                self.run(file, len, output)
            }
        }
    }

    fn spool(&self, kind: Option<&str>, input: impl Read) -> Result<(std::fs::File, u64)> {
        let file = tempfile::tempfile().map_err(|e| Error::io("creating a temporary file", e))?;
        let mut counted = ProgressReader {
            inner: input,
            bytes: 0,
            last: 0,
            progress: self.opts.progress.as_deref(),
        };
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        let res = match kind {
            Some("gzip") => io::copy(&mut flate2::read::MultiGzDecoder::new(&mut counted), &mut w),
            Some(_) => match zstd::stream::read::Decoder::new(&mut counted) {
                Ok(mut d) => io::copy(&mut d, &mut w),
                Err(e) => Err(e),
            },
            None => io::copy(&mut counted, &mut w),
        };
        let what = match kind {
            Some(k) => format!("decompressing the {k} input to a temporary file"),
            None => "copying the input to a temporary file".to_string(),
        };
        let len = res.map_err(|e| Error::io(what.clone(), e))?;
        let file = w
            .into_inner()
            .map_err(|e| Error::io(what, e.into_error()))?;
        Ok((file, len))
    }

    fn codec(&self) -> Result<Codec> {
        Ok(match self.opts.format {
            OutputFormat::Estargz => {
                let level = self.opts.level.unwrap_or(DEFAULT_GZIP_LEVEL);
                if !(0..=12).contains(&level) {
                    return Err(Error::InvalidArgument(format!(
                        "gzip level {level} is not in 0..=12"
                    )));
                }
                Codec::Gzip(level)
            }
            OutputFormat::ZstdChunked => {
                let level = self.opts.level.unwrap_or(DEFAULT_ZSTD_LEVEL);
                if !zstd::compression_level_range().contains(&level) {
                    return Err(Error::InvalidArgument(format!(
                        "zstd level {level} is not in {:?}",
                        zstd::compression_level_range()
                    )));
                }
                Codec::Zstd(level)
            }
        })
    }

    fn run<S: Read + Seek, W: Write>(
        &self,
        mut src: S,
        len: u64,
        output: W,
    ) -> Result<BuildReport> {
        let codec = self.codec()?;
        if self.opts.external_toc && self.opts.format == OutputFormat::ZstdChunked {
            return Err(Error::InvalidArgument(
                "an external TOC is only supported for eStargz (gzip) blobs".into(),
            ));
        }
        // Pass 1: headers.
        let mut entries = order::Entries::default();
        {
            let mut reader = TarReader::new(&mut src, len, self.opts.unsupported)?;
            while let Some(mut e) = reader.next_entry()? {
                if self.accept(&mut e)? {
                    check_not_root(&e)?;
                    entries.push(e);
                }
            }
        }
        let (items, missed) = order::order(&entries, &self.opts.prioritized);
        if !missed.is_empty() && !self.opts.allow_missing_prioritized {
            return Err(Error::PrioritizedNotFound(missed));
        }
        let chunk_size = if self.opts.chunk_size == 0 {
            DEFAULT_CHUNK_SIZE
        } else {
            self.opts.chunk_size
        };
        let threads = match self.opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let total: u64 = items
            .iter()
            .map(|it| match it {
                Item::Input(i) => entries.slots[*i].as_ref().map_or(0, |e| e.size),
                Item::Landmark(_) => 1,
                Item::Dir(_) => 0,
            })
            .sum();
        // Pass 2: members.
        let mut report = std::thread::scope(|scope| -> Result<BuildReport> {
            let mut pool = Pool::new(scope, codec, threads)?;
            let mut em = Emitter {
                // Members of a few KiB (small files) are written in batches.
                out: io::BufWriter::with_capacity(OUTPUT_BUFFER, output),
                written: 0,
                blob: Hasher::new(),
                member_offsets: Vec::new(),
                members: 0,
                cur: Vec::new(),
                cur_payload: 0,
                cur_hashed: 0,
                free: Vec::new(),
                diff: Hasher::new(),
                uncompressed: 0,
                toc: Vec::new(),
                unames: HashMap::new(),
                gnames: HashMap::new(),
                chunk_size,
                min_chunk_size: self.opts.min_chunk_size,
                done: 0,
                total,
                progress: self.opts.progress.as_deref(),
            };
            for item in &items {
                em.emit(item, &entries, &mut src, &mut pool)?;
            }
            em.flush_member(&mut pool)?;
            while let Some(d) = pool.take()? {
                em.write_done(d)?;
            }
            drop(pool);
            em.finish(codec, self.opts.format, self.opts.external_toc)
        })?;
        report.missed_prioritized = missed;
        Ok(report)
    }

    /// Applies the unsupported-entry policy: `Ok(false)` drops the entry.
    fn accept(&self, e: &mut TarEntry) -> Result<bool> {
        let policy = self.opts.unsupported;
        let (what, convert_to_reg) = match e.typeflag {
            b'0'..=b'6' => return Ok(true),
            b'S' => ("sparse file", true),
            b'7' => ("contiguous file", true),
            _ => ("entry type", false),
        };
        match policy {
            UnsupportedEntries::Error => Err(Error::UnsupportedEntry {
                offset: e.header_offset,
                entry: e.name_lossy(),
                typeflag: char::from(e.typeflag),
                reason: format!(
                    "unsupported {what} (eStargz carries regular files, directories, links, devices and fifos; UnsupportedEntries::Skip or ::Convert handle it)"
                ),
            }),
            UnsupportedEntries::Skip => Ok(false),
            UnsupportedEntries::Convert if convert_to_reg => {
                let limit = match self.opts.max_sparse_expansion {
                    0 => DEFAULT_MAX_SPARSE_EXPANSION,
                    n => n,
                };
                if e.typeflag == b'S' && e.size > limit {
                    return Err(Error::UnsupportedEntry {
                        offset: e.header_offset,
                        entry: e.name_lossy(),
                        typeflag: 'S',
                        reason: format!(
                            "sparse file would expand to {} bytes, more than the limit of {limit} (raise BuildOptions::max_sparse_expansion, or skip such entries)",
                            e.size
                        ),
                    });
                }
                e.typeflag = b'0';
                Ok(true)
            }
            UnsupportedEntries::Convert => Ok(false),
        }
    }
}

/// A name that cleans to the layer root (empty, `.`, `./`, `/`, `..`) may only be a directory:
/// a file, link or device there would be an entry no reader can place (the reader refuses the
/// whole layer), so it is an error naming the entry, as a corrupt header would be.
fn check_not_root(e: &TarEntry) -> Result<()> {
    if e.typeflag != b'5' && order::clean_name(&e.name).is_empty() {
        return Err(tar_in::tar_err(
            e.header_offset,
            &e.name_lossy(),
            format!(
                "a non-directory entry (typeflag {:?}) names the layer root",
                char::from(e.typeflag)
            ),
        ));
    }
    Ok(())
}

/// Counts bytes read, for spooling progress.
struct ProgressReader<'a, R> {
    inner: R,
    bytes: u64,
    last: u64,
    progress: Option<&'a (dyn Fn(Progress) + Send + Sync)>,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if let Some(p) = self.progress {
            if self.bytes - self.last >= 1 << 20 || n == 0 {
                self.last = self.bytes;
                p(Progress::Spooling { bytes: self.bytes });
            }
        }
        Ok(n)
    }
}

/// Chunks are cut into members of this many uncompressed bytes, the last one taking the rest
/// (less than twice this); a long run of headers is cut at this size too. No member holds
/// more than twice this, plus the tar padding and one header after a payload, so memory stays
/// at a few such buffers per thread whatever the chunk size (see the module docs).
pub const MEMBER_SIZE: usize = 512 << 10;

/// Output buffer: writes of small members are batched, larger ones go straight through.
const OUTPUT_BUFFER: usize = 64 << 10;

/// Room reserved in a member buffer past its payload for the padding and headers that follow.
const MEMBER_SLACK: usize = 16 << 10;

/// Pass 2 state: the member being filled, the TOC, the hashes and the output.
struct Emitter<'p, W> {
    out: W,
    written: u64,
    blob: Hasher,
    member_offsets: Vec<u64>,
    /// Members submitted so far (= index of the member being filled).
    members: usize,
    cur: Vec<u8>,
    /// Where the last file payload in `cur` ends: the bytes after it are padding and
    /// headers (see [`Job::payload`]).
    cur_payload: usize,
    /// Bytes of `cur` already fed to `diff`.
    cur_hashed: usize,
    free: Vec<Vec<u8>>,
    diff: Hasher,
    uncompressed: u64,
    toc: Vec<TocEntry>,
    unames: HashMap<i64, String>,
    gnames: HashMap<i64, String>,
    chunk_size: u64,
    min_chunk_size: u64,
    done: u64,
    total: u64,
    progress: Option<&'p (dyn Fn(Progress) + Send + Sync)>,
}

/// Go's `nameIfChanged`: the name when non-empty and different from the last one emitted
/// for this id.
fn name_if_changed(map: &mut HashMap<i64, String>, id: i64, name: &[u8]) -> String {
    if name.is_empty() {
        return String::new();
    }
    let name = String::from_utf8_lossy(name).into_owned();
    if map.get(&id) == Some(&name) {
        return String::new();
    }
    map.insert(id, name.clone());
    name
}

/// Go's `formatModtime`: omitted for the zero time and Unix second 0, else rounded to the
/// nearest second (halves up).
fn toc_modtime(secs: i64, nsec: u32) -> String {
    const GO_ZERO_TIME: i64 = -62_135_596_800;
    if secs == 0 || (secs == GO_ZERO_TIME && nsec == 0) {
        return String::new();
    }
    format_modtime(secs.saturating_add(i64::from(nsec >= 500_000_000)))
}

fn entry_type(typeflag: u8) -> EntryType {
    match typeflag {
        b'1' => EntryType::Hardlink,
        b'2' => EntryType::Symlink,
        b'3' => EntryType::Char,
        b'4' => EntryType::Block,
        b'5' => EntryType::Dir,
        b'6' => EntryType::Fifo,
        _ => EntryType::Reg,
    }
}

/// Where an entry's payload comes from.
enum Payload<'a> {
    Input(&'a TarEntry),
    Bytes(&'a [u8]),
}

impl<W: Write> Emitter<'_, W> {
    fn emit<S: Read + Seek>(
        &mut self,
        item: &Item,
        entries: &order::Entries,
        src: &mut S,
        pool: &mut Pool<'_>,
    ) -> Result<()> {
        const LANDMARK: [u8; 1] = [LANDMARK_CONTENTS];
        let synthetic;
        let (e, payload, landmark) = match item {
            Item::Input(i) => match entries.slots[*i].as_ref() {
                Some(e) => (e, Payload::Input(e), false),
                None => return Ok(()),
            },
            Item::Landmark(prefetch) => {
                let name = if *prefetch {
                    PREFETCH_LANDMARK
                } else {
                    NO_PREFETCH_LANDMARK
                };
                synthetic = synthetic_entry(name.as_bytes().to_vec(), b'0', 0, 1);
                (&synthetic, Payload::Bytes(&LANDMARK), true)
            }
            Item::Dir(name) => {
                synthetic = synthetic_entry(name.clone(), b'5', 0o755, 0);
                (&synthetic, Payload::Bytes(&[]), false)
            }
        };
        // Bound a long run of headers (see the module docs).
        if self.cur.len() >= MEMBER_SIZE {
            self.flush_member(pool)?;
        }
        let header_only = TarEntry::is_header_only(e.typeflag);
        let size = if header_only { 0 } else { e.size };
        write_header(
            &OutHeader {
                name: &e.name,
                link_name: &e.link_name,
                typeflag: e.typeflag,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                uname: &e.uname,
                gname: &e.gname,
                mtime: e.mtime,
                mtime_nsec: e.mtime_nsec,
                size,
                dev_major: e.dev_major,
                dev_minor: e.dev_minor,
                pax: &e.pax,
            },
            &mut self.cur,
        );
        let name = e.name_lossy();
        let ty = entry_type(e.typeflag);
        let mut ent = TocEntry {
            name: name.clone(),
            entry_type: ty,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            user_name: name_if_changed(&mut self.unames, e.uid, &e.uname),
            group_name: name_if_changed(&mut self.gnames, e.gid, &e.gname),
            modtime: toc_modtime(e.mtime, e.mtime_nsec),
            xattrs: e.xattrs().map(|(k, v)| (k, v.to_vec())).collect(),
            ..TocEntry::default()
        };
        match ty {
            EntryType::Hardlink | EntryType::Symlink => {
                ent.link_name = String::from_utf8_lossy(&e.link_name).into_owned()
            }
            EntryType::Char | EntryType::Block => {
                ent.dev_major = e.dev_major;
                ent.dev_minor = e.dev_minor;
            }
            EntryType::Reg => ent.size = i64::try_from(size).unwrap_or(i64::MAX),
            _ => {}
        }
        if ty != EntryType::Reg || size == 0 {
            if ty == EntryType::Reg {
                ent.digest = Digest::of(b"").to_string();
            }
            self.toc.push(ent);
            return Ok(());
        }
        // A regular file with data: chunks.
        let c = self.chunk_size;
        let first = self.toc.len();
        let mut file_hash = (size > c).then(Hasher::new);
        let mut reader = PayloadReader::new(payload);
        let mut written = 0u64;
        let mut ent = Some(ent);
        while written < size {
            let n = (size - written).min(c);
            let mut chunk = ent.take().unwrap_or_else(|| TocEntry {
                name: name.clone(),
                entry_type: EntryType::Chunk,
                ..TocEntry::default()
            });
            if size - written >= c {
                chunk.chunk_size = c as i64;
            }
            chunk.chunk_offset = written as i64;
            // A chunk opens a member, unless min chunk size packing puts it after the bytes
            // of the current one; either way its first byte is in the member being filled.
            let pack_below = self.min_chunk_size.min(MEMBER_SIZE as u64);
            if pack_below == 0 || landmark || self.cur.len() as u64 >= pack_below {
                self.flush_member(pool)?;
            }
            chunk.offset = self.members as i64; // resolved to a blob offset in `finish`
            chunk.inner_offset = self.cur.len() as i64;
            let mut chunk_hash = Hasher::new();
            let mut left = n;
            while left > 0 {
                // A chunk longer than what the member has room for continues in new members;
                // the last one takes the rest rather than leaving a short member after it.
                if self.cur.len() >= MEMBER_SIZE {
                    self.flush_member(pool)?;
                }
                let room = (MEMBER_SIZE - self.cur.len()) as u64;
                let take = if left < room + MEMBER_SIZE as u64 {
                    left
                } else {
                    room
                } as usize;
                let start = self.cur.len();
                // Room for the bytes, their padding and the headers that usually follow, in
                // one allocation: a member that reaches a large size gets room for a full one.
                let need = start + take + MEMBER_SLACK;
                if need > self.cur.capacity() {
                    if need >= compress::BIG_BUFFER_MIN {
                        let mut big = compress::big_buffer(need);
                        big.truncate(start);
                        big[..start].copy_from_slice(&self.cur);
                        self.cur = big;
                    } else {
                        self.cur.reserve(take + MEMBER_SLACK);
                    }
                }
                self.cur.resize(start + take, 0);
                reader
                    .read(src, written, &mut self.cur[start..])
                    .map_err(|err| Error::io(format!("reading the payload of {name:?}"), err))?;
                // The DiffID takes the member's bytes up to here (the headers and padding
                // before this payload, then the payload) in lockstep with the chunk digest.
                Hasher::update_pair(
                    &mut self.diff,
                    &self.cur[self.cur_hashed..],
                    &mut chunk_hash,
                    &self.cur[start..],
                );
                self.cur_hashed = self.cur.len();
                self.cur_payload = self.cur.len();
                if let Some(h) = &mut file_hash {
                    h.update(&self.cur[start..]);
                }
                written += take as u64;
                left -= take as u64;
                self.done += take as u64;
                if let Some(p) = self.progress {
                    p(Progress::Building {
                        done: self.done,
                        total: self.total,
                    });
                }
            }
            chunk.chunk_digest = chunk_hash.finish().to_string();
            self.toc.push(chunk);
        }
        self.toc[first].digest = match file_hash {
            Some(h) => h.finish().to_string(),
            None => self.toc[first].chunk_digest.clone(),
        };
        let pad = (tar_in::round_up(size) - size) as usize;
        self.cur.resize(self.cur.len() + pad, 0);
        Ok(())
    }

    /// Sends the member being filled to the pool (if it has bytes) and writes what is done.
    fn flush_member(&mut self, pool: &mut Pool<'_>) -> Result<()> {
        if self.cur.is_empty() {
            return Ok(());
        }
        let next = self.free.pop().unwrap_or_default();
        let data = std::mem::replace(&mut self.cur, next);
        self.diff
            .update(&data[std::mem::take(&mut self.cur_hashed)..]);
        self.uncompressed += data.len() as u64;
        let job = Job {
            index: self.members,
            payload: std::mem::take(&mut self.cur_payload),
            data,
        };
        self.members += 1;
        while pool.is_full(job.data.len()) {
            match pool.try_take()? {
                Some(d) => self.write_done(d)?,
                None => pool.wait()?,
            }
        }
        pool.submit(job)?;
        while let Some(d) = pool.try_take()? {
            self.write_done(d)?;
        }
        Ok(())
    }

    fn write_done(&mut self, d: Done) -> Result<()> {
        debug_assert_eq!(d.index, self.member_offsets.len());
        self.member_offsets.push(self.written);
        self.write(&d.compressed)?;
        // Reuse small buffers (see `Done::spare`).
        if let Some(mut data) = d.spare {
            if self.free.len() < 4 {
                data.clear();
                self.free.push(data);
            }
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("writing the blob", e))?;
        self.blob.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Resolves offsets, writes the TOC and the footer, and makes the report.
    fn finish(mut self, codec: Codec, format: OutputFormat, external: bool) -> Result<BuildReport> {
        for e in &mut self.toc {
            let has_data =
                e.entry_type == EntryType::Chunk || (e.entry_type == EntryType::Reg && e.size > 0);
            if has_data {
                let member = usize::try_from(e.offset).unwrap_or(usize::MAX);
                let offset = self.member_offsets.get(member).copied().ok_or_else(|| {
                    Error::InvalidArgument(format!("internal: member {member} was not written"))
                })?;
                e.offset = offset as i64;
            }
        }
        let toc = Toc {
            version: 1,
            entries: std::mem::take(&mut self.toc),
            ..Toc::default()
        };
        let mut annotations = BTreeMap::new();
        let mut external_toc = None;
        let toc_digest;
        match format {
            OutputFormat::Estargz => {
                // The TOC tar entry: the JSON is written in place after room for its header,
                // which is filled in once the length is known (no second copy of the JSON).
                let mut tar = vec![0u8; 512];
                toc.append_json(&mut tar);
                let json_len = tar.len() - 512;
                toc_digest = Digest::of(&tar[512..]);
                let mut header = Vec::with_capacity(512);
                write_header(
                    &OutHeader::plain(order::TOC_TAR_NAME.as_bytes(), json_len as u64),
                    &mut header,
                );
                if header.len() == 512 {
                    tar[..512].copy_from_slice(&header);
                } else {
                    // Only a TOC of 8 GiB or more needs a PAX header.
                    tar.splice(..512, header);
                }
                tar.resize(tar_in::round_up(tar.len() as u64) as usize + 1024, 0);
                let member = Compressor::new(codec)?.compress(&tar)?;
                if external {
                    self.write(&Footer::ExternalToc.to_bytes())?;
                    external_toc = Some(member);
                } else {
                    self.diff.update(&tar);
                    self.uncompressed += tar.len() as u64;
                    let toc_offset = self.written;
                    self.write(&member)?;
                    self.write(&Footer::Estargz { toc_offset }.to_bytes())?;
                }
            }
            OutputFormat::ZstdChunked => {
                let json = toc.to_json();
                toc_digest = Digest::of(&json);
                let frame = Compressor::new(codec)?.compress(&json)?;
                let frame_len = u32::try_from(frame.len()).map_err(|_| {
                    Error::InvalidArgument("the compressed TOC exceeds 4 GiB".into())
                })?;
                let mut head = ZSTD_SKIPPABLE_MAGIC.to_vec();
                head.extend_from_slice(&frame_len.to_le_bytes());
                self.write(&head)?;
                let toc_offset = self.written;
                self.write(&frame)?;
                self.write(
                    &Footer::ZstdChunked {
                        toc_offset,
                        toc_compressed_size: frame.len() as u64,
                        toc_uncompressed_size: json.len() as u64,
                    }
                    .to_bytes(),
                )?;
                annotations.insert(
                    ANNOTATION_ZSTD_MANIFEST_CHECKSUM.to_string(),
                    Digest::of(&frame).to_string(),
                );
                annotations.insert(
                    ANNOTATION_ZSTD_MANIFEST_POSITION.to_string(),
                    format!("{toc_offset}:{}:{}:1", frame.len(), json.len()),
                );
            }
        }
        self.out
            .flush()
            .map_err(|e| Error::io("writing the blob", e))?;
        annotations.insert(ANNOTATION_TOC_DIGEST.to_string(), toc_digest.to_string());
        annotations.insert(
            ANNOTATION_UNCOMPRESSED_SIZE.to_string(),
            self.uncompressed.to_string(),
        );
        Ok(BuildReport {
            toc_digest,
            diff_id: self.diff.finish(),
            uncompressed_size: self.uncompressed,
            blob_digest: self.blob.finish(),
            blob_size: self.written,
            annotations,
            missed_prioritized: Vec::new(),
            toc,
            external_toc,
        })
    }
}

fn synthetic_entry(name: Vec<u8>, typeflag: u8, mode: i64, size: u64) -> TarEntry {
    TarEntry {
        header_offset: 0,
        name,
        link_name: Vec::new(),
        typeflag,
        mode,
        uid: 0,
        gid: 0,
        uname: Vec::new(),
        gname: Vec::new(),
        mtime: 0,
        mtime_nsec: 0,
        dev_major: 0,
        dev_minor: 0,
        size,
        data_offset: 0,
        data: Data::Contiguous,
        pax: Vec::new(),
    }
}

/// Reads an entry's logical content (sparse holes as zeros) at increasing offsets.
struct PayloadReader<'a> {
    payload: Payload<'a>,
    /// Sparse: index of the first fragment not entirely before the last read, and the stored
    /// offset where it starts.
    frag: usize,
    frag_stored: u64,
}

impl<'a> PayloadReader<'a> {
    fn new(payload: Payload<'a>) -> Self {
        PayloadReader {
            payload,
            frag: 0,
            frag_stored: 0,
        }
    }

    /// Fills `buf` with the content at logical offset `pos` (never before a previous read).
    fn read<S: Read + Seek>(&mut self, src: &mut S, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let e = match self.payload {
            Payload::Bytes(b) => {
                let start = usize::try_from(pos).unwrap_or(usize::MAX).min(b.len());
                let end = start.saturating_add(buf.len()).min(b.len());
                if end - start != buf.len() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.copy_from_slice(&b[start..end]);
                return Ok(());
            }
            Payload::Input(e) => e,
        };
        match &e.data {
            Data::Contiguous => {
                src.seek(SeekFrom::Start(e.data_offset + pos))?;
                src.read_exact(buf)
            }
            Data::Sparse(map) => {
                buf.fill(0);
                let end = pos + buf.len() as u64;
                // Skip fragments that end before `pos`.
                while let Some(&(off, len)) = map.get(self.frag) {
                    if off + len > pos {
                        break;
                    }
                    self.frag_stored += len;
                    self.frag += 1;
                }
                let mut stored = self.frag_stored;
                for &(off, len) in &map[self.frag.min(map.len())..] {
                    if off >= end {
                        break;
                    }
                    let from = off.max(pos);
                    let to = (off + len).min(end);
                    if from < to {
                        src.seek(SeekFrom::Start(e.data_offset + stored + (from - off)))?;
                        let dst = (from - pos) as usize..(to - pos) as usize;
                        src.read_exact(&mut buf[dst])?;
                    }
                    stored += len;
                }
                Ok(())
            }
        }
    }
}

/// Parses a prioritised-files list in the stargz "record" format (JSON lines
/// `{"path": "..."}`, as nerdctl's `--estargz-record-in` reads); other keys are ignored, blank
/// lines skipped.
///
/// ```
/// let paths = estargz::build::parse_record_file("{\"path\":\"/bin/sh\"}\n\n{\"path\":\"etc/passwd\",\"layerIndex\":0}\n").unwrap();
/// assert_eq!(paths, ["/bin/sh", "etc/passwd"]);
/// ```
pub fn parse_record_file(text: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Record {
        path: String,
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(line)
            .map_err(|e| Error::InvalidArgument(format!("record file line {}: {e}", i + 1)))?;
        out.push(r.path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modtime_rules() {
        assert_eq!(toc_modtime(0, 0), "");
        assert_eq!(toc_modtime(0, 600_000_000), "");
        assert_eq!(toc_modtime(1, 500_000_000), "1970-01-01T00:00:02Z");
        assert_eq!(toc_modtime(1, 250_000_000), "1970-01-01T00:00:01Z");
        assert_eq!(toc_modtime(-1, 500_000_000), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn names_dedupe_per_id() {
        let mut m = HashMap::new();
        assert_eq!(name_if_changed(&mut m, 1, b"a"), "a");
        assert_eq!(name_if_changed(&mut m, 1, b"a"), "");
        assert_eq!(name_if_changed(&mut m, 1, b""), "");
        assert_eq!(name_if_changed(&mut m, 1, b"b"), "b");
        assert_eq!(name_if_changed(&mut m, 2, b"b"), "b");
    }
}
