//! The builder on bad or hostile input tars: an error that says what is wrong (and where), or a
//! blob that is safe to read, never a panic or an allocation driven by a declared size.
//!
//! Every test asserts on the error variant and its message, or on the TOC / the reader's view
//! of the blob that was built.

use std::io::Read;

use estargz::build::{BuildOptions, BuildReport, Builder, UnsupportedEntries};
use estargz::index::NodeKind;
use estargz::{EntryType, Error, Reader};

// ---------------------------------------------------------------------------------------
// Hand-made tar members.

/// A USTAR header block (checksum set) for `name`.
fn header(name: &str, typeflag: u8, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("name fits");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.as_mut_bytes()[156] = typeflag;
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A member: header plus `data` padded to 512.
fn member(name: &str, typeflag: u8, data: &[u8]) -> Vec<u8> {
    let mut out = header(name, typeflag, data.len() as u64);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn symlink(name: &str, target: &str) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).expect("name");
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_link_name(target).expect("target");
    h.set_mode(0o777);
    h.set_size(0);
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn hardlink(name: &str, target: &str) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    // Raw bytes: the tar crate refuses `..` in paths, which is the point here.
    h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
    h.as_mut_bytes()[157..157 + target.len()].copy_from_slice(target.as_bytes());
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A regular file whose name is written as raw bytes (`..` and absolute names allowed).
fn raw_name_file(name: &str, data: &[u8]) -> Vec<u8> {
    raw_member(name, b'0', data)
}

/// A member whose name is written as raw bytes.
fn raw_member(name: &str, typeflag: u8, data: &[u8]) -> Vec<u8> {
    let mut out = header("x", typeflag, data.len() as u64);
    out[..100].fill(0);
    out[..name.len()].copy_from_slice(name.as_bytes());
    recksum(&mut out[..512]);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn recksum(block: &mut [u8]) {
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&block[..512]);
    h.set_cksum();
    block[..512].copy_from_slice(h.as_bytes());
}

/// A PAX record `"<len> key=value\n"`.
fn pax_record(key: &str, value: &str) -> String {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    format!("{len} {key}={value}\n")
}

fn eof() -> Vec<u8> {
    vec![0; 1024]
}

fn tar_of(members: &[Vec<u8>]) -> Vec<u8> {
    let mut t = members.concat();
    t.extend(eof());
    t
}

fn build_with(input: &[u8], opts: BuildOptions) -> estargz::Result<(BuildReport, Vec<u8>)> {
    let mut blob = Vec::new();
    let report = Builder::new(opts).build(input, &mut blob)?;
    Ok((report, blob))
}

fn build(input: &[u8]) -> estargz::Result<(BuildReport, Vec<u8>)> {
    build_with(
        input,
        BuildOptions {
            chunk_size: 4096,
            threads: 2,
            ..BuildOptions::default()
        },
    )
}

fn build_mode(input: &[u8], mode: UnsupportedEntries) -> estargz::Result<(BuildReport, Vec<u8>)> {
    build_with(
        input,
        BuildOptions {
            unsupported: mode,
            threads: 1,
            ..BuildOptions::default()
        },
    )
}

fn toc_names(r: &BuildReport) -> Vec<&str> {
    r.toc
        .entries
        .iter()
        .filter(|e| e.entry_type != EntryType::Chunk)
        .map(|e| e.name.as_str())
        .collect()
}

fn read_file(blob: &[u8], path: &str) -> Vec<u8> {
    let r = Reader::open(blob).expect("open blob");
    r.verify().expect("verify");
    let mut out = Vec::new();
    r.open_file(path)
        .expect("open file")
        .read_to_end(&mut out)
        .expect("read");
    out
}

#[track_caller]
fn assert_tar_error(res: estargz::Result<(BuildReport, Vec<u8>)>, needle: &str) -> (u64, String) {
    match res {
        Err(Error::Tar {
            offset,
            entry,
            reason,
        }) => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} does not mention {needle:?}"
            );
            (offset, entry)
        }
        Err(e) => panic!("expected a tar error mentioning {needle:?}, got {e}"),
        Ok(_) => panic!("expected a tar error mentioning {needle:?}, but the build succeeded"),
    }
}

