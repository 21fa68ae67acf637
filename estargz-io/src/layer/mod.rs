//! [`RemoteLayer`]: an eStargz layer read lazily from a [`BlobSource`].
//!
//! Owns the read path: open (footer and TOC in one suffix request when the TOC is small, the
//! TOC digest checked against the one the caller expects), file reads that take verified
//! chunks from the [`ChunkCache`] or fetch, decode and verify the missing ones, prefetch of the
//! landmark group, and the background fetch (`background.rs`) that always yields to file reads.
//! The format logic is the core crate's sans-I/O API ([`estargz::plan`]); this module only
//! decides what to fetch, when, and where verified bytes are kept.

mod background;
mod metrics;

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use estargz::index::{Chunk, Landmark, NodeId};
use estargz::plan::{
    decode_chunk, decode_toc, tail_range, Compression, ReadPlan, TocLocation, Verify,
};
use estargz::{Digest, Index, OpenOptions};

pub use background::{BackgroundHandle, BackgroundOptions, BackgroundReport, BackgroundState};
pub use metrics::{FetchClass, LayerMetrics, LATENCY_BUCKETS};

use crate::cache::ChunkCache;
use crate::error::{Error, Result};
use crate::plan::{PlanOptions, RangeFetcher};
use crate::source::BlobSource;
use metrics::Metrics;

/// How to open a [`RemoteLayer`].
#[derive(Clone, Debug)]
pub struct LayerOptions {
    /// The TOC digest the layer must have (the manifest's
    /// `containerd.io/snapshot/stargz/toc.digest` annotation). Required unless
    /// [`LayerOptions::allow_unverified_toc`] is set.
    pub expected_toc_digest: Option<Digest>,
    /// Open without an expected TOC digest. The TOC is then trusted as fetched; chunks are
    /// still verified against it.
    pub allow_unverified_toc: bool,
    /// Bytes fetched from the end of the blob when opening (default 1 MiB): a TOC that fits
    /// comes in the same request as the footer.
    pub tail_size: u64,
    /// Format limits, chunk verification, external TOC.
    pub format: OpenOptions,
    /// Request coalescing and splitting.
    pub plan: PlanOptions,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            expected_toc_digest: None,
            allow_unverified_toc: false,
            tail_size: 1 << 20,
            format: OpenOptions::default(),
            plan: PlanOptions::default(),
        }
    }
}

impl LayerOptions {
    /// Options that require the TOC to hash to `digest`.
    pub fn with_toc_digest(digest: Digest) -> LayerOptions {
        LayerOptions {
            expected_toc_digest: Some(digest),
            ..LayerOptions::default()
        }
    }

    /// Options that accept any TOC (the caller takes responsibility).
    pub fn unverified() -> LayerOptions {
        LayerOptions {
            allow_unverified_toc: true,
            ..LayerOptions::default()
        }
    }
}

/// Tracks on-demand reads so that background work can yield to them.
#[derive(Debug)]
pub(crate) struct Activity {
    active: AtomicUsize,
    last_end: Mutex<Instant>,
    changed: tokio::sync::Notify,
}

pub(crate) struct ActivityGuard<'a>(&'a Activity);

impl Drop for ActivityGuard<'_> {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            active: AtomicUsize::new(0),
            last_end: Mutex::new(Instant::now()),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn begin(&self) -> ActivityGuard<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        ActivityGuard(self)
    }

    /// How long to wait before background work may run: `None` when it may run now.
    pub(crate) fn must_wait(&self, quiet: Duration) -> Option<Duration> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return Some(quiet);
        }
        let since = self
            .last_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        (since < quiet).then(|| quiet - since)
    }

    pub(crate) fn busy(&self) -> bool {
        self.active.load(Ordering::SeqCst) > 0
    }
}

/// What [`RemoteLayer::prefetch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchReport {
    /// Chunks in the prefetch range.
    pub chunks: u64,
    /// Of those, already cached.
    pub already_cached: u64,
    /// Source calls made.
    pub requests: u64,
    /// Bytes fetched.
    pub bytes: u64,
}

