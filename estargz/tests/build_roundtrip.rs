//! Round trip of the builder: every stored input tar of the conformance vectors and a few
//! generated ones (many small files, one file of several MiB, every entry type) are built with
//! a matrix of options, then read back with this crate's reader and compared with the input as
//! the `tar` crate parses it (an independent tar reader):
//!
//! - every regular file's bytes, and every entry's metadata (type, mode, uid/gid,
//!   uname/gname, mtime, symlink target, hardlink target, xattrs, device numbers);
//! - `Reader::verify` passes with the report's TOC digest, and the TOC read back is the report's;
//! - the blob's uncompressed stream (gzip members / zstd frames decompressed in sequence) is a
//!   tar that `tar -t` lists, its sha256 and length are the report's DiffID and uncompressed
//!   size;
//! - the report's blob digest and size, and the annotations, describe the blob;
//! - the blob is byte-identical for 1 and 4 threads.
//!
//! The second half is interop with the Go reference (`esgz-oracle`, prerequisite rule of
//! `estargz_testkit::prereq`): every blob without min chunk size (gzip and zstd:chunked, with
//! and without prioritised files) passes `esgz-oracle verify` and `esgz-oracle cat` returns
//! every regular file's bytes.
//!
//! Set `ESTARGZ_SLOW_TESTS=1` to add the vectors' 80 MiB `random.tar` to the round trip.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use estargz::build::{
    BuildOptions, BuildReport, Builder, OutputFormat, UnsupportedEntries, MEMBER_SIZE,
    NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK,
};
use estargz::index::{Landmark, NodeKind};
use estargz::{Digest, EntryType, OpenOptions, Reader, Toc};
use estargz_testkit::prereq::require_command;
use estargz_testkit::{synth, vectors_dir};

// ---------------------------------------------------------------------------------------
// The inputs.

/// One input tar (possibly gzip or zstd compressed) and what to build it with.
struct Input {
    name: String,
    bytes: Vec<u8>,
    /// Entries the format cannot carry (PAX global header, type 7): converted.
    unsupported: UnsupportedEntries,
}

fn stored_inputs() -> Vec<Input> {
    let dir = vectors_dir().join("inputs");
    let mut paths = vec![dir.join("edge.tar")];
    let mut quirks: Vec<PathBuf> = std::fs::read_dir(dir.join("quirks"))
        .expect("quirks dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    quirks.sort();
    paths.extend(quirks);
    paths
        .into_iter()
        .filter(|p| {
            // A hardlink to a path that is not in the tar: the builder keeps it (as Go does),
            // but no reader can open the result; `build_bad_input.rs` covers it.
            !p.ends_with("q-hardlink-missing-target.tar")
        })
        .map(|p| Input {
            name: p.file_name().expect("name").to_string_lossy().into_owned(),
            bytes: std::fs::read(&p).expect("read input"),
            unsupported: UnsupportedEntries::Convert,
        })
        .collect()
}

fn generated_inputs() -> Vec<Input> {
    let gen = |name: &str, bytes| Input {
        name: name.to_string(),
        bytes,
        unsupported: UnsupportedEntries::Error,
    };
    vec![
        gen("many-small-files", synth::many_small_files(1500, 7)),
        gen("one-big-file", synth::one_big_file((6 << 20) + 12_345, 11)),
        gen("every-entry-type", synth::every_entry_type()),
        gen("compressed-files", synth::compressed_files(13)),
    ]
}

// ---------------------------------------------------------------------------------------
// The expected model: the input as the `tar` crate reads it, duplicates resolved.

#[derive(Debug, Clone)]
struct Want {
    /// Raw name as in the tar (for messages).
    raw: String,
    kind: Kind,
    mode: u32,
    uid: i64,
    gid: i64,
    uname: String,
    gname: String,
    /// The TOC's rounded modification time (0 = none).
    mtime: i64,
    link: String,
    dev: (i64, i64),
    xattrs: BTreeMap<String, Vec<u8>>,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reg,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// The tar's entries by cleaned path (later duplicates win), in the order of their last
/// occurrence.
struct Model {
    order: Vec<String>,
    by_path: HashMap<String, Want>,
}

fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(p),
        }
    }
    parts.join("/")
}

