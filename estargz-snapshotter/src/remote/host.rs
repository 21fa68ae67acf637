//! The FUSE mounts of remote layers, in whichever process hosts them (the daemon itself, or
//! the FUSE manager that outlives it).
//!
//! One `estargz_fuse::Mount` per layer snapshot, keyed by mountpoint. Resolving a layer
//! (labels → a verified [`LayerSource`]) is [`resolve`]: it checks the TOC digest before
//! anything is mounted, so a layer whose TOC does not match is never served.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use estargz_fuse::{
    LayerSource, LocalLayer, LocalOptions, Mount, MountOptions, RemoteOptions, RemoteSource,
};
use estargz_io::auth::Keychain;
use estargz_io::cache::CacheOptions;
use estargz_io::config::{
    HostConfig as IoHostConfig, MirrorConfig as IoMirrorConfig, RegistryConfig,
};
use estargz_io::source::{RegistryOptions, RegistrySource};
use estargz_io::{ChunkCache, LayerOptions};

use super::labels::{self, LayerRef, VerifyPolicy};
use crate::config::Config;
use crate::snapshotter::{Fallback, RemoteProgress};

struct Mounted {
    mount: Mount,
    digest: String,
}

/// The mounted layers of this process.
pub struct LayerHost {
    config: Config,
    mounts: Mutex<HashMap<PathBuf, Mounted>>,
    /// The chunk cache of registry layers, opened at the first registry mount.
    chunks: Mutex<Option<Arc<ChunkCache>>>,
    /// Registry layers opened ahead of their own mount (see [`LayerHost::mount`]), by blob
    /// digest.
    ahead: Mutex<HashMap<String, Ahead>>,
}

/// How long a layer opened ahead waits for its mount before it is dropped (containerd skips
/// the Prepare of a layer it already has).
const AHEAD_TTL: Duration = Duration::from_secs(120);

/// The result of opening a layer ahead: set once by the thread that opens it.
type AheadResult = Arc<(Mutex<Option<Result<Arc<RemoteSource>, Fallback>>>, Condvar)>;

/// A layer being opened, or opened, ahead of its mount.
struct Ahead {
    result: AheadResult,
    since: Instant,
}

impl std::fmt::Debug for LayerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerHost")
            .field("mounts", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Opens the layer the labels describe, verified against its TOC digest.
///
/// `cache_dir` is this mount's own directory (whole verified files of local blobs);
/// `chunks` gives the chunk cache shared by every registry layer of this process.
pub fn resolve(
    config: &Config,
    layer: &LayerRef,
    cache_dir: &Path,
    chunks: impl FnOnce() -> Result<Arc<ChunkCache>, Fallback>,
) -> Result<Arc<dyn LayerSource>, Fallback> {
    let mut opts = LocalOptions::default();
    opts.open.expected_toc_digest = layer.toc_digest;
    opts.open.verify_chunks = !config.disable_verification;
    // Chunk digests (a third of a small file's index) wait in an unlinked file under the root.
    opts.open.digest_dir = Some(config.root.clone());
    opts.prefetch = !config.noprefetch;
    opts.background_fetch = !config.no_background_fetch;
    if config.filesystem_cache_type != "memory" {
        opts.cache_dir = Some(cache_dir.to_path_buf());
    }
    // Local copies first: `file://` alternative URLs, then the configured local directories.
    for path in local_candidates(config, &layer.digest.to_string(), &layer.urls) {
        if path.is_file() {
            return match LocalLayer::open(&path, opts.clone()) {
                Ok(l) => Ok(Arc::new(l)),
                Err(e) => Err(classify(&e.to_string(), &path.display().to_string())),
            };
        }
    }
    open_registry(config, layer, chunks()?)
}

/// Where a local copy of blob `digest` may be: `file://` URLs, then the `local_dirs`.
fn local_candidates(config: &Config, digest: &str, urls: &[String]) -> Vec<PathBuf> {
    let (algo, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    let mut candidates: Vec<PathBuf> = urls
        .iter()
        .filter_map(|u| u.strip_prefix("file://"))
        .map(PathBuf::from)
        .collect();
    for dir in &config.resolver.local_dirs {
        candidates.push(dir.join(algo).join(hex));
        candidates.push(dir.join("blobs").join(algo).join(hex));
    }
    candidates
}

/// The registry settings of `config` as `estargz-io` takes them: hosts and mirrors from
/// `[resolver.host]`, credentials from `[credentials]` (or the usual places), timeouts.
pub fn registry_options(config: &Config) -> RegistryOptions {
    let hosts = config
        .resolver
        .host
        .iter()
        .map(|(host, h)| IoHostConfig {
            host: host.clone(),
            mirrors: h
                .mirrors
                .iter()
                .map(|m| IoMirrorConfig {
                    host: m.host.clone(),
                    plain_http: m.insecure,
                    headers: m
                        .header
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                            )
                        })
                        .collect(),
                    insecure_skip_verify: false,
                    path: None,
                })
                .collect(),
            plain_http: estargz_io::config::is_loopback(host),
            insecure_skip_verify: false,
            headers: BTreeMap::new(),
            mirrors_only: false,
        })
        .collect();
    let keychain = if config.credentials.docker_config.as_os_str().is_empty() {
        Keychain::from_environment()
    } else {
        Keychain::empty().with_file(config.credentials.docker_config.clone())
    };
    let mut opts = RegistryOptions {
        config: RegistryConfig { hosts },
        keychain: Arc::new(keychain),
        ..RegistryOptions::default()
    };
    // `[blob]`: retries and backoff as stargz-snapshotter spells them; one fetch's timeout.
    let retry = &mut opts.engine.retry;
    retry.max_attempts = config.blob.max_retries.saturating_add(1);
    if config.blob.min_wait_msec > 0 {
        retry.initial_backoff = Duration::from_millis(config.blob.min_wait_msec);
    }
    if config.blob.max_wait_msec > 0 {
        retry.max_backoff = Duration::from_millis(config.blob.max_wait_msec);
    }
    if config.blob.fetching_timeout_sec > 0 {
        retry.request_timeout = Duration::from_secs(config.blob.fetching_timeout_sec);
    }
    if config.resolver.request_timeout_sec > 0 {
        retry.connect_timeout = Duration::from_secs(config.resolver.request_timeout_sec as u64);
    }
    opts.engine.force_single_range = config.blob.force_single_range_mode;
    opts
}

