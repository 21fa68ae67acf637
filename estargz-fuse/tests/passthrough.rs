//! FUSE passthrough: once a file's whole verified content is in the local cache, opens are
//! handed to the kernel and reads no longer reach the filesystem (counted). The mount still
//! works as an overlayfs lower layer (stack depth 1).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use estargz_fuse::{LayerSource, LocalOptions};

use common::*;

#[test]
fn cached_files_are_read_through_passthrough() {
    if !fuse_ready() {
        return;
    }
    // Without KEEP_CACHE the kernel drops its page cache at each open, so a read that does
    // not reach the daemon really went to the backing file; with it, the first (cached-mode)
    // open must not stop later opens from using passthrough.
    passthrough_case(false);
    passthrough_case(true);
}

fn passthrough_case(keep_cache: bool) {
    let work = scratch("pt");
    let tar = estargz_testkit::synth::one_big_file(6 << 20, 11);
    let Some((_, blob)) = make_layer(work.path(), "big", &tar) else {
        return;
    };
    let cache = work.path().join("cache");
    let layer = local(
        &blob,
        LocalOptions {
            cache_dir: Some(cache.clone()),
            ..LocalOptions::default()
        },
    );
    let (name, node) = {
        let mut found = None;
        layer.index().walk(|p, n| {
            if layer.index().attr(n).size == 6 << 20 {
                found = Some((p.to_owned(), n));
            }
        });
        found.expect("the big file")
    };
    let mut opts = test_options();
    opts.fs.passthrough = true;
    opts.fs.keep_cache = keep_cache;
    let m = mount_source(layer.clone(), &opts);
    let path = m.path().join(&name);

    let first = std::fs::read(&path).expect("first read");
    assert_eq!(first.len(), 6 << 20);
    let after_first = m.mount().stats();
    assert!(
        after_first.reads > 0,
        "the first read is served by the daemon"
    );
    assert_eq!(after_first.passthrough_opens, 0);

    // Reading every chunk makes the layer cache the file in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !layer.is_cached(node) {
        assert!(Instant::now() < deadline, "the file was never cached");
        std::thread::sleep(Duration::from_millis(20));
    }

    for _ in 0..2 {
        let again = std::fs::read(&path).expect("passthrough read");
        assert!(again == first, "passthrough serves the same bytes");
    }
    let s = m.mount().stats();
    assert_eq!(s.passthrough_opens, 2, "{s:?}");
    assert_eq!(
        s.reads, after_first.reads,
        "passthrough reads must not reach the daemon: {s:?}"
    );

    // Stack depth 1: overlayfs accepts the passthrough mount as a lower layer.
    let other = scratch("other-lower");
    std::fs::write(other.path().join("hello"), b"hi").expect("write");
    let merged = scratch("merged");
    let opts = format!("lowerdir={}:{}", m.path().display(), other.path().display());
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(merged.path())
        .status()
        .expect("mount overlay");
    assert!(st.success(), "overlay on a passthrough mount");
    let via_overlay = std::fs::read(merged.path().join(&name));
    let _ = Command::new("umount").arg(merged.path()).status();
    assert!(via_overlay.expect("read through overlay") == first);
}

#[test]
fn without_passthrough_reads_reach_the_daemon() {
    if !fuse_ready() {
        return;
    }
    let work = scratch("nopt");
    let tar = estargz_testkit::synth::one_big_file(1 << 20, 12);
    let Some((_, blob)) = make_layer(work.path(), "f", &tar) else {
        return;
    };
    let layer = local(
        &blob,
        LocalOptions {
            cache_dir: Some(work.path().join("cache")),
            ..LocalOptions::default()
        },
    );
    let mut opts = test_options();
    opts.fs.keep_cache = false;
    let m = mount_source(layer, &opts);
    let file = std::fs::read_dir(m.path())
        .expect("readdir")
        .map(|e| e.expect("dirent").path())
        .find(|p| p.is_file())
        .expect("a file");
    let a = std::fs::read(&file).expect("read");
    let r1 = m.mount().stats().reads;
    std::thread::sleep(Duration::from_millis(300));
    let b = std::fs::read(&file).expect("read again");
    assert!(a == b);
    let s = m.mount().stats();
    assert!(s.reads > r1, "{s:?}");
    assert_eq!(s.passthrough_opens, 0);
}
