//! `Index::new` on arbitrary TOCs, then everything a filesystem does with an index: walk every
//! node, look up every path, read metadata, and plan reads (`ReadPlan`) of a few ranges of every
//! file. Nothing may panic, and the plans must be consistent (clipped to the file, chunks in
//! order and covering the range, merged blob ranges sorted and disjoint).
//!
//! The first input byte picks how the TOC is made:
//! - even: the rest is TOC JSON for `Toc::from_json` (seeds: the vectors' `toc.json`, see
//!   `fuzz/seed-corpus.sh`);
//! - odd: the rest drives a generator of structurally plausible TOCs (few short path
//!   components, `.`/`..`/empty components, every entry type, hardlink and chunk chains, small
//!   or extreme numbers), which reaches the index's corner cases far sooner than raw JSON. The
//!   generated TOC goes through `to_json` + `from_json` first.
#![no_main]

use std::collections::BTreeMap;

use estargz::index::{NodeId, NodeKind};
use estargz::{EntryType, Index, ReadPlan, Toc, TocEntry};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const TYPES: [EntryType; 8] = [
    EntryType::Dir,
    EntryType::Reg,
    EntryType::Symlink,
    EntryType::Hardlink,
    EntryType::Char,
    EntryType::Block,
    EntryType::Fifo,
    EntryType::Chunk,
];

const COMPONENTS: [&str; 12] = [
    "a",
    "b",
    "c",
    "dir",
    ".",
    "..",
    "",
    ".wh.a",
    ".wh..wh..opq",
    ".prefetch.landmark",
    ".no.prefetch.landmark",
    "\u{e9}t\u{e9}",
];

fn number(u: &mut Unstructured<'_>) -> Result<i64> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => 0,
        1 => -1,
        2 => i64::MAX,
        3 => i64::from(u32::MAX) + 1,
        4 => u.arbitrary()?,
        _ => i64::from(u.int_in_range(0..=300u16)?),
    })
}

fn path(u: &mut Unstructured<'_>) -> Result<String> {
    let mut s = String::new();
    match u.int_in_range(0..=3u8)? {
        0 => s.push_str("./"),
        1 => s.push('/'),
        _ => {}
    }
    let n = u.int_in_range(0..=4u8)?;
    for i in 0..n {
        if i > 0 {
            s.push('/');
        }
        s.push_str(u.choose(&COMPONENTS)?);
    }
    if u.ratio(1, 4)? {
        s.push('/');
    }
    Ok(s)
}

fn digest(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => String::new(),
        1 => "sha256:0000".into(),
        _ => {
            let b: [u8; 32] = u.arbitrary()?;
            estargz::Digest(b).to_string()
        }
    })
}

fn entry(u: &mut Unstructured<'_>) -> Result<TocEntry> {
    let entry_type = *u.choose(&TYPES)?;
    let mut e = TocEntry {
        name: path(u)?,
        entry_type,
        size: number(u)?,
        mode: number(u)?,
        uid: number(u)?,
        gid: number(u)?,
        offset: number(u)?,
        chunk_offset: number(u)?,
        chunk_size: number(u)?,
        ..TocEntry::default()
    };
    if matches!(entry_type, EntryType::Symlink | EntryType::Hardlink) || u.ratio(1, 8)? {
        e.link_name = path(u)?;
    }
    if u.ratio(1, 4)? {
        e.inner_offset = number(u)?;
    }
    if u.ratio(1, 4)? {
        e.end_offset = number(u)?;
    }
    if u.ratio(1, 2)? {
        e.chunk_digest = digest(u)?;
    }
    if u.ratio(1, 4)? {
        e.digest = digest(u)?;
    }
    if u.ratio(1, 8)? {
        e.chunk_type = (*u.choose(&["zeros", "data", ""])?).to_owned();
    }
    if matches!(entry_type, EntryType::Char | EntryType::Block) {
        e.dev_major = number(u)?;
        e.dev_minor = number(u)?;
    }
    if u.ratio(1, 8)? {
        e.user_name = (*u.choose(&["root", "", "user"])?).to_owned();
        e.group_name = (*u.choose(&["root", "", "group"])?).to_owned();
    }
    if u.ratio(1, 8)? {
        e.modtime =
            (*u.choose(&["2019-08-20T10:30:43Z", "1970-01-01T00:00:00+01:00", "x"])?).to_owned();
    }
    if u.ratio(1, 8)? {
        let mut x = BTreeMap::new();
        x.insert("user.a".to_owned(), u.arbitrary::<Vec<u8>>()?);
        e.xattrs = x;
    }
    Ok(e)
}

