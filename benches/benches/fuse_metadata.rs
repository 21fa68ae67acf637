//! `find` + `stat` of every entry of a 30,000-entry layer: FUSE mount against the same tree
//! on local disk.
//!
//! `cargo bench -p estargz-benches --bench fuse_metadata` (as root, with the Go oracle built).
//!
//! "cold" is the first walk of a fresh mount (every lookup and readdir reaches the daemon);
//! "warm" is a second walk (the kernel's dentry and attribute caches answer: the layer is
//! immutable, so the filesystem gives long timeouts). Local disk is always warm here (the
//! page cache cannot be dropped on these machines).

#[path = "fuse_common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const ENTRIES: usize = 30_000;

/// `find DIR -printf ...`: readdir plus an lstat of every entry.
fn find_stat(dir: &Path) -> Duration {
    time(|| {
        let st = Command::new("find")
            .arg(dir)
            .args(["-printf", "%i %s %m %U %G %T@ %n\\n"])
            .stdout(Stdio::null())
            .status()
            .expect("find");
        assert!(st.success());
    })
}

fn count(dir: &Path) -> usize {
    let out = Command::new("find").arg(dir).output().expect("find");
    out.stdout.iter().filter(|&&b| b == b'\n').count()
}

fn main() {
    let Some(oracle) = prerequisites() else {
        return;
    };
    let (tar, blob) = layer(&oracle, "wide-30k", |p| {
        let f = std::fs::File::create(p).expect("create");
        estargz_testkit::synth::wide_tree_to(std::io::BufWriter::new(f), ENTRIES).expect("tar");
    });
    let native = unpack(&tar);
    find_stat(native.path());
    let runs = 5;
    let local = median(runs, || find_stat(native.path()));
    let cold = median(runs, || {
        let m = mount(&blob, None, |_| {});
        find_stat(m.path())
    });
    let m = mount(&blob, None, |_| {});
    assert_eq!(
        count(m.path()),
        count(native.path()),
        "same number of entries"
    );
    let first = find_stat(m.path());
    let s = m.mount.as_ref().map(|m| m.stats()).unwrap_or_default();
    println!(
        "first walk of a fresh mount: {first:?}, {} lookups reached the daemon",
        s.lookups
    );
    let warm = median(runs, || find_stat(m.path()));
    let row = |name: &str, t: Duration| {
        vec![
            name.to_string(),
            format!("{:.1} ms", t.as_secs_f64() * 1e3),
            format!("{:.2}x", t.as_secs_f64() / local.as_secs_f64()),
        ]
    };
    table(
        &format!(
            "find + stat of {} entries (median of {runs})",
            count(native.path())
        ),
        &["tree", "time", "vs local disk"],
        &[
            row("local disk", local),
            row("FUSE, cold (fresh mount)", cold),
            row("FUSE, warm", warm),
        ],
    );
}
