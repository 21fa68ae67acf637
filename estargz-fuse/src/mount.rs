//! Mount lifecycle: [`Mount`] mounts a layer and unmounts it when dropped; stale mounts left by
//! a killed daemon ("Transport endpoint is not connected") are detected and cleared first.
//!
//! With `auto_unmount` (the default when `fusermount3` is installed) the mount is made through
//! `fusermount3`, which stays behind and unmounts if this process dies, even by `SIGKILL`.
//! Without it, the mount is made directly by `mount(2)` (root only) and a killed process
//! leaves a dead mount, which the next [`Mount::new`] at the same path clears.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::error::{Error, Result};
use crate::fs::{FsOptions, LayerFs, StatsHandle};
use crate::source::LayerSource;
use crate::stats::FsStats;

/// How to mount a layer.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// What the filesystem serves and how.
    pub fs: FsOptions,
    /// Threads reading FUSE requests (each gets its own cloned `/dev/fuse` descriptor).
    pub threads: usize,
    /// Let users other than the mounting one (and root) use the mount.
    pub allow_other: bool,
    /// Mount through `fusermount3` so the mount disappears if this process dies.
    pub auto_unmount: bool,
    /// Let the kernel check permissions from the TOC's mode, uid and gid.
    pub default_permissions: bool,
    /// Honour setuid/setgid bits of the layer's files.
    pub suid: bool,
    /// Allow opening the layer's device nodes.
    pub dev: bool,
    /// The mount's source name (shown by `mount`).
    pub fsname: String,
    /// Clear a dead FUSE mount at the mountpoint before mounting.
    pub clean_stale: bool,
    /// How long [`Mount::unmount`] waits for the kernel to let go before detaching lazily.
    pub unmount_timeout: Duration,
    /// Kernel readahead for the mount, in KiB (`/sys/class/bdi/<dev>/read_ahead_kb`; best
    /// effort, root only). Larger windows mean fewer, larger FUSE reads for sequential I/O.
    /// `None` keeps the kernel's default (128 KiB).
    pub read_ahead_kb: Option<u32>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fs: FsOptions::default(),
            threads: 4,
            allow_other: false,
            auto_unmount: fusermount3_available(),
            default_permissions: true,
            suid: true,
            dev: false,
            fsname: "estargz".into(),
            clean_stale: true,
            unmount_timeout: Duration::from_secs(10),
            read_ahead_kb: Some(1024),
        }
    }
}

/// True when `fusermount3` (Debian `fuse3`) is on `PATH`: needed for `auto_unmount`.
pub fn fusermount3_available() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()))
}

/// A mounted layer. Unmounts when dropped.
#[derive(Debug)]
pub struct Mount {
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    stats: StatsHandle,
    unmount_timeout: Duration,
}

