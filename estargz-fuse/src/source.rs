//! Where a mounted layer's bytes come from: the [`LayerSource`] trait.
//!
//! The filesystem ([`crate::LayerFs`]) only needs four things from a layer: its [`Index`] (the
//! tree and every attribute), verified file reads, a hint whether a read can be served without
//! waiting on the network, and, for passthrough, a local file that holds a file's whole verified
//! content. A local blob ([`crate::LocalLayer`]) and a registry blob (`estargz-io`'s
//! `RemoteLayer`) both fit behind it, so the FUSE code has no idea where bytes live.
//!
//! Contract for implementors: `read_at` returns only bytes whose chunk digest matched (or an
//! error, never wrong bytes); it may block (the filesystem calls it from a worker thread with a
//! deadline unless [`LayerSource::is_local`] says the read will not wait); it is called
//! concurrently from many threads.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use estargz::index::NodeId;
use estargz::{Digest, Index};

/// A layer whose files the filesystem serves. See the module documentation for the contract.
pub trait LayerSource: Send + Sync + 'static {
    /// The layer's tree. Must not change while mounted.
    fn index(&self) -> &Index;

    /// The TOC digest: it names the layer (generation numbers, cache keys).
    fn toc_digest(&self) -> Digest;

    /// Reads up to `buf.len()` verified bytes of regular file `node` at `offset`. Returns the
    /// number of bytes read (0 at or past the end of the file). May block.
    fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// True when reading `range` of `node` will not wait on anything slower than a local disk
    /// (for example every chunk is cached). Such reads are served on the FUSE thread itself;
    /// all others go to a worker with the configured deadline. The default says `false`.
    fn is_local(&self, node: NodeId, range: Range<u64>) -> bool {
        let _ = (node, range);
        false
    }

    /// A local file holding the whole verified content of regular file `node`, if there is one
    /// (used for FUSE passthrough). The default has none.
    fn cached_file(&self, node: NodeId) -> Option<File> {
        let _ = node;
        None
    }

    /// Counters: bytes fetched from the blob and how much is cached.
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

/// What a [`LayerSource`] has fetched and cached so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Size of the compressed blob.
    pub blob_size: u64,
    /// Compressed bytes read from the blob (disk or network), including re-reads.
    pub fetched_bytes: u64,
    /// Regular files whose whole verified content is in the local cache.
    pub cached_files: u64,
    /// Uncompressed bytes of those files.
    pub cached_bytes: u64,
}

impl<T: LayerSource + ?Sized> LayerSource for Arc<T> {
    fn index(&self) -> &Index {
        (**self).index()
    }
    fn toc_digest(&self) -> Digest {
        (**self).toc_digest()
    }
    fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(node, offset, buf)
    }
    fn is_local(&self, node: NodeId, range: Range<u64>) -> bool {
        (**self).is_local(node, range)
    }
    fn cached_file(&self, node: NodeId) -> Option<File> {
        (**self).cached_file(node)
    }
    fn stats(&self) -> SourceStats {
        (**self).stats()
    }
}

impl<T: LayerSource + ?Sized> LayerSource for Box<T> {
    fn index(&self) -> &Index {
        (**self).index()
    }
    fn toc_digest(&self) -> Digest {
        (**self).toc_digest()
    }
    fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(node, offset, buf)
    }
    fn is_local(&self, node: NodeId, range: Range<u64>) -> bool {
        (**self).is_local(node, range)
    }
    fn cached_file(&self, node: NodeId) -> Option<File> {
        (**self).cached_file(node)
    }
    fn stats(&self) -> SourceStats {
        (**self).stats()
    }
}
