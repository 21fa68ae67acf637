//! [`CountingSource`]: counts what a source was asked for (requests, ranges, bytes).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::BlobSource;
use crate::error::Result;

/// What a [`CountingSource`] has served so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Calls of `read_ranges` / `read_range` / `read_tail`.
    pub calls: u64,
    /// Ranges requested.
    pub ranges: u64,
    /// Bytes returned.
    pub bytes: u64,
}

/// Wraps a source and counts calls, ranges and bytes, for tests and benchmarks.
///
/// ```
/// # async fn demo() -> estargz_io::Result<()> {
/// use estargz_io::source::{BlobSource, CountingSource, FileSource};
///
/// let path = std::env::temp_dir().join("estargz-io-doc-counting");
/// std::fs::write(&path, b"0123456789").unwrap();
/// let src = CountingSource::new(FileSource::open(&path).await?);
/// src.read_ranges(&[0..2, 5..9]).await?;
/// assert_eq!(src.counters().bytes, 6);
/// assert_eq!(src.counters().calls, 1);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug)]
pub struct CountingSource<S> {
    inner: S,
    calls: AtomicU64,
    ranges: AtomicU64,
    bytes: AtomicU64,
}

impl<S> CountingSource<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        CountingSource {
            inner,
            calls: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> SourceCounters {
        SourceCounters {
            calls: self.calls.load(Ordering::Relaxed),
            ranges: self.ranges.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Wraps `inner` in an `Arc`, ready to hand to a layer while keeping a handle on the
    /// counters.
    pub fn shared(inner: S) -> Arc<Self> {
        Arc::new(Self::new(inner))
    }

    fn count(&self, parts: &[Bytes]) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.ranges.fetch_add(parts.len() as u64, Ordering::Relaxed);
        let n: usize = parts.iter().map(Bytes::len).sum();
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[async_trait]
impl<S: BlobSource> BlobSource for CountingSource<S> {
    async fn len(&self) -> Result<u64> {
        self.inner.len().await
    }

    async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let parts = self.inner.read_ranges(ranges).await?;
        self.count(&parts);
        Ok(parts)
    }

    async fn read_tail(&self, n: u64) -> Result<(Bytes, u64)> {
        let (tail, len) = self.inner.read_tail(n).await?;
        self.count(std::slice::from_ref(&tail));
        Ok((tail, len))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}
