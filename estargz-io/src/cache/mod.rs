//! [`ChunkCache`]: decompressed, verified chunks, keyed by their digest.
//!
//! Only a [`VerifiedChunk`] can enter (the type says its digest matched), so anything served
//! from here was verified once; the disk tier hashes again on read (see `disk.rs`). Keying by
//! the chunk digest means identical chunks of different files or layers are stored once, and a
//! cache directory can be shared by every layer of a process.
//!
//! Two tiers, each bounded in bytes with least-recently-used eviction: memory (fast, small)
//! and, optionally, disk (survives restarts, crash-safe writes). A disk hit is promoted to
//! memory.

mod disk;
mod lru;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use estargz::plan::VerifiedChunk;
use estargz::Digest;

use crate::error::{Error, Result};
use disk::{DiskRead, DiskTier};
use lru::Lru;

/// Where and how much to cache.
#[derive(Clone, Debug)]
pub struct CacheOptions {
    /// Bytes of chunk data kept in memory (default 256 MiB).
    pub memory_bytes: u64,
    /// Directory of the disk tier; `None` for memory only.
    pub dir: Option<PathBuf>,
    /// Bytes of chunk data kept on disk (default 10 GiB).
    pub disk_bytes: u64,
    /// Hash chunks read from disk again before serving them (default `true`: cheap next to a
    /// disk read, and it makes a torn or tampered file harmless).
    pub verify_disk_reads: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            memory_bytes: 256 << 20,
            dir: None,
            disk_bytes: 10 << 30,
            verify_disk_reads: true,
        }
    }
}

/// Counters of a [`ChunkCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from memory.
    pub memory_hits: u64,
    /// Lookups served from disk.
    pub disk_hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Chunks inserted.
    pub inserts: u64,
    /// Bytes inserted.
    pub inserted_bytes: u64,
    /// Entries evicted from memory.
    pub memory_evictions: u64,
    /// Entries evicted from disk.
    pub disk_evictions: u64,
    /// Disk files dropped because they did not match their digest.
    pub corrupt: u64,
    /// Bytes in memory now.
    pub memory_bytes: u64,
    /// Bytes on disk now.
    pub disk_bytes: u64,
    /// Failed disk writes (the chunk stays in memory only).
    pub write_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    inserted_bytes: AtomicU64,
    memory_evictions: AtomicU64,
    disk_evictions: AtomicU64,
    corrupt: AtomicU64,
    write_errors: AtomicU64,
}

/// A bounded cache of verified chunks. Share it (`Arc`) between layers.
///
/// ```
/// # async fn demo() -> estargz_io::Result<()> {
/// use estargz_io::ChunkCache;
///
/// # let blob = estargz_io::doc_blob();
/// let reader = estargz::Reader::open(std::fs::File::open(&blob.path).unwrap())?;
/// let node = reader.index().lookup("sizes/64k").unwrap();
/// let chunk = reader.index().chunks(node)[0];
/// let verified = reader.read_chunk("sizes/64k", &chunk)?;
///
/// let cache = ChunkCache::memory(1 << 20);
/// cache.insert(verified).await;
/// let digest = reader.index().chunk_digest(&chunk)?.unwrap();
/// let data = cache.get(&digest).await.expect("cached");
/// assert_eq!(data.len(), 65536);
/// assert_eq!(cache.stats().memory_hits, 1);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
#[derive(Debug)]
pub struct ChunkCache {
    memory_max: u64,
    memory: Mutex<Lru<Bytes>>,
    disk: Option<Arc<DiskTier>>,
    counters: Counters,
}

impl ChunkCache {
    /// A memory-only cache of at most `max_bytes`.
    pub fn memory(max_bytes: u64) -> ChunkCache {
        ChunkCache {
            memory_max: max_bytes,
            memory: Mutex::new(Lru::new()),
            disk: None,
            counters: Counters::default(),
        }
    }

