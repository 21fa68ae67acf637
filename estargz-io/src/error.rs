//! The one error type of the crate.
//!
//! Every network error names the URL and, where there is one, the byte range being fetched, so
//! a failed lazy read in a log says which blob and which bytes. Format and verification errors
//! of the core crate are wrapped unchanged ([`Error::Format`]).

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Byte ranges as written in an HTTP `Range` header (`bytes=0-99,200-299`), for error messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeList(pub Vec<Range<u64>>);

impl fmt::Display for RangeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("whole blob");
        }
        f.write_str("bytes=")?;
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}-{}", r.start, r.end.saturating_sub(1))?;
        }
        Ok(())
    }
}

impl From<&[Range<u64>]> for RangeList {
    fn from(r: &[Range<u64>]) -> Self {
        RangeList(r.to_vec())
    }
}

impl From<Range<u64>> for RangeList {
    fn from(r: Range<u64>) -> Self {
        RangeList(vec![r])
    }
}

/// Everything that can go wrong while fetching, verifying, caching or pushing blobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The blob's format, TOC or a chunk's digest was wrong (from the core crate).
    #[error(transparent)]
    Format(#[from] estargz::Error),

    /// The server answered with a status that is not success for this request.
    #[error("{method} {url} ({range}): HTTP {status}{}", if .detail.is_empty() { String::new() } else { format!(": {}", .detail) })]
    Status {
        /// `GET`, `HEAD`, ...
        method: &'static str,
        /// The URL requested.
        url: String,
        /// The ranges requested.
        range: RangeList,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body or a note on what was expected.
        detail: String,
    },

    /// The connection failed, was reset, or timed out.
    #[error("{method} {url} ({range}): {message}")]
    Transport {
        /// `GET`, `HEAD`, ...
        method: &'static str,
        /// The URL requested.
        url: String,
        /// The ranges requested.
        range: RangeList,
        /// What went wrong (with the underlying error's chain).
        message: String,
        /// Whether this was a timeout.
        timeout: bool,
    },

    /// The server's answer was malformed: bad `Content-Range`, bad multipart body, a body
    /// shorter or longer than announced.
    #[error("{url} ({range}): invalid response: {reason}")]
    Protocol {
        /// The URL requested.
        url: String,
        /// The ranges requested.
        range: RangeList,
        /// What was wrong.
        reason: String,
    },

    /// Authentication with the registry (or its token server) failed.
    #[error("authentication for {url} failed: {reason}")]
    Auth {
        /// The URL that asked for authentication, or the token endpoint.
        url: String,
        /// Why.
        reason: String,
    },

    /// All attempts failed; the last error is kept.
    #[error("giving up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },

    /// A reference (`HOST/REPO@sha256:DIGEST`) or URL could not be parsed.
    #[error("invalid reference {value:?}: {reason}")]
    Reference {
        /// The string given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A configuration file or value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A local file or the disk cache failed.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The layer has no expected TOC digest and the caller did not opt out of verification.
    #[error("refusing to open {0} without an expected TOC digest (the layer's containerd.io/snapshot/stargz/toc.digest annotation); pass one, or explicitly allow an unverified TOC")]
    MissingTocDigest(String),

    /// The operation was cancelled (background fetch stopped, layer closed).
    #[error("cancelled")]
    Cancelled,

    /// A caller passed an argument that makes no sense (empty range, range past the blob).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An error shared by several waiters of one deduplicated fetch.
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when trying the same request again may succeed: connection failures, timeouts,
    /// truncated or malformed bodies, 408, 429 and 5xx (except 501).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Protocol { .. } => true,
            Error::Status { status, .. } => {
                matches!(*status, 408 | 429) || (*status >= 500 && *status != 501)
            }
            Error::Shared(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// True when the data did not match its digest (tampering or corruption).
    pub fn is_integrity(&self) -> bool {
        match self {
            Error::Format(e) => e.is_integrity(),
            Error::Shared(e) => e.is_integrity(),
            Error::RetriesExhausted { last, .. } => last.is_integrity(),
            _ => false,
        }
    }

    /// The HTTP status of the error, if the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Shared(e) => e.status(),
            Error::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }
}

impl From<Arc<Error>> for Error {
    fn from(e: Arc<Error>) -> Self {
        Error::Shared(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_list_is_an_http_range() {
        assert_eq!(
            RangeList(vec![0..100, 200..300]).to_string(),
            "bytes=0-99,200-299"
        );
        assert_eq!(RangeList::default().to_string(), "whole blob");
    }

    #[test]
    fn retryable_statuses() {
        let s = |status| Error::Status {
            method: "GET",
            url: "u".into(),
            range: RangeList::default(),
            status,
            detail: String::new(),
        };
        assert!(s(503).is_retryable());
        assert!(s(429).is_retryable());
        assert!(!s(501).is_retryable());
        assert!(!s(404).is_retryable());
        assert!(s(500).to_string().contains("HTTP 500"));
    }
}