/// A tar numeric field: base-256 (high bit set, two's complement) or octal.
fn numeric(field: &[u8]) -> i64 {
    if field[0] & 0x80 != 0 {
        let neg = field[0] & 0x40 != 0;
        let mut v: i64 = if neg { -1 } else { 0 };
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 {
                (b & 0x7f) | if neg { 0x80 } else { 0 }
            } else {
                b
            };
            v = (v << 8) | i64::from(b);
        }
        return v;
    }
    let s: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| ('0'..='7').contains(c))
        .collect();
    if s.is_empty() {
        0
    } else {
        i64::from_str_radix(&s, 8).expect("octal")
    }
}

/// The TOC's modification time rule (Go's `formatModtime`): none for Unix second 0 (floor),
/// else rounded to the nearest second, halves up.
fn toc_mtime(floor_secs: i64, nanos: i64) -> i64 {
    if floor_secs == 0 {
        0
    } else {
        floor_secs + i64::from(nanos >= 500_000_000)
    }
}

/// A PAX time `[-]sec[.frac]` as floor seconds and nanoseconds.
fn pax_time(v: &str) -> (i64, i64) {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (s, f) = v.split_once('.').unwrap_or((v, ""));
    let mut frac: String = f.chars().take(9).collect();
    while frac.len() < 9 {
        frac.push('0');
    }
    let total: i128 = i128::from(s.parse::<i64>().expect("pax secs")) * 1_000_000_000
        + frac.parse::<i128>().expect("frac");
    let total = if neg { -total } else { total };
    (
        total.div_euclid(1_000_000_000) as i64,
        total.rem_euclid(1_000_000_000) as i64,
    )
}

fn decompress_input(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .expect("gunzip input");
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::stream::read::Decoder::new(bytes)
            .expect("zstd")
            .read_to_end(&mut out)
            .expect("unzstd input");
    } else {
        out = bytes.to_vec();
    }
    out
}

const RESERVED: [&str; 3] = [PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK, "stargz.index.json"];

fn model(input: &Input) -> Model {
    let tar_bytes = decompress_input(&input.bytes);
    let mut ar = tar::Archive::new(&tar_bytes[..]);
    let mut order: Vec<String> = Vec::new();
    let mut by_path: HashMap<String, Want> = HashMap::new();
    for entry in ar.entries().expect("entries") {
        let mut e = entry.expect("input entry");
        let h = e.header().as_bytes().to_vec();
        let typeflag = h[156];
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = match typeflag {
            b'0' | b'7' => Kind::Reg,
            0 if raw.ends_with('/') => Kind::Dir,
            0 => Kind::Reg,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'g' => continue, // converted: ignored
            t => panic!("{}: unexpected typeflag {t}", input.name),
        };
        let mut w = Want {
            raw: raw.clone(),
            kind,
            mode: (numeric(&h[100..108]) & 0o7777) as u32,
            uid: numeric(&h[108..116]),
            gid: numeric(&h[116..124]),
            uname: String::from_utf8_lossy(e.header().username_bytes().unwrap_or_default())
                .into_owned(),
            gname: String::from_utf8_lossy(e.header().groupname_bytes().unwrap_or_default())
                .into_owned(),
            mtime: 0,
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default(),
            dev: (0, 0),
            xattrs: BTreeMap::new(),
            data: Vec::new(),
        };
        if matches!(kind, Kind::Char | Kind::Block) {
            w.dev = (numeric(&h[329..337]), numeric(&h[337..345]));
        }
        let (mut secs, mut nanos) = (numeric(&h[136..148]), 0);
        if let Some(pax) = e.pax_extensions().expect("pax") {
            for r in pax {
                let r = r.expect("pax record");
                let key = r.key().expect("pax key").to_string();
                let value = r.value_bytes().to_vec();
                let text = || String::from_utf8_lossy(&value).into_owned();
                match key.as_str() {
                    "uid" => w.uid = text().parse().expect("pax uid"),
                    "gid" => w.gid = text().parse().expect("pax gid"),
                    "uname" => w.uname = text(),
                    "gname" => w.gname = text(),
                    "mtime" => (secs, nanos) = pax_time(&text()),
                    k => {
                        if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                            w.xattrs.insert(x.to_string(), value.clone());
                        }
                    }
                }
            }
        }
        w.mtime = toc_mtime(secs, nanos);
        if kind == Kind::Reg {
            e.read_to_end(&mut w.data).expect("input data");
        }
        let path = clean(&raw);
        if RESERVED.contains(&path.as_str()) {
            continue;
        }
        order.retain(|p| *p != path);
        order.push(path.clone());
        by_path.insert(path, w);
    }
    Model { order, by_path }
}

