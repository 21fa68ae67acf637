//! The snapshotter's error: one variant per containerd `errdefs` class, so the gRPC layer can
//! answer with the status code containerd expects (`AlreadyExists` is how a remote snapshot
//! tells containerd to skip a layer's download).

/// What went wrong in a snapshot operation. The message names the snapshot (key or name).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The snapshot (or its parent) does not exist. gRPC `NotFound`.
    #[error("{0}: not found")]
    NotFound(String),
    /// A snapshot of that name already exists. gRPC `AlreadyExists`.
    #[error("{0}: already exists")]
    AlreadyExists(String),
    /// The snapshot is not in a state that allows the operation (committed, has children, ...).
    /// gRPC `FailedPrecondition`.
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    /// A malformed request (bad filter, bad field path, parent not committed). gRPC
    /// `InvalidArgument`.
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    /// A remote layer under the snapshot cannot be served right now. gRPC `Unavailable`.
    #[error("{0}: unavailable")]
    Unavailable(String),
    /// The metadata database failed.
    #[error("metadata store: {0}")]
    Store(String),
    /// A filesystem operation on the snapshot directories failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else (a remote mount that failed in strict mode, ...). gRPC `Internal`... or
    /// `Unknown`.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(
        what: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

macro_rules! store_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
store_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => tonic::Status::not_found(msg),
            Error::AlreadyExists(_) => tonic::Status::already_exists(msg),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            Error::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            Error::Unavailable(_) => tonic::Status::unavailable(msg),
            Error::Store(_) | Error::Io { .. } | Error::Other(_) => tonic::Status::unknown(msg),
        }
    }
}
