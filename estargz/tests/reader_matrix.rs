//! The reader parts of shared/spec/CONFORMANCE-MATRIX.md (WRT, CHK, MET, VER-05) as Rust tests,
//! over blobs written by the fixture writer in `common/`, for gzip and zstd:chunked alike.

mod common;

use common::{build, dev, dir, file, link, Codec, Ent, Opts};
use estargz::index::{NodeId, NodeKind};
use estargz::{Digest, EntryType, OpenOptions, ReadPlan, Reader};

const CODECS: [Codec; 2] = [Codec::Gzip, Codec::Zstd];

fn open(entries: &[Ent], opts: &Opts) -> Reader<Vec<u8>> {
    let b = build(entries, opts);
    Reader::open_with(
        b.blob,
        OpenOptions {
            expected_toc_digest: Some(b.toc_digest),
            ..OpenOptions::default()
        },
    )
    .expect("open")
}

fn read(r: &Reader<Vec<u8>>, path: &str, off: u64, len: usize) -> Vec<u8> {
    let node = r.index().lookup(path).expect("path");
    let mut buf = vec![0u8; len];
    let n = r.read_at(node, off, &mut buf).expect("read");
    buf.truncate(n);
    buf
}

fn children(r: &Reader<Vec<u8>>, path: &str) -> Vec<String> {
    let idx = r.index();
    idx.read_dir(idx.lookup(path).expect("dir"))
        .map(|(n, _)| n.to_owned())
        .collect()
}

#[test]
fn wrt_empty_blob_has_a_root() {
    for codec in CODECS {
        let r = open(
            &[],
            &Opts {
                codec,
                ..Opts::default()
            },
        );
        assert_eq!(r.index().toc_entry_count(), 0);
        assert_eq!(r.index().lookup(""), Some(NodeId::ROOT));
        assert_eq!(r.index().attr(NodeId::ROOT).kind, NodeKind::Dir);
    }
}

#[test]
fn wrt_files_xattrs_and_reads_at_every_offset() {
    for codec in CODECS {
        let mut f = file("foo/bar.txt", b"Some contents");
        f.xattrs.insert("foo".into(), b"bar".to_vec());
        f.xattrs
            .insert("invalid-utf8".into(), vec![0xff, 0xfe, 0xfd]);
        let r = open(
            &[dir("foo/"), f, file("foo/empty", b"")],
            &Opts {
                codec,
                ..Opts::default()
            },
        );
        assert_eq!(read(&r, "foo/bar.txt", 0, 100), b"Some contents");
        assert_eq!(read(&r, "foo/bar.txt", 1, 100), b"ome contents");
        assert_eq!(read(&r, "foo/empty", 0, 10), b"");
        assert_eq!(children(&r, ""), ["foo"]);
        assert_eq!(children(&r, "foo"), ["bar.txt", "empty"]);
        let idx = r.index();
        let x: Vec<(String, Vec<u8>)> = idx
            .xattrs(idx.lookup("foo/bar.txt").expect("file"))
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect();
        assert_eq!(
            x,
            [
                ("foo".to_owned(), b"bar".to_vec()),
                ("invalid-utf8".to_owned(), vec![0xff, 0xfe, 0xfd])
            ]
        );
    }
}

