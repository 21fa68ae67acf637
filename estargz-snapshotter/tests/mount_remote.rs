//! `estargz mount` of a remote BLOB: without `--toc-digest` (and without the explicit
//! `--allow-unverified-toc` opt-out) it refuses before touching the network or the mountpoint.
//! The lazy mount itself over HTTP is exercised by `scripts/demo.sh` (examples/tests/demo_run.rs)
//! and over a registry by estargz-fuse/tests/remote.rs.

use std::process::Command;

#[test]
fn remote_blob_without_toc_digest_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for blob in [
        "http://127.0.0.1:9/layer.esgz",
        "127.0.0.1:9/repo@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_estargz"))
            .args(["mount", blob])
            .arg(dir.path())
            .output()
            .expect("run estargz");
        assert_eq!(out.status.code(), Some(1), "{blob}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--toc-digest") && err.contains("--allow-unverified-toc"),
            "{blob}: {err}"
        );
    }
    // With the opt-out the refusal is gone: what fails now is the network (nothing listens on
    // port 9), reported as an error opening the layer.
    let out = Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(["mount", "http://127.0.0.1:9/layer.esgz"])
        .arg(dir.path())
        .arg("--allow-unverified-toc")
        .output()
        .expect("run estargz");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open layer") && !err.contains("--allow-unverified-toc"),
        "{err}"
    );
}
