//! The eStargz layer format, with no I/O policy of its own.
//!
//! eStargz is a container image layer that is still an ordinary `tar.gz` (or `tar.zst`), but
//! written so that every file's data starts at a known compressed offset and a table of contents
//! (TOC) at the end lists every entry with per-chunk SHA-256 digests. A reader fetches the
//! footer, then the TOC, then only the chunks a process actually reads.
//!
//! This crate understands the format and nothing else:
//!
//! - [`toc`]: the TOC model ([`Toc`], [`TocEntry`], [`EntryType`]), parsed leniently as Go does
//!   and written back with Go's exact bytes.
//! - [`footer`]: every footer of the family ([`Footer`]): eStargz, legacy stargz, external TOC,
//!   and both zstd:chunked layouts.
//! - [`digest`]: `sha256:` digests ([`Digest`]) and TOC digest verification.
//! - [`index`]: the filesystem view of a TOC ([`Index`]): normalised paths, implicit parents,
//!   hardlinks, link counts and chunk lists, stored compactly.
//! - [`plan`]: the sans-I/O steps of reading (which ranges to fetch, decoding the TOC,
//!   [`ReadPlan`], verified chunk decoding), shared by the sync and async readers.
//! - [`build`]: the builder ([`Builder`]): a tar, tar.gz or tar.zst in, an eStargz or
//!   zstd:chunked blob out, with a [`BuildReport`] of digests and annotations.
//! - [`read`]: the positioned-read trait ([`ReadAt`]) and the blob [`Reader`] with verified
//!   random-access file reads.
//!
//! It never touches the network, never spawns an async runtime and never panics on input bytes:
//! every malformed blob, footer or TOC is an [`Error`] that names what was wrong and where.
//!
//! ```
//! use estargz::footer::Footer;
//!
//! let footer = Footer::Estargz { toc_offset: 0x1a2b3c };
//! let bytes = footer.to_bytes();
//! assert_eq!(bytes.len(), 51);
//! assert_eq!(Footer::parse(&bytes).unwrap(), footer);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
pub mod digest;
pub mod error;
pub mod footer;
pub mod index;
pub mod plan;
pub mod read;
pub mod toc;

pub use build::{BuildOptions, BuildReport, Builder};
pub use digest::Digest;
pub use error::{Error, Result};
pub use footer::Footer;
pub use index::Index;
pub use plan::{OpenOptions, ReadPlan};
pub use read::{ReadAt, Reader};
pub use toc::{EntryType, Toc, TocEntry};
