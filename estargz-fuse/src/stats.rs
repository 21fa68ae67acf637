//! Counters of what the filesystem served: shared between the FUSE threads and the
//! [`crate::Mount`] handle, read with [`crate::Mount::stats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::source::SourceStats;

/// What a mounted layer has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// `read` requests that reached the filesystem (passthrough reads never do).
    pub reads: u64,
    /// Bytes returned by those reads.
    pub served_bytes: u64,
    /// Reads answered with `EIO` because the source failed (bad digest, I/O error, ...).
    pub read_errors: u64,
    /// Reads answered with `EIO` because the source did not answer before the deadline.
    pub read_timeouts: u64,
    /// Opens of regular files served by the filesystem.
    pub opens: u64,
    /// Opens handed to the kernel for passthrough.
    pub passthrough_opens: u64,
    /// Lookups (positive and negative).
    pub lookups: u64,
    /// The last error that became an `EIO`, if any.
    pub last_error: Option<String>,
    /// The source's counters (bytes fetched, cached files).
    pub source: SourceStats,
}

impl std::fmt::Display for FsStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.source;
        let pct = if s.blob_size > 0 {
            s.fetched_bytes as f64 * 100.0 / s.blob_size as f64
        } else {
            0.0
        };
        write!(
            f,
            "fetched {} of {} blob bytes ({pct:.1}%); served {} bytes in {} reads \
             ({} errors, {} timeouts); {} opens, {} with passthrough; {} files ({} bytes) cached",
            s.fetched_bytes,
            s.blob_size,
            self.served_bytes,
            self.reads,
            self.read_errors,
            self.read_timeouts,
            self.opens,
            self.passthrough_opens,
            s.cached_files,
            s.cached_bytes,
        )
    }
}

/// The live counters behind [`FsStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub reads: AtomicU64,
    pub served_bytes: AtomicU64,
    pub read_errors: AtomicU64,
    pub read_timeouts: AtomicU64,
    pub opens: AtomicU64,
    pub passthrough_opens: AtomicU64,
    pub lookups: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn error(&self, msg: String) {
        tracing::warn!("{msg}");
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg);
        }
    }

    pub fn snapshot(&self, source: SourceStats) -> FsStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FsStats {
            reads: get(&self.reads),
            served_bytes: get(&self.served_bytes),
            read_errors: get(&self.read_errors),
            read_timeouts: get(&self.read_timeouts),
            opens: get(&self.opens),
            passthrough_opens: get(&self.passthrough_opens),
            lookups: get(&self.lookups),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            source,
        }
    }
}
