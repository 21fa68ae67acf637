//! The `estargz` command-line tool and the `estargz-snapshotter` daemon, containerd's proxy
//! snapshotter that lazily pulls eStargz images.
//!
//! - [`cli`]: the `estargz` command line (a thin binary over [`cli::main`]).
//! - [`daemon`]: the `estargz-snapshotter` daemon (a thin binary over [`daemon::main`]).
//! - [`snapshotter`]: containerd's overlayfs snapshotter semantics, metadata in an embedded
//!   database, and the remote-layer hook; [`service`] serves it over gRPC.
//! - [`remote`]: remote (lazy) layers; [`status`] and [`metrics`]: what the daemon reports.
//! - [`api`]: containerd's gRPC API, generated from the vendored protos.
// One exception, `malloc` (a call into the C allocator), opts in with `allow`.
#![deny(unsafe_code)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
mod malloc;
pub mod metrics;
pub mod pull;
pub mod remote;
pub mod service;
pub mod snapshotter;
pub mod status;
