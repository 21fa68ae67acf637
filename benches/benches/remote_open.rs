//! Lazy pulling through a shaped network: a local `docker-registry` behind a userspace proxy
//! that adds a fixed delay each way (so every request costs one round trip) and caps the
//! bandwidth. Measures, for 20 ms and 100 ms round trips:
//!
//! - open (footer + TOC + verification): round trips and time, with the TOC inside the
//!   speculative suffix (goal: 1 request) and outside it (goal: 2);
//! - time to the first 4 KiB of a file after open (goal: one more round trip);
//! - prefetch of the landmark group: requests versus chunks covered;
//! - CPU per MB served (decompress + verify, from a local file, no network);
//! - cache-hit read latency.
//!
//! `cargo bench -p estargz-benches --bench remote_open` (needs Debian's `docker-registry`;
//! prints a note and exits otherwise). Prints one table of medians.

use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz::Digest;
use estargz_benches::shaping::start_proxy;
use estargz_io::config::RegistryConfig;
use estargz_io::layer::LayerOptions;
use estargz_io::registry::RegistryClient;
use estargz_io::source::{FileSource, RegistryOptions, RegistrySource};
use estargz_io::{ChunkCache, Reference, RemoteLayer};

const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 Hz on Linux).
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

struct Blob {
    name: &'static str,
    bytes: bytes::Bytes,
    toc: Digest,
    path: std::path::PathBuf,
}

fn blob(name: &'static str) -> Blob {
    let v = estargz_testkit::vectors::Vector::load(name).expect("vector");
    let path = v.blob_path().expect("blob");
    Blob {
        name,
        bytes: std::fs::read(&path).expect("read").into(),
        toc: Digest::parse(v.manifest.expected.toc_digest.as_deref().expect("toc"))
            .expect("digest"),
        path,
    }
}

