//! The background fetch: the whole layer into the cache, at low priority.
//!
//! Runs one small batch at a time, and only when no file read has been running for
//! [`BackgroundOptions::quiet`]; a file read that starts while a batch is in flight cancels
//! that batch (its request is dropped and redone later), so background work never delays
//! on-demand reads by more than the time to notice. Pausing, resuming and cancelling go
//! through the [`BackgroundHandle`].

use std::sync::Arc;
use std::time::Duration;

use estargz::index::Chunk;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{FetchClass, RemoteLayer};
use crate::error::{Error, Result};

/// How the background fetch runs.
#[derive(Clone, Debug)]
pub struct BackgroundOptions {
    /// Compressed bytes per batch (one source call); smaller yields sooner (default 1 MiB).
    pub batch_bytes: u64,
    /// Time without file reads before a batch may start (default 100 ms).
    pub quiet: Duration,
}

impl Default for BackgroundOptions {
    fn default() -> Self {
        BackgroundOptions {
            batch_bytes: 1 << 20,
            quiet: Duration::from_millis(100),
        }
    }
}

/// The state a background fetch is asked to be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackgroundState {
    /// Fetching (when no file read is running).
    Running,
    /// Waiting until resumed.
    Paused,
    /// Stopping as soon as possible.
    Cancelled,
}

/// What the background fetch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackgroundReport {
    /// Chunks fetched, verified and cached.
    pub chunks: u64,
    /// Batches that were abandoned because a file read started.
    pub yielded: u64,
    /// True when every chunk is cached.
    pub complete: bool,
}

/// Controls a running background fetch. Dropping the handle does not stop it; call
/// [`BackgroundHandle::cancel`].
#[derive(Debug)]
pub struct BackgroundHandle {
    state: watch::Sender<BackgroundState>,
    task: JoinHandle<Result<BackgroundReport>>,
}

impl BackgroundHandle {
    /// Stops fetching after the current batch until [`BackgroundHandle::resume`].
    pub fn pause(&self) {
        self.state.send_replace(BackgroundState::Paused);
    }

    /// Continues after [`BackgroundHandle::pause`].
    pub fn resume(&self) {
        self.state.send_replace(BackgroundState::Running);
    }

    /// Stops for good (the batch in flight is abandoned).
    pub fn cancel(&self) {
        self.state.send_replace(BackgroundState::Cancelled);
    }

    /// True when the fetch has finished (completed, cancelled or failed).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the fetch to end and returns what it did.
    pub async fn wait(self) -> Result<BackgroundReport> {
        self.task
            .await
            .map_err(|e| Error::io("background fetch task", e.into()))?
    }
}

impl RemoteLayer {
    /// Starts fetching every chunk not yet cached, in the background, at low priority.
    pub fn start_background(self: &Arc<Self>, opts: BackgroundOptions) -> BackgroundHandle {
        let (tx, rx) = watch::channel(BackgroundState::Running);
        let layer = Arc::clone(self);
        let task = tokio::spawn(async move { layer.run_background(opts, rx).await });
        BackgroundHandle { state: tx, task }
    }

    /// Waits until background work may run; `false` when cancelled.
    async fn wait_turn(
        &self,
        opts: &BackgroundOptions,
        rx: &mut watch::Receiver<BackgroundState>,
    ) -> bool {
        loop {
            let state = *rx.borrow_and_update();
            match state {
                BackgroundState::Cancelled => return false,
                BackgroundState::Paused => {
                    if rx.changed().await.is_err() {
                        return false;
                    }
                    continue;
                }
                BackgroundState::Running => {}
            }
            match self.activity().must_wait(opts.quiet) {
                None => return true,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        r = rx.changed() => if r.is_err() { return false; },
                    }
                }
            }
        }
    }

    async fn run_background(
        &self,
        opts: BackgroundOptions,
        mut rx: watch::Receiver<BackgroundState>,
    ) -> Result<BackgroundReport> {
        let mut report = BackgroundReport::default();
        // Every distinct chunk in blob order, in batches of about `batch_bytes`.
        let all = self.distinct_chunks(|_| true);
        let mut batches: Vec<Vec<Chunk>> = Vec::new();
        let mut cur: Vec<Chunk> = Vec::new();
        let mut cur_start = 0;
        for c in all {
            if !cur.is_empty() && c.blob_end().saturating_sub(cur_start) > opts.batch_bytes.max(1) {
                batches.push(std::mem::take(&mut cur));
            }
            if cur.is_empty() {
                cur_start = c.blob_offset();
            }
            cur.push(c);
        }
        if !cur.is_empty() {
            batches.push(cur);
        }
        let mut i = 0;
        while i < batches.len() {
            let todo: Vec<Chunk> = batches[i]
                .iter()
                .filter(|c| !self.is_chunk_cached(c))
                .copied()
                .collect();
            if todo.is_empty() {
                i += 1;
                continue;
            }
            if !self.wait_turn(&opts, &mut rx).await {
                return Ok(report);
            }
            let n = todo.len() as u64;
            let fetch = self.background_batch(&todo);
            tokio::pin!(fetch);
            // Abandon the batch as soon as a file read starts (or on cancel/pause).
            let outcome = loop {
                tokio::select! {
                    r = &mut fetch => break Some(r),
                    _ = tokio::time::sleep(Duration::from_millis(2)) => {
                        if self.activity().busy() || *rx.borrow() != BackgroundState::Running {
                            break None;
                        }
                    }
                }
            };
            match outcome {
                Some(Ok(())) => {
                    report.chunks += n;
                    i += 1;
                }
                Some(Err(e)) => return Err(e),
                None => report.yielded += 1,
            }
        }
        report.complete = true;
        Ok(report)
    }

    /// Fetches one batch directly from the source (not through the shared in-flight map, so
    /// that abandoning it cancels the request), then decodes, verifies and caches it.
    async fn background_batch(&self, chunks: &[Chunk]) -> Result<()> {
        let ranges: Vec<std::ops::Range<u64>> = crate::plan::coalesce(
            &chunks.iter().map(Chunk::blob_range).collect::<Vec<_>>(),
            self.fetcher().options(),
        );
        let t = std::time::Instant::now();
        let parts = self.fetcher().source().read_ranges(&ranges).await?;
        self.metrics_sink().latency(t.elapsed());
        let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        self.metrics_sink()
            .fetched(FetchClass::Background, 1, bytes);
        let pieces: Vec<(std::ops::Range<u64>, bytes::Bytes)> =
            ranges.into_iter().zip(parts).collect();
        let (compression, verify) = self.decode_params();
        let mut jobs: Vec<(Chunk, Option<estargz::Digest>, bytes::Bytes)> = Vec::new();
        for c in chunks {
            if let Some(b) = crate::plan::extract(&c.blob_range(), &pieces) {
                jobs.push((*c, self.index().chunk_digest(c)?, b));
            }
        }
        let decoded = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|(c, d, b)| estargz::plan::decode_chunk("", &c, d, compression, &b, verify))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::io("decoding chunks", e.into()))?;
        for r in decoded {
            match r {
                Ok(vc) => {
                    self.metrics_sink().decoded(1);
                    self.cache().insert(vc).await;
                }
                Err(e) => {
                    if e.is_integrity() {
                        self.metrics_sink().integrity_failure();
                    }
                    tracing::warn!("{}: background fetch: {e}", self.describe());
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}
