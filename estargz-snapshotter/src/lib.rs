//! The `estargz` command-line tool's commands, and (later) the containerd proxy snapshotter.
#![forbid(unsafe_code)]
