//! A layer in a real registry (Debian's `docker-registry`), mounted lazily through
//! [`RemoteSource`]: the files are the vector's files byte for byte, one small read fetches a
//! small fraction of the blob, a tampered chunk gives `EIO` (never wrong bytes), and a registry
//! that dies or stalls mid-way gives `EIO` within the read timeout while the mount stays usable
//! and a read after the registry is back succeeds.

mod common;
mod registry;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use estargz_fuse::estargz::Digest;
use estargz_fuse::estargz_io::config::{RegistryConfig, RetryPolicy};
use estargz_fuse::estargz_io::http::EngineOptions;
use estargz_fuse::estargz_io::registry::RegistryClient;
use estargz_fuse::estargz_io::source::{RegistryOptions, RegistrySource};
use estargz_fuse::estargz_io::{ChunkCache, LayerOptions, Reference};
use estargz_fuse::{LayerSource, RemoteOptions, RemoteSource};
use estargz_testkit::Vector;

use common::*;
use registry::Registry;

const VECTOR: &str = "edge-gzip-chunk64k";

fn vector() -> (Vector, Bytes, Digest) {
    named_vector(VECTOR)
}

fn named_vector(name: &str) -> (Vector, Bytes, Digest) {
    let v = Vector::load(name).expect("vector");
    let bytes = Bytes::from(std::fs::read(v.blob_path().expect("stored blob")).expect("blob"));
    let toc = Digest::parse(
        v.manifest
            .expected
            .toc_digest
            .as_deref()
            .expect("toc digest"),
    )
    .expect("digest");
    (v, bytes, toc)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Retries that give up within a couple of seconds (a dead registry fails fast).
fn options(host: &str) -> RegistryOptions {
    RegistryOptions {
        config: RegistryConfig::plain_http(host),
        engine: EngineOptions {
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(200),
                max_elapsed: Duration::from_secs(2),
                request_timeout: Duration::from_secs(5),
                connect_timeout: Duration::from_secs(2),
            },
            ..EngineOptions::default()
        },
        ..RegistryOptions::default()
    }
}

/// Uploads `data` to `repo` and returns its (real) blob digest.
fn upload(reg: &Registry, repo: &str, data: Bytes) -> Digest {
    let client = RegistryClient::new(&reg.host, options(&reg.host)).expect("client");
    runtime()
        .block_on(client.upload_blob(repo, data))
        .expect("upload")
}

/// Opens `HOST/REPO@DIGEST` as a remote source (memory cache, small open request).
fn open(reg: &Registry, repo: &str, digest: &Digest, toc: Digest) -> Arc<RemoteSource> {
    open_with(reg, repo, digest, toc, RemoteOptions::default())
}

fn open_with(
    reg: &Registry,
    repo: &str,
    digest: &Digest,
    toc: Digest,
    remote: RemoteOptions,
) -> Arc<RemoteSource> {
    let reference: Reference = format!("{}/{repo}@{digest}", reg.host)
        .parse()
        .expect("reference");
    let src = RegistrySource::new(&reference, options(&reg.host)).expect("source");
    let source = RemoteSource::open(
        Arc::new(src),
        Arc::new(ChunkCache::memory(64 << 20)),
        LayerOptions {
            tail_size: 64 << 10,
            ..LayerOptions::with_toc_digest(toc)
        },
        remote,
    )
    .expect("open the remote layer");
    Arc::new(source)
}

/// The vector's regular files as the mount shows them: (path, size, sha256).
fn expected_files(v: &Vector) -> Vec<(PathBuf, u64, String)> {
    let mut out: Vec<(PathBuf, u64, String)> = Vec::new();
    let records = v
        .manifest
        .files
        .iter()
        .map(|f| {
            (
                f.name_bytes().to_vec(),
                f.size,
                f.sha256.clone(),
                f.is_final,
            )
        })
        .chain(v.manifest.hardlinks.iter().filter_map(|h| {
            Some((
                h.name.as_bytes().to_vec(),
                h.size?,
                h.sha256.clone()?,
                h.is_final,
            ))
        }));
    for (name, size, sha, is_final) in records {
        let name = name.strip_prefix(b"./").unwrap_or(&name).to_vec();
        // Whiteouts are shown as overlayfs whiteouts, not as files.
        if !is_final || name.windows(4).any(|w| w == b".wh.") {
            continue;
        }
        out.push((PathBuf::from(OsStr::from_bytes(&name)), size, sha));
    }
    out
}

fn is_eio(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error())
}

