//! [`LocalLayer`]: a blob on local disk as a [`LayerSource`].
//!
//! Reads decode and verify only the chunks they touch (through `estargz::Reader`), keeping a
//! few recently decoded chunks in memory so sequential reads decode each chunk once. With a
//! cache directory, a file whose every chunk has been read (or that prefetch / background fetch
//! reached) is written whole into the [`FileCache`] by a background thread; from then on reads
//! are plain positioned reads of that file, and the filesystem can hand it to the kernel for
//! passthrough.
//!
//! Never serves a byte that did not come from a chunk whose digest matched.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use estargz::index::{Chunk, Landmark, NodeId, NodeKind};
use estargz::plan::VerifiedChunk;
use estargz::{Digest, Index, OpenOptions, Reader};

use crate::cache::FileCache;
use crate::error::{Error, Result};
use crate::source::{LayerSource, SourceStats};

/// How to open a [`LocalLayer`].
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// How to open the blob (expected TOC digest, external TOC, limits).
    pub open: OpenOptions,
    /// Where to keep whole verified files (enables serving from disk and passthrough).
    pub cache_dir: Option<PathBuf>,
    /// Cache the prioritised files (those before the `.prefetch.landmark`) in the background
    /// right after opening. Needs `cache_dir`.
    pub prefetch: bool,
    /// Cache every regular file in the background, after prefetch and always after files that
    /// readers completed. Needs `cache_dir`.
    pub background_fetch: bool,
    /// Memory for recently decoded chunks, in bytes.
    pub chunk_memory: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            open: OpenOptions::default(),
            cache_dir: None,
            prefetch: false,
            background_fetch: false,
            chunk_memory: 32 << 20,
        }
    }
}

/// A blob on local disk, served through verified chunk reads. See the module documentation.
///
/// ```no_run
/// use estargz_fuse::{LayerSource, LocalLayer, LocalOptions};
///
/// let layer = LocalLayer::open("layer.esgz".as_ref(), LocalOptions::default())?;
/// let node = layer.index().lookup("etc/os-release").expect("present");
/// let mut buf = vec![0; 4096];
/// let n = layer.read_at(node, 0, &mut buf)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LocalLayer {
    inner: Arc<Inner>,
    /// Files whose every chunk was read: the cache writer caches them first.
    completed: Option<Mutex<Sender<NodeId>>>,
}

#[derive(Debug)]
struct Inner {
    reader: Reader<File>,
    blob_size: u64,
    cache: Option<FileCache>,
    chunks: Mutex<ChunkMemory>,
    /// Per uncached file being read: which of its chunks have been decoded.
    coverage: Mutex<HashMap<NodeId, Coverage>>,
    fetched: AtomicU64,
}

impl LocalLayer {
    /// Opens the blob at `path`.
    pub fn open(path: &Path, opts: LocalOptions) -> Result<LocalLayer> {
        let what = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::Layer {
            what: what.clone(),
            source: estargz::Error::io("opening the blob", e),
        })?;
        LocalLayer::from_file(file, &what, opts)
    }

    /// Opens an already open blob; `what` names it in errors.
    pub fn from_file(file: File, what: &str, opts: LocalOptions) -> Result<LocalLayer> {
        let blob_size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = Reader::open_with(file, opts.open.clone()).map_err(|source| Error::Layer {
            what: what.to_owned(),
            source,
        })?;
        let cache = match &opts.cache_dir {
            Some(dir) => Some(FileCache::open(dir, reader.toc_digest(), reader.index())?),
            None => None,
        };
        let has_cache = cache.is_some();
        let inner = Arc::new(Inner {
            reader,
            blob_size,
            cache,
            chunks: Mutex::new(ChunkMemory::new(opts.chunk_memory)),
            coverage: Mutex::new(HashMap::new()),
            fetched: AtomicU64::new(0),
        });
        let completed = if has_cache {
            let (tx, rx) = mpsc::channel();
            let background = inner.background_list(opts.prefetch, opts.background_fetch);
            let worker = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("estargz-cache".into())
                .spawn(move || worker.cache_writer(rx, background))
                .map_err(|e| Error::cache(what, e))?;
            Some(Mutex::new(tx))
        } else {
            None
        };
        Ok(LocalLayer { inner, completed })
    }

    /// The underlying blob reader.
    pub fn reader(&self) -> &Reader<File> {
        &self.inner.reader
    }

    /// The cache directory of this layer, when caching is on.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.cache.as_ref().map(FileCache::dir)
    }

    /// True when `node`'s whole verified content is in the cache.
    pub fn is_cached(&self, node: NodeId) -> bool {
        self.inner.cache.as_ref().is_some_and(|c| c.contains(node))
    }

    /// Caches `node` now, on the calling thread (no-op without a cache directory).
    pub fn cache_file(&self, node: NodeId) -> io::Result<()> {
        self.inner.cache_whole(node)
    }
}

