//! `estargz mount BLOB MOUNTPOINT`: serve a layer as a read-only FUSE filesystem.
//!
//! BLOB is a local file, a registry blob (`HOST[:PORT]/REPO@sha256:DIGEST`) or an `http(s)://`
//! URL; remote blobs are read lazily through `estargz-io` (only the chunks that processes read
//! are fetched, each verified before it is served) and need `--toc-digest` unless
//! `--allow-unverified-toc` says otherwise.
//!
//! Runs in the foreground until SIGINT, SIGTERM or SIGHUP, or until someone unmounts the
//! mountpoint; then unmounts and prints what was fetched and served. SIGUSR1 prints the same
//! counters without stopping.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use estargz_fuse::estargz_io::cache::CacheOptions;
use estargz_fuse::estargz_io::{ChunkCache, LayerOptions};
use estargz_fuse::{
    LayerSource, LocalLayer, LocalOptions, Mount, MountOptions, OpaqueXattr, RemoteOptions,
    RemoteSource,
};

use super::BlobArgs;

/// Which xattr opaque directories carry.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OpaqueArg {
    /// `trusted.overlay.opaque` (overlayfs mounted by root).
    Trusted,
    /// `user.overlay.opaque` (overlayfs with `userxattr`).
    User,
    /// Both.
    Both,
}

/// Arguments of `estargz mount`.
#[derive(Debug, Args)]
#[command(
    after_help = "The command always stays in the foreground (--foreground is accepted \
for compatibility): run it under a supervisor, or with `&`, to keep it in the background. It \
unmounts on SIGINT/SIGTERM/SIGHUP and when the mountpoint is unmounted by someone else, and \
prints the counters on exit and on SIGUSR1. A dead mount left by a killed daemon at \
MOUNTPOINT is cleared first."
)]
pub struct MountArgs {
    /// The blob: a local file path, a registry blob `HOST[:PORT]/REPO@sha256:DIGEST`, or an
    /// `http(s)://` URL (remote blobs are fetched lazily, chunk by chunk, each verified).
    #[arg(value_name = "BLOB")]
    pub blob: String,
    /// Where to mount (an existing directory).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Refuse the blob unless its TOC hashes to this digest (`sha256:<hex>`). Required for a
    /// remote blob unless --allow-unverified-toc.
    #[arg(long, value_name = "DIGEST")]
    pub toc_digest: Option<String>,
    /// Mount a remote blob without --toc-digest: its TOC is then trusted as fetched (chunks are
    /// still verified against it).
    #[arg(long)]
    pub allow_unverified_toc: bool,
    /// The TOC blob of a layer with an external TOC.
    #[arg(long, value_name = "FILE")]
    pub toc: Option<PathBuf>,
    /// Keep verified data here: whole files for a local blob (serving cached files from disk;
    /// needed by --passthrough, --prefetch and --background-fetch), the disk tier of the chunk
    /// cache for a remote blob. Default: a temporary directory removed on exit.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Cache the prioritised files (before the prefetch landmark) right after mounting (for a
    /// remote blob: fetch their chunks in one request).
    #[arg(long)]
    pub prefetch: bool,
    /// Cache every file in the background, after on-demand reads.
    #[arg(long)]
    pub background_fetch: bool,
    /// Hand cached files to the kernel (FUSE passthrough, Linux >= 6.9; local blobs only).
    #[arg(long)]
    pub passthrough: bool,
    /// Let other users use the mount.
    #[arg(long)]
    pub allow_other: bool,
    /// Stay in the foreground (always the case; see below).
    #[arg(long)]
    pub foreground: bool,
    /// Use plain HTTP for a registry blob.
    #[arg(long)]
    pub plain_http: bool,
    /// Seconds before a read waiting on the network fails with EIO (0: wait forever).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub read_timeout: u64,
    /// The opaque-directory xattr overlayfs will read.
    #[arg(long, value_enum, default_value = "trusted")]
    pub opaque_xattr: OpaqueArg,
    /// Mount directly instead of through fusermount3, so a killed daemon leaves a dead mount
    /// (cleared by the next mount at the same path).
    #[arg(long)]
    pub no_auto_unmount: bool,
    /// Threads reading FUSE requests.
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
}

/// Runs `estargz mount`.
pub fn mount(a: &MountArgs) -> Result<(), String> {
    let remote = super::remote::is_remote(&a.blob);
    if remote && a.toc_digest.is_none() && !a.allow_unverified_toc {
        return Err(format!(
            "{}: a remote blob needs --toc-digest (the layer's \
             containerd.io/snapshot/stargz/toc.digest annotation), or --allow-unverified-toc",
            a.blob
        ));
    }
    let mut open = estargz::OpenOptions::default();
    if let Some(d) = &a.toc_digest {
        open.expected_toc_digest =
            Some(estargz::Digest::parse(d).map_err(|e| format!("--toc-digest: {e}"))?);
    }
    if let Some(toc) = &a.toc {
        open.external_toc =
            Some(std::fs::read(toc).map_err(|e| format!("cannot read {}: {e}", toc.display()))?);
    }
    let (cache_dir, temporary) = match &a.cache_dir {
        Some(d) => (d.clone(), false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let d =
                std::env::temp_dir().join(format!("estargz-mount-{}-{nanos}", std::process::id()));
            (d, true)
        }
    };
    let result = if remote {
        serve_remote(a, open, &cache_dir)
    } else {
        serve_local(a, open, &cache_dir)
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&cache_dir);
    }
    result
}

