//! The daemon as containerd's only snapshotter, end to end with real components: Debian's
//! containerd 1.6 + runc, `docker-registry`, images pulled with `ctr` and containers run with
//! `ctr run --snapshotter estargz`.
//!
//! Needs root and the Debian packages containerd, runc, docker-registry, busybox-static
//! (scripts/test.sh installs them): under CI a missing one fails, elsewhere the tests skip.

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

mod common;

use std::time::Duration;

use common::*;

#[test]
fn normal_image_pulls_and_runs_like_overlayfs() {
    if !prerequisites(CONTAINERD_PREREQS) {
        return;
    }
    let env = env("");
    let image = busybox_image();
    env.registry().push("test/busybox", "v1", &image);
    let reference = format!("{}/test/busybox:v1", env.registry().addr);
    let c = env.ctd();
    c.ctr_ok(&[
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "estargz",
        &reference,
    ]);

    // committed layer snapshots, parent chain, usage
    let ls = c.ctr_ok(&["snapshots", "--snapshotter", "estargz", "ls"]);
    let committed: Vec<&str> = ls.lines().filter(|l| l.contains("Committed")).collect();
    assert_eq!(committed.len(), 2, "{ls}");
    let top = committed
        .iter()
        .find(|l| l.split_whitespace().count() == 3)
        .expect("layer with parent");
    let top_key = top.split_whitespace().next().unwrap();
    let usage = c.ctr_ok(&["snapshots", "--snapshotter", "estargz", "usage", top_key]);
    assert!(usage.contains("KiB") || usage.contains("MiB"), "{usage}");

    // a container reads files of both layers and writes to its upper dir
    let id = unique("normal");
    let out = c.ctr_ok(&[
        "run", "--rm", "--snapshotter", "estargz", &reference, &id, "sh", "-c",
        "cat /etc/hello.txt; sha256sum /data/big.bin | head -c 16; echo; echo x > /tmp/w; cat /tmp/w; ls /bin/busybox",
    ]);
    let want_big = &sha256(&image_layer2_big())[7..23];
    assert_eq!(
        out,
        format!("hello from layer 2\n{want_big}\nx\n/bin/busybox\n")
    );

    // views, mounted as containerd's overlayfs snapshotter mounts them: the base layer alone
    // is a read-only bind mount; two layers are a read-only overlay, nearest parent first
    let base = committed
        .iter()
        .find(|l| l.split_whitespace().count() == 2)
        .unwrap();
    let base_key = base.split_whitespace().next().unwrap();
    let view = unique("view");
    let mounts: serde_json::Value = serde_json::from_str(&c.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "estargz",
        "view",
        "--mounts",
        &view,
        base_key,
    ]))
    .unwrap();
    assert_eq!(mounts[0]["Type"], "bind", "{mounts}");
    assert_eq!(
        mounts[0]["Options"],
        serde_json::json!(["ro", "rbind"]),
        "{mounts}"
    );
    remove_view(c, &view);
    let mounts: serde_json::Value = serde_json::from_str(&c.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "estargz",
        "view",
        "--mounts",
        &view,
        top_key,
    ]))
    .unwrap();
    assert_eq!(mounts[0]["Type"], "overlay", "{mounts}");
    let options: Vec<&str> = mounts[0]["Options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        !options.iter().any(|o| o.starts_with("upperdir=")),
        "{mounts}"
    );
    let lower = options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap();
    let dirs: Vec<&str> = lower.split(':').collect();
    assert_eq!(dirs.len(), 2, "{mounts}");
    assert!(
        std::path::Path::new(dirs[0]).join("etc/hello.txt").exists(),
        "nearest parent first: {mounts}"
    );
    remove_view(c, &view);

    // metrics and status served
    let metrics = env.daemon.as_ref().unwrap().metrics_text();
    assert!(
        metrics.contains("estargz_snapshot_operations_total{operation=\"prepare\",result=\"ok\"}"),
        "{metrics}"
    );
    let status = env.daemon.as_ref().unwrap().status_json();
    let layers = status["layers"].as_array().unwrap();
    assert!(layers.iter().all(|l| l["mode"] == "local"), "{status}");

    // removing the image and cleaning up leaves no snapshots and no directories
    c.ctr_ok(&["images", "rm", "--sync", &reference]);
    let _ = c.ctr(&["content", "prune", "references"]);
    assert!(
        wait_for(Duration::from_secs(10), || {
            c.ctr_ok(&["snapshots", "--snapshotter", "estargz", "ls"])
                .lines()
                .count()
                <= 1
        }),
        "snapshots left: {}",
        c.ctr_ok(&["snapshots", "--snapshotter", "estargz", "ls"])
    );
    let dirs = std::fs::read_dir(
        env.daemon
            .as_ref()
            .unwrap()
            .root
            .join("snapshotter/snapshots"),
    )
    .unwrap()
    .count();
    assert_eq!(dirs, 0);
}

