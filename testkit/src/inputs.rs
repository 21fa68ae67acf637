//! The input tars behind the vectors.
//!
//! `edge.tar` and the quirk tars are stored under `testdata/vectors/inputs`. `random.tar`
//! (80 MiB, "input b") is not: [`random_tar`] regenerates it bit-exactly with the oracle's own
//! generator, `tools/esgz-oracle/gen_inputs.py` (Python standard library only), checks its
//! digest against the one the manifests record and caches it under `target/testdata`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use sha2::Digest as _;

use crate::error::{Error, Result};

/// `sha256:` digest of `random.tar`, as recorded in the `random-*` vectors' manifests.
pub const RANDOM_TAR_SHA256: &str =
    "sha256:c70bc1020f6490fba5d7a4fa2ce39901e5c705ddf59e61f35984b5d0f621c4cf";

/// Size of `random.tar` in bytes: a dir, 3 × 20 MiB SHAKE-256 bytes and 20 MiB of text.
pub const RANDOM_TAR_SIZE: u64 = 83_896_320;

/// The oracle's input generator, `tools/esgz-oracle/gen_inputs.py`.
pub fn gen_inputs_py() -> PathBuf {
    crate::workspace_dir().join("tools/esgz-oracle/gen_inputs.py")
}

/// `testdata/vectors/inputs/edge.tar`: 89 edge-case members in mixed PAX/GNU/USTAR formats.
pub fn edge_tar() -> PathBuf {
    crate::vectors_dir().join("inputs/edge.tar")
}

/// `testdata/vectors/inputs/quirks/<file>`, e.g. `quirk_tar("q-root-entries.tar")`.
pub fn quirk_tar(file: &str) -> PathBuf {
    crate::vectors_dir().join("inputs/quirks").join(file)
}

/// `sha256:<hex>` of a file's content, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Serialises generation within one test process; across processes (nextest runs each test in
/// its own) the write-to-temp-then-rename keeps the cached file whole.
static GENERATE: Mutex<()> = Mutex::new(());

/// The path of `random.tar`, generating it on first use (about 2 s; needs `python3`).
///
/// The file is written to a temporary name, its sha256 checked against
/// [`RANDOM_TAR_SHA256`], then renamed into `target/testdata/random.tar`, so a file found
/// there with the right size is a verified one.
pub fn random_tar() -> Result<PathBuf> {
    let _guard = GENERATE.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = crate::generated_dir();
    let path = dir.join("random.tar");
    if fs::metadata(&path).is_ok_and(|m| m.len() == RANDOM_TAR_SIZE) {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!("random.tar.tmp.{}", std::process::id()));
    let script = gen_inputs_py();
    let command = format!("python3 {} random {}", script.display(), tmp.display());
    let output = Command::new("python3")
        .arg(&script)
        .arg("random")
        .arg(&tmp)
        .output()
        .map_err(|e| Error::Command {
            command: command.clone(),
            message: format!("cannot run python3: {e}"),
        })?;
    if !output.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Command {
            command,
            message: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let actual = sha256_file(&tmp)?;
    if actual != RANDOM_TAR_SHA256 {
        let _ = fs::remove_file(&tmp);
        return Err(Error::Digest {
            path: tmp,
            expected: RANDOM_TAR_SHA256.to_string(),
            actual,
        });
    }
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_inputs_exist() {
        assert_eq!(fs::metadata(edge_tar()).expect("edge.tar").len(), 8_919_040);
        assert!(quirk_tar("q-root-entries.tar").is_file());
        assert!(gen_inputs_py().is_file());
    }

    #[test]
    fn random_tar_is_bit_exact() {
        let path = random_tar().expect("random.tar");
        assert_eq!(sha256_file(&path).expect("sha256"), RANDOM_TAR_SHA256);
        let mut archive = tar::Archive::new(fs::File::open(&path).expect("open"));
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "big/",
                "big/random-0.bin",
                "big/random-1.bin",
                "big/random-2.bin",
                "big/text.txt"
            ]
        );
    }
}
