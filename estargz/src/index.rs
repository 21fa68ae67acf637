//! The filesystem view of a TOC: what a reader, a FUSE adapter or `ls` sees.
//!
//! Built once from a [`Toc`], then the TOC can be dropped. Owns path normalisation (`./`, `/`,
//! `..` never escape the root), implicit parent directories, duplicate names (the later entry
//! wins), hardlinks (one node, correct link counts), chunk lists and their compressed ranges.
//!
//! Layout is compact on purpose (the Go daemon spends about 1 KiB per entry): one arena of
//! bytes for names, link targets and xattrs, one `Vec` of fixed-size node records, one of
//! directory entries sorted by name, one of chunk records. No heap object per entry.
//!
//! Node ids are assigned deterministically: the root is [`NodeId::ROOT`], then every surviving
//! TOC entry in TOC order, then implicit directories in the order they were first needed.
//!
//! Deliberate differences from the Go reader (each is a Go quirk, see ESTARGZ-FORMAT.md §6):
//! - every directory, the root included, has `nlink = 2 + subdirectories` (Go gives an explicit
//!   root entry `1 + subdirectories`);
//! - an entry whose parent path names a non-directory (a directory replaced by a later file of
//!   the same name) is unreachable, as after extracting the layer, instead of being attached to
//!   the file;
//! - hardlink chains are followed with a bound, so a cycle is an error instead of a stack
//!   overflow; gname back-fill uses the gid's own memory (Go used the uid map).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::toc::{EntryType, Toc, TocEntry};

/// The identifier of a node (file, directory, ...) in an [`Index`]. Stable for a given TOC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The root directory.
    pub const ROOT: NodeId = NodeId(0);
}

/// What kind of filesystem object a node is (a hardlink is the node it points to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

impl NodeKind {
    /// The TOC spelling of this kind (`dir`, `reg`, `symlink`, `char`, `block`, `fifo`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Dir => "dir",
            NodeKind::File => "reg",
            NodeKind::Symlink => "symlink",
            NodeKind::CharDevice => "char",
            NodeKind::BlockDevice => "block",
            NodeKind::Fifo => "fifo",
        }
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_type_bits(self) -> u32 {
        match self {
            NodeKind::Dir => 0o040000,
            NodeKind::File => 0o100000,
            NodeKind::Symlink => 0o120000,
            NodeKind::CharDevice => 0o020000,
            NodeKind::BlockDevice => 0o060000,
            NodeKind::Fifo => 0o010000,
        }
    }
}

/// Limits applied while building an index from an untrusted TOC.
#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Maximum number of TOC entries.
    pub max_entries: usize,
    /// Maximum uncompressed size of one chunk (bounds the memory a single read may need).
    pub max_chunk_size: u64,
    /// End of the payload region of the blob (e.g. the TOC offset). Every chunk's compressed
    /// offset must lie before it. `u64::MAX` disables the check.
    pub payload_end: u64,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            max_entries: 10_000_000,
            max_chunk_size: 256 << 20,
            payload_end: u64::MAX,
        }
    }
}

const FLAG_IMPLICIT: u8 = 1;
const FLAG_FILE_DIGEST_ONLY: u8 = 2;
/// The node has extended attributes (`Index::node_xattrs` says which set).
const FLAG_XATTRS: u8 = 4;

/// One packed node record.
#[derive(Clone, Debug)]
struct Node {
    size: u64,
    mtime: i64,
    parent: u32,
    nlink: u32,
    /// Index into `Index::owners`: (uid, gid, user name, group name), shared by the many nodes
    /// of a layer that have the same owner.
    owner: u32,
    /// Dir: first dirent; File: first chunk; Symlink: link target arena offset; device: major.
    a: u32,
    /// Dir: dirent count; File: chunk count; Symlink: link target length; device: minor.
    b: u32,
    mode: u16,
    kind: NodeKind,
    flags: u8,
}

/// A node's owner: ids, and names as indexes into `Index::owner_names`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Owner {
    uid: u32,
    gid: u32,
    uname: u16,
    gname: u16,
}

/// One name in a directory.
#[derive(Clone, Copy, Debug)]
struct Dirent {
    /// Start of the name in `Index::arena`. Names are stored in dirent order, back to back,
    /// so a name ends where the next dirent's starts (the last at `Index::names_end`).
    name_off: u32,
    node: u32,
}

/// One chunk of a regular file's data: where its compressed bytes are and what they must hash to.
///
/// Packed into 32 bytes (the index keeps one per chunk): sizes are 32-bit, so one chunk, the
/// uncompressed bytes before it in its member (`innerOffset`) and its compressed range are each
/// below 4 GiB; larger values are refused when the index is built. The chunk's digest is kept
/// by the index ([`Index::chunk_digest`]), in memory or in a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    file_offset: u64,
    blob_offset: u64,
    size: u32,
    inner_offset: u32,
    blob_len: u32,
    /// `CHUNK_*` flags in the top 3 bits; below them the chunk's position in the index's
    /// chunk table (and digest table).
    flags: u32,
}

const CHUNK_ZEROS: u32 = 1 << 31;
const CHUNK_HAS_DIGEST: u32 = 1 << 30;
const CHUNK_END_KNOWN: u32 = 1 << 29;
/// The bits of `Chunk::flags` that hold its id: at most 2^29 chunks per index.
const CHUNK_ID_MASK: u32 = CHUNK_END_KNOWN - 1;

impl Chunk {
    /// Offset of this chunk in the file.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Uncompressed size of this chunk.
    pub fn size(&self) -> u64 {
        u64::from(self.size)
    }

    /// Compressed offset of the gzip member / zstd frame where decoding starts.
    pub fn blob_offset(&self) -> u64 {
        self.blob_offset
    }

    /// Uncompressed bytes to skip, after [`Chunk::blob_offset`], before this chunk's data.
    pub fn inner_offset(&self) -> u64 {
        u64::from(self.inner_offset)
    }

    /// End (exclusive) of the compressed bytes that can be needed to decode this chunk.
    pub fn blob_end(&self) -> u64 {
        self.blob_offset + u64::from(self.blob_len)
    }

    /// Position in the index's chunk table.
    fn id(&self) -> u32 {
        self.flags & CHUNK_ID_MASK
    }

    /// True when the TOC gives a digest for this chunk ([`Index::chunk_digest`] returns it).
    pub fn has_digest(&self) -> bool {
        self.flags & CHUNK_HAS_DIGEST != 0
    }

    /// A hole (`chunkType: "zeros"`, containers/storage): all zero bytes, nothing to fetch.
    pub fn is_zeros(&self) -> bool {
        self.flags & CHUNK_ZEROS != 0
    }

    /// The compressed byte range of the blob to fetch to decode this chunk.
    pub fn blob_range(&self) -> Range<u64> {
        self.blob_offset..self.blob_end()
    }

    /// The range of the file this chunk covers.
    pub fn file_range(&self) -> Range<u64> {
        self.file_offset..self.file_offset + self.size()
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("file_range", &self.file_range())
            .field("blob_range", &self.blob_range())
            .field("inner_offset", &self.inner_offset)
            .field("has_digest", &self.has_digest())
            .field("zeros", &self.is_zeros())
            .finish()
    }
}