impl Mount {
    /// Mounts `source` at `mountpoint` (an existing directory) and returns once the kernel has
    /// finished the FUSE handshake, so the mount is usable.
    pub fn new<S: LayerSource>(
        source: Arc<S>,
        mountpoint: &Path,
        opts: &MountOptions,
    ) -> Result<Mount> {
        let err = |source: io::Error| Error::Mount {
            mountpoint: mountpoint.to_path_buf(),
            source,
        };
        if opts.clean_stale && clean_stale(mountpoint).map_err(err)? {
            tracing::info!(mountpoint = %mountpoint.display(), "cleared a stale FUSE mount");
        }
        let canonical = mountpoint.canonicalize().map_err(err)?;
        if is_mountpoint(&canonical) {
            return Err(Error::AlreadyMounted(canonical));
        }
        let fs = LayerFs::new(source, opts.fs.clone()).map_err(err)?;
        let stats = fs.stats_handle();
        let mut options = vec![
            MountOption::FSName(opts.fsname.clone()),
            MountOption::Subtype("estargz".into()),
            MountOption::RO,
            MountOption::NoAtime,
            if opts.suid {
                MountOption::Suid
            } else {
                MountOption::NoSuid
            },
            if opts.dev {
                MountOption::Dev
            } else {
                MountOption::NoDev
            },
        ];
        if opts.default_permissions {
            options.push(MountOption::DefaultPermissions);
        }
        if opts.auto_unmount {
            options.push(MountOption::AutoUnmount);
        }
        let mut config = Config::default();
        config.mount_options = options;
        config.acl = if opts.allow_other {
            SessionACL::All
        } else if opts.auto_unmount {
            // fusermount's auto_unmount needs allow_other; the session still only lets root
            // and the owner in.
            SessionACL::RootAndOwner
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(opts.threads.max(1));
        config.clone_fd = opts.threads > 1;
        let session = fuser::spawn_mount(fs, &canonical, &config).map_err(err)?;
        if let Some(kb) = opts.read_ahead_kb {
            set_read_ahead(&canonical, kb);
        }
        Ok(Mount {
            mountpoint: canonical,
            session: Some(session),
            stats,
            unmount_timeout: opts.unmount_timeout,
        })
    }

    /// Where the layer is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What the filesystem has served and the source has fetched so far.
    pub fn stats(&self) -> FsStats {
        self.stats.stats()
    }

    /// A handle on the counters that outlives borrowing the mount.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// False once the FUSE session has ended (someone unmounted it, or the kernel aborted the
    /// connection).
    pub fn is_alive(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts and waits for the session to end. When the filesystem is busy, it is detached
    /// lazily (it disappears from the tree now and goes away when the last user closes it).
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Unmount ourselves first (root may; a busy filesystem refuses, then the lazy path
        // below applies): the FUSE threads see the end of the connection at once, and a
        // fusermount3 waiting to auto-unmount finds nothing left to do when it is released.
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::empty());
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("estargz-unmount".into())
            .spawn(move || {
                let _ = tx.send(session.umount_and_join());
            });
        let clean = match spawned {
            Ok(_) => matches!(rx.recv_timeout(self.unmount_timeout), Ok(Ok(()))),
            Err(_) => false,
        };
        // Whatever happened above, make sure nothing stays mounted here.
        let deadline = Instant::now() + Duration::from_secs(2);
        while is_mountpoint(&self.mountpoint) {
            if Instant::now() >= deadline || !clean {
                return detach(&self.mountpoint).map_err(|source| Error::Unmount {
                    mountpoint: self.mountpoint.clone(),
                    source,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            tracing::warn!(error = %e, "unmount failed");
        }
    }
}

/// Sets the readahead window of the filesystem mounted at `path` (best effort).
fn set_read_ahead(path: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path) else {
        return;
    };
    let dev = md.dev();
    let bdi = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    if let Err(e) = std::fs::write(&bdi, kb.to_string()) {
        tracing::debug!(path = %bdi, error = %e, "cannot set the readahead window");
    }
}

/// True when `path` is a dead FUSE mount (its daemon is gone: the kernel answers
/// `ENOTCONN`, "Transport endpoint is not connected"). Asks with `statfs`, which the kernel
/// never answers from a cache (a `stat` may be served from cached attributes).
pub fn is_stale(path: &Path) -> bool {
    let notconn = rustix::io::Errno::NOTCONN;
    matches!(rustix::fs::statfs(path), Err(e) if e == notconn)
        || matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(notconn.raw_os_error()))
}

/// Clears a dead FUSE mount at `path` (lazy unmount). Returns whether there was one.
pub fn clean_stale(path: &Path) -> io::Result<bool> {
    if !is_stale(path) {
        return Ok(false);
    }
    detach(path)?;
    Ok(true)
}

/// Lazily unmounts `path` (`umount -l`), if it is a mountpoint.
pub fn detach(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL => Ok(()), // not a mountpoint (any more)
        Err(e) => Err(e.into()),
    }
}

/// True when `path` (canonical) is the mountpoint of some mount of this mount namespace.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_encoded_bytes();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), b"/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/x\134y"), b"/x\\y");
        assert_eq!(unescape_mountinfo("/plain"), b"/plain");
    }

    #[test]
    fn root_is_a_mountpoint_and_a_fresh_dir_is_not() {
        assert!(is_mountpoint(Path::new("/")));
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().canonicalize().expect("canonical");
        assert!(!is_mountpoint(&p));
        assert!(!is_stale(&p));
    }
}
