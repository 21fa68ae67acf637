//! Synchronous reading of a blob from a positioned-read source.
//!
//! [`Reader`] drives the sans-I/O steps of [`crate::plan`] over a [`ReadAt`] source (a file on
//! disk, bytes in memory, anything else): footer → TOC → index, then verified random-access
//! reads that fetch and decompress only the chunks they touch.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::footer::Footer;
use crate::index::{Chunk, Index, NodeId, NodeKind};
use crate::plan::{
    decode_chunk, decode_toc, tail_range, Compression, OpenOptions, ReadPlan, TocLocation,
    VerifiedChunk, Verify,
};
use crate::toc::{EntryType, Toc};

/// A positioned-read source: a blob on disk, in memory, or anywhere else.
///
/// ```
/// use estargz::ReadAt;
///
/// let blob: Vec<u8> = b"hello".to_vec();
/// let mut buf = [0u8; 3];
/// blob.read_exact_at(1, &mut buf).unwrap();
/// assert_eq!(&buf, b"ell");
/// assert_eq!(ReadAt::len(&blob).unwrap(), 5);
/// ```
pub trait ReadAt {
    /// Total length of the blob in bytes.
    fn len(&self) -> io::Result<u64>;

    /// True when the blob is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`; a short blob is an `UnexpectedEof` error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for [u8] {
    fn len(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "range {offset}+{} is past the end ({} bytes)",
                    buf.len(),
                    <[u8]>::len(self)
                ),
            )),
        }
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> io::Result<u64> {
        ReadAt::len(self.as_slice())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn len(&self) -> io::Result<u64> {
        (**self).len()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

fn read_range<R: ReadAt + ?Sized>(source: &R, range: Range<u64>) -> Result<Vec<u8>> {
    let len = usize::try_from(range.end - range.start)
        .map_err(|_| Error::InvalidArgument(format!("range {range:?} too large")))?;
    let mut buf = vec![0u8; len];
    source.read_exact_at(range.start, &mut buf).map_err(|e| {
        Error::io(
            format!("reading blob range {}..{}", range.start, range.end),
            e,
        )
    })?;
    Ok(buf)
}

/// A blob opened for reading: its footer, verified TOC digest, and [`Index`].
///
/// ```no_run
/// use estargz::Reader;
/// use std::io::Read;
///
/// let reader = Reader::open(std::fs::File::open("layer.esgz")?)?;
/// let mut file = reader.open_file("etc/os-release")?;
/// let mut text = String::new();
/// file.read_to_string(&mut text)?; // every chunk was verified before it was returned
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Reader<R> {
    source: R,
    location: TocLocation,
    toc_digest: Digest,
    index: Index,
    verify: Verify,
    external_toc: Option<Vec<u8>>,
}

/// What [`Reader::verify`] checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Regular files whose chunks (and whole-file digest, when the TOC has one) were checked.
    pub files: u64,
    /// Chunks decompressed and checked.
    pub chunks: u64,
    /// Uncompressed bytes checked.
    pub bytes: u64,
}

impl<R: ReadAt> Reader<R> {
    /// Opens a blob with default [`OpenOptions`] (chunk verification on, no expected TOC digest).
    pub fn open(source: R) -> Result<Reader<R>> {
        Reader::open_with(source, OpenOptions::default())
    }

    /// Opens a blob: reads the footer, the TOC (checking the limits and, when given, the
    /// expected digest) and builds the index.
    pub fn open_with(source: R, opts: OpenOptions) -> Result<Reader<R>> {
        let blob_size = source
            .len()
            .map_err(|e| Error::io("getting the blob size", e))?;
        let tail = read_range(&source, tail_range(blob_size, 0))?;
        let location = TocLocation::from_tail(blob_size, &tail)?;
        let stored = match (&location.toc_range, &opts.external_toc) {
            (Some(r), _) => {
                let len = r.end - r.start;
                if len > opts.max_toc_compressed_size {
                    return Err(Error::TocTooLarge {
                        what: "compressed",
                        size: len,
                        limit: opts.max_toc_compressed_size,
                    });
                }
                read_range(&source, r.clone())?
            }
            (None, Some(ext)) => ext.clone(),
            (None, None) => {
                return Err(Error::Toc(
                    "this blob's TOC is external (footer STARGZEXTERNALTOC): pass the TOC blob (e.g. --toc FILE)".into(),
                ))
            }
        };
        let toc = decode_toc(&location, &stored, &opts)?;
        let index = location.build_index(&toc.json, &opts)?;
        Ok(Reader {
            source,
            location,
            toc_digest: toc.digest,
            index,
            verify: if opts.verify_chunks {
                Verify::Digest
            } else {
                Verify::Skip
            },
            external_toc: opts.external_toc,
        })
    }

    /// The index of the blob's TOC.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The footer.
    pub fn footer(&self) -> Footer {
        self.location.footer
    }

    /// Where the TOC and payload are.
    pub fn location(&self) -> &TocLocation {
        &self.location
    }

    /// The TOC digest (`sha256` of the TOC JSON).
    pub fn toc_digest(&self) -> Digest {
        self.toc_digest
    }

    /// The underlying source.
    pub fn source(&self) -> &R {
        &self.source
    }

    /// Reads and decodes the TOC JSON again (it is not kept in memory).
    pub fn toc_json(&self) -> Result<Vec<u8>> {
        let stored = match (&self.location.toc_range, &self.external_toc) {
            (Some(r), _) => read_range(&self.source, r.clone())?,
            (None, Some(ext)) => ext.clone(),
            (None, None) => return Err(Error::Toc("external TOC not available".into())),
        };
        let opts = OpenOptions {
            expected_toc_digest: Some(self.toc_digest),
            ..OpenOptions::default()
        };
        Ok(decode_toc(&self.location, &stored, &opts)?.json)
    }

    /// Looks up a regular file by path and opens it for reading.
    pub fn open_file(&self, path: &str) -> Result<FileReader<'_, R>> {
        let node = self
            .index
            .lookup(path)
            .ok_or_else(|| Error::NotFound(path.to_owned()))?;
        if self.index.attr(node).kind != NodeKind::File {
            return Err(Error::NotAFile(path.to_owned()));
        }
        Ok(FileReader {
            reader: self,
            node,
            path: crate::index::clean_path(path),
            size: self.index.attr(node).size,
            pos: 0,
            current: None,
        })
    }

    /// Fetches, decompresses and verifies one chunk. `path` names the file in errors.
    pub fn read_chunk(&self, path: &str, chunk: &Chunk) -> Result<VerifiedChunk> {
        let compressed = if chunk.is_zeros() {
            Vec::new()
        } else {
            read_range(&self.source, chunk.blob_range())?
        };
        let digest = self.index.chunk_digest(chunk)?;
        decode_chunk(
            path,
            chunk,
            digest,
            self.compression(),
            &compressed,
            self.verify,
        )
    }

    fn compression(&self) -> Compression {
        self.location.compression()
    }

    /// Reads up to `buf.len()` bytes at `offset` of regular file `node`. Returns the number of
    /// bytes read (0 at or past the end). Every chunk touched is verified first.
    pub fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let plan = ReadPlan::new(&self.index, node, offset, buf.len() as u64)?;
        let mut n = 0;
        for chunk in plan.chunks() {
            // The path only names the file in an error: find it (a tree walk) only then.
            let vc = self
                .read_chunk("", chunk)
                .map_err(|e| e.with_path(|| self.path_for_errors(node)))?;
            n += plan.copy_out(&vc, buf);
        }
        Ok(n)
    }

    fn path_for_errors(&self, node: NodeId) -> String {
        let mut found = None;
        self.index.walk(|p, n| {
            if n == node && found.is_none() {
                found = Some(p.to_owned());
            }
        });
        found.unwrap_or_else(|| format!("<node {}>", node.0))
    }

    /// Checks every chunk of every file against its digest, and every regular file against its
    /// whole-file digest. Stops at the first mismatch.
    pub fn verify(&self) -> Result<VerifyReport> {
        let toc = Toc::from_json(&self.toc_json()?)?;
        let chunks = self.index.all_chunks();
        let mut report = VerifyReport::default();
        let mut next_chunk = 0usize;
        let mut i = 0;
        while i < toc.entries.len() {
            let e = &toc.entries[i];
            i += 1;
            if e.entry_type != EntryType::Reg {
                continue;
            }
            report.files += 1;
            let mut file_hash = Hasher::new();
            if e.size > 0 {
                // The reg entry's chunk, then every following `chunk` entry.
                let mut n = 1;
                while toc
                    .entries
                    .get(i)
                    .is_some_and(|c| c.entry_type == EntryType::Chunk)
                {
                    n += 1;
                    i += 1;
                }
                for chunk in chunks.get(next_chunk..next_chunk + n).unwrap_or(&[]) {
                    let vc = self.read_chunk(&crate::index::clean_path(&e.name), chunk)?;
                    file_hash.update(vc.data());
                    report.chunks += 1;
                    report.bytes += chunk.size();
                }
                next_chunk += n;
            }
            if !e.digest.is_empty() && self.verify == Verify::Digest {
                let want = Digest::parse(&e.digest)?;
                let got = file_hash.finish();
                if got != want {
                    return Err(Error::ChunkDigestMismatch {
                        path: crate::index::clean_path(&e.name),
                        chunk_offset: 0,
                        chunk_size: e.size.max(0) as u64,
                        blob_offset: e.offset.max(0) as u64,
                        expected: want.to_string(),
                        actual: got.to_string(),
                    });
                }
            }
        }
        Ok(report)
    }
}

