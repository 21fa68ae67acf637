//! [`RemoteSource`]: `estargz-io`'s [`RemoteLayer`] (a blob in a registry, behind an HTTP(S)
//! URL, or any other [`BlobSource`]) as a [`LayerSource`].
//!
//! The layer is async; the filesystem is not. A `RemoteSource` holds a tokio runtime (its own,
//! or a handle on the caller's) and each `read_at` blocks its worker thread on the layer's
//! verified read. Reads whose chunks are all in the [`ChunkCache`] are reported local
//! ([`LayerSource::is_local`]) and served on the FUSE thread; every other read runs on a
//! worker with the filesystem's deadline, so a registry that stalls or dies gives `EIO` after
//! the read timeout (the fetch keeps going in the background and a later read asks again).
//!
//! Never serves a byte whose chunk digest did not match: that is the layer's guarantee, and a
//! chunk that fails verification is an error here (`EIO` in the mount), never data.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use estargz::index::{NodeId, NodeKind};
use estargz::{Digest, Index};
use estargz_io::layer::{BackgroundHandle, BackgroundOptions, LayerMetrics};
use estargz_io::{BlobSource, ChunkCache, LayerOptions, RemoteLayer};
use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};
use crate::source::{LayerSource, SourceStats};

/// What a [`RemoteSource`] starts right after opening.
#[derive(Clone, Debug, Default)]
pub struct RemoteOptions {
    /// Fetch, verify and cache the prioritised chunks (those before the `.prefetch.landmark`)
    /// in the background right after opening.
    pub prefetch: bool,
    /// Fetch every chunk in the background at low priority (after prefetch; always yielding to
    /// file reads).
    pub background_fetch: bool,
    /// How the background fetch runs.
    pub background: BackgroundOptions,
    /// Worker threads of the runtime a [`RemoteSource::open`] creates (at least 1).
    pub runtime_threads: usize,
}

/// A remote layer served to the filesystem. See the module documentation.
///
/// ```no_run
/// use std::sync::Arc;
/// use estargz_fuse::{Mount, MountOptions, RemoteOptions, RemoteSource};
/// use estargz_io::source::{HttpOptions, HttpSource};
/// use estargz_io::{ChunkCache, LayerOptions};
///
/// let src = HttpSource::new("http://127.0.0.1:8080/layer.esgz", HttpOptions::default())?;
/// let layer = RemoteSource::open(
///     Arc::new(src),
///     Arc::new(ChunkCache::memory(256 << 20)),
///     LayerOptions::with_toc_digest("sha256:...".parse()?),
///     RemoteOptions::default(),
/// )?;
/// let mount = Mount::new(Arc::new(layer), "/mnt/layer".as_ref(), &MountOptions::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RemoteSource {
    layer: Arc<RemoteLayer>,
    handle: Handle,
    /// The runtime this source created, shut down (without blocking) when it is dropped.
    runtime: Option<Runtime>,
    blob_size: u64,
    background: Arc<Mutex<BackgroundSlot>>,
}

