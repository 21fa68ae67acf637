//! The testkit's error type: every failure names the file (and line) it came from.

use std::io;
use std::path::PathBuf;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while loading fixtures or generating inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or listing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A JSON document (or one line of a JSON Lines file) did not parse.
    #[error("{path}:{line}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number for JSON Lines files; 0 for a whole-file document.
        line: usize,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// A fixture is not there (for example `tree.jsonl` of a vector whose build failed).
    #[error("{path}: not present ({why})")]
    Missing {
        /// The path that was looked for.
        path: PathBuf,
        /// Why it is absent or what to do about it.
        why: String,
    },

    /// A field of a manifest has a value that cannot be decoded (bad base64 or hex).
    #[error("{path}: field {field}: {message}")]
    BadField {
        /// The manifest.
        path: PathBuf,
        /// The field, e.g. `files[3].nameBase64`.
        field: String,
        /// What was wrong.
        message: String,
    },

    /// A helper command (such as `python3 gen_inputs.py`) could not run or failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr, or the spawn error.
        message: String,
    },

    /// A regenerated input does not have the digest the vectors were made from.
    #[error("{path}: sha256 is {actual}, expected {expected}")]
    Digest {
        /// The generated file.
        path: PathBuf,
        /// The digest the manifests record.
        expected: String,
        /// The digest of what was generated.
        actual: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
