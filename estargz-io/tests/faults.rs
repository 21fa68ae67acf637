//! Fault injection: a misbehaving in-process server in front of a real eStargz blob. Every
//! scenario checks the bytes a lazy read returns and what the server saw (its request log).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz_io::http::EngineOptions;
use estargz_io::layer::LayerOptions;
use estargz_io::source::{BlobSource, HttpOptions, HttpSource};
use estargz_io::RemoteLayer;
use support::fault::{FaultServer, MultiRange};
use support::{expected_file, fast_retry, mem_cache, vector_blob, TestBlob};

const FILE: &str = "sizes/random-300000";
const SMALL: &str = "nodotslash/file.txt";

fn engine() -> EngineOptions {
    EngineOptions {
        retry: fast_retry(),
        ..EngineOptions::default()
    }
}

async fn setup() -> (TestBlob, FaultServer) {
    let blob = vector_blob("edge-gzip-chunk64k");
    let server = FaultServer::start(blob.bytes.clone()).await;
    (blob, server)
}

fn url(server: &FaultServer, blob: &TestBlob) -> String {
    format!("{}/v2/test/blob/blobs/{}", server.base(), blob.digest())
}

async fn open(
    server: &FaultServer,
    blob: &TestBlob,
    opts: EngineOptions,
) -> (Arc<HttpSource>, RemoteLayer) {
    let src = Arc::new(
        HttpSource::new(
            &url(server, blob),
            HttpOptions {
                engine: opts,
                ..HttpOptions::default()
            },
        )
        .expect("source"),
    );
    let layer = RemoteLayer::open(
        src.clone(),
        mem_cache(),
        LayerOptions::with_toc_digest(blob.toc_digest),
    )
    .await
    .expect("open");
    (src, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff() {
    let (blob, server) = setup().await;
    server
        .faults
        .error_5xx
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let (src, layer) = open(&server, &blob, engine()).await;
    assert_eq!(
        layer.read_file(FILE).await.expect("read"),
        expected_file(&blob, FILE)
    );
    let log = server.log();
    assert_eq!(log[0].status, 503);
    assert_eq!(log[1].status, 503);
    assert_eq!(log[2].status, 206, "third attempt succeeds: {log:?}");
    assert_eq!(log[0].range, log[2].range, "the same request is retried");
    assert_eq!(src.http_counters().retries, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_errors_give_up_naming_url_and_range() {
    let (blob, server) = setup().await;
    let (_src, layer) = open(&server, &blob, engine()).await;
    server.clear_log();
    server
        .faults
        .error_5xx
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let err = layer
        .read_file(FILE)
        .await
        .expect_err("must fail")
        .to_string();
    assert!(err.contains(&url(&server, &blob)), "{err}");
    assert!(err.contains("bytes="), "{err}");
    assert!(err.contains("503"), "{err}");
    assert!(err.contains("4 attempts"), "{err}");
    assert_eq!(server.log().len(), 4, "bounded attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_mid_body_is_retried() {
    let (blob, server) = setup().await;
    let (_src, layer) = open(&server, &blob, engine()).await;
    server.clear_log();
    server
        .faults
        .reset_mid_body
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        layer.read_file(FILE).await.expect("read"),
        expected_file(&blob, FILE)
    );
    let gets = server.blob_gets();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, gets[1].range);
    assert!(gets[0].sent < gets[1].sent, "first body was cut: {gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_body_is_retried() {
    let (blob, server) = setup().await;
    let (_src, layer) = open(&server, &blob, engine()).await;
    server.clear_log();
    server
        .faults
        .truncate
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        layer.read_file(FILE).await.expect("read"),
        expected_file(&blob, FILE)
    );
    let gets = server.blob_gets();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, gets[1].range);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_response_times_out_and_is_retried() {
    let (blob, server) = setup().await;
    let mut opts = engine();
    opts.retry.request_timeout = Duration::from_millis(400);
    let (_src, layer) = open(&server, &blob, opts).await;
    server.clear_log();
    server
        .faults
        .slow_ms
        .store(3000, std::sync::atomic::Ordering::SeqCst);
    server
        .faults
        .slow
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let t = Instant::now();
    assert_eq!(
        layer.read_file(SMALL).await.expect("read"),
        expected_file(&blob, SMALL)
    );
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "did not wait for the slow answer"
    );
    // The slow request is logged when the server finishes it; the retry is answered at once.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let gets = server.blob_gets();
    assert_eq!(gets.len(), 2, "{gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_ignored_is_streamed_not_buffered() {
    let (blob, server) = setup().await;
    server
        .faults
        .ignore_range
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (src, layer) = open(&server, &blob, engine()).await;
    let after_open = src.http_counters();
    // The footer is at the end: opening had to stream the whole blob (keeping only the tail).
    assert!(after_open.range_ignored >= 1);
    // A file near the start: the client reads only up to the range and hangs up.
    assert_eq!(
        layer.read_file(SMALL).await.expect("read"),
        expected_file(&blob, SMALL)
    );
    let c = src.http_counters();
    let received = c.body_bytes - after_open.body_bytes;
    assert!(
        received < blob.bytes.len() as u64 / 4,
        "received {received} bytes of a {} byte blob",
        blob.bytes.len()
    );
    assert!(server.blob_gets().iter().all(|l| l.status == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_range_answers_are_used_or_abandoned() {
    let (blob, server) = setup().await;
    let ranges = [100..200, 500_000..500_100, 1_000_000..1_000_050];
    let want: Vec<&[u8]> = ranges
        .iter()
        .map(|r| &blob.bytes[r.start as usize..r.end as usize])
        .collect();
    for (mode, expect_multi_again) in [
        (MultiRange::Supported, true),
        (MultiRange::Reject, false),
        (MultiRange::FirstOnly, false),
        (MultiRange::Ignore, false),
        (MultiRange::Garbage, false),
    ] {
        *server.faults.multi.lock().expect("lock") = mode;
        let src = HttpSource::new(
            &url(&server, &blob),
            HttpOptions {
                engine: engine(),
                ..Default::default()
            },
        )
        .expect("source");
        src.len().await.expect("len");
        for round in 0..2 {
            server.clear_log();
            let got = src.read_ranges(&ranges).await.expect("read");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(&g[..], *w, "{mode:?} round {round}");
            }
            let gets = server.blob_gets();
            let multi_requests = gets
                .iter()
                .filter(|l| l.range.as_deref().is_some_and(|r| r.contains(',')))
                .count();
            if round == 0 || expect_multi_again {
                assert!(multi_requests == 1, "{mode:?} round {round}: {gets:?}");
            } else {
                assert_eq!(
                    multi_requests, 0,
                    "{mode:?}: fell back to single ranges for good: {gets:?}"
                );
            }
            if mode == MultiRange::Supported {
                assert_eq!(gets.len(), 1, "one request for three ranges");
            }
        }
        if mode != MultiRange::Supported {
            assert_eq!(src.http_counters().multi_range_fallbacks, 1, "{mode:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_is_renewed_mid_read() {
    let (blob, server) = setup().await;
    server
        .faults
        .token_uses
        .store(2, std::sync::atomic::Ordering::SeqCst);
    // Through RegistrySource: the fault server plays a token-auth registry.
    let reference: estargz_io::Reference = format!("{}/test/blob@{}", server.host(), blob.digest())
        .parse()
        .expect("ref");
    let opts = estargz_io::source::RegistryOptions {
        config: estargz_io::config::RegistryConfig::plain_http(&server.host()),
        keychain: Arc::new(estargz_io::auth::Keychain::empty()),
        engine: engine(),
        ..Default::default()
    };
    let src = Arc::new(estargz_io::source::RegistrySource::new(&reference, opts).expect("source"));
    let layer = RemoteLayer::open(
        src.clone(),
        mem_cache(),
        LayerOptions::with_toc_digest(blob.toc_digest),
    )
    .await
    .expect("open");
    for f in [FILE, SMALL, "sizes/64k", "sizes/64k+1", "links/target.txt"] {
        assert_eq!(
            layer.read_file(f).await.expect(f),
            expected_file(&blob, f),
            "{f}"
        );
    }
    let log = server.log();
    let unauthorized = log.iter().filter(|l| l.status == 401).count();
    let tokens = log.iter().filter(|l| l.path.starts_with("/token")).count();
    assert!(unauthorized >= 3, "tokens expired several times: {log:?}");
    assert_eq!(
        tokens, unauthorized,
        "each 401 led to exactly one new token"
    );
    // Every 401 was followed by the same request with a new token, which succeeded.
    for (i, l) in log.iter().enumerate() {
        if l.status == 401 {
            let retry = log[i + 1..]
                .iter()
                .find(|x| !x.path.starts_with("/token"))
                .expect("retried");
            assert_eq!(retry.range, l.range);
            assert!(retry.status == 206 || retry.status == 200, "{retry:?}");
        }
    }
    assert!(src.http_counters().reauthorizations >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_to_another_host_is_followed_and_reused() {
    let (blob, storage) = setup().await;
    let front = FaultServer::start(blob.bytes.clone()).await;
    *front.faults.redirect_to.lock().expect("lock") = Some(storage.base());
    let (src, layer) = open(&front, &blob, engine()).await;
    for f in [FILE, SMALL, "sizes/64k"] {
        assert_eq!(layer.read_file(f).await.expect(f), expected_file(&blob, f));
    }
    let front_gets = front.blob_gets();
    assert_eq!(
        front_gets.len(),
        1,
        "only the first GET goes to the registry: {front_gets:?}"
    );
    assert_eq!(front_gets[0].status, 307);
    let storage_gets = storage.log();
    assert!(storage_gets.len() >= 4, "{storage_gets:?}");
    assert!(storage_gets
        .iter()
        .all(|l| l.path.starts_with("/redirected/")));
    assert!(
        storage_gets.iter().all(|l| l.authorization.is_none()),
        "no credentials to the storage"
    );
    assert_eq!(src.http_counters().redirects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_are_never_served_nor_cached() {
    let (blob, server) = setup().await;
    let (_src, layer) = open(&server, &blob, engine()).await;
    let node = layer.index().lookup(FILE).expect("file");
    let digests: Vec<_> = layer
        .index()
        .chunks(node)
        .iter()
        .filter_map(|c| layer.index().chunk_digest(c).expect("digest"))
        .collect();

    // Damaged once: detected, fetched again, served correctly.
    server.clear_log();
    server
        .faults
        .corrupt
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let mut buf = vec![0u8; 1000];
    let n = layer.read_at(node, 0, &mut buf).await.expect("read");
    assert_eq!(&buf[..n], &expected_file(&blob, FILE)[..1000]);
    let gets = server.blob_gets();
    assert_eq!(
        gets.len(),
        2,
        "re-fetched after the digest mismatch: {gets:?}"
    );
    assert_eq!(layer.metrics().integrity_failures, 1);

    // Always damaged: the read fails with an integrity error naming the file, nothing cached.
    server
        .faults
        .corrupt
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let mut buf = vec![0u8; 1000];
    let err = layer
        .read_at(node, 200_000, &mut buf)
        .await
        .expect_err("corrupt");
    assert!(err.is_integrity(), "{err}");
    assert!(err.to_string().contains(FILE), "{err}");
    assert!(buf.iter().all(|&b| b == 0), "nothing copied out");
    let chunk = layer
        .index()
        .chunks(node)
        .iter()
        .find(|c| c.file_range().contains(&200_000))
        .copied()
        .expect("chunk");
    let digest = layer.index().chunk_digest(&chunk).expect("read");
    assert!(!layer.cache().contains(&digest.expect("digest")));
    assert!(
        layer.cache().contains(&digests[0]),
        "the good chunk stays cached"
    );

    // Healthy again: served.
    server
        .faults
        .corrupt
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let n = layer.read_at(node, 200_000, &mut buf).await.expect("read");
    assert_eq!(&buf[..n], &expected_file(&blob, FILE)[200_000..201_000]);
}

/// Sources opened on one runtime share one HTTP client (one set of TLS roots, one connection
/// pool): a second layer over the same server reuses the first one's idle connections. A
/// source on another runtime has its own client, so it connects again.
///
/// Judged by which connection served each request, not by counting connections: the second
/// layer may rightly open more connections than the first left idle (parallel chunk fetches,
/// or a connection not yet back in the pool between two sequential requests; both seen in
/// CI), but with a shared pool its first request takes one of the first layer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_on_one_runtime_share_a_connection_pool() {
    let (blob, server) = setup().await;
    let (_src, first) = open(&server, &blob, engine()).await;
    assert_eq!(
        first.read_file(FILE).await.expect("read"),
        expected_file(&blob, FILE)
    );
    // The pool takes a connection back once the connection task has seen the end of the
    // response, which may be just after the body was read: give it that moment.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let first_requests = server.log().len();
    let first_connections = server.connections();
    assert!(first_connections >= 1);
    let (_src, second) = open(&server, &blob, engine()).await;
    assert_eq!(
        second.read_file(FILE).await.expect("read"),
        expected_file(&blob, FILE)
    );
    let log = server.log();
    let second_log = &log[first_requests..];
    assert!(!second_log.is_empty());
    assert!(
        second_log[0].connection <= first_connections,
        "the second layer's first request came on a new connection ({} > {first_connections})",
        second_log[0].connection
    );
    let before_other = server.connections();
    let other_requests = log.len();

    let url = url(&server, &blob);
    let toc_digest = blob.toc_digest;
    let other = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let src = HttpSource::new(
                &url,
                HttpOptions {
                    engine: engine(),
                    ..HttpOptions::default()
                },
            )
            .expect("source");
            RemoteLayer::open(
                Arc::new(src),
                mem_cache(),
                LayerOptions::with_toc_digest(toc_digest),
            )
            .await
            .map(|_| ())
        })
    });
    tokio::task::spawn_blocking(move || other.join())
        .await
        .expect("join")
        .expect("thread")
        .expect("open on another runtime");
    let log = server.log();
    let other_log = &log[other_requests..];
    assert!(!other_log.is_empty());
    assert!(
        other_log.iter().all(|l| l.connection > before_other),
        "a source on another runtime reused a connection of this one: {other_log:?}"
    );
}
