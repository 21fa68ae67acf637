//! The snapshotter: containerd's overlayfs snapshotter, plus remote (lazily pulled) layers.
//!
//! Layout under the root directory, the same as containerd's overlayfs snapshotter:
//! `metadata.db` (see [`store`]) and `snapshots/<id>/{fs,work}`. For normal layers this module
//! never mounts anything: it hands containerd the mounts to make (a bind mount for a snapshot
//! without parents, overlayfs otherwise). For a layer that a [`RemoteLayers`] implementation can
//! mount (an eStargz layer in a registry), `prepare` mounts it on the snapshot's `fs/`, commits
//! it under the chain id containerd asked for and answers `AlreadyExists`, so containerd skips
//! the download. Every layer that is not mounted remotely says why in [`crate::status`].
//!
//! All methods block (filesystem and database work): the gRPC layer runs them on tokio's
//! blocking pool.

pub mod error;
pub mod filter;
pub mod store;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Error, Result};
pub use filter::Filter;
pub use store::{Info, Kind, Record, Store, Usage};

use crate::status::{LayerState, StatusBoard};

/// The label containerd's unpacker sets on every layer's `Prepare`: the chain id the snapshot
/// should be committed as. Its presence starts a remote attempt.
pub const TARGET_REF_LABEL: &str = "containerd.io/snapshot.ref";
/// The label a remote snapshot carries (value `"remote snapshot"`, as stargz-snapshotter).
pub const REMOTE_LABEL: &str = "containerd.io/snapshot/remote";
/// Its value.
pub const REMOTE_LABEL_VALUE: &str = "remote snapshot";
/// The layer digest label set by `estargz image pull` and `ctr-remote images rpull`.
pub const LAYER_DIGEST_LABEL: &str = "containerd.io/snapshot/remote/stargz.digest";
/// The layer digest label set by containerd's CRI plugin.
pub const CRI_LAYER_DIGEST_LABEL: &str = "containerd.io/snapshot/cri.layer-digest";

/// A mount for containerd to make, as in `containerd.types.Mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `bind` or `overlay`.
    pub kind: String,
    /// The source path (`overlay` for overlay mounts).
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// Why a layer was not mounted remotely: the text goes to the log, the status and the metric
/// label (the `kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// A short, fixed class for the metric label (`not-estargz`, `no-labels`, `toc-digest`,
    /// `registry`, `disabled`, ...).
    pub kind: &'static str,
    /// The full reason.
    pub reason: String,
}

/// What a mounted remote layer reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteProgress {
    /// The blob's size in bytes.
    pub size: u64,
    /// Compressed bytes fetched so far.
    pub fetched: u64,
    /// The last read error, if any (a failed chunk verification, a registry error).
    pub error: Option<String>,
}

/// Mounts layers lazily from where they live (a registry). Implemented with `estargz-io` and
/// `estargz-fuse`; [`NoRemote`] when the daemon is built or configured without it.
pub trait RemoteLayers: Send + Sync + Debug {
    /// Mounts the layer described by `labels` (a snapshot's labels, see RUNTIME-BEHAVIOUR §3)
    /// read-only at `mountpoint`. An error means "pull it normally" and says why.
    fn mount(&self, mountpoint: &Path, labels: &BTreeMap<String, String>) -> Result<(), Fallback>;
    /// Checks that the layer mounted at `mountpoint` can serve reads (waits for its prefetch
    /// up to the configured timeout). Called before mounts that stack on it are handed out.
    fn check(&self, mountpoint: &Path) -> Result<(), String>;
    /// Unmounts the layer at `mountpoint` (nothing if it is not mounted).
    fn unmount(&self, mountpoint: &Path) -> Result<(), String>;
    /// Whether a layer is mounted and alive at `mountpoint`: after a daemon restart with a
    /// FUSE process that outlived it, mounts that are still served are kept.
    fn is_mounted(&self, mountpoint: &Path) -> bool;
    /// Progress of the layer mounted at `mountpoint`, if it is.
    fn progress(&self, mountpoint: &Path) -> Option<RemoteProgress>;
}

