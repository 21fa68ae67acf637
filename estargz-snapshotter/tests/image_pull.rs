//! `estargz image pull` (the project's own lazy-pull client, no Go tool) against real
//! components: containerd 1.6 with the daemon as a proxy snapshotter, a `docker-registry`, and
//! `ctr run` reading the pulled image.
//!
//! In the first test the eStargz layer is built by the Go reference implementation
//! (`esgz-oracle`) and served to the daemon from a local directory (`[resolver] local_dirs`);
//! in the second the image is converted by `estargz image convert` in the registry and the
//! daemon reads it from there. Needs root, /dev/fuse, containerd, runc, docker-registry,
//! busybox-static and the oracle: under CI a missing one fails, elsewhere the test skips.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

mod common;

use std::process::Command;

use common::*;

fn pull(env: &Env, reference: &str) -> serde_json::Value {
    image_pull(&env.ctd().address, reference)
}

fn layer<'a>(report: &'a serde_json::Value, digest: &str) -> &'a serde_json::Value {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["digest"] == digest)
        .unwrap_or_else(|| panic!("no layer {digest} in {report}"))
}

#[test]
fn image_pull_mounts_estargz_layers_lazily_and_pulls_the_others() {
    if !prerequisites(CONTAINERD_PREREQS) || !estargz_testkit::prereq::require_fuse() {
        return;
    }
    let Some(oracle) = estargz_testkit::require_oracle() else {
        return;
    };
    let (mut env, blobs) = env_with_local_blobs();
    let dir = env.dir().to_path_buf();

    let payload = "pulled lazily by estargz image pull\n".repeat(3000);
    let tar = tar_layer(&[
        Entry::Dir("etc/"),
        Entry::File("etc/greeting.txt", payload.clone().into_bytes(), 0o644),
    ]);
    let base = Layer::gzip(&busybox_layer());
    let lazy = Layer::estargz(&oracle, &tar, &dir);
    let lazy_digest = sha256(&lazy.blob);
    let base_digest = sha256(&base.blob);
    std::fs::write(blobs.join(&lazy_digest[7..]), &lazy.blob).unwrap();
    let img = image(&[base.clone(), lazy.clone()]);
    env.registry().push("test/pull", "v1", &img);
    let reference = format!("{}/test/pull:v1", env.registry().addr);

    let report = pull(&env, &reference);
    assert_eq!(report["manifest"], img.manifest_digest.as_str(), "{report}");
    // The busybox layer has no TOC digest: pulled normally, all of it downloaded.
    let b = layer(&report, &base_digest);
    assert_eq!(b["remote"], false, "{report}");
    assert_eq!(b["downloaded"], base.blob.len() as u64, "{report}");
    // The eStargz layer: the snapshotter mounted it, nothing downloaded by the client.
    let l = layer(&report, &lazy_digest);
    assert_eq!(l["remote"], true, "{report}");
    assert_eq!(l["downloaded"], 0, "{report}");

    // The daemon agrees: one remote layer, one local layer that says why.
    let lazy_status = env.daemon().layer_status(&lazy_digest);
    assert_eq!(lazy_status["mode"], "remote", "{lazy_status}");
    let base_status = env.daemon().layer_status(&base_digest);
    assert_eq!(base_status["mode"], "local", "{base_status}");
    assert_eq!(base_status["fallback"], "no-toc-digest", "{base_status}");

    // containerd has the image and runs it on the snapshotter.
    let images = env.ctd().ctr_ok(&["images", "ls", "-q"]);
    assert!(images.lines().any(|l| l == reference), "{images}");
    let id = unique("pulled");
    let out = env.ctd().ctr_ok(&run_args(
        &reference,
        &id,
        &["sh", "-c", "sha256sum /etc/greeting.txt; ls /bin/busybox"],
    ));
    assert_eq!(
        out,
        format!(
            "{}  /etc/greeting.txt\n/bin/busybox\n",
            &sha256(payload.as_bytes())[7..]
        )
    );

    // A second pull finds every snapshot and downloads nothing.
    let again = pull(&env, &reference);
    for l in again["layers"].as_array().unwrap() {
        assert_eq!(l["remote"], true, "{again}");
        assert_eq!(l["downloaded"], 0, "{again}");
    }

    // A reference that does not exist: a clear error, exit 1.
    let o = Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(["image", "pull", "--plain-http", "--address"])
        .arg(&env.ctd().address)
        .arg(format!("{}/test/missing:v1", env.registry().addr))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("test/missing"), "{err}");
}