/// The chunk cache of registry layers: verified chunks only, keyed by digest, so one cache is
/// safely shared by every layer (a chunk several layers hold is fetched once). On disk under
/// `ROOT/cache/chunks` unless `filesystem_cache_type = "memory"`, bounded by
/// `[cache] max_size_bytes` with least-recently-used eviction.
pub fn open_chunk_cache(config: &Config) -> Result<ChunkCache, Fallback> {
    let dir = config.root.join("cache").join("chunks");
    ChunkCache::open(&CacheOptions {
        memory_bytes: 64 << 20,
        dir: (config.filesystem_cache_type != "memory").then(|| dir.clone()),
        disk_bytes: config.cache.max_size_bytes,
        ..CacheOptions::default()
    })
    .map_err(|e| Fallback {
        kind: "cache",
        reason: format!("chunk cache in {}: {e}", dir.display()),
    })
}

/// Opens the layer from its registry (mirrors first, as configured), verified against its TOC
/// digest, reading through the shared chunk cache.
fn open_registry(
    config: &Config,
    layer: &LayerRef,
    cache: Arc<ChunkCache>,
) -> Result<Arc<dyn LayerSource>, Fallback> {
    let remote = RemoteOptions {
        prefetch: !config.noprefetch,
        background_fetch: !config.no_background_fetch,
        ..RemoteOptions::default()
    };
    Ok(open_registry_source(config, layer, cache, remote)?)
}

/// [`open_registry`], starting what `remote` says.
fn open_registry_source(
    config: &Config,
    layer: &LayerRef,
    cache: Arc<ChunkCache>,
    remote: RemoteOptions,
) -> Result<Arc<RemoteSource>, Fallback> {
    let mut reference: estargz_io::Reference =
        layer
            .reference
            .parse()
            .map_err(|e: estargz_io::Error| Fallback {
                kind: "reference",
                reason: format!("image reference {:?}: {e}", layer.reference),
            })?;
    reference.tag = None;
    reference.digest = Some(layer.digest);
    let rt = io_runtime().map_err(|e| Fallback {
        kind: "registry",
        reason: format!("cannot start the I/O runtime: {e}"),
    })?;
    // In the runtime's context, so that the layers share one HTTP client (TLS roots,
    // connection pool) instead of building one each.
    let source = {
        let _runtime = rt.handle().enter();
        RegistrySource::new(&reference, registry_options(config))
    }
    .map_err(|e| Fallback {
        kind: "registry",
        reason: format!("{reference}: {e}"),
    })?;
    let mut opts = match layer.toc_digest {
        Some(d) => LayerOptions::with_toc_digest(d),
        None => LayerOptions::unverified(),
    };
    opts.format.verify_chunks = !config.disable_verification;
    opts.format.digest_dir = Some(config.root.clone());
    match RemoteSource::open_on(rt.handle(), Arc::new(source), cache, opts, &remote) {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) => Err(classify_registry(&e.to_string(), &reference.to_string())),
    }
}

