//! RemoteLayer over local sources (no network): open round trips, TOC verification, every
//! file of several vectors read back exactly, prefetch, background fetch, the disk cache.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use estargz_io::cache::CacheOptions;
use estargz_io::layer::{BackgroundOptions, LayerOptions};
use estargz_io::source::{CountingSource, FileSource};
use estargz_io::{ChunkCache, RemoteLayer};
use support::{mem_cache, vector_blob, TestBlob};

async fn counting(blob: &TestBlob) -> Arc<CountingSource<FileSource>> {
    let path = blob.vector.blob_path().expect("blob");
    Arc::new(CountingSource::new(
        FileSource::open(path).await.expect("open"),
    ))
}

#[tokio::test]
async fn open_is_one_request_when_the_toc_fits_the_tail_else_two() {
    let blob = vector_blob("edge-gzip-chunk64k");
    let src = counting(&blob).await;
    let layer = RemoteLayer::open(
        src.clone(),
        mem_cache(),
        LayerOptions::with_toc_digest(blob.toc_digest),
    )
    .await
    .expect("open");
    assert_eq!(src.counters().calls, 1);
    assert_eq!(layer.metrics().open_requests, 1);
    assert_eq!(layer.toc_digest(), blob.toc_digest);
    // The TOC JSON is not kept: asking for it fetches and checks it again.
    let json = layer.toc_json().await.expect("toc json");
    assert_eq!(json, blob.vector.toc_json().expect("vector toc.json"));
    assert_eq!(src.counters().calls, 2, "the TOC range read again");

    let src = counting(&blob).await;
    let opts = LayerOptions {
        tail_size: 100,
        ..LayerOptions::with_toc_digest(blob.toc_digest)
    };
    RemoteLayer::open(src.clone(), mem_cache(), opts)
        .await
        .expect("open");
    assert_eq!(src.counters().calls, 2, "footer, then the TOC");
}

