//! Test fixtures shared by every crate's tests and benches. Dev-only: never a dependency of a
//! published crate.
//!
//! - [`vectors`]: the conformance vectors in `testdata/vectors` (made by the Go oracle): their
//!   `manifest.json`, `tree.jsonl` and `ls.jsonl`, and the paths of their blobs and TOCs.
//! - [`inputs`]: the input tars behind the vectors, including `random.tar`, which is not stored
//!   but regenerated bit-exactly and cached under `target/testdata`.
//! - [`prereq`]: the rule for tests that need something from outside the process (root, FUSE,
//!   the Go oracle, a registry): under CI a missing prerequisite fails the test, elsewhere the
//!   test prints why it is skipped and returns.
//! - [`synth`]: deterministic synthetic tars (many small files, one big file, every entry type,
//!   a wide tree) built with the `tar` crate from a seeded in-crate PRNG.
//!
//! Paths are absolute and derived from this crate's location at compile time, so a test finds
//! the fixtures whatever its working directory is.
//!
//! ```
//! let edge = estargz_testkit::vectors::Vector::load("edge-gzip-default").expect("vector");
//! assert!(edge.manifest.expected.is_ok());
//! assert!(edge.blob_path().is_some());
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod error;
pub mod inputs;
pub mod prereq;
pub mod synth;
pub mod vectors;

pub use error::{Error, Result};
pub use inputs::random_tar;
pub use prereq::{in_ci, is_root, oracle, prerequisite_missing, require, require_oracle};
pub use vectors::Vector;

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_dir() -> PathBuf {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().unwrap_or(testkit).to_path_buf()
}

/// `<workspace>/testdata`: every fixture that is stored in the repository.
pub fn testdata_dir() -> PathBuf {
    workspace_dir().join("testdata")
}

/// `<workspace>/testdata/vectors`: the conformance vectors made by the Go oracle.
pub fn vectors_dir() -> PathBuf {
    testdata_dir().join("vectors")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` when set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_dir().join(dir)
            }
        }
        _ => workspace_dir().join("target"),
    }
}

/// `sha256:<lowercase hex>` of `bytes`, the digest format of the TOC and the vectors.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `<target>/testdata`: generated fixtures (such as `random.tar`) cached between test runs.
pub fn generated_dir() -> PathBuf {
    target_dir().join("testdata")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_digest_format() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn dirs_are_absolute_and_exist() {
        for dir in [workspace_dir(), testdata_dir(), vectors_dir()] {
            assert!(dir.is_absolute(), "{}", dir.display());
            assert!(dir.is_dir(), "{} is not a directory", dir.display());
        }
        assert!(workspace_dir().join("Cargo.toml").is_file());
        assert!(vectors_dir().join("README.md").is_file());
    }
}
