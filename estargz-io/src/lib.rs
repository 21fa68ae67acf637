//! Async, verified, lazy reads of eStargz layers that live elsewhere: a local file, an HTTP(S)
//! URL, or a blob in an OCI registry.
//!
//! The format itself (footers, TOC, index, chunk decoding and verification) is the core
//! [`estargz`] crate's sans-I/O API; this crate decides where bytes come from and when:
//!
//! - [`source`]: [`BlobSource`], "length + fetch these byte ranges", over a file
//!   ([`source::FileSource`]), a URL ([`source::HttpSource`]) or a registry blob
//!   ([`source::RegistrySource`], with [`auth`] and [`config`]).
//! - [`plan`]: which requests to send for a set of chunk ranges (coalescing, splitting) and
//!   deduplication of fetches already in flight.
//! - [`cache`]: [`ChunkCache`], verified chunks only, in memory and on disk, bounded, with LRU
//!   eviction and crash-safe writes.
//! - [`layer`]: [`RemoteLayer`]: open (footer + TOC in one request when it fits, TOC digest
//!   verified), verified file reads through the cache, prefetch, background fetch, metrics.
//! - [`blocking`]: a source as the core crate's synchronous `ReadAt`, for callers without a
//!   runtime.
//! - [`registry`]: registry writes (blob uploads, cross-repo mounts, manifests).
//! - [`image`]: whole-image conversion between OCI layouts and registries.
//!
//! A byte reaches a caller only after its chunk's digest matched: chunks are turned into bytes
//! by [`estargz::plan::decode_chunk`] and nothing else.
//!
//! ```
//! # async fn demo() -> estargz_io::Result<()> {
//! use std::sync::Arc;
//! use estargz_io::{ChunkCache, RemoteLayer, LayerOptions, source::FileSource};
//!
//! # let blob = estargz_io::doc_blob();
//! let source = Arc::new(FileSource::open(&blob.path).await?);
//! let opts = LayerOptions::with_toc_digest(blob.toc_digest);
//! let layer = RemoteLayer::open(source, Arc::new(ChunkCache::memory(64 << 20)), opts).await?;
//! let node = layer.index().lookup("nodotslash/file.txt").expect("in the layer");
//! let mut buf = vec![0u8; 64];
//! let n = layer.read_at(node, 0, &mut buf).await?;
//! assert_eq!(n, 16);
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod blocking;
pub mod cache;
pub mod config;
mod docblob;
pub mod error;
pub mod http;
pub mod image;
pub mod layer;
pub mod plan;
pub mod reference;
pub mod registry;
pub mod source;

pub use cache::ChunkCache;
#[doc(hidden)]
pub use docblob::doc_blob;
pub use error::{Error, Result};
pub use estargz;
pub use layer::{LayerOptions, RemoteLayer};
pub use reference::Reference;
pub use source::BlobSource;
