//! The FUSE manager: a long-lived process that holds the FUSE sessions of remote layers, so
//! restarting or upgrading the daemon does not disturb running containers.
//!
//! `estargz-snapshotter fuse-manager` serves a line protocol (one JSON request, one JSON
//! response per line) on a unix socket; the daemon's [`ManagerClient`] implements
//! [`RemoteLayers`] with it. The daemon starts the manager when it is not running (in its own
//! process group, so the daemon's signals do not reach it); with systemd the manager has its
//! own unit (`dist/estargz-fuse-manager.service`), so restarting the daemon's unit leaves it
//! alone. On restart the daemon asks the manager which layers are still mounted and mounts
//! only the others again.
//!
//! Stopping the manager (SIGTERM/SIGINT) unmounts its layers.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use super::host::LayerHost;
use crate::config::Config;
use crate::snapshotter::{Fallback, RemoteLayers, RemoteProgress};

/// glibc malloc settings for the FUSE manager process: return freed memory to the system
/// (fixed trim threshold) and few arenas.
pub const MALLOC_TUNING: [(&str, &str); 2] = [
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
    ("MALLOC_ARENA_MAX", "2"),
];

/// One request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Ping,
    Mount {
        mountpoint: PathBuf,
        labels: BTreeMap<String, String>,
    },
    Check {
        mountpoint: PathBuf,
    },
    Unmount {
        mountpoint: PathBuf,
    },
    IsMounted {
        mountpoint: PathBuf,
    },
    Progress {
        mountpoint: PathBuf,
    },
}

/// One response.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Response {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default)]
    mounted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fetched: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_error: Option<String>,
}

fn handle(host: &LayerHost, req: Request) -> Response {
    let ok = Response {
        ok: true,
        ..Response::default()
    };
    let err = |e: String| Response {
        ok: false,
        error: Some(e),
        ..Response::default()
    };
    match req {
        Request::Ping => ok,
        Request::Mount { mountpoint, labels } => match host.mount(&mountpoint, &labels) {
            Ok(()) => ok,
            Err(f) => Response {
                kind: Some(f.kind.to_owned()),
                ..err(f.reason)
            },
        },
        Request::Check { mountpoint } => host.check(&mountpoint).map_or_else(err, |()| ok),
        Request::Unmount { mountpoint } => host.unmount(&mountpoint).map_or_else(err, |()| ok),
        Request::IsMounted { mountpoint } => Response {
            mounted: host.is_mounted(&mountpoint),
            ..ok
        },
        Request::Progress { mountpoint } => match host.progress(&mountpoint) {
            Some(p) => Response {
                size: Some(p.size),
                fetched: Some(p.fetched),
                read_error: p.error,
                mounted: true,
                ..ok
            },
            None => ok,
        },
    }
}

