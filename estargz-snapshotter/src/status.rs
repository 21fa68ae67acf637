//! Per-layer state, as `estargz status` shows it: remote or local, how much of a remote layer
//! has been fetched, and why a layer is not remote.
//!
//! The daemon keeps one [`StatusBoard`], persists every entry in its metadata database (so a
//! restart does not forget why a layer fell back), serves it as JSON on the metrics server
//! (`GET /status`) and writes it to `<root>/status.json` (what `estargz status` reads when no
//! address is given).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::snapshotter::RemoteProgress;

/// Where a layer's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Mounted lazily from the registry.
    Remote,
    /// Downloaded and unpacked by containerd.
    Local,
}

/// The state of one layer snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerState {
    /// The layer blob's digest (from the snapshot labels; empty when unknown).
    pub digest: String,
    /// Remote or local.
    pub mode: Mode,
    /// For a local layer: why it is not remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a fallback: its class (the `kind` label of the fallback metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// For a remote layer: the blob's size.
    #[serde(default)]
    pub size: u64,
    /// For a remote layer: compressed bytes fetched so far.
    #[serde(default)]
    pub fetched: u64,
    /// For a remote layer: the last read error (failed verification, registry error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl LayerState {
    /// A layer mounted remotely.
    pub fn remote(digest: &str) -> Self {
        LayerState {
            digest: digest.to_owned(),
            mode: Mode::Remote,
            reason: None,
            fallback: None,
            size: 0,
            fetched: 0,
            error: None,
        }
    }

    /// A layer pulled normally, not as a fallback (no remote-snapshot labels).
    pub fn local(digest: &str, reason: &str) -> Self {
        LayerState {
            mode: Mode::Local,
            reason: Some(reason.to_owned()),
            ..Self::remote(digest)
        }
    }

    /// A layer that had remote-snapshot labels but fell back to a normal pull.
    pub fn fallback(digest: &str, kind: &str, reason: &str) -> Self {
        LayerState {
            fallback: Some(kind.to_owned()),
            ..Self::local(digest, reason)
        }
    }

    /// Fetched bytes as a percentage of the blob (0 when the size is unknown).
    pub fn fetched_percent(&self) -> f64 {
        if self.size == 0 {
            0.0
        } else {
            self.fetched as f64 * 100.0 / self.size as f64
        }
    }
}

/// One line of the status document: the snapshot name and its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerStatus {
    /// The snapshot (chain id) this layer is committed as.
    pub snapshot: String,
    /// Its state.
    #[serde(flatten)]
    pub state: LayerState,
    /// `fetched / size × 100`.
    #[serde(default)]
    pub fetched_percent: f64,
}

/// Every layer's state, shared by the snapshotter, the metrics server and the status file.
#[derive(Debug, Default)]
pub struct StatusBoard {
    layers: Mutex<BTreeMap<String, LayerState>>,
    dirty: AtomicBool,
}

impl StatusBoard {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, LayerState>> {
        self.layers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the state of `snapshot`.
    pub fn insert(&self, snapshot: &str, state: LayerState) {
        self.lock().insert(snapshot.to_owned(), state);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Forgets `snapshot`.
    pub fn remove(&self, snapshot: &str) {
        if self.lock().remove(snapshot).is_some() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Whether `snapshot` has a state.
    pub fn contains(&self, snapshot: &str) -> bool {
        self.lock().contains_key(snapshot)
    }

    /// Records the progress of a remote layer.
    pub fn update_progress(&self, snapshot: &str, p: &RemoteProgress) {
        let mut layers = self.lock();
        if let Some(s) = layers.get_mut(snapshot) {
            if s.size != p.size || s.fetched != p.fetched || s.error != p.error {
                s.size = p.size;
                s.fetched = p.fetched;
                s.error.clone_from(&p.error);
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Every layer, by snapshot name.
    pub fn list(&self) -> Vec<LayerStatus> {
        self.lock()
            .iter()
            .map(|(k, v)| LayerStatus {
                snapshot: k.clone(),
                fetched_percent: v.fetched_percent(),
                state: v.clone(),
            })
            .collect()
    }

    /// The status document: `{"layers": [...]}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "layers": self.list() }).to_string()
    }

    /// Clears and returns the "changed since last call" flag.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::Relaxed)
    }
}
