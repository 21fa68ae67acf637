//! Footers: the fixed-size tail of a blob that says where the TOC is.
//!
//! One enum covers every footer of the family. Parsing is strict (exact lengths, magic numbers,
//! lowercase hex, sizes that fit) and never slices out of range; writing produces the exact
//! bytes the reference writers produce.

use crate::error::{Error, Result};

/// Every footer this crate reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Footer {
    /// eStargz: a 51-byte empty gzip member whose extra field holds the TOC offset.
    Estargz {
        /// Blob offset of the gzip member holding the TOC tar entry.
        toc_offset: u64,
    },
    /// Legacy stargz (Google CRFS): a 47-byte empty gzip member.
    Legacy {
        /// Blob offset of the gzip member holding the TOC tar entry.
        toc_offset: u64,
    },
    /// eStargz with an external TOC: a 46-byte marker; the TOC lives in another blob.
    ExternalToc,
    /// zstd:chunked as written by stargz-snapshotter: a skippable frame with a 40-byte payload
    /// (48 bytes on disk), magic `GnUlInUx`.
    ZstdChunked {
        /// Blob offset of the compressed TOC frame (after its skippable-frame header).
        toc_offset: u64,
        /// Length of the compressed TOC frame.
        toc_compressed_size: u64,
        /// Length of the TOC JSON.
        toc_uncompressed_size: u64,
    },
    /// zstd:chunked as written by containers/storage: a skippable frame with a 64-byte payload
    /// (72 bytes on disk), magic `GNUlInUx`, followed by tar-split data positions.
    ZstdChunkedCstorage {
        /// Blob offset of the compressed TOC frame (after its skippable-frame header).
        toc_offset: u64,
        /// Length of the compressed TOC frame.
        toc_compressed_size: u64,
        /// Length of the TOC JSON.
        toc_uncompressed_size: u64,
        /// Blob offset of the compressed tar-split frame.
        tar_split_offset: u64,
        /// Length of the compressed tar-split frame.
        tar_split_compressed_size: u64,
        /// Length of the uncompressed tar-split data.
        tar_split_uncompressed_size: u64,
    },
}

impl Footer {
    /// The largest footer on disk (containers/storage zstd:chunked, 72 bytes). Reading this many
    /// bytes from the end of a blob (or the whole blob if shorter) is enough for [`Footer::parse`].
    pub const MAX_SIZE: usize = 72;

    /// Recognises the footer at the end of `tail` (the last bytes of a blob, at most
    /// [`Footer::MAX_SIZE`] needed). Tries every format; the error lists why each was rejected.
    pub fn parse(tail: &[u8]) -> Result<Footer> {
        Err(Error::NotEstargz {
            blob_size: tail.len() as u64,
            reasons: "footer parsing not implemented yet".into(),
        })
    }

    /// The footer's size on disk in bytes.
    pub fn size(&self) -> usize {
        match self {
            Footer::Estargz { .. } => 51,
            Footer::Legacy { .. } => 47,
            Footer::ExternalToc => 46,
            Footer::ZstdChunked { .. } => 48,
            Footer::ZstdChunkedCstorage { .. } => 72,
        }
    }

    /// The footer's exact bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        Vec::new()
    }
}
