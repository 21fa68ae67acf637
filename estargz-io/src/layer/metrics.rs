//! Per-layer counters: what was fetched, why (on demand, prefetch, background), how many
//! requests, and how long they took.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why bytes were fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchClass {
    /// Opening the layer (footer and TOC).
    Open,
    /// A file read that missed the cache.
    OnDemand,
    /// [`super::RemoteLayer::prefetch`].
    Prefetch,
    /// The background fetch of the whole layer.
    Background,
}

/// Latency buckets: `< 1 ms`, `< 2 ms`, `< 4 ms`, ... `< 2^(N-1) ms`, and the rest.
pub const LATENCY_BUCKETS: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    bytes: [AtomicU64; 4],
    requests: [AtomicU64; 4],
    joined: AtomicU64,
    chunks_decoded: AtomicU64,
    integrity_failures: AtomicU64,
    lat_count: AtomicU64,
    lat_sum_us: AtomicU64,
    lat_max_us: AtomicU64,
    lat_buckets: [AtomicU64; LATENCY_BUCKETS],
}

/// A snapshot of a layer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerMetrics {
    /// Bytes fetched to open the layer (footer, TOC).
    pub open_bytes: u64,
    /// Bytes fetched by file reads that missed the cache.
    pub on_demand_bytes: u64,
    /// Bytes fetched by prefetch.
    pub prefetch_bytes: u64,
    /// Bytes fetched by the background fetch.
    pub background_bytes: u64,
    /// Source calls (each one request when the server does multi-range) to open the layer.
    pub open_requests: u64,
    /// Source calls for on-demand reads.
    pub on_demand_requests: u64,
    /// Source calls for prefetch.
    pub prefetch_requests: u64,
    /// Source calls for the background fetch.
    pub background_requests: u64,
    /// Ranges served by a fetch already in flight.
    pub joined: u64,
    /// Chunks decompressed and verified.
    pub chunks_decoded: u64,
    /// Chunks whose bytes did not match their digest (never served, never cached).
    pub integrity_failures: u64,
    /// Fetches timed.
    pub latency_count: u64,
    /// Their total time, in microseconds.
    pub latency_sum_us: u64,
    /// The slowest, in microseconds.
    pub latency_max_us: u64,
    /// Histogram: bucket `i` counts fetches faster than `2^i` ms (the last: all slower ones).
    pub latency_buckets: [u64; LATENCY_BUCKETS],
}

impl LayerMetrics {
    /// All bytes fetched.
    pub fn total_bytes(&self) -> u64 {
        self.open_bytes + self.on_demand_bytes + self.prefetch_bytes + self.background_bytes
    }

    /// All source calls.
    pub fn total_requests(&self) -> u64 {
        self.open_requests
            + self.on_demand_requests
            + self.prefetch_requests
            + self.background_requests
    }
}

impl Metrics {
    fn slot(class: FetchClass) -> usize {
        match class {
            FetchClass::Open => 0,
            FetchClass::OnDemand => 1,
            FetchClass::Prefetch => 2,
            FetchClass::Background => 3,
        }
    }

    pub fn fetched(&self, class: FetchClass, requests: u64, bytes: u64) {
        let i = Self::slot(class);
        self.requests[i].fetch_add(requests, Ordering::Relaxed);
        self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn joined(&self, n: u64) {
        self.joined.fetch_add(n, Ordering::Relaxed);
    }

    pub fn decoded(&self, n: u64) {
        self.chunks_decoded.fetch_add(n, Ordering::Relaxed);
    }

    pub fn integrity_failure(&self) {
        self.integrity_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn latency(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.lat_count.fetch_add(1, Ordering::Relaxed);
        self.lat_sum_us.fetch_add(us, Ordering::Relaxed);
        self.lat_max_us.fetch_max(us, Ordering::Relaxed);
        let ms = us / 1000;
        let b = if ms == 0 {
            0
        } else {
            (64 - ms.leading_zeros()) as usize
        };
        self.lat_buckets[b.min(LATENCY_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LayerMetrics {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut buckets = [0; LATENCY_BUCKETS];
        for (o, b) in buckets.iter_mut().zip(&self.lat_buckets) {
            *o = l(b);
        }
        LayerMetrics {
            open_bytes: l(&self.bytes[0]),
            on_demand_bytes: l(&self.bytes[1]),
            prefetch_bytes: l(&self.bytes[2]),
            background_bytes: l(&self.bytes[3]),
            open_requests: l(&self.requests[0]),
            on_demand_requests: l(&self.requests[1]),
            prefetch_requests: l(&self.requests[2]),
            background_requests: l(&self.requests[3]),
            joined: l(&self.joined),
            chunks_decoded: l(&self.chunks_decoded),
            integrity_failures: l(&self.integrity_failures),
            latency_count: l(&self.lat_count),
            latency_sum_us: l(&self.lat_sum_us),
            latency_max_us: l(&self.lat_max_us),
            latency_buckets: buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets() {
        let m = Metrics::default();
        m.latency(Duration::from_micros(500));
        m.latency(Duration::from_millis(3));
        m.latency(Duration::from_secs(1000));
        let s = m.snapshot();
        assert_eq!(s.latency_count, 3);
        assert_eq!(s.latency_buckets[0], 1);
        assert_eq!(s.latency_buckets[2], 1);
        assert_eq!(s.latency_buckets[LATENCY_BUCKETS - 1], 1);
        assert_eq!(s.latency_max_us, 1_000_000_000);
    }
}
