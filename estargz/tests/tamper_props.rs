//! Tampering properties: one flipped byte anywhere in a blob is never served as data.
//!
//! For blobs of the conformance vectors (gzip 64 KiB chunks, zstd:chunked, gzip with
//! `innerOffset` packing, and a tiny blob), a caller that knows the expected TOC digest must
//! see, after any single-byte change (`byte ^= x`, `x != 0`):
//!
//! - in the TOC, the bytes before it or the footer: `open` fails, or it succeeds with exactly
//!   the original index (a change the decoders ignore: a gzip MTIME/OS byte, a trailer the TOC
//!   read never reaches);
//! - in a chunk's compressed range (`Chunk::blob_range`): `open` succeeds (the payload is not
//!   read when opening), and reading every file whose chunks cover the byte, through the three
//!   read paths (`FileReader` as `Read`, `Reader::read_at`, `FileReader::for_each_chunk`), and
//!   `Reader::verify` either fail with an error or give the original bytes.
//!
//! Which of the two is required is decided by a model: the changed chunk range is decompressed
//! independently (`innerOffset` skipped, `size` bytes taken) and hashed. If the model gets the
//! chunk's original bytes (the change hit an ignored gzip header field, bytes after the chunk's
//! data such as tar padding or later headers in the member, or a gzip trailer never read), every
//! read must succeed with the original bytes; if it gets other bytes, every read must fail; if
//! it cannot decompress, reads must fail or give the original bytes. Nothing may panic.
//!
//! Each property runs 256 cases (`PROPTEST_CASES` overrides) and prints how many changes were
//! detected and how many were harmless (`cargo test --test tamper_props -- --nocapture`).

use std::collections::HashSet;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use estargz::index::{Chunk, NodeId, NodeKind};
use estargz::plan::Compression;
use estargz::read::VerifyReport;
use estargz::{Digest, OpenOptions, ReadAt, Reader};
use estargz_testkit::vectors::Vector;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// A blob with one byte changed, without copying the blob.
struct Flipped {
    blob: Arc<Vec<u8>>,
    at: u64,
    xor: u8,
}

impl ReadAt for Flipped {
    fn len(&self) -> io::Result<u64> {
        ReadAt::len(self.blob.as_slice())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.blob.as_slice().read_exact_at(offset, buf)?;
        if (offset..offset + buf.len() as u64).contains(&self.at) {
            buf[(self.at - offset) as usize] ^= self.xor;
        }
        Ok(())
    }
}

/// A regular file of the original blob.
struct FileInfo {
    path: String,
    node: NodeId,
    chunks: Vec<Chunk>,
    size: u64,
    digest: Digest,
}

/// A vector's blob, what a correct reader sees in it, and where its parts are.
struct Fixture {
    name: &'static str,
    blob: Arc<Vec<u8>>,
    expected_toc: Digest,
    compression: Compression,
    chunks: Vec<Chunk>,
    /// The digest of each of `chunks`.
    digests: Vec<Option<Digest>>,
    node_count: usize,
    files: Vec<FileInfo>,
    payload_end: u64,
    toc_range: Range<u64>,
    footer_range: Range<u64>,
    report: VerifyReport,
}

fn opts(expected: Digest) -> OpenOptions {
    OpenOptions {
        expected_toc_digest: Some(expected),
        ..OpenOptions::default()
    }
}

