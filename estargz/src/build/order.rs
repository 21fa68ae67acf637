//! Which entries go into the blob, and in what order (ESTARGZ-FORMAT.md §9, §10.2, §10.3).
//!
//! - Names are compared after Go's `cleanEntryName` ([`clean_name`]): `./a`, `/a`, `a/` and
//!   `a` are the same entry.
//! - Input landmarks and a root `stargz.index.json` are dropped.
//! - A later duplicate replaces an earlier one and takes the later position.
//! - Prioritised paths come first, each preceded by its ancestors (and, for hardlinks, their
//!   targets), then the landmark, then everything else in input order.
//!
//! One deliberate difference from Go: a prioritised path whose ancestor directory has no tar
//! entry is still found; the missing ancestor directories are synthesised (`dir`, mode 0755,
//! uid/gid 0, no mtime, named `<cleaned path>/`) right before their first descendant.
//! Go reports such a path as not found.

use std::collections::{HashMap, HashSet};

use super::tar_in::TarEntry;

/// Name of the landmark written after the prioritised files.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Name of the landmark written first when nothing is prioritised.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// Name of the TOC entry.
pub const TOC_TAR_NAME: &str = "stargz.index.json";

/// One item of the output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// The input entry at this index.
    Input(usize),
    /// The landmark: `.prefetch.landmark` when `true`, else `.no.prefetch.landmark`.
    Landmark(bool),
    /// A synthesised parent directory (raw name, ends with `/`).
    Dir(Vec<u8>),
}

/// Go's `path.Clean("/" + name)` without the leading `/`, on raw bytes.
pub(crate) fn clean_name(name: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for p in name.split(|&c| c == b'/') {
        match p {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            _ => parts.push(p),
        }
    }
    parts.join(&b'/')
}

/// The parent of a cleaned name (`""` for top-level names and the root).
fn parent(clean: &[u8]) -> &[u8] {
    match clean.iter().rposition(|&c| c == b'/') {
        Some(i) => &clean[..i],
        None => b"",
    }
}

/// The input after dropping reserved names and earlier duplicates.
#[derive(Debug, Default)]
pub(crate) struct Entries {
    /// Every kept entry in input order; `None` where a later duplicate replaced it.
    pub slots: Vec<Option<TarEntry>>,
    /// Cleaned name → slot.
    pub by_name: HashMap<Vec<u8>, usize>,
}

impl Entries {
    /// Adds the next input entry (after the reserved-name check, duplicates replaced).
    pub fn push(&mut self, e: TarEntry) {
        let clean = clean_name(&e.name);
        if clean == PREFETCH_LANDMARK.as_bytes()
            || clean == NO_PREFETCH_LANDMARK.as_bytes()
            || clean == TOC_TAR_NAME.as_bytes()
        {
            return;
        }
        let slot = self.slots.len();
        if let Some(old) = self.by_name.insert(clean, slot) {
            self.slots[old] = None;
        }
        self.slots.push(Some(e));
    }

    fn get(&self, clean: &[u8]) -> Option<(usize, &TarEntry)> {
        let &i = self.by_name.get(clean)?;
        self.slots[i].as_ref().map(|e| (i, e))
    }
}

/// The output order: prioritised entries, the landmark, the rest. Returns the order and the
/// prioritised paths (as given) that were not found.
pub(crate) fn order(entries: &Entries, prioritized: &[String]) -> (Vec<Item>, Vec<String>) {
    let mut s = Sorter {
        entries,
        out: Vec::new(),
        picked: HashSet::new(),
        synthesized: HashSet::new(),
    };
    let mut missed = Vec::new();
    for p in prioritized {
        if !s.move_path(&clean_name(p.as_bytes())) {
            missed.push(p.clone());
        }
    }
    s.out.push(Item::Landmark(!prioritized.is_empty()));
    for (i, e) in entries.slots.iter().enumerate() {
        if e.is_some() && !s.picked.contains(&i) {
            s.out.push(Item::Input(i));
        }
    }
    (s.out, missed)
}

struct Sorter<'a> {
    entries: &'a Entries,
    out: Vec<Item>,
    picked: HashSet<usize>,
    synthesized: HashSet<Vec<u8>>,
}

impl Sorter<'_> {
    fn pick(&mut self, slot: usize) {
        if self.picked.insert(slot) {
            self.out.push(Item::Input(slot));
        }
    }

    fn move_root(&mut self) {
        if let Some((slot, _)) = self.entries.get(b"") {
            self.pick(slot);
        }
    }

    /// Go's `moveRec`, iterative over ancestors, with missing ancestors synthesised and
    /// hardlink chains followed at most 256 deep (cycles stop there instead of overflowing the
    /// stack). False when `clean` is not in the input.
    fn move_path(&mut self, clean: &[u8]) -> bool {
        self.move_path_depth(clean, 0)
    }

    fn move_path_depth(&mut self, clean: &[u8], depth: usize) -> bool {
        if clean.is_empty() {
            self.move_root();
            return true;
        }
        let found = self.entries.get(clean);
        let already = found.is_some_and(|(slot, _)| self.picked.contains(&slot))
            || self.synthesized.contains(clean);
        if found.is_none() && !already {
            return false;
        }
        // Ancestors, top-down.
        let mut ancestors = Vec::new();
        let mut p = parent(clean);
        while !p.is_empty() {
            ancestors.push(p);
            p = parent(p);
        }
        self.move_root();
        for anc in ancestors.into_iter().rev() {
            match self.entries.get(anc) {
                Some((slot, e)) => {
                    if !self.picked.contains(&slot) {
                        self.follow_link(e, depth);
                        self.pick(slot);
                    }
                }
                None => {
                    if self.synthesized.insert(anc.to_vec()) {
                        let mut name = anc.to_vec();
                        name.push(b'/');
                        self.out.push(Item::Dir(name));
                    }
                }
            }
        }
        if let Some((slot, e)) = found {
            if !self.picked.contains(&slot) {
                if !self.follow_link(e, depth) {
                    return false;
                }
                self.pick(slot);
            }
        }
        true
    }

    /// For a hardlink, moves its target first. False when the target is missing.
    fn follow_link(&mut self, e: &TarEntry, depth: usize) -> bool {
        if e.typeflag != b'1' || depth >= 256 {
            return true;
        }
        let target = clean_name(&e.link_name);
        self.move_path_depth(&target, depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean() {
        for (raw, want) in [
            ("./foo/", "foo"),
            ("/foo", "foo"),
            ("../foo", "foo"),
            ("bar/../bar///foo", "bar/foo"),
            ("./", ""),
            ("/", ""),
            (".", ""),
            ("", ""),
            ("a/b/../../..", ""),
        ] {
            assert_eq!(clean_name(raw.as_bytes()), want.as_bytes(), "{raw}");
        }
    }
}