/// No remote layers: every layer is pulled normally.
#[derive(Debug, Default)]
pub struct NoRemote;

impl RemoteLayers for NoRemote {
    fn mount(&self, _: &Path, _: &BTreeMap<String, String>) -> Result<(), Fallback> {
        Err(Fallback {
            kind: "disabled",
            reason: "remote layers are disabled in this daemon".to_owned(),
        })
    }
    fn check(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
    fn unmount(&self, _: &Path) -> Result<(), String> {
        Ok(())
    }
    fn is_mounted(&self, _: &Path) -> bool {
        false
    }
    fn progress(&self, _: &Path) -> Option<RemoteProgress> {
        None
    }
}

/// Options of a [`Snapshotter`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Turn every fallback into an error: a layer that has remote-snapshot labels but cannot be
    /// mounted remotely fails its `Prepare`.
    pub strict: bool,
    /// Keep going at start-up when a remote snapshot cannot be mounted again (it is left as
    /// an empty directory; remove it by hand). stargz-snapshotter's
    /// `allow_invalid_mounts_on_restart`.
    pub allow_invalid_mounts_on_restart: bool,
}

/// The snapshotter. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Snapshotter {
    root: PathBuf,
    store: Store,
    remote: Arc<dyn RemoteLayers>,
    status: Arc<StatusBoard>,
    options: Options,
    index_off: bool,
}

/// Disk usage of a directory tree as containerd computes it: 512-byte blocks of every distinct
/// inode, and the number of distinct inodes.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = std::collections::HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        if seen.insert((md.dev(), md.ino())) {
            usage.inodes += 1;
            usage.size += i64::try_from(md.blocks()).unwrap_or(i64::MAX / 1024) * 512;
        }
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| Error::io("read dir", &path, e))? {
                stack.push(entry.map_err(|e| Error::io("read dir", &path, e))?.path());
            }
        }
    }
    Ok(usage)
}

fn has_remote_labels(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key(LAYER_DIGEST_LABEL) || labels.contains_key(CRI_LAYER_DIGEST_LABEL)
}

fn layer_digest(labels: &BTreeMap<String, String>) -> String {
    labels
        .get(CRI_LAYER_DIGEST_LABEL)
        .or_else(|| labels.get(LAYER_DIGEST_LABEL))
        .cloned()
        .unwrap_or_default()
}

