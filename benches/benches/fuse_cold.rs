//! Cold reads through a FUSE mount of a registry blob behind a shaped network: a local
//! `docker-registry` behind a userspace proxy that adds a fixed delay each way and caps the
//! bandwidth. For 20 ms and 100 ms round trips it measures the mount (open: footer + TOC) and
//! the first read of one small and one 300 KB file (time and bytes fetched), against the same
//! reads from a local-blob FUSE mount (cold: decompress + verify) and from a plain file on local
//! disk (page cache).
//!
//! `cargo bench -p estargz-benches --bench fuse_cold` (needs root, /dev/fuse and Debian's
//! `docker-registry`; prints a note and exits otherwise). Prints one table of medians.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz::Digest;
use estargz_fuse::{LocalLayer, LocalOptions, Mount, MountOptions, RemoteOptions, RemoteSource};
use estargz_io::config::RegistryConfig;
use estargz_io::registry::RegistryClient;
use estargz_io::source::{RegistryOptions, RegistrySource};
use estargz_io::{ChunkCache, LayerOptions, Reference};

const RUNS: usize = 5;
const VECTOR: &str = "edge-gzip-chunk64k";
const FILES: [&str; 2] = ["nodotslash/file.txt", "sizes/random-300000"];
/// Bandwidth of the shaped link, bytes per second each way.
const RATE: f64 = 12.5e6;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn mount_options() -> MountOptions {
    MountOptions {
        auto_unmount: false,
        ..MountOptions::default()
    }
}

/// Times the first read of each of `FILES` in a fresh mount made by `mount`; returns
/// (mount ms, per-file ms).
fn cold_reads(mnt: &Path, mut mount: impl FnMut() -> Mount) -> (f64, Vec<f64>, Mount) {
    let t = Instant::now();
    let m = mount();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut per_file = Vec::new();
    for f in FILES {
        let t = Instant::now();
        let data = std::fs::read(mnt.join(f)).expect("read");
        per_file.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!data.is_empty());
    }
    (open_ms, per_file, m)
}

fn main() {
    if !estargz_testkit::is_root() || !Path::new("/dev/fuse").exists() {
        println!("fuse_cold: skipped: needs root and /dev/fuse");
        return;
    }
    let Some(reg) = estargz_benches::registry::start() else {
        println!("fuse_cold: skipped: docker-registry not found (apt-get install docker-registry)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let v = estargz_testkit::vectors::Vector::load(VECTOR).expect("vector");
    let blob_path = v.blob_path().expect("blob");
    let bytes = bytes::Bytes::from(std::fs::read(&blob_path).expect("blob"));
    let toc =
        Digest::parse(v.manifest.expected.toc_digest.as_deref().expect("toc")).expect("digest");
    let host = reg.host.clone();
    let reg_opts = |h: &str| RegistryOptions {
        config: RegistryConfig::plain_http(h),
        keychain: Arc::new(estargz_io::auth::Keychain::empty()),
        ..RegistryOptions::default()
    };
    let client = RegistryClient::new(&host, reg_opts(&host)).expect("client");
    let digest = rt
        .block_on(client.upload_blob("bench/cold", bytes.clone()))
        .expect("upload");
    let mnt = tempfile::tempdir().expect("mountpoint");

    println!(
        "fuse_cold: {VECTOR} ({} bytes), first read of {FILES:?}, {RUNS} runs, medians; \
         shaped link {:.0} MB/s",
        bytes.len(),
        RATE / 1e6
    );
    println!(
        "| setup | mount ms | small file ms | 300 KB file ms | bytes fetched (open + reads) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");

    // Local disk: the file's bytes in a plain file (page cache warm after the first run).
    let plain = tempfile::tempdir().expect("dir");
    for f in FILES {
        let local = LocalLayer::open(&blob_path, LocalOptions::default()).expect("open");
        let node = estargz_fuse::LayerSource::index(&local)
            .lookup(f)
            .expect("file");
        let size = estargz_fuse::LayerSource::index(&local).attr(node).size as usize;
        let mut buf = vec![0u8; size];
        let n = estargz_fuse::LayerSource::read_at(&local, node, 0, &mut buf).expect("read");
        let p = plain.path().join(f.replace('/', "_"));
        std::fs::write(&p, &buf[..n]).expect("write");
    }
    let mut reads: Vec<Vec<f64>> = vec![Vec::new(); FILES.len()];
    for _ in 0..RUNS {
        for (i, f) in FILES.iter().enumerate() {
            let t = Instant::now();
            let _ = std::fs::read(plain.path().join(f.replace('/', "_"))).expect("read");
            reads[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "| local disk, plain file | - | {:.3} | {:.3} | 0 |",
        median(reads[0].clone()),
        median(reads[1].clone())
    );

    // Local blob through FUSE, cold (a new mount each run: decompress + verify).
    let (mut opens, mut reads) = (Vec::new(), vec![Vec::new(); FILES.len()]);
    for _ in 0..RUNS {
        let (o, r, m) = cold_reads(mnt.path(), || {
            let layer = LocalLayer::open(&blob_path, LocalOptions::default()).expect("open");
            Mount::new(Arc::new(layer), mnt.path(), &mount_options()).expect("mount")
        });
        opens.push(o);
        for (i, x) in r.into_iter().enumerate() {
            reads[i].push(x);
        }
        m.unmount().expect("unmount");
    }
    println!(
        "| local blob, FUSE, cold | {:.1} | {:.2} | {:.2} | 0 |",
        median(opens),
        median(reads[0].clone()),
        median(reads[1].clone())
    );

    for rtt_ms in [0u64, 20, 100] {
        let rtt = Duration::from_millis(rtt_ms);
        let upstream: SocketAddr = reg.host.parse().expect("registry address");
        let addr = if rtt_ms == 0 {
            upstream
        } else {
            rt.block_on(estargz_benches::shaping::start_proxy(upstream, rtt, RATE))
        };
        let via = addr.to_string();
        let (mut opens, mut reads, mut fetched) =
            (Vec::new(), vec![Vec::new(); FILES.len()], Vec::new());
        for _ in 0..RUNS {
            let mut source = None;
            let (o, r, m) = cold_reads(mnt.path(), || {
                let reference: Reference = format!("{via}/bench/cold@{digest}")
                    .parse()
                    .expect("reference");
                let src = RegistrySource::new(&reference, reg_opts(&via)).expect("source");
                let s = Arc::new(
                    RemoteSource::open(
                        Arc::new(src),
                        Arc::new(ChunkCache::memory(64 << 20)),
                        LayerOptions {
                            tail_size: 64 << 10,
                            ..LayerOptions::with_toc_digest(toc)
                        },
                        RemoteOptions::default(),
                    )
                    .expect("open"),
                );
                source = Some(Arc::clone(&s));
                Mount::new(s, mnt.path(), &mount_options()).expect("mount")
            });
            opens.push(o);
            for (i, x) in r.into_iter().enumerate() {
                reads[i].push(x);
            }
            if let Some(s) = &source {
                fetched.push(s.metrics().total_bytes() as f64);
            }
            m.unmount().expect("unmount");
        }
        let label = if rtt_ms == 0 {
            "registry, FUSE, cold, loopback".to_owned()
        } else {
            format!("registry, FUSE, cold, {rtt_ms} ms RTT")
        };
        println!(
            "| {label} | {:.1} | {:.2} | {:.2} | {:.0} of {} |",
            median(opens),
            median(reads[0].clone()),
            median(reads[1].clone()),
            median(fetched),
            bytes.len()
        );
    }
}
