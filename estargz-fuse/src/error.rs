//! The crate's one error type: everything that can fail while opening a layer, mounting or
//! unmounting it. Errors inside FUSE callbacks never surface here: they become an errno in the
//! reply (almost always `EIO`) and are counted in [`crate::FsStats`].

use std::io;
use std::path::PathBuf;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong outside a FUSE callback.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The blob could not be opened or its TOC is invalid.
    #[error("cannot open layer {what}: {source}")]
    Layer {
        /// Which blob (a path or URL).
        what: String,
        /// What the format layer said.
        #[source]
        source: estargz::Error,
    },

    /// A remote blob could not be opened (network, registry, TOC digest, format).
    #[error("cannot open layer {what}: {source}")]
    Remote {
        /// Which blob (a URL or registry reference).
        what: String,
        /// What `estargz-io` said.
        #[source]
        source: Box<estargz_io::Error>,
    },

    /// A file or directory of the local cache could not be used.
    #[error("cache {path}: {source}")]
    Cache {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Mounting failed.
    #[error("cannot mount at {mountpoint}: {source}")]
    Mount {
        /// Where.
        mountpoint: PathBuf,
        /// Why (from the kernel, `fusermount3` or the FUSE handshake).
        #[source]
        source: io::Error,
    },

    /// Unmounting failed (for example the filesystem is busy and a lazy unmount was refused).
    #[error("cannot unmount {mountpoint}: {source}")]
    Unmount {
        /// Where.
        mountpoint: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The mountpoint is already an active mount of another filesystem.
    #[error("{0} is already a mountpoint; unmount it first")]
    AlreadyMounted(PathBuf),
}

impl Error {
    /// A [`Error::Cache`] error.
    pub(crate) fn cache(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Cache {
            path: path.into(),
            source,
        }
    }
}