#[test]
fn registry_blob_mounts_lazily_with_the_vectors_files() {
    if !fuse_ready() {
        return;
    }
    let Some(reg) = Registry::start() else { return };
    let (v, bytes, toc) = vector();
    let size = bytes.len() as u64;
    let digest = upload(&reg, "fuse/edge", bytes);
    let source = open(&reg, "fuse/edge", &digest, toc);
    let m = mount_source(Arc::clone(&source), &test_options());

    // One small file: only the open request (footer + TOC) and one chunk are fetched.
    let small = std::fs::read(m.path().join("nodotslash/file.txt")).expect("small file");
    assert_eq!(
        Digest::of(&small).to_string(),
        "sha256:b923f37b04614753030edbe535251acc21a67263f042f2e870c408538cd21346"
    );
    let s = m.mount().stats();
    assert_eq!(s.source.blob_size, size);
    assert!(
        s.source.fetched_bytes > 0 && s.source.fetched_bytes * 10 < size,
        "fetched {} of {size} bytes after one small read",
        s.source.fetched_bytes
    );
    assert_eq!(
        source.metrics().on_demand_requests,
        1,
        "{:?}",
        source.metrics()
    );

    // Every file, byte for byte (sha256 from the vector's manifest).
    let files = expected_files(&v);
    assert!(files.len() > 40, "{} files", files.len());
    for (path, len, sha) in &files {
        let data = std::fs::read(m.path().join(path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(data.len() as u64, *len, "{}", path.display());
        assert_eq!(&Digest::of(&data).to_string(), sha, "{}", path.display());
    }
    let s = m.mount().stats();
    assert_eq!(s.read_errors + s.read_timeouts, 0, "{s:?}");
    assert!(s.source.cached_files > 40, "{s:?}");
    // Everything read is now cached: reads are local and fetch nothing more.
    let node = source
        .index()
        .lookup("sizes/4mib+1")
        .expect("big file in the index");
    assert!(source.is_local(node, 0..(4 << 20) + 1));
    let before = source.metrics().total_bytes();
    let again = std::fs::read(m.path().join("sizes/random-300000")).expect("cached file");
    assert_eq!(again.len(), 300000);
    assert_eq!(source.metrics().total_bytes(), before);
}

#[test]
fn tampered_registry_blob_gives_eio_never_wrong_bytes() {
    if !fuse_ready() {
        return;
    }
    let Some(reg) = Registry::start() else { return };
    let (_v, bytes, toc) = vector();
    // Flip one byte inside the compressed data of the first chunk of sizes/64k.
    let mut bad = bytes.to_vec();
    let chunk = {
        let r = estargz_fuse::estargz::Reader::open(bytes.to_vec()).expect("open");
        let node = r.index().lookup("sizes/64k").expect("file");
        r.index().chunks(node)[0]
    };
    let at = (chunk.blob_offset() + chunk.blob_end()) / 2;
    bad[at as usize] ^= 0x55;
    let digest = upload(&reg, "fuse/tampered", Bytes::from(bad));
    assert_ne!(digest, Digest::of(&bytes));
    let source = open(&reg, "fuse/tampered", &digest, toc);
    let mut opts = test_options();
    opts.fs.keep_cache = false;
    let m = mount_source(Arc::clone(&source), &opts);

    let victim = m.path().join("sizes/64k");
    for _ in 0..2 {
        let err = std::fs::read(&victim).expect_err("tampered data must not be served");
        assert!(is_eio(&err), "{err}");
    }
    assert_eq!(std::fs::metadata(&victim).expect("stat").len(), 65536);
    assert_eq!(
        std::fs::read(m.path().join("dup/file.txt"))
            .expect("an untouched file")
            .len(),
        38
    );
    let s = m.mount().stats();
    assert!(s.read_errors >= 2, "{s:?}");
    assert!(source.metrics().integrity_failures >= 1);
}

#[test]
fn dead_registry_gives_eio_in_time_and_the_mount_recovers() {
    if !fuse_ready() {
        return;
    }
    let Some(mut reg) = Registry::start() else {
        return;
    };
    let (v, bytes, toc) = vector();
    let digest = upload(&reg, "fuse/dies", bytes);
    let source = open(&reg, "fuse/dies", &digest, toc);
    let timeout = Duration::from_secs(3);
    let mut opts = test_options();
    opts.fs.read_timeout = Some(timeout);
    opts.fs.keep_cache = false;
    let m = mount_source(Arc::clone(&source), &opts);

    let first = std::fs::read(m.path().join("dup/file.txt")).expect("read before the crash");
    assert_eq!(first.len(), 38);

    reg.kill();
    let victim = m.path().join("sizes/random-300000");
    let start = Instant::now();
    let err = std::fs::read(&victim).expect_err("the registry is gone");
    let took = start.elapsed();
    assert!(is_eio(&err), "{err}");
    // The read timeout is 3 s; the bound is generous so a loaded machine cannot flake it.
    assert!(took < Duration::from_secs(30), "EIO took {took:?}");
    let s = m.mount().stats();
    assert!(s.read_errors + s.read_timeouts >= 1, "{s:?}");

    // The mount stays usable: metadata, listings and cached data.
    assert_eq!(std::fs::metadata(&victim).expect("stat").len(), 300000);
    assert!(
        std::fs::read_dir(m.path().join("sizes"))
            .expect("ls")
            .count()
            >= 5
    );
    assert_eq!(
        std::fs::read(m.path().join("dup/file.txt")).expect("cached file"),
        first
    );

    // The registry comes back on the same port and storage: a later read succeeds.
    reg.restart();
    let data = std::fs::read(&victim).expect("read after the registry is back");
    let want = expected_files(&v)
        .into_iter()
        .find(|(p, _, _)| p == &PathBuf::from("sizes/random-300000"))
        .expect("in the manifest")
        .2;
    assert_eq!(Digest::of(&data).to_string(), want);
}

#[test]
fn stalled_registry_gives_eio_at_the_deadline_and_the_mount_recovers() {
    if !fuse_ready() {
        return;
    }
    let Some(reg) = Registry::start() else {
        return;
    };
    let (v, bytes, toc) = vector();
    let digest = upload(&reg, "fuse/stalls", bytes);
    let source = open(&reg, "fuse/stalls", &digest, toc);
    // Shorter than the 5 s request timeout of `options`: the deadline answers first.
    let mut opts = test_options();
    opts.fs.read_timeout = Some(Duration::from_secs(2));
    opts.fs.keep_cache = false;
    let m = mount_source(Arc::clone(&source), &opts);
    let first = std::fs::read(m.path().join("dup/file.txt")).expect("read before the stall");

    reg.stall();
    let victim = m.path().join("sizes/64k+1");
    let start = Instant::now();
    let err = std::fs::read(&victim).expect_err("the registry does not answer");
    let took = start.elapsed();
    assert!(is_eio(&err), "{err}");
    assert!(took < Duration::from_secs(30), "EIO took {took:?}");
    let s = m.mount().stats();
    assert!(s.read_timeouts >= 1, "{s:?}");
    // Metadata and cached data are still served while the registry hangs.
    assert_eq!(std::fs::metadata(&victim).expect("stat").len(), 65537);
    assert_eq!(
        std::fs::read(m.path().join("dup/file.txt")).expect("cached file"),
        first
    );

    reg.resume();
    let data = std::fs::read(&victim).expect("read after the registry answers again");
    let want = expected_files(&v)
        .into_iter()
        .find(|(p, _, _)| p == &PathBuf::from("sizes/64k+1"))
        .expect("in the manifest")
        .2;
    assert_eq!(Digest::of(&data).to_string(), want);
}

#[test]
fn prefetch_and_background_fetch_cache_the_whole_layer() {
    if !fuse_ready() {
        return;
    }
    let Some(reg) = Registry::start() else {
        return;
    };
    // A zstd:chunked layer with prioritised files (a prefetch landmark).
    let (v, bytes, toc) = named_vector("edge-zstd-chunk64k-prio");
    let digest = upload(&reg, "fuse/prio", bytes);
    let source = open_with(
        &reg,
        "fuse/prio",
        &digest,
        toc,
        RemoteOptions {
            prefetch: true,
            background_fetch: true,
            ..RemoteOptions::default()
        },
    );
    let m = mount_source(Arc::clone(&source), &test_options());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !source.background_finished() {
        assert!(Instant::now() < deadline, "{:?}", source.metrics());
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = source.metrics();
    assert!(metrics.prefetch_bytes > 0, "{metrics:?}");
    assert!(metrics.background_bytes > 0, "{metrics:?}");
    // Every file is local now: reading them all fetches nothing more and gives the right bytes.
    let files = expected_files(&v);
    for (path, _, sha) in &files {
        let node = source
            .index()
            .lookup(&path.to_string_lossy())
            .unwrap_or_else(|| panic!("{} in the index", path.display()));
        let size = source.index().attr(node).size;
        assert!(source.is_local(node, 0..size), "{}", path.display());
        let data = std::fs::read(m.path().join(path))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(&Digest::of(&data).to_string(), sha, "{}", path.display());
    }
    assert_eq!(source.metrics().total_bytes(), metrics.total_bytes());
    assert!(m.mount().stats().source.cached_files as usize >= files.len() / 2);
}