    /// A cache as `opts` says; with a directory, removes unfinished writes left by a killed
    /// process and evicts down to the disk bound.
    pub fn open(opts: &CacheOptions) -> Result<ChunkCache> {
        let mut cache = ChunkCache::memory(opts.memory_bytes);
        if let Some(dir) = &opts.dir {
            let (tier, evicted) = DiskTier::open(dir, opts.disk_bytes, opts.verify_disk_reads)?;
            cache
                .counters
                .disk_evictions
                .store(evicted, Ordering::Relaxed);
            cache.disk = Some(Arc::new(tier));
        }
        Ok(cache)
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            memory_hits: l(&c.memory_hits),
            disk_hits: l(&c.disk_hits),
            misses: l(&c.misses),
            inserts: l(&c.inserts),
            inserted_bytes: l(&c.inserted_bytes),
            memory_evictions: l(&c.memory_evictions),
            disk_evictions: l(&c.disk_evictions),
            corrupt: l(&c.corrupt),
            memory_bytes: self.lock_memory().bytes(),
            disk_bytes: self.disk.as_ref().map_or(0, |d| d.bytes()),
            write_errors: l(&c.write_errors),
        }
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, Lru<Bytes>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when the chunk is cached in either tier (no I/O, no counters).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.lock_memory().contains(digest)
            || self.disk.as_ref().is_some_and(|d| d.contains(digest))
    }

    /// The chunk from memory only (no I/O); counts a memory hit when found.
    pub fn get_memory(&self, digest: &Digest) -> Option<Bytes> {
        let hit = self.lock_memory().get(digest);
        if hit.is_some() {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// The chunk's verified bytes, from memory or disk (promoted to memory).
    pub async fn get(&self, digest: &Digest) -> Option<Bytes> {
        if let Some(b) = self.get_memory(digest) {
            return Some(b);
        }
        if let Some(disk) = self.disk.as_ref().filter(|d| d.contains(digest)) {
            let disk = Arc::clone(disk);
            let d = *digest;
            match tokio::task::spawn_blocking(move || disk.get(&d)).await {
                Ok(DiskRead::Hit(data)) => {
                    self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                    let b = Bytes::from(data);
                    self.insert_memory(*digest, b.clone());
                    return Some(b);
                }
                Ok(DiskRead::Corrupt) => {
                    self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                Ok(DiskRead::Miss) | Err(_) => {}
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Blocking variant of [`ChunkCache::get`], for synchronous callers (a FUSE thread).
    pub fn get_blocking(&self, digest: &Digest) -> Option<Bytes> {
        if let Some(b) = self.get_memory(digest) {
            return Some(b);
        }
        if let Some(disk) = &self.disk {
            match disk.get(digest) {
                DiskRead::Hit(data) => {
                    self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                    let b = Bytes::from(data);
                    self.insert_memory(*digest, b.clone());
                    return Some(b);
                }
                DiskRead::Corrupt => {
                    self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                DiskRead::Miss => {}
            }
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    fn insert_memory(&self, digest: Digest, data: Bytes) {
        let size = data.len() as u64;
        let evicted = self
            .lock_memory()
            .insert(digest, data, size, self.memory_max);
        self.counters
            .memory_evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
    }

    /// Caches a verified chunk and returns its bytes (shared with the cache, not copied).
    /// Chunks decoded with verification off, or without a digest, are returned but not
    /// cached. A failed disk write is counted and logged; the chunk stays in memory.
    pub async fn insert(&self, chunk: VerifiedChunk) -> Bytes {
        let (digest, data) = match self.admit(chunk) {
            Ok(admitted) => admitted,
            Err(data) => return data,
        };
        if let Some(disk) = &self.disk {
            let disk = Arc::clone(disk);
            let d = data.clone();
            let res = tokio::task::spawn_blocking(move || disk.put(&digest, &d)).await;
            self.after_disk_put(
                res.unwrap_or_else(|e| Err(Error::io("cache write task", e.into()))),
            );
        }
        data
    }

    /// Blocking variant of [`ChunkCache::insert`].
    pub fn insert_blocking(&self, chunk: VerifiedChunk) -> Bytes {
        let (digest, data) = match self.admit(chunk) {
            Ok(admitted) => admitted,
            Err(data) => return data,
        };
        if let Some(disk) = &self.disk {
            self.after_disk_put(disk.put(&digest, &data));
        }
        data
    }

    /// Puts a chunk in memory; `Err(bytes)` for a chunk that may not be cached (unverified or
    /// without a digest).
    fn admit(&self, chunk: VerifiedChunk) -> std::result::Result<(Digest, Bytes), Bytes> {
        let digest = chunk.digest();
        let data = Bytes::from(chunk.into_data());
        let Some(digest) = digest else {
            return Err(data);
        };
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        self.counters
            .inserted_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.insert_memory(digest, data.clone());
        Ok((digest, data))
    }

    fn after_disk_put(&self, res: Result<u64>) {
        match res {
            Ok(evicted) => {
                self.counters
                    .disk_evictions
                    .fetch_add(evicted, Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("chunk cache: {e}");
            }
        }
    }

    /// Drops a chunk from both tiers.
    pub fn remove(&self, digest: &Digest) {
        self.lock_memory().remove(digest);
        if let Some(d) = &self.disk {
            d.remove(digest);
        }
    }
}
