//! `estargz image convert` with real components: OCI layouts written here, Debian's
//! `docker-registry` on a free loopback port, `skopeo` to push source images and to pull
//! converted ones back, the Go reference reader (`esgz-oracle verify`) on every converted
//! layer, and `ctr-remote image convert --estargz --oci` (stargz-snapshotter, with a private
//! containerd) for images converted by the reference tool that this crate must read.
//!
//! Under CI a missing tool fails the test; elsewhere the test skips with a message.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

use common::{busybox_layer, gzip, sha256, tar_layer, Entry};
use estargz_testkit::prereq;
use serde_json::{json, Value};

const TOC: &str = "containerd.io/snapshot/stargz/toc.digest";
const USIZE: &str = "io.containers.estargz.uncompressed-size";
const GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn estargz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(args)
        .output()
        .unwrap()
}

/// `estargz image convert ... --json`, which must succeed; returns its JSON.
fn convert(src: &str, dst: &str, extra: &[&str]) -> Value {
    let mut args = vec!["image", "convert", src, dst, "--json"];
    if !extra.contains(&"--threads") {
        args.extend(["--threads", "2"]);
    }
    args.extend_from_slice(extra);
    let o = estargz(&args);
    assert!(
        o.status.success(),
        "estargz {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn actions(report: &Value) -> Vec<(String, bool)> {
    report["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["layers"].as_array().unwrap())
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["written"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A small second layer: a directory, text files, a 300 KiB file of hashed bytes (several
/// chunks with `--chunk-size 65536`), a symlink.
fn app_layer(tag: &str) -> Vec<u8> {
    let mut big = Vec::new();
    let mut block = sha256(tag.as_bytes()).into_bytes();
    while big.len() < 300 << 10 {
        block = sha256(&block).into_bytes();
        big.extend_from_slice(&block);
    }
    tar_layer(&[
        Entry::Dir("etc/"),
        Entry::File(
            "etc/hello.txt",
            format!("hello {tag}\n").into_bytes(),
            0o644,
        ),
        Entry::Dir("app/"),
        Entry::File("app/data.bin", big, 0o644),
        Entry::File("app/empty", Vec::new(), 0o600),
        Entry::Symlink("app/link", "data.bin"),
    ])
}

/// An image to put into a layout: layer blobs with their media types, and the tars.
struct SrcImage {
    layers: Vec<(String, Vec<u8>)>,
    tars: Vec<Vec<u8>>,
    arch: &'static str,
}

impl SrcImage {
    /// busybox as gzip, the app layer as an uncompressed tar.
    fn new(arch: &'static str) -> SrcImage {
        let bb = busybox_layer();
        let app = app_layer(arch);
        SrcImage {
            layers: vec![
                (GZ.into(), gzip(&bb)),
                ("application/vnd.oci.image.layer.v1.tar".into(), app.clone()),
            ],
            tars: vec![bb, app],
            arch,
        }
    }
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let d = sha256(data);
    let p = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    d
}

/// Writes the image's blobs, config and manifest into the layout; returns the manifest's
/// descriptor (not yet in index.json).
fn put_image(dir: &Path, img: &SrcImage) -> Value {
    let mut descs = Vec::new();
    for (mt, blob) in &img.layers {
        descs.push(json!({"mediaType": mt, "digest": put_blob(dir, blob), "size": blob.len()}));
    }
    let diff_ids: Vec<String> = img.tars.iter().map(|t| sha256(t)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": img.arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test layer 1"}, {"created_by": "test layer 2"}],
        "x-unknown-field": {"kept": true},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put_blob(dir, &config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put_blob(dir, &manifest), "size": manifest.len(),
        "platform": {"os": "linux", "architecture": img.arch},
    })
}

fn write_index(dir: &Path, entries: &[Value]) {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": entries});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A layout with one single-platform image tagged `latest`.
fn single_layout(dir: &Path, img: &SrcImage) {
    let mut d = put_image(dir, img);
    d.as_object_mut().unwrap().remove("platform");
    d["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    write_index(dir, &[d]);
}

/// A layout whose tag `multi` names an index of amd64 and arm64 images (and an attestation
/// entry with platform unknown/unknown, which conversion leaves out).
fn multi_layout(dir: &Path, imgs: &[&SrcImage], attestation: bool) {
    let mut entries: Vec<Value> = imgs.iter().map(|i| put_image(dir, i)).collect();
    if attestation {
        let att = put_blob(dir, b"not an image");
        entries.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": att, "size": 12, "platform": {"os": "unknown", "architecture": "unknown"}}),
        );
    }
    let index = serde_json::to_vec(&json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}))
    .unwrap();
    let d = json!({"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": put_blob(dir, &index), "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}});
    write_index(dir, &[d]);
}

fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let data = std::fs::read(dir.join("blobs/sha256").join(&digest[7..])).unwrap();
    assert_eq!(sha256(&data), digest, "blob {digest} of {}", dir.display());
    data
}

/// The digest of what `tag` names in the layout.
fn tagged(dir: &Path, tag: &str) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {index}"))
        .clone()
}

/// Checks one converted image manifest in a layout against the source tars: OCI media types,
/// annotations, our reader and the Go reader verify each layer against its annotated TOC
/// digest, DiffIDs and uncompressed sizes match the decompressed blobs, every source file
/// reads back identically, unknown config fields are kept.
fn check_image(dir: &Path, manifest_digest: &str, tars: &[Vec<u8>], oracle: &Path) {
    let m: Value = serde_json::from_slice(&read_blob(dir, manifest_digest)).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config: Value =
        serde_json::from_slice(&read_blob(dir, m["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(
        config["x-unknown-field"]["kept"], true,
        "unknown config fields are kept"
    );
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), tars.len());
    for (i, (l, tar)) in layers.iter().zip(tars).enumerate() {
        assert_eq!(l["mediaType"], GZ, "layer {i}");
        let toc = l["annotations"][TOC]
            .as_str()
            .unwrap_or_else(|| panic!("layer {i}: {l}"));
        let digest = l["digest"].as_str().unwrap();
        let blob = read_blob(dir, digest);
        assert_eq!(l["size"], blob.len());
        // DiffID and uncompressed size of the converted layer.
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][i],
            sha256(&plain),
            "layer {i} diff id"
        );
        assert_eq!(
            l["annotations"][USIZE],
            plain.len().to_string(),
            "layer {i}"
        );
        // Our reader, against the annotated TOC digest: the source's files.
        let files = assert_layer_matches(blob.clone(), toc, tar, &format!("layer {i}"));
        assert!(files > 0);
        // The Go reference reader.
        let path = dir.join("blobs/sha256").join(&digest[7..]);
        let o = Command::new(oracle)
            .arg("verify")
            .arg(&path)
            .arg(toc)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "esgz-oracle verify layer {i}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Opens `blob` with this crate's reader against TOC digest `toc`, verifies every chunk, and
/// checks that every regular file of `tar` reads back identically (`what` names the layer in
/// failures). Returns the number of files compared.
fn assert_layer_matches(blob: Vec<u8>, toc: &str, tar: &[u8], what: &str) -> usize {
    let reader = estargz::Reader::open_with(
        blob,
        estargz::OpenOptions {
            expected_toc_digest: Some(toc.parse().unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    reader.verify().unwrap();
    let mut files = 0;
    let mut ar = tar::Archive::new(tar);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut want = Vec::new();
        e.read_to_end(&mut want).unwrap();
        let mut got = Vec::new();
        reader
            .open_file(&path)
            .unwrap_or_else(|err| panic!("{what}: {path}: {err}"))
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == want, "{what}: {path} differs");
        files += 1;
    }
    files
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("estargz-image-")
        .tempdir()
        .unwrap()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn oci_to_oci_converts_verifies_reuses_and_is_deterministic() {
    let Some(oracle) = prereq::require_oracle() else {
        return;
    };
    if prereq::require_command("busybox", "busybox-static").is_none() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    let img = SrcImage::new("amd64");
    single_layout(&src, &img);
    let out = t.path().join("out");
    let r = convert(
        &format!("oci:{}", p(&src)),
        &format!("oci:{}:esgz", p(&out)),
        &["--chunk-size", "65536"],
    );
    let digest = r["digest"].as_str().unwrap().to_owned();
    assert_eq!(r["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(tagged(&out, "esgz")["digest"], digest.as_str());
    assert_eq!(
        actions(&r),
        vec![("converted".into(), true), ("converted".into(), true)]
    );
    check_image(&out, &digest, &img.tars, &oracle);

    // The same input and flags into a fresh layout: the same digests.
    let out2 = t.path().join("out2");
    let r2 = convert(
        &format!("oci:{}", p(&src)),
        &format!("oci:{}:esgz", p(&out2)),
        &["--chunk-size", "65536", "--threads", "1"],
    );
    assert_eq!(r2["digest"], digest.as_str());
    assert_eq!(r2["manifests"], r["manifests"]);
    // Into the same layout again: nothing new written.
    let r3 = convert(
        &format!("oci:{}", p(&src)),
        &format!("oci:{}:esgz", p(&out)),
        &["--chunk-size", "65536"],
    );
    assert_eq!(r3["digest"], digest.as_str());
    assert!(actions(&r3).iter().all(|(_, written)| !written), "{r3}");

    // Converting the converted image: every layer is reused, nothing is rebuilt, and the
    // manifest is the same.
    let again = t.path().join("again");
    let r4 = convert(
        &format!("oci:{}:esgz", p(&out)),
        &format!("oci:{}", p(&again)),
        &["--chunk-size", "65536"],
    );
    assert_eq!(
        actions(&r4),
        vec![("reused".into(), true), ("reused".into(), true)]
    );
    assert_eq!(r4["digest"], digest.as_str());
    check_image(&again, &digest, &img.tars, &oracle);
    // --force rebuilds them (the input now holds the landmark and TOC entries, so the blobs
    // differ) and each still verifies.
    let forced = t.path().join("forced");
    let r5 = convert(
        &format!("oci:{}:esgz", p(&out)),
        &format!("oci:{}", p(&forced)),
        &["--force"],
    );
    assert!(actions(&r5).iter().all(|(a, _)| a == "converted"), "{r5}");
    let m: Value =
        serde_json::from_slice(&read_blob(&forced, r5["digest"].as_str().unwrap())).unwrap();
    for l in m["layers"].as_array().unwrap() {
        let blob = read_blob(&forced, l["digest"].as_str().unwrap());
        let reader = estargz::Reader::open_with(
            blob,
            estargz::OpenOptions {
                expected_toc_digest: Some(l["annotations"][TOC].as_str().unwrap().parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        reader.verify().unwrap();
    }

    // An annotated layer that is not eStargz is rebuilt, and the report says why.
    let fake = t.path().join("fake");
    let mut d = put_image(&fake, &img);
    let mut m: Value =
        serde_json::from_slice(&read_blob(&fake, d["digest"].as_str().unwrap())).unwrap();
    m["layers"][0]["annotations"] = json!({TOC: sha256(b"bogus")});
    let mb = serde_json::to_vec(&m).unwrap();
    d["digest"] = json!(put_blob(&fake, &mb));
    d["size"] = json!(mb.len());
    d["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    write_index(&fake, &[d]);
    let r6 = convert(
        &format!("oci:{}", p(&fake)),
        &format!("oci:{}:esgz", p(&out)),
        &["--chunk-size", "65536"],
    );
    let l0 = &r6["manifests"][0]["layers"][0];
    assert_eq!(l0["action"], "converted");
    assert!(l0["notReused"].as_str().is_some(), "{l0}");
    // The stale TOC digest annotation was replaced: same output as from the clean source.
    assert_eq!(r6["digest"], digest.as_str());
}

#[test]
fn zstd_chunked_layers_and_bad_arguments() {
    if prereq::require_command("busybox", "busybox-static").is_none() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    let img = SrcImage::new("amd64");
    single_layout(&src, &img);
    let out = t.path().join("out");
    // The build flags reach the builder: etc/hello.txt is prioritised in the layer that has
    // it (the other layer does not, which --allow-missing-prioritized accepts).
    let prio = t.path().join("prio.txt");
    std::fs::write(&prio, "etc/hello.txt\n").unwrap();
    let r = convert(
        &format!("oci:{}", p(&src)),
        &format!("oci:{}", p(&out)),
        &[
            "--zstd-chunked",
            "--prioritized-files",
            &p(&prio),
            "--allow-missing-prioritized",
        ],
    );
    let m: Value = serde_json::from_slice(&read_blob(&out, r["digest"].as_str().unwrap())).unwrap();
    let config: Value =
        serde_json::from_slice(&read_blob(&out, m["config"]["digest"].as_str().unwrap())).unwrap();
    for (i, l) in m["layers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let blob = read_blob(&out, l["digest"].as_str().unwrap());
        let plain = zstd::decode_all(&blob[..]).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][i], sha256(&plain));
        let reader = estargz::Reader::open_with(
            blob,
            estargz::OpenOptions {
                expected_toc_digest: Some(l["annotations"][TOC].as_str().unwrap().parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        reader.verify().unwrap();
        let toc: Value = serde_json::from_slice(&reader.toc_json().unwrap()).unwrap();
        let names: Vec<&str> = toc["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let pos = |n: &str| names.iter().position(|x| *x == n);
        if i == 1 {
            let (hello, landmark, data) = (
                pos("etc/hello.txt").unwrap(),
                pos(".prefetch.landmark").unwrap(),
                pos("app/data.bin").unwrap(),
            );
            assert!(hello < landmark && landmark < data, "{names:?}");
        }
        let mut hello = String::new();
        if i == 1 {
            reader
                .open_file("etc/hello.txt")
                .unwrap()
                .read_to_string(&mut hello)
                .unwrap();
            assert_eq!(hello, "hello amd64\n");
        }
    }
    // An eStargz layer is not "already converted" when zstd:chunked is asked for, and the
    // other way round.
    let r2 = convert(
        &format!("oci:{}", p(&out)),
        &format!("oci:{}:gz", p(&out)),
        &[],
    );
    assert!(actions(&r2).iter().all(|(a, _)| a == "converted"), "{r2}");

    for (args, want) in [
        (vec!["oci:/nonexistent-dir", "oci:/tmp/x"], "no index.json"),
        (vec!["busybox", "oci:/tmp/x"], "expected oci:DIR"),
        (
            vec![&format!("oci:{}:nosuchtag", p(&src)) as &str, "oci:/tmp/x"],
            "no image tagged \"nosuchtag\"",
        ),
    ] {
        let mut a = vec!["image", "convert"];
        a.extend(args.iter().map(|s| s as &str));
        let o = estargz(&a);
        assert_eq!(o.status.code(), Some(1), "{a:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{a:?}: {err}");
    }
}

#[test]
fn multi_platform_index_all_platforms_and_platform() {
    let Some(oracle) = prereq::require_oracle() else {
        return;
    };
    if prereq::require_command("busybox", "busybox-static").is_none() {
        return;
    }
    let t = tmp();
    let src = t.path().join("src");
    let amd = SrcImage::new("amd64");
    let arm = SrcImage::new("arm64");
    multi_layout(&src, &[&amd, &arm], true);
    let out = t.path().join("out");
    let r = convert(
        &format!("oci:{}:multi", p(&src)),
        &format!("oci:{}:all", p(&out)),
        &["--all-platforms"],
    );
    assert_eq!(r["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(
        r["skipped"].as_array().unwrap().len(),
        1,
        "the attestation is left out"
    );
    // The busybox layer is shared: converted once, reused for the second image.
    assert_eq!(
        actions(&r),
        vec![
            ("converted".into(), true),
            ("converted".into(), true),
            ("reused".into(), false),
            ("converted".into(), true)
        ]
    );
    let index: Value =
        serde_json::from_slice(&read_blob(&out, r["digest"].as_str().unwrap())).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let mut by_arch = BTreeMap::new();
    for (e, img) in entries.iter().zip([&amd, &arm]) {
        assert_eq!(e["platform"]["architecture"], img.arch);
        assert_eq!(e["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        check_image(&out, e["digest"].as_str().unwrap(), &img.tars, &oracle);
        by_arch.insert(img.arch, e["digest"].as_str().unwrap().to_owned());
    }

    // --platform picks one image: the same manifest as in the all-platforms index.
    let r2 = convert(
        &format!("oci:{}:multi", p(&src)),
        &format!("oci:{}:arm", p(&out)),
        &["--platform", "linux/arm64"],
    );
    assert_eq!(
        r2["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(r2["digest"], by_arch["arm64"].as_str());
    assert_eq!(tagged(&out, "arm")["digest"], by_arch["arm64"].as_str());
    // The default is linux/amd64.
    let r3 = convert(
        &format!("oci:{}:multi", p(&src)),
        &format!("oci:{}:default", p(&out)),
        &[],
    );
    assert_eq!(r3["digest"], by_arch["amd64"].as_str());
    // The all-platforms index again: identical.
    let r4 = convert(
        &format!("oci:{}:multi", p(&src)),
        &format!("oci:{}:all", p(&out)),
        &["--all-platforms"],
    );
    assert_eq!(r4["digest"], r["digest"]);
    // A platform the index does not have.
    let o = estargz(&[
        "image",
        "convert",
        &format!("oci:{}:multi", p(&src)),
        &format!("oci:{}:x", p(&out)),
        "--platform",
        "linux/s390x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

fn skopeo(args: &[&str]) {
    let o = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn registry_docker_to_docker_and_oci_to_docker() {
    let Some(oracle) = prereq::require_oracle() else {
        return;
    };
    for (c, pkg) in [
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("busybox", "busybox-static"),
    ] {
        if prereq::require_command(c, pkg).is_none() {
            return;
        }
    }
    let t = tmp();
    let reg = common::Registry::start(t.path());
    let host = reg.addr.clone();
    let src = t.path().join("src");
    let img = SrcImage::new("amd64");
    single_layout(&src, &img);

    // The reference: oci -> oci.
    let ref_out = t.path().join("ref");
    let reference = convert(
        &format!("oci:{}", p(&src)),
        &format!("oci:{}", p(&ref_out)),
        &[],
    );
    let want = reference["digest"].as_str().unwrap();

    // skopeo pushes the source as a docker schema 2 image (docker media types, gzip layers:
    // skopeo compresses the uncompressed one).
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("oci:{}:latest", p(&src)),
        &format!("docker://{host}/src/app:v1"),
    ]);
    let r = convert(
        &format!("docker://{host}/src/app:v1"),
        &format!("docker://{host}/dst/app:esgz"),
        &["--plain-http"],
    );
    assert!(
        actions(&r)
            .iter()
            .all(|a| a == &("converted".to_string(), true)),
        "{r}"
    );
    assert!(r["manifests"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["sourceMediaType"]
            .as_str()
            .unwrap()
            .starts_with("application/vnd.docker.")));
    // Pull the result with skopeo (keeps the manifest bytes) and check it as a layout.
    let pulled = t.path().join("pulled");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/dst/app:esgz"),
        &format!("oci:{}:esgz", p(&pulled)),
    ]);
    let d = r["digest"].as_str().unwrap();
    assert_eq!(tagged(&pulled, "esgz")["digest"], d);
    check_image(&pulled, d, &img.tars, &oracle);

    // oci -> docker gives exactly what oci -> oci gave.
    let r2 = convert(
        &format!("oci:{}", p(&src)),
        &format!("docker://{host}/direct/app:esgz"),
        &[],
    );
    assert_eq!(r2["digest"], want);
    let pulled2 = t.path().join("pulled2");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/direct/app:esgz"),
        &format!("oci:{}:esgz", p(&pulled2)),
    ]);
    check_image(&pulled2, want, &img.tars, &oracle);

    // A multi-platform index pushed by skopeo, converted registry to registry with
    // --all-platforms, pulled back with skopeo: every image verifies.
    let multi = t.path().join("multi");
    let arm = SrcImage::new("arm64");
    multi_layout(&multi, &[&img, &arm], false);
    skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", p(&multi)),
        &format!("docker://{host}/src/multi:v1"),
    ]);
    let rm = convert(
        &format!("docker://{host}/src/multi:v1"),
        &format!("docker://{host}/dst/multi:esgz"),
        &["--all-platforms"],
    );
    assert_eq!(rm["mediaType"], "application/vnd.oci.image.index.v1+json");
    let pulled_multi = t.path().join("pulled-multi");
    skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{host}/dst/multi:esgz"),
        &format!("oci:{}:esgz", p(&pulled_multi)),
    ]);
    assert_eq!(tagged(&pulled_multi, "esgz")["digest"], rm["digest"]);
    let index: Value =
        serde_json::from_slice(&read_blob(&pulled_multi, rm["digest"].as_str().unwrap())).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (e, i) in entries.iter().zip([&img, &arm]) {
        assert_eq!(e["platform"]["architecture"], i.arch);
        check_image(
            &pulled_multi,
            e["digest"].as_str().unwrap(),
            &i.tars,
            &oracle,
        );
    }

    // Converting the converted image into another repository of the same registry: every
    // layer is reused and mounted across repositories (nothing uploaded), same manifest.
    let r3 = convert(
        &format!("docker://{host}/dst/app:esgz"),
        &format!("docker://{host}/again/app:esgz"),
        &[],
    );
    assert_eq!(
        actions(&r3),
        vec![("reused".into(), false), ("reused".into(), false)]
    );
    assert_eq!(r3["digest"], d);
    // The same conversion again into the first destination: same digest, nothing written,
    // and the registry saw no blob upload.
    let uploads_before = blob_uploads(t.path());
    assert!(uploads_before > 0);
    let r4 = convert(
        &format!("docker://{host}/src/app:v1"),
        &format!("docker://{host}/dst/app:esgz"),
        &[],
    );
    assert_eq!(r4["digest"], d);
    assert!(actions(&r4).iter().all(|(_, w)| !w), "{r4}");
    assert_eq!(r4["manifests"][0]["configWritten"], false);
    assert_eq!(
        blob_uploads(t.path()),
        uploads_before,
        "a rerun uploads nothing"
    );
}

/// Blob uploads (`PUT`/`PATCH` of an upload session) in the registry's access log so far.
fn blob_uploads(dir: &Path) -> usize {
    let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
    log.lines()
        .filter(|l| {
            (l.contains("\"PUT /v2/") || l.contains("\"PATCH /v2/"))
                && l.contains("/blobs/uploads/")
        })
        .count()
}

/// `ctr-remote image convert --estargz --oci` (the reference converter, on a private
/// containerd's content store) converts an image; the converted layers read and verify with
/// this crate, and `estargz image convert` reuses every one of them.
#[test]
fn ctr_remote_converted_images_are_read_and_reused() {
    if !prereq::require_root("ctr-remote needs a containerd, which runs as root") {
        return;
    }
    for (c, pkg) in [
        ("containerd", "containerd"),
        ("ctr-remote", "stargz-snapshotter"),
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("busybox", "busybox-static"),
    ] {
        if prereq::require_command(c, pkg).is_none() {
            return;
        }
    }
    let t = tempfile::Builder::new()
        .prefix("estargz-ctr-")
        .tempdir_in("/tmp")
        .unwrap();
    let reg = common::Registry::start(t.path());
    let host = reg.addr.clone();
    let src = t.path().join("src");
    let img = SrcImage::new("amd64");
    single_layout(&src, &img);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:latest", p(&src)),
        &format!("docker://{host}/plain/app:v1"),
    ]);
    // The snapshotter socket is never used: conversion works on the content store only.
    let ctd = common::Containerd::start(t.path(), &t.path().join("no-snapshotter.sock"));
    let ctr_remote_out = |args: &[&str]| {
        let o = Command::new("ctr-remote")
            .arg("--address")
            .arg(&ctd.address)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ctr-remote {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let ctr_remote = |args: &[&str]| {
        ctr_remote_out(args);
    };

    // Our images, eStargz and zstd:chunked: containerd pulls and unpacks them with its
    // default snapshotter (which checks every layer against the config's DiffIDs), and
    // ctr-remote reads each layer's TOC and finds the TOC digest of our annotation.
    for (tag, extra, flag) in [
        ("esgz", &[][..], None),
        ("zstd", &["--zstd-chunked"][..], Some("--zstdchunked")),
    ] {
        let ours = format!("{host}/ours/app:{tag}");
        let r = convert(
            &format!("oci:{}", p(&src)),
            &format!("docker://{ours}"),
            extra,
        );
        ctr_remote(&["images", "pull", "--plain-http", &ours]);
        for l in r["manifests"][0]["layers"].as_array().unwrap() {
            let mut args = vec!["images", "get-toc-digest"];
            args.extend(flag);
            args.push(l["digest"].as_str().unwrap());
            assert_eq!(
                ctr_remote_out(&args),
                l["tocDigest"].as_str().unwrap(),
                "ctr-remote get-toc-digest {tag}"
            );
        }
    }

    let plain = format!("{host}/plain/app:v1");
    let conv = format!("{host}/ctr/app:esgz");
    ctr_remote(&["images", "pull", "--plain-http", &plain]);
    ctr_remote(&["images", "convert", "--estargz", "--oci", &plain, &conv]);
    ctr_remote(&["images", "push", "--plain-http", &conv]);

    // Our conversion of the reference tool's image: every layer is already eStargz.
    let out = t.path().join("out");
    let r = convert(
        &format!("docker://{conv}"),
        &format!("oci:{}", p(&out)),
        &[],
    );
    assert_eq!(
        actions(&r),
        vec![("reused".into(), true), ("reused".into(), true)],
        "{r}"
    );
    // Read the reference tool's layers with this crate: the same files as the source.
    let m: Value = serde_json::from_slice(&read_blob(&out, r["digest"].as_str().unwrap())).unwrap();
    for (l, tar) in m["layers"].as_array().unwrap().iter().zip(&img.tars) {
        let digest = l["digest"].as_str().unwrap();
        assert_layer_matches(
            read_blob(&out, digest),
            l["annotations"][TOC].as_str().unwrap(),
            tar,
            digest,
        );
    }
}