fn good_tar() -> Vec<u8> {
    tar_of(&[
        member("dir/", b'5', b""),
        member("dir/a.txt", b'0', &[b'a'; 1000]),
        member("dir/b.txt", b'0', &[b'b'; 3000]),
    ])
}

// ---------------------------------------------------------------------------------------
// Truncation.

#[test]
fn good_tar_builds() {
    let (report, blob) = build(&good_tar()).expect("build");
    assert_eq!(
        toc_names(&report),
        [".no.prefetch.landmark", "dir/", "dir/a.txt", "dir/b.txt"]
    );
    assert_eq!(read_file(&blob, "dir/b.txt"), [b'b'; 3000]);
}

#[test]
fn truncated_inside_a_payload() {
    let t = good_tar();
    // dir/ (512) + a.txt header (512) + 1000 of its data → cut 200 bytes into a's data.
    let (offset, entry) = assert_tar_error(build(&t[..1024 + 200]), "truncated");
    assert_eq!(entry, "dir/a.txt");
    assert_eq!(offset, 1024, "the error points at the payload");
}

#[test]
fn truncated_inside_a_header() {
    let t = good_tar();
    let (offset, _) = assert_tar_error(build(&t[..512 + 300]), "truncated");
    assert_eq!(offset, 512);
}

#[test]
fn truncated_after_an_extension_header() {
    let pax = pax_record("path", &"long/".repeat(40));
    let t = member("././@PaxHeader", b'x', pax.as_bytes());
    assert_tar_error(build(&t), "extension headers without the entry");
}

#[test]
fn truncated_at_a_header_boundary_is_the_end() {
    // Go accepts a tar without end-of-archive blocks; so does the builder.
    let t = good_tar();
    let (report, blob) = build(&t[..t.len() - 1024]).expect("no EOF blocks is fine");
    assert_eq!(report.toc.entries.len(), 4);
    assert_eq!(read_file(&blob, "dir/a.txt"), [b'a'; 1000]);
}

#[test]
fn truncated_compressed_inputs() {
    let t = good_tar();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, &t).expect("gzip");
        e.finish().expect("gzip")
    };
    let zst = zstd::stream::encode_all(&t[..], 3).expect("zstd");
    // Whole: fine, and the same TOC as the plain tar.
    let plain = build(&t).expect("plain").0;
    assert_eq!(build(&gz).expect("gz").0.toc_digest, plain.toc_digest);
    assert_eq!(build(&zst).expect("zst").0.toc_digest, plain.toc_digest);
    for (what, cut) in [
        ("gzip", &gz[..gz.len() / 2]),
        ("zstd", &zst[..zst.len() / 2]),
    ] {
        match build(cut) {
            Err(Error::Io { context, .. }) => assert!(
                context.contains(what),
                "{what}: the error says which decompression failed: {context}"
            ),
            Err(e) => panic!("{what}: unexpected error {e}"),
            Ok(_) => panic!("{what}: a truncated compressed input built"),
        }
    }
}

#[test]
fn empty_and_tiny_inputs() {
    // Zero bytes: an empty layer (only the landmark), as Go does.
    let (report, _) = build(b"").expect("empty input");
    assert_eq!(toc_names(&report), [".no.prefetch.landmark"]);
    // Fewer than 512 bytes of junk: a truncated header.
    assert_tar_error(build(b"hello"), "truncated");
}

// ---------------------------------------------------------------------------------------
// Corrupt headers.

#[test]
fn bad_header_checksum() {
    let mut t = good_tar();
    t[512 + 3] ^= 0x20; // a byte of a.txt's name
    let (offset, entry) = assert_tar_error(build(&t), "checksum");
    assert_eq!(offset, 512);
    assert!(entry.starts_with("dir"), "{entry}");
    // The first header: not a tar at all.
    let mut t = good_tar();
    t[0] = b'X';
    let (offset, _) = assert_tar_error(build(&t), "not a tar archive or corrupt");
    assert_eq!(offset, 0);
}

#[test]
fn bad_numeric_fields() {
    let mut t = good_tar();
    t[512 + 124..512 + 136].copy_from_slice(b"99999999999\0"); // size: 9 is not octal
    recksum(&mut t[512..1024]);
    assert_tar_error(build(&t), "bad size field");
    let mut t = good_tar();
    t[512 + 100..512 + 108].copy_from_slice(b"zzzzzzz\0"); // mode
    recksum(&mut t[512..1024]);
    assert_tar_error(build(&t), "bad mode field");
}