fn generated(data: &[u8]) -> Option<Toc> {
    let mut u = Unstructured::new(data);
    let mut entries = Vec::new();
    while entries.len() < 256 && !u.is_empty() {
        // A regular file is often followed by chunk entries of the same name that continue it.
        let e = entry(&mut u).ok()?;
        let reg = e.entry_type == EntryType::Reg;
        let name = e.name.clone();
        entries.push(e);
        if reg {
            // (An exhausted `Unstructured` answers `true` forever: stop on the length.)
            while entries.len() < 256 && !u.is_empty() && u.ratio(1, 3).ok()? {
                let mut c = entry(&mut u).ok()?;
                c.entry_type = EntryType::Chunk;
                c.name = name.clone();
                entries.push(c);
            }
        }
    }
    let toc = Toc {
        version: 1,
        entries,
        ..Toc::default()
    };
    let json = toc.to_json();
    let back = Toc::from_json(&json).expect("a TOC written by to_json parses");
    assert_eq!(back, toc);
    Some(back)
}

fn check_plan(index: &Index, node: NodeId, size: u64, offset: u64, len: u64) {
    let plan = ReadPlan::new(index, node, offset, len).expect("a plan on a regular file");
    let r = plan.range();
    assert!(r.start <= r.end && r.end <= size, "{r:?} outside 0..{size}");
    assert_eq!(r.end, offset.saturating_add(len).min(size));
    let chunks = plan.chunks();
    if r.is_empty() {
        return;
    }
    // The chunks cover the range, in order, with no gap.
    let first = chunks.first().expect("a non-empty range has chunks");
    let last = chunks.last().expect("a non-empty range has chunks");
    assert!(first.file_offset() <= r.start && last.file_range().end >= r.end);
    for w in chunks.windows(2) {
        assert_eq!(w[0].file_range().end, w[1].file_offset());
    }
    let ranges = plan.blob_ranges();
    for w in ranges.windows(2) {
        assert!(w[0].end < w[1].start, "blob ranges not merged: {ranges:?}");
    }
    // Copying zero-filled chunk data fills exactly the range (small ranges only).
    if r.end - r.start <= 1 << 20 && chunks.iter().all(|c| c.size() <= 1 << 20) {
        let mut buf = vec![0u8; (r.end - r.start) as usize];
        let copied: usize = chunks
            .iter()
            .map(|c| plan.copy_chunk_data(c, &vec![0u8; c.size() as usize], &mut buf))
            .sum();
        assert_eq!(copied as u64, r.end - r.start);
    }
}

fn exercise(toc: &Toc) {
    let Ok(index) = Index::new(toc) else {
        return;
    };
    let _ = index.landmark();
    let mut visited = 0usize;
    index.walk(|path, node| {
        visited += 1;
        assert_eq!(index.lookup(path), Some(node), "lookup({path:?})");
        let attr = index.attr(node);
        let _ = index.xattrs(node).count();
        let _ = index.owner_names(node);
        match attr.kind {
            NodeKind::Dir => {
                for (i, (name, child)) in index.read_dir(node).enumerate() {
                    assert_eq!(index.child(node, name.as_bytes()), Some(child));
                    assert_eq!(index.dir_entry(node, i), Some((name, child)));
                }
                assert!(index.dir_entry(node, index.dir_len(node)).is_none());
                let parent = index.parent(node);
                assert_eq!(index.attr(parent).kind, NodeKind::Dir);
                assert!(ReadPlan::new(&index, node, 0, 1).is_err());
            }
            NodeKind::File => {
                let size = attr.size;
                // The chunks cover [0, size) in order.
                let mut end = 0;
                for c in index.chunks(node) {
                    assert_eq!(c.file_offset(), end, "{path}: chunk gap");
                    end = c.file_range().end;
                }
                assert_eq!(end, size, "{path}: chunks do not cover the file");
                for (off, len) in [
                    (0, size),
                    (0, 1),
                    (size / 2, 3),
                    (size.saturating_sub(1), 10),
                    (size, 10),
                    (u64::MAX - 1, 10),
                    (1, u64::MAX),
                ] {
                    check_plan(&index, node, size, off, len);
                }
            }
            NodeKind::Symlink => {
                assert!(index.link_target(node).is_some());
            }
            _ => {}
        }
    });
    assert!(visited >= 1);
    let _ = index.heap_size();
    let _ = index.lookup("../../a/./b//c/");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let toc = if mode & 1 == 0 {
        match Toc::from_json(rest) {
            Ok(toc) => toc,
            Err(_) => return,
        }
    } else {
        match generated(rest) {
            Some(toc) => toc,
            None => return,
        }
    };
    exercise(&toc);
});
