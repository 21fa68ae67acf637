//! `Reader::open` on an arbitrary blob, then everything a client does with an opened blob:
//! walk and look up every path, read every regular file through `Read`, `read_at` and
//! `for_each_chunk`, read the TOC back, and `verify()`. Nothing may panic; every read that
//! succeeds returns exactly the file's size; the three read paths agree; and when `verify()`
//! passes, every file read passed too.
//!
//! Limits keep one input cheap: the TOC is at most 1 MiB (compressed and not), 4096 entries,
//! 1 MiB per chunk, and at most 32 MiB of file data is decompressed per input (reads past that
//! budget are skipped, not failed). Seeds: `fuzz/seed-corpus.sh`.
#![no_main]

use std::io::Read;

use estargz::index::{NodeId, NodeKind};
use estargz::{OpenOptions, Reader};
use libfuzzer_sys::fuzz_target;

const MIB: u64 = 1 << 20;
const DATA_BUDGET: u64 = 32 * MIB;

fuzz_target!(|data: &[u8]| {
    let opts = OpenOptions {
        max_toc_compressed_size: MIB,
        max_toc_size: MIB,
        max_entries: 4096,
        max_chunk_size: MIB,
        ..OpenOptions::default()
    };
    let Ok(reader) = Reader::open_with(data.to_vec(), opts) else {
        return;
    };
    let index = reader.index();

    // The TOC reads back to the bytes whose digest the reader reported.
    let json = reader
        .toc_json()
        .expect("the TOC decoded once decodes again");
    assert_eq!(estargz::Digest::of(&json), reader.toc_digest());

    // Every path the walk produces looks up to the node it was produced with.
    let mut files: Vec<(String, NodeId)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    index.walk(|path, node| {
        assert_eq!(index.lookup(path), Some(node), "lookup({path:?})");
        let attr = index.attr(node);
        let _ = index.read_dir(node).count();
        let _ = index.xattrs(node).count();
        let _ = index.link_target(node);
        let _ = index.owner_names(node);
        if attr.kind == NodeKind::File && seen.insert(node) {
            files.push((path.to_owned(), node));
        }
    });

    // Read every regular file (within the budget) three ways.
    let mut budget = DATA_BUDGET;
    let mut all_reads_ok = true;
    for (path, node) in &files {
        let size = index.attr(*node).size;
        if size > budget {
            all_reads_ok = false; // not checked: verify() may still pass
            continue;
        }
        budget -= size;

        let by_read = reader.open_file(path).and_then(|mut f| {
            let mut out = Vec::new();
            f.read_to_end(&mut out)
                .map_err(|e| estargz::Error::io("read", e))?;
            Ok(out)
        });
        let mut buf = vec![0u8; size as usize];
        let by_read_at = reader.read_at(*node, 0, &mut buf).map(|n| {
            buf.truncate(n);
            buf
        });
        let by_chunks = reader.open_file(path).and_then(|mut f| {
            let mut out = Vec::new();
            f.for_each_chunk(0, |d| {
                out.extend_from_slice(d);
                Ok(())
            })?;
            Ok(out)
        });
        match (by_read, by_read_at, by_chunks) {
            (Ok(a), Ok(b), Ok(c)) => {
                assert_eq!(a.len() as u64, size, "{path}: Read returned a short file");
                assert_eq!(a, b, "{path}: read_at differs from Read");
                assert_eq!(a, c, "{path}: for_each_chunk differs from Read");
            }
            (Err(_), Err(_), Err(_)) => all_reads_ok = false,
            (a, b, c) => panic!(
                "{path}: the read paths disagree: Read {:?}, read_at {:?}, for_each_chunk {:?}",
                a.map(|v| v.len()),
                b.map(|v| v.len()),
                c.map(|v| v.len())
            ),
        }
    }

    // verify() decodes every chunk again: only when the blob's data fits the budget.
    let total: u64 = index.all_chunks().iter().map(|c| c.size()).sum();
    if total <= DATA_BUDGET {
        if let Ok(report) = reader.verify() {
            assert!(
                all_reads_ok,
                "verify() passed ({report:?}) but reading a file failed"
            );
        }
    }
});