/// Metadata of one node, as a filesystem would report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Kind of object.
    pub kind: NodeKind,
    /// Permission and setuid/setgid/sticky bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// File size for regular files, target length for symlinks, 0 otherwise.
    pub size: u64,
    /// Modification time in Unix seconds (0 when the TOC has none).
    pub mtime: i64,
    /// Link count: 1 + hardlinks for files, 2 + subdirectories for directories.
    pub nlink: u32,
    /// Device major number (devices only).
    pub dev_major: u32,
    /// Device minor number (devices only).
    pub dev_minor: u32,
}

/// The filesystem view of a TOC. See the module documentation.
#[derive(Clone, Debug)]
pub struct Index {
    nodes: Vec<Node>,
    dirents: Vec<Dirent>,
    /// End of the last dirent's name in `arena`.
    names_end: u32,
    chunks: Vec<Chunk>,
    /// The digest of every chunk, by [`Chunk`] id (zeros for chunks without one).
    digests: Digests,
    /// Names, link targets, xattr names and values, user and group names.
    arena: Vec<u8>,
    /// (node, index into `xattr_sets`) for every node with `FLAG_XATTRS`, sorted by node:
    /// few nodes have extended attributes, so they are not a field of every node.
    node_xattrs: Vec<(u32, u32)>,
    /// One per TOC entry with xattrs: (first, count) into `xattrs`.
    xattr_sets: Vec<(u32, u32)>,
    /// (name offset, name len, value offset, value len) into `arena`.
    xattrs: Vec<(u32, u32, u32, u32)>,
    /// Interned user/group names: (arena offset, len); index 0 is "".
    owner_names: Vec<(u32, u32)>,
    /// Distinct owners of nodes; index 0 is root with no names.
    owners: Vec<Owner>,
    toc_entries: usize,
    landmark: Landmark,
}

/// Where an index keeps its chunk digests.
#[derive(Clone, Debug)]
enum Digests {
    Memory(Vec<[u8; 32]>),
    /// 32 bytes per chunk id in an unlinked file ([`Index::spill_chunk_digests`]).
    File(Arc<std::fs::File>),
}

/// Which prefetch landmark the layer has at its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landmark {
    /// `.prefetch.landmark`: everything before `offset` is the prioritised set to prefetch.
    Prefetch {
        /// Compressed offset of the landmark's payload.
        offset: u64,
    },
    /// `.no.prefetch.landmark`: nothing to prefetch.
    NoPrefetch,
    /// No landmark (legacy or low-level writer output).
    None,
}

/// Name of the prefetch landmark file.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Name of the no-prefetch landmark file.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";

/// Normalises a TOC path the way the reference reader does: `"/" + name`, POSIX lexical
/// cleaning (`.`, `..`, `//`) that never climbs above the root, leading `/` removed.
///
/// ```
/// use estargz::index::clean_path;
/// assert_eq!(clean_path("./foo/"), "foo");
/// assert_eq!(clean_path("../../etc/passwd"), "etc/passwd");
/// assert_eq!(clean_path("bar/../bar///foo"), "bar/foo");
/// assert_eq!(clean_path("./"), "");
/// ```
pub fn clean_path(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for comp in name.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// The components of `name` after [`clean_path`], into `out` (cleared first); no allocation
/// once `out` has grown.
fn split_clean<'a>(name: &'a str, out: &mut Vec<&'a str>) {
    out.clear();
    let bytes = name.as_bytes();
    let mut start = 0;
    // Byte scan: '/' is ASCII, so every split point is a char boundary.
    for i in 0..=bytes.len() {
        if i < bytes.len() && bytes[i] != b'/' {
            continue;
        }
        match &name[start..i] {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
        start = i + 1;
    }
}

fn to_u32(v: i64, index: usize, e: &TocEntry, field: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        Error::entry(
            index,
            &e.name,
            format!("{field} {v} is out of range (0..=4294967295)"),
        )
    })
}

fn to_u64(v: i64, index: usize, e: &TocEntry, field: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::entry(index, &e.name, format!("{field} {v} is negative")))
}

fn parse_digest(s: &str, index: usize, e: &TocEntry, field: &str) -> Result<Option<Digest>> {
    if s.is_empty() {
        return Ok(None);
    }
    Digest::parse(s)
        .map(Some)
        .map_err(|err| Error::entry(index, &e.name, format!("{field}: {err}")))
}

/// High bit of a slot value: a hardlink not resolved yet (the rest indexes `pending_links`).
const LINK_MARK: u32 = 1 << 31;

