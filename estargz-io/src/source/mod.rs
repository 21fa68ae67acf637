//! Where blob bytes come from: the [`BlobSource`] trait and its implementations.
//!
//! A source knows its length and fetches byte ranges; nothing more. It does not decompress,
//! verify, cache or plan: those belong to [`crate::layer`], [`crate::cache`] and
//! [`crate::plan`]. Implementations: [`FileSource`] (a local file), [`HttpSource`] (a plain
//! HTTP(S) URL) and [`RegistrySource`] (an OCI registry blob, with auth, mirrors and
//! redirects). [`CountingSource`] wraps any of them and counts requests and bytes.

mod counting;
mod file;
mod http;
pub(crate) mod registry;

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub use counting::{CountingSource, SourceCounters};
pub use file::FileSource;
pub use http::{HttpOptions, HttpSource};
pub use registry::{RegistryOptions, RegistrySource};

use crate::error::{Error, RangeList, Result};

/// An async "length + fetch these byte ranges" view of a blob.
///
/// Object safe: layers hold an `Arc<dyn BlobSource>`. Ranges are half-open (`start..end`) and
/// must lie inside the blob; the answer has one `Bytes` per requested range, in request order,
/// each exactly as long as its range.
///
/// ```
/// # async fn demo() -> estargz_io::Result<()> {
/// use estargz_io::source::{BlobSource, FileSource};
///
/// let path = std::env::temp_dir().join("estargz-io-doc-blobsource");
/// std::fs::write(&path, b"hello, world").unwrap();
/// let src = FileSource::open(&path).await?;
/// assert_eq!(src.len().await?, 12);
/// let parts = src.read_ranges(&[0..5, 7..12]).await?;
/// assert_eq!(&parts[0][..], b"hello");
/// assert_eq!(&parts[1][..], b"world");
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
// `len` is the blob's length, fetched (not a collection size): no `is_empty`.
#[allow(clippy::len_without_is_empty)]
#[async_trait]
pub trait BlobSource: Send + Sync + Debug {
    /// Total length of the blob in bytes.
    async fn len(&self) -> Result<u64>;

    /// Fetches every range, in as few requests as the source can (one multi-range request for
    /// a registry that supports it). Returns one buffer per range, in order.
    async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>>;

    /// Fetches one range.
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        let mut parts = self.read_ranges(std::slice::from_ref(&range)).await?;
        parts.pop().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "source returned nothing for {}",
                RangeList::from(range)
            ))
        })
    }

    /// Fetches the last `n` bytes (or the whole blob when it is shorter) and returns them with
    /// the blob's length. HTTP sources do this in one suffix-range request, which also tells
    /// the length, so opening a layer costs a single round trip.
    async fn read_tail(&self, n: u64) -> Result<(Bytes, u64)> {
        let len = self.len().await?;
        let range = len.saturating_sub(n)..len;
        if range.is_empty() {
            return Ok((Bytes::new(), len));
        }
        Ok((self.read_range(range).await?, len))
    }

    /// A short description for logs and errors: the path or URL.
    fn describe(&self) -> String;
}

#[async_trait]
impl<T: BlobSource + ?Sized> BlobSource for std::sync::Arc<T> {
    async fn len(&self) -> Result<u64> {
        (**self).len().await
    }
    async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        (**self).read_ranges(ranges).await
    }
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        (**self).read_range(range).await
    }
    async fn read_tail(&self, n: u64) -> Result<(Bytes, u64)> {
        (**self).read_tail(n).await
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Checks that `ranges` are non-empty and inside a blob of `len` bytes.
pub(crate) fn check_ranges(what: &str, ranges: &[Range<u64>], len: u64) -> Result<()> {
    for r in ranges {
        if r.start >= r.end || r.end > len {
            return Err(Error::InvalidArgument(format!(
                "{what}: range {}..{} is empty or past the end of the blob ({len} bytes)",
                r.start, r.end
            )));
        }
    }
    Ok(())
}