/// The tokio runtime every registry layer of this process runs its fetches on: 2 to 4 workers
/// (the work is network waits and chunk verification). One runtime per layer cost two threads,
/// an I/O driver and a timer wheel per mounted layer.
fn io_runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)))
        .thread_name("estargz-io")
        .enable_all()
        .build()?;
    // Two threads racing here build two runtimes; the loser's is dropped (outside any runtime,
    // so dropping does not panic).
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Like [`classify`], for a registry open: network and HTTP errors are `registry`.
fn classify_registry(err: &str, what: &str) -> Fallback {
    let f = classify(err, what);
    if f.kind == "open" {
        Fallback {
            kind: "registry",
            reason: f.reason,
        }
    } else {
        f
    }
}

/// A fallback class for an open error: a TOC digest mismatch, a blob that is not eStargz, or
/// anything else.
fn classify(err: &str, what: &str) -> Fallback {
    let lower = err.to_ascii_lowercase();
    let kind = if lower.contains("toc digest") || lower.contains("toc_digest") {
        "toc-digest-mismatch"
    } else if lower.contains("footer")
        || lower.contains("not an estargz")
        || lower.contains("magic")
    {
        "not-estargz"
    } else {
        "open"
    };
    Fallback {
        kind,
        reason: format!("{what}: {err}"),
    }
}