impl LayerSource for LocalLayer {
    fn index(&self) -> &Index {
        self.inner.reader.index()
    }

    fn toc_digest(&self) -> Digest {
        self.inner.reader.toc_digest()
    }

    fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let (n, completed) = self.inner.read_at(node, offset, buf)?;
        if completed {
            if let Some(tx) = &self.completed {
                if let Ok(tx) = tx.lock() {
                    let _ = tx.send(node);
                }
            }
        }
        Ok(n)
    }

    fn is_local(&self, _node: NodeId, _range: Range<u64>) -> bool {
        true
    }

    fn cached_file(&self, node: NodeId) -> Option<File> {
        self.inner.cache.as_ref()?.open_file(node)
    }

    fn stats(&self) -> SourceStats {
        let (cached_files, cached_bytes) = self
            .inner
            .cache
            .as_ref()
            .map(FileCache::usage)
            .unwrap_or((0, 0));
        SourceStats {
            blob_size: self.inner.blob_size,
            fetched_bytes: self.inner.fetched.load(Ordering::Relaxed),
            cached_files,
            cached_bytes,
        }
    }
}

fn to_io(e: estargz::Error) -> io::Error {
    if e.is_integrity() {
        io::Error::new(io::ErrorKind::InvalidData, e)
    } else {
        io::Error::other(e)
    }
}

impl Inner {
    fn index(&self) -> &Index {
        self.reader.index()
    }

    /// Returns the bytes read and whether this read completed the file's chunk coverage.
    fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let attr = self.index().attr(node);
        if attr.kind != NodeKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {} is not a regular file", node.0),
            ));
        }
        let end = offset.saturating_add(buf.len() as u64).min(attr.size);
        if offset >= end {
            return Ok((0, false));
        }
        let want = (end - offset) as usize;
        if let Some(file) = self.cache.as_ref().and_then(|c| c.get(node)) {
            file.read_exact_at(&mut buf[..want], offset)?;
            return Ok((want, false));
        }
        let all = self.index().chunks(node);
        let first = all.partition_point(|c| c.file_offset() + c.size() <= offset);
        let mut completed = false;
        for (i, chunk) in all.iter().enumerate().skip(first) {
            if chunk.file_offset() >= end {
                break;
            }
            let vc = self.chunk(node, i, chunk)?;
            let from = offset.max(chunk.file_offset());
            let to = end.min(chunk.file_offset() + chunk.size());
            let src = vc
                .data()
                .get((from - chunk.file_offset()) as usize..(to - chunk.file_offset()) as usize)
                .ok_or_else(|| {
                    io::Error::other(format!("chunk {i} of node {} is short", node.0))
                })?;
            buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            completed |= self.cover(node, i, all.len());
        }
        Ok((want, completed))
    }

    /// The verified chunk `i` of `node`, from memory or decoded from the blob.
    fn chunk(&self, node: NodeId, i: usize, chunk: &Chunk) -> io::Result<Arc<VerifiedChunk>> {
        let key = (node, i as u32);
        if let Some(vc) = self.chunks.lock().ok().and_then(|mut m| m.get(key)) {
            return Ok(vc);
        }
        if !chunk.is_zeros() {
            self.fetched.fetch_add(
                chunk.blob_end().saturating_sub(chunk.blob_offset()),
                Ordering::Relaxed,
            );
        }
        let vc = Arc::new(
            self.reader
                .read_chunk(&format!("node {} chunk {i}", node.0), chunk)
                .map_err(to_io)?,
        );
        if let Ok(mut m) = self.chunks.lock() {
            m.put(key, Arc::clone(&vc));
        }
        Ok(vc)
    }

    /// Marks chunk `i` of `node` as read; true when that completes the file (first time only).
    fn cover(&self, node: NodeId, i: usize, n: usize) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        if cache.contains(node) {
            return false;
        }
        let Ok(mut cov) = self.coverage.lock() else {
            return false;
        };
        let c = cov.entry(node).or_insert_with(|| Coverage::new(n));
        if c.set(i) {
            cov.remove(&node);
            return true;
        }
        false
    }

    /// Writes `node` whole into the cache (no-op when cached or caching is off).
    fn cache_whole(&self, node: NodeId) -> io::Result<()> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let attr = self.index().attr(node);
        if attr.kind != NodeKind::File || cache.contains(node) {
            return Ok(());
        }
        cache.insert_with(node, attr.size, |w| {
            for (i, chunk) in self.index().chunks(node).iter().enumerate() {
                let vc = self.chunk(node, i, chunk)?;
                w.write_all(vc.data())?;
            }
            Ok(())
        })?;
        if let Ok(mut cov) = self.coverage.lock() {
            cov.remove(&node);
        }
        Ok(())
    }

    /// Files to cache in the background: prioritised files first (when `prefetch`), then every
    /// other regular file in blob order (when `all`).
    fn background_list(&self, prefetch: bool, all: bool) -> VecDeque<NodeId> {
        let index = self.index();
        let mut files: Vec<(u64, NodeId)> = (0..index.node_count() as u32)
            .map(NodeId)
            .filter(|&n| {
                let a = index.attr(n);
                a.kind == NodeKind::File && a.size > 0
            })
            .map(|n| {
                let off = index
                    .chunks(n)
                    .first()
                    .map_or(u64::MAX, |c| c.blob_offset());
                (off, n)
            })
            .collect();
        files.sort_unstable();
        let landmark = match index.landmark() {
            Landmark::Prefetch { offset } => offset,
            _ => 0,
        };
        files
            .into_iter()
            .filter(|&(off, _)| all || (prefetch && off < landmark))
            .map(|(_, n)| n)
            .collect()
    }

    /// The cache writer thread: files readers completed first, then the background list.
    /// Ends when the layer is dropped (the sender goes away) and the background list is done.
    fn cache_writer(&self, rx: Receiver<NodeId>, mut background: VecDeque<NodeId>) {
        loop {
            let next = if background.is_empty() {
                match rx.recv() {
                    Ok(n) => n,
                    Err(_) => return,
                }
            } else {
                match rx.recv_timeout(Duration::ZERO) {
                    Ok(n) => n,
                    Err(RecvTimeoutError::Timeout) => match background.pop_front() {
                        Some(n) => n,
                        None => continue,
                    },
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            };
            if let Err(e) = self.cache_whole(next) {
                tracing::warn!(node = next.0, error = %e, "caching a file failed");
            }
        }
    }
}