#[test]
fn wrt_chunked_file_every_offset_and_next_offsets() {
    // WRT-07 / CHK-02 / CHK-03: chunk size 4, a 23-byte file in 6 chunks.
    let data = b"This is such a big file";
    for codec in CODECS {
        let r = open(
            &[dir("foo/"), file("foo/big.txt", data)],
            &Opts {
                chunk_size: 4,
                codec,
                ..Opts::default()
            },
        );
        let idx = r.index();
        let node = idx.lookup("foo/big.txt").expect("file");
        let chunks = idx.chunks(node);
        assert_eq!(chunks.len(), 6);
        for w in chunks.windows(2) {
            assert_eq!(w[0].blob_end(), w[1].blob_offset(), "nextOffset");
            assert_eq!(w[0].file_range().end, w[1].file_offset());
        }
        for off in 0..=data.len() {
            for len in [0, 1, 3, 4, 5, 9, 100] {
                let end = (off + len).min(data.len());
                assert_eq!(
                    read(&r, "foo/big.txt", off as u64, len),
                    &data[off..end],
                    "{off}+{len}"
                );
            }
        }
        // Past the end: 0 bytes, no error (CHK-05).
        assert_eq!(read(&r, "foo/big.txt", 100, 10), b"");
        // CHK-01: each offset falls in exactly one chunk.
        for off in 0..data.len() as u64 {
            let plan = ReadPlan::new(idx, node, off, 1).expect("plan");
            assert_eq!(plan.chunks().len(), 1);
            assert!(plan.chunks()[0].file_range().contains(&off));
        }
        r.verify().expect("verify");
    }
}

#[test]
fn wrt_link_counts_modes_devices() {
    let mut entries = vec![
        dir("bar/"),
        dir("foo/"),
        dir("foo/bar/"),
        dev(EntryType::Block, "b", 123, 456),
        dev(EntryType::Char, "c", 111, 222),
        Ent {
            name: "f".into(),
            kind: Some(EntryType::Fifo),
            ..Default::default()
        },
        link(EntryType::Symlink, "foo/sym", "../../x"),
    ];
    for (name, mode) in [
        ("m/setgid/", 0o2755),
        ("m/setuid", 0o4700),
        ("m/sticky/", 0o1755),
        ("m/plain", 0o700),
    ] {
        let mut e = if name.ends_with('/') {
            dir(name)
        } else {
            file(name, b"Some contents")
        };
        e.mode = mode;
        entries.push(e);
    }
    for codec in CODECS {
        let r = open(
            &entries,
            &Opts {
                codec,
                ..Opts::default()
            },
        );
        let idx = r.index();
        let at = |p: &str| idx.attr(idx.lookup(p).expect(p));
        assert_eq!(at("bar").nlink, 2);
        assert_eq!(at("foo").nlink, 3);
        assert_eq!(at("foo/bar").nlink, 2);
        let b = at("b");
        assert_eq!(
            (b.kind, b.dev_major, b.dev_minor, b.mode, b.nlink),
            (NodeKind::BlockDevice, 123, 456, 0, 1)
        );
        let c = at("c");
        assert_eq!(
            (c.kind, c.dev_major, c.dev_minor),
            (NodeKind::CharDevice, 111, 222)
        );
        assert_eq!(at("f").kind, NodeKind::Fifo);
        assert_eq!(
            idx.link_target(idx.lookup("foo/sym").expect("sym")),
            Some("../../x")
        );
        assert_eq!(at("foo/sym").size, 7);
        assert_eq!(at("m/setgid").mode, 0o2755);
        assert_eq!(at("m/setuid").mode, 0o4700);
        assert_eq!(at("m/sticky").mode, 0o1755);
        assert_eq!(at("m/plain").mode, 0o700);
    }
}

#[test]
fn wrt_explicit_root_is_not_its_own_child() {
    // WRT-08 with every name prefix of the matrix.
    for prefix in ["", "./", "/", "../"] {
        let r = open(
            &[
                dir(&format!("{prefix}/")),
                dir(&format!("{prefix}bar/")),
                dir(&format!("{prefix}foo/")),
                file(&format!("{prefix}foo/bar.txt"), b"x"),
            ],
            &Opts::default(),
        );
        let mut max_depth = 0;
        r.index().walk(|p, _| {
            max_depth = max_depth.max(if p.is_empty() {
                0
            } else {
                p.split('/').count()
            });
        });
        assert_eq!(max_depth, 2, "{prefix:?}");
        assert_eq!(children(&r, ""), ["bar", "foo"], "{prefix:?}");
    }
}