impl Snapshotter {
    /// Opens the snapshotter rooted at `root` (created if missing). Remote snapshots found in
    /// the metadata are mounted again (unless still mounted) before this returns.
    pub fn open(
        root: &Path,
        remote: Arc<dyn RemoteLayers>,
        status: Arc<StatusBoard>,
        options: Options,
    ) -> Result<Self> {
        let snapshots = root.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(|e| Error::io("create", &snapshots, e))?;
        let store = Store::open(&root.join("metadata.db"))?;
        let index_off = Path::new("/sys/module/overlay/parameters/index").exists();
        let sn = Snapshotter {
            root: root.to_path_buf(),
            store,
            remote,
            status,
            options,
            index_off,
        };
        sn.load_status()?;
        sn.restore_remote()?;
        Ok(sn)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn upper(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn load_status(&self) -> Result<()> {
        for (name, json) in self.store.layers()? {
            match serde_json::from_slice::<LayerState>(&json) {
                Ok(state) => self.status.insert(&name, state),
                Err(e) => tracing::warn!(snapshot = %name, error = %e, "unreadable layer status"),
            }
        }
        Ok(())
    }

    fn record_layer(&self, name: &str, state: LayerState) {
        match serde_json::to_vec(&state) {
            Ok(json) => {
                if let Err(e) = self.store.put_layer(name, &json) {
                    tracing::warn!(snapshot = %name, error = %e, "cannot persist layer status");
                }
            }
            Err(e) => tracing::warn!(snapshot = %name, error = %e, "cannot encode layer status"),
        }
        self.status.insert(name, state);
    }

    /// Mounts every remote snapshot again that is not mounted any more (after a restart or a
    /// crash). Fails unless `allow_invalid_mounts_on_restart`.
    fn restore_remote(&self) -> Result<()> {
        for info in self.store.list()? {
            if info.record.labels.get(REMOTE_LABEL).map(String::as_str) != Some(REMOTE_LABEL_VALUE)
            {
                continue;
            }
            let fs = self.upper(info.record.id);
            if self.remote.is_mounted(&fs) {
                tracing::info!(snapshot = %info.name, mountpoint = %fs.display(), "remote layer still mounted");
                continue;
            }
            // A dead FUSE mount ("transport endpoint is not connected") must go first.
            let _ = rustix::mount::unmount(&fs, rustix::mount::UnmountFlags::DETACH);
            if let Err(e) = std::fs::create_dir_all(&fs) {
                tracing::warn!(path = %fs.display(), error = %e, "cannot recreate mountpoint");
            }
            match self.remote.mount(&fs, &info.record.labels) {
                Ok(()) => tracing::info!(snapshot = %info.name, "remote layer restored"),
                Err(f) if self.options.allow_invalid_mounts_on_restart => {
                    tracing::error!(snapshot = %info.name, reason = %f.reason,
                        "cannot restore remote layer; left empty (allow_invalid_mounts_on_restart)");
                }
                Err(f) => {
                    return Err(Error::Other(format!(
                        "cannot restore remote snapshot {:?}: {} (set [snapshotter] \
                         allow_invalid_mounts_on_restart = true to start anyway)",
                        info.name, f.reason
                    )))
                }
            }
        }
        Ok(())
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(store::Created, Vec<Mount>)> {
        let snapshots = self.root.join("snapshots");
        let created = self.store.create(kind, key, parent, labels, |c| {
            let tmp = snapshots.join(format!("new-{}", c.id));
            let _ = std::fs::remove_dir_all(&tmp);
            let result = (|| {
                std::fs::create_dir(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
                let fs = tmp.join("fs");
                std::fs::create_dir(&fs).map_err(|e| Error::io("create", &fs, e))?;
                set_mode(&fs, 0o755)?;
                if kind == Kind::Active {
                    let work = tmp.join("work");
                    std::fs::create_dir(&work).map_err(|e| Error::io("create", &work, e))?;
                    set_mode(&work, 0o711)?;
                }
                if let Some(&pid) = c.parent_ids.first() {
                    let pfs = self.upper(pid);
                    let md =
                        std::fs::metadata(&pfs).map_err(|e| Error::io("stat parent", &pfs, e))?;
                    std::os::unix::fs::lchown(&fs, Some(md.uid()), Some(md.gid()))
                        .map_err(|e| Error::io("chown", &fs, e))?;
                }
                let dir = self.dir(c.id);
                std::fs::rename(&tmp, &dir).map_err(|e| Error::io("rename", &dir, e))
            })();
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            result
        })?;
        let mounts = self.mounts_of(kind, created.id, &created.parent_ids);
        Ok((created, mounts))
    }

    fn mounts_of(&self, kind: Kind, id: u64, parent_ids: &[u64]) -> Vec<Mount> {
        let path = |id| self.upper(id).to_string_lossy().into_owned();
        if parent_ids.is_empty() {
            let ro = if kind == Kind::View { "ro" } else { "rw" };
            return vec![Mount {
                kind: "bind".into(),
                source: path(id),
                options: vec![ro.into(), "rbind".into()],
            }];
        }
        let mut options = Vec::new();
        if self.index_off {
            options.push("index=off".to_owned());
        }
        if kind == Kind::Active {
            options.push(format!("workdir={}", self.dir(id).join("work").display()));
            options.push(format!("upperdir={}", path(id)));
        } else if parent_ids.len() == 1 {
            return vec![Mount {
                kind: "bind".into(),
                source: path(parent_ids[0]),
                options: vec!["ro".into(), "rbind".into()],
            }];
        }
        let lower: Vec<String> = parent_ids.iter().map(|&p| path(p)).collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        vec![Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        }]
    }

    /// Checks every remote layer under `key` (its ancestors) before mounts stacking on them
    /// are handed out. Any failure is `Unavailable`.
    fn check_remote_chain(&self, key: &str) -> Result<()> {
        for info in self.store.ancestors(key)? {
            if info.record.labels.get(REMOTE_LABEL).map(String::as_str) == Some(REMOTE_LABEL_VALUE)
            {
                let fs = self.upper(info.record.id);
                self.remote.check(&fs).map_err(|e| {
                    Error::Unavailable(format!("layer {:?} unavailable: {e}", info.name))
                })?;
            }
        }
        Ok(())
    }

    /// `Prepare`: a writable snapshot on top of `parent`. With [`TARGET_REF_LABEL`] it first
    /// tries to mount the layer remotely and answers `AlreadyExists` when that works.
    pub fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let target = labels.get(TARGET_REF_LABEL).cloned();
        let (created, mounts) = self.create(Kind::Active, key, parent, labels.clone())?;
        let Some(target) = target else {
            self.check_remote_chain(key)?;
            return Ok(mounts);
        };
        let digest = layer_digest(&labels);
        if !has_remote_labels(&labels) {
            tracing::debug!(key, target = %target, "no remote-snapshot labels: normal pull");
            self.record_layer(
                &target,
                LayerState::local(&digest, "no remote-snapshot labels (not a lazy pull)"),
            );
            return Ok(mounts);
        }
        let fs = self.upper(created.id);
        let started = std::time::Instant::now();
        match self.remote.mount(&fs, &labels) {
            Ok(()) => {
                let mut committed = labels;
                committed.insert(REMOTE_LABEL.to_owned(), REMOTE_LABEL_VALUE.to_owned());
                match self.store.commit(key, &target, Usage::default(), committed) {
                    Ok(_) | Err(Error::AlreadyExists(_)) => {}
                    Err(e) => {
                        let _ = self.remote.unmount(&fs);
                        return Err(e);
                    }
                }
                tracing::info!(key, target = %target, digest = %digest,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    remote_snapshot_prepared = true, "layer mounted remotely");
                self.record_layer(&target, LayerState::remote(&digest));
                Err(Error::AlreadyExists(format!("target snapshot {target:?}")))
            }
            Err(f) => {
                tracing::warn!(key, target = %target, digest = %digest, reason = %f.reason,
                    kind = f.kind, remote_snapshot_prepared = false,
                    strict = self.options.strict, "falling back to a normal pull");
                crate::metrics::global().fallback(f.kind);
                self.record_layer(&target, LayerState::fallback(&digest, f.kind, &f.reason));
                if self.options.strict {
                    if let Err(e) = self.remove(key) {
                        tracing::warn!(key, error = %e, "cannot remove the failed snapshot");
                    }
                    return Err(Error::FailedPrecondition(format!(
                        "strict mode: layer {digest} cannot be mounted remotely: {}",
                        f.reason
                    )));
                }
                Ok(mounts)
            }
        }
    }

    /// `View`: a read-only snapshot of `parent`.
    pub fn view(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let (_, mounts) = self.create(Kind::View, key, parent, labels)?;
        self.check_remote_chain(key)?;
        Ok(mounts)
    }

    /// `Mounts`: the mounts of an active or view snapshot.
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let (rec, parents) = self.store.get_with_parents(key)?;
        if rec.kind == Kind::Committed {
            return Err(Error::FailedPrecondition(format!(
                "requested snapshot {key} not active or view"
            )));
        }
        self.check_remote_chain(key)?;
        Ok(self.mounts_of(rec.kind, rec.id, &parents))
    }

    /// `Commit`: commits the active snapshot `key` as `name`, recording its disk usage.
    pub fn commit(&self, name: &str, key: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let rec = self.store.get(key)?;
        let usage = if rec.kind == Kind::Active {
            disk_usage(&self.upper(rec.id))?
        } else {
            Usage::default()
        };
        self.store.commit(key, name, usage, labels)?;
        Ok(())
    }

    /// `Remove`: removes the snapshot and its directory (unmounting a remote layer first).
    pub fn remove(&self, key: &str) -> Result<()> {
        let rec = self.store.remove(key)?;
        let status_key = rec.labels.get(TARGET_REF_LABEL).map_or(key, String::as_str);
        if rec.kind == Kind::Committed && self.status.contains(status_key) {
            self.status.remove(status_key);
            if let Err(e) = self.store.remove_layer(status_key) {
                tracing::warn!(key, error = %e, "cannot remove layer status");
            }
        }
        let dir = self.dir(rec.id);
        if rec.labels.contains_key(REMOTE_LABEL) || self.remote.is_mounted(&dir.join("fs")) {
            if let Err(e) = self.remote.unmount(&dir.join("fs")) {
                tracing::warn!(key, error = %e, "cannot unmount remote layer");
            }
        }
        remove_tree(&dir);
        Ok(())
    }

    /// `Stat`.
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(Info {
            name: key.to_owned(),
            record: self.store.get(key)?,
        })
    }