struct Builder<'t> {
    opts: &'t IndexOptions,
    index: Index,
    /// (parent node, base name) -> node id, or `LINK_MARK | pending hardlink`.
    slots: HashMap<(u32, &'t str), u32>,
    owner_ids: HashMap<&'t str, u16>,
    last_owner: Option<(&'t str, u16)>,
    /// Interned `Index::owners`.
    owner_sets: HashMap<Owner, u32>,
    /// Node -> its xattr set, for the nodes that finally have one (`Index::node_xattrs`).
    xattrs_of: HashMap<u32, u32>,
    /// The digest of each chunk made so far, by chunk id (`Index::digests` once built).
    digests: Vec<[u8; 32]>,
}

/// The reference reader's owner-name back-fill: an entry without a name takes the last name
/// seen for the same id (in TOC order). Remembers the last id looked up, since consecutive
/// entries mostly share an owner.
#[derive(Default)]
struct OwnerNames<'t> {
    by_id: HashMap<i64, &'t str>,
    last: Option<(i64, &'t str)>,
}

impl<'t> OwnerNames<'t> {
    fn name(&mut self, id: i64, stated: &'t str) -> &'t str {
        if let Some((last_id, last_name)) = self.last {
            if last_id == id && (stated.is_empty() || stated == last_name) {
                return last_name;
            }
        }
        let name = if stated.is_empty() {
            self.by_id.get(&id).copied().unwrap_or("")
        } else {
            self.by_id.insert(id, stated);
            stated
        };
        self.last = Some((id, name));
        name
    }
}

impl<'t> Builder<'t> {
    fn push_arena(&mut self, bytes: &[u8]) -> Result<(u32, u32)> {
        let off = u32::try_from(self.index.arena.len())
            .map_err(|_| Error::Toc("TOC strings exceed 4 GiB".into()))?;
        let len = u32::try_from(bytes.len())
            .map_err(|_| Error::Toc("TOC string exceeds 4 GiB".into()))?;
        self.index.arena.extend_from_slice(bytes);
        Ok((off, len))
    }

    fn intern_owner(&mut self, name: &'t str) -> Result<u16> {
        if name.is_empty() {
            return Ok(0);
        }
        if let Some(&(last, id)) = self.last_owner.as_ref() {
            if last == name {
                return Ok(id);
            }
        }
        if let Some(&id) = self.owner_ids.get(name) {
            self.last_owner = Some((name, id));
            return Ok(id);
        }
        let r = self.push_arena(name.as_bytes())?;
        let id = u16::try_from(self.index.owner_names.len())
            .map_err(|_| Error::Toc("more than 65535 distinct user and group names".into()))?;
        self.index.owner_names.push(r);
        self.owner_ids.insert(name, id);
        self.last_owner = Some((name, id));
        Ok(id)
    }

    /// Records which xattr set (from [`Builder::make_node`]) the node `id` now has.
    fn set_xattrs(&mut self, id: u32, set: Option<u32>) {
        match set {
            Some(set) => {
                self.xattrs_of.insert(id, set);
            }
            // Most layers have no xattrs at all: skip hashing then.
            None if self.xattrs_of.is_empty() => {}
            None => {
                self.xattrs_of.remove(&id);
            }
        }
    }

    fn new_dir_node(&mut self, parent: u32, implicit: bool) -> u32 {
        let id = self.index.nodes.len() as u32;
        self.index.nodes.push(Node {
            size: 0,
            mtime: 0,
            parent,
            nlink: 2,
            owner: 0,
            a: 0,
            b: 0,
            mode: 0o755,
            kind: NodeKind::Dir,
            flags: if implicit { FLAG_IMPLICIT } else { 0 },
        });
        id
    }
}

impl Index {
    /// Builds the index of `toc` with default limits.
    ///
    /// ```
    /// use estargz::{Index, Toc, TocEntry, EntryType};
    ///
    /// let mut toc = Toc { version: 1, ..Default::default() };
    /// toc.entries.push(TocEntry { name: "./a/b.txt".into(), entry_type: EntryType::Reg, ..Default::default() });
    /// let index = Index::new(&toc).unwrap();
    /// let a = index.lookup("a").unwrap();
    /// assert!(index.attr(a).kind == estargz::index::NodeKind::Dir);
    /// assert!(index.lookup("/a/./b.txt").is_some());
    /// ```
    pub fn new(toc: &Toc) -> Result<Index> {
        Index::with_options(toc, &IndexOptions::default())
    }

    /// Builds the index of `toc`, enforcing `opts`.
    pub fn with_options(toc: &Toc, opts: &IndexOptions) -> Result<Index> {
        let entries = &toc.entries;
        if entries.len() > opts.max_entries {
            return Err(Error::TooManyEntries {
                limit: opts.max_entries,
            });
        }
        if entries.len() >= (LINK_MARK - 1) as usize {
            return Err(Error::TooManyEntries {
                limit: (LINK_MARK - 2) as usize,
            });
        }
        let mut b = Builder {
            opts,
            index: Index {
                nodes: Vec::with_capacity(entries.len() + 1),
                dirents: Vec::new(),
                names_end: 0,
                chunks: Vec::with_capacity(entries.len()),
                digests: Digests::Memory(Vec::new()),
                // Base names, symlink targets, owners: about 16 bytes per entry in real layers.
                arena: Vec::with_capacity(entries.len() * 16),
                node_xattrs: Vec::new(),
                xattr_sets: Vec::new(),
                xattrs: Vec::new(),
                owner_names: vec![(0, 0)],
                owners: vec![Owner::default()],
                toc_entries: entries.len(),
                landmark: Landmark::None,
            },
            slots: HashMap::with_capacity(entries.len()),
            owner_ids: HashMap::new(),
            last_owner: None,
            owner_sets: HashMap::from([(Owner::default(), 0)]),
            xattrs_of: HashMap::new(),
            digests: Vec::with_capacity(entries.len()),
        };
        b.new_dir_node(0, true); // the root, replaced by an explicit root entry

        // One pass in TOC order. `slots` maps (parent node, base name) to the node that
        // finally owns that path: a later entry with the same path overwrites the node in
        // place (the last one wins, as in Go), and hardlinks are marked pending until every
        // possible target has been seen (forward references are allowed).
        let mut comps: Vec<&str> = Vec::new();
        let mut last_dirs: Vec<(&str, u32)> = Vec::new();
        let mut uname_of = OwnerNames::default();
        let mut gname_of = OwnerNames::default();
        let mut pending_links: Vec<usize> = Vec::new();
        // The file receiving `chunk` entries: (node id, or u32::MAX once shadowed, entry index).
        let mut current_file: Option<(u32, usize)> = None;
        let mut expected_next_chunk: u64 = 0;
        for (i, e) in entries.iter().enumerate() {
            if e.entry_type == EntryType::Chunk {
                let Some((node, reg_index)) = current_file else {
                    return Err(Error::entry(
                        i,
                        &e.name,
                        "chunk entry without a preceding regular file",
                    ));
                };
                let chunk = b.make_chunk(i, e, &entries[reg_index], expected_next_chunk)?;
                expected_next_chunk = chunk.file_offset() + chunk.size();
                b.index.chunks.push(chunk);
                if node != u32::MAX {
                    b.index.nodes[node as usize].b += 1;
                }
                continue;
            }
            b.finish_file(entries, current_file.take(), expected_next_chunk)?;
            expected_next_chunk = 0;

            // Owner name back-fill, as the Go reader does (per id, TOC order).
            let uname = uname_of.name(e.uid, &e.user_name);
            let gname = gname_of.name(e.gid, &e.group_name);

            split_clean(&e.name, &mut comps);
            let Some((&base, dirs)) = comps.split_last() else {
                // The root itself (`./`, `/`): its metadata goes to node 0.
                if e.entry_type != EntryType::Dir {
                    return Err(Error::entry(i, &e.name, "the root must be a directory"));
                }
                let (mut root, xattrs) = b.make_node(i, e, uname, gname)?;
                root.parent = 0;
                b.index.nodes[0] = root;
                b.set_xattrs(0, xattrs);
                continue;
            };
            // Consecutive entries mostly share their directory: reuse the ids resolved for the
            // previous entry's directory components as far as the components are equal.
            let mut shared = 0;
            while shared < dirs.len()
                && shared < last_dirs.len()
                && last_dirs[shared].0 == dirs[shared]
            {
                shared += 1;
            }
            last_dirs.truncate(shared);
            let mut parent = last_dirs.last().map_or(0, |d| d.1);
            for &c in &dirs[shared..] {
                parent = match b.slots.get(&(parent, c)) {
                    Some(&n) if n & LINK_MARK == 0 => n,
                    // A hardlink used as a directory: whatever it resolves to is not a
                    // directory, so what is below it is unreachable; park it on a detached node.
                    Some(_) => b.new_dir_node(u32::MAX, true),
                    None => {
                        let d = b.new_dir_node(parent, true);
                        b.slots.insert((parent, c), d);
                        d
                    }
                };
                last_dirs.push((c, parent));
            }
            if e.entry_type == EntryType::Hardlink {
                let mark = LINK_MARK | pending_links.len() as u32;
                pending_links.push(i);
                b.slots.insert((parent, base), mark);
                // A hardlink may now stand where a directory was: forget cached directories.
                last_dirs.clear();
                continue;
            }
            let (mut node, xattrs) = b.make_node(i, e, uname, gname)?;
            node.parent = parent;
            let id = match b.slots.get(&(parent, base)) {
                Some(&n) if n & LINK_MARK == 0 => {
                    b.index.nodes[n as usize] = node;
                    n
                }
                _ => {
                    let n = b.index.nodes.len() as u32;
                    b.index.nodes.push(node);
                    b.slots.insert((parent, base), n);
                    n
                }
            };
            b.set_xattrs(id, xattrs);
            if e.entry_type == EntryType::Reg {
                let first = b.index.chunks.len() as u32;
                let n = &mut b.index.nodes[id as usize];
                n.a = first;
                n.b = 0;
                if e.size > 0 {
                    let chunk = b.make_chunk(i, e, e, 0)?;
                    expected_next_chunk = chunk.size();
                    b.index.chunks.push(chunk);
                    b.index.nodes[id as usize].b = 1;
                }
                current_file = Some((id, i));
            }
        }
        b.finish_file(entries, current_file.take(), expected_next_chunk)?;
        b.resolve_hardlinks(entries, &pending_links)?;
        b.build_dirents()?;

        let mut digests = b.digests;
        digests.shrink_to_fit();
        let mut node_xattrs: Vec<(u32, u32)> = b.xattrs_of.into_iter().collect();
        node_xattrs.sort_unstable();
        let mut index = b.index;
        index.node_xattrs = node_xattrs;
        index.digests = Digests::Memory(digests);
        index.compute_blob_ends(opts.payload_end);
        index.landmark = index.find_landmark();
        index.nodes.shrink_to_fit();
        index.chunks.shrink_to_fit();
        index.arena.shrink_to_fit();
        index.owners.shrink_to_fit();
        Ok(index)
    }

    fn compute_blob_ends(&mut self, payload_end: u64) {
        // Walk backwards: the end of a chunk's compressed range is the next member that a
        // later chunk opened (offset set, no innerOffset), or the end of the payload.
        let mut last = payload_end;
        for c in self.chunks.iter_mut().rev() {
            if c.is_zeros() {
                continue;
            }
            if c.flags & CHUNK_END_KNOWN == 0 {
                // A chunk lies inside one member, far below 4 GiB: clamping loses nothing.
                c.blob_len = u32::try_from(last.saturating_sub(c.blob_offset)).unwrap_or(u32::MAX);
            }
            if c.blob_offset != 0 && c.inner_offset == 0 {
                last = c.blob_offset;
            }
        }
    }

    fn find_landmark(&self) -> Landmark {
        if let Some(n) = self.child(NodeId::ROOT, NO_PREFETCH_LANDMARK.as_bytes()) {
            if self.attr(n).kind == NodeKind::File {
                return Landmark::NoPrefetch;
            }
        }
        if let Some(n) = self.child(NodeId::ROOT, PREFETCH_LANDMARK.as_bytes()) {
            if let Some(c) = self.chunks(n).first() {
                return Landmark::Prefetch {
                    offset: c.blob_offset(),
                };
            }
        }
        Landmark::None
    }

    /// The root directory.
    pub fn root(&self) -> NodeId {
        NodeId::ROOT
    }

    /// Number of nodes (files, directories, ... including implicit directories and the root;
    /// hardlinks share their target's node).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of entries in the TOC this index was built from.
    pub fn toc_entry_count(&self) -> usize {
        self.toc_entries
    }

    /// Every chunk of every regular file in TOC order, including chunks of entries that a later
    /// entry with the same name shadowed (they are still part of the blob).
    pub fn all_chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The layer's prefetch landmark.
    pub fn landmark(&self) -> Landmark {
        self.landmark
    }

    /// Looks up a path (normalised like TOC names: `./a`, `/a` and `a` are the same).
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut node = NodeId::ROOT;
        for comp in clean_path(path).split('/').filter(|c| !c.is_empty()) {
            node = self.child(node, comp.as_bytes())?;
        }
        Some(node)
    }

    /// Looks up `name` in directory `dir`.
    pub fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let (mut lo, mut hi) = {
            let r = self.dirent_range(dir);
            (r.start, r.end)
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.dirent_name(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.dirents.get(mid).map(|d| NodeId(d.node)),
            }
        }
        None
    }

    /// The positions in `dirents` of a directory's entries (empty for other nodes).
    fn dirent_range(&self, dir: NodeId) -> Range<usize> {
        match self.nodes.get(dir.0 as usize) {
            Some(n) if n.kind == NodeKind::Dir => {
                let (s, e) = (n.a as usize, (n.a + n.b) as usize);
                if e <= self.dirents.len() {
                    s..e
                } else {
                    0..0
                }
            }
            _ => 0..0,
        }
    }

    /// The name of the dirent at position `k`.
    fn dirent_name(&self, k: usize) -> &[u8] {
        let Some(d) = self.dirents.get(k) else {
            return &[];
        };
        let end = self
            .dirents
            .get(k + 1)
            .map_or(self.names_end, |next| next.name_off);
        self.arena
            .get(d.name_off as usize..end as usize)
            .unwrap_or(&[])
    }

    /// The dirent at position `k`: its name and node.
    fn dirent(&self, k: usize) -> Option<(&str, NodeId)> {
        let d = self.dirents.get(k)?;
        let name = std::str::from_utf8(self.dirent_name(k)).unwrap_or("");
        Some((name, NodeId(d.node)))
    }

    fn arena_str(&self, off: u32, len: u32) -> &str {
        std::str::from_utf8(&self.arena[off as usize..(off + len) as usize]).unwrap_or("")
    }

    /// The children of a directory, sorted by name (byte order). Empty for non-directories.
    pub fn read_dir(&self, dir: NodeId) -> impl Iterator<Item = (&str, NodeId)> + '_ {
        self.dirent_range(dir).filter_map(move |k| self.dirent(k))
    }

    /// The `i`-th child of a directory in [`Index::read_dir`] order, without iterating to it.
    ///
    /// ```
    /// # let toc = estargz::Toc::from_json(br#"{"version":1,"entries":[
    /// #   {"name":"d/","type":"dir"},{"name":"d/a","type":"reg"},{"name":"d/b","type":"reg"}]}"#).unwrap();
    /// let index = estargz::Index::new(&toc)?;
    /// let d = index.lookup("d").unwrap();
    /// assert_eq!(index.dir_len(d), 2);
    /// assert_eq!(index.dir_entry(d, 1).map(|(name, _)| name), Some("b"));
    /// assert!(index.dir_entry(d, 2).is_none());
    /// # Ok::<(), estargz::Error>(())
    /// ```
    pub fn dir_entry(&self, dir: NodeId, i: usize) -> Option<(&str, NodeId)> {
        let r = self.dirent_range(dir);
        let k = r.start.checked_add(i)?;
        if k < r.end {
            self.dirent(k)
        } else {
            None
        }
    }

    /// The number of children of a directory (0 for other nodes).
    pub fn dir_len(&self, dir: NodeId) -> usize {
        self.dirent_range(dir).len()
    }

    /// The parent directory of a directory node (the root is its own parent). For other nodes
    /// (which hardlinks may place in several directories) the parent is not tracked.
    pub fn parent(&self, dir: NodeId) -> NodeId {
        NodeId(
            self.nodes
                .get(dir.0 as usize)
                .map(|n| n.parent)
                .unwrap_or(0),
        )
    }

    fn node(&self, id: NodeId) -> &Node {
        // Node ids only come from this index; an out-of-range id is a caller bug, and the
        // root is a safe answer that cannot expose data.
        self.nodes.get(id.0 as usize).unwrap_or(&self.nodes[0])
    }

    /// The node's metadata.
    pub fn attr(&self, id: NodeId) -> Attr {
        let n = self.node(id);
        let (dev_major, dev_minor) = match n.kind {
            NodeKind::CharDevice | NodeKind::BlockDevice => (n.a, n.b),
            _ => (0, 0),
        };
        let owner = self.owner(n);
        Attr {
            kind: n.kind,
            mode: u32::from(n.mode),
            uid: owner.uid,
            gid: owner.gid,
            size: match n.kind {
                NodeKind::File => n.size,
                NodeKind::Symlink => u64::from(n.b),
                _ => 0,
            },
            mtime: n.mtime,
            nlink: n.nlink.max(1),
            dev_major,
            dev_minor,
        }
    }

    /// True for directories the TOC did not list but that were needed as parents.
    pub fn is_implicit(&self, id: NodeId) -> bool {
        self.node(id).flags & FLAG_IMPLICIT != 0
    }

    /// True when this file's chunks are verified against the whole-file `digest` because the
    /// TOC has no `chunkDigest` (legacy stargz).
    pub fn uses_file_digest(&self, id: NodeId) -> bool {
        self.node(id).flags & FLAG_FILE_DIGEST_ONLY != 0
    }

    /// A symlink's target, verbatim.
    pub fn link_target(&self, id: NodeId) -> Option<&str> {
        let n = self.node(id);
        (n.kind == NodeKind::Symlink).then(|| self.arena_str(n.a, n.b))
    }

    /// The owner's user and group names (after the reference back-fill), possibly empty.
    pub fn owner_names(&self, id: NodeId) -> (&str, &str) {
        let n = self.node(id);
        let get = |i: u16| {
            self.owner_names
                .get(i as usize)
                .map(|&(o, l)| self.arena_str(o, l))
                .unwrap_or("")
        };
        let o = self.owner(n);
        (get(o.uname), get(o.gname))
    }

    fn owner(&self, n: &Node) -> Owner {
        self.owners
            .get(n.owner as usize)
            .copied()
            .unwrap_or_default()
    }

    /// The node's extended attributes, sorted by name.
    pub fn xattrs(&self, id: NodeId) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let set = if self.node(id).flags & FLAG_XATTRS == 0 {
            None
        } else {
            self.node_xattrs
                .binary_search_by_key(&id.0, |&(n, _)| n)
                .ok()
                .and_then(|i| self.node_xattrs.get(i))
                .map(|&(_, set)| set)
        };
        let range = set
            .and_then(|set| self.xattr_sets.get(set as usize))
            .map(|&(s, c)| s as usize..(s + c) as usize)
            .unwrap_or(0..0);
        self.xattrs[range].iter().map(move |&(no, nl, vo, vl)| {
            (
                self.arena_str(no, nl),
                &self.arena[vo as usize..(vo + vl) as usize],
            )
        })
    }

    /// A regular file's chunks, sorted by file offset, covering `[0, size)`.
    pub fn chunks(&self, id: NodeId) -> &[Chunk] {
        let n = self.node(id);
        if n.kind != NodeKind::File {
            return &[];
        }
        self.chunks
            .get(n.a as usize..(n.a + n.b) as usize)
            .unwrap_or(&[])
    }

    /// Walks the tree depth-first in name order, calling `f(path, node)` for every path
    /// (hardlinked nodes are visited once per name). The root is visited first with path "".
    pub fn walk(&self, mut f: impl FnMut(&str, NodeId)) {
        // Iterative (an explicit stack of directory cursors), so a hostile TOC with a very
        // deep path cannot overflow the thread's stack.
        f("", NodeId::ROOT);
        let mut path = String::new();
        // (directory, next child position, length of `path` before this directory's name)
        let mut stack: Vec<(NodeId, usize, usize)> = vec![(NodeId::ROOT, 0, 0)];
        while let Some(top) = stack.last_mut() {
            let (dir, pos, _) = *top;
            let Some((name, child)) = self.dir_entry(dir, pos) else {
                let (_, _, len) = stack.pop().unwrap_or((dir, 0, 0));
                path.truncate(len);
                continue;
            };
            top.1 += 1;
            let len = path.len();
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(name);
            f(&path, child);
            if self.node(child).kind == NodeKind::Dir && child != dir {
                stack.push((child, 0, len));
            } else {
                path.truncate(len);
            }
        }
    }

    /// The digest the bytes of `chunk` (a chunk of this index) must hash to, when the TOC
    /// gives one. Reads 32 bytes from the file after [`Index::spill_chunk_digests`].
    ///
    /// ```
    /// # let toc = estargz::Toc::from_json(br#"{"version":1,"entries":[{"name":"f","type":"reg",
    /// #   "size":1,"offset":10,
    /// #   "chunkDigest":"sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"}]}"#).unwrap();
    /// # let mut opts = estargz::index::IndexOptions::default();
    /// # opts.payload_end = 100;
    /// let mut index = estargz::Index::with_options(&toc, &opts)?;
    /// let chunk = index.chunks(index.lookup("f").unwrap())[0];
    /// let digest = index.chunk_digest(&chunk)?;
    /// assert_eq!(digest, Some(estargz::Digest::of(b"a")));
    /// index.spill_chunk_digests(&std::env::temp_dir())?;
    /// assert_eq!(index.chunk_digest(&chunk)?, digest);
    /// # Ok::<(), estargz::Error>(())
    /// ```
    pub fn chunk_digest(&self, chunk: &Chunk) -> Result<Option<Digest>> {
        if !chunk.has_digest() {
            return Ok(None);
        }
        match &self.digests {
            Digests::Memory(d) => Ok(d.get(chunk.id() as usize).map(|d| Digest(*d))),
            Digests::File(f) => {
                use std::os::unix::fs::FileExt as _;
                let mut d = [0u8; 32];
                f.read_exact_at(&mut d, u64::from(chunk.id()) * 32)
                    .map_err(|e| {
                        Error::io("reading a chunk digest from the index's digest file", e)
                    })?;
                Ok(Some(Digest(d)))
            }
        }
    }

    /// Moves the chunk digests (32 bytes per chunk, a third of a small file's index) out of
    /// memory into an unlinked file created in `dir`: [`Index::chunk_digest`] then reads them
    /// back with `pread`, from the page cache when the chunk is hot. For processes that keep
    /// many large indexes (a snapshotter with many mounted layers). The file goes away with
    /// the last clone of the index. Does nothing when already spilled; on error the digests
    /// stay in memory.
    pub fn spill_chunk_digests(&mut self, dir: &Path) -> Result<()> {
        use std::io::Write as _;
        let Digests::Memory(digests) = &self.digests else {
            return Ok(());
        };
        let file = tempfile::tempfile_in(dir)
            .map_err(|e| Error::io("creating the file for chunk digests", e))?;
        (&file)
            .write_all(digests.as_flattened())
            .map_err(|e| Error::io("writing chunk digests to their file", e))?;
        self.digests = Digests::File(Arc::new(file));
        Ok(())
    }

    /// Approximate heap memory used by the index, in bytes.
    pub fn heap_size(&self) -> usize {
        use std::mem::size_of;
        let digests = match &self.digests {
            Digests::Memory(d) => d.capacity() * 32,
            Digests::File(_) => 0,
        };
        digests
            + self.nodes.capacity() * size_of::<Node>()
            + self.dirents.capacity() * size_of::<Dirent>()
            + self.chunks.capacity() * size_of::<Chunk>()
            + self.arena.capacity()
            + self.node_xattrs.capacity() * 8
            + self.xattr_sets.capacity() * 8
            + self.xattrs.capacity() * 16
            + self.owner_names.capacity() * 8
            + self.owners.capacity() * size_of::<Owner>()
    }
}

