//! Remote (lazy) layers end to end with real components: containerd 1.6 pulls with
//! `ctr-remote images rpull` (Debian `stargz-snapshotter`, which sends the remote-snapshot
//! labels), the daemon mounts the eStargz layer with FUSE in its FUSE manager and answers
//! `AlreadyExists`, `ctr run` reads files through overlayfs on top of it.
//!
//! The eStargz layer is built by the Go reference implementation (`esgz-oracle`) and found by
//! digest in a local directory (`[resolver] local_dirs`; image_pull.rs covers layers read
//! from the registry). Needs root, /dev/fuse, containerd, runc, docker-registry, busybox-static,
//! stargz-snapshotter and the oracle: under CI a missing one fails, elsewhere the test skips.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// What these tests need beyond [`CONTAINERD_PREREQS`]: the reference lazy-pull client.
const PREREQS: &[(&str, &str)] = &[("ctr-remote", "stargz-snapshotter")];

/// `etc/hello.txt`, 20 small files and a 3 MiB file of pseudo-random bytes.
fn data_layer() -> (Vec<u8>, Vec<u8>) {
    let mut big = Vec::with_capacity(3 << 20);
    let mut block = sha256(b"seed").into_bytes();
    while big.len() < 3 << 20 {
        block = sha256(&block).into_bytes();
        big.extend_from_slice(&block);
    }
    big.truncate(3 << 20);
    let mut entries = vec![
        Entry::Dir("etc/"),
        Entry::File(
            "etc/hello.txt",
            b"hello from a lazy layer\n".to_vec(),
            0o644,
        ),
        Entry::Dir("data/"),
        Entry::File("data/big.bin", big.clone(), 0o644),
    ];
    for i in 0..20 {
        let name: &'static str = Box::leak(format!("data/f{i}.txt").into_boxed_str());
        entries.push(Entry::File(
            name,
            format!("file {i}\n").repeat(200).into_bytes(),
            0o644,
        ));
    }
    (tar_layer(&entries), big)
}