#[test]
fn a_lone_zero_block_before_more_headers() {
    let mut t = member("a", b'0', b"x");
    t.extend([0u8; 512]);
    t.extend(member("b", b'0', b"y"));
    assert_tar_error(build(&t), "lone zero block");
}

#[test]
fn malformed_pax_records() {
    for (pax, needle) in [
        ("99 path=short\n", "invalid PAX record"),
        ("x path=a\n", "invalid PAX record length"),
        ("9 =empty\n", "empty key"),
    ] {
        let mut t = member("././@PaxHeader", b'x', pax.as_bytes());
        t.extend(member("f", b'0', b"data"));
        t.extend(eof());
        assert_tar_error(build(&t), needle);
    }
    let mut t = member(
        "././@PaxHeader",
        b'x',
        pax_record("uid", "minus-one").as_bytes(),
    );
    t.extend(member("f", b'0', b"data"));
    t.extend(eof());
    let (_, entry) = assert_tar_error(build(&t), "invalid PAX uid record");
    assert_eq!(entry, "f");
}

// ---------------------------------------------------------------------------------------
// Huge declared sizes: checked against the input, never allocated.

#[test]
fn huge_octal_size() {
    let mut t = header("huge.bin", b'0', 0o77777777777);
    t.extend([7u8; 4096]);
    t.extend(eof());
    let (_, entry) = assert_tar_error(build(&t), "bytes declared");
    assert_eq!(entry, "huge.bin");
}

#[test]
fn huge_base256_size() {
    let mut t = header("huge.bin", b'0', 0);
    // Base-256: 2^62 bytes.
    let field = &mut t[124..136];
    field.fill(0);
    field[0] = 0x80;
    field[4] = 0x40;
    recksum(&mut t[..512]);
    t.extend(eof());
    let (_, entry) = assert_tar_error(build(&t), "bytes declared");
    assert_eq!(entry, "huge.bin");
    // Negative base-256 size.
    let mut t = header("neg.bin", b'0', 0);
    t[124..136].fill(0xff);
    recksum(&mut t[..512]);
    t.extend(eof());
    assert_tar_error(build(&t), "bad size field");
}

#[test]
fn huge_pax_size_record() {
    let mut t = member(
        "././@PaxHeader",
        b'x',
        pax_record("size", "9223372036854775807").as_bytes(),
    );
    t.extend(member("f", b'0', b"tiny"));
    t.extend(eof());
    let (_, entry) = assert_tar_error(build(&t), "bytes declared");
    assert_eq!(entry, "f");
}

#[test]
fn huge_extension_headers() {
    for (typeflag, what) in [(b'x', "PAX extended header"), (b'L', "GNU long name")] {
        let mut t = header("././@LongLink", typeflag, 1 << 40);
        t.extend(eof());
        assert_tar_error(build(&t), &format!("{what} of {} bytes", 1u64 << 40));
        // Just over the limit, even when the bytes are there.
        let mut t = header("././@LongLink", typeflag, (1 << 20) + 1);
        t.extend(vec![b'a'; (1 << 20) + 512]);
        assert_tar_error(build(&t), "exceeds the 1 MiB limit");
    }
}

#[test]
fn huge_sparse_maps_are_errors() {
    // PAX 1.0 sparse map declaring 2^40 fragments.
    let mut pax = pax_record("GNU.sparse.major", "1");
    pax += &pax_record("GNU.sparse.minor", "0");
    pax += &pax_record("GNU.sparse.name", "sparse.bin");
    pax += &pax_record("GNU.sparse.realsize", "100000");
    let mut t = member("././@PaxHeader", b'x', pax.as_bytes());
    let mut map = b"1099511627776\n".to_vec();
    map.resize(512, 0);
    t.extend(member("GNUSparseFile.0/sparse.bin", b'0', &map));
    t.extend(eof());
    let (_, entry) = assert_tar_error(
        build_mode(&t, UnsupportedEntries::Convert),
        "too many sparse fragments",
    );
    assert!(entry.contains("sparse.bin"), "{entry}");
}