impl Model {
    /// False when an ancestor of `path` is in the tar as something other than a directory
    /// (a directory replaced by a file): such an entry is unreachable after extraction.
    fn visible(&self, path: &str) -> bool {
        let mut p = path;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if self.by_path.get(p).is_some_and(|w| w.kind != Kind::Dir) {
                return false;
            }
        }
        true
    }

    /// The entry a hardlink resolves to (following chains), by cleaned path.
    fn resolve<'a>(&'a self, path: &'a str) -> (&'a str, &'a Want) {
        let mut p = path;
        for _ in 0..64 {
            let w = &self.by_path[p];
            if w.kind != Kind::Hardlink {
                return (p, w);
            }
            let target = clean(&w.link);
            p = self
                .by_path
                .get_key_value(&target)
                .map(|(k, _)| k.as_str())
                .unwrap_or_else(|| panic!("hardlink {path} to missing {target}"));
        }
        panic!("hardlink chain from {path} too long");
    }

    /// Regular files (not hardlinks) that are reachable, in order.
    fn files(&self) -> impl Iterator<Item = (&str, &Want)> {
        self.order.iter().filter_map(|p| {
            let w = &self.by_path[p];
            (w.kind == Kind::Reg && self.visible(p)).then_some((p.as_str(), w))
        })
    }

    /// A prioritised list for this input: a few regular files and a hardlink, spelled in the
    /// three ways the builder must accept (`a`, `/a`, `./a`).
    fn prioritized(&self) -> Vec<String> {
        // A name that is not UTF-8 cannot be spelled in the list.
        let files: Vec<&str> = self
            .files()
            .map(|(p, _)| p)
            .filter(|p| !p.contains('\u{fffd}'))
            .collect();
        let mut picks: Vec<String> = Vec::new();
        if let Some(last) = files.last() {
            picks.push(format!("/{last}"));
        }
        if let Some(mid) = files.get(files.len() / 2) {
            picks.push(format!("./{mid}"));
        }
        if let Some(first) = files.first() {
            picks.push((*first).to_string());
        }
        if let Some(link) = self
            .order
            .iter()
            .find(|p| self.by_path[*p].kind == Kind::Hardlink && self.visible(p))
        {
            picks.push(link.clone());
        }
        let mut seen = std::collections::HashSet::new();
        picks.retain(|p| seen.insert(clean(p)));
        picks
    }
}

// ---------------------------------------------------------------------------------------
// The options matrix.

#[derive(Debug, Clone, Copy)]
struct Combo {
    chunk: u64,
    level: i32,
    min_chunk: u64,
    prio: bool,
    zstd: bool,
    threads: usize,
    external_toc: bool,
}

/// Every value of every option, paired so that each two-option combination of the binary
/// options appears at least once (a covering array), plus one external-TOC build.
const COMBOS: [Combo; 8] = [
    c(4 << 20, 9, 0, false, false, 4, false),
    c(64 << 10, 1, 0, true, false, 1, false),
    c(64 << 10, 9, 128 << 10, false, true, 1, false),
    c(4 << 20, 1, 128 << 10, true, true, 4, false),
    c(64 << 10, 9, 128 << 10, true, false, 4, false),
    c(4 << 20, 1, 0, false, true, 1, false),
    c(4 << 20, 9, 128 << 10, true, false, 1, true),
    c(64 << 10, 1, 0, false, true, 4, false),
];

const fn c(
    chunk: u64,
    level: i32,
    min_chunk: u64,
    prio: bool,
    zstd: bool,
    threads: usize,
    external_toc: bool,
) -> Combo {
    Combo {
        chunk,
        level,
        min_chunk,
        prio,
        zstd,
        threads,
        external_toc,
    }
}

