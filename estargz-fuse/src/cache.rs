//! The verified whole-file cache: one local file per regular file of the layer whose every
//! chunk was verified, so reads can be served from disk and the kernel can be handed the file
//! for FUSE passthrough.
//!
//! Layout: `<root>/<toc digest hex>/<node id>`, written as `<root>/<toc digest hex>/wip/<node
//! id>.<pid>.<n>` and renamed into place after the content is complete and synced, so a crash
//! never leaves a partial file under a final name. Node ids are deterministic for a TOC (see
//! `estargz::index`), so the cache of a layer survives a remount; files whose size does not
//! match the index are discarded when the cache is opened.
//!
//! This module never decides *what* to cache; [`crate::LocalLayer`] does.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use estargz::index::{NodeId, NodeKind};
use estargz::{Digest, Index};

use crate::error::{Error, Result};

/// The verified whole-file cache of one layer. See the module documentation.
#[derive(Debug)]
pub struct FileCache {
    dir: PathBuf,
    files: RwLock<HashMap<NodeId, Arc<File>>>,
    bytes: AtomicU64,
    seq: AtomicU64,
}

impl FileCache {
    /// Opens (creating it if needed) the cache of the layer with TOC digest `toc` under `root`,
    /// keeping the files already there whose size matches `index`.
    pub fn open(root: &Path, toc: Digest, index: &Index) -> Result<FileCache> {
        let dir = root.join(toc.hex());
        let wip = dir.join("wip");
        // Leftovers of an interrupted write are never valid.
        let _ = fs::remove_dir_all(&wip);
        fs::create_dir_all(&wip).map_err(|e| Error::cache(&wip, e))?;
        let mut files = HashMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(&dir).map_err(|e| Error::cache(&dir, e))? {
            let entry = entry.map_err(|e| Error::cache(&dir, e))?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let node = NodeId(id);
            let path = entry.path();
            let keep = (id as usize) < index.node_count() && {
                let attr = index.attr(node);
                attr.kind == NodeKind::File
                    && entry.metadata().map(|m| m.len()).ok() == Some(attr.size)
            };
            if !keep {
                let _ = fs::remove_file(&path);
                continue;
            }
            if let Ok(f) = File::open(&path) {
                bytes += index.attr(node).size;
                files.insert(node, Arc::new(f));
            }
        }
        Ok(FileCache {
            dir,
            files: RwLock::new(files),
            bytes: AtomicU64::new(bytes),
            seq: AtomicU64::new(0),
        })
    }

    /// The directory holding this layer's cached files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached file of `node`, shared (use positioned reads on it).
    pub fn get(&self, node: NodeId) -> Option<Arc<File>> {
        self.files.read().ok().and_then(|m| m.get(&node).cloned())
    }

    /// True when `node`'s whole content is cached.
    pub fn contains(&self, node: NodeId) -> bool {
        self.files.read().is_ok_and(|m| m.contains_key(&node))
    }

    /// A new read-only descriptor of `node`'s cached file (each passthrough open wants its own).
    pub fn open_file(&self, node: NodeId) -> Option<File> {
        if !self.contains(node) {
            return None;
        }
        File::open(self.path(node)).ok()
    }

    /// Number of cached files and their total size.
    pub fn usage(&self) -> (u64, u64) {
        let n = self.files.read().map(|m| m.len() as u64).unwrap_or(0);
        (n, self.bytes.load(Ordering::Relaxed))
    }

    fn path(&self, node: NodeId) -> PathBuf {
        self.dir.join(node.0.to_string())
    }

    /// Caches `node` (of `size` bytes): `fill` writes the verified content in order into the
    /// given writer; the file is committed only if exactly `size` bytes were written.
    pub fn insert_with(
        &self,
        node: NodeId,
        size: u64,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.contains(node) {
            return Ok(());
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let wip = self
            .dir
            .join("wip")
            .join(format!("{}.{}.{n}", node.0, std::process::id()));
        let result = (|| {
            let file = File::create(&wip)?;
            let mut counting = CountingWriter {
                inner: io::BufWriter::with_capacity(1 << 20, file),
                written: 0,
            };
            fill(&mut counting)?;
            if counting.written != size {
                return Err(io::Error::other(format!(
                    "cache fill of node {} wrote {} bytes, expected {size}",
                    node.0, counting.written
                )));
            }
            let file = counting.inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_data()?;
            fs::rename(&wip, self.path(node))?;
            File::open(self.path(node))
        })();
        match result {
            Ok(f) => {
                if let Ok(mut m) = self.files.write() {
                    if m.insert(node, Arc::new(f)).is_none() {
                        self.bytes.fetch_add(size, Ordering::Relaxed);
                    }
                }
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&wip);
                Err(e)
            }
        }
    }
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
