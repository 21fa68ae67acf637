//! An eStargz layer as a read-only FUSE filesystem that overlayfs can stack.
//!
//! - [`LayerSource`]: where the bytes come from. [`LocalLayer`] serves a blob on local disk
//!   (with an optional verified whole-file cache, [`FileCache`]); [`RemoteSource`] serves
//!   `estargz-io`'s `RemoteLayer` (a registry blob or an HTTP(S) URL, fetched lazily).
//! - [`LayerFs`]: the `fuser` filesystem: lookup, getattr, readdir(plus), readlink, open,
//!   read, release, getxattr, listxattr, statfs, access. Attributes exactly as the TOC says,
//!   stable inode numbers (`node id + 1`), long cache timeouts, OCI whiteouts shown as
//!   overlayfs whiteouts and opaque directories carrying the opaque xattr, reads that may wait
//!   on the network run on workers with a deadline, passthrough for cached files.
//! - [`Mount`]: mounts, unmounts on drop, clears stale mounts, `auto_unmount`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use estargz_fuse::{LocalLayer, LocalOptions, Mount, MountOptions};
//!
//! let layer = LocalLayer::open("layer.esgz".as_ref(), LocalOptions::default())?;
//! let mount = Mount::new(Arc::new(layer), "/mnt/layer".as_ref(), &MountOptions::default())?;
//! println!("{}", std::fs::read_to_string("/mnt/layer/etc/os-release")?);
//! println!("{}", mount.stats());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod attr;
pub mod cache;
mod dispatch;
pub mod error;
pub mod fs;
pub mod local;
pub mod mount;
pub mod remote;
pub mod source;
pub mod stats;
pub mod tree;

pub use cache::FileCache;
pub use error::{Error, Result};
pub use fs::{FsOptions, LayerFs, OpaqueXattr, StatsHandle};
pub use local::{LocalLayer, LocalOptions};
pub use mount::{Mount, MountOptions};
pub use remote::{RemoteOptions, RemoteSource};
pub use source::{LayerSource, SourceStats};
pub use stats::FsStats;

/// The core format crate, re-exported.
pub use estargz;
/// The async I/O crate (remote layers, sources, caches), re-exported.
pub use estargz_io;