impl RemoteSource {
    /// Creates a runtime, opens the layer on it (footer, TOC, TOC digest check) and starts
    /// prefetch and background fetch as `remote` says. Blocks: call it from a thread outside
    /// any tokio runtime (for example in `spawn_blocking`); a process serving many layers can
    /// share one runtime with [`RemoteSource::open_on`] or [`RemoteSource::from_layer`] instead.
    pub fn open(
        source: Arc<dyn BlobSource>,
        cache: Arc<ChunkCache>,
        opts: LayerOptions,
        remote: RemoteOptions,
    ) -> Result<RemoteSource> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(remote.runtime_threads.max(1))
            .thread_name("estargz-io")
            .enable_all()
            .build()
            .map_err(|e| Error::Remote {
                what: source.describe(),
                source: Box::new(estargz_io::Error::io("starting the I/O runtime", e)),
            })?;
        let mut s = RemoteSource::open_on(runtime.handle(), source, cache, opts, &remote)?;
        s.runtime = Some(runtime);
        Ok(s)
    }

    /// Like [`RemoteSource::open`], on a runtime the caller already has (a process serving
    /// many layers runs them all on one). Blocks; call it from outside that runtime.
    pub fn open_on(
        handle: &Handle,
        source: Arc<dyn BlobSource>,
        cache: Arc<ChunkCache>,
        opts: LayerOptions,
        remote: &RemoteOptions,
    ) -> Result<RemoteSource> {
        let what = source.describe();
        let layer = handle
            .block_on(RemoteLayer::open(source, cache, opts))
            .map_err(|e| Error::Remote {
                what,
                source: Box::new(e),
            })?;
        let s = RemoteSource::from_layer(Arc::new(layer), handle.clone());
        s.start(remote);
        Ok(s)
    }

    /// Serves an already open layer, running its futures on `handle`. Prefetch and background
    /// fetch start only when asked ([`RemoteSource::start`]). `read_at` must then not be called
    /// from a thread of that runtime (the filesystem never does).
    pub fn from_layer(layer: Arc<RemoteLayer>, handle: Handle) -> RemoteSource {
        RemoteSource {
            blob_size: layer.location().blob_size,
            layer,
            handle,
            runtime: None,
            background: Arc::default(),
        }
    }

    /// Starts prefetch and/or the background fetch as `opts` says. The background fetch starts
    /// after prefetch, at most once per source.
    pub fn start(&self, opts: &RemoteOptions) {
        if !opts.prefetch && !opts.background_fetch {
            return;
        }
        let background = if opts.background_fetch {
            let Ok(mut slot) = self.background.lock() else {
                return;
            };
            if slot.started || slot.cancelled {
                None
            } else {
                slot.started = true;
                Some(opts.background.clone())
            }
        } else {
            None
        };
        if !opts.prefetch && background.is_none() {
            return;
        }
        let layer = Arc::clone(&self.layer);
        let prefetch = opts.prefetch;
        let slot = Arc::clone(&self.background);
        self.handle.spawn(async move {
            if prefetch {
                match layer.prefetch().await {
                    Ok(r) => tracing::debug!(
                        chunks = r.chunks,
                        bytes = r.bytes,
                        requests = r.requests,
                        "prefetch done"
                    ),
                    Err(e) => tracing::warn!(error = %e, "prefetch failed"),
                }
            }
            if let Some(o) = background {
                if let Ok(mut s) = slot.lock() {
                    if !s.cancelled {
                        s.handle = Some(layer.start_background(o));
                    }
                }
            }
        });
    }

    /// Stops the background fetch, if one runs or is about to (the batch in flight is
    /// abandoned).
    pub fn cancel_background(&self) {
        if let Ok(mut s) = self.background.lock() {
            s.cancelled = true;
            if let Some(h) = s.handle.take() {
                h.cancel();
            }
        }
    }

    /// True once a background fetch was started and has finished (every chunk cached, or
    /// failed, or cancelled).
    pub fn background_finished(&self) -> bool {
        self.background
            .lock()
            .ok()
            .and_then(|s| s.handle.as_ref().map(BackgroundHandle::is_finished))
            .unwrap_or(false)
    }

    /// The underlying layer.
    pub fn layer(&self) -> &Arc<RemoteLayer> {
        &self.layer
    }

    /// The runtime handle the layer's futures run on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The layer's fetch counters (bytes and requests by cause, latencies).
    pub fn metrics(&self) -> LayerMetrics {
        self.layer.metrics()
    }

    /// Regular files whose every chunk is cached, and their total size.
    fn cached_files(&self) -> (u64, u64) {
        let index = self.layer.index();
        let mut files = 0;
        let mut bytes = 0;
        for n in (0..index.node_count() as u32).map(NodeId) {
            let a = index.attr(n);
            if a.kind == NodeKind::File && a.size > 0 && self.layer.is_cached(n, 0..a.size) {
                files += 1;
                bytes += a.size;
            }
        }
        (files, bytes)
    }
}

/// The background fetch of a [`RemoteSource`]: asked for, running, or cancelled.
#[derive(Debug, Default)]
struct BackgroundSlot {
    started: bool,
    cancelled: bool,
    handle: Option<BackgroundHandle>,
}

impl Drop for RemoteSource {
    fn drop(&mut self) {
        self.cancel_background();
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime blocks; this one may be dropped from anywhere.
            rt.shutdown_background();
        }
    }
}

fn to_io(e: estargz_io::Error) -> io::Error {
    if e.is_integrity() {
        io::Error::new(io::ErrorKind::InvalidData, e)
    } else {
        io::Error::other(e)
    }
}

impl LayerSource for RemoteSource {
    fn index(&self) -> &Index {
        self.layer.index()
    }

    fn toc_digest(&self) -> Digest {
        self.layer.toc_digest()
    }

    fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.layer.index().attr(node).kind != NodeKind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {} is not a regular file", node.0),
            ));
        }
        self.handle
            .block_on(self.layer.read_at(node, offset, buf))
            .map_err(to_io)
    }

    fn is_local(&self, node: NodeId, range: Range<u64>) -> bool {
        let size = self.layer.index().attr(node).size;
        let range = range.start.min(size)..range.end.min(size);
        range.is_empty() || self.layer.is_cached(node, range)
    }

    fn stats(&self) -> SourceStats {
        let (cached_files, cached_bytes) = self.cached_files();
        SourceStats {
            blob_size: self.blob_size,
            fetched_bytes: self.layer.metrics().total_bytes(),
            cached_files,
            cached_bytes,
        }
    }
}
