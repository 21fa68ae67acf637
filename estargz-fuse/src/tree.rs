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
//! over every directory entry). A directory whose entries are all shown under their own names
//! (almost all of them) is listed straight from the index, with no copy; the listing of one
//! that hides or renames entries is built on first `readdir` and kept, since the layer never
//! changes.

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

/// The visible entries of a directory, sorted by name (byte order), without `.` and `..`.
#[derive(Clone, Debug)]
pub(crate) enum Listing {
    /// Every entry of the directory, as the index lists it.
    Plain(NodeId),
    /// The entries after whiteout translation and hiding.
    Built(Arc<[Listed]>),
}

impl Listing {
    /// The number of entries.
    pub fn len(&self, index: &Index) -> usize {
        match self {
            Listing::Plain(dir) => index.dir_len(*dir),
            Listing::Built(l) => l.len(),
        }
    }

    /// Entry `i`: (node, name shown).
    pub fn get<'a>(&'a self, index: &'a Index, i: usize) -> Option<(NodeId, &'a str)> {
        match self {
            Listing::Plain(dir) => index.dir_entry(*dir, i).map(|(name, node)| (node, name)),
            Listing::Built(l) => l.get(i).map(|e| (e.node, &*e.name)),
        }
    }
}

/// Whiteouts, opaque directories and cached listings. See the module documentation.
#[derive(Debug)]
pub(crate) struct Tree {
    whiteouts: HashSet<NodeId>,
    opaque: HashSet<NodeId>,
    /// Directories with an entry that is hidden or shown under another name.
    translated: HashSet<NodeId>,
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
        let mut translated = HashSet::new();
        for dir in (0..index.node_count() as u32).map(NodeId) {
            if index.attr(dir).kind != NodeKind::Dir {
                continue;
            }
            for (name, child) in index.read_dir(dir) {
                if !visible(dir, name) {
                    translated.insert(dir);
                }
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
            translated,
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
    pub fn listing(&self, index: &Index, dir: NodeId) -> Listing {
        if !self.translated.contains(&dir) {
            return Listing::Plain(dir);
        }
        if let Some(l) = self.listings.lock().ok().and_then(|m| m.get(&dir).cloned()) {
            return Listing::Built(l);
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
        Listing::Built(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(json: &str) -> Index {
        let toc = estargz::Toc::from_json(json.as_bytes()).expect("toc");
        Index::new(&toc).expect("index")
    }

    fn names(tree: &Tree, index: &Index, dir: NodeId) -> (bool, Vec<String>) {
        let l = tree.listing(index, dir);
        let plain = matches!(l, Listing::Plain(_));
        let names = (0..l.len(index))
            .map(|i| l.get(index, i).expect("entry").1.to_owned())
            .collect();
        assert!(l.get(index, l.len(index)).is_none());
        (plain, names)
    }

    #[test]
    fn plain_directories_are_listed_from_the_index_and_others_are_translated() {
        let idx = index(
            r#"{"version":1,"entries":[
            {"name":".prefetch.landmark","type":"reg"},
            {"name":"plain/","type":"dir"},
            {"name":"plain/b","type":"reg"},
            {"name":"plain/a","type":"reg"},
            {"name":"wh/","type":"dir"},
            {"name":"wh/.wh.gone","type":"reg"},
            {"name":"wh/.wh..wh..opq","type":"reg"},
            {"name":"wh/keep","type":"reg"},
            {"name":"wh/.wh.keep","type":"reg"}]}"#,
        );
        let tree = Tree::new(&idx);
        let plain = idx.lookup("plain").expect("plain");
        assert_eq!(
            names(&tree, &idx, plain),
            (true, vec!["a".into(), "b".into()])
        );
        let wh = idx.lookup("wh").expect("wh");
        // `.wh.gone` is shown as `gone`; `.wh.keep` and the opaque marker are hidden.
        assert_eq!(
            names(&tree, &idx, wh),
            (false, vec!["gone".into(), "keep".into()])
        );
        // Asked again: the same listing, from the cache.
        assert_eq!(names(&tree, &idx, wh).1, vec!["gone", "keep"]);
        assert_eq!(
            names(&tree, &idx, NodeId::ROOT),
            (false, vec!["plain".into(), "wh".into()])
        );
    }
}