/// Runs the FUSE manager on `address` until SIGTERM/SIGINT; then unmounts its layers.
pub async fn serve(config: Config, address: &Path) -> Result<(), String> {
    if let Some(dir) = address.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if UnixStream::connect(address).is_ok() {
        return Err(format!(
            "a FUSE manager already serves {}",
            address.display()
        ));
    }
    let _ = std::fs::remove_file(address);
    let listener = tokio::net::UnixListener::bind(address)
        .map_err(|e| format!("cannot listen on {}: {e}", address.display()))?;
    let pid_file = pid_file(address);
    let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
    tracing::info!(address = %address.display(), pid = std::process::id(), "FUSE manager serving");
    let host = Arc::new(LayerHost::new(config));
    let accept = {
        let host = host.clone();
        async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let host = host.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = tokio::io::BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let resp = match serde_json::from_str::<Request>(&line) {
                            Ok(req) => {
                                let host = host.clone();
                                tokio::task::spawn_blocking(move || handle(&host, req))
                                    .await
                                    .unwrap_or_else(|e| Response {
                                        error: Some(e.to_string()),
                                        ..Response::default()
                                    })
                            }
                            Err(e) => Response {
                                error: Some(format!("bad request: {e}")),
                                ..Response::default()
                            },
                        };
                        let mut out =
                            serde_json::to_string(&resp).unwrap_or_else(|_| "{}".to_owned());
                        out.push('\n');
                        if w.write_all(out.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        () = accept => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("FUSE manager stopping: unmounting its layers");
    let _ = std::fs::remove_file(address);
    let _ = tokio::task::spawn_blocking(move || host.unmount_all()).await;
    let _ = std::fs::remove_file(&pid_file);
    Ok(())
}

/// The file holding the pid of the manager serving `address` (`<address>.pid`).
pub fn pid_file(address: &Path) -> PathBuf {
    let mut p = address.as_os_str().to_owned();
    p.push(".pid");
    PathBuf::from(p)
}

/// [`RemoteLayers`] through the FUSE manager.
#[derive(Debug)]
pub struct ManagerClient {
    address: PathBuf,
    /// How to start the manager when it is not running: (binary, config file).
    spawn: Option<(PathBuf, Option<PathBuf>)>,
    log: PathBuf,
}

impl ManagerClient {
    /// A client of the manager on `address`; when it is not running it is started from
    /// `binary` (`fuse-manager --config CONFIG --address ADDRESS`), logging to `log`.
    pub fn new(address: PathBuf, spawn: Option<(PathBuf, Option<PathBuf>)>, log: PathBuf) -> Self {
        ManagerClient {
            address,
            spawn,
            log,
        }
    }

    fn connect(&self, spawn: bool) -> Result<UnixStream, String> {
        if let Ok(s) = UnixStream::connect(&self.address) {
            return Ok(s);
        }
        let (Some((binary, config)), true) = (&self.spawn, spawn) else {
            return Err(format!(
                "FUSE manager not running at {}",
                self.address.display()
            ));
        };
        tracing::info!(address = %self.address.display(), binary = %binary.display(), "starting the FUSE manager");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(binary);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("fuse-manager").arg("--address").arg(&self.address);
        // glibc keeps the memory freed after a layer's TOC is parsed (its trim threshold grows
        // with the largest free, and every thread gets an arena): with these, 10 mounted
        // local-dir layers of 30,000 entries took 63 MiB instead of 193 MiB when measured
        // (benches/daemon_memory.rs).
        // The systemd unit sets the same; an explicit setting in the environment wins.
        for (k, v) in MALLOC_TUNING {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        // Reap it in the background if it exits while we live.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        for _ in 0..200 {
            if let Ok(s) = UnixStream::connect(&self.address) {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "the FUSE manager did not start (log: {})",
            self.log.display()
        ))
    }

    /// Sends one request; only a mount may start the manager.
    fn call(&self, req: &Request, timeout: Duration) -> Result<Response, String> {
        let mut s = self.connect(matches!(req, Request::Mount { .. }))?;
        let _ = s.set_read_timeout(Some(timeout));
        let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
        line.push('\n');
        s.write_all(line.as_bytes())
            .map_err(|e| format!("FUSE manager: {e}"))?;
        let mut resp = String::new();
        BufReader::new(&s)
            .read_line(&mut resp)
            .map_err(|e| format!("FUSE manager: {e}"))?;
        serde_json::from_str(&resp).map_err(|e| format!("FUSE manager: bad response: {e}"))
    }

    /// Whether the manager answers.
    pub fn ping(&self) -> bool {
        UnixStream::connect(&self.address).is_ok()
            && self
                .call(&Request::Ping, Duration::from_secs(5))
                .is_ok_and(|r| r.ok)
    }
}

impl RemoteLayers for ManagerClient {
    fn mount(&self, mountpoint: &Path, labels: &BTreeMap<String, String>) -> Result<(), Fallback> {
        let req = Request::Mount {
            mountpoint: mountpoint.to_path_buf(),
            labels: labels.clone(),
        };
        match self.call(&req, Duration::from_secs(120)) {
            Ok(r) if r.ok => Ok(()),
            Ok(r) => Err(Fallback {
                kind: match r.kind.as_deref() {
                    Some("no-labels") => "no-labels",
                    Some("no-toc-digest") => "no-toc-digest",
                    Some("toc-digest") => "toc-digest",
                    Some("toc-digest-mismatch") => "toc-digest-mismatch",
                    Some("not-estargz") => "not-estargz",
                    Some("registry") => "registry",
                    Some("mount") => "mount",
                    _ => "open",
                },
                reason: r.error.unwrap_or_default(),
            }),
            Err(e) => Err(Fallback {
                kind: "fuse-manager",
                reason: e,
            }),
        }
    }

    fn check(&self, mountpoint: &Path) -> Result<(), String> {
        let r = self.call(
            &Request::Check {
                mountpoint: mountpoint.to_path_buf(),
            },
            Duration::from_secs(30),
        )?;
        if r.ok {
            Ok(())
        } else {
            Err(r.error.unwrap_or_default())
        }
    }

    fn unmount(&self, mountpoint: &Path) -> Result<(), String> {
        if UnixStream::connect(&self.address).is_err() {
            return Ok(()); // no manager, nothing mounted by it
        }
        let r = self.call(
            &Request::Unmount {
                mountpoint: mountpoint.to_path_buf(),
            },
            Duration::from_secs(30),
        )?;
        if r.ok {
            Ok(())
        } else {
            Err(r.error.unwrap_or_default())
        }
    }

    fn is_mounted(&self, mountpoint: &Path) -> bool {
        self.call(
            &Request::IsMounted {
                mountpoint: mountpoint.to_path_buf(),
            },
            Duration::from_secs(10),
        )
        .is_ok_and(|r| r.mounted)
    }

    fn progress(&self, mountpoint: &Path) -> Option<RemoteProgress> {
        let r = self
            .call(
                &Request::Progress {
                    mountpoint: mountpoint.to_path_buf(),
                },
                Duration::from_secs(5),
            )
            .ok()?;
        r.mounted.then(|| RemoteProgress {
            size: r.size.unwrap_or(0),
            fetched: r.fetched.unwrap_or(0),
            error: r.read_error,
        })
    }
}
