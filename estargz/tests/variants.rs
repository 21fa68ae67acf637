//! The blob variants besides plain eStargz (external TOC, legacy stargz) and TOC rewrites
//! (LOC-05, VER-BADTOC, EXT-02 of the conformance matrix), made from the reference vectors.

use std::io::Write;

use estargz::footer::Footer;
use estargz::plan::TocLocation;
use estargz::{Digest, OpenOptions, Reader, Toc};
use estargz_testkit::vectors::Vector;

/// `gzip(tar header "stargz.index.json" + json + padding + 1024 zero bytes)`, as the writers
/// produce the TOC member.
fn gzip_toc_member(json: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("stargz.index.json").expect("path");
    h.set_size(json.len() as u64);
    h.set_mode(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, json).expect("append");
    let tar = tar.into_inner().expect("finish tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// The vector's blob split into (payload, TOC member bytes, TOC JSON).
fn split(name: &str) -> (Vector, Vec<u8>, Vec<u8>, Vec<u8>) {
    let v = Vector::load(name).expect("vector");
    let blob = v.blob().expect("blob");
    let loc = TocLocation::from_tail(blob.len() as u64, &blob[blob.len() - 72..]).expect("footer");
    let r = loc.toc_range.clone().expect("in-blob TOC");
    let payload = blob[..r.start as usize].to_vec();
    let member = blob[r.start as usize..r.end as usize].to_vec();
    let json = v.toc_json().expect("toc.json");
    (v, payload, member, json)
}

fn with_footer(mut payload: Vec<u8>, toc_member: &[u8], footer: Footer) -> Vec<u8> {
    payload.extend_from_slice(toc_member);
    payload.extend(footer.to_bytes());
    payload
}

fn read_all<R: estargz::ReadAt>(r: &Reader<R>, path: &str) -> estargz::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.open_file(path)?.for_each_chunk(0, |d| {
        out.extend_from_slice(d);
        Ok(())
    })?;
    Ok(out)
}

fn expect_files_ok<R: estargz::ReadAt>(r: &Reader<R>, v: &Vector) -> usize {
    let mut n = 0;
    for f in v.manifest.files.iter().filter(|f| f.is_final) {
        let Ok(name) = std::str::from_utf8(f.name_bytes()) else {
            continue;
        };
        if !name.starts_with("sizes/") && !name.starts_with("dup/") {
            continue;
        }
        let data = read_all(r, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(Digest::of(&data).to_string(), f.sha256, "{name}");
        n += 1;
    }
    assert!(n > 5);
    n
}

#[test]
fn external_toc_blob_opens_only_with_its_toc() {
    let (v, payload, member, json) = split("edge-gzip-chunk64k");
    let mut blob = payload.clone();
    blob.extend(Footer::ExternalToc.to_bytes());
    let digest = Digest::of(&json);

    // Without a TOC source: an error that says what to do.
    let err = Reader::open(blob.clone()).expect_err("no TOC");
    assert!(err.to_string().contains("--toc"), "{err}");

    let r = Reader::open_with(
        blob.clone(),
        OpenOptions {
            external_toc: Some(member.clone()),
            expected_toc_digest: Some(digest),
            ..OpenOptions::default()
        },
    )
    .expect("open with external TOC");
    assert_eq!(r.footer(), Footer::ExternalToc);
    assert_eq!(r.location().toc_range, None);
    assert_eq!(r.location().payload_end, payload.len() as u64);
    expect_files_ok(&r, &v);
    r.verify().expect("verify");
    assert_eq!(r.toc_json().expect("toc"), json);

    // The TOC of a different layer: opens, but fails the expected digest.
    let (_, _, other_member, _) = split("edge-gzip-default");
    let err = Reader::open_with(
        blob,
        OpenOptions {
            external_toc: Some(other_member),
            expected_toc_digest: Some(digest),
            ..OpenOptions::default()
        },
    )
    .expect_err("wrong TOC");
    assert!(
        matches!(err, estargz::Error::TocDigestMismatch { .. }),
        "{err}"
    );
}

#[test]
fn legacy_stargz_footer_reads_the_same_blob() {
    let (v, payload, member, json) = split("edge-gzip-default");
    let toc_offset = payload.len() as u64;
    let blob = with_footer(payload, &member, Footer::Legacy { toc_offset });
    let r = Reader::open(blob).expect("open legacy");
    assert_eq!(r.footer(), Footer::Legacy { toc_offset });
    assert_eq!(r.toc_digest(), Digest::of(&json));
    expect_files_ok(&r, &v);
}

#[test]
fn legacy_toc_without_chunk_digests_needs_the_file_digest_or_an_opt_out() {
    // Old stargz TOCs have `digest` but no `chunkDigest`: single-chunk files are verified with
    // the whole-file digest; a multi-chunk file cannot be verified chunk by chunk.
    let (v, payload, _, json) = split("edge-gzip-chunk64k");
    let mut toc = Toc::from_json(&json).expect("toc");
    for e in &mut toc.entries {
        e.chunk_digest.clear();
    }
    let new_json = toc.to_json();
    let toc_offset = payload.len() as u64;
    let blob = with_footer(
        payload,
        &gzip_toc_member(&new_json),
        Footer::Legacy { toc_offset },
    );
    let r = Reader::open(blob.clone()).expect("open");
    // Single chunk: verified by `digest`.
    let small = v
        .manifest
        .files
        .iter()
        .find(|f| f.name == "sizes/one-byte")
        .expect("sizes/one-byte");
    assert_eq!(
        Digest::of(&read_all(&r, "sizes/one-byte").expect("read")).to_string(),
        small.sha256
    );
    assert!(r
        .index()
        .uses_file_digest(r.index().lookup("sizes/one-byte").expect("node")));
    // Several chunks: refused unless verification is turned off.
    let err = read_all(&r, "sizes/4mib+1").expect_err("no chunk digests");
    assert!(matches!(err, estargz::Error::MissingDigest { .. }), "{err}");
    let r = Reader::open_with(
        blob,
        OpenOptions {
            verify_chunks: false,
            ..OpenOptions::default()
        },
    )
    .expect("open unverified");
    let big = v
        .manifest
        .files
        .iter()
        .find(|f| f.name == "sizes/4mib+1")
        .expect("big");
    assert_eq!(
        Digest::of(&read_all(&r, "sizes/4mib+1").expect("read")).to_string(),
        big.sha256
    );
}

#[test]
fn rewritten_toc_still_opens_and_a_bad_rewrite_is_caught() {
    // LOC-05: payload + a re-encoded TOC member + footer opens.
    let (v, payload, _, json) = split("edge-gzip-chunk64k");
    let toc = Toc::from_json(&json).expect("toc");
    let toc_offset = payload.len() as u64;
    let same = with_footer(
        payload.clone(),
        &gzip_toc_member(&toc.to_json()),
        Footer::Estargz { toc_offset },
    );
    let r = Reader::open_with(
        same,
        OpenOptions {
            expected_toc_digest: Some(Digest::of(&json)),
            ..OpenOptions::default()
        },
    )
    .expect("re-encoded TOC keeps its digest");
    expect_files_ok(&r, &v);

    // VER-BADTOC (a): a file's chunk digests removed -> reading it fails.
    let mut bad = toc.clone();
    for e in bad.entries.iter_mut().filter(|e| e.name == "sizes/4mib+1") {
        e.chunk_digest.clear();
    }
    let blob = with_footer(
        payload.clone(),
        &gzip_toc_member(&bad.to_json()),
        Footer::Estargz { toc_offset },
    );
    let r = Reader::open(blob).expect("opens");
    assert!(read_all(&r, "sizes/4mib+1").is_err());
    assert!(r.verify().is_err());

    // VER-BADTOC (b): the last chunk of a file points at another entry's data.
    let mut bad = toc.clone();
    let other = bad
        .entries
        .iter()
        .find(|e| e.name == "sizes/64k")
        .expect("64k")
        .offset;
    let last = bad
        .entries
        .iter_mut()
        .rfind(|e| e.name == "sizes/4mib+1")
        .expect("last chunk");
    last.offset = other;
    let blob = with_footer(
        payload,
        &gzip_toc_member(&bad.to_json()),
        Footer::Estargz { toc_offset },
    );
    match Reader::open(blob) {
        // Offsets must increase in blob order for compressed ranges to be meaningful; either
        // refusing the TOC or failing the read is correct, returning bytes is not.
        Err(e) => assert!(e.to_string().contains("sizes/4mib+1"), "{e}"),
        Ok(r) => {
            let err = read_all(&r, "sizes/4mib+1").expect_err("wrong data");
            assert!(err.is_integrity(), "{err}");
            assert!(r.verify().is_err());
        }
    }

    // A TOC offset past the footer is refused, never a panic.
    let (_, mut blob, member, _) = split("edge-gzip-default");
    let len = (blob.len() + member.len()) as u64;
    blob.extend(member);
    blob.extend(
        Footer::Estargz {
            toc_offset: len + 5,
        }
        .to_bytes(),
    );
    assert!(Reader::open(blob).is_err());
}

#[test]
fn toc_limits_are_enforced() {
    let v = Vector::load("edge-gzip-default").expect("vector");
    let blob = v.blob().expect("blob");
    let tight = |f: &dyn Fn(&mut OpenOptions)| {
        let mut o = OpenOptions::default();
        f(&mut o);
        Reader::open_with(blob.clone(), o).expect_err("limit")
    };
    let e = tight(&|o| o.max_toc_size = 1000);
    assert!(
        matches!(
            e,
            estargz::Error::TocTooLarge {
                what: "uncompressed",
                ..
            }
        ),
        "{e}"
    );
    let e = tight(&|o| o.max_toc_compressed_size = 100);
    assert!(
        matches!(
            e,
            estargz::Error::TocTooLarge {
                what: "compressed",
                ..
            }
        ),
        "{e}"
    );
    let e = tight(&|o| o.max_entries = 10);
    assert!(
        matches!(e, estargz::Error::TooManyEntries { limit: 10 }),
        "{e}"
    );
    let e = tight(&|o| o.max_chunk_size = 1000);
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    // zstd: the limit is checked against the footer before decompressing.
    let z = Vector::load("edge-zstd-default")
        .expect("vector")
        .blob()
        .expect("blob");
    let e = Reader::open_with(
        z,
        OpenOptions {
            max_toc_size: 1000,
            ..OpenOptions::default()
        },
    )
    .expect_err("limit");
    assert!(matches!(e, estargz::Error::TocTooLarge { .. }), "{e}");
}

#[test]
fn truncated_blobs_never_panic() {
    let blob = Vector::load("edge-gzip-chunk64k")
        .expect("v")
        .blob()
        .expect("blob");
    for cut in [
        0,
        1,
        10,
        46,
        47,
        51,
        52,
        100,
        1000,
        blob.len() / 2,
        blob.len() - 1,
    ] {
        let _ = Reader::open(blob[..cut].to_vec());
        let _ = Reader::open(blob[cut..].to_vec());
    }
}
