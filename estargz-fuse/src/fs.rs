//! [`LayerFs`]: the `fuser::Filesystem` over a [`LayerSource`].
//!
//! Read-only and stateless about inodes: inode numbers are node ids + 1 (see [`crate::attr`]),
//! so `lookup`/`forget` need no table. The only per-open state is which files are open in
//! passthrough mode, because the kernel refuses to mix cached and passthrough opens of one
//! inode. Never panics in a callback: every failure is an errno (almost always `EIO` for data),
//! and is counted.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, UNIX_EPOCH};

use estargz::index::{NodeId, NodeKind};
use estargz::Index;
use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use crate::attr::{self, BLOCK_SIZE};
use crate::dispatch::{Deadlines, ReadPool, ReplySlot};
use crate::source::LayerSource;
use crate::stats::{Counters, FsStats};
use crate::tree::Tree;

/// Which xattr marks an opaque directory (one containing `.wh..wh..opq`) for overlayfs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpaqueXattr {
    /// `trusted.overlay.opaque=y`: what overlayfs reads when mounted by root (the default).
    #[default]
    Trusted,
    /// `user.overlay.opaque=y`: what overlayfs reads with the `userxattr` mount option.
    User,
    /// Both names.
    Both,
}

impl OpaqueXattr {
    /// The xattr names to expose, in `listxattr` order.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            OpaqueXattr::Trusted => &["trusted.overlay.opaque"],
            OpaqueXattr::User => &["user.overlay.opaque"],
            OpaqueXattr::Both => &["trusted.overlay.opaque", "user.overlay.opaque"],
        }
    }
}

/// Options of the filesystem (what it serves and how), independent of how it is mounted.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Which opaque xattr(s) opaque directories carry.
    pub opaque_xattr: OpaqueXattr,
    /// A read that the source has not answered after this long gets `EIO` (the source keeps
    /// trying in the background; a later read asks again). `None` waits forever. Only reads
    /// the source does not call local ([`LayerSource::is_local`]) have a deadline.
    pub read_timeout: Option<Duration>,
    /// Hand files whose whole content is cached locally to the kernel (FUSE passthrough,
    /// Linux ≥ 6.9). Falls back to normal reads when the kernel refuses.
    pub passthrough: bool,
    /// Keep the kernel's page cache of a file across opens (`FOPEN_KEEP_CACHE`): safe, the
    /// layer never changes.
    pub keep_cache: bool,
    /// Attribute and entry cache timeout (long: the layer never changes).
    pub ttl: Duration,
    /// Most threads serving reads that may wait on the network.
    pub max_read_threads: usize,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            opaque_xattr: OpaqueXattr::default(),
            read_timeout: Some(Duration::from_secs(30)),
            passthrough: false,
            keep_cache: true,
            ttl: Duration::from_secs(365 * 24 * 3600),
            max_read_threads: 64,
        }
    }
}

/// Open counts of one regular file, and its passthrough backing while any passthrough open
/// lives (the kernel wants one backing id per inode reused by every open).
#[derive(Debug, Default)]
struct NodeOpens {
    normal: u32,
    passthrough: u32,
    backing: Weak<BackingId>,
}

#[derive(Debug, Default)]
struct Handles {
    nodes: HashMap<NodeId, NodeOpens>,
    /// Passthrough handles keep their backing id alive.
    backings: HashMap<u64, Arc<BackingId>>,
}

/// Low bit of a file handle: set for passthrough opens.
const FH_PASSTHROUGH: u64 = 1;