fn image_layer2_big() -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(b"x").repeat(8192)
}

#[test]
fn crash_and_restart_keep_containerd_consistent() {
    if !prerequisites(CONTAINERD_PREREQS) {
        return;
    }
    let mut env = env("");
    let image = busybox_image();
    env.registry().push("test/busybox", "v1", &image);
    let reference = format!("{}/test/busybox:v1", env.registry().addr);
    env.ctd().ctr_ok(&[
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        "estargz",
        &reference,
    ]);
    let before = env
        .ctd()
        .ctr_ok(&["snapshots", "--snapshotter", "estargz", "ls"]);

    // a container that keeps its snapshot active across the crash
    let id = unique("crash");
    env.ctd().ctr_ok(&[
        "containers",
        "create",
        "--snapshotter",
        "estargz",
        &reference,
        &id,
        "sleep",
        "30",
    ]);
    let with_container = env
        .ctd()
        .ctr_ok(&["snapshots", "--snapshotter", "estargz", "ls"]);
    assert!(with_container.contains(&id), "{with_container}");

    env.daemon().proc.kill9();
    env.daemon().restart();
    let after = env.ctd().ctr_retry(
        &["snapshots", "--snapshotter", "estargz", "ls"],
        Duration::from_secs(30),
    );
    assert_eq!(
        after, with_container,
        "snapshots changed across kill -9 (before pull: {before})"
    );

    // the old container's snapshot still mounts; a new container starts
    env.ctd()
        .ctr_retry(&["tasks", "start", "-d", &id], Duration::from_secs(30));
    env.ctd().ctr_ok(&["tasks", "kill", "-s", "KILL", &id]);
    assert!(wait_for(Duration::from_secs(10), || env
        .ctd()
        .ctr(&["tasks", "rm", &id])
        .status
        .success()));
    let id2 = unique("after");
    let out = env.ctd().ctr_retry(
        &run_args(&reference, &id2, &["cat", "/etc/hello.txt"]),
        Duration::from_secs(30),
    );
    assert_eq!(out, "hello from layer 2\n");

    // a graceful restart too
    env.daemon().restart();
    let id3 = unique("graceful");
    let out = env.ctd().ctr_retry(
        &run_args(&reference, &id3, &["cat", "/etc/hello.txt"]),
        Duration::from_secs(30),
    );
    assert_eq!(out, "hello from layer 2\n");
    env.ctd().ctr_ok(&["containers", "rm", &id]);
}

/// Removes a view made by `ctr snapshots view`. ctr holds no lease on it once the command
/// returns, so containerd's garbage collector may already have removed it: that is fine too.
fn remove_view(c: &common::Containerd, view: &str) {
    let o = c.ctr(&["snapshots", "--snapshotter", "estargz", "rm", view]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() || err.contains("does not exist"),
        "ctr snapshots rm {view} failed: {err}"
    );
}
