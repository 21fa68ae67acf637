//! Failures: a source that stalls or fails answers `EIO` within the deadline and the mount
//! stays usable (other files, later reads); tampered chunks give `EIO`, never wrong bytes.

mod common;

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use estargz_fuse::estargz::index::NodeId;
use estargz_fuse::estargz::{Digest, Index};
use estargz_fuse::{LayerSource, LocalLayer, LocalOptions};

use common::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Healthy,
    Stall,
    Fail,
}

/// A layer whose reads of one file can be made to hang or fail, like a registry that stalls
/// or dies mid-read. Reads are never "local", so they go through the deadline path.
struct Flaky {
    inner: LocalLayer,
    victim: NodeId,
    mode: Mutex<Mode>,
    changed: Condvar,
}

impl Flaky {
    fn set(&self, m: Mode) {
        *self.mode.lock().expect("lock") = m;
        self.changed.notify_all();
    }
}

impl LayerSource for Flaky {
    fn index(&self) -> &Index {
        self.inner.index()
    }
    fn toc_digest(&self) -> Digest {
        self.inner.toc_digest()
    }
    fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if node == self.victim {
            let mut m = self.mode.lock().expect("lock");
            while *m == Mode::Stall {
                m = self.changed.wait(m).expect("wait");
            }
            if *m == Mode::Fail {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "registry went away",
                ));
            }
        }
        self.inner.read_at(node, offset, buf)
    }
    fn is_local(&self, _node: NodeId, _range: Range<u64>) -> bool {
        false
    }
}

fn edge_blob() -> std::path::PathBuf {
    estargz_testkit::Vector::load("edge-gzip-default")
        .expect("vector")
        .blob_path()
        .expect("stored blob")
}

#[test]
fn stalled_or_failing_reads_get_eio_and_later_reads_retry() {
    if !fuse_ready() {
        return;
    }
    let inner = LocalLayer::open(&edge_blob(), LocalOptions::default()).expect("open");
    let victim = inner.index().lookup("sizes/4mib+1").expect("victim file");
    let want = {
        let mut b = vec![0u8; (4 << 20) + 1];
        let n = inner.read_at(victim, 0, &mut b).expect("direct read");
        b.truncate(n);
        b
    };
    let flaky = Arc::new(Flaky {
        inner,
        victim,
        mode: Mutex::new(Mode::Stall),
        changed: Condvar::new(),
    });
    let mut opts = test_options();
    opts.fs.read_timeout = Some(Duration::from_millis(800));
    opts.fs.keep_cache = false;
    let m = mount_source(Arc::clone(&flaky), &opts);
    let path = m.path().join("sizes/4mib+1");

    let start = Instant::now();
    let err = std::fs::read(&path).expect_err("a stalled read fails");
    let took = start.elapsed();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::IO.raw_os_error()),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "EIO took {took:?}");
    assert!(m.mount().stats().read_timeouts >= 1);

    // While that file is stalled, everything else is served.
    let other = std::fs::read(m.path().join("dup/file.txt")).expect("other file");
    assert_eq!(other.len(), 38);
    assert!(
        std::fs::read_dir(m.path().join("sizes"))
            .expect("readdir")
            .count()
            > 1
    );

    // A registry that errors: EIO at once.
    flaky.set(Mode::Fail);
    let err = std::fs::read(&path).expect_err("a failing read fails");
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::IO.raw_os_error())
    );

    // Recovery: later reads retry and get the right bytes.
    flaky.set(Mode::Healthy);
    assert!(std::fs::read(&path).expect("read after recovery") == want);
    let s = m.mount().stats();
    assert!(s.read_errors >= 1 && s.last_error.is_some(), "{s:?}");
}

/// Flips one byte inside `path`'s first chunk's compressed data.
fn tamper(blob: &Path, out: &Path, path: &str) -> NodeId {
    let layer = LocalLayer::open(blob, LocalOptions::default()).expect("open");
    let node = layer.index().lookup(path).expect("file");
    let chunk = layer.index().chunks(node)[0];
    let mut bytes = std::fs::read(blob).expect("read blob");
    let at = (chunk.blob_offset() + chunk.blob_end()) / 2;
    bytes[at as usize] ^= 0x55;
    std::fs::write(out, bytes).expect("write tampered blob");
    node
}

#[test]
fn tampered_chunks_give_eio_never_wrong_bytes() {
    if !fuse_ready() {
        return;
    }
    let work = scratch("tamper");
    let bad = work.path().join("bad.esgz");
    tamper(&edge_blob(), &bad, "sizes/4mib+1");
    let m = mount_source(local(&bad, LocalOptions::default()), &test_options());
    let victim = m.path().join("sizes/4mib+1");
    for _ in 0..2 {
        let err = std::fs::read(&victim).expect_err("tampered data must not be served");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::IO.raw_os_error())
        );
    }
    // Metadata and untouched files are fine.
    assert_eq!(
        std::fs::metadata(&victim).expect("stat").len(),
        (4 << 20) + 1
    );
    assert_eq!(
        std::fs::read(m.path().join("dup/file.txt"))
            .expect("other")
            .len(),
        38
    );
    let s = m.mount().stats();
    assert!(s.read_errors >= 1, "{s:?}");
    assert!(
        s.last_error.as_deref().is_some_and(|e| e.contains("node")),
        "{s:?}"
    );
}