#[test]
fn met_hardlinks_share_one_node() {
    // MET-04 / WRT-12.
    let mut foo = file("foo", b"foofoo");
    foo.uid = 1000;
    foo.gid = 1000;
    let r = open(
        &[
            foo,
            dir("bar/"),
            link(EntryType::Hardlink, "bar/foolink", "foo"),
            link(EntryType::Hardlink, "bar/foolink2", "bar/foolink"),
            dir("bar/1/"),
            file("bar/1/baz.txt", b"testtest"),
            link(EntryType::Hardlink, "barlink", "bar/1/baz.txt"),
            link(EntryType::Symlink, "foosym", "bar/foolink2"),
        ],
        &Opts::default(),
    );
    let idx = r.index();
    let foo = idx.lookup("foo").expect("foo");
    assert_eq!(idx.lookup("bar/foolink"), Some(foo));
    assert_eq!(idx.lookup("bar/foolink2"), Some(foo));
    assert_eq!(
        idx.child(idx.lookup("bar").expect("bar"), b"foolink"),
        Some(foo)
    );
    assert_eq!(idx.lookup("barlink"), idx.lookup("bar/1/baz.txt"));
    assert_eq!(children(&r, "bar"), ["1", "foolink", "foolink2"]);
    assert_eq!(idx.attr(foo).nlink, 3);
    assert_eq!(idx.attr(idx.lookup("barlink").expect("l")).nlink, 2);
    assert_eq!(idx.attr(idx.lookup("bar").expect("bar")).nlink, 3);
    assert_eq!(idx.attr(foo).uid, 1000);
    assert_eq!(read(&r, "bar/foolink2", 0, 100), b"foofoo");
    assert_eq!(
        idx.link_target(idx.lookup("foosym").expect("s")),
        Some("bar/foolink2")
    );
    // 7 distinct nodes reachable from the root (root, foo, bar, bar/1, baz.txt, foosym + landmark-less).
    let mut nodes = std::collections::BTreeSet::new();
    idx.walk(|_, n| {
        nodes.insert(n);
    });
    assert_eq!(nodes.len(), 6);
}

#[test]
fn met_node_ids_are_stable_across_opens() {
    // MET-09: the same blob gives the same path -> node map in every process and every open.
    let entries = [
        file("foo", b"1"),
        dir("bar/"),
        file("bar/zzz.txt", b"2"),
        file("bar/aaa.txt", b"3"),
        file("bar/fff.txt", b"4"),
        file("xxx.txt", b"5"),
        file("y.txt", b""),
    ];
    let b = build(&entries, &Opts::default());
    let ids = |blob: Vec<u8>| {
        let r = Reader::open(blob).expect("open");
        let mut v = Vec::new();
        r.index().walk(|p, n| v.push((p.to_owned(), n)));
        v
    };
    assert_eq!(ids(b.blob.clone()), ids(b.blob.clone()));
    // Ids follow TOC order: deterministic, not hash order.
    let r = Reader::open(b.blob).expect("open");
    assert_eq!(r.index().lookup("foo"), Some(NodeId(1)));
    assert_eq!(r.index().lookup("bar"), Some(NodeId(2)));
}

#[test]
fn met_noncanonical_names_and_special_files() {
    // MET-05.
    let r = open(
        &[
            dir("bar/"),
            file("bar/../bar///////////////////foo", b""),
            dev(EntryType::Char, "bar/cdev", 10, 11),
            dev(EntryType::Block, "bar/bdev", 100, 101),
        ],
        &Opts::default(),
    );
    let idx = r.index();
    assert_eq!(
        idx.attr(idx.lookup("bar/foo").expect("foo")).kind,
        NodeKind::File
    );
    assert_eq!(children(&r, "bar"), ["bdev", "cdev", "foo"]);
}