/// An eStargz layer as a read-only FUSE filesystem. Mount it with [`crate::Mount`].
#[derive(Debug)]
pub struct LayerFs<S: LayerSource> {
    source: Arc<S>,
    tree: Tree,
    opts: FsOptions,
    generation: Generation,
    counters: Arc<Counters>,
    pool: ReadPool,
    deadlines: Option<Deadlines>,
    passthrough: AtomicBool,
    handles: Mutex<Handles>,
    next_fh: AtomicU64,
    total_blocks: u64,
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Reads until `buf` is full or the source reports the end of the file.
fn read_full<S: LayerSource + ?Sized>(
    source: &S,
    node: NodeId,
    offset: u64,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = source.read_at(node, offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

impl<S: LayerSource> LayerFs<S> {
    /// A filesystem serving `source`.
    pub fn new(source: Arc<S>, opts: FsOptions) -> std::io::Result<LayerFs<S>> {
        let index = source.index();
        let tree = Tree::new(index);
        let (whiteouts, opaque) = tree.counts();
        tracing::debug!(
            nodes = index.node_count(),
            whiteouts,
            opaque,
            "layer tree ready"
        );
        let total_blocks = (0..index.node_count() as u32)
            .map(|n| index.attr(NodeId(n)).size.div_ceil(u64::from(BLOCK_SIZE)))
            .sum();
        let counters = Arc::new(Counters::default());
        let deadlines = match opts.read_timeout {
            Some(_) => Some(Deadlines::new(Arc::clone(&counters))?),
            None => None,
        };
        Ok(LayerFs {
            generation: Generation(attr::generation(&source.toc_digest())),
            tree,
            counters,
            pool: ReadPool::new(opts.max_read_threads),
            deadlines,
            passthrough: AtomicBool::new(false),
            handles: Mutex::new(Handles::default()),
            next_fh: AtomicU64::new(1),
            total_blocks,
            source,
            opts,
        })
    }

    /// A handle on the counters, readable while the filesystem is mounted.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            counters: Arc::clone(&self.counters),
            source: Arc::clone(&self.source) as Arc<dyn LayerSource>,
        }
    }

    fn index(&self) -> &Index {
        self.source.index()
    }

    /// The node of `ino`, if it exists.
    fn node(&self, ino: INodeNo) -> Option<NodeId> {
        attr::node(ino).filter(|n| (n.0 as usize) < self.index().node_count())
    }

    fn kind(&self, node: NodeId) -> NodeKind {
        if self.tree.is_whiteout(node) {
            NodeKind::CharDevice
        } else {
            self.index().attr(node).kind
        }
    }

    fn file_attr(&self, node: NodeId) -> FileAttr {
        let a = self.index().attr(node);
        if self.tree.is_whiteout(node) {
            attr::whiteout_attr(node, &a)
        } else {
            attr::file_attr(node, &a)
        }
    }

    /// `ino` as a directory, or the errno to answer.
    fn dir(&self, ino: INodeNo) -> Result<NodeId, Errno> {
        let node = self.node(ino).ok_or(Errno::ENOENT)?;
        if self.kind(node) == NodeKind::Dir {
            Ok(node)
        } else {
            Err(Errno::ENOTDIR)
        }
    }

    /// `ino` as a regular file, or the errno to answer.
    fn file(&self, ino: INodeNo) -> Result<NodeId, Errno> {
        let node = self.node(ino).ok_or(Errno::ENOENT)?;
        match self.kind(node) {
            NodeKind::File => Ok(node),
            NodeKind::Dir => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    /// The value of xattr `name` of `node`.
    fn xattr(&self, node: NodeId, name: &[u8]) -> Option<Vec<u8>> {
        if self.tree.is_whiteout(node) {
            return None;
        }
        if self.tree.is_opaque(node)
            && self
                .opts
                .opaque_xattr
                .names()
                .iter()
                .any(|n| n.as_bytes() == name)
        {
            return Some(b"y".to_vec());
        }
        self.index()
            .xattrs(node)
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| v.to_vec())
    }

    /// `listxattr`'s answer: NUL-terminated names, opaque names first.
    fn xattr_names(&self, node: NodeId) -> Vec<u8> {
        let mut out = Vec::new();
        if self.tree.is_whiteout(node) {
            return out;
        }
        let opaque: &[&str] = if self.tree.is_opaque(node) {
            self.opts.opaque_xattr.names()
        } else {
            &[]
        };
        for n in opaque {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        for (n, _) in self.index().xattrs(node) {
            if !opaque.contains(&n) {
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
        }
        out
    }

    fn read_failed(counters: &Counters, node: NodeId, offset: u64, e: &std::io::Error) {
        Counters::add(&counters.read_errors, 1);
        counters.error(format!("read of node {} at {offset}: {e}", node.0));
    }

    /// Decides how to open regular file `node` and records the open. Returns the file handle
    /// and, for passthrough, the backing id to answer with.
    fn open_file(&self, node: NodeId, reply: &ReplyOpen) -> (u64, Option<Arc<BackingId>>) {
        let seq = self.next_fh.fetch_add(1, Ordering::Relaxed) << 1;
        let Ok(mut h) = self.handles.lock() else {
            return (seq, None);
        };
        let Handles { nodes, backings } = &mut *h;
        let opens = nodes.entry(node).or_default();
        // The kernel cannot mix cached and passthrough opens of one inode: follow what is open.
        let backing = if opens.passthrough > 0 {
            opens.backing.upgrade()
        } else if opens.normal == 0 && self.passthrough.load(Ordering::Relaxed) {
            self.source
                .cached_file(node)
                .and_then(|file| match reply.open_backing(&file) {
                    Ok(id) => Some(Arc::new(id)),
                    Err(e) => {
                        self.passthrough.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "the kernel refused a passthrough file; passthrough is off for this mount");
                        None
                    }
                })
        } else {
            None
        };
        match backing {
            Some(b) => {
                opens.passthrough += 1;
                opens.backing = Arc::downgrade(&b);
                let fh = seq | FH_PASSTHROUGH;
                backings.insert(fh, Arc::clone(&b));
                (fh, Some(b))
            }
            None => {
                opens.normal += 1;
                (seq, None)
            }
        }
    }
}

/// Reads the counters of a mounted [`LayerFs`].
#[derive(Clone)]
pub struct StatsHandle {
    counters: Arc<Counters>,
    source: Arc<dyn LayerSource>,
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsHandle")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl StatsHandle {
    /// The counters now.
    pub fn stats(&self) -> FsStats {
        self.counters.snapshot(self.source.stats())
    }

    /// The layer being served.
    pub fn source(&self) -> &Arc<dyn LayerSource> {
        &self.source
    }
}

impl<S: LayerSource> Filesystem for LayerFs<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        // Always readdirplus (not READDIRPLUS_AUTO): `find`/`ls -l` then need no LOOKUP per
        // entry, and the attributes never change.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS;
        let _ = config.add_capabilities(wanted & caps);
        let _ = config.set_max_background(64);
        if self.opts.passthrough {
            // Depth 1: passthrough works and overlayfs can still stack on this mount.
            let ok = caps.contains(InitFlags::FUSE_PASSTHROUGH)
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                tracing::warn!("the kernel does not offer FUSE passthrough; serving every read");
            }
            self.passthrough.store(ok, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        Counters::add(&self.counters.lookups, 1);
        let dir = match self.dir(parent) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let ttl = self.opts.ttl;
        match self.tree.lookup(self.index(), dir, name.as_bytes()) {
            Some(node) => reply.entry_with_ttls(&ttl, &ttl, &self.file_attr(node), self.generation),
            None => {
                // Node id 0 with a timeout: the kernel caches the negative entry.
                let mut negative =
                    attr::whiteout_attr(NodeId::ROOT, &self.index().attr(NodeId::ROOT));
                negative.ino = INodeNo(0);
                negative.mtime = UNIX_EPOCH;
                reply.entry_with_ttls(&ttl, &ttl, &negative, Generation(0))
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(node) => reply.attr(&self.opts.ttl, &self.file_attr(node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Some(node) if !self.tree.is_whiteout(node) => match self.index().link_target(node) {
                Some(t) => reply.data(t.as_bytes()),
                None => reply.error(Errno::EINVAL),
            },
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.file(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        Counters::add(&self.counters.opens, 1);
        let mut fopen = FopenFlags::empty();
        if self.opts.keep_cache {
            fopen |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        match self.open_file(node, &reply) {
            (fh, Some(backing)) => {
                Counters::add(&self.counters.passthrough_opens, 1);
                // The kernel fails a passthrough open that also asks for KEEP_CACHE (EIO at
                // open); the page cache is the backing file's anyway.
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &backing)
            }
            (fh, None) => reply.opened(FileHandle(fh), fopen),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let node = match self.file(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        Counters::add(&self.counters.reads, 1);
        let size = size as usize;
        let end = offset.saturating_add(size as u64);
        if self.source.is_local(node, offset..end) {
            READ_BUF.with(|b| {
                let Ok(mut buf) = b.try_borrow_mut() else {
                    return reply.error(Errno::EIO);
                };
                if buf.len() < size {
                    buf.resize(size, 0);
                }
                match read_full(&*self.source, node, offset, &mut buf[..size]) {
                    Ok(n) => {
                        Counters::add(&self.counters.served_bytes, n as u64);
                        reply.data(&buf[..n])
                    }
                    Err(e) => {
                        Self::read_failed(&self.counters, node, offset, &e);
                        reply.error(Errno::EIO)
                    }
                }
            });
            return;
        }
        let slot: Arc<ReplySlot> = Arc::new(Mutex::new(Some(reply)));
        if let (Some(d), Some(t)) = (&self.deadlines, self.opts.read_timeout) {
            d.add(Instant::now() + t, &slot);
        }
        let source = Arc::clone(&self.source);
        let counters = Arc::clone(&self.counters);
        self.pool.submit(move || {
            // Already answered (deadline passed while queued): don't fetch for nobody.
            if slot.lock().map(|s| s.is_none()).unwrap_or(true) {
                return;
            }
            let mut buf = vec![0u8; size];
            let result = read_full(&*source, node, offset, &mut buf);
            let Some(reply) = slot.lock().ok().and_then(|mut s| s.take()) else {
                return;
            };
            match result {
                Ok(n) => {
                    Counters::add(&counters.served_bytes, n as u64);
                    reply.data(&buf[..n])
                }
                Err(e) => {
                    Self::read_failed(&counters, node, offset, &e);
                    reply.error(Errno::EIO)
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let (Some(node), Ok(mut h)) = (self.node(ino), self.handles.lock()) {
            let passthrough = fh.0 & FH_PASSTHROUGH != 0;
            if passthrough {
                h.backings.remove(&fh.0);
            }
            if let Some(o) = h.nodes.get_mut(&node) {
                if passthrough {
                    o.passthrough = o.passthrough.saturating_sub(1);
                } else {
                    o.normal = o.normal.saturating_sub(1);
                }
                if o.passthrough == 0 && o.normal == 0 {
                    h.nodes.remove(&node);
                }
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.dir(ino) {
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let dir = match self.dir(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let index = self.index();
        let listing = self.tree.listing(index, dir);
        let parent = index.parent(dir);
        for i in offset as usize..listing.len(index) + 2 {
            let (node, kind, name): (NodeId, FileType, &str) = match i {
                0 => (dir, FileType::Directory, "."),
                1 => (parent, FileType::Directory, ".."),
                _ => {
                    let Some((node, name)) = listing.get(index, i - 2) else {
                        break;
                    };
                    (node, attr::file_type(self.kind(node)), name)
                }
            };
            if reply.add(attr::ino(node), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let dir = match self.dir(ino) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let index = self.index();
        let listing = self.tree.listing(index, dir);
        let parent = index.parent(dir);
        let ttl = self.opts.ttl;
        for i in offset as usize..listing.len(index) + 2 {
            let (node, name): (NodeId, &str) = match i {
                0 => (dir, "."),
                1 => (parent, ".."),
                _ => {
                    let Some(e) = listing.get(index, i - 2) else {
                        break;
                    };
                    e
                }
            };
            let a = self.file_attr(node);
            if reply.add(a.ino, i as u64 + 1, name, &ttl, &a, self.generation) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.index().node_count() as u64;
        reply.statfs(
            self.total_blocks,
            0,
            0,
            files,
            0,
            BLOCK_SIZE,
            255,
            BLOCK_SIZE,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match self.xattr(node, name.as_bytes()) {
            None => reply.error(Errno::NO_XATTR),
            Some(v) if size == 0 => reply.size(v.len() as u32),
            Some(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
            Some(v) => reply.data(&v),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let names = self.xattr_names(node);
        if size == 0 {
            reply.size(names.len() as u32)
        } else if names.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&names)
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let Some(node) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        let a = self.file_attr(node);
        let perm = u32::from(a.perm);
        let granted = if req.uid() == 0 {
            // Root may read anything and execute what anyone may execute.
            let x = a.kind == FileType::Directory || perm & 0o111 != 0;
            0o4 | if x { 0o1 } else { 0 }
        } else if req.uid() == a.uid {
            (perm >> 6) & 7
        } else if req.gid() == a.gid {
            (perm >> 3) & 7
        } else {
            perm & 7
        };
        let mut need = 0;
        if mask.contains(AccessFlags::R_OK) {
            need |= 0o4;
        }
        if mask.contains(AccessFlags::X_OK) {
            need |= 0o1;
        }
        if granted & need == need {
            reply.ok()
        } else {
            reply.error(Errno::EACCES)
        }
    }
}
