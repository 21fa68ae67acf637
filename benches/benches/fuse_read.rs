//! FUSE read throughput and latency against the same file on local disk.
//!
//! `cargo bench -p estargz-benches --bench fuse_read` (as root, with the Go oracle built).
//!
//! - sequential read of a cached 100 MiB file (1 MiB reads): local disk, FUSE passthrough,
//!   FUSE without passthrough (every read served by the daemon from its cache file);
//! - random 4 KiB reads on the same cached data: p50 and p99 latency.
//!
//! The page cache cannot be dropped on these machines, so "local disk" and passthrough are
//! warm page-cache reads; the non-passthrough mount opens files without `FOPEN_KEEP_CACHE`, so
//! its reads reach the daemon every time (that is what it measures).

#[path = "fuse_common/mod.rs"]
mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use estargz_fuse::LayerSource;

const SIZE: u64 = 100 << 20;

fn seq(path: &Path) -> Duration {
    let mut buf = vec![0u8; 1 << 20];
    time(|| {
        let mut f = File::open(path).expect("open");
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        assert_eq!(total, SIZE);
    })
}

fn random(path: &Path, n: usize) -> Vec<Duration> {
    let f = File::open(path).expect("open");
    let mut rng = estargz_testkit::synth::SplitMix64::new(42);
    let mut buf = [0u8; 4096];
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let off = rng.below(SIZE / 4096) * 4096;
            time(|| {
                f.read_exact_at(&mut buf, off).expect("pread");
            })
        })
        .collect();
    t.sort();
    t
}

fn main() {
    let Some(oracle) = prerequisites() else {
        return;
    };
    let (tar, blob) = layer(&oracle, "big-100m", |p| {
        let f = File::create(p).expect("create");
        estargz_testkit::synth::one_big_file_to(std::io::BufWriter::new(f), SIZE, 1).expect("tar");
    });
    let native = unpack(&tar);
    let native_file = native.path().join("big.bin");
    let cache = tempfile::tempdir().expect("cache dir");

    let pt = mount(&blob, Some(cache.path()), |o| o.fs.passthrough = true);
    let node = pt.layer.index().lookup("big.bin").expect("big.bin");
    pt.layer.cache_file(node).expect("cache the file");
    let nopt = mount(&blob, Some(cache.path()), |o| o.fs.keep_cache = false);
    let mb = SIZE as f64 / (1 << 20) as f64;

    let runs = 5;
    let cases: [(&str, &Path); 3] = [
        ("local disk", &native_file),
        ("FUSE passthrough", &pt.path().join("big.bin")),
        ("FUSE, no passthrough", &nopt.path().join("big.bin")),
    ];
    // Warm every path once.
    for (_, p) in &cases {
        seq(p);
    }
    let mut rows = Vec::new();
    let mut base = None;
    for (name, p) in &cases {
        let m = median(runs, || seq(p));
        let base = *base.get_or_insert(m);
        rows.push(vec![
            name.to_string(),
            format!("{:.1} ms", m.as_secs_f64() * 1e3),
            format!("{:.0} MiB/s", mb / m.as_secs_f64()),
            format!("{:.0}%", base.as_secs_f64() / m.as_secs_f64() * 100.0),
        ]);
    }
    table(
        "Sequential read of a cached 100 MiB file (1 MiB reads, median of 5)",
        &["path", "time", "throughput", "% of local disk"],
        &rows,
    );
    let s = pt.mount.as_ref().map(|m| m.stats()).unwrap_or_default();
    println!(
        "\npassthrough mount: {} passthrough opens, {} reads reached the daemon",
        s.passthrough_opens, s.reads
    );
    let s = nopt.mount.as_ref().map(|m| m.stats()).unwrap_or_default();
    println!(
        "no-passthrough mount: {} reads of {:.0} KiB on average",
        s.reads,
        s.served_bytes as f64 / s.reads.max(1) as f64 / 1024.0
    );

    let n = 4000;
    let mut rows = Vec::new();
    for (name, p) in &cases {
        let t = random(p, n);
        rows.push(vec![
            name.to_string(),
            format!("{:.1} µs", percentile(&t, 0.5).as_secs_f64() * 1e6),
            format!("{:.1} µs", percentile(&t, 0.99).as_secs_f64() * 1e6),
        ]);
    }
    table(
        &format!("Random 4 KiB reads on cached data ({n} reads, one open)"),
        &["path", "p50", "p99"],
        &rows,
    );
}
