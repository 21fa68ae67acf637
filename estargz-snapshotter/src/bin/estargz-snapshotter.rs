//! The `estargz-snapshotter` daemon: containerd's proxy snapshotter. See `--help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    estargz_snapshotter::daemon::main()
}