fn opts(host: &str) -> RegistryOptions {
    RegistryOptions {
        config: RegistryConfig::plain_http(host),
        keychain: Arc::new(estargz_io::auth::Keychain::empty()),
        ..RegistryOptions::default()
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let Some(reg) = estargz_benches::registry::start() else {
        println!(
            "remote_open: docker-registry not found (apt-get install docker-registry); skipped"
        );
        return;
    };
    let blobs = [blob("edge-gzip-chunk64k"), blob("edge-zstd-chunk64k-prio")];
    let client = RegistryClient::new(&reg.host, opts(&reg.host)).expect("client");
    for b in &blobs {
        rt.block_on(client.upload_blob("bench/layer", b.bytes.clone()))
            .expect("upload");
    }
    let upstream: std::net::SocketAddr = reg.host.parse().expect("addr");
    println!(
        "{:<44} {:>10} {:>10}",
        "measure (median of 5)", "rtt 20ms", "rtt 100ms"
    );
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |name: String, v: String| {
        if let Some(r) = rows.iter_mut().find(|r| r.0 == name) {
            r.1.push(v);
        } else {
            rows.push((name, vec![v]));
        }
    };
    for rtt_ms in [20u64, 100] {
        let proxy = rt.block_on(start_proxy(upstream, Duration::from_millis(rtt_ms), 12.5e6));
        let host = proxy.to_string();
        for b in &blobs {
            for (label, tail) in [("TOC in suffix", 1u64 << 20), ("TOC outside suffix", 4096)] {
                let mut times = Vec::new();
                let mut reqs = Vec::new();
                let mut first = Vec::new();
                for _ in 0..RUNS {
                    let reference: Reference =
                        format!("{host}/bench/layer@{}", Digest::of(&b.bytes))
                            .parse()
                            .expect("ref");
                    let src = Arc::new(RegistrySource::new(&reference, opts(&host)).expect("src"));
                    let t = Instant::now();
                    let layer = rt
                        .block_on(RemoteLayer::open(
                            src.clone(),
                            Arc::new(ChunkCache::memory(64 << 20)),
                            LayerOptions {
                                tail_size: tail,
                                ..LayerOptions::with_toc_digest(b.toc)
                            },
                        ))
                        .expect("open");
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    reqs.push(src.http_counters().requests as f64);
                    let node = layer.index().lookup("sizes/random-300000").expect("file");
                    let mut buf = vec![0u8; 4096];
                    let t = Instant::now();
                    rt.block_on(layer.read_at(node, 100_000, &mut buf))
                        .expect("read");
                    first.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                add(
                    format!("{} open, {label}: ms", b.name),
                    format!("{:.1}", median(times)),
                );
                add(
                    format!("{} open, {label}: requests", b.name),
                    format!("{}", median(reqs)),
                );
                if tail > 4096 {
                    add(
                        format!("{} first 4 KiB after open: ms", b.name),
                        format!("{:.1}", median(first)),
                    );
                }
            }
        }
        // Prefetch of the landmark group.
        let b = &blobs[1];
        let mut ratio = Vec::new();
        let mut ms = Vec::new();
        for _ in 0..RUNS {
            let reference: Reference = format!("{host}/bench/layer@{}", Digest::of(&b.bytes))
                .parse()
                .expect("ref");
            let src = Arc::new(RegistrySource::new(&reference, opts(&host)).expect("src"));
            let layer = rt
                .block_on(RemoteLayer::open(
                    src,
                    Arc::new(ChunkCache::memory(64 << 20)),
                    LayerOptions::with_toc_digest(b.toc),
                ))
                .expect("open");
            let t = Instant::now();
            let r = rt.block_on(layer.prefetch()).expect("prefetch");
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            ratio.push(r.chunks as f64 / r.requests.max(1) as f64);
        }
        add(
            format!("{} prefetch: chunks per request", b.name),
            format!("{:.0}", median(ratio)),
        );
        add(
            format!("{} prefetch: ms", b.name),
            format!("{:.1}", median(ms)),
        );
    }
    for (name, vals) in &rows {
        println!(
            "{name:<44} {:>10} {:>10}",
            vals.first().map_or("", String::as_str),
            vals.get(1).map_or("", String::as_str)
        );
    }

    // CPU per MB served and cache-hit latency: local file, no network.
    let b = &blobs[0];
    let mut cpu_per_mb = Vec::new();
    let mut hit_us = Vec::new();
    for _ in 0..RUNS {
        let src = Arc::new(rt.block_on(FileSource::open(&b.path)).expect("src"));
        let layer = rt
            .block_on(RemoteLayer::open(
                src,
                Arc::new(ChunkCache::memory(256 << 20)),
                LayerOptions::with_toc_digest(b.toc),
            ))
            .expect("open");
        let mut files = Vec::new();
        layer.index().walk(|p, n| {
            if layer.index().attr(n).kind == estargz::index::NodeKind::File {
                files.push(p.to_owned());
            }
        });
        let c0 = cpu_seconds();
        let mut served = 0usize;
        for f in &files {
            served += rt.block_on(layer.read_file(f)).expect("read").len();
        }
        let c1 = cpu_seconds();
        cpu_per_mb.push((c1 - c0) * 1000.0 / (served as f64 / 1e6));
        let node = layer.index().lookup("sizes/random-300000").expect("file");
        let mut buf = vec![0u8; 4096];
        let mut lat = Vec::new();
        for i in 0..1000u64 {
            let t = Instant::now();
            rt.block_on(layer.read_at(node, (i * 4096) % 290_000, &mut buf))
                .expect("read");
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        hit_us.push(median(lat));
    }
    println!(
        "{:<44} {:>10.1}",
        "CPU ms per MB served (decompress+verify)",
        median(cpu_per_mb)
    );
    println!(
        "{:<44} {:>10.1}",
        "cache-hit read of 4 KiB: us",
        median(hit_us)
    );
}