/// A regular file of a [`Reader`], readable with `std::io::Read` + `Seek`. Keeps the last
/// decoded chunk, so sequential reads decode each chunk once.
#[derive(Debug)]
pub struct FileReader<'a, R> {
    reader: &'a Reader<R>,
    node: NodeId,
    path: String,
    size: u64,
    pos: u64,
    current: Option<VerifiedChunk>,
}

impl<R: ReadAt> FileReader<'_, R> {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Reads at `offset` without moving the cursor. Returns 0 at or past the end.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let off = offset + done as u64;
            if off >= self.size {
                break;
            }
            let hit = self
                .current
                .as_ref()
                .is_some_and(|c| c.chunk().file_range().contains(&off));
            if !hit {
                let chunks = self.reader.index.chunks(self.node);
                let i = chunks.partition_point(|c| c.file_offset() + c.size() <= off);
                let chunk = chunks.get(i).ok_or_else(|| {
                    Error::InvalidArgument(format!("{:?}: no chunk covers offset {off}", self.path))
                })?;
                self.current = Some(self.reader.read_chunk(&self.path, chunk)?);
            }
            let Some(vc) = self.current.as_ref() else {
                break;
            };
            let c = vc.chunk();
            let from = (off - c.file_offset()) as usize;
            let n = (vc.data().len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&vc.data()[from..from + n]);
            done += n;
        }
        Ok(done)
    }

    /// Visits the file's bytes from `offset` to the end, one verified chunk at a time, without
    /// copying them into a caller buffer.
    pub fn for_each_chunk(
        &mut self,
        offset: u64,
        mut f: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<()> {
        let chunks = self.reader.index.chunks(self.node);
        let first = chunks.partition_point(|c| c.file_offset() + c.size() <= offset);
        for chunk in &chunks[first..] {
            let vc = self.reader.read_chunk(&self.path, chunk)?;
            let skip = offset.saturating_sub(chunk.file_offset()) as usize;
            f(&vc.data()[skip.min(vc.data().len())..])
                .map_err(|e| Error::io(format!("writing {:?}", self.path), e))?;
        }
        Ok(())
    }
}

impl<R: ReadAt> Read for FileReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .read_at(self.pos, buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: ReadAt> Seek for FileReader<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}
