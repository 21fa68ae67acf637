//! A fixture blob writer for reader tests: exact control over chunk sizes, member sharing
//! (`innerOffset`), compression and footer, including layouts no builder would produce.
//!
//! Members hold only payload bytes (no tar headers): the reader never needs headers, and the
//! format places no requirement on what else a member contains.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;

use estargz::footer::Footer;
use estargz::{Digest, EntryType, Toc, TocEntry};

/// One input entry.
#[derive(Clone, Debug, Default)]
pub struct Ent {
    pub name: String,
    pub kind: Option<EntryType>,
    pub data: Vec<u8>,
    pub link: String,
    pub mode: i64,
    pub uid: i64,
    pub gid: i64,
    pub dev: (i64, i64),
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub modtime: String,
}

pub fn file(name: &str, data: &[u8]) -> Ent {
    Ent {
        name: name.into(),
        kind: Some(EntryType::Reg),
        data: data.to_vec(),
        mode: 0o644,
        ..Default::default()
    }
}

pub fn dir(name: &str) -> Ent {
    Ent {
        name: name.into(),
        kind: Some(EntryType::Dir),
        mode: 0o755,
        ..Default::default()
    }
}

pub fn link(kind: EntryType, name: &str, target: &str) -> Ent {
    Ent {
        name: name.into(),
        kind: Some(kind),
        link: target.into(),
        ..Default::default()
    }
}

pub fn dev(kind: EntryType, name: &str, major: i64, minor: i64) -> Ent {
    Ent {
        name: name.into(),
        kind: Some(kind),
        dev: (major, minor),
        ..Default::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Gzip,
    Zstd,
}

/// Layout options.
#[derive(Clone, Debug)]
pub struct Opts {
    pub chunk_size: usize,
    /// Pack payloads into the current member while it holds fewer than this many
    /// uncompressed bytes (0: every chunk opens a member).
    pub min_chunk_size: usize,
    pub codec: Codec,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            chunk_size: 4 << 20,
            min_chunk_size: 0,
            codec: Codec::Gzip,
        }
    }
}

pub struct Built {
    pub blob: Vec<u8>,
    pub toc: Toc,
    pub toc_json: Vec<u8>,
    pub toc_digest: Digest,
}

fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
    match codec {
        Codec::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(data).expect("gzip");
            gz.finish().expect("gzip")
        }
        Codec::Zstd => zstd::bulk::compress(data, 1).expect("zstd"),
    }
}

/// Writes the blob.
pub fn build(entries: &[Ent], opts: &Opts) -> Built {
    let mut blob = Vec::new();
    let mut toc = Toc {
        version: 1,
        ..Default::default()
    };
    // The member being filled: (blob offset it will get, uncompressed bytes).
    let mut member: Option<(u64, Vec<u8>)> = None;
    let flush = |blob: &mut Vec<u8>, member: &mut Option<(u64, Vec<u8>)>| {
        if let Some((_, data)) = member.take() {
            blob.extend(compress(opts.codec, &data));
        }
    };
    for e in entries {
        let kind = e.kind.unwrap_or(EntryType::Reg);
        let mut te = TocEntry {
            name: e.name.clone(),
            entry_type: kind,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            link_name: e.link.clone(),
            dev_major: e.dev.0,
            dev_minor: e.dev.1,
            xattrs: e.xattrs.clone(),
            modtime: e.modtime.clone(),
            ..Default::default()
        };
        if kind != EntryType::Reg {
            toc.entries.push(te);
            continue;
        }
        te.size = e.data.len() as i64;
        te.digest = Digest::of(&e.data).to_string();
        if e.data.is_empty() {
            toc.entries.push(te);
            continue;
        }
        let mut first = true;
        for (i, piece) in e.data.chunks(opts.chunk_size).enumerate() {
            let mut ce = if first {
                te.clone()
            } else {
                TocEntry {
                    name: e.name.clone(),
                    entry_type: EntryType::Chunk,
                    ..Default::default()
                }
            };
            first = false;
            ce.chunk_offset = (i * opts.chunk_size) as i64;
            if piece.len() == opts.chunk_size {
                ce.chunk_size = opts.chunk_size as i64;
            }
            ce.chunk_digest = Digest::of(piece).to_string();
            let share = matches!(&member, Some((_, d)) if d.len() < opts.min_chunk_size);
            if !share {
                flush(&mut blob, &mut member);
                member = Some((blob.len() as u64, Vec::new()));
            }
            let Some((off, data)) = member.as_mut() else {
                unreachable!()
            };
            ce.offset = *off as i64;
            ce.inner_offset = data.len() as i64;
            data.extend_from_slice(piece);
            toc.entries.push(ce);
        }
    }
    flush(&mut blob, &mut member);
    let toc_json = toc.to_json();
    let toc_digest = Digest::of(&toc_json);
    let toc_offset = blob.len() as u64;
    match opts.codec {
        Codec::Gzip => {
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_ustar();
            h.set_path("stargz.index.json").expect("path");
            h.set_size(toc_json.len() as u64);
            h.set_mode(0);
            h.set_cksum();
            tar.append(&h, toc_json.as_slice()).expect("tar");
            blob.extend(compress(Codec::Gzip, &tar.into_inner().expect("tar")));
            blob.extend(Footer::Estargz { toc_offset }.to_bytes());
        }
        Codec::Zstd => {
            let z = compress(Codec::Zstd, &toc_json);
            blob.extend([0x50, 0x2a, 0x4d, 0x18]);
            blob.extend((z.len() as u32).to_le_bytes());
            let toc_offset = blob.len() as u64;
            blob.extend(&z);
            blob.extend(
                Footer::ZstdChunked {
                    toc_offset,
                    toc_compressed_size: z.len() as u64,
                    toc_uncompressed_size: toc_json.len() as u64,
                }
                .to_bytes(),
            );
        }
    }
    Built {
        blob,
        toc,
        toc_json,
        toc_digest,
    }
}
