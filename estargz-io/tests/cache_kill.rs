//! Crash safety of the disk cache: a child process (this test binary, re-executed) writes
//! chunks into a cache directory in a loop and is killed with SIGKILL mid-way; the reopened
//! cache then serves every chunk it has with the right bytes, and nothing torn.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use estargz_io::cache::CacheOptions;
use estargz_io::ChunkCache;

const CHILD_ENV: &str = "ESTARGZ_IO_CACHE_KILL_CHILD_DIR";

/// Every chunk of a vector, verified with the core crate's sync reader.
fn verified_chunks() -> Vec<estargz::plan::VerifiedChunk> {
    let blob = support::vector_blob("edge-gzip-chunk64k");
    let reader = estargz::Reader::open(blob.bytes.to_vec()).expect("open");
    let mut seen = std::collections::HashSet::new();
    reader
        .index()
        .all_chunks()
        .iter()
        .filter(|c| {
            reader
                .index()
                .chunk_digest(c)
                .expect("digest")
                .is_some_and(|d| seen.insert(d))
        })
        .map(|c| reader.read_chunk("", c).expect("chunk"))
        .collect()
}

/// The child's body: only runs when re-executed by the test below.
#[test]
fn cache_kill_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let opts = CacheOptions {
        memory_bytes: 1 << 20,
        dir: Some(dir.into()),
        disk_bytes: 1 << 30,
        verify_disk_reads: true,
    };
    let chunks = verified_chunks();
    let cache = ChunkCache::open(&opts).expect("cache");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rounds = 0u64;
    // Write, remove, write again, until killed (bounded in case nobody kills us).
    while Instant::now() < deadline {
        for c in &chunks {
            if let Some(d) = c.digest() {
                cache.remove(&d);
            }
            cache.insert_blocking(c.clone());
        }
        rounds += 1;
        if rounds == 1 {
            println!("first-round-done");
        }
    }
}

#[test]
fn killed_writer_never_leaves_a_torn_chunk() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let chunks = verified_chunks();
    let exe = std::env::current_exe().expect("exe");
    for kill_after_ms in [120u64, 250, 500] {
        let dir = tempfile::tempdir().expect("tmp");
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "cache_kill_child_writer",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        let _ = child.wait();

        let files_before: usize = walk(dir.path()).len();
        let cache = ChunkCache::open(&CacheOptions {
            memory_bytes: 1 << 20,
            dir: Some(dir.path().to_path_buf()),
            disk_bytes: 1 << 30,
            verify_disk_reads: true,
        })
        .expect("reopen");
        let tmp_left = walk(&dir.path().join("tmp")).len();
        assert_eq!(tmp_left, 0, "unfinished writes are cleaned at open");
        let mut present = 0;
        for c in &chunks {
            let d = c.digest().expect("digest");
            if let Some(data) = cache.get_blocking(&d) {
                assert_eq!(&data[..], c.data(), "chunk {d} served with wrong bytes");
                present += 1;
            }
        }
        assert_eq!(cache.stats().corrupt, 0, "no committed file was torn");
        eprintln!(
            "killed after {kill_after_ms} ms: {files_before} files, {present}/{} chunks present",
            chunks.len()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