fn rpull(env: &Env, reference: &str) {
    let o = std::process::Command::new("timeout")
        .args(["120", "ctr-remote", "--address"])
        .arg(&env.ctd().address)
        .args([
            "images",
            "rpull",
            "--plain-http",
            "--snapshotter",
            "estargz",
            reference,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "rpull: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn estargz_layer_mounts_lazily_reads_verified_and_survives_restarts() {
    if !(prerequisites(CONTAINERD_PREREQS)
        && prerequisites(PREREQS)
        && estargz_testkit::prereq::require_fuse())
    {
        return;
    }
    let Some(oracle) = estargz_testkit::require_oracle() else {
        return;
    };
    let (mut env, blobs) = env_with_local_blobs();
    let dir = env.dir().to_path_buf();
    let (tar, big) = data_layer();
    let base = Layer::gzip(&busybox_layer());
    let lazy = Layer::estargz(&oracle, &tar, &dir);
    let lazy_digest = sha256(&lazy.blob);
    // the daemon finds the blob by digest in a local directory (before asking the registry)
    let lazy_path = blobs.join(&lazy_digest[7..]);
    std::fs::write(&lazy_path, &lazy.blob).unwrap();
    let img = image(&[base.clone(), lazy.clone()]);
    env.registry().push("test/lazy", "v1", &img);
    let reference = format!("{}/test/lazy:v1", env.registry().addr);
    rpull(&env, &reference);

    // the eStargz layer is remote (FUSE under the daemon's root), the plain one says why not
    let s = env.daemon().layer_status(&lazy_digest);
    assert_eq!(s["mode"], "remote", "{s}");
    let s = env.daemon().layer_status(&sha256(&base.blob));
    assert_eq!(s["mode"], "local", "{s}");
    assert_eq!(s["fallback"], "no-toc-digest", "{s}");
    let fuse_mounts: Vec<String> = mounts_under(&dir)
        .into_iter()
        .filter(|m| {
            std::fs::read_to_string("/proc/self/mounts")
                .unwrap()
                .contains(&format!("{m} fuse"))
        })
        .collect();
    assert_eq!(fuse_mounts.len(), 1, "{:?}", mounts_under(&dir));

    // a container reads from both layers through overlayfs on the FUSE mount
    let id = unique("lazy");
    let out = env.ctd().ctr_ok(&run_args(
        &reference,
        &id,
        &[
            "sh",
            "-c",
            "cat /etc/hello.txt; head -n 1 /data/f3.txt; sha256sum /data/big.bin; ls /bin/busybox",
        ],
    ));
    let want = format!(
        "hello from a lazy layer\nfile 3\n{}  /data/big.bin\n/bin/busybox\n",
        &sha256(&big)[7..]
    );
    assert_eq!(out, want);

    // restart and crash the daemon while a container reads files in a loop: no error
    let reader = {
        let address = env.ctd().address.clone();
        let reference = reference.clone();
        let id = unique("loop");
        std::thread::spawn(move || {
            std::process::Command::new("timeout")
                .args(["120", "ctr", "--address"])
                .arg(&address)
                .args(["run", "--rm", "--snapshotter", "estargz", &reference, &id, "sh", "-c",
                    "e=0; i=0; while [ $i -lt 80 ]; do cat /data/f$((i % 20)).txt > /dev/null || e=$((e+1)); \
                     ls /data > /dev/null || e=$((e+1)); i=$((i+1)); sleep 0.05; done; echo errors=$e"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    env.daemon().restart();
    std::thread::sleep(Duration::from_millis(800));
    env.daemon().proc.kill9();
    env.daemon().restart();
    let o = reader.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "errors=0\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = env.daemon().layer_status(&lazy_digest);
    assert_eq!(s["mode"], "remote", "{s}");
    let id = unique("after");
    let out = env.ctd().ctr_retry(
        &run_args(&reference, &id, &["cat", "/etc/hello.txt"]),
        Duration::from_secs(30),
    );
    assert_eq!(out, "hello from a lazy layer\n");

    // a tampered blob: the TOC still verifies, the damaged file's read fails with EIO
    let bad = lazy.clone();
    let mut tampered = lazy.blob.clone();
    let toc = std::process::Command::new(&oracle)
        .arg("toc")
        .arg(&lazy_path)
        .output()
        .unwrap();
    let toc: serde_json::Value = serde_json::from_slice(&toc.stdout).unwrap();
    let big_entry = toc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "data/big.bin")
        .unwrap();
    let off = big_entry["offset"].as_u64().unwrap() as usize + 1000;
    tampered[off] ^= 0x55;
    // replaced under the same name: the mounted layer keeps its open (good) file, a new mount
    // opens the damaged one
    let bad_path = dir.join("tampered.esgz");
    std::fs::write(&bad_path, &tampered).unwrap();
    std::fs::rename(&bad_path, &lazy_path).unwrap();
    // a different image (another config) so that the layer gets its own snapshot
    let bad_base = Layer::gzip(&tar_layer(&[Entry::Dir("other/")]));
    let img = image(&[base.clone(), bad_base, bad]);
    env.registry().push("test/tampered", "v1", &img);
    let bad_ref = format!("{}/test/tampered:v1", env.registry().addr);
    rpull(&env, &bad_ref);
    let id = unique("tampered");
    let o = env.ctd().ctr(&run_args(
        &bad_ref,
        &id,
        &[
            "sh",
            "-c",
            "cat /etc/hello.txt; cat /data/big.bin > /tmp/out; echo rc=$?; wc -c < /tmp/out",
        ],
    ));
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        out.starts_with("hello from a lazy layer\nrc=1\n"),
        "{out}\n{err}"
    );
    assert!(
        out.trim_end().ends_with("\n0"),
        "no byte of the damaged chunk is served: {out}"
    );
    assert!(
        err.contains("Input/output error") || err.contains("I/O error"),
        "{out}\n{err}"
    );

    // a wrong TOC digest: not mounted, pulled normally, and the status says why
    let mut wrong = lazy.clone();
    wrong.annotations = BTreeMap::from([(
        "containerd.io/snapshot/stargz/toc.digest".to_owned(),
        sha256(b"not the toc"),
    )]);
    let other = Layer::gzip(&tar_layer(&[Entry::Dir("another/")]));
    let img = image(&[base, other, wrong]);
    env.registry().push("test/wrongtoc", "v1", &img);
    let wrong_ref = format!("{}/test/wrongtoc:v1", env.registry().addr);
    rpull(&env, &wrong_ref);
    let status = env.daemon().status_json();
    let fell_back = status["layers"].as_array().unwrap().iter().any(|l| {
        l["digest"] == lazy_digest.as_str() && l["mode"] == "local" && l["fallback"].is_string()
    });
    assert!(fell_back, "{status}");
    let id = unique("wrongtoc");
    let out = env
        .ctd()
        .ctr_ok(&run_args(&wrong_ref, &id, &["cat", "/etc/hello.txt"]));
    assert_eq!(out, "hello from a lazy layer\n");
    assert!(env
        .daemon()
        .metrics_text()
        .contains("estargz_fallbacks_total{kind=\""));
}
