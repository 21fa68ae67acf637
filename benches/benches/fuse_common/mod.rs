//! Shared by the `fuse_*` benchmarks: prerequisites, cached fixtures, mounting, timing and a
//! Markdown table of medians.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz_fuse::{LocalLayer, LocalOptions, Mount, MountOptions};

/// Root, /dev/fuse and the Go oracle (to build the layers); otherwise prints why and `None`.
pub fn prerequisites() -> Option<PathBuf> {
    if !estargz_testkit::is_root() || !Path::new("/dev/fuse").exists() {
        println!("skipped: FUSE benchmarks need root and /dev/fuse");
        return None;
    }
    let oracle = estargz_testkit::oracle();
    if oracle.is_none() {
        println!("skipped: build the Go oracle first (sh tools/esgz-oracle/build.sh target/tools)");
    }
    oracle
}

/// `<target>/bench-data/fuse`: fixtures kept between runs.
pub fn data_dir() -> PathBuf {
    let d = estargz_testkit::target_dir()
        .join("bench-data")
        .join("fuse");
    std::fs::create_dir_all(&d).expect("bench data dir");
    d
}

/// Makes `name.tar` with `write` (once) and `name.esgz` from it with the oracle (once).
pub fn layer(oracle: &Path, name: &str, write: impl FnOnce(&Path)) -> (PathBuf, PathBuf) {
    let dir = data_dir();
    let tar = dir.join(format!("{name}.tar"));
    let blob = dir.join(format!("{name}.esgz"));
    if !tar.exists() {
        let tmp = dir.join(format!("{name}.tar.tmp"));
        write(&tmp);
        std::fs::rename(&tmp, &tar).expect("rename tar");
    }
    if !blob.exists() {
        let tmp = dir.join(format!("{name}.esgz.tmp"));
        let st = Command::new(oracle)
            .arg("build")
            .arg(&tar)
            .arg(&tmp)
            .status()
            .expect("run esgz-oracle");
        assert!(st.success(), "esgz-oracle build {name}");
        std::fs::rename(&tmp, &blob).expect("rename blob");
    }
    (tar, blob)
}

/// `tar -x` of `tar` into a fresh directory.
pub fn unpack(tar: &Path) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("esgz-bench-native-")
        .tempdir()
        .expect("tempdir");
    let st = Command::new("tar")
        .args(["--same-owner", "-p", "-x", "-f"])
        .arg(tar)
        .arg("-C")
        .arg(d.path())
        .status()
        .expect("tar");
    assert!(st.success());
    d
}

/// A mount on a fresh directory, unmounted on drop.
pub struct Mounted {
    pub mount: Option<Mount>,
    pub dir: tempfile::TempDir,
    pub layer: Arc<LocalLayer>,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = m.unmount();
        }
    }
}

pub fn mount(blob: &Path, cache: Option<&Path>, tweak: impl FnOnce(&mut MountOptions)) -> Mounted {
    let layer = Arc::new(
        LocalLayer::open(
            blob,
            LocalOptions {
                cache_dir: cache.map(Path::to_path_buf),
                ..LocalOptions::default()
            },
        )
        .expect("open layer"),
    );
    let mut opts = MountOptions {
        auto_unmount: false,
        ..MountOptions::default()
    };
    tweak(&mut opts);
    let dir = tempfile::Builder::new()
        .prefix("esgz-bench-mnt-")
        .tempdir()
        .expect("tempdir");
    let mount = Mount::new(Arc::clone(&layer), dir.path(), &opts).expect("mount");
    Mounted {
        mount: Some(mount),
        dir,
        layer,
    }
}

/// Median of `runs` timings of `f`.
pub fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..runs).map(|_| f()).collect();
    t.sort();
    t[t.len() / 2]
}

pub fn time(f: impl FnOnce()) -> Duration {
    let s = Instant::now();
    f();
    s.elapsed()
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Prints a Markdown table.
pub fn table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    println!("\n### {title}\n");
    println!("| {} |", header.join(" | "));
    println!(
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}
