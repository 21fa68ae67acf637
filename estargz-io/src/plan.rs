//! Range planning: which requests to send for the blob ranges a read needs.
//!
//! Owns three decisions: ranges of nearby chunks are fetched together when the gap between
//! them is small ([`PlanOptions::max_gap`]: one round trip costs far more than a few KiB of
//! extra bytes), very large requests are split ([`PlanOptions::max_request`]) so that one slow
//! request does not hold everything, and a range already being fetched by someone else is
//! waited for instead of fetched twice ([`RangeFetcher`]). It never decodes or verifies bytes.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::error::{Error, Result};
use crate::source::BlobSource;

/// How requests are formed from needed ranges.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    /// Ranges closer than this are fetched in one request, with the gap (default 64 KiB).
    pub max_gap: u64,
    /// Requests are split so that none is larger than this (default 16 MiB).
    pub max_request: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            max_gap: 64 << 10,
            max_request: 16 << 20,
        }
    }
}

/// Sorts `ranges`, merges those that overlap or are at most `max_gap` apart, and splits the
/// result so that no request is larger than `max_request` (splitting between ranges where
/// possible, inside a range only when it alone is larger).
///
/// ```
/// use estargz_io::plan::{coalesce, PlanOptions};
///
/// let opts = PlanOptions { max_gap: 5, max_request: 100 };
/// assert_eq!(coalesce(&[30..40, 0..10, 15..20], &opts), vec![0..20, 30..40]);
/// assert_eq!(coalesce(&[0..250], &opts), vec![0..100, 100..200, 200..250]);
/// ```
pub fn coalesce(ranges: &[Range<u64>], opts: &PlanOptions) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| (r.start, r.end));
    let max_request = opts.max_request.max(1);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last)
                if r.start <= last.end.saturating_add(opts.max_gap)
                    && (r.end.max(last.end) - last.start <= max_request || r.start < last.end) =>
            {
                last.end = last.end.max(r.end);
            }
            _ => out.push(r),
        }
    }
    // Split what is still too large (single huge ranges, or overlapping ones).
    let mut split = Vec::with_capacity(out.len());
    for r in out {
        let mut s = r.start;
        while r.end - s > max_request {
            split.push(s..s + max_request);
            s += max_request;
        }
        split.push(s..r.end);
    }
    split
}

/// Cuts `needed` out of fetched `pieces` (sorted, non-overlapping, with their bytes). A range
/// spanning several pieces is reassembled. `None` when a byte is not covered.
pub fn extract(needed: &Range<u64>, pieces: &[(Range<u64>, Bytes)]) -> Option<Bytes> {
    let i = pieces.partition_point(|(r, _)| r.end <= needed.start);
    let (first, data) = pieces.get(i)?;
    if first.start > needed.start {
        return None;
    }
    if needed.end <= first.end {
        let off = (needed.start - first.start) as usize;
        return data
            .get(off..off + (needed.end - needed.start) as usize)
            .map(|_| data.slice(off..off + (needed.end - needed.start) as usize));
    }
    let mut buf = BytesMut::with_capacity((needed.end - needed.start) as usize);
    let mut pos = needed.start;
    for (r, d) in &pieces[i..] {
        if pos >= needed.end {
            break;
        }
        if r.start > pos {
            return None;
        }
        let from = (pos - r.start) as usize;
        let to = (needed.end.min(r.end) - r.start) as usize;
        buf.extend_from_slice(d.get(from..to)?);
        pos = r.start + to as u64;
    }
    (pos >= needed.end).then(|| buf.freeze())
}

type Batch = Shared<BoxFuture<'static, std::result::Result<Arc<Vec<Bytes>>, Arc<Error>>>>;

/// A batch to wait for, and which of its pieces (range, index in the batch) hold a range.
type Wait = (Batch, Vec<(Range<u64>, usize)>);

#[derive(Debug, Clone)]
struct InFlight {
    id: u64,
    range: Range<u64>,
    index: usize,
    batch: Batch,
}

/// What one [`RangeFetcher::fetch`] call cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// `read_ranges` calls made on the source (0 when everything was already in flight).
    pub requests: u64,
    /// Bytes those calls fetched (gaps included).
    pub bytes: u64,
    /// Needed ranges served by a fetch someone else had already started.
    pub joined: u64,
}

/// Fetches ranges through a [`BlobSource`], coalescing them per [`PlanOptions`] and
/// deduplicating ranges already in flight. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct RangeFetcher {
    source: Arc<dyn BlobSource>,
    opts: PlanOptions,
    inflight: Arc<Mutex<Vec<InFlight>>>,
    next_id: AtomicU64,
}