/// Which chunks of one file have been decoded.
#[derive(Debug)]
struct Coverage {
    bits: Vec<u64>,
    missing: usize,
}

impl Coverage {
    fn new(n: usize) -> Coverage {
        Coverage {
            bits: vec![0; n.div_ceil(64)],
            missing: n,
        }
    }

    /// Sets bit `i`; true when no bit is missing any more.
    fn set(&mut self, i: usize) -> bool {
        if let Some(w) = self.bits.get_mut(i / 64) {
            let m = 1u64 << (i % 64);
            if *w & m == 0 {
                *w |= m;
                self.missing = self.missing.saturating_sub(1);
            }
        }
        self.missing == 0
    }
}

/// A small LRU of decoded chunks, bounded in bytes.
#[derive(Debug)]
struct ChunkMemory {
    limit: usize,
    used: usize,
    entries: VecDeque<((NodeId, u32), Arc<VerifiedChunk>)>,
}

impl ChunkMemory {
    fn new(limit: usize) -> ChunkMemory {
        ChunkMemory {
            limit,
            used: 0,
            entries: VecDeque::new(),
        }
    }

    fn get(&mut self, key: (NodeId, u32)) -> Option<Arc<VerifiedChunk>> {
        let pos = self.entries.iter().position(|(k, _)| *k == key)?;
        let e = self.entries.remove(pos)?;
        let vc = Arc::clone(&e.1);
        self.entries.push_back(e);
        Some(vc)
    }

    fn put(&mut self, key: (NodeId, u32), vc: Arc<VerifiedChunk>) {
        if self.entries.iter().any(|(k, _)| *k == key) {
            return;
        }
        let len = vc.data().len();
        if len > self.limit {
            return;
        }
        while self.used + len > self.limit {
            match self.entries.pop_front() {
                Some((_, old)) => self.used -= old.data().len(),
                None => break,
            }
        }
        self.used += len;
        self.entries.push_back((key, vc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_completes_once_every_chunk_is_set() {
        let mut c = Coverage::new(130);
        for i in 0..129 {
            assert!(!c.set(i));
        }
        assert!(!c.set(5), "setting a bit twice does not count twice");
        assert!(c.set(129));
        assert!(Coverage::new(0).set(0));
    }
}
