//! The layer's tree as overlayfs must see it (OCI layer semantics → overlayfs semantics).
//!
//! - `.wh.X` is never visible under its own name; when the directory has no visible `X`, `X`
//!   appears as an overlayfs whiteout: a character device 0:0 with no permission bits, whose
//!   inode is the `.wh.X` entry's.
//! - A directory holding `.wh..wh..opq` is opaque: the marker is hidden and the directory
//!   carries the opaque xattr (which name(s) is the filesystem's choice, see
//!   [`crate::OpaqueXattr`]).
//! - `.prefetch.landmark` and `.no.prefetch.landmark` are hidden at the root only.
//!
//! Whiteouts and opaque directories are found once, when the filesystem is created (one pass
//! over every directory entry); listings are built on first `readdir` and kept, since the
//! layer never changes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use estargz::index::{NodeId, NodeKind, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use estargz::Index;

/// Prefix of OCI whiteout entries.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// One visible name in a directory listing.
#[derive(Clone, Debug)]
pub(crate) struct Listed {
    /// The name shown (for a whiteout, `X` of `.wh.X`).
    pub name: Box<str>,
    /// The node (for a whiteout, the `.wh.X` entry's node).
    pub node: NodeId,
}

/// Whiteouts, opaque directories and cached listings. See the module documentation.
#[derive(Debug)]
pub(crate) struct Tree {
    whiteouts: HashSet<NodeId>,
    opaque: HashSet<NodeId>,
    listings: Mutex<HashMap<NodeId, Arc<[Listed]>>>,
}

fn is_landmark(name: &str) -> bool {
    name == PREFETCH_LANDMARK || name == NO_PREFETCH_LANDMARK
}

/// True when `name` may appear in directory `dir` (before whiteout translation).
fn visible(dir: NodeId, name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with(WHITEOUT_PREFIX)
        && !(dir == NodeId::ROOT && is_landmark(name))
}

/// For a whiteout entry `.wh.X` in `dir` that is shown as `X`, returns `X`.
fn whiteout_target<'n>(index: &Index, dir: NodeId, name: &'n str) -> Option<&'n str> {
    let target = name.strip_prefix(WHITEOUT_PREFIX)?;
    if name == OPAQUE_MARKER || !visible(dir, target) {
        return None;
    }
    // A real entry of the same name wins over the whiteout.
    index
        .child(dir, target.as_bytes())
        .is_none()
        .then_some(target)
}

impl Tree {
    /// Finds every whiteout and opaque directory of `index`.
    pub fn new(index: &Index) -> Tree {
        let mut whiteouts = HashSet::new();
        let mut opaque = HashSet::new();
        for dir in (0..index.node_count() as u32).map(NodeId) {
            if index.attr(dir).kind != NodeKind::Dir {
                continue;
            }
            for (name, child) in index.read_dir(dir) {
                if name == OPAQUE_MARKER {
                    opaque.insert(dir);
                } else if whiteout_target(index, dir, name).is_some() {
                    whiteouts.insert(child);
                }
            }
        }
        Tree {
            whiteouts,
            opaque,
            listings: Mutex::new(HashMap::new()),
        }
    }

    /// True when `node` is shown as an overlayfs whiteout.
    pub fn is_whiteout(&self, node: NodeId) -> bool {
        self.whiteouts.contains(&node)
    }

    /// True when directory `dir` is opaque.
    pub fn is_opaque(&self, dir: NodeId) -> bool {
        self.opaque.contains(&dir)
    }

    /// Number of whiteouts and opaque directories.
    pub fn counts(&self) -> (usize, usize) {
        (self.whiteouts.len(), self.opaque.len())
    }

    /// Looks `name` up in `dir` as overlayfs sees it: a visible entry, or the `.wh.name` node
    /// shown as a whiteout, or nothing.
    pub fn lookup(&self, index: &Index, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let name = std::str::from_utf8(name).ok()?;
        if !visible(dir, name) {
            return None;
        }
        if let Some(n) = index.child(dir, name.as_bytes()) {
            return Some(n);
        }
        let wh = format!("{WHITEOUT_PREFIX}{name}");
        index
            .child(dir, wh.as_bytes())
            .filter(|n| self.is_whiteout(*n))
    }

    /// The visible entries of `dir`, sorted by name (byte order), without `.` and `..`.
    pub fn listing(&self, index: &Index, dir: NodeId) -> Arc<[Listed]> {
        if let Some(l) = self.listings.lock().ok().and_then(|m| m.get(&dir).cloned()) {
            return l;
        }
        let mut entries: Vec<Listed> = Vec::new();
        let mut needs_sort = false;
        for (name, node) in index.read_dir(dir) {
            let shown = if visible(dir, name) {
                name
            } else if let Some(target) = whiteout_target(index, dir, name) {
                needs_sort = true;
                target
            } else {
                continue;
            };
            entries.push(Listed {
                name: shown.into(),
                node,
            });
        }
        if needs_sort {
            entries.sort_unstable_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        }
        let listing: Arc<[Listed]> = entries.into();
        if let Ok(mut m) = self.listings.lock() {
            m.insert(dir, Arc::clone(&listing));
        }
        listing
    }
}