    /// `Update`: labels only (see [`Store::update`]).
    pub fn update(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<Info> {
        Ok(Info {
            name: name.to_owned(),
            record: self.store.update(name, labels, paths)?,
        })
    }

    /// `List` (`Walk`): every snapshot matching `filter`.
    pub fn list(&self, filter: &Filter) -> Result<Vec<Info>> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter(|i| filter.matches(i))
            .collect())
    }

    /// `Usage`: computed for active snapshots, as recorded for the others.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.store.get(key)?;
        if rec.kind == Kind::Active {
            disk_usage(&self.upper(rec.id))
        } else {
            Ok(rec.usage)
        }
    }

    /// `Cleanup`: removes every snapshot directory that the metadata does not know (left by a
    /// crash or an interrupted `Prepare`), unmounting a remote layer first.
    pub fn cleanup(&self) -> Result<()> {
        let ids: std::collections::HashSet<String> = self
            .store
            .list()?
            .into_iter()
            .map(|i| i.record.id.to_string())
            .collect();
        let snapshots = self.root.join("snapshots");
        for entry in
            std::fs::read_dir(&snapshots).map_err(|e| Error::io("read dir", &snapshots, e))?
        {
            let entry = entry.map_err(|e| Error::io("read dir", &snapshots, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.contains(&name) {
                continue;
            }
            let fs = entry.path().join("fs");
            if self.remote.is_mounted(&fs) {
                let _ = self.remote.unmount(&fs);
            }
            tracing::info!(path = %entry.path().display(), "cleanup: removing orphaned snapshot directory");
            remove_tree(&entry.path());
        }
        Ok(())
    }

    /// Refreshes the status board with the progress of every mounted remote layer.
    pub fn refresh_status(&self) {
        let Ok(list) = self.store.list() else { return };
        for info in list {
            if info.record.labels.contains_key(REMOTE_LABEL) {
                if let Some(p) = self.remote.progress(&self.upper(info.record.id)) {
                    self.status.update_progress(&info.name, &p);
                }
            }
        }
    }

    /// Unmounts every remote layer (daemon shutdown without a FUSE process that outlives it).
    pub fn unmount_all(&self) {
        let Ok(list) = self.store.list() else { return };
        for info in list {
            if info.record.labels.contains_key(REMOTE_LABEL) {
                let _ = self.remote.unmount(&self.upper(info.record.id));
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Removes a snapshot directory; a mount left inside it (a dead FUSE mount) is detached first.
fn remove_tree(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        let fs = dir.join("fs");
        let _ = rustix::mount::unmount(&fs, rustix::mount::UnmountFlags::DETACH);
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(path = %dir.display(), error = %e, "failed to remove directory");
        }
    }
}
