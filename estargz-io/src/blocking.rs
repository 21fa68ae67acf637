//! [`BlockingBlob`]: a [`BlobSource`] as the core crate's synchronous [`ReadAt`], for callers
//! without an async runtime of their own (the CLI, a FUSE thread).
//!
//! Reads are served from a few cached blocks: opening fetches the blob's last block in one
//! suffix request (which tells the length and usually holds the footer and TOC), and a miss
//! fetches the aligned block around it, so the core [`estargz::Reader`] on top needs one
//! request to open and one per block of chunks. Verification stays the core reader's job.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use estargz::ReadAt;
use tokio::runtime::Handle;

use crate::error::Result;
use crate::source::BlobSource;

/// A blocking, block-cached view of a [`BlobSource`]. Must not be used from inside an async
/// task of the same runtime (it blocks on it).
///
/// ```
/// use std::sync::Arc;
/// use estargz_io::blocking::BlockingBlob;
/// use estargz_io::source::FileSource;
///
/// let rt = tokio::runtime::Runtime::new().unwrap();
/// # let blob = estargz_io::doc_blob();
/// let source = Arc::new(rt.block_on(FileSource::open(&blob.path)).unwrap());
/// let view = BlockingBlob::open(rt.handle().clone(), source, 1 << 20).unwrap();
/// let reader = estargz::Reader::open(view).unwrap(); // footer and TOC from the first block
/// assert!(reader.index().lookup("sizes/64k").is_some());
/// ```
#[derive(Debug)]
pub struct BlockingBlob {
    handle: Handle,
    source: Arc<dyn BlobSource>,
    len: u64,
    block: u64,
    blocks: Mutex<VecDeque<(u64, Bytes)>>,
    max_blocks: usize,
}

impl BlockingBlob {
    /// Fetches the last `block` bytes (one request) and returns the view.
    pub fn open(handle: Handle, source: Arc<dyn BlobSource>, block: u64) -> Result<BlockingBlob> {
        let block = block.max(4096);
        let (tail, len) = handle.block_on(source.read_tail(block))?;
        let mut blocks = VecDeque::new();
        blocks.push_back((len - tail.len() as u64, tail));
        Ok(BlockingBlob {
            handle,
            source,
            len,
            block,
            blocks: Mutex::new(blocks),
            max_blocks: 16,
        })
    }

    /// The underlying source.
    pub fn source(&self) -> &Arc<dyn BlobSource> {
        &self.source
    }

    fn cached(&self, off: u64) -> Option<(u64, Bytes)> {
        let b = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        b.iter()
            .find(|(s, d)| *s <= off && off < s + d.len() as u64)
            .cloned()
    }
}

impl ReadAt for BlockingBlob {
    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the blob",
                )
            })?;
        let mut pos = offset;
        while pos < end {
            let (start, data) = match self.cached(pos) {
                Some(hit) => hit,
                None => {
                    let start = pos / self.block * self.block;
                    // Reads larger than a block are fetched whole.
                    let stop = (start + self.block).max(end).min(self.len);
                    let data = self
                        .handle
                        .block_on(self.source.read_range(start..stop))
                        .map_err(io::Error::other)?;
                    let mut b = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
                    if b.len() >= self.max_blocks {
                        b.pop_front();
                    }
                    b.push_back((start, data.clone()));
                    (start, data)
                }
            };
            let from = (pos - start) as usize;
            let n = ((end - pos) as usize).min(data.len() - from);
            let dst = (pos - offset) as usize;
            buf[dst..dst + n].copy_from_slice(&data[from..from + n]);
            pos += n as u64;
        }
        Ok(())
    }
}