impl Fixture {
    fn load(name: &'static str) -> Fixture {
        let v = Vector::load(name).expect("vector");
        let blob = Arc::new(v.blob().expect("blob"));
        let expected_toc = Digest::parse(
            v.manifest
                .expected
                .toc_digest
                .as_deref()
                .expect("vector has a TOC digest"),
        )
        .expect("TOC digest");
        let r = Reader::open_with(blob.clone(), opts(expected_toc)).expect("open original");
        let idx = r.index();
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        idx.walk(|path, node| {
            if idx.attr(node).kind == NodeKind::File && seen.insert(node) {
                files.push(FileInfo {
                    path: path.to_owned(),
                    node,
                    chunks: idx.chunks(node).to_vec(),
                    size: idx.attr(node).size,
                    digest: Digest([0; 32]), // filled in below
                });
            }
        });
        for f in &mut files {
            let mut data = Vec::new();
            r.open_file(&f.path)
                .expect("open file")
                .read_to_end(&mut data)
                .expect("read original");
            assert_eq!(data.len() as u64, f.size);
            f.digest = Digest::of(&data);
        }
        let compression = r.location().compression();
        let chunks = idx.all_chunks().to_vec();
        let digests: Vec<Option<Digest>> = chunks
            .iter()
            .map(|c| idx.chunk_digest(c).expect("chunk digest"))
            .collect();
        for (c, d) in chunks.iter().zip(&digests) {
            assert_eq!(
                model_decode(
                    &blob[c.blob_offset() as usize..c.blob_end() as usize],
                    c,
                    compression
                )
                .map(|d| Digest::of(&d)),
                Some(d.expect("chunk digest")),
                "{name}: the model decoder disagrees with the original blob at {c:?}"
            );
        }
        let toc_range = r.location().toc_range.clone().expect("embedded TOC");
        let blob_size = Vec::len(&blob) as u64;
        let footer_range = blob_size - r.footer().size() as u64..blob_size;
        let report = r.verify().expect("verify original");
        Fixture {
            name,
            expected_toc,
            compression,
            node_count: idx.node_count(),
            payload_end: r.location().payload_end,
            chunks,
            digests,
            files,
            toc_range,
            footer_range,
            report,
            blob,
        }
    }
}

/// The model: decompress `c` from `range`, the bytes of its compressed range, on its own
/// (skip `innerOffset`, take `size`).
fn model_decode(range: &[u8], c: &Chunk, compression: Compression) -> Option<Vec<u8>> {
    if c.is_zeros() {
        return Some(vec![0; c.size() as usize]);
    }
    let bytes = range;
    let mut r: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(bytes).ok()?),
    };
    let skipped = io::copy(&mut (&mut r).take(c.inner_offset()), &mut io::sink()).ok()?;
    if skipped != c.inner_offset() {
        return None;
    }
    let mut out = Vec::new();
    r.take(c.size()).read_to_end(&mut out).ok()?;
    (out.len() as u64 == c.size()).then_some(out)
}

/// What the model says a chunk read must give after the change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The chunk still decodes to its original bytes: reads must succeed.
    Original,
    /// The chunk decodes to other bytes: reads must fail.
    Changed,
    /// The chunk no longer decodes: reads must fail or give the original bytes.
    Broken,
}

impl Expect {
    fn combine(self, other: Expect) -> Expect {
        use Expect::*;
        match (self, other) {
            (Changed, _) | (_, Changed) => Changed,
            (Broken, _) | (_, Broken) => Broken,
            _ => Original,
        }
    }
}

impl Fixture {
    /// The digest of `c`, one of `self.chunks`.
    fn digest(&self, c: &Chunk) -> Option<Digest> {
        let i = self.chunks.iter().position(|x| x == c)?;
        self.digests[i]
    }
}

fn model(fx: &Fixture, c: &Chunk, at: u64, xor: u8) -> Expect {
    if !c.blob_range().contains(&at) || c.is_zeros() {
        return Expect::Original;
    }
    let range = c.blob_offset() as usize..c.blob_end() as usize;
    let mut bytes = fx.blob[range].to_vec();
    bytes[(at - c.blob_offset()) as usize] ^= xor;
    match model_decode(&bytes, c, fx.compression) {
        Some(d) if Some(Digest::of(&d)) == fx.digest(c) => Expect::Original,
        Some(_) => Expect::Changed,
        None => Expect::Broken,
    }
}

/// Outcome counters of one property.
#[derive(Default)]
struct Stats {
    detected: AtomicUsize,
    harmless: AtomicUsize,
}