fn serve_local(
    a: &MountArgs,
    open: estargz::OpenOptions,
    cache_dir: &std::path::Path,
) -> Result<(), String> {
    let layer = LocalLayer::open(
        a.blob.as_ref(),
        LocalOptions {
            open,
            cache_dir: Some(cache_dir.to_path_buf()),
            prefetch: a.prefetch,
            background_fetch: a.background_fetch,
            ..LocalOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    serve(a, Arc::new(layer), None)
}

/// Opens a remote BLOB through `estargz-io` (chunk cache with its disk tier in `cache_dir`).
fn serve_remote(
    a: &MountArgs,
    open: estargz::OpenOptions,
    cache_dir: &std::path::Path,
) -> Result<(), String> {
    if a.passthrough {
        eprintln!("estargz: --passthrough applies to local blobs only; serving every read");
    }
    let blob_args = BlobArgs {
        blob: PathBuf::from(&a.blob),
        plain_http: a.plain_http,
        toc: a.toc.clone(),
        toc_digest: a.toc_digest.clone(),
        no_verify: false,
    };
    let source = super::remote::source(&blob_args)?;
    let cache = ChunkCache::open(&CacheOptions {
        dir: Some(cache_dir.to_path_buf()),
        ..CacheOptions::default()
    })
    .map_err(|e| format!("cache {}: {e}", cache_dir.display()))?;
    let mut layer_opts = LayerOptions {
        expected_toc_digest: open.expected_toc_digest,
        allow_unverified_toc: open.expected_toc_digest.is_none(),
        // Small enough not to fetch a large part of a small layer to open it; a larger TOC
        // takes one more request.
        tail_size: 256 << 10,
        ..LayerOptions::default()
    };
    layer_opts.format = open;
    let layer = RemoteSource::open(
        source,
        Arc::new(cache),
        layer_opts,
        RemoteOptions {
            prefetch: a.prefetch,
            background_fetch: a.background_fetch,
            runtime_threads: 2,
            ..RemoteOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let layer = Arc::new(layer);
    let report = Arc::clone(&layer);
    serve(
        a,
        layer,
        Some(Box::new(move || {
            let m = report.metrics();
            format!(
                "network: {} bytes in {} requests (open {}, on demand {}, prefetch {}, \
                 background {}); {} chunks verified, {} failed verification",
                m.total_bytes(),
                m.total_requests(),
                m.open_bytes,
                m.on_demand_bytes,
                m.prefetch_bytes,
                m.background_bytes,
                m.chunks_decoded,
                m.integrity_failures,
            )
        })),
    )
}

/// Extra lines printed with the counters (the network breakdown of a remote blob).
type Report = Box<dyn Fn() -> String + Send + Sync>;

fn serve<S: LayerSource>(
    a: &MountArgs,
    layer: Arc<S>,
    report: Option<Report>,
) -> Result<(), String> {
    let mut opts = MountOptions {
        allow_other: a.allow_other,
        threads: a.threads.max(1),
        ..MountOptions::default()
    };
    if a.no_auto_unmount {
        opts.auto_unmount = false;
    }
    opts.fs.passthrough = a.passthrough;
    opts.fs.read_timeout = (a.read_timeout > 0).then(|| Duration::from_secs(a.read_timeout));
    opts.fs.opaque_xattr = match a.opaque_xattr {
        OpaqueArg::Trusted => OpaqueXattr::Trusted,
        OpaqueArg::User => OpaqueXattr::User,
        OpaqueArg::Both => OpaqueXattr::Both,
    };
    let mount = Mount::new(layer, &a.mountpoint, &opts).map_err(|e| e.to_string())?;
    eprintln!(
        "estargz: mounted {} at {} (pid {})",
        a.blob,
        mount.mountpoint().display(),
        std::process::id()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal handler: {e}"))?;
    let why = runtime.block_on(wait(&mount, report.as_deref()))?;
    eprintln!(
        "estargz: {why}; unmounting {}",
        mount.mountpoint().display()
    );
    let stats = mount.stats();
    let unmounted = mount.unmount();
    let _ = super::print_stdout(stats);
    if let Some(r) = &report {
        let _ = super::print_stdout(r());
    }
    unmounted.map_err(|e| e.to_string())
}

/// Waits for a reason to stop, printing the counters on SIGUSR1.
async fn wait(
    mount: &Mount,
    report: Option<&(dyn Fn() -> String + Send + Sync)>,
) -> Result<&'static str, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let sig = |k: SignalKind| signal(k).map_err(|e| format!("cannot handle signals: {e}"));
    let mut int = sig(SignalKind::interrupt())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut hup = sig(SignalKind::hangup())?;
    let mut usr1 = sig(SignalKind::user_defined1())?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = int.recv() => return Ok("interrupted"),
            _ = term.recv() => return Ok("terminated"),
            _ = hup.recv() => return Ok("hung up"),
            _ = usr1.recv() => {
                // A closed stdout must not take the mount down.
                let _ = super::print_stdout(mount.stats());
                if let Some(r) = report {
                    let _ = super::print_stdout(r());
                }
            }
            _ = tick.tick() => {
                if !mount.is_alive() {
                    return Ok("the filesystem was unmounted");
                }
            }
        }
    }
}