/// WRT-13 / MET-07: several files packed into one member (innerOffset).
fn packed_entries(seed: u8) -> (Vec<Ent>, Vec<u8>, Vec<u8>) {
    let rand = |n: usize, s: u8| -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9 ^ u32::from(s);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(x % 62) as usize]
            })
            .collect()
    };
    let foo1 = rand(64000, seed);
    let foo3 = rand(64000, seed.wrapping_add(1));
    (
        vec![
            dir("foo/"),
            file("foo/foo1", &foo1),
            file("foo2", b"bb"),
            file("foo22", b"ccc"),
            dir("bar/"),
            file("bar/bar.txt", b"aaa"),
            file("foo3", &foo3),
        ],
        foo1,
        foo3,
    )
}

#[test]
fn wrt_several_files_in_one_member() {
    for codec in CODECS {
        for chunk_size in [1 << 30, 32000] {
            let (entries, foo1, foo3) = packed_entries(7);
            let opts = Opts {
                chunk_size,
                min_chunk_size: 8000,
                codec,
            };
            let b = build(&entries, &opts);
            assert!(
                b.toc.entries.iter().any(|e| e.inner_offset > 0),
                "the fixture must share members"
            );
            let r = Reader::open(b.blob).expect("open");
            for (path, data) in [
                ("foo/foo1", &foo1[..]),
                ("foo2", b"bb"),
                ("foo22", b"ccc"),
                ("bar/bar.txt", b"aaa"),
                ("foo3", &foo3[..]),
            ] {
                assert_eq!(read(&r, path, 0, 70000), data, "{path}");
                for off in [1usize, 2, 32000, 63999] {
                    if off < data.len() {
                        assert_eq!(
                            read(&r, path, off as u64, 3),
                            &data[off..(off + 3).min(data.len())]
                        );
                    }
                }
            }
            // VER-05: per-chunk verification works with shared offsets.
            r.verify().expect("verify packed blob");
        }
    }
}

#[test]
fn ver_corrupting_one_packed_member_fails_only_its_chunks() {
    let (entries, foo1, _) = packed_entries(9);
    let b = build(
        &entries,
        &Opts {
            min_chunk_size: 8000,
            ..Opts::default()
        },
    );
    let r = Reader::open(b.blob.clone()).expect("open");
    let idx = r.index();
    let foo2 = idx.chunks(idx.lookup("foo2").expect("foo2"))[0];
    // Flip a byte at the start of the shared member's deflate data: everything in it decodes
    // wrong from there on. Each packed file fails on its own digest, or (had the flip missed
    // its bytes) reads correctly; never wrong bytes.
    let mut blob = b.blob;
    blob[foo2.blob_offset() as usize + 12] ^= 0x40;
    let r = Reader::open(blob).expect("open");
    let mut failed = 0;
    for (path, want) in [
        ("foo2", &b"bb"[..]),
        ("foo22", b"ccc"),
        ("bar/bar.txt", b"aaa"),
    ] {
        let node = r.index().lookup(path).expect("path");
        let mut buf = [0u8; 8];
        match r.read_at(node, 0, &mut buf) {
            Err(err) => {
                assert!(err.is_integrity(), "{path}: {err}");
                assert!(
                    err.to_string().contains(path),
                    "the error names the file: {err}"
                );
                failed += 1;
            }
            Ok(n) => assert_eq!(&buf[..n], want, "{path}"),
        }
    }
    assert!(failed >= 1, "the corruption went unnoticed");
    assert_eq!(
        read(&r, "foo/foo1", 0, 70000),
        foo1,
        "other members unaffected"
    );
    assert!(r.verify().is_err());
}

#[test]
fn ver_a_different_blob_fails_the_original_digest() {
    // VER-BADBLOB: same shape, one byte of content changed -> different TOC digest.
    let a = build(&[file("foo.txt", b"a"), dir("test/")], &Opts::default());
    let b = build(&[file("foo.txt", b"M"), dir("test/")], &Opts::default());
    let err = Reader::open_with(
        b.blob,
        OpenOptions {
            expected_toc_digest: Some(a.toc_digest),
            ..OpenOptions::default()
        },
    )
    .expect_err("digest");
    assert!(matches!(err, estargz::Error::TocDigestMismatch { .. }));
}

