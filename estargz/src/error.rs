//! The one error type of the crate.
//!
//! Every variant names what was wrong and where: the entry, the blob or file offset, the field.
//! Nothing in this crate panics on bytes that came from outside the process; it returns one of
//! these instead.

use std::io;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while parsing, verifying, reading or building a blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading from the blob source (or writing output) failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done, e.g. `reading blob range 100..200`.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// No footer parser recognised the end of the blob.
    #[error("not an eStargz, stargz or zstd:chunked blob ({blob_size} bytes): {reasons}")]
    NotEstargz {
        /// Size of the blob that was examined.
        blob_size: u64,
        /// Why each footer format was rejected, joined with `; `.
        reasons: String,
    },

    /// A footer had the right shape for a format but an invalid field.
    #[error("invalid {format} footer: {reason}")]
    Footer {
        /// Which footer format, e.g. `eStargz`.
        format: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// The TOC could not be located, decompressed or parsed.
    #[error("invalid TOC: {0}")]
    Toc(String),

    /// The TOC is larger than the configured limit.
    #[error("TOC {what} size {size} exceeds the limit of {limit} bytes (raise the limit in OpenOptions if the blob is trusted)")]
    TocTooLarge {
        /// `compressed` or `uncompressed`.
        what: &'static str,
        /// The size found (for uncompressed data: at least this much).
        size: u64,
        /// The configured limit.
        limit: u64,
    },

    /// The TOC has more entries than the configured limit.
    #[error(
        "TOC has more than {limit} entries (raise the limit in OpenOptions if the blob is trusted)"
    )]
    TooManyEntries {
        /// The configured limit.
        limit: usize,
    },

    /// The TOC's digest differs from the one the caller expected.
    #[error("TOC digest mismatch: the TOC hashes to {actual}, but {expected} was expected")]
    TocDigestMismatch {
        /// The expected digest.
        expected: String,
        /// The digest of the TOC bytes actually read.
        actual: String,
    },

    /// A string that should be a digest (`sha256:<64 hex>`) is not one.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// The offending string.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A TOC entry is inconsistent (bad offsets, chunks, hardlink target, parent, ...).
    #[error("TOC entry {index} ({name:?}): {reason}")]
    InvalidEntry {
        /// Position of the entry in the TOC.
        index: usize,
        /// The entry's name as written in the TOC.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A chunk's uncompressed bytes do not hash to its recorded digest.
    #[error("{path:?}: chunk at file offset {chunk_offset} (blob offset {blob_offset}, {chunk_size} bytes) does not match its digest: got {actual}, TOC says {expected}")]
    ChunkDigestMismatch {
        /// The file's normalised path.
        path: String,
        /// Offset of the chunk in the file.
        chunk_offset: u64,
        /// Size of the chunk.
        chunk_size: u64,
        /// Compressed offset of the chunk's member/frame in the blob.
        blob_offset: u64,
        /// Digest recorded in the TOC.
        expected: String,
        /// Digest of the bytes actually decompressed.
        actual: String,
    },

    /// A chunk has no digest in the TOC, so it cannot be verified.
    #[error("{path:?}: chunk at file offset {chunk_offset} has no digest in the TOC; it cannot be verified (legacy stargz blobs can be read with verification disabled)")]
    MissingDigest {
        /// The file's normalised path.
        path: String,
        /// Offset of the chunk in the file.
        chunk_offset: u64,
    },

    /// Decompressing a chunk or the TOC failed, or gave fewer bytes than the TOC promises.
    #[error("{path:?}: cannot decompress the chunk at file offset {chunk_offset} (blob offset {blob_offset}): {reason}")]
    Decompress {
        /// The file's normalised path (or `stargz.index.json` for the TOC).
        path: String,
        /// Offset of the chunk in the file.
        chunk_offset: u64,
        /// Compressed offset in the blob.
        blob_offset: u64,
        /// What went wrong.
        reason: String,
    },

    /// No entry exists at this path.
    #[error("{0:?}: no such file or directory in the layer")]
    NotFound(String),

    /// The path exists but is not a regular file.
    #[error("{0:?}: not a regular file")]
    NotAFile(String),

    /// A read asked for a negative/invalid range or the caller misused the plan API.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The builder's input is not a valid tar archive (bad checksum, truncated, bad field).
    #[error("input tar at offset {offset}{}: {reason}", if entry.is_empty() { String::new() } else { format!(" (entry {entry:?})") })]
    Tar {
        /// Offset of the header (or data) where the problem is.
        offset: u64,
        /// The entry's name as far as it is known (may be empty).
        entry: String,
        /// What is wrong.
        reason: String,
    },

    /// The builder's input has an entry eStargz cannot carry (PAX global header, sparse or
    /// contiguous file, unknown type).
    #[error("input tar entry {entry:?} at offset {offset} (typeflag {typeflag:?}): {reason}")]
    UnsupportedEntry {
        /// Offset of the entry's first header.
        offset: u64,
        /// The entry's name.
        entry: String,
        /// Its tar typeflag.
        typeflag: char,
        /// Why and what to do.
        reason: String,
    },

    /// Prioritised files are missing from the builder's input (and missing ones are not
    /// allowed).
    #[error("prioritized files not found in the input tar: {}", .0.join(", "))]
    PrioritizedNotFound(Vec<String>),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::InvalidEntry`] for the entry at `index` named `name`.
    pub fn entry(index: usize, name: &str, reason: impl Into<String>) -> Self {
        Error::InvalidEntry {
            index,
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// Fills in the file path of a chunk error that was raised without one (`path` is only
    /// called when needed).
    pub fn with_path(mut self, path: impl FnOnce() -> String) -> Self {
        match &mut self {
            Error::ChunkDigestMismatch { path: p, .. }
            | Error::MissingDigest { path: p, .. }
            | Error::Decompress { path: p, .. }
                if p.is_empty() =>
            {
                *p = path();
            }
            _ => {}
        }
        self
    }

    /// True when the error means the data did not match its digest (tampering or corruption).
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            Error::ChunkDigestMismatch { .. }
                | Error::TocDigestMismatch { .. }
                | Error::Decompress { .. }
        )
    }
}