impl<'t> Builder<'t> {
    /// Walks `path` from the root through the slots, resolving pending hardlinks on the way.
    fn resolve_path(
        &self,
        entries: &[TocEntry],
        pending: &[usize],
        resolved: &mut [Option<u32>],
        path: &str,
        depth: usize,
    ) -> Option<u32> {
        let mut comps = Vec::new();
        split_clean(path, &mut comps);
        let mut node = 0u32;
        for c in comps {
            let n = *self.slots.get(&(node, c))?;
            node = if n & LINK_MARK != 0 {
                self.resolve_link(
                    entries,
                    pending,
                    resolved,
                    (n & !LINK_MARK) as usize,
                    depth + 1,
                )?
            } else {
                n
            };
        }
        Some(node)
    }

    fn resolve_link(
        &self,
        entries: &[TocEntry],
        pending: &[usize],
        resolved: &mut [Option<u32>],
        k: usize,
        depth: usize,
    ) -> Option<u32> {
        if let Some(n) = resolved[k] {
            return Some(n);
        }
        if depth > 64 {
            return None;
        }
        let e = &entries[pending[k]];
        let n = self.resolve_path(entries, pending, resolved, &e.link_name, depth)?;
        resolved[k] = Some(n);
        Some(n)
    }

    /// Points every hardlink slot at its target's node and counts the links.
    fn resolve_hardlinks(&mut self, entries: &[TocEntry], pending: &[usize]) -> Result<()> {
        let mut resolved: Vec<Option<u32>> = vec![None; pending.len()];
        for k in 0..pending.len() {
            let i = pending[k];
            let e = &entries[i];
            let Some(n) = self.resolve_link(entries, pending, &mut resolved, k, 0) else {
                let mut probe = Vec::new();
                split_clean(&e.link_name, &mut probe);
                return Err(Error::entry(
                    i,
                    &e.name,
                    format!(
                        "hardlink target {:?} is not in the layer (or the hardlink chain is a cycle or longer than 64 links)",
                        e.link_name
                    ),
                ));
            };
            if self.index.nodes[n as usize].kind == NodeKind::Dir {
                return Err(Error::entry(i, &e.name, "hardlink to a directory"));
            }
        }
        for v in self.slots.values_mut() {
            if *v & LINK_MARK != 0 {
                if let Some(n) = resolved[(*v & !LINK_MARK) as usize] {
                    *v = n;
                    self.index.nodes[n as usize].nlink += 1;
                }
            }
        }
        Ok(())
    }