impl RangeFetcher {
    /// A fetcher over `source`.
    pub fn new(source: Arc<dyn BlobSource>, opts: PlanOptions) -> RangeFetcher {
        RangeFetcher {
            source,
            opts,
            inflight: Arc::new(Mutex::new(Vec::new())),
            next_id: AtomicU64::new(1),
        }
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn BlobSource> {
        &self.source
    }

    /// The planning options.
    pub fn options(&self) -> &PlanOptions {
        &self.opts
    }

    /// Fetches every range of `needed` (one `Bytes` per range, in order) with as few source
    /// calls as the plan allows, joining fetches already in flight. The fetch runs in its own
    /// task, so dropping this future does not cancel it for others waiting on the same bytes.
    pub async fn fetch(&self, needed: &[Range<u64>]) -> Result<(Vec<Bytes>, FetchReport)> {
        let mut report = FetchReport::default();
        // For each needed range: (batch, pieces of that batch that cover it).
        let mut waits: Vec<Wait> = Vec::with_capacity(needed.len());
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            let mut todo: Vec<usize> = Vec::new();
            let mut slots: Vec<Option<Wait>> = vec![None; needed.len()];
            for (i, r) in needed.iter().enumerate() {
                if let Some(f) = inflight
                    .iter()
                    .find(|f| f.range.start <= r.start && r.end <= f.range.end)
                {
                    report.joined += 1;
                    slots[i] = Some((f.batch.clone(), vec![(f.range.clone(), f.index)]));
                } else {
                    todo.push(i);
                }
            }
            if !todo.is_empty() {
                let wanted: Vec<Range<u64>> = todo.iter().map(|&i| needed[i].clone()).collect();
                let plan = coalesce(&wanted, &self.opts);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let source = Arc::clone(&self.source);
                let registry = Arc::clone(&self.inflight);
                let plan_for_task = plan.clone();
                let handle = tokio::spawn(async move {
                    let res = source.read_ranges(&plan_for_task).await;
                    registry
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|f| f.id != id);
                    res.map(Arc::new).map_err(Arc::new)
                });
                let batch: Batch = async move {
                    match handle.await {
                        Ok(r) => r,
                        Err(e) => Err(Arc::new(Error::io("fetch task", e.into()))),
                    }
                }
                .boxed()
                .shared();
                report.requests += 1;
                report.bytes += plan.iter().map(|r| r.end - r.start).sum::<u64>();
                for (index, range) in plan.iter().enumerate() {
                    inflight.push(InFlight {
                        id,
                        range: range.clone(),
                        index,
                        batch: batch.clone(),
                    });
                }
                for &i in &todo {
                    let r = &needed[i];
                    let pieces: Vec<(Range<u64>, usize)> = plan
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.start < r.end && r.start < p.end)
                        .map(|(k, p)| (p.clone(), k))
                        .collect();
                    slots[i] = Some((batch.clone(), pieces));
                }
            }
            for s in slots {
                waits.push(s.ok_or_else(|| Error::InvalidArgument("unplanned range".into()))?);
            }
        }
        let mut out = Vec::with_capacity(needed.len());
        for (r, (batch, pieces)) in needed.iter().zip(waits) {
            let parts = batch.await.map_err(Error::Shared)?;
            let with_data: Vec<(Range<u64>, Bytes)> = pieces
                .into_iter()
                .filter_map(|(pr, k)| parts.get(k).map(|b| (pr, b.clone())))
                .collect();
            let b = extract(r, &with_data).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: fetched data does not cover {}..{}",
                    self.source.describe(),
                    r.start,
                    r.end
                ))
            })?;
            out.push(b);
        }
        Ok((out, report))
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::source::{CountingSource, FileSource};

    #[test]
    fn coalesce_bridges_and_splits() {
        let o = PlanOptions {
            max_gap: 5,
            max_request: 50,
        };
        assert_eq!(coalesce(&[], &o), Vec::<Range<u64>>::new());
        assert_eq!(coalesce(&[0..10, 12..20, 40..45], &o), vec![0..20, 40..45]);
        // Overlaps always merge.
        assert_eq!(coalesce(&[0..10, 5..8, 9..30], &o), vec![0..30]);
        // A group never grows past max_request by bridging.
        assert_eq!(coalesce(&[0..30, 31..60], &o), vec![0..30, 31..60]);
        assert_eq!(coalesce(&[0..120], &o), vec![0..50, 50..100, 100..120]);
    }

    #[test]
    fn extract_reassembles() {
        let pieces = vec![
            (0..4, Bytes::from_static(b"abcd")),
            (4..8, Bytes::from_static(b"efgh")),
        ];
        assert_eq!(
            extract(&(1..3), &pieces).unwrap(),
            Bytes::from_static(b"bc")
        );
        assert_eq!(
            extract(&(2..7), &pieces).unwrap(),
            Bytes::from_static(b"cdefg")
        );
        assert!(extract(&(6..9), &pieces).is_none());
        assert!(extract(&(9..10), &pieces).is_none());
    }

    #[tokio::test]
    async fn fetcher_coalesces_and_dedupes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let src = Arc::new(CountingSource::new(FileSource::open(&p).await.unwrap()));
        let f = Arc::new(RangeFetcher::new(
            src.clone(),
            PlanOptions {
                max_gap: 1000,
                max_request: 1 << 20,
            },
        ));
        let (parts, rep) = f.fetch(&[10..20, 500..600, 50_000..50_010]).await.unwrap();
        assert_eq!(&parts[0][..], &data[10..20]);
        assert_eq!(&parts[1][..], &data[500..600]);
        assert_eq!(&parts[2][..], &data[50_000..50_010]);
        assert_eq!(rep.requests, 1);
        let c = src.counters();
        assert_eq!(
            (c.calls, c.ranges),
            (1, 2),
            "two coalesced ranges in one call"
        );
        // Concurrent identical fetches: one source call.
        let before = src.counters().calls;
        let (a, b) = tokio::join!(f.fetch(&[70_000..80_000]), f.fetch(&[71_000..72_000]));
        assert_eq!(&a.unwrap().0[0][..], &data[70_000..80_000]);
        assert_eq!(&b.unwrap().0[0][..], &data[71_000..72_000]);
        assert_eq!(src.counters().calls - before, 1);
    }
}
