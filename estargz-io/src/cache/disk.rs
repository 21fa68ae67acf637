//! The disk tier: one file per verified chunk, named by its digest.
//!
//! Layout: `<dir>/chunks/<hex[0..2]>/<hex>` for committed chunks, `<dir>/tmp/` for writes in
//! progress. A write goes to a fresh file in `tmp/`, is fsynced, then renamed into place, so a
//! process killed at any moment leaves either no chunk or a whole one; leftovers in `tmp/` are
//! deleted when the cache is opened. Reads hash the file again and drop it on a mismatch (bit
//! rot, a foreign writer, a filesystem that reordered the rename), so a torn or wrong chunk is
//! never served. One process uses a directory at a time.
//!
//! All functions here block: the [`super::ChunkCache`] calls them on the blocking pool.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use estargz::Digest;

use super::lru::Lru;
use crate::error::{Error, Result};

#[derive(Debug)]
pub(crate) struct DiskTier {
    dir: PathBuf,
    max_bytes: u64,
    verify_on_read: bool,
    index: Mutex<Lru<()>>,
}

pub(crate) enum DiskRead {
    Hit(Vec<u8>),
    Miss,
    /// The file was there but did not hash to its name: deleted.
    Corrupt,
}

impl DiskTier {
    /// Opens (creating) `dir`, removes unfinished writes and rebuilds the LRU index from the
    /// files' modification times, evicting down to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64, verify_on_read: bool) -> Result<(DiskTier, u64)> {
        let io =
            |what: &str, p: &Path, e: io::Error| Error::io(format!("{what} {}", p.display()), e);
        let chunks = dir.join("chunks");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&chunks).map_err(|e| io("creating", &chunks, e))?;
        fs::create_dir_all(&tmp).map_err(|e| io("creating", &tmp, e))?;
        for e in fs::read_dir(&tmp).map_err(|e| io("listing", &tmp, e))? {
            let e = e.map_err(|e| io("listing", &tmp, e))?;
            let _ = fs::remove_file(e.path());
        }
        let mut found: Vec<(SystemTime, Digest, u64)> = Vec::new();
        for sub in fs::read_dir(&chunks).map_err(|e| io("listing", &chunks, e))? {
            let sub = sub.map_err(|e| io("listing", &chunks, e))?.path();
            if !sub.is_dir() {
                let _ = fs::remove_file(&sub);
                continue;
            }
            for f in fs::read_dir(&sub).map_err(|e| io("listing", &sub, e))? {
                let f = f.map_err(|e| io("listing", &sub, e))?;
                let path = f.path();
                let name = f.file_name();
                let digest = name
                    .to_str()
                    .and_then(|n| Digest::parse(&format!("sha256:{n}")).ok());
                let meta = f.metadata().ok();
                match (digest, meta) {
                    (Some(d), Some(m)) if m.is_file() => {
                        found.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), d, m.len()))
                    }
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_by_key(|(t, _, _)| *t);
        let mut index = Lru::new();
        let tier = DiskTier {
            dir: dir.to_path_buf(),
            max_bytes,
            verify_on_read,
            index: Mutex::new(Lru::new()),
        };
        let mut evicted = 0;
        for (_, d, size) in found {
            for (old, ()) in index.insert(d, (), size, max_bytes) {
                let _ = fs::remove_file(tier.path(&old));
                evicted += 1;
            }
        }
        *tier.index.lock().unwrap_or_else(|e| e.into_inner()) = index;
        Ok((tier, evicted))
    }

    fn path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.dir.join("chunks").join(&hex[..2]).join(hex)
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(d)
    }

    pub fn bytes(&self) -> u64 {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).bytes()
    }

    pub fn get(&self, d: &Digest) -> DiskRead {
        if self
            .index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(d)
            .is_none()
        {
            return DiskRead::Miss;
        }
        let path = self.path(d);
        match fs::read(&path) {
            Ok(data) => {
                if self.verify_on_read && Digest::of(&data) != *d {
                    tracing::warn!(
                        "cache file {} does not match its digest; removed",
                        path.display()
                    );
                    self.remove(d);
                    DiskRead::Corrupt
                } else {
                    DiskRead::Hit(data)
                }
            }
            Err(_) => {
                self.index
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(d);
                DiskRead::Miss
            }
        }
    }

    /// Writes a chunk crash-safely; returns how many entries were evicted.
    pub fn put(&self, d: &Digest, data: &[u8]) -> Result<u64> {
        if self.contains(d) {
            return Ok(0);
        }
        let hex = d.hex();
        let final_path = self.path(d);
        let tmp = self.dir.join("tmp").join(format!(
            "{hex}.{}.{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            if let Some(parent) = final_path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(&tmp, &final_path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(
                format!("writing cache file {}", final_path.display()),
                e,
            ));
        }
        let evicted = self.index.lock().unwrap_or_else(|e| e.into_inner()).insert(
            *d,
            (),
            data.len() as u64,
            self.max_bytes,
        );
        for (old, ()) in &evicted {
            let _ = fs::remove_file(self.path(old));
        }
        Ok(evicted.len() as u64)
    }

    pub fn remove(&self, d: &Digest) {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(d);
        let _ = fs::remove_file(self.path(d));
    }
}