#[test]
fn ver_broken_first_byte_is_not_verified() {
    // VER-BROKEN, at the plan level: a decoded chunk whose bytes differ fails verification.
    let b = build(&[file("test/bar.txt", b"testbartestbar")], &Opts::default());
    let r = Reader::open(b.blob.clone()).expect("open");
    let node = r.index().lookup("test/bar.txt").expect("file");
    let chunk = r.index().chunks(node)[0];
    let mut data = b"testbartestbar".to_vec();
    data[0] = !data[0];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &data).expect("gz");
    let forged = gz.finish().expect("gz");
    let err = estargz::plan::decode_chunk(
        "test/bar.txt",
        &chunk,
        r.index().chunk_digest(&chunk).expect("digest"),
        estargz::plan::Compression::Gzip,
        &forged,
        estargz::plan::Verify::Digest,
    )
    .expect_err("forged chunk");
    assert!(
        matches!(err, estargz::Error::ChunkDigestMismatch { .. }),
        "{err}"
    );
    assert_eq!(
        Digest::of(&read(&r, "test/bar.txt", 0, 100)).to_string(),
        Digest::of(b"testbartestbar").to_string()
    );
}

#[test]
fn ver_spilled_chunk_digests_verify_like_in_memory_ones() {
    // OpenOptions::digest_dir: the index's chunk digests live in an unlinked file. Reads,
    // verify() and tamper detection are the same; nothing is left in the directory.
    let (entries, foo1, _) = packed_entries(3);
    for codec in CODECS {
        let b = build(
            &entries,
            &Opts {
                codec,
                chunk_size: 4096,
                ..Opts::default()
            },
        );
        let dir = tempfile::tempdir().expect("dir");
        let spilled_opts = || OpenOptions {
            expected_toc_digest: Some(b.toc_digest),
            digest_dir: Some(dir.path().to_path_buf()),
            ..OpenOptions::default()
        };
        let memory = Reader::open(b.blob.clone()).expect("open");
        let spilled = Reader::open_with(b.blob.clone(), spilled_opts()).expect("open spilled");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "the digest file is unlinked"
        );
        let chunks = memory.index().all_chunks();
        assert!(chunks.len() > 2, "{codec:?}");
        assert!(
            spilled.index().heap_size() + 32 * chunks.len() <= memory.index().heap_size(),
            "{codec:?}: the digests left memory"
        );
        for (a, b) in chunks.iter().zip(spilled.index().all_chunks()) {
            assert_eq!(
                memory.index().chunk_digest(a).expect("memory"),
                spilled.index().chunk_digest(b).expect("file"),
            );
        }
        // A clone shares the file.
        let clone = spilled.index().clone();
        assert_eq!(
            clone.chunk_digest(&chunks[1]).expect("clone"),
            memory.index().chunk_digest(&chunks[1]).expect("memory")
        );
        assert_eq!(read(&spilled, "foo/foo1", 0, 70000), foo1, "{codec:?}");
        spilled.verify().expect("verify");

        // Tampered: a byte of the first file's first chunk.
        let node = memory.index().lookup("foo/foo1").expect("file");
        let c = memory.index().chunks(node)[0];
        let mut blob = b.blob.clone();
        blob[(c.blob_offset() + (c.blob_end() - c.blob_offset()) / 2) as usize] ^= 0x10;
        let spilled = Reader::open_with(blob, spilled_opts()).expect("open tampered");
        let mut buf = vec![0u8; 4096];
        let err = spilled
            .read_at(node, 0, &mut buf)
            .expect_err("tampered chunk");
        assert!(err.is_integrity(), "{codec:?}: {err}");
    }
}
