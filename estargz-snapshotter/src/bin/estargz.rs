//! The `estargz` command-line tool. See `estargz --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    estargz_snapshotter::cli::main()
}