fn options(combo: &Combo, input: &Input, m: &Model, threads: usize) -> BuildOptions {
    BuildOptions {
        format: if combo.zstd {
            OutputFormat::ZstdChunked
        } else {
            OutputFormat::Estargz
        },
        level: Some(combo.level),
        chunk_size: combo.chunk,
        min_chunk_size: combo.min_chunk,
        prioritized: if combo.prio {
            m.prioritized()
        } else {
            Vec::new()
        },
        allow_missing_prioritized: false,
        external_toc: combo.external_toc,
        threads,
        unsupported: input.unsupported,
        max_sparse_expansion: 0,
        progress: None,
    }
}

struct Built {
    blob: Vec<u8>,
    report: BuildReport,
    opts: BuildOptions,
}

/// Builds with the combo's thread count and with the other one, and checks the two blobs
/// (and external TOCs) are byte-identical.
fn build(combo: &Combo, input: &Input, m: &Model) -> Built {
    let mut blobs = Vec::new();
    for threads in [combo.threads, if combo.threads == 1 { 4 } else { 1 }] {
        let opts = options(combo, input, m, threads);
        let mut blob = Vec::new();
        // Half the builds from a stream (spooled), half from a seekable input.
        let res = if threads == 1 {
            Builder::new(opts.clone()).build(&input.bytes[..], &mut blob)
        } else {
            Builder::new(opts.clone()).build_seekable(std::io::Cursor::new(&input.bytes), &mut blob)
        };
        let report = res.unwrap_or_else(|e| panic!("{} {combo:?}: build failed: {e}", input.name));
        blobs.push(Built { blob, report, opts });
    }
    let other = blobs.pop().expect("two builds");
    let first = blobs.pop().expect("two builds");
    assert!(
        first.blob == other.blob,
        "{} {combo:?}: 1 and 4 threads give different blobs",
        input.name
    );
    assert_eq!(first.report.external_toc, other.report.external_toc);
    assert_eq!(first.report.blob_digest, other.report.blob_digest);
    first
}

// ---------------------------------------------------------------------------------------
// The checks.

fn open(b: &Built) -> Reader<&[u8]> {
    Reader::open_with(
        &b.blob[..],
        OpenOptions {
            expected_toc_digest: Some(b.report.toc_digest),
            external_toc: b.report.external_toc.clone(),
            ..OpenOptions::default()
        },
    )
    .expect("the reader opens the blob with the report's TOC digest")
}

/// The blob's uncompressed stream: every gzip member / zstd frame decompressed in sequence.
fn uncompressed_stream(blob: &[u8], zstd: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if zstd {
        zstd::stream::read::Decoder::new(blob)
            .expect("zstd decoder")
            .read_to_end(&mut out)
            .expect("the blob is a sequence of zstd frames");
    } else {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("the blob is a sequence of gzip members");
    }
    out
}

