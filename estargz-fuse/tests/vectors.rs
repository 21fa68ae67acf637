//! Every conformance vector with a stored blob, mounted and compared with `tar -x` of the
//! vector's input tar (as overlayfs would see that unpacked layer: whiteouts as char 0:0,
//! opaque directories with the opaque xattr).
//!
//! What the format cannot carry, and so is not compared:
//! - sub-second mtimes (the TOC's `modtime` has second precision), atime and ctime;
//! - directory sizes (filesystem specific);
//! - the root directory's own attributes (`tar -x` applies a root entry to an existing
//!   directory; the index synthesises a root when there is none, pinned by the core's tests);
//! - the mtime of directories the tar does not list (implicit parents: `tar -x` stamps them
//!   with the extraction time, the index with 0).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use estargz_fuse::{LayerSource, LocalOptions, OpaqueXattr};
use estargz_testkit::Vector;

use common::*;

/// Paths where a vector's mount legitimately differs from `tar -x` of its input, and why.
/// Everything else in the vector must match.
fn known_difference(vector: &Vector, path: &Path) -> Option<&'static str> {
    let p = path.to_string_lossy();
    let input = &vector.manifest.input.reference;
    Some(match (vector.name.as_str(), &*p) {
        (_, "dup/file.txt" | "dup/hard-to-dup") if input.ends_with("edge.tar") => {
            "a hardlink to a name that a later entry replaces: tar keeps the old inode, the TOC \
             reader resolves hardlinks by name to the final entry (as the Go reader does)"
        }
        ("q-abs-dotdot-noncanonical", _) => {
            "tar -x refuses `..` members; the index cleans them into the root"
        }
        ("q-dup-dir-then-file", "thing" | "thing/inner.txt") => {
            "tar -x cannot replace a directory with a file; the index keeps the later entry"
        }
        ("q-hardlink-forward-ref", "later.txt" | "hl-forward") => {
            "tar -x cannot make a hardlink to a later member; the index can"
        }
        ("q-invalid-utf8-name", _) if p.starts_with("bad-") => {
            "the TOC is JSON: the builder stores non-UTF-8 names with replacement characters"
        }
        ("q-reserved-names", ".prefetch.landmark" | ".no.prefetch.landmark") => {
            "root landmark names are reserved by the format and hidden by the mount"
        }
        ("q-reserved-names", "stargz.index.json") => {
            "the TOC's own name is reserved: the builder drops the member"
        }
        _ => return None,
    })
}

/// The index's implicit directories: `tar -x` creates them with the extraction time as mtime.
fn implicit_dirs(layer: &dyn LayerSource) -> Vec<PathBuf> {
    let index = layer.index();
    let mut out = Vec::new();
    index.walk(|p, n| {
        if index.is_implicit(n) {
            out.push(PathBuf::from(p));
        }
    });
    out
}

fn compare(
    name: &str,
    blob: &Path,
    input: &Path,
    known: &dyn Fn(&Path) -> Option<&'static str>,
) -> Result<(), String> {
    let layer = local(blob, LocalOptions::default());
    let unpacked = scratch("unpack");
    let tar_err = extract(input, unpacked.path());
    let mut expected = as_overlay_lower(snapshot(unpacked.path()), b"trusted.overlay.opaque");
    let mut opts = test_options();
    opts.fs.opaque_xattr = OpaqueXattr::Trusted;
    let m = mount_source(layer.clone(), &opts);
    let mut actual = snapshot(m.path());
    for t in [&mut expected, &mut actual] {
        t.remove(Path::new(""));
        for p in implicit_dirs(&*layer) {
            if let Some(e) = t.get_mut(&p) {
                e.mtime = None;
            }
        }
    }
    let mut unexpected = Vec::new();
    for (path, text) in diff(&expected, &actual) {
        match known(&path) {
            Some(why) => eprintln!("{name}: {path:?} differs as expected: {why}"),
            None => unexpected.push(text),
        }
    }
    if unexpected.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name}: {} differences (tar said {tar_err:?}):\n{}",
            unexpected.len(),
            unexpected.join("\n")
        ))
    }
}

#[test]
fn every_stored_vector_matches_tar_x_of_its_input() {
    if !fuse_ready() {
        return;
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for v in Vector::all().expect("vectors") {
        let (Some(blob), Ok(Some(input))) = (v.blob_path(), v.input_path()) else {
            continue;
        };
        // The core refuses some blobs the Go builder accepts (e.g. a hardlink whose target is
        // missing); there is nothing to mount.
        if estargz_fuse::LocalLayer::open(&blob, LocalOptions::default()).is_err() {
            eprintln!("{}: the core refuses this blob; not mounted", v.name);
            continue;
        }
        checked += 1;
        match compare(&v.name, &blob, &input, &|p| known_difference(&v, p)) {
            Ok(()) => eprintln!("{}: ok", v.name),
            Err(e) => failures.push(e),
        }
    }
    assert!(checked >= 20, "only {checked} vectors were mounted");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn inode_numbers_are_stable_across_mounts() {
    if !fuse_ready() {
        return;
    }
    let v = Vector::load("edge-gzip-default").expect("vector");
    let blob = v.blob_path().expect("blob");
    let inos = || -> BTreeMap<PathBuf, u64> {
        use std::os::unix::fs::MetadataExt;
        let m = mount_source(local(&blob, LocalOptions::default()), &test_options());
        snapshot(m.path())
            .keys()
            .map(|p| {
                (
                    p.clone(),
                    std::fs::symlink_metadata(m.path().join(p))
                        .expect("stat")
                        .ino(),
                )
            })
            .collect()
    };
    let a = inos();
    assert_eq!(a.get(Path::new("")), Some(&1), "the root is inode 1");
    assert_eq!(a, inos());
}

#[test]
fn generated_layers_match_tar_x() {
    if !fuse_ready() {
        return;
    }
    use estargz_testkit::synth;
    let work = scratch("gen");
    let layers: [(&str, Vec<u8>, &[&str]); 4] = [
        ("every-entry-type", synth::every_entry_type(), &[]),
        (
            "every-entry-type-64k",
            synth::every_entry_type(),
            &["--chunk-size", "65536"],
        ),
        ("wide-tree", synth::wide_tree(3000), &[]),
        (
            "small-files-zstd",
            synth::many_small_files(300, 7),
            &["--zstdchunked"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, tar, args) in layers {
        let t = work.path().join(format!("{name}.tar"));
        std::fs::write(&t, &tar).expect("write tar");
        let Some(blob) = build_esgz(&t, &work.path().join(format!("{name}.esgz")), args) else {
            return;
        };
        if let Err(e) = compare(name, &blob, &t, &|_| None) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