impl LayerHost {
    /// A host with no mounts.
    pub fn new(config: Config) -> Self {
        LayerHost {
            config,
            mounts: Mutex::new(HashMap::new()),
            chunks: Mutex::new(None),
            ahead: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Mounted>> {
        self.mounts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A cache directory per mount: a mirror that serves damaged bytes must not poison the
    /// cache of another mount of the same digest. Removed at unmount.
    fn cache_dir(&self, mountpoint: &Path) -> PathBuf {
        use sha2::Digest as _;
        let h = hex::encode(sha2::Sha256::digest(
            mountpoint.as_os_str().as_encoded_bytes(),
        ));
        self.config.root.join("cache").join(&h[..24])
    }

    /// Mounts the layer described by `labels` at `mountpoint`.
    pub fn mount(
        &self,
        mountpoint: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Fallback> {
        let r = self.mount_layer(mountpoint, labels);
        // Opening a layer parses its whole TOC: ~1 KiB of short-lived allocations per entry
        // that leave free but resident holes between the index's long-lived allocations.
        crate::malloc::trim();
        r
    }

    fn mount_layer(
        &self,
        mountpoint: &Path,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), Fallback> {
        if self.is_mounted(mountpoint) {
            return Ok(());
        }
        let policy = VerifyPolicy {
            disable: self.config.disable_verification,
            allow_skip_label: self.config.allow_no_verification,
        };
        let layer = labels::parse(labels, policy)?;
        let digest = layer.digest.to_string();
        self.open_ahead(&layer);
        let (source, ahead) = match self.take_ahead(&layer) {
            Some(s) => (s, true),
            None => (
                resolve(&self.config, &layer, &self.cache_dir(mountpoint), || {
                    self.chunk_cache()
                })?,
                false,
            ),
        };
        let mut opts = MountOptions {
            auto_unmount: false,
            allow_other: true,
            ..MountOptions::default()
        };
        opts.fsname = format!("estargz:{}", &digest[..digest.len().min(19)]);
        opts.fs.passthrough = self.config.fuse.passthrough;
        opts.fs.read_timeout = Some(Duration::from_secs(
            self.config.blob.fetching_timeout_sec.max(1),
        ));
        let mount = Mount::new(Arc::new(source), mountpoint, &opts).map_err(|e| Fallback {
            kind: "mount",
            reason: format!("FUSE mount at {}: {e}", mountpoint.display()),
        })?;
        tracing::info!(mountpoint = %mountpoint.display(), digest = %digest, reference = %layer.reference, opened_ahead = ahead, "layer mounted");
        self.lock()
            .insert(mountpoint.to_path_buf(), Mounted { mount, digest });
        Ok(())
    }

    /// The chunk cache shared by registry layers, opened on first use.
    fn chunk_cache(&self) -> Result<Arc<ChunkCache>, Fallback> {
        let mut slot = self
            .chunks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(open_chunk_cache(&self.config)?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Opens, on threads of their own, the registry layers of the same image that the labels
    /// list after this one (`stargz.layers`) and that are neither mounted nor local, and
    /// starts their prefetch: containerd prepares layers one after another, and by the time
    /// it asks for the next one its TOC is read and its prioritised files are on their way.
    /// A layer opened ahead is not verified yet (its TOC digest label comes with its own
    /// mount); nothing of it is served before [`LayerHost::take_ahead`] checks the digest,
    /// and what prefetch caches is keyed and checked by chunk digest. Its background fetch
    /// starts at its mount. Unclaimed ones are dropped after [`AHEAD_TTL`].
    fn open_ahead(&self, layer: &LayerRef) {
        let mut ahead = self
            .ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ahead.retain(|_, a| a.since.elapsed() < AHEAD_TTL);
        let mounted: Vec<String> = self.lock().values().map(|m| m.digest.clone()).collect();
        let own = layer.digest.to_string();
        for other in &layer.layers {
            if *other == own
                || ahead.contains_key(other)
                || mounted.contains(other)
                || local_candidates(&self.config, other, &[])
                    .iter()
                    .any(|p| p.is_file())
            {
                continue;
            }
            let Ok(digest) = other.parse::<estargz::Digest>() else {
                continue;
            };
            let Ok(cache) = self.chunk_cache() else {
                return;
            };
            let result: AheadResult = Arc::default();
            ahead.insert(
                other.clone(),
                Ahead {
                    result: Arc::clone(&result),
                    since: Instant::now(),
                },
            );
            let config = self.config.clone();
            let target = LayerRef {
                digest,
                toc_digest: None,
                layers: Vec::new(),
                urls: Vec::new(),
                ..layer.clone()
            };
            let spawned = std::thread::Builder::new()
                .name("estargz-ahead".into())
                .spawn(move || {
                    let remote = RemoteOptions {
                        prefetch: !config.noprefetch,
                        background_fetch: false,
                        runtime_threads: 2,
                        ..RemoteOptions::default()
                    };
                    let r = open_registry_source(&config, &target, cache, remote);
                    match &r {
                        Ok(_) => tracing::debug!(digest = %target.digest, "layer opened ahead of its mount"),
                        Err(f) => tracing::debug!(digest = %target.digest, reason = %f.reason, "opening a layer ahead failed"),
                    }
                    let (slot, ready) = &*result;
                    *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
                    ready.notify_all();
                });
            if spawned.is_err() {
                ahead.remove(other);
            }
        }
    }

    /// The layer opened ahead for `layer`'s digest, once its TOC digest matches the label
    /// (waiting for the open to finish, within the fetch timeout); `None` to open it the
    /// usual way (never opened ahead, failed, or another TOC).
    fn take_ahead(&self, layer: &LayerRef) -> Option<Arc<dyn LayerSource>> {
        let entry = self
            .ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&layer.digest.to_string())?;
        let (slot, ready) = &*entry.result;
        let timeout = Duration::from_secs(self.config.blob.fetching_timeout_sec.max(1));
        let guard = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut guard, _) = ready
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let source = guard.take()?.ok()?;
        if let Some(expected) = layer.toc_digest {
            if source.layer().toc_digest() != expected {
                tracing::warn!(digest = %layer.digest, "the layer opened ahead has another TOC digest than its label: opened again");
                return None;
            }
        }
        source.start(&RemoteOptions {
            prefetch: false,
            background_fetch: !self.config.no_background_fetch,
            ..RemoteOptions::default()
        });
        Some(source)
    }

    /// Whether a live mount of ours is at `mountpoint`.
    pub fn is_mounted(&self, mountpoint: &Path) -> bool {
        self.lock()
            .get(mountpoint)
            .is_some_and(|m| m.mount.is_alive())
    }

    /// Checks a mounted layer.
    pub fn check(&self, mountpoint: &Path) -> Result<(), String> {
        match self.lock().get(mountpoint) {
            Some(m) if m.mount.is_alive() => Ok(()),
            Some(_) => Err("the layer's FUSE session ended".to_owned()),
            None => Err("the layer is not mounted".to_owned()),
        }
    }

    /// Unmounts the layer at `mountpoint`.
    pub fn unmount(&self, mountpoint: &Path) -> Result<(), String> {
        let m = self.lock().remove(mountpoint);
        let result = match m {
            Some(m) => m.mount.unmount().map_err(|e| e.to_string()),
            None => Ok(()),
        };
        let _ = std::fs::remove_dir_all(self.cache_dir(mountpoint));
        crate::malloc::trim();
        result
    }

    /// Progress of the layer at `mountpoint`.
    pub fn progress(&self, mountpoint: &Path) -> Option<RemoteProgress> {
        let mounts = self.lock();
        let m = mounts.get(mountpoint)?;
        let s = m.mount.stats();
        Some(RemoteProgress {
            size: s.source.blob_size,
            fetched: s.source.fetched_bytes,
            error: s.last_error,
        })
    }

    /// Every mountpoint and layer digest.
    pub fn list(&self) -> Vec<(PathBuf, String)> {
        self.lock()
            .iter()
            .map(|(p, m)| (p.clone(), m.digest.clone()))
            .collect()
    }

    /// Unmounts everything.
    pub fn unmount_all(&self) {
        let all: Vec<PathBuf> = self.lock().keys().cloned().collect();
        for p in all {
            let _ = self.unmount(&p);
        }
    }
}