/// The end-to-end path with no Go tool and no local copy: a plain image (busybox and a
/// data layer, gzip) is pushed, converted in the registry with `estargz image convert`, pulled
/// lazily with `estargz image pull`; the daemon fetches the layers from the registry itself,
/// and only what the container reads.
#[test]
fn registry_layers_are_mounted_from_the_registry_and_fetched_on_demand() {
    if !prerequisites(CONTAINERD_PREREQS) || !estargz_testkit::prereq::require_fuse() {
        return;
    }
    // No prefetch and no background fetch: what the registry serves is what was read. The
    // chunk cache is bounded to 2 MiB. Mounts live in the daemon itself (the other test
    // covers the FUSE manager).
    let mut env = env(concat!(
        "noprefetch = true\nno_background_fetch = true\nfuse_manager.enable = false\n",
        "[cache]\nmax_size_bytes = 2097152\n"
    ));
    let dir = env.dir().to_path_buf();

    // 12 MiB of data the container never reads (hex digests: about 6 MiB compressed), one
    // small file it does.
    let mut big = Vec::with_capacity(12 << 20);
    let mut block = sha256(b"registry").into_bytes();
    while big.len() < 12 << 20 {
        block = sha256(&block).into_bytes();
        big.extend_from_slice(&block);
    }
    let tar = tar_layer(&[
        Entry::Dir("etc/"),
        Entry::File(
            "etc/hello.txt",
            b"served from the registry\n".to_vec(),
            0o644,
        ),
        Entry::Dir("data/"),
        Entry::File("data/big.bin", big.clone(), 0o644),
    ]);
    let src = image(&[Layer::gzip(&busybox_layer()), Layer::gzip(&tar)]);
    env.registry().push("test/src", "v1", &src);
    let addr = env.registry().addr.clone();
    let o = Command::new("timeout")
        .arg("300")
        .arg(env!("CARGO_BIN_EXE_estargz"))
        .args(["image", "convert", "--plain-http", "--json"])
        .arg(format!("docker://{addr}/test/src:v1"))
        .arg(format!("docker://{addr}/test/registry:v1"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "estargz image convert: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let reference = format!("{addr}/test/registry:v1");

    // Both converted layers are mounted lazily, nothing downloaded by the client.
    let report = pull(&env, &reference);
    let layers = report["layers"].as_array().unwrap().clone();
    assert_eq!(layers.len(), 2, "{report}");
    for l in &layers {
        assert_eq!(l["remote"], true, "{report}");
        assert_eq!(l["downloaded"], 0, "{report}");
    }
    let lazy_digest = layers[1]["digest"].as_str().unwrap().to_owned();
    for l in &layers {
        let s = env.daemon().layer_status(l["digest"].as_str().unwrap());
        assert_eq!(s["mode"], "remote", "{s}");
    }
    // containerd prepares the layers one after another; the daemon opened the data layer
    // (footer and TOC) while it mounted busybox, and its mount took that one.
    let logs = env.daemon().logs();
    let mounted: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("layer mounted"))
        .collect();
    assert!(
        mounted
            .iter()
            .any(|l| l.contains(&lazy_digest) && l.contains("opened_ahead=true")),
        "the data layer was not opened ahead: {mounted:#?}"
    );
    assert!(
        mounted
            .iter()
            .any(|l| l.contains(layers[0]["digest"].as_str().unwrap())
                && l.contains("opened_ahead=false")),
        "{mounted:#?}"
    );
    // Layer sizes from the converted manifest.
    let (code, _, body) = http(
        &addr,
        "GET",
        "/v2/test/registry/manifests/v1",
        &[("Accept", "application/vnd.oci.image.manifest.v1+json")],
        &[],
    )
    .unwrap();
    assert_eq!(code, 200);
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let blob_size = |digest: &str| -> u64 {
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["digest"] == digest)
            .and_then(|l| l["size"].as_u64())
            .unwrap_or_else(|| panic!("no layer {digest} in {manifest}"))
    };

    let id = unique("registry");
    let out = env
        .ctd()
        .ctr_ok(&run_args(&reference, &id, &["cat", "/etc/hello.txt"]));
    assert_eq!(out, "served from the registry\n");
    let served_all = env.registry().blob_bytes_served(&dir);
    let served = served_all.get(&lazy_digest).copied().unwrap_or(0);
    let size = blob_size(&lazy_digest);
    // The whole image: busybox is read whole (the container runs it), the data layer barely.
    let image_size: u64 = layers
        .iter()
        .map(|l| blob_size(l["digest"].as_str().unwrap()))
        .sum();
    let image_served: u64 = layers
        .iter()
        .map(|l| {
            served_all
                .get(l["digest"].as_str().unwrap())
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert!(
        image_served * 2 < image_size,
        "the registry served {image_served} of the image's {image_size} bytes"
    );
    assert!(served > 0, "the daemon fetched from the registry");
    // Opening the layer is one 1 MiB suffix request (footer and TOC); the read is one small
    // chunk.
    assert!(
        served * 4 < size && served < (1 << 20) + (256 << 10),
        "the registry served {served} of the layer's {size} bytes"
    );

    // Reading the whole 12 MiB file goes through the bounded cache: right bytes, and the
    // cache directory stays within its bound (plus one 4 MiB chunk being written).
    let id = unique("big");
    let out = env
        .ctd()
        .ctr_ok(&run_args(&reference, &id, &["sha256sum", "/data/big.bin"]));
    assert_eq!(out, format!("{}  /data/big.bin\n", &sha256(&big)[7..]));
    let cache = env.daemon().root.join("cache/chunks");
    let used = dir_size(&cache);
    assert!(used > 0, "the chunk cache in {} is used", cache.display());
    assert!(
        used <= (2 << 20) + (4 << 20),
        "the chunk cache holds {used} bytes, bound 2 MiB"
    );
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