/// An eStargz layer whose blob lives in a [`BlobSource`], read lazily and verified.
///
/// See the crate documentation for an example.
#[derive(Debug)]
pub struct RemoteLayer {
    fetcher: RangeFetcher,
    location: TocLocation,
    index: Index,
    toc_digest: Digest,
    /// An external TOC as stored (compressed): kept to answer [`RemoteLayer::toc_json`]. A TOC
    /// inside the blob is not kept (the JSON is ~10x the index): it is fetched again on demand.
    external_toc: Option<Bytes>,
    /// The limits the TOC was decoded with.
    format: OpenOptions,
    verify: Verify,
    cache: Arc<ChunkCache>,
    metrics: Metrics,
    activity: Activity,
    describe: String,
}

impl RemoteLayer {
    /// Opens the layer: one suffix request of [`LayerOptions::tail_size`] bytes for the footer
    /// (and the TOC when it fits), one more for a larger TOC, then TOC verification and the
    /// index. Refuses to open without an expected TOC digest unless
    /// [`LayerOptions::allow_unverified_toc`] is set.
    pub async fn open(
        source: Arc<dyn BlobSource>,
        cache: Arc<ChunkCache>,
        opts: LayerOptions,
    ) -> Result<RemoteLayer> {
        let describe = source.describe();
        if opts.expected_toc_digest.is_none() && !opts.allow_unverified_toc {
            return Err(Error::MissingTocDigest(describe));
        }
        let mut format = opts.format.clone();
        format.expected_toc_digest = opts.expected_toc_digest;
        let metrics = Metrics::default();

        let t0 = Instant::now();
        let (tail, blob_size) = source
            .read_tail(opts.tail_size.max(tail_range(0, 0).end))
            .await?;
        metrics.latency(t0.elapsed());
        metrics.fetched(FetchClass::Open, 1, tail.len() as u64);
        let tail_start = blob_size.saturating_sub(tail.len() as u64);
        let location = TocLocation::from_tail(blob_size, &tail)?;
        let stored: Bytes = match (&location.toc_range, &format.external_toc) {
            (Some(r), _) => {
                if r.end - r.start > format.max_toc_compressed_size {
                    return Err(estargz::Error::TocTooLarge {
                        what: "compressed",
                        size: r.end - r.start,
                        limit: format.max_toc_compressed_size,
                    }
                    .into());
                }
                if r.start >= tail_start {
                    let off = (r.start - tail_start) as usize;
                    tail.slice(off..off + (r.end - r.start) as usize)
                } else {
                    let t = Instant::now();
                    let b = source.read_range(r.clone()).await?;
                    metrics.latency(t.elapsed());
                    metrics.fetched(FetchClass::Open, 1, b.len() as u64);
                    b
                }
            }
            (None, Some(ext)) => Bytes::from(ext.clone()),
            (None, None) => {
                return Err(estargz::Error::Toc(format!(
                    "{describe}: the TOC is external (footer STARGZEXTERNALTOC); pass the TOC blob in LayerOptions::format.external_toc"
                ))
                .into())
            }
        };
        let external_toc = location.toc_range.is_none().then(|| stored.clone());
        let (toc_digest, index, location, mut format) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let toc = decode_toc(&location, &stored, &format)?;
                let index = location.build_index(&toc.json, &format)?;
                Ok((toc.digest, index, location, format))
            })
            .await
            .map_err(|e| Error::io("decoding the TOC", e.into()))??;
        format.external_toc = None;
        let verify = if format.verify_chunks {
            Verify::Digest
        } else {
            Verify::Skip
        };
        Ok(RemoteLayer {
            fetcher: RangeFetcher::new(source, opts.plan),
            location,
            index,
            toc_digest,
            external_toc,
            format,
            verify,
            cache,
            metrics,
            activity: Activity::new(),
            describe,
        })
    }

    /// The layer's tree.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The TOC digest (verified against the expected one when given).
    pub fn toc_digest(&self) -> Digest {
        self.toc_digest
    }

    /// The TOC JSON, fetched again from the blob (or decoded again from the external TOC) and
    /// checked against the layer's TOC digest: the layer does not keep it in memory.
    pub async fn toc_json(&self) -> Result<Vec<u8>> {
        let stored = match (&self.location.toc_range, &self.external_toc) {
            (_, Some(ext)) => ext.clone(),
            (Some(r), None) => {
                let t = Instant::now();
                let b = self.fetcher.source().read_range(r.clone()).await?;
                self.metrics.latency(t.elapsed());
                self.metrics.fetched(FetchClass::Open, 1, b.len() as u64);
                b
            }
            (None, None) => {
                return Err(estargz::Error::Toc(format!(
                    "{}: the layer has no TOC range and no external TOC",
                    self.describe
                ))
                .into())
            }
        };
        let location = self.location.clone();
        let format = self.format.clone();
        let toc = tokio::task::spawn_blocking(move || decode_toc(&location, &stored, &format))
            .await
            .map_err(|e| Error::io("decoding the TOC", e.into()))??;
        if toc.digest != self.toc_digest {
            return Err(estargz::Error::TocDigestMismatch {
                expected: self.toc_digest.to_string(),
                actual: toc.digest.to_string(),
            }
            .into());
        }
        Ok(toc.json)
    }

    /// The footer and where the TOC and payload are.
    pub fn location(&self) -> &TocLocation {
        &self.location
    }

    /// The blob's source.
    pub fn source(&self) -> &Arc<dyn BlobSource> {
        self.fetcher.source()
    }

    /// The chunk cache.
    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    /// The layer's counters so far.
    pub fn metrics(&self) -> LayerMetrics {
        self.metrics.snapshot()
    }

    fn compression(&self) -> Compression {
        self.location.compression()
    }

    /// The cache key of `c`: its digest, when chunks are verified (a digest that cannot be
    /// read makes the chunk uncacheable; decoding it then fails with that error).
    fn cacheable(&self, c: &Chunk) -> Option<Digest> {
        (self.verify == Verify::Digest)
            .then(|| self.index.chunk_digest(c).ok().flatten())
            .flatten()
    }

    /// True when every chunk of `range` of file `node` is in the cache (a read will not touch
    /// the network).
    pub fn is_cached(&self, node: NodeId, range: Range<u64>) -> bool {
        let Ok(plan) = ReadPlan::new(
            &self.index,
            node,
            range.start,
            range.end.saturating_sub(range.start),
        ) else {
            return false;
        };
        plan.chunks()
            .iter()
            .all(|c| self.cacheable(c).is_some_and(|d| self.cache.contains(&d)))
    }

    /// Reads up to `buf.len()` bytes of regular file `node` at `offset`, returning how many
    /// (0 at or past the end). Every byte comes from a chunk whose digest matched.
    pub async fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let plan = ReadPlan::new(&self.index, node, offset, buf.len() as u64)?;
        if plan.chunks().is_empty() {
            return Ok(0);
        }
        let _busy = self.activity.begin();
        let datas = self.chunk_data(plan.chunks(), FetchClass::OnDemand).await?;
        let mut n = 0;
        for (c, d) in plan.chunks().iter().zip(&datas) {
            n += plan.copy_chunk_data(c, d, buf);
        }
        Ok(n)
    }

    /// Reads a whole regular file by path (convenient for small files and tests).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let node = self
            .index
            .lookup(path)
            .ok_or_else(|| estargz::Error::NotFound(path.to_owned()))?;
        let size = self.index.attr(node).size;
        let mut buf = vec![
            0u8;
            usize::try_from(size).map_err(|_| Error::InvalidArgument(format!(
                "{path}: {size} bytes"
            )))?
        ];
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(node, done as u64, &mut buf[done..]).await?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// The verified bytes of each of `chunks`: from the cache, else fetched (in one planned
    /// batch), decoded, verified and cached.
    pub(crate) async fn chunk_data(
        &self,
        chunks: &[Chunk],
        class: FetchClass,
    ) -> Result<Vec<Bytes>> {
        let mut out: Vec<Option<Bytes>> = Vec::with_capacity(chunks.len());
        for c in chunks {
            out.push(match self.cacheable(c) {
                Some(d) => self.cache.get(&d).await,
                None => None,
            });
        }
        let missing: Vec<usize> = (0..chunks.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }
        let decoded = self.fetch_and_decode(chunks, &missing, class).await?;
        for (i, b) in missing.into_iter().zip(decoded) {
            out[i] = Some(b);
        }
        out.into_iter()
            .map(|b| b.ok_or_else(|| Error::InvalidArgument("chunk not decoded".into())))
            .collect()
    }

    async fn fetch_and_decode(
        &self,
        chunks: &[Chunk],
        which: &[usize],
        class: FetchClass,
    ) -> Result<Vec<Bytes>> {
        let mut result = Vec::with_capacity(which.len());
        let mut retry_once = true;
        let mut todo: Vec<usize> = (0..which.len()).collect();
        let mut done: Vec<Option<Bytes>> = vec![None; which.len()];
        loop {
            let ranges: Vec<Range<u64>> = todo
                .iter()
                .map(|&k| chunks[which[k]])
                .filter(|c| !c.is_zeros())
                .map(|c| c.blob_range())
                .collect();
            let parts = if ranges.is_empty() {
                Vec::new()
            } else {
                let t = Instant::now();
                let (parts, report) = self.fetcher.fetch(&ranges).await?;
                self.metrics.latency(t.elapsed());
                self.metrics.fetched(class, report.requests, report.bytes);
                self.metrics.joined(report.joined);
                parts
            };
            // Decode off the async threads: decompression and hashing are CPU work.
            let mut parts = parts.into_iter();
            let mut jobs: Vec<(usize, Chunk, Option<Digest>, Bytes)> = Vec::new();
            for &k in &todo {
                let c = chunks[which[k]];
                let data = if c.is_zeros() {
                    Bytes::new()
                } else {
                    parts.next().unwrap_or_default()
                };
                jobs.push((k, c, self.index.chunk_digest(&c)?, data));
            }
            let compression = self.compression();
            let verify = self.verify;
            let decoded = tokio::task::spawn_blocking(move || {
                jobs.into_iter()
                    .map(|(k, c, d, data)| {
                        (k, c, decode_chunk("", &c, d, compression, &data, verify))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| Error::io("decoding chunks", e.into()))?;
            let mut failed = Vec::new();
            let mut first_err = None;
            for (k, c, res) in decoded {
                match res {
                    Ok(vc) => {
                        self.metrics.decoded(1);
                        done[k] = Some(self.cache.insert(vc).await);
                    }
                    Err(e) => {
                        if e.is_integrity() {
                            self.metrics.integrity_failure();
                        }
                        let path = self.path_of_chunk(&c);
                        let e = with_path(e, path);
                        tracing::warn!("{}: {e}", self.describe);
                        failed.push(k);
                        first_err.get_or_insert(e);
                    }
                }
            }
            match first_err {
                None => break,
                // Bytes damaged on the way are fetched once more before giving up.
                Some(e) if retry_once && e.is_integrity() => {
                    retry_once = false;
                    todo = failed;
                }
                Some(e) => return Err(e.into()),
            }
        }
        for b in done {
            result.push(b.ok_or_else(|| Error::InvalidArgument("chunk not decoded".into()))?);
        }
        Ok(result)
    }

    /// The path of the file a chunk belongs to (for error messages; walks the tree).
    fn path_of_chunk(&self, c: &Chunk) -> String {
        let mut found = None;
        self.index.walk(|p, n| {
            if found.is_none() && self.index.chunks(n).iter().any(|x| x == c) {
                found = Some(p.to_owned());
            }
        });
        found.unwrap_or_else(|| format!("<chunk at blob offset {}>", c.blob_offset()))
    }

    /// The chunks before the `.prefetch.landmark` (in blob order, distinct digests, holes
    /// excluded); empty without a prefetch landmark.
    pub fn prefetch_chunks(&self) -> Vec<Chunk> {
        let Landmark::Prefetch { offset } = self.index.landmark() else {
            return Vec::new();
        };
        self.distinct_chunks(|c| c.blob_offset() < offset)
    }

    /// The chunks that `keep` selects, holes excluded, in blob order, one per digest (a chunk
    /// whose digest cannot be read is kept).
    pub(crate) fn distinct_chunks(&self, keep: impl Fn(&Chunk) -> bool) -> Vec<Chunk> {
        let mut v: Vec<Chunk> = self
            .index
            .all_chunks()
            .iter()
            .filter(|c| !c.is_zeros() && keep(c))
            .copied()
            .collect();
        v.sort_by_key(|c| (c.blob_offset(), c.inner_offset()));
        let mut seen = std::collections::HashSet::new();
        v.retain(|c| {
            self.index
                .chunk_digest(c)
                .ok()
                .flatten()
                .is_none_or(|d| seen.insert(d))
        });
        v
    }

    /// Fetches, verifies and caches every chunk before the `.prefetch.landmark` in as few
    /// requests as the plan allows (usually one). Does nothing without a landmark (or with
    /// `.no.prefetch.landmark`).
    pub async fn prefetch(&self) -> Result<PrefetchReport> {
        let chunks = self.prefetch_chunks();
        let mut report = PrefetchReport {
            chunks: chunks.len() as u64,
            ..PrefetchReport::default()
        };
        let missing: Vec<Chunk> = chunks
            .into_iter()
            .filter(|c| !self.cacheable(c).is_some_and(|d| self.cache.contains(&d)))
            .collect();
        report.already_cached = report.chunks - missing.len() as u64;
        if missing.is_empty() {
            return Ok(report);
        }
        let before = self.metrics.snapshot();
        let idx: Vec<usize> = (0..missing.len()).collect();
        // One planned fetch for the whole group: chunk ranges are contiguous, so the plan is
        // one range (split only past PlanOptions::max_request) in one source call.
        let _ = self
            .fetch_and_decode(&missing, &idx, FetchClass::Prefetch)
            .await?;
        let after = self.metrics.snapshot();
        report.requests = after.prefetch_requests - before.prefetch_requests;
        report.bytes = after.prefetch_bytes - before.prefetch_bytes;
        Ok(report)
    }

    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    pub(crate) fn metrics_sink(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn fetcher(&self) -> &RangeFetcher {
        &self.fetcher
    }

    pub(crate) fn is_chunk_cached(&self, c: &Chunk) -> bool {
        self.cacheable(c).is_some_and(|d| self.cache.contains(&d))
    }

    pub(crate) fn decode_params(&self) -> (Compression, Verify) {
        (self.compression(), self.verify)
    }

    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }
}

/// Puts the file's path into a chunk error decoded without one.
fn with_path(e: estargz::Error, p: String) -> estargz::Error {
    match e {
        estargz::Error::ChunkDigestMismatch {
            chunk_offset,
            chunk_size,
            blob_offset,
            expected,
            actual,
            ..
        } => estargz::Error::ChunkDigestMismatch {
            path: p,
            chunk_offset,
            chunk_size,
            blob_offset,
            expected,
            actual,
        },
        estargz::Error::Decompress {
            chunk_offset,
            blob_offset,
            reason,
            ..
        } => estargz::Error::Decompress {
            path: p,
            chunk_offset,
            blob_offset,
            reason,
        },
        estargz::Error::MissingDigest { chunk_offset, .. } => estargz::Error::MissingDigest {
            path: p,
            chunk_offset,
        },
        other => other,
    }
}