#[tokio::test]
async fn open_requires_and_checks_the_toc_digest() {
    let blob = vector_blob("edge-gzip-chunk64k");
    let src = counting(&blob).await;
    let err = RemoteLayer::open(src.clone(), mem_cache(), LayerOptions::default())
        .await
        .expect_err("no digest");
    assert!(
        matches!(err, estargz_io::Error::MissingTocDigest(_)),
        "{err}"
    );
    assert_eq!(src.counters().calls, 0, "refused before fetching anything");

    let wrong = estargz::Digest::of(b"not the toc");
    let err = RemoteLayer::open(
        src.clone(),
        mem_cache(),
        LayerOptions::with_toc_digest(wrong),
    )
    .await
    .expect_err("wrong digest");
    assert!(err.is_integrity(), "{err}");

    RemoteLayer::open(src, mem_cache(), LayerOptions::unverified())
        .await
        .expect("explicit opt-out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_reads_back_exactly() {
    for name in [
        "edge-gzip-chunk64k",
        "edge-zstd-chunk64k-prio",
        "edge-gzip-prio",
        "v0.18.2-edge-gzip-minchunk64k",
    ] {
        let blob = vector_blob(name);
        let src = counting(&blob).await;
        let layer = RemoteLayer::open(
            src,
            mem_cache(),
            LayerOptions::with_toc_digest(blob.toc_digest),
        )
        .await
        .expect("open");
        let reader = estargz::Reader::open(blob.bytes.to_vec()).expect("reader");
        let mut files = Vec::new();
        reader.index().walk(|p, n| {
            if reader.index().attr(n).kind == estargz::index::NodeKind::File {
                files.push((p.to_owned(), n));
            }
        });
        assert!(!files.is_empty());
        for (path, node) in files {
            let mut want = Vec::new();
            std::io::Read::read_to_end(&mut reader.open_file(&path).expect("file"), &mut want)
                .expect("read");
            let got = layer
                .read_file(&path)
                .await
                .unwrap_or_else(|e| panic!("{name} {path}: {e}"));
            assert_eq!(got.len(), want.len(), "{name} {path}");
            assert!(got == want, "{name} {path}: content differs");
            // An unaligned read in the middle.
            if want.len() > 70_000 {
                let mut buf = vec![0u8; 5000];
                let n = layer
                    .read_at(node, 65_000, &mut buf)
                    .await
                    .expect("read_at");
                assert_eq!(&buf[..n], &want[65_000..70_000]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_reads_fetch_only_what_they_touch_and_then_hit_the_cache() {
    let blob = vector_blob("edge-gzip-chunk64k");
    let src = counting(&blob).await;
    let opts = LayerOptions {
        tail_size: 64 << 10,
        ..LayerOptions::with_toc_digest(blob.toc_digest)
    };
    let layer = RemoteLayer::open(src.clone(), mem_cache(), opts)
        .await
        .expect("open");
    let before = src.counters();
    layer.read_file("nodotslash/file.txt").await.expect("read");
    let after = src.counters();
    assert_eq!(after.calls - before.calls, 1);
    assert!(
        after.bytes - before.bytes < 1024,
        "{} bytes for a 16-byte file",
        after.bytes - before.bytes
    );
    layer.read_file("nodotslash/file.txt").await.expect("read");
    assert_eq!(
        src.counters().calls,
        after.calls,
        "second read from the cache"
    );
    let m = layer.metrics();
    assert_eq!(m.on_demand_requests, 1);
    assert!(layer.cache().stats().memory_hits >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_fetches_the_landmark_group_in_one_request() {
    for name in ["edge-gzip-prio", "edge-zstd-chunk64k-prio"] {
        let blob = vector_blob(name);
        let src = counting(&blob).await;
        let layer = RemoteLayer::open(
            src.clone(),
            mem_cache(),
            LayerOptions::with_toc_digest(blob.toc_digest),
        )
        .await
        .expect("open");
        assert!(matches!(
            layer.index().landmark(),
            estargz::index::Landmark::Prefetch { .. }
        ));
        let report = layer.prefetch().await.expect("prefetch");
        assert!(report.chunks >= 3, "{name}: {report:?}");
        assert_eq!(report.requests, 1, "{name}: {report:?}");
        let calls = src.counters().calls;
        // The prioritised files are now served without fetching.
        for f in &blob.vector.manifest.expected.prioritized {
            if let Some(node) = layer.index().lookup(f) {
                // A prioritised hardlink's data lives with its target, maybe after the landmark.
                let before_landmark = layer.index().chunks(node).iter().all(|c| {
                    matches!(layer.index().landmark(), estargz::index::Landmark::Prefetch { offset } if c.blob_offset() < offset)
                });
                if layer.index().attr(node).kind == estargz::index::NodeKind::File
                    && before_landmark
                {
                    layer.read_file(f).await.expect("read");
                }
            }
        }
        assert_eq!(
            src.counters().calls,
            calls,
            "{name}: prioritised files were prefetched"
        );
        let again = layer.prefetch().await.expect("prefetch");
        assert_eq!((again.requests, again.already_cached), (0, again.chunks));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_fetch_caches_everything_and_can_pause_and_cancel() {
    let blob = vector_blob("edge-gzip-chunk64k");
    let src = counting(&blob).await;
    let layer = Arc::new(
        RemoteLayer::open(
            src.clone(),
            mem_cache(),
            LayerOptions::with_toc_digest(blob.toc_digest),
        )
        .await
        .expect("open"),
    );
    // Paused at once: nothing happens until resumed.
    let bg = layer.start_background(BackgroundOptions {
        batch_bytes: 64 << 10,
        quiet: Duration::from_millis(10),
    });
    bg.pause();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let paused_calls = layer.metrics().background_requests;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        layer.metrics().background_requests,
        paused_calls,
        "no progress while paused"
    );
    bg.resume();
    let report = tokio::time::timeout(Duration::from_secs(60), bg.wait())
        .await
        .expect("in time")
        .expect("bg");
    assert!(report.complete, "{report:?}");
    let calls = src.counters().calls;
    for c in layer.index().all_chunks() {
        if let Some(d) = layer.index().chunk_digest(c).expect("digest") {
            assert!(layer.cache().contains(&d));
        }
    }
    layer.read_file("sizes/4mib").await.expect("read");
    assert_eq!(src.counters().calls, calls, "everything is cached");
    assert!(layer.metrics().background_bytes > 0);

    // Cancel stops it early.
    let layer2 = Arc::new(
        RemoteLayer::open(
            counting(&blob).await,
            mem_cache(),
            LayerOptions::with_toc_digest(blob.toc_digest),
        )
        .await
        .expect("open"),
    );
    let bg = layer2.start_background(BackgroundOptions {
        batch_bytes: 16 << 10,
        quiet: Duration::from_millis(50),
    });
    bg.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), bg.wait())
        .await
        .expect("in time")
        .expect("bg");
    assert!(!report.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_fetch_yields_to_on_demand_reads() {
    let blob = vector_blob("edge-gzip-chunk64k");
    let src = counting(&blob).await;
    let layer = Arc::new(
        RemoteLayer::open(
            src.clone(),
            mem_cache(),
            LayerOptions::with_toc_digest(blob.toc_digest),
        )
        .await
        .expect("open"),
    );
    let bg = layer.start_background(BackgroundOptions {
        batch_bytes: 32 << 10,
        quiet: Duration::from_millis(300),
    });
    // Keep reading: the background must not start a batch while reads keep coming.
    let node = layer.index().lookup("sizes/random-300000").expect("file");
    let mut buf = vec![0u8; 4096];
    for i in 0..20u64 {
        layer
            .read_at(node, (i * 13_000) % 290_000, &mut buf)
            .await
            .expect("read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        layer.metrics().background_requests,
        0,
        "background waited for quiet"
    );
    let report = tokio::time::timeout(Duration::from_secs(60), bg.wait())
        .await
        .expect("in time")
        .expect("bg");
    assert!(report.complete);
    assert!(layer.metrics().background_requests > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cache_survives_restart_is_bounded_and_rejects_damaged_files() {
    let blob = vector_blob("edge-gzip-chunk64k");
    let dir = tempfile::tempdir().expect("tmp");
    let opts = CacheOptions {
        memory_bytes: 1 << 20,
        dir: Some(dir.path().to_path_buf()),
        disk_bytes: 3 << 20,
        verify_disk_reads: true,
    };
    {
        let cache = Arc::new(ChunkCache::open(&opts).expect("cache"));
        let layer = RemoteLayer::open(
            counting(&blob).await,
            cache.clone(),
            LayerOptions::with_toc_digest(blob.toc_digest),
        )
        .await
        .expect("open");
        for f in ["sizes/4mib", "sizes/random-300000", "nodotslash/file.txt"] {
            layer.read_file(f).await.expect("read");
        }
        let s = cache.stats();
        assert!(s.disk_bytes <= 3 << 20, "{s:?}");
        assert!(
            s.disk_evictions > 0,
            "4 MiB + more through a 3 MiB bound: {s:?}"
        );
        assert!(s.memory_evictions > 0, "{s:?}");
    }
    // Restart: the small file's chunk is still there and served from disk without fetching.
    let cache = Arc::new(ChunkCache::open(&opts).expect("cache"));
    let src = counting(&blob).await;
    let layer = RemoteLayer::open(
        src.clone(),
        cache.clone(),
        LayerOptions::with_toc_digest(blob.toc_digest),
    )
    .await
    .expect("open");
    let calls = src.counters().calls;
    assert_eq!(
        layer.read_file("nodotslash/file.txt").await.expect("read"),
        support::expected_file(&blob, "nodotslash/file.txt")
    );
    assert_eq!(src.counters().calls, calls);
    assert_eq!(cache.stats().disk_hits, 1);

    // Damage a file on disk: it is detected, dropped, and the chunk fetched again.
    let node = layer.index().lookup("sizes/random-300000").expect("file");
    let d = layer
        .index()
        .chunk_digest(&layer.index().chunks(node)[0])
        .expect("read")
        .expect("digest");
    let path = dir.path().join("chunks").join(&d.hex()[..2]).join(d.hex());
    if path.exists() {
        let cache2 = Arc::new(ChunkCache::open(&opts).expect("cache"));
        let mut data = std::fs::read(&path).expect("read");
        data[10] ^= 1;
        std::fs::write(&path, data).expect("write");
        let src = counting(&blob).await;
        let layer = RemoteLayer::open(
            src.clone(),
            cache2.clone(),
            LayerOptions::with_toc_digest(blob.toc_digest),
        )
        .await
        .expect("open");
        let got = layer.read_file("sizes/random-300000").await.expect("read");
        assert_eq!(got, support::expected_file(&blob, "sizes/random-300000"));
        assert_eq!(cache2.stats().corrupt, 1);
        assert!(src.counters().calls > 1);
    }
    let _ = Ordering::SeqCst;
}
