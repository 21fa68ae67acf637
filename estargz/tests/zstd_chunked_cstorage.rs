//! zstd:chunked as containers/storage writes it (64-byte footer `GNUlInUx`, tar-split frame,
//! `endOffset`, `chunkType: "zeros"` holes, `chunkSize`/`chunkOffset` on every chunk).
//!
//! No reference vector exists for this layout, so the blob is assembled here from the layout in
//! shared/spec/ZSTD-CHUNKED-CSTORAGE.md: payload zstd frames, the TOC in a skippable frame, the
//! tar-split in a skippable frame, then the 72-byte footer frame.

use estargz::footer::Footer;
use estargz::index::NodeKind;
use estargz::{Digest, EntryType, OpenOptions, Reader, Toc, TocEntry};

const SKIPPABLE: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];

fn skippable(payload: &[u8]) -> Vec<u8> {
    let mut v = SKIPPABLE.to_vec();
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

struct Blob {
    bytes: Vec<u8>,
    toc_digest: Digest,
    big: Vec<u8>,
    hosts: Vec<u8>,
}

fn build() -> Blob {
    let hosts = b"127.0.0.1 localhost\n".to_vec();
    // "big": 3 content-defined chunks: 5000 data bytes, a 7000-byte hole, 3000 data bytes.
    let mut big = Vec::new();
    big.extend((0..5000u32).map(|i| (i * 7 % 251) as u8));
    big.extend(std::iter::repeat_n(0u8, 7000));
    big.extend((0..3000u32).map(|i| (i * 13 % 241) as u8));

    let mut blob = Vec::new();
    let frame = |data: &[u8], blob: &mut Vec<u8>| -> (i64, i64) {
        let start = blob.len() as i64;
        blob.extend(zstd::bulk::compress(data, 3).expect("zstd"));
        (start, blob.len() as i64)
    };
    let (h_off, h_end) = frame(&hosts, &mut blob);
    let (b0_off, b0_end) = frame(&big[..5000], &mut blob);
    let (b2_off, b2_end) = frame(&big[12000..], &mut blob);

    let reg = |name: &str, data: &[u8]| TocEntry {
        name: name.into(),
        entry_type: EntryType::Reg,
        size: data.len() as i64,
        mode: 0o644,
        modtime: "2024-01-02T03:04:05Z".into(),
        access_time: "2024-01-02T03:04:05Z".into(),
        change_time: "2024-01-02T03:04:05Z".into(),
        digest: if data.is_empty() {
            String::new()
        } else {
            Digest::of(data).to_string()
        },
        ..Default::default()
    };
    let mut entries = vec![TocEntry {
        name: "etc".into(),
        entry_type: EntryType::Dir,
        mode: 0o755,
        ..Default::default()
    }];
    let mut e = reg("etc/hosts", &hosts);
    e.offset = h_off;
    e.end_offset = h_end;
    e.chunk_digest = Digest::of(&hosts).to_string();
    entries.push(e);
    let mut e = reg("big", &big);
    e.offset = b0_off;
    e.end_offset = b0_end;
    e.chunk_size = 5000;
    e.chunk_digest = Digest::of(&big[..5000]).to_string();
    entries.push(e);
    entries.push(TocEntry {
        name: "big".into(),
        entry_type: EntryType::Chunk,
        chunk_offset: 5000,
        chunk_size: 7000,
        chunk_type: "zeros".into(),
        chunk_digest: Digest::of(&big[5000..12000]).to_string(),
        ..Default::default()
    });
    entries.push(TocEntry {
        name: "big".into(),
        entry_type: EntryType::Chunk,
        offset: b2_off,
        end_offset: b2_end,
        chunk_offset: 12000,
        chunk_size: 3000,
        chunk_digest: Digest::of(&big[12000..]).to_string(),
        ..Default::default()
    });
    entries.push(reg("empty", b""));

    let tar_split = b"{\"type\":1,\"payload\":\"...\"}\n".to_vec();
    let toc = Toc {
        version: 1,
        entries,
        tar_split_digest: Digest::of(&tar_split).to_string(),
    };
    let json = toc.to_json();
    let toc_z = zstd::bulk::compress(&json, 3).expect("zstd");
    let toc_offset = blob.len() as u64 + 8;
    blob.extend(skippable(&toc_z));
    let ts_z = zstd::bulk::compress(&tar_split, 3).expect("zstd");
    let ts_offset = blob.len() as u64 + 8;
    blob.extend(skippable(&ts_z));
    let footer = Footer::ZstdChunkedCstorage {
        toc_offset,
        toc_compressed_size: toc_z.len() as u64,
        toc_uncompressed_size: json.len() as u64,
        tar_split_offset: ts_offset,
        tar_split_compressed_size: ts_z.len() as u64,
        tar_split_uncompressed_size: tar_split.len() as u64,
    };
    let fb = footer.to_bytes();
    assert_eq!(fb.len(), 72);
    assert_eq!(&fb[..8], &[0x50, 0x2a, 0x4d, 0x18, 0x40, 0, 0, 0]);
    assert_eq!(&fb[64..], b"GNUlInUx");
    blob.extend(fb);
    Blob {
        bytes: blob,
        toc_digest: Digest::of(&json),
        big,
        hosts,
    }
}

fn read_all(r: &Reader<Vec<u8>>, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut f = r.open_file(path).expect("open file");
    std::io::Read::read_to_end(&mut f, &mut out).expect("read");
    out
}

#[test]
fn reads_a_containers_storage_blob() {
    let b = build();
    let r = Reader::open_with(
        b.bytes.clone(),
        OpenOptions {
            expected_toc_digest: Some(b.toc_digest),
            ..OpenOptions::default()
        },
    )
    .expect("open");
    assert!(matches!(r.footer(), Footer::ZstdChunkedCstorage { .. }));
    assert_eq!(read_all(&r, "etc/hosts"), b.hosts);
    assert_eq!(read_all(&r, "big"), b.big);
    assert_eq!(read_all(&r, "empty"), b"");
    let idx = r.index();
    let big = idx.lookup("big").expect("big");
    let chunks = idx.chunks(big);
    assert_eq!(chunks.len(), 3);
    assert!(chunks[1].is_zeros(), "the hole needs no fetch");
    // endOffset bounds the compressed range exactly.
    assert_eq!(chunks[0].blob_range().end, chunks[2].blob_offset());
    // A read inside the hole plans no blob range at all.
    let plan = estargz::ReadPlan::new(idx, big, 6000, 100).expect("plan");
    assert!(plan.blob_ranges().is_empty());
    assert_eq!(
        idx.attr(idx.lookup("etc").expect("etc")).kind,
        NodeKind::Dir
    );
    let report = r.verify().expect("verify");
    assert_eq!(report.files, 3);
    assert_eq!(report.chunks, 4);
    assert_eq!(r.toc_json().expect("toc"), {
        let mut t = Toc::from_json(&r.toc_json().expect("toc")).expect("parse");
        t.version = 1;
        t.to_json()
    });
}

#[test]
fn a_tampered_frame_of_a_containers_storage_blob_is_caught() {
    let b = build();
    let r = Reader::open(b.bytes.clone()).expect("open");
    let big = r.index().lookup("big").expect("big");
    let c = r.index().chunks(big)[2];
    let mut bytes = b.bytes.clone();
    bytes[(c.blob_offset() + c.blob_end()) as usize / 2] ^= 1;
    let r = Reader::open(bytes).expect("open");
    let mut f = r.open_file("big").expect("file");
    let mut buf = vec![0u8; 100];
    let err = f.read_at(12000, &mut buf).expect_err("tampered");
    assert!(err.is_integrity(), "{err}");
    // The hole and the first chunk are still fine.
    assert_eq!(f.read_at(0, &mut buf).expect("chunk 0"), 100);
}

#[test]
fn a_wrong_uncompressed_size_in_the_footer_is_refused() {
    let b = build();
    let mut bytes = b.bytes.clone();
    let n = bytes.len();
    // Footer payload offset 16: TOC uncompressed length.
    let pos = n - 64 + 16;
    bytes[pos] = bytes[pos].wrapping_add(1);
    let err = Reader::open(bytes).expect_err("must fail");
    assert!(err.to_string().contains("TOC"), "{err}");
}
