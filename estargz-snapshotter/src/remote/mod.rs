//! Remote (lazily pulled) layers: the [`RemoteLayers`] the daemon uses.
//!
//! - [`labels`]: what the remote-snapshot labels say (reference, digest, TOC digest, ...).
//! - [`host`]: the FUSE mounts (`estargz-fuse`) of remote layers, with TOC verification
//!   before anything is served.
//! - [`manager`]: the FUSE manager process that keeps those mounts alive across daemon
//!   restarts, and the daemon's client of it.
//!
//! With `[fuse_manager] enable = true` (the default) mounts live in the manager; otherwise in
//! the daemon ([`InProcess`]), and stopping the daemon unmounts them.
//!
//! Where bytes come from: a `file://` URL in `containerd.io/snapshot/remote/urls` or a blob
//! by digest in a `[resolver] local_dirs` directory is served from local disk; otherwise the
//! blob is read lazily from its registry (mirrors from `[resolver.host]` first) through
//! `estargz-io`, with a bounded chunk cache under the daemon's root.

pub mod host;
pub mod labels;
pub mod manager;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::snapshotter::{Fallback, RemoteLayers, RemoteProgress};

/// The remote-layer implementation for `config`; `config_path` is handed to a FUSE manager the
/// daemon starts.
pub fn build(config: &Config, config_path: Option<&Path>) -> Arc<dyn RemoteLayers> {
    if config.fuse_manager.enable {
        let binary = if config.fuse_manager.path.as_os_str().is_empty() {
            std::env::current_exe().unwrap_or_else(|_| "estargz-snapshotter".into())
        } else {
            config.fuse_manager.path.clone()
        };
        Arc::new(manager::ManagerClient::new(
            config.fuse_manager.address.clone(),
            Some((binary, config_path.map(Path::to_path_buf))),
            config.root.join("fuse-manager.log"),
        ))
    } else {
        Arc::new(InProcess(host::LayerHost::new(config.clone())))
    }
}

/// Whether remote mounts outlive the daemon (they are kept by the FUSE manager): then the
/// daemon must not unmount them when it stops.
pub fn outlives_daemon(config: &Config) -> bool {
    config.fuse_manager.enable
}

/// Remote layers mounted by the daemon itself.
#[derive(Debug)]
pub struct InProcess(pub host::LayerHost);

impl RemoteLayers for InProcess {
    fn mount(&self, mountpoint: &Path, labels: &BTreeMap<String, String>) -> Result<(), Fallback> {
        self.0.mount(mountpoint, labels)
    }
    fn check(&self, mountpoint: &Path) -> Result<(), String> {
        self.0.check(mountpoint)
    }
    fn unmount(&self, mountpoint: &Path) -> Result<(), String> {
        self.0.unmount(mountpoint)
    }
    fn is_mounted(&self, mountpoint: &Path) -> bool {
        self.0.is_mounted(mountpoint)
    }
    fn progress(&self, mountpoint: &Path) -> Option<RemoteProgress> {
        self.0.progress(mountpoint)
    }
}
