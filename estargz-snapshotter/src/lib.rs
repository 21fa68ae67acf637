//! The `estargz` command-line tool's commands, and (later) the containerd proxy snapshotter.
//!
//! The binary `estargz` is a thin wrapper over [`cli::main`]; each subcommand lives in its own
//! module of [`cli`].
#![forbid(unsafe_code)]

pub mod cli;
