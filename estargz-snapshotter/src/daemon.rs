//! The `estargz-snapshotter` daemon: config, logs, the gRPC socket, the metrics server, the
//! status file, signals.
//!
//! Start-up order matters for restarts: the snapshotter is opened (and remote layers mounted
//! again) *before* the socket accepts calls, so containerd never sees a half-restored state.
//! On SIGTERM/SIGINT the socket is closed and removed; remote mounts that live in the FUSE
//! manager stay (running containers keep reading), others are unmounted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio_stream::wrappers::UnixListenerStream;

use crate::api::snapshots::snapshots_server::SnapshotsServer;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::service::SnapshotService;
use crate::snapshotter::{NoRemote, Options, RemoteLayers, Snapshotter};
use crate::status::StatusBoard;

/// containerd proxy snapshotter that lazily pulls eStargz images.
#[derive(Debug, Parser)]
#[command(name = "estargz-snapshotter", version, about, long_about = None)]
pub struct Args {
    /// The config file (TOML). A missing file at the default path means defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The gRPC unix socket (overrides `address` in the config).
    #[arg(long, value_name = "SOCKET")]
    pub address: Option<PathBuf>,
    /// The root directory (overrides `root` in the config).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Log level (overrides `log_level`): error, warn, info, debug, trace.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Run the FUSE manager: the process that keeps remote layers mounted while the daemon
    /// restarts. The daemon starts it when needed; systemd runs it as its own unit.
    FuseManager {
        /// Its socket (overrides `[fuse_manager] address`).
        #[arg(long, value_name = "SOCKET")]
        address: Option<PathBuf>,
    },
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the daemon with this process's arguments.
pub fn main() -> ExitCode {
    let args = Args::parse();
    let explicit = args.config.is_some();
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let (mut config, unknown) = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("estargz-snapshotter: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(a) = args.address {
        config.address = a;
    }
    if let Some(r) = args.root {
        config.root = r;
    }
    if let Some(l) = args.log_level {
        config.log_level = l;
    }
    if args.print_config {
        match toml::to_string(&config) {
            Ok(s) => {
                print!("{s}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("estargz-snapshotter: error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    init_logs(&config);
    for k in unknown {
        tracing::warn!(key = %k, config = %path.display(), "unknown config key ignored");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(1);
        }
    };
    let result = match args.command {
        Some(Sub::FuseManager { address }) => {
            let address = address.unwrap_or_else(|| config.fuse_manager.address.clone());
            rt.block_on(crate::remote::manager::serve(config, &address))
        }
        None => rt.block_on(run(config, explicit.then_some(path))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::from(1)
        }
    }
}

/// The remote-layer implementation for `config` ([`NoRemote`] when disabled).
fn remote_layers(config: &Config, config_path: Option<&Path>) -> Arc<dyn RemoteLayers> {
    if config.disable_remote {
        return Arc::new(NoRemote);
    }
    crate::remote::build(config, config_path)
}

async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), String> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), address = %config.address.display(),
        root = %config.root.display(), strict = config.strict, "starting");
    std::fs::create_dir_all(&config.root)
        .map_err(|e| format!("cannot create {}: {e}", config.root.display()))?;
    let status = Arc::new(StatusBoard::default());
    let remote = remote_layers(&config, config_path.as_deref());
    let options = Options {
        strict: config.strict,
        allow_invalid_mounts_on_restart: config.snapshotter.allow_invalid_mounts_on_restart,
    };
    let root = config.root.join("snapshotter");
    let sn = {
        let (root, remote, status) = (root.clone(), remote.clone(), status.clone());
        tokio::task::spawn_blocking(move || Snapshotter::open(&root, remote, status, options))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let sn = Arc::new(sn);

    if !config.metrics_address.is_empty() {
        let listener = crate::metrics::bind(&config.metrics_address)
            .await
            .map_err(|e| format!("metrics address {}: {e}", config.metrics_address))?;
        tracing::info!(address = %config.metrics_address, "serving /metrics and /status");
        tokio::spawn(crate::metrics::serve(listener, status.clone()));
    }
    tokio::spawn(status_loop(
        sn.clone(),
        status.clone(),
        config.root.join("status.json"),
    ));

    let listener = bind_unix(&config.address)?;
    tracing::info!(address = %config.address.display(), "serving containerd's snapshots API");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
    };
    let served = tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(SnapshotService::new(sn.clone())))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&config.address);
    if !crate::remote::outlives_daemon(&config) {
        let sn = sn.clone();
        let _ = tokio::task::spawn_blocking(move || sn.unmount_all()).await;
    }
    write_status(&status, &config.root.join("status.json"));
    served.map_err(|e| format!("gRPC server: {e}"))
}

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove stale socket {}: {e}",
                path.display()
            ))
        }
    }
    let l = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    Ok(l)
}

fn write_status(status: &StatusBoard, path: &Path) {
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, status.to_json())
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::debug!(path = %path.display(), "cannot write status file");
    }
}

/// Every second: refresh remote layers' progress; rewrite the status file when it changed.
async fn status_loop(sn: Arc<Snapshotter>, status: Arc<StatusBoard>, path: PathBuf) {
    status.insert("", crate::status::LayerState::local("", ""));
    status.remove("");
    loop {
        let s = sn.clone();
        let _ = tokio::task::spawn_blocking(move || s.refresh_status()).await;
        if status.take_dirty() {
            write_status(&status, &path);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
