//! The `estargz` command line: argument parsing and dispatch.
//!
//! Every subcommand has its own module. Commands and flags are a stable interface: scripts
//! depend on them. Errors go to stderr as `estargz: error: ...`; the exit status is 0 on
//! success, 1 on any failure (including a failed verification) and 2 on a usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod convert;
mod image;
mod inspect;
mod mount;
mod pull;
mod remote;
mod status;

/// Inspect, read, verify and build eStargz / zstd:chunked container image layers.
#[derive(Debug, Parser)]
#[command(name = "estargz", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a tar / tar.gz / tar.zst layer into an eStargz or zstd:chunked blob.
    Convert(convert::ConvertArgs),
    /// Whole images: `estargz image convert SRC DST` (OCI layouts and registries).
    Image(image::ImageArgs),
    /// Show a blob's format, TOC location and digest, entry counts and prefetch landmark.
    Info(inspect::InfoArgs),
    /// List every entry of the blob's normalised file tree, one per line.
    Ls(inspect::LsArgs),
    /// Write a file's bytes to stdout; every chunk is verified before it is written.
    Cat(inspect::CatArgs),
    /// Check the TOC digest (when given) and every chunk of every file; exit 0 only if all hold.
    Verify(inspect::VerifyArgs),
    /// Print the raw TOC JSON, exactly as stored.
    Toc(inspect::TocArgs),
    /// Mount a layer as a read-only FUSE filesystem (foreground; Ctrl-C unmounts).
    Mount(mount::MountArgs),
    /// Show the snapshotter daemon's layers: remote or local, fetched %, why not remote.
    Status(status::StatusArgs),
}

/// How to open a blob: shared by every read command.
#[derive(Debug, Args)]
pub struct BlobArgs {
    /// The blob: a local file path, a registry blob `HOST[:PORT]/REPO@sha256:DIGEST`, or an
    /// `http(s)://` URL (remote blobs are read lazily).
    #[arg(value_name = "BLOB")]
    pub blob: PathBuf,
    /// Talk plain HTTP to the registry of a remote BLOB (loopback registries always do).
    #[arg(long)]
    pub plain_http: bool,
    /// The TOC blob of a layer with an external TOC (`gzip(tar(stargz.index.json))`).
    #[arg(long, value_name = "FILE")]
    pub toc: Option<PathBuf>,
    /// Refuse the blob unless its TOC hashes to this digest (`sha256:<hex>`), as the
    /// `containerd.io/snapshot/stargz/toc.digest` annotation says.
    #[arg(long, value_name = "DIGEST")]
    pub toc_digest: Option<String>,
    /// Do not verify chunk digests. Only for legacy stargz blobs, which have none.
    #[arg(long)]
    pub no_verify: bool,
}

impl BlobArgs {
    /// Opens the blob as these arguments say.
    pub fn open(&self) -> Result<estargz::Reader<remote::Blob>, String> {
        let file = if remote::is_remote(&self.blob.to_string_lossy()) {
            remote::open_view(self)?
        } else {
            remote::Blob::Local(
                std::fs::File::open(&self.blob)
                    .map_err(|e| format!("cannot open {}: {e}", self.blob.display()))?,
            )
        };
        let mut opts = estargz::OpenOptions::default();
        if let Some(d) = &self.toc_digest {
            opts.expected_toc_digest =
                Some(estargz::Digest::parse(d).map_err(|e| format!("--toc-digest: {e}"))?);
        }
        if let Some(toc) = &self.toc {
            opts.external_toc = Some(
                std::fs::read(toc).map_err(|e| format!("cannot read {}: {e}", toc.display()))?,
            );
        }
        opts.verify_chunks = !self.no_verify;
        estargz::Reader::open_with(file, opts).map_err(|e| format!("{}: {e}", self.blob.display()))
    }
}

/// Turns a write error into the command's result: a closed pipe (`| head`) is not a failure.
pub(crate) fn write_result(r: std::io::Result<()>) -> Result<(), String> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("writing to stdout: {e}")),
        Ok(()) => Ok(()),
    }
}

/// Writes `text` and a newline to stdout (see [`write_result`]; `println!` would panic on a
/// closed pipe).
pub(crate) fn print_stdout(text: impl std::fmt::Display) -> Result<(), String> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    write_result(writeln!(out, "{text}").and_then(|()| out.flush()))
}

/// Runs the command line of this process and returns its exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(a) => convert::convert(&a),
        Command::Image(a) => image::image(&a),
        Command::Info(a) => inspect::info(&a),
        Command::Ls(a) => inspect::ls(&a),
        Command::Cat(a) => inspect::cat(&a),
        Command::Verify(a) => inspect::verify(&a),
        Command::Toc(a) => inspect::toc(&a),
        Command::Mount(a) => mount::mount(&a),
        Command::Status(a) => status::status(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("estargz: error: {msg}");
            ExitCode::from(1)
        }
    }
}
