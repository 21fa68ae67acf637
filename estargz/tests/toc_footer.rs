//! TOC and footer conformance against the Go-generated vectors in `testdata/vectors`.
//!
//! - every `toc.json` parses and is written back byte for byte (so its SHA-256 is the vector's
//!   TOC digest), and its entries agree with the oracle's `ls.jsonl` dump;
//! - every `modtime` string round-trips through `parse_rfc3339` / `format_modtime`;
//! - every `footerHex` parses and re-serialises identically;
//! - every stored `blob.esgz` ends with a footer whose TOC range holds exactly `toc.json`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use estargz::footer::Footer;
use estargz::toc::{format_modtime, parse_rfc3339};
use estargz::{Digest, EntryType, Toc};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/vectors")
}

/// Every vector directory (those with a `manifest.json`), sorted.
fn vector_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(vectors_dir())
        .expect("testdata/vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 30,
        "expected the vector set, found {}",
        dirs.len()
    );
    dirs
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_vector_toc_round_trips_byte_for_byte() {
    let mut n = 0;
    for dir in vector_dirs() {
        let path = dir.join("toc.json");
        let Ok(bytes) = fs::read(&path) else { continue };
        let toc = Toc::from_json(&bytes).unwrap_or_else(|e| panic!("{}: {e}", name(&dir)));
        let out = toc.to_json();
        if out != bytes {
            let at = out
                .iter()
                .zip(&bytes)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let lo = at.saturating_sub(80);
            panic!(
                "{}: differs at byte {at}\n ours: {:?}\n go:   {:?}",
                name(&dir),
                String::from_utf8_lossy(&out[lo..(at + 80).min(out.len())]),
                String::from_utf8_lossy(&bytes[lo..(at + 80).min(bytes.len())]),
            );
        }
        // The digest the Go tools recorded is therefore reproduced too.
        let m = manifest(&dir);
        if let Some(want) = m["expected"]["tocDigest"].as_str() {
            assert_eq!(Digest::of(&out).to_string(), want, "{}", name(&dir));
        }
        // Parsing our own output gives the same TOC.
        assert_eq!(Toc::from_json(&out).unwrap(), toc);
        n += 1;
    }
    assert!(n >= 30, "only {n} toc.json files");
}

#[test]
fn entries_agree_with_the_oracle_listing() {
    for dir in vector_dirs() {
        let (Ok(toc), Ok(ls)) = (
            fs::read(dir.join("toc.json")),
            fs::read_to_string(dir.join("ls.jsonl")),
        ) else {
            continue;
        };
        let toc = Toc::from_json(&toc).unwrap();
        let lines: Vec<serde_json::Value> = ls
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), toc.entries.len(), "{}", name(&dir));
        for (i, (e, l)) in toc.entries.iter().zip(&lines).enumerate() {
            let ctx = format!("{} entry {i} {:?}", name(&dir), e.name);
            let s = |k: &str| l[k].as_str().unwrap_or_else(|| panic!("{ctx}: {k}"));
            let n = |k: &str| l[k].as_i64().unwrap_or_else(|| panic!("{ctx}: {k}"));
            assert_eq!(e.name, s("name"), "{ctx}");
            assert_eq!(
                Some(e.entry_type),
                EntryType::from_json_str(s("type")),
                "{ctx}"
            );
            assert_eq!(e.size, n("size"), "{ctx}");
            assert_eq!(e.offset, n("offset"), "{ctx}");
            assert_eq!(e.chunk_offset, n("chunkOffset"), "{ctx}");
            assert_eq!(e.chunk_size, n("chunkSize"), "{ctx}");
            assert_eq!(e.chunk_digest, s("chunkDigest"), "{ctx}");
            assert_eq!(e.digest, s("digest"), "{ctx}");
            assert_eq!(e.mode, n("mode"), "{ctx}");
            assert_eq!(e.uid, n("uid"), "{ctx}");
            assert_eq!(e.gid, n("gid"), "{ctx}");
            assert_eq!(e.user_name, s("uname"), "{ctx}");
            assert_eq!(e.group_name, s("gname"), "{ctx}");
            assert_eq!(e.modtime, s("modtime"), "{ctx}");
            assert_eq!(e.link_name, s("linkName"), "{ctx}");
            assert_eq!(e.dev_major, n("devMajor"), "{ctx}");
            assert_eq!(e.dev_minor, n("devMinor"), "{ctx}");
            let xattrs = l["xattrs"].as_object().unwrap();
            assert_eq!(xattrs.len(), e.xattrs.len(), "{ctx}");
            for (k, v) in xattrs {
                use base64::Engine as _;
                let want = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap();
                assert_eq!(e.xattrs.get(k), Some(&want), "{ctx}: xattr {k}");
            }
        }
    }
}