impl Stats {
    fn record(&self, detected: bool) {
        let c = if detected {
            &self.detected
        } else {
            &self.harmless
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn check_result(
    what: &str,
    got: estargz::Result<Digest>,
    want: Digest,
    expect: Expect,
) -> Result<bool, TestCaseError> {
    match (got, expect) {
        (Ok(d), Expect::Original | Expect::Broken) if d == want => Ok(false),
        (Ok(d), _) => Err(TestCaseError::fail(format!(
            "{what}: returned different bytes (sha256 {d}, original {want}); model: {expect:?}"
        ))),
        (Err(_), Expect::Changed | Expect::Broken) => Ok(true),
        (Err(e), Expect::Original) => Err(TestCaseError::fail(format!(
            "{what}: failed although the changed byte does not alter its data: {e}"
        ))),
    }
}

/// Every read path of file `f` of `r`, checked against the model.
fn check_file(
    r: &Reader<Flipped>,
    f: &FileInfo,
    expect: Expect,
    ctx: &str,
) -> Result<bool, TestCaseError> {
    let mut detected = false;
    // 1. FileReader as std::io::Read.
    let got = r.open_file(&f.path).and_then(|mut fr| {
        let mut data = Vec::new();
        fr.read_to_end(&mut data)
            .map_err(|e| estargz::Error::io("read", e))?;
        Ok(Digest::of(&data))
    });
    detected |= check_result(&format!("{ctx}: read {}", f.path), got, f.digest, expect)?;
    // 2. Reader::read_at of the whole file in one call.
    let mut buf = vec![0u8; f.size as usize];
    let got = r.read_at(f.node, 0, &mut buf).and_then(|n| {
        if n as u64 != f.size {
            return Err(estargz::Error::InvalidArgument(format!("short read {n}")));
        }
        Ok(Digest::of(&buf))
    });
    detected |= check_result(&format!("{ctx}: read_at {}", f.path), got, f.digest, expect)?;
    // 3. FileReader::for_each_chunk (what `estargz cat` uses).
    let got = r.open_file(&f.path).and_then(|mut fr| {
        let mut h = estargz::digest::Hasher::new();
        fr.for_each_chunk(0, |d| {
            h.update(d);
            Ok(())
        })?;
        Ok(h.finish())
    });
    detected |= check_result(
        &format!("{ctx}: for_each_chunk {}", f.path),
        got,
        f.digest,
        expect,
    )?;
    Ok(detected)
}

/// The whole property for one change: `blob[at] ^= xor`. Returns whether it was detected.
fn check_flip(fx: &Fixture, at: u64, xor: u8, verify: bool) -> Result<bool, TestCaseError> {
    assert_ne!(xor, 0);
    let ctx = format!("{}: blob[{at}] ^= {xor:#04x}", fx.name);
    let src = Flipped {
        blob: fx.blob.clone(),
        at,
        xor,
    };
    let r = match Reader::open_with(src, opts(fx.expected_toc)) {
        Err(e) => {
            prop_assert!(
                at >= fx.payload_end,
                "{ctx}: open failed after a change in the payload (which open never reads): {e}"
            );
            return Ok(true);
        }
        Ok(r) => r,
    };
    // Opened: the TOC it found must be the original one, to the byte (the digest was checked),
    // and so must everything derived from it and from the footer.
    prop_assert_eq!(r.toc_digest(), fx.expected_toc, "{}", ctx);
    prop_assert_eq!(r.index().all_chunks(), &fx.chunks[..], "{}", ctx);
    prop_assert_eq!(r.index().node_count(), fx.node_count, "{}", ctx);
    prop_assert_eq!(r.location().payload_end, fx.payload_end, "{}", ctx);
    prop_assert_eq!(r.location().compression(), fx.compression, "{}", ctx);

    if at >= fx.payload_end {
        // The payload is untouched: a file read must give the original bytes.
        if let Some(f) = fx.files.iter().find(|f| f.size > 0) {
            check_file(&r, f, Expect::Original, &ctx)?;
        }
        return Ok(false);
    }

    let mut detected = false;
    let mut any_affected = false;
    for f in &fx.files {
        let expect = f
            .chunks
            .iter()
            .map(|c| model(fx, c, at, xor))
            .fold(Expect::Original, Expect::combine);
        if f.chunks.iter().any(|c| c.blob_range().contains(&at)) {
            any_affected = true;
            detected |= check_file(&r, f, expect, &ctx)?;
        }
    }
    if verify || !any_affected {
        // `verify` also reads chunks no path reaches (shadowed entries).
        let expect = fx
            .chunks
            .iter()
            .map(|c| model(fx, c, at, xor))
            .fold(Expect::Original, Expect::combine);
        match (r.verify(), expect) {
            (Ok(rep), Expect::Original | Expect::Broken) => {
                prop_assert_eq!(&rep, &fx.report, "{}: verify", ctx)
            }
            (Ok(_), Expect::Changed) => {
                return Err(TestCaseError::fail(format!(
                    "{ctx}: verify() passed although a chunk decodes to other bytes"
                )))
            }
            (Err(_), Expect::Changed | Expect::Broken) => detected = true,
            (Err(e), Expect::Original) => {
                return Err(TestCaseError::fail(format!(
                    "{ctx}: verify() failed although no chunk's data changed: {e}"
                )))
            }
        }
    }
    Ok(detected)
}

fn config() -> Config {
    let mut c = Config::default(); // reads PROPTEST_CASES and friends
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = 256;
    }
    // Failures print the minimal case; nothing is written into the source tree.
    c.failure_persistence = None;
    c
}

/// Runs `strategy` (an offset and a non-zero xor mask, and whether to run `verify()`) against
/// `fx`, then checks that at least `min_detected` of the cases were detected.
fn run(
    fx: &Fixture,
    what: &str,
    strategy: impl Strategy<Value = (u64, u8, bool)>,
    min_detected_pct: usize,
) {
    let stats = Stats::default();
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |(at, xor, verify)| {
        stats.record(check_flip(fx, at, xor, verify)?);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{} {what}: {e}", fx.name);
    }
    let (d, h) = (
        stats.detected.load(Ordering::Relaxed),
        stats.harmless.load(Ordering::Relaxed),
    );
    println!(
        "{} {what}: {d} changes detected, {h} harmless (original bytes served)",
        fx.name
    );
    assert!(
        d * 100 >= (d + h) * min_detected_pct,
        "{} {what}: only {d} of {} changes were detected; the model or the test is wrong",
        fx.name,
        d + h
    );
}

fn xor() -> impl Strategy<Value = u8> {
    prop_oneof![
        (0u32..8).prop_map(|b| 1u8 << b), // single bit flips
        1u8..=255,
    ]
}

/// A byte in some chunk's compressed range: a chunk, then a position in its range.
fn in_chunk(fx: &Fixture) -> impl Strategy<Value = (u64, u8, bool)> {
    let ranges: Vec<Range<u64>> = fx
        .chunks
        .iter()
        .filter(|c| !c.is_zeros())
        .map(|c| c.blob_range())
        .collect();
    assert!(!ranges.is_empty(), "{}: no chunks", fx.name);
    (
        proptest::sample::select(ranges),
        any::<proptest::sample::Index>(),
        xor(),
        // verify() decodes the whole blob: do it in one case of four.
        proptest::bool::weighted(0.25),
    )
        .prop_map(|(r, i, x, v)| (r.start + i.index((r.end - r.start) as usize) as u64, x, v))
}

fn in_range(r: Range<u64>) -> impl Strategy<Value = (u64, u8, bool)> {
    (r, xor(), Just(false))
}

/// The TOC, the bytes between the payload and it (zstd skippable-frame header) and the footer.
fn in_tail(fx: &Fixture) -> impl Strategy<Value = (u64, u8, bool)> {
    in_range(fx.payload_end..fx.footer_range.end)
}

fn vector_props(name: &'static str) {
    let fx = Fixture::load(name);
    assert!(fx.payload_end <= fx.toc_range.start);
    assert!(fx.toc_range.end <= fx.footer_range.start);
    run(&fx, "chunk ranges", in_chunk(&fx), 50);
    run(&fx, "TOC", in_range(fx.toc_range.clone()), 90);
    run(&fx, "footer", in_range(fx.footer_range.clone()), 50);
    run(&fx, "TOC and footer region", in_tail(&fx), 50);
    // Anywhere at all (also gzip members no chunk range covers, e.g. directory headers).
    run(&fx, "whole blob", in_range(0..Vec::len(&fx.blob) as u64), 0);
}

#[test]
fn gzip_64k_chunks() {
    vector_props("edge-gzip-chunk64k");
}

#[test]
fn zstd_chunked() {
    vector_props("edge-zstd-default");
}

#[test]
fn gzip_inner_offset_packing() {
    vector_props("v0.18.2-edge-gzip-minchunk64k");
}

/// A 605-byte blob: every byte, every single-bit flip and the complement, exhaustively.
#[test]
fn tiny_blob_every_byte() {
    let fx = Fixture::load("q-only-empty-file");
    let (mut detected, mut harmless) = (0, 0);
    for at in 0..Vec::len(&fx.blob) as u64 {
        for xor in (0..8).map(|b| 1u8 << b).chain([0xff]) {
            match check_flip(&fx, at, xor, true) {
                Ok(true) => detected += 1,
                Ok(false) => harmless += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    println!("q-only-empty-file exhaustive: {detected} changes detected, {harmless} harmless");
    assert!(detected > harmless);
}
