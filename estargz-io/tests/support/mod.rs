//! Shared fixtures of the estargz-io behaviour tests: a real registry (Debian's
//! `docker-registry`, plain, htpasswd or token auth) started on a free loopback port, and an
//! in-process fault-injecting HTTP server with a request log.
#![allow(dead_code)]

pub mod fault;
pub mod registry;

use std::sync::Arc;

use bytes::Bytes;
use estargz::Digest;
use estargz_testkit::vectors::Vector;

/// A test blob: bytes, TOC digest, and the vector it came from.
pub struct TestBlob {
    pub bytes: Bytes,
    pub toc_digest: Digest,
    pub vector: Vector,
}

impl TestBlob {
    pub fn digest(&self) -> Digest {
        Digest::of(&self.bytes)
    }
}

/// A stored conformance vector's blob.
pub fn vector_blob(name: &str) -> TestBlob {
    let vector = Vector::load(name).expect("vector");
    let path = vector.blob_path().expect("blob stored");
    let bytes = Bytes::from(std::fs::read(path).expect("read blob"));
    let toc_digest = Digest::parse(
        vector
            .manifest
            .expected
            .toc_digest
            .as_deref()
            .expect("toc digest"),
    )
    .expect("digest");
    TestBlob {
        bytes,
        toc_digest,
        vector,
    }
}

/// The expected content of `path` in the blob, read with the core crate's sync reader.
pub fn expected_file(blob: &TestBlob, path: &str) -> Vec<u8> {
    use std::io::Read;
    let reader = estargz::Reader::open(blob.bytes.to_vec()).expect("open");
    let mut f = reader.open_file(path).expect("file");
    let mut out = Vec::new();
    f.read_to_end(&mut out).expect("read");
    out
}

/// A memory-only cache.
pub fn mem_cache() -> Arc<estargz_io::ChunkCache> {
    Arc::new(estargz_io::ChunkCache::memory(256 << 20))
}

/// Fast retries for tests.
pub fn fast_retry() -> estargz_io::config::RetryPolicy {
    estargz_io::config::RetryPolicy {
        max_attempts: 4,
        initial_backoff: std::time::Duration::from_millis(5),
        max_backoff: std::time::Duration::from_millis(50),
        max_elapsed: std::time::Duration::from_secs(20),
        request_timeout: std::time::Duration::from_secs(10),
        connect_timeout: std::time::Duration::from_secs(5),
    }
}