#[test]
fn special_names_and_xattrs_of_the_edge_vector() {
    let bytes = fs::read(vectors_dir().join("edge-gzip-default/toc.json")).unwrap();
    let toc = Toc::from_json(&bytes).unwrap();
    let names: Vec<&str> = toc.entries.iter().map(|e| e.name.as_str()).collect();
    for want in [
        "special/quote\"back\\slash.txt",
        "special/html<&>.txt",
        "special/u2028\u{2028}sep",
    ] {
        assert!(names.contains(&want), "{want:?} missing");
    }
    assert!(names.iter().any(|n| n.contains('\t')), "tab name");
    assert!(names.iter().any(|n| n.contains('\n')), "newline name");
    let file = toc
        .entries
        .iter()
        .find(|e| e.name == "xattrs/file")
        .unwrap();
    assert_eq!(
        file.xattrs["security.capability"],
        [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(file.xattrs["user.empty"], b"");
    assert_eq!(
        file.xattrs["user.unicode"],
        "\u{fc}n\u{ef}c\u{f6}d\u{e9} \u{2713}".as_bytes()
    );
}

#[test]
fn every_modtime_in_the_vectors_round_trips() {
    let mut seen = std::collections::BTreeSet::new();
    for dir in vector_dirs() {
        let Ok(bytes) = fs::read(dir.join("toc.json")) else {
            continue;
        };
        for e in Toc::from_json(&bytes).unwrap().entries {
            if e.modtime.is_empty() {
                assert_eq!(e.mtime(), None);
                continue;
            }
            let secs = e
                .mtime()
                .unwrap_or_else(|| panic!("{}: {:?}", name(&dir), e.modtime));
            assert_eq!(format_modtime(secs), e.modtime);
            assert_eq!(parse_rfc3339(&e.modtime), Some(secs));
            seen.insert(e.modtime);
        }
    }
    // The edge input has negative, epoch+fraction and far-future (2^33+1) times.
    assert!(
        seen.iter()
            .any(|m| m.starts_with("19") && m < &"1970".to_string()),
        "{seen:?}"
    );
    assert!(seen.contains("2242-03-16T12:56:33Z"), "{seen:?}");
    assert!(seen.len() >= 4, "{seen:?}");
}

#[test]
fn every_footer_hex_parses_and_reserialises() {
    let mut n = 0;
    for dir in vector_dirs() {
        let m = manifest(&dir);
        let Some(hex_str) = m["footerHex"].as_str() else {
            continue;
        };
        let bytes = hex::decode(hex_str).unwrap();
        let footer = Footer::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", name(&dir)));
        let zstd = m["options"].to_string().contains("zstd") || name(&dir).contains("zstd");
        match footer {
            Footer::Estargz { .. } => assert_eq!(bytes.len(), 51),
            Footer::ZstdChunked { .. } => assert!(zstd && bytes.len() == 48),
            other => panic!("{}: unexpected {other:?}", name(&dir)),
        }
        assert_eq!(footer.to_bytes(), bytes, "{}", name(&dir));
        n += 1;
    }
    assert!(n >= 30);
}

#[test]
fn every_stored_blob_tail_parses_and_locates_its_toc() {
    let mut n = 0;
    for dir in vector_dirs() {
        let Ok(blob) = fs::read(dir.join("blob.esgz")) else {
            continue;
        };
        let toc_json = fs::read(dir.join("toc.json")).unwrap();
        let blob_size = blob.len() as u64;
        let tail = &blob[blob.len().saturating_sub(Footer::MAX_SIZE)..];
        let footer = Footer::parse(tail).unwrap_or_else(|e| panic!("{}: {e}", name(&dir)));
        // Parsing only the footer's own bytes gives the same answer.
        assert_eq!(
            Footer::parse(&blob[blob.len() - footer.size()..]).unwrap(),
            footer
        );
        let range = footer.toc_range(blob_size).unwrap().unwrap();
        let stored = &blob[range.start as usize..range.end as usize];
        let json = match footer {
            Footer::Estargz { .. } => {
                // One gzip member holding a tar whose first entry is stargz.index.json.
                let mut tar = Vec::new();
                flate2::read::GzDecoder::new(stored)
                    .read_to_end(&mut tar)
                    .unwrap();
                assert_eq!(&tar[..17], b"stargz.index.json");
                let size = usize::from_str_radix(
                    std::str::from_utf8(&tar[124..135])
                        .unwrap()
                        .trim_end_matches('\0'),
                    8,
                )
                .unwrap();
                tar[512..512 + size].to_vec()
            }
            Footer::ZstdChunked {
                toc_offset,
                toc_compressed_size,
                toc_uncompressed_size,
            } => {
                let start = toc_offset as usize;
                assert_eq!(&blob[start - 8..start - 4], &[0x50, 0x2a, 0x4d, 0x18]);
                let frame_len = u32::from_le_bytes(blob[start - 4..start].try_into().unwrap());
                assert_eq!(u64::from(frame_len), toc_compressed_size);
                let json = zstd::decode_all(stored).unwrap();
                assert_eq!(json.len() as u64, toc_uncompressed_size);
                json
            }
            other => panic!("{}: unexpected {other:?}", name(&dir)),
        };
        assert_eq!(json, toc_json, "{}", name(&dir));
        n += 1;
    }
    assert!(n >= 25, "only {n} blobs");
}

#[test]
fn truncated_and_corrupted_blob_tails_are_rejected() {
    let blob = fs::read(vectors_dir().join("edge-gzip-default/blob.esgz")).unwrap();
    let zblob = fs::read(vectors_dir().join("edge-zstd-default/blob.esgz")).unwrap();
    for b in [&blob, &zblob] {
        // Cutting any number of final bytes (up to the largest footer) breaks every footer.
        for cut in 1..=Footer::MAX_SIZE {
            let t = &b[..b.len() - cut];
            let tail = &t[t.len().saturating_sub(Footer::MAX_SIZE)..];
            assert!(Footer::parse(tail).is_err(), "cut {cut}");
        }
    }
    // A TOC offset pointing past the footer is caught by toc_range, naming the values.
    let f = Footer::Estargz {
        toc_offset: blob.len() as u64,
    };
    let e = f.toc_range(blob.len() as u64).unwrap_err().to_string();
    assert!(e.contains(&format!("TOC offset {}", blob.len())), "{e}");
    assert!(e.contains(&format!("footer at {}", blob.len() - 51)), "{e}");
}