/// `tar -tf -` of `stream`: the listed lines.
fn tar_list(tar_cmd: &Path, stream: &[u8]) -> Vec<String> {
    let mut child = Command::new(tar_cmd)
        .args(["-tf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tar");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = stream.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("tar -t");
    writer.join().expect("writer thread");
    assert!(
        out.status.success(),
        "tar -t failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn check_report(what: &str, b: &Built, r: &Reader<&[u8]>, stream: &[u8]) {
    let rep = &b.report;
    assert_eq!(rep.blob_size, b.blob.len() as u64, "{what}: blobSize");
    assert_eq!(rep.blob_digest, Digest::of(&b.blob), "{what}: blobDigest");
    assert_eq!(rep.diff_id, Digest::of(stream), "{what}: diffId");
    assert_eq!(rep.uncompressed_size, stream.len() as u64, "{what}: size");
    assert_eq!(r.toc_digest(), rep.toc_digest, "{what}: tocDigest");
    let toc_json = r.toc_json().expect("toc json");
    assert_eq!(Digest::of(&toc_json), rep.toc_digest, "{what}");
    assert_eq!(
        Toc::from_json(&toc_json).expect("toc"),
        rep.toc,
        "{what}: report.toc is the TOC in the blob"
    );
    let ann = &rep.annotations;
    assert_eq!(
        ann.get("containerd.io/snapshot/stargz/toc.digest"),
        Some(&rep.toc_digest.to_string()),
        "{what}"
    );
    assert_eq!(
        ann.get("io.containers.estargz.uncompressed-size"),
        Some(&stream.len().to_string()),
        "{what}"
    );
    if b.opts.format == OutputFormat::ZstdChunked {
        assert_eq!(ann.len(), 4, "{what}: {ann:?}");
        let pos = &ann["io.containers.zstd-chunked.manifest-position"];
        let parts: Vec<u64> = pos.split(':').map(|p| p.parse().expect("number")).collect();
        assert_eq!(parts.len(), 4, "{what}: {pos}");
        assert_eq!(parts[3], 1, "{what}: manifest type");
        let frame = &b.blob[parts[0] as usize..(parts[0] + parts[1]) as usize];
        assert_eq!(
            ann["io.containers.zstd-chunked.manifest-checksum"],
            Digest::of(frame).to_string(),
            "{what}"
        );
        let json = zstd::stream::decode_all(frame).expect("the manifest frame decompresses");
        assert_eq!(json.len() as u64, parts[2], "{what}");
        assert_eq!(Digest::of(&json), rep.toc_digest, "{what}");
    } else {
        assert_eq!(ann.len(), 2, "{what}: {ann:?}");
    }
    match &rep.external_toc {
        Some(ext) => {
            assert!(b.opts.external_toc);
            // gzip(tar(stargz.index.json)), the JSON being the TOC.
            let tar = uncompressed_stream(ext, false);
            let mut ar = tar::Archive::new(&tar[..]);
            let mut e = ar
                .entries()
                .expect("toc tar")
                .next()
                .expect("entry")
                .expect("entry");
            assert_eq!(&*e.path_bytes(), b"stargz.index.json");
            let mut json = Vec::new();
            e.read_to_end(&mut json).expect("toc json");
            assert_eq!(Digest::of(&json), rep.toc_digest, "{what}");
        }
        None => assert!(!b.opts.external_toc, "{what}: external TOC missing"),
    }
}

fn check_contents(what: &str, m: &Model, b: &Built, r: &Reader<&[u8]>) {
    let idx = r.index();
    for path in &m.order {
        if !m.visible(path) {
            continue;
        }
        let w = &m.by_path[path];
        let node = match idx.lookup(path) {
            Some(n) => n,
            None if path.is_empty() => idx.root(),
            None => panic!("{what}: {path:?} ({:?}) not in the blob", w.raw),
        };
        let (target_path, target) = m.resolve(path);
        if w.kind == Kind::Hardlink {
            assert_eq!(
                idx.lookup(target_path),
                Some(node),
                "{what}: hardlink {path:?} is not its target {target_path:?}"
            );
        }
        let attr = idx.attr(node);
        let kind = match target.kind {
            Kind::Reg => NodeKind::File,
            Kind::Dir => NodeKind::Dir,
            Kind::Symlink => NodeKind::Symlink,
            Kind::Char => NodeKind::CharDevice,
            Kind::Block => NodeKind::BlockDevice,
            Kind::Fifo => NodeKind::Fifo,
            Kind::Hardlink => unreachable!(),
        };
        let ctx = format!("{what}: {path:?}");
        assert_eq!(attr.kind, kind, "{ctx}: kind");
        assert_eq!(attr.mode, target.mode, "{ctx}: mode");
        assert_eq!(i64::from(attr.uid), target.uid, "{ctx}: uid");
        assert_eq!(i64::from(attr.gid), target.gid, "{ctx}: gid");
        assert_eq!(attr.mtime, target.mtime, "{ctx}: mtime");
        let (uname, gname) = idx.owner_names(node);
        if !target.uname.is_empty() {
            assert_eq!(uname, target.uname, "{ctx}: uname");
        }
        if !target.gname.is_empty() {
            assert_eq!(gname, target.gname, "{ctx}: gname");
        }
        let xattrs: BTreeMap<String, Vec<u8>> = idx
            .xattrs(node)
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        assert_eq!(xattrs, target.xattrs, "{ctx}: xattrs");
        match target.kind {
            Kind::Symlink => {
                assert_eq!(idx.link_target(node), Some(target.link.as_str()), "{ctx}")
            }
            Kind::Char | Kind::Block => {
                assert_eq!(
                    (i64::from(attr.dev_major), i64::from(attr.dev_minor)),
                    target.dev,
                    "{ctx}: device"
                )
            }
            Kind::Reg => {
                assert_eq!(attr.size, target.data.len() as u64, "{ctx}: size");
                let mut got = Vec::new();
                r.open_file(path)
                    .expect("open file")
                    .read_to_end(&mut got)
                    .expect("read file");
                assert!(got == target.data, "{ctx}: contents differ");
            }
            _ => {}
        }
    }
    // Nothing more in the blob than the input, the landmark and parent directories.
    let prio = !b.opts.prioritized.is_empty();
    let landmark = if prio {
        PREFETCH_LANDMARK
    } else {
        NO_PREFETCH_LANDMARK
    };
    idx.walk(|p, n| {
        if p.is_empty() || m.by_path.contains_key(p) {
            return;
        }
        if p == landmark {
            assert_eq!(idx.attr(n).kind, NodeKind::File);
            return;
        }
        assert_eq!(
            idx.attr(n).kind,
            NodeKind::Dir,
            "{what}: {p:?} is in the blob but not in the input"
        );
    });
    let mut one = [0u8; 2];
    let got = r
        .open_file(landmark)
        .expect("landmark")
        .read(&mut one)
        .expect("landmark");
    assert_eq!(&one[..got], [0x0f], "{what}: landmark content");
    match idx.landmark() {
        Landmark::Prefetch { .. } => assert!(prio, "{what}"),
        Landmark::NoPrefetch => assert!(!prio, "{what}"),
        Landmark::None => panic!("{what}: no landmark"),
    }
    // Prioritised files come before `.prefetch.landmark`, in the given order.
    if prio {
        let pos = |name: &str| {
            b.report
                .toc
                .entries
                .iter()
                .position(|e| clean(&e.name) == name && e.entry_type != EntryType::Chunk)
        };
        let lm = pos(PREFETCH_LANDMARK).expect("landmark entry");
        let mut last = None;
        for p in &b.opts.prioritized {
            let at = pos(&clean(p)).unwrap_or_else(|| panic!("{what}: {p} not in TOC"));
            assert!(at < lm, "{what}: {p} after the landmark");
            assert!(last.is_none_or(|l| l < at), "{what}: {p} out of order");
            last = Some(at);
        }
        assert!(b.report.missed_prioritized.is_empty());
    } else {
        assert_eq!(b.report.toc.entries[0].name, NO_PREFETCH_LANDMARK);
    }
}

fn roundtrip(inputs: &[Input], combos: &[Combo]) -> Vec<(String, Combo, Built)> {
    let tar_cmd = require_command("tar", "tar");
    let mut out = Vec::new();
    for input in inputs {
        let m = model(input);
        for combo in combos {
            let what = format!("{} {combo:?}", input.name);
            let b = build(combo, input, &m);
            let r = open(&b);
            let v = r.verify().unwrap_or_else(|e| panic!("{what}: verify: {e}"));
            let regs = b
                .report
                .toc
                .entries
                .iter()
                .filter(|e| e.entry_type == EntryType::Reg)
                .count();
            assert_eq!(v.files as usize, regs, "{what}: verified files");
            let stream = uncompressed_stream(&b.blob, combo.zstd);
            check_report(&what, &b, &r, &stream);
            check_contents(&what, &m, &b, &r);
            if let Some(tar_cmd) = &tar_cmd {
                let listed = tar_list(tar_cmd, &stream);
                let mut want = b
                    .report
                    .toc
                    .entries
                    .iter()
                    .filter(|e| e.entry_type != EntryType::Chunk)
                    .count();
                if !combo.zstd && !combo.external_toc {
                    want += 1; // stargz.index.json
                    assert_eq!(
                        listed.last().map(String::as_str),
                        Some("stargz.index.json"),
                        "{what}"
                    );
                }
                assert_eq!(listed.len(), want, "{what}: tar -t lists every entry");
            }
            drop(r);
            out.push((input.name.clone(), *combo, b));
        }
    }
    out
}

#[test]
fn stored_inputs_round_trip() {
    let inputs = stored_inputs();
    assert!(inputs.len() >= 20, "only {} stored inputs", inputs.len());
    roundtrip(&inputs, &COMBOS);
}

#[test]
fn generated_inputs_round_trip() {
    roundtrip(&generated_inputs(), &COMBOS);
}

/// The vectors' 80 MiB `random.tar` (regenerated), with two option sets. Slow in debug
/// builds: only with `ESTARGZ_SLOW_TESTS=1`.
#[test]
fn random_tar_round_trip() {
    if std::env::var_os("ESTARGZ_SLOW_TESTS").is_none() {
        eprintln!("skipping: set ESTARGZ_SLOW_TESTS=1 for random.tar");
        return;
    }
    let path = estargz_testkit::random_tar().expect("random.tar");
    let input = Input {
        name: "random.tar".into(),
        bytes: std::fs::read(path).expect("random.tar"),
        unsupported: UnsupportedEntries::Error,
    };
    roundtrip(&[input], &[COMBOS[0], COMBOS[3]]);
}

/// The model itself must see what the inputs hold, or the round trip would check nothing.
#[test]
fn model_sees_every_entry_kind() {
    let m = model(&generated_inputs().swap_remove(2));
    let kinds: Vec<Kind> = m.order.iter().map(|p| m.by_path[p].kind).collect();
    for k in [
        Kind::Reg,
        Kind::Dir,
        Kind::Symlink,
        Kind::Hardlink,
        Kind::Char,
        Kind::Block,
        Kind::Fifo,
    ] {
        assert!(kinds.contains(&k), "{k:?}");
    }
    assert!(m.by_path.values().any(|w| !w.xattrs.is_empty()));
    assert!(m.by_path.keys().any(|p| p.len() > 100));
    assert!(m.by_path.keys().any(|p| p.ends_with(".wh..wh..opq")));
}

// ---------------------------------------------------------------------------------------
// Interop with the Go reference.

/// Every gzip member of `blob` in order: blob offset and uncompressed bytes.
fn gzip_members(blob: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut rest = blob;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let start = blob.len() - rest.len();
        let mut bytes = Vec::new();
        flate2::bufread::GzDecoder::new(&mut rest)
            .read_to_end(&mut bytes)
            .unwrap_or_else(|e| panic!("no gzip member at {start}: {e}"));
        out.push((start, bytes));
    }
    out
}

/// No gzip member holds more than twice `MEMBER_SIZE` uncompressed bytes plus the tar padding
/// and one header after a payload, whatever the chunk size and min chunk size (this is what
/// bounds the builder's memory), and without packing a chunk shorter than that is one member;
/// every chunk still starts at a member boundary its TOC entry names (`offset`,
/// `innerOffset`), and the blob reads back and verifies.
#[test]
fn members_stay_small_whatever_the_chunk_size() {
    let mut tar = tar::Builder::new(Vec::new());
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("big".into(), synth::mixed_content((3 << 20) + 7, 1)),
        ("exact".into(), synth::mixed_content(MEMBER_SIZE, 2)),
        ("mid".into(), synth::mixed_content(700 << 10, 3)),
    ];
    for i in 0..8 {
        files.push((
            format!("small/{i}"),
            synth::mixed_content(100 << 10, 10 + i),
        ));
    }
    for (name, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, &data[..]).expect("append");
    }
    let input = tar.into_inner().expect("tar");
    for (chunk_size, min_chunk_size) in [
        (4 << 20, 0),
        (16 << 20, 0),
        (64 << 10, 0),
        (4 << 20, 300 << 10),
        (4 << 20, 2 << 20),
    ] {
        let what = format!("chunk size {chunk_size}, min chunk size {min_chunk_size}");
        let mut blob = Vec::new();
        let report = Builder::new(BuildOptions {
            chunk_size,
            min_chunk_size,
            threads: 2,
            ..BuildOptions::default()
        })
        .build(&input[..], &mut blob)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let members = gzip_members(&blob);
        // The last two are the TOC member and the footer.
        let payload = &members[..members.len() - 2];
        for (offset, bytes) in payload {
            assert!(
                bytes.len() < 2 * MEMBER_SIZE + 512 + 512,
                "{what}: the member at {offset} holds {} bytes",
                bytes.len()
            );
        }
        let starts: HashMap<usize, &Vec<u8>> = payload.iter().map(|(o, b)| (*o, b)).collect();
        let mut spanning = 0;
        for e in &report.toc.entries {
            if !matches!(e.entry_type, EntryType::Reg | EntryType::Chunk)
                || (e.size == 0 && e.entry_type == EntryType::Reg)
            {
                continue;
            }
            let member = starts.get(&(e.offset as usize)).unwrap_or_else(|| {
                panic!("{what}: {:?} at {} is not a member start", e.name, e.offset)
            });
            let len = if e.chunk_size > 0 {
                e.chunk_size
            } else {
                e.size
            } as usize;
            let spans = e.inner_offset as usize + len > member.len();
            if min_chunk_size == 0 {
                assert_eq!(
                    spans,
                    len >= 2 * MEMBER_SIZE,
                    "{what}: {:?} chunk of {len} bytes at {}",
                    e.name,
                    e.chunk_offset
                );
            }
            spanning += usize::from(spans);
        }
        // Chunks longer than a member continue in the following ones; shorter ones do not.
        assert_eq!(
            spanning > 0,
            chunk_size > MEMBER_SIZE as u64,
            "{what}: {spanning} chunks continue in a following member"
        );
        let r = Reader::open_with(
            &blob[..],
            OpenOptions {
                expected_toc_digest: Some(report.toc_digest),
                ..OpenOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{what}: open: {e}"));
        r.verify().unwrap_or_else(|e| panic!("{what}: verify: {e}"));
        for (name, data) in &files {
            let mut back = Vec::new();
            r.open_file(name)
                .unwrap_or_else(|e| panic!("{what}: open {name}: {e}"))
                .read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("{what}: read {name}: {e}"));
            assert!(&back == data, "{what}: {name} reads back different bytes");
        }
    }
}