    /// Turns the slots into per-directory entry lists sorted by name, and counts directory
    /// links. Children of a node that is not a directory (a directory later replaced by a
    /// file) are left out: unreachable, as after extracting the layer.
    fn build_dirents(&mut self) -> Result<()> {
        let nodes = &self.index.nodes;
        let mut links: Vec<(u32, &'t str, u32)> = self
            .slots
            .iter()
            .filter(|((p, _), _)| nodes[*p as usize].kind == NodeKind::Dir)
            .map(|(&(p, name), &n)| (p, name, n))
            .collect();
        // Bucket by parent (linear), then sort each directory's names.
        let mut start = vec![0u32; nodes.len() + 1];
        for &(p, _, _) in &links {
            start[p as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut fill = start.clone();
        let mut ordered: Vec<(&'t str, u32)> = vec![("", 0); links.len()];
        for &(p, name, n) in &links {
            ordered[fill[p as usize] as usize] = (name, n);
            fill[p as usize] += 1;
        }
        links.clear();
        let mut dirents = Vec::with_capacity(ordered.len());
        for dir in 0..nodes.len() {
            let (s, e) = (start[dir] as usize, start[dir + 1] as usize);
            let group = &mut ordered[s..e];
            group.sort_unstable_by(|x, y| x.0.as_bytes().cmp(y.0.as_bytes()));
            for &(name, n) in group.iter() {
                let (name_off, _) = self.push_arena(name.as_bytes())?;
                dirents.push(Dirent { name_off, node: n });
            }
        }
        for dir in 0..self.index.nodes.len() {
            let (s, e) = (start[dir], start[dir + 1]);
            let mut subdirs = 0;
            for d in &dirents[s as usize..e as usize] {
                let child = &mut self.index.nodes[d.node as usize];
                if child.kind == NodeKind::Dir {
                    child.parent = dir as u32;
                    subdirs += 1;
                }
            }
            let n = &mut self.index.nodes[dir];
            if n.kind == NodeKind::Dir {
                n.a = s;
                n.b = e - s;
                n.nlink += subdirs;
            }
        }
        self.index.names_end = u32::try_from(self.index.arena.len())
            .map_err(|_| Error::Toc("TOC strings exceed 4 GiB".into()))?;
        self.index.dirents = dirents;
        Ok(())
    }

    fn make_node(
        &mut self,
        i: usize,
        e: &'t TocEntry,
        uname: &'t str,
        gname: &'t str,
    ) -> Result<(Node, Option<u32>)> {
        let kind = match e.entry_type {
            EntryType::Dir => NodeKind::Dir,
            EntryType::Reg => NodeKind::File,
            EntryType::Symlink => NodeKind::Symlink,
            EntryType::Char => NodeKind::CharDevice,
            EntryType::Block => NodeKind::BlockDevice,
            EntryType::Fifo => NodeKind::Fifo,
            EntryType::Hardlink | EntryType::Chunk => {
                return Err(Error::entry(i, &e.name, "internal: not a node type"))
            }
        };
        let uid = to_u32(e.uid, i, e, "uid")?;
        let gid = to_u32(e.gid, i, e, "gid")?;
        let size = match kind {
            NodeKind::File => to_u64(e.size, i, e, "size")?,
            _ => 0,
        };
        let (a, b) = match kind {
            NodeKind::Symlink => self.push_arena(e.link_name.as_bytes())?,
            NodeKind::CharDevice | NodeKind::BlockDevice => (
                to_u32(e.dev_major, i, e, "devMajor")?,
                to_u32(e.dev_minor, i, e, "devMinor")?,
            ),
            _ => (0, 0),
        };
        let xattrs = if e.xattrs.is_empty() {
            None
        } else {
            let first = self.index.xattrs.len() as u32;
            for (k, v) in &e.xattrs {
                let (no, nl) = self.push_arena(k.as_bytes())?;
                let (vo, vl) = self.push_arena(v)?;
                self.index.xattrs.push((no, nl, vo, vl));
            }
            self.index.xattr_sets.push((first, e.xattrs.len() as u32));
            Some(self.index.xattr_sets.len() as u32 - 1)
        };
        let uname = self.intern_owner(uname)?;
        let gname = self.intern_owner(gname)?;
        let owner = Owner {
            uid,
            gid,
            uname,
            gname,
        };
        let owner = match self.owner_sets.get(&owner) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.index.owners.len())
                    .map_err(|_| Error::entry(i, &e.name, "more than 2^32 distinct owners"))?;
                self.index.owners.push(owner);
                self.owner_sets.insert(owner, id);
                id
            }
        };
        let node = Node {
            size,
            mtime: e.mtime().unwrap_or(0),
            parent: 0,
            nlink: if kind == NodeKind::Dir { 2 } else { 1 },
            owner,
            a,
            b,
            mode: (e.mode & 0o7777) as u16,
            kind,
            flags: if xattrs.is_some() { FLAG_XATTRS } else { 0 },
        };
        Ok((node, xattrs))
    }

    /// Checks one data entry (the `reg` itself or a `chunk`) and makes its chunk record.
    fn make_chunk(
        &mut self,
        i: usize,
        e: &TocEntry,
        reg: &TocEntry,
        expected_offset: u64,
    ) -> Result<Chunk> {
        let file_size = to_u64(reg.size, i, e, "size")?;
        let file_offset = to_u64(e.chunk_offset, i, e, "chunkOffset")?;
        if file_offset != expected_offset {
            return Err(Error::entry(
                i,
                &e.name,
                format!("chunkOffset {file_offset} does not follow the previous chunk, which ended at {expected_offset}"),
            ));
        }
        if file_offset >= file_size {
            return Err(Error::entry(
                i,
                &e.name,
                format!("chunkOffset {file_offset} is not below the file size {file_size}"),
            ));
        }
        let mut size = to_u64(e.chunk_size, i, e, "chunkSize")?;
        if size == 0 {
            size = file_size - file_offset;
        }
        if size > file_size - file_offset {
            return Err(Error::entry(
                i,
                &e.name,
                format!("chunk {file_offset}+{size} runs past the file size {file_size}"),
            ));
        }
        if size > self.opts.max_chunk_size {
            return Err(Error::entry(
                i,
                &e.name,
                format!(
                    "chunk of {size} bytes exceeds the limit of {} bytes",
                    self.opts.max_chunk_size
                ),
            ));
        }
        let zeros = e.chunk_type == "zeros";
        if !e.chunk_type.is_empty() && !zeros {
            return Err(Error::entry(
                i,
                &e.name,
                format!("unknown chunkType {:?}", e.chunk_type),
            ));
        }
        let blob_offset = to_u64(e.offset, i, e, "offset")?;
        let inner_offset = to_u64(e.inner_offset, i, e, "innerOffset")?;
        if !zeros && blob_offset >= self.opts.payload_end {
            return Err(Error::entry(
                i,
                &e.name,
                format!(
                    "offset {blob_offset} is not inside the payload (which ends at {})",
                    self.opts.payload_end
                ),
            ));
        }
        let blob_end = match to_u64(e.end_offset, i, e, "endOffset")? {
            0 => 0,
            end if end <= blob_offset || end > self.opts.payload_end => {
                return Err(Error::entry(
                    i,
                    &e.name,
                    format!(
                        "endOffset {end} is not between offset {blob_offset} and the payload end"
                    ),
                ))
            }
            end => end,
        };
        let mut digest = parse_digest(&e.chunk_digest, i, e, "chunkDigest")?;
        if digest.is_none()
            && file_offset == 0
            && size == file_size
            && e.entry_type == EntryType::Reg
        {
            // Legacy stargz: a single-chunk file is verified by its whole-file digest.
            digest = parse_digest(&e.digest, i, e, "digest")?;
        }
        let size = u32::try_from(size).map_err(|_| {
            Error::entry(
                i,
                &e.name,
                format!("chunk of {size} bytes is 4 GiB or more"),
            )
        })?;
        let inner_offset = u32::try_from(inner_offset).map_err(|_| {
            Error::entry(
                i,
                &e.name,
                format!("innerOffset {inner_offset} is 4 GiB or more"),
            )
        })?;
        let blob_len = match blob_end {
            0 => 0,
            end => u32::try_from(end - blob_offset).map_err(|_| {
                Error::entry(
                    i,
                    &e.name,
                    format!("compressed chunk {blob_offset}..{end} is 4 GiB or more"),
                )
            })?,
        };
        let mut flags = 0;
        if zeros {
            flags |= CHUNK_ZEROS;
        }
        if blob_end != 0 {
            flags |= CHUNK_END_KNOWN;
        }
        let digest = match digest {
            Some(d) => {
                flags |= CHUNK_HAS_DIGEST;
                d.0
            }
            None => [0; 32],
        };
        let id = u32::try_from(self.digests.len())
            .ok()
            .filter(|id| *id <= CHUNK_ID_MASK)
            .ok_or_else(|| Error::entry(i, &e.name, "more than 2^29 chunks in one TOC"))?;
        self.digests.push(digest);
        Ok(Chunk {
            file_offset,
            blob_offset,
            size,
            inner_offset,
            blob_len,
            flags: flags | id,
        })
    }

    fn finish_file(
        &mut self,
        entries: &[TocEntry],
        file: Option<(u32, usize)>,
        covered: u64,
    ) -> Result<()> {
        let Some((node, i)) = file else { return Ok(()) };
        let e = &entries[i];
        let size = to_u64(e.size, i, e, "size")?;
        if covered != size {
            return Err(Error::entry(
                i,
                &e.name,
                format!("chunks cover {covered} of the file's {size} bytes"),
            ));
        }
        if node != u32::MAX {
            let n = &self.index.nodes[node as usize];
            let chunks = &self.index.chunks[n.a as usize..(n.a + n.b) as usize];
            if chunks.len() == 1 && e.chunk_digest.is_empty() && !e.digest.is_empty() {
                self.index.nodes[node as usize].flags |= FLAG_FILE_DIGEST_ONLY;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, t: EntryType) -> TocEntry {
        TocEntry {
            name: name.into(),
            entry_type: t,
            ..Default::default()
        }
    }

    fn toc(entries: Vec<TocEntry>) -> Toc {
        Toc {
            version: 1,
            entries,
            ..Default::default()
        }
    }

    #[test]
    fn xattrs_follow_the_entry_that_wins() {
        let with = |name: &str, t: EntryType, v: &[u8]| {
            let mut e = entry(name, t);
            e.xattrs.insert("user.k".into(), v.to_vec());
            e
        };
        let idx = Index::new(&toc(vec![
            with("./", EntryType::Dir, b"root"),
            with("a", EntryType::Reg, b"first"),
            entry("a", EntryType::Reg),
            entry("b", EntryType::Reg),
            with("b", EntryType::Reg, b"second"),
            with("d/", EntryType::Dir, b"dir"),
            entry("d/f", EntryType::Reg),
            entry("l", EntryType::Hardlink),
        ]
        .into_iter()
        .map(|mut e| {
            if e.entry_type == EntryType::Hardlink {
                e.link_name = "b".into();
            }
            e
        })
        .collect()))
        .unwrap();
        let get = |p: &str| -> Vec<(String, Vec<u8>)> {
            let n = idx.lookup(p).unwrap();
            idx.xattrs(n)
                .map(|(k, v)| (k.to_owned(), v.to_vec()))
                .collect()
        };
        let one = |v: &[u8]| vec![("user.k".to_owned(), v.to_vec())];
        assert_eq!(get(""), one(b"root"));
        assert_eq!(get("a"), vec![]);
        assert_eq!(get("b"), one(b"second"));
        assert_eq!(get("l"), one(b"second"));
        assert_eq!(get("d"), one(b"dir"));
        assert_eq!(get("d/f"), vec![]);
    }

    #[test]
    fn records_stay_compact() {
        // The per-entry memory goal (< 150 bytes) depends on these; a chunk's digest adds 32
        // bytes in memory, none once spilled.
        assert_eq!(std::mem::size_of::<Chunk>(), 32);
        assert_eq!(std::mem::size_of::<Node>(), 40);
        assert_eq!(std::mem::size_of::<Dirent>(), 8);
    }

    #[test]
    fn very_deep_paths_do_not_overflow_the_stack() {
        let deep = "d/".repeat(200_000) + "f";
        let idx = Index::new(&toc(vec![entry(&deep, EntryType::Reg)])).unwrap();
        let mut n = 0;
        idx.walk(|_, _| n += 1);
        assert_eq!(n, 200_002);
        assert!(idx.lookup(&deep).is_some());
    }

    #[test]
    fn a_hardlink_replacing_a_directory_hides_its_children() {
        let mut f = entry("f", EntryType::Reg);
        f.size = 0;
        let mut l = entry("a", EntryType::Hardlink);
        l.link_name = "f".into();
        let idx = Index::new(&toc(vec![
            f,
            entry("a/", EntryType::Dir),
            entry("a/x", EntryType::Reg),
            l,
            entry("a/y", EntryType::Reg),
        ]))
        .unwrap();
        assert_eq!(idx.lookup("a"), idx.lookup("f"));
        assert_eq!(idx.lookup("a/x"), None);
        assert_eq!(idx.lookup("a/y"), None);
        assert_eq!(idx.attr(idx.lookup("f").unwrap()).nlink, 2);
    }

    #[test]
    fn clean_path_matches_go() {
        for (i, o) in [
            ("./foo/", "foo"),
            ("/foo", "foo"),
            ("../foo", "foo"),
            ("bar/../bar///foo", "bar/foo"),
            ("./", ""),
            ("/", ""),
            (".", ""),
            ("", ""),
            ("a/b/../../..", ""),
            ("a/./b/.", "a/b"),
        ] {
            assert_eq!(clean_path(i), o, "{i:?}");
        }
    }

    #[test]
    fn link_counts() {
        let mut f = entry("foo/file", EntryType::Reg);
        f.size = 0;
        let mut h1 = entry("foo/h1", EntryType::Hardlink);
        h1.link_name = "./foo/file".into();
        let mut h2 = entry("h2", EntryType::Hardlink);
        h2.link_name = "foo/h1".into();
        let idx = Index::new(&toc(vec![
            entry("bar/", EntryType::Dir),
            entry("foo/", EntryType::Dir),
            entry("foo/bar/", EntryType::Dir),
            f,
            h1,
            h2,
        ]))
        .unwrap();
        assert_eq!(idx.attr(idx.lookup("bar").unwrap()).nlink, 2);
        assert_eq!(idx.attr(idx.lookup("foo").unwrap()).nlink, 3);
        let file = idx.lookup("foo/file").unwrap();
        assert_eq!(idx.attr(file).nlink, 3);
        assert_eq!(idx.lookup("h2"), Some(file));
        assert_eq!(idx.lookup("foo/h1"), Some(file));
        assert_eq!(idx.attr(NodeId::ROOT).nlink, 4);
    }

    #[test]
    fn hardlink_cycle_and_missing_target_are_errors() {
        let mut a = entry("a", EntryType::Hardlink);
        a.link_name = "b".into();
        let mut b = entry("b", EntryType::Hardlink);
        b.link_name = "a".into();
        let err = Index::new(&toc(vec![a, b])).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        let mut c = entry("c", EntryType::Hardlink);
        c.link_name = "missing".into();
        let err = Index::new(&toc(vec![c])).unwrap_err().to_string();
        assert!(err.contains("not in the layer"), "{err}");
    }

    #[test]
    fn chunk_first_is_error() {
        let mut c = entry("x", EntryType::Chunk);
        c.offset = 10;
        assert!(Index::new(&toc(vec![c])).is_err());
    }

    #[test]
    fn chunks_must_cover_the_file() {
        let mut r = entry("f", EntryType::Reg);
        r.size = 10;
        r.offset = 1;
        r.chunk_size = 4;
        let mut c = entry("f", EntryType::Chunk);
        c.offset = 2;
        c.chunk_offset = 5; // gap
        assert!(Index::new(&toc(vec![r.clone(), c.clone()])).is_err());
        c.chunk_offset = 4;
        let idx = Index::new(&toc(vec![r, c])).unwrap();
        let f = idx.lookup("f").unwrap();
        let ch = idx.chunks(f);
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[1].size(), 6);
        assert_eq!(ch[0].blob_end(), 2);
    }

    #[test]
    fn explicit_root_and_implicit_dirs() {
        let mut root = entry("./", EntryType::Dir);
        root.mode = 0o700;
        let idx = Index::new(&toc(vec![root, entry("a/b/c", EntryType::Reg)])).unwrap();
        assert_eq!(idx.attr(NodeId::ROOT).mode, 0o700);
        let a = idx.lookup("a").unwrap();
        assert!(idx.is_implicit(a));
        assert_eq!(idx.attr(a).mode, 0o755);
        assert_eq!(idx.attr(a).nlink, 3);
        assert_eq!(idx.parent(idx.lookup("a/b").unwrap()), a);
    }

    #[test]
    fn dir_replaced_by_file_hides_children() {
        let mut inner = entry("thing/inner.txt", EntryType::Reg);
        inner.size = 0;
        let idx = Index::new(&toc(vec![
            entry("thing/", EntryType::Dir),
            inner,
            entry("thing", EntryType::Reg),
        ]))
        .unwrap();
        assert_eq!(idx.attr(idx.lookup("thing").unwrap()).kind, NodeKind::File);
        assert_eq!(idx.lookup("thing/inner.txt"), None);
    }

    #[test]
    fn negative_values_are_errors() {
        let mut r = entry("f", EntryType::Reg);
        r.size = -1;
        assert!(Index::new(&toc(vec![r])).is_err());
        let mut d = entry("d", EntryType::Dir);
        d.uid = -5;
        assert!(Index::new(&toc(vec![d])).is_err());
    }
}
