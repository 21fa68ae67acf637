//! The read-side commands of the `estargz` binary on remote blobs: a layer pushed to a real
//! `docker-registry` on a loopback port, named `HOST:PORT/REPO@sha256:DIGEST` or by its plain
//! `http://` blob URL, read lazily (the registry's access log counts the bytes it served).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Image, Registry};
use estargz_testkit::vectors::Vector;

const VECTOR: &str = "edge-gzip-chunk64k";

fn estargz(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(args)
        .output()
        .expect("run estargz")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A registry holding the vector's blob under `test/layer`; returns it, the blob's digest
/// and size, and the vector.
fn registry_with_vector(dir: &Path) -> Option<(Registry, String, u64, Vector)> {
    estargz_testkit::prereq::require_command("docker-registry", "docker-registry")?;
    let v = Vector::load(VECTOR).expect("vector");
    let blob = std::fs::read(v.blob_path().expect("stored blob")).expect("read blob");
    let digest = common::sha256(&blob);
    let size = blob.len() as u64;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": common::sha256(b"{}"),
            "size": 2
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": size
        }]
    }))
    .expect("manifest json");
    let image = Image {
        blobs: [
            (digest.clone(), blob),
            (common::sha256(b"{}"), b"{}".to_vec()),
        ]
        .into_iter()
        .collect(),
        manifest_digest: common::sha256(&manifest),
        manifest,
        layers: vec![digest.clone()],
    };
    let reg = Registry::start(dir);
    reg.push("test/layer", "v1", &image);
    Some((reg, digest, size, v))
}

fn served(reg: &Registry, dir: &Path, digest: &str) -> u64 {
    reg.blob_bytes_served(dir).get(digest).copied().unwrap_or(0)
}

#[test]
fn cat_info_ls_verify_on_a_registry_blob() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((reg, digest, size, v)) = registry_with_vector(tmp.path()) else {
        return;
    };
    let toc_digest = v.manifest.expected.toc_digest.clone().expect("toc digest");
    let blob = format!("{}/test/layer@{digest}", reg.addr);

    // Every stored file of the vector reads back with its recorded sha256. Each `cat` is one
    // process: it opens the layer with one 1 MiB suffix request (footer + TOC) and then
    // fetches only the chunks of its file (64 KiB chunks in this vector).
    let mut checked = 0;
    let mut before = 0;
    for f in v.manifest.files.iter().filter(|f| f.is_final && f.size > 0) {
        let o = estargz(&[
            "cat",
            "--plain-http",
            "--toc-digest",
            &toc_digest,
            &blob,
            &f.name,
        ]);
        assert!(o.status.success(), "cat {}: {}", f.name, stderr(&o));
        assert_eq!(common::sha256(&o.stdout), f.sha256, "{}", f.name);
        let now = served(&reg, tmp.path(), &digest);
        assert!(now > before, "the registry log shows the reads");
        assert!(
            now - before <= (1 << 20) + (128 << 10) && (now - before) * 2 < size,
            "cat {} fetched {} of {size} bytes",
            f.name,
            now - before
        );
        before = now;
        checked += 1;
        if checked == 3 {
            break;
        }
    }
    assert_eq!(checked, 3, "the vector has regular files to read");

    let o = estargz(&["info", "--json", "--plain-http", &blob]);
    assert!(o.status.success(), "info: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("info json");
    assert_eq!(j["tocDigest"].as_str(), Some(toc_digest.as_str()));
    assert_eq!(j["blobSize"], size);

    let o = estargz(&["ls", "--plain-http", &blob]);
    assert!(o.status.success(), "ls: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nodotslash/file.txt"));

    let o = estargz(&["verify", "--plain-http", "--toc-digest", &toc_digest, &blob]);
    assert!(o.status.success(), "verify: {}", stderr(&o));

    // A wrong TOC digest is refused, naming what was expected.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let o = estargz(&["info", "--plain-http", "--toc-digest", &wrong, &blob]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("TOC"), "{}", stderr(&o));
}

#[test]
fn cat_over_a_plain_http_url() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some((reg, digest, size, v)) = registry_with_vector(tmp.path()) else {
        return;
    };
    let toc_digest = v.manifest.expected.toc_digest.clone().expect("toc digest");
    let url = format!("http://{}/v2/test/layer/blobs/{digest}", reg.addr);
    let f = v
        .manifest
        .files
        .iter()
        .find(|f| f.name == "nodotslash/file.txt")
        .expect("file in vector");
    let o = estargz(&["cat", "--toc-digest", &toc_digest, &url, &f.name]);
    assert!(o.status.success(), "cat: {}", stderr(&o));
    assert_eq!(common::sha256(&o.stdout), f.sha256);
    let fetched = served(&reg, tmp.path(), &digest);
    assert!(
        fetched > 0 && fetched * 2 < size,
        "fetched {fetched} of {size} bytes"
    );

    // A registry that is not there: an error naming the URL, exit 1.
    drop(reg);
    let o = estargz(&["cat", "--toc-digest", &toc_digest, &url, &f.name]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("127.0.0.1"), "{}", stderr(&o));
}