/// `esgz-oracle verify` accepts every blob built without min chunk size (the Go version
/// predates it) and without an external TOC, and `esgz-oracle cat` returns each regular file.
#[test]
fn go_reference_reads_our_blobs() {
    let Some(oracle) = estargz_testkit::require_oracle() else {
        return;
    };
    let mut combos: Vec<Combo> = COMBOS
        .iter()
        .filter(|c| c.min_chunk == 0 && !c.external_toc)
        .copied()
        .collect();
    // The matrix pairs zstd:chunked with prioritised files only together with min chunk size.
    combos.push(c(64 << 10, 9, 0, true, true, 4, false));
    for zstd in [false, true] {
        for prio in [false, true] {
            assert!(
                combos.iter().any(|c| c.zstd == zstd && c.prio == prio),
                "zstd {zstd} prio {prio} not covered"
            );
        }
    }
    let mut inputs = generated_inputs();
    inputs.extend(
        stored_inputs()
            .into_iter()
            .filter(|i| i.name == "edge.tar" || i.name == "q-dup-chunked-then-small.tar"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for input in &inputs {
        let m = model(input);
        for combo in &combos {
            let what = format!("{} {combo:?}", input.name);
            let b = build(combo, input, &m);
            let blob = dir.path().join("blob");
            std::fs::write(&blob, &b.blob).expect("write blob");
            let out = Command::new(&oracle)
                .arg("verify")
                .arg(&blob)
                .arg(b.report.toc_digest.to_string())
                .output()
                .expect("run esgz-oracle verify");
            assert!(
                out.status.success(),
                "{what}: esgz-oracle verify: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for (i, (path, w)) in m.files().enumerate() {
                if input.name == "many-small-files" && i % 25 != 0 {
                    continue; // 1500 process spawns per build is slow: sample this input
                }
                let out = Command::new(&oracle)
                    .arg("cat")
                    .arg(&blob)
                    .arg(path)
                    .output()
                    .expect("run esgz-oracle cat");
                assert!(
                    out.status.success(),
                    "{what}: esgz-oracle cat {path:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(
                    out.stdout == w.data,
                    "{what}: esgz-oracle cat {path:?}: bytes differ"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} files checked");
}