/// A 1 KiB tar declaring a 2^62-byte sparse file: Convert refuses to expand it past
/// `max_sparse_expansion` (naming the entry), and expands it when the limit allows.
#[test]
fn sparse_expansion_is_bounded() {
    let sparse = |real: &str| {
        let mut pax = pax_record("GNU.sparse.major", "1");
        pax += &pax_record("GNU.sparse.minor", "0");
        pax += &pax_record("GNU.sparse.name", "huge.bin");
        pax += &pax_record("GNU.sparse.realsize", real);
        let mut t = member("././@PaxHeader", b'x', pax.as_bytes());
        let mut data = b"1\n0\n4\n".to_vec();
        data.resize(512, 0);
        data.extend(*b"head");
        t.extend(member("GNUSparseFile.0/huge.bin", b'0', &data));
        t.extend(eof());
        t
    };
    let t = sparse("4611686018427387904");
    match build_mode(&t, UnsupportedEntries::Convert) {
        Err(Error::UnsupportedEntry {
            entry,
            typeflag,
            reason,
            ..
        }) => {
            assert!(entry.contains("huge.bin"), "{entry}");
            assert_eq!(typeflag, 'S');
            assert!(reason.contains("max_sparse_expansion"), "{reason}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|r| r.0.blob_size)),
    }
    // Under a custom limit: refused at 1 MiB + 1, expanded at 1 MiB.
    let opts = |n| BuildOptions {
        unsupported: UnsupportedEntries::Convert,
        max_sparse_expansion: 1 << 20,
        threads: 1,
        chunk_size: n,
        ..BuildOptions::default()
    };
    assert!(build_with(&sparse("1048577"), opts(1 << 20)).is_err());
    let (_, blob) = build_with(&sparse("1048576"), opts(1 << 20)).expect("within the limit");
    let data = read_file(&blob, "huge.bin");
    assert_eq!(data.len(), 1 << 20);
    assert_eq!(&data[..4], b"head");
    assert!(data[4..].iter().all(|&b| b == 0));
}

// ---------------------------------------------------------------------------------------
// Names with `..`, absolute names, links pointing outside.

#[test]
fn dotdot_names_stay_inside_the_root() {
    let t = tar_of(&[
        raw_name_file("../../etc/passwd", b"evil"),
        raw_name_file("/abs/file", b"abs"),
        raw_name_file("a/../../../b/c", b"c"),
        hardlink("hl", "../../../etc/passwd"),
    ]);
    let (report, blob) = build(&t).expect("build");
    // Names are kept byte for byte in the TOC (as Go does; the vectors require it) ...
    assert_eq!(
        toc_names(&report),
        [
            ".no.prefetch.landmark",
            "../../etc/passwd",
            "/abs/file",
            "a/../../../b/c",
            "hl"
        ]
    );
    // ... and every reader resolves them inside the layer root.
    let r = Reader::open(&blob[..]).expect("open");
    let mut paths = Vec::new();
    r.index().walk(|p, _| paths.push(p.to_string()));
    paths.sort();
    assert_eq!(
        paths,
        [
            "",
            ".no.prefetch.landmark",
            "abs",
            "abs/file",
            "b",
            "b/c",
            "etc",
            "etc/passwd",
            "hl"
        ]
    );
    assert_eq!(read_file(&blob, "etc/passwd"), b"evil");
    assert_eq!(
        read_file(&blob, "hl"),
        b"evil",
        "the hardlink resolves inside"
    );
    assert_eq!(read_file(&blob, "../../../b/c"), b"c");
}

#[test]
fn dotdot_names_collide_after_cleaning() {
    // `../x` and `x` are the same entry: the later one wins (Go's rule), so a `..` name cannot
    // smuggle a second copy of a path.
    let t = tar_of(&[
        raw_name_file("x", b"first"),
        raw_name_file("../x", b"second"),
    ]);
    let (report, blob) = build(&t).expect("build");
    assert_eq!(toc_names(&report), [".no.prefetch.landmark", "../x"]);
    assert_eq!(read_file(&blob, "x"), b"second");
}

#[test]
fn symlinks_pointing_outside_are_kept_as_data() {
    let t = tar_of(&[
        symlink("abs", "/etc/passwd"),
        symlink("up", "../../../../../etc"),
        member("up/inside.txt", b'0', b"under a symlink"),
    ]);
    let (report, blob) = build(&t).expect("build");
    let r = Reader::open(&blob[..]).expect("open");
    let idx = r.index();
    let abs = idx.lookup("abs").expect("abs");
    assert_eq!(idx.attr(abs).kind, NodeKind::Symlink);
    assert_eq!(idx.link_target(abs), Some("/etc/passwd"));
    let up = idx.lookup("up").expect("up");
    assert_eq!(idx.link_target(up), Some("../../../../../etc"));
    // A file "under" a symlink is not reached through it: its parent is not a directory.
    assert_eq!(idx.lookup("up/inside.txt"), None);
    assert!(matches!(r.open_file("abs"), Err(Error::NotAFile(_))));
    // The TOC carries the targets verbatim.
    let e = report
        .toc
        .entries
        .iter()
        .find(|e| e.name == "abs")
        .expect("abs entry");
    assert_eq!(
        (e.entry_type, e.link_name.as_str()),
        (EntryType::Symlink, "/etc/passwd")
    );
}

#[test]
fn prioritized_paths_do_not_follow_symlinks_or_climb_out() {
    let t = tar_of(&[
        symlink("etc", "/etc"),
        member("real/", b'5', b""),
        member("real/f", b'0', b"f"),
    ]);
    let opts = BuildOptions {
        prioritized: vec!["etc/passwd".into(), "../../real/f".into()],
        allow_missing_prioritized: true,
        ..BuildOptions::default()
    };
    let (report, _) = build_with(&t, opts.clone()).expect("build");
    assert_eq!(report.missed_prioritized, ["etc/passwd"]);
    assert_eq!(
        toc_names(&report),
        ["real/", "real/f", ".prefetch.landmark", "etc"]
    );
    let strict = BuildOptions {
        allow_missing_prioritized: false,
        ..opts
    };
    match build_with(&t, strict) {
        Err(Error::PrioritizedNotFound(missing)) => assert_eq!(missing, ["etc/passwd"]),
        other => panic!(
            "expected PrioritizedNotFound, got {:?}",
            other.map(|r| r.0.toc_digest)
        ),
    }
}

#[test]
fn hardlink_to_a_missing_target_builds_but_the_reader_refuses_it() {
    let input = estargz_testkit::inputs::quirk_tar("q-hardlink-missing-target.tar");
    let t = std::fs::read(input).expect("quirk");
    let (report, blob) = build(&t).expect("Go builds it too");
    assert!(report
        .toc
        .entries
        .iter()
        .any(|e| e.entry_type == EntryType::Hardlink && e.link_name == "missing/target"));
    let err = Reader::open(&blob[..]).expect_err("no reader can resolve it");
    assert!(err.to_string().contains("hardlink target"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Entries the format cannot carry, with each UnsupportedEntries mode.

fn old_gnu_sparse() -> (Vec<u8>, Vec<u8>) {
    // Real size 10 000: 512 bytes of 'a' at 0, 1024 of 'b' at 8192, holes elsewhere.
    let mut h = tar::Header::new_gnu();
    h.set_path("sparse.bin").expect("name");
    h.set_mode(0o644);
    h.set_size(1536);
    let b = h.as_mut_bytes();
    b[156] = b'S';
    let octal = |v: u64, w: usize| format!("{v:0w$o}\0", w = w - 1).into_bytes();
    b[386..398].copy_from_slice(&octal(0, 12));
    b[398..410].copy_from_slice(&octal(512, 12));
    b[410..422].copy_from_slice(&octal(8192, 12));
    b[422..434].copy_from_slice(&octal(1024, 12));
    b[483..495].copy_from_slice(&octal(10_000, 12));
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend([b'a'; 512]);
    t.extend([b'b'; 1024]);
    let mut want = vec![0u8; 10_000];
    want[..512].fill(b'a');
    want[8192..9216].fill(b'b');
    (t, want)
}

fn pax_sparse_1_0() -> (Vec<u8>, Vec<u8>) {
    let mut pax = pax_record("GNU.sparse.major", "1");
    pax += &pax_record("GNU.sparse.minor", "0");
    pax += &pax_record("GNU.sparse.name", "pax-sparse.bin");
    pax += &pax_record("GNU.sparse.realsize", "5000");
    let mut t = member("././@PaxHeader", b'x', pax.as_bytes());
    let mut data = b"2\n100\n10\n4000\n20\n".to_vec();
    data.resize(512, 0);
    data.extend([b'x'; 10]);
    data.extend([b'y'; 20]);
    t.extend(member("GNUSparseFile.0/pax-sparse.bin", b'0', &data));
    let mut want = vec![0u8; 5000];
    want[100..110].fill(b'x');
    want[4000..4020].fill(b'y');
    (t, want)
}

fn unsupported_tar() -> Vec<u8> {
    let (sparse, _) = old_gnu_sparse();
    let (pax_sparse, _) = pax_sparse_1_0();
    tar_of(&[
        member("before.txt", b'0', b"before"),
        member(
            "pax_global_header",
            b'g',
            pax_record("comment", "git").as_bytes(),
        ),
        sparse,
        pax_sparse,
        member("contig.bin", b'7', b"contiguous data"),
        member("weird", b'Z', b"unknown type"),
        member("after.txt", b'0', b"after"),
    ])
}

#[test]
fn unsupported_entries_error_names_the_entry() {
    // Each kind alone, so each error is seen.
    let (sparse, _) = old_gnu_sparse();
    let (pax_sparse, _) = pax_sparse_1_0();
    for (m, name, typeflag) in [
        (
            member(
                "pax_global_header",
                b'g',
                pax_record("comment", "x").as_bytes(),
            ),
            "pax_global_header",
            'g',
        ),
        (sparse, "sparse.bin", 'S'),
        (pax_sparse, "pax-sparse.bin", 'S'),
        (member("contig.bin", b'7', b"data"), "contig.bin", '7'),
        (member("weird", b'Z', b"data"), "weird", 'Z'),
    ] {
        let t = tar_of(&[member("ok", b'0', b"ok"), m]);
        match build_mode(&t, UnsupportedEntries::Error) {
            Err(Error::UnsupportedEntry {
                entry,
                typeflag: tf,
                offset,
                reason,
            }) => {
                assert_eq!(entry, name);
                assert_eq!(tf, typeflag, "{name}");
                assert_eq!(offset, 1024, "{name}: the entry's first header");
                assert!(reason.contains("UnsupportedEntries"), "{reason}");
                let msg = Error::UnsupportedEntry {
                    entry,
                    typeflag: tf,
                    offset,
                    reason,
                }
                .to_string();
                assert!(msg.contains(name), "{msg}");
            }
            Err(e) => panic!("{name}: unexpected error {e}"),
            Ok(_) => panic!("{name}: built"),
        }
    }
}

#[test]
fn unsupported_entries_skip_leaves_them_out() {
    let (report, blob) = build_mode(&unsupported_tar(), UnsupportedEntries::Skip).expect("build");
    assert_eq!(
        toc_names(&report),
        [".no.prefetch.landmark", "before.txt", "after.txt"]
    );
    assert_eq!(read_file(&blob, "after.txt"), b"after");
}

#[test]
fn unsupported_entries_convert() {
    let (report, blob) =
        build_mode(&unsupported_tar(), UnsupportedEntries::Convert).expect("build");
    assert_eq!(
        toc_names(&report),
        [
            ".no.prefetch.landmark",
            "before.txt",
            "sparse.bin",
            "pax-sparse.bin",
            "contig.bin",
            "after.txt"
        ]
    );
    for e in &report.toc.entries[1..] {
        assert_eq!(e.entry_type, EntryType::Reg, "{}", e.name);
    }
    assert_eq!(read_file(&blob, "sparse.bin"), old_gnu_sparse().1);
    assert_eq!(read_file(&blob, "pax-sparse.bin"), pax_sparse_1_0().1);
    assert_eq!(read_file(&blob, "contig.bin"), b"contiguous data");
    // The blob's own tar stream is plain: no sparse or contiguous headers left.
    let mut stream = Vec::new();
    flate2::read::MultiGzDecoder::new(&blob[..])
        .read_to_end(&mut stream)
        .expect("gunzip");
    let mut ar = tar::Archive::new(&stream[..]);
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        let t = e.header().entry_type();
        assert!(
            t.is_file() || t.is_pax_local_extensions(),
            "{:?}: {t:?}",
            e.path()
        );
    }
}

#[test]
fn hostile_sparse_maps_are_errors() {
    // Overlapping fragments, a fragment past the real size, a map that does not cover the
    // stored bytes: each an error naming the entry, in every mode that reads the entry.
    let sparse_with = |frags: &[(u64, u64)], real: u64, stored: usize| {
        let mut h = tar::Header::new_gnu();
        h.set_path("bad-sparse").expect("name");
        h.set_size(stored as u64);
        let b = h.as_mut_bytes();
        b[156] = b'S';
        for (i, (o, l)) in frags.iter().enumerate() {
            let at = 386 + i * 24;
            b[at..at + 12].copy_from_slice(format!("{o:011o}\0").as_bytes());
            b[at + 12..at + 24].copy_from_slice(format!("{l:011o}\0").as_bytes());
        }
        b[483..495].copy_from_slice(format!("{real:011o}\0").as_bytes());
        h.set_cksum();
        let mut t = h.as_bytes().to_vec();
        t.extend(vec![b'q'; stored.div_ceil(512) * 512]);
        t.extend(eof());
        t
    };
    for (frags, real, stored, needle) in [
        (&[(0, 100), (50, 100)][..], 1000, 200, "overlap"),
        (&[(900, 200)][..], 1000, 200, "exceed the file size"),
        (&[(0, 100)][..], 1000, 300, "covers 100 bytes"),
        (
            &[(0o77777777000, 100)][..],
            1000,
            100,
            "exceed the file size",
        ),
    ] {
        for mode in [UnsupportedEntries::Skip, UnsupportedEntries::Convert] {
            let res = build_mode(&sparse_with(frags, real, stored), mode);
            match res {
                Err(Error::Tar { entry, reason, .. }) => {
                    assert_eq!(entry, "bad-sparse");
                    assert!(reason.contains(needle), "{reason}");
                }
                Err(e) => panic!("{needle}: unexpected error {e}"),
                Ok(_) => panic!("{needle} ({mode:?}): built"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Regressions found by the `build_tar` fuzz target.

/// A regular file whose name field starts with a NUL (so its name is empty) was written to
/// the TOC as an entry named "", which the reader refuses ("the root must be a directory"):
/// the builder produced a layer nobody could open. Any non-directory entry whose name cleans
/// to the root is now an error naming it; directories there are still the root entry.
#[test]
fn non_directory_entry_naming_the_root_is_an_error() {
    for (name, typeflag) in [
        ("", b'0'),
        (".", b'0'),
        ("/", b'2'),
        ("..", b'6'),
        ("./", b'3'),
    ] {
        let mut bad = header("x", typeflag, 0);
        bad[..100].fill(0);
        bad[..name.len()].copy_from_slice(name.as_bytes());
        recksum(&mut bad);
        let t = tar_of(&[member("ok.txt", b'0', b"fine"), bad]);
        for mode in [
            UnsupportedEntries::Error,
            UnsupportedEntries::Skip,
            UnsupportedEntries::Convert,
        ] {
            let (offset, entry) = assert_tar_error(build_mode(&t, mode), "names the layer root");
            assert_eq!((offset, entry.as_str()), (1024, name), "{name:?} {mode:?}");
        }
    }
    // The fuzzer's input: a name field of 35 NULs followed by text.
    let mut bad = header("x", b'0', 13);
    bad[..100].fill(0);
    bad[35..49].copy_from_slice(b"../up/file.txt");
    recksum(&mut bad);
    bad.extend(b"relative path");
    bad.resize(1024, 0);
    let t = tar_of(&[raw_name_file("/abs/file.txt", b"absolute path\n"), bad]);
    assert_tar_error(build(&t), "names the layer root");
    // Root directories stay fine, in every spelling.
    let t = tar_of(&[
        raw_member("./", b'5', b""),
        raw_member("/", b'5', b""),
        member("a.txt", b'0', b"a"),
    ]);
    let (report, blob) = build(&t).expect("root dirs");
    assert_eq!(toc_names(&report), [".no.prefetch.landmark", "/", "a.txt"]);
    assert_eq!(read_file(&blob, "a.txt"), b"a");
}
