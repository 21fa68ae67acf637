//! The daemon's configuration: `/etc/estargz-snapshotter/config.toml` by default.
//!
//! Key names are stargz-snapshotter's (`containerd-stargz-grpc`'s `config.toml`) wherever the
//! meaning is the same, so a config can move over: `prefetch_size`, `prefetch_timeout_sec`,
//! `noprefetch`, `no_background_fetch`, `max_concurrency`, `disable_verification`,
//! `allow_no_verification`, `metrics_address`, `[blob]`, `[fuse]`, `[resolver]`,
//! `[snapshotter] allow_invalid_mounts_on_restart`, `[fuse_manager]`. New keys: `address`,
//! `root`, `log_level`, `log_format`, `strict`, `[cache] max_size_bytes`,
//! `[credentials] docker_config`. Keys this daemon does not know are reported at start-up and
//! otherwise ignored (a stargz-snapshotter config loads as it is).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/estargz-snapshotter/config.toml";
/// The default gRPC socket.
pub const DEFAULT_ADDRESS: &str = "/run/estargz-snapshotter/estargz-snapshotter.sock";
/// The default root directory.
pub const DEFAULT_ROOT: &str = "/var/lib/estargz-snapshotter";
/// The default socket of the FUSE manager (the process that keeps layer mounts alive across
/// daemon restarts).
pub const DEFAULT_FUSE_MANAGER_ADDRESS: &str = "/run/estargz-snapshotter/fuse-manager.sock";

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The unix socket containerd's `[proxy_plugins.NAME] address` points at.
    pub address: PathBuf,
    /// Where snapshots, metadata and caches live.
    pub root: PathBuf,
    /// `error`, `warn`, `info`, `debug`, `trace` (or a tracing filter directive).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Prometheus `/metrics` (and `/status`) on this TCP address; empty: off.
    pub metrics_address: String,
    /// Fail `Prepare` instead of falling back to a normal pull when a layer with
    /// remote-snapshot labels cannot be mounted remotely.
    pub strict: bool,
    /// Default prefetch size in bytes when a layer has no prefetch landmark.
    pub prefetch_size: u64,
    /// How long a mount waits for prefetch to finish before containers may use it.
    pub prefetch_timeout_sec: u64,
    /// No prefetch at all.
    pub noprefetch: bool,
    /// No background download of whole layers.
    pub no_background_fetch: bool,
    /// Concurrent background fetches.
    pub max_concurrency: u64,
    /// Never verify (TOC digest or chunks). Dangerous; for experiments only.
    pub disable_verification: bool,
    /// Honour the `containerd.io/snapshot/remote/stargz.skipverify` label.
    pub allow_no_verification: bool,
    /// `"memory"` keeps fetched chunks only in memory; anything else: on disk under `root`.
    pub filesystem_cache_type: String,
    /// Disable all remote (lazy) mounting: a plain overlayfs snapshotter.
    pub disable_remote: bool,
    /// `[blob]`: registry fetching.
    pub blob: BlobConfig,
    /// `[cache]`: the verified chunk cache.
    pub cache: CacheConfig,
    /// `[fuse]`: FUSE mounts.
    pub fuse: FuseConfig,
    /// `[resolver]`: registry hosts and mirrors.
    pub resolver: ResolverConfig,
    /// `[credentials]`: where registry credentials come from.
    pub credentials: CredentialsConfig,
    /// `[snapshotter]`.
    pub snapshotter: SnapshotterConfig,
    /// `[fuse_manager]`: keep FUSE mounts in a process that outlives the daemon.
    pub fuse_manager: FuseManagerConfig,
}

/// `[blob]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BlobConfig {
    /// HTTP fetch and cache granularity in bytes.
    pub chunk_size: u64,
    /// Timeout of one fetch (seconds).
    pub fetching_timeout_sec: u64,
    /// Never send multi-range requests.
    pub force_single_range_mode: bool,
    /// Max bytes per request during prefetch (effective when larger than `chunk_size`).
    pub prefetch_chunk_size: u64,
    /// HTTP retries.
    pub max_retries: u32,
    /// Minimum backoff (ms).
    pub min_wait_msec: u64,
    /// Maximum backoff (ms).
    pub max_wait_msec: u64,
    /// Skip registry liveness checks within this many seconds of the last success.
    pub valid_interval: u64,
    /// Check the registry on every `Mounts` (forces `valid_interval = 0`).
    pub check_always: bool,
}

impl Default for BlobConfig {
    fn default() -> Self {
        BlobConfig {
            chunk_size: 50_000,
            fetching_timeout_sec: 300,
            force_single_range_mode: false,
            prefetch_chunk_size: 0,
            max_retries: 5,
            min_wait_msec: 30,
            max_wait_msec: 300_000,
            valid_interval: 60,
            check_always: false,
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// Upper bound of the on-disk chunk cache in bytes (least recently used chunks are
    /// evicted beyond it). 0: no bound.
    pub max_size_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size_bytes: 10 << 30,
        }
    }
}

/// `[fuse]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FuseConfig {
    /// Attribute cache timeout (seconds).
    pub attr_timeout: u64,
    /// Entry cache timeout (seconds).
    pub entry_timeout: u64,
    /// Use FUSE passthrough for files whose data is on local disk.
    pub passthrough: bool,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            attr_timeout: 1,
            entry_timeout: 1,
            passthrough: false,
        }
    }
}

/// `[resolver]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResolverConfig {
    /// Default timeout of registry requests (seconds); 0 means 30.
    pub request_timeout_sec: i64,
    /// Per registry host: its mirrors, tried in order before the host itself.
    pub host: BTreeMap<String, HostConfig>,
    /// Local directories searched for a layer blob by digest before any registry:
    /// `<dir>/sha256/<hex>` or `<dir>/blobs/sha256/<hex>` (an OCI layout, or containerd's
    /// content store `.../io.containerd.content.v1.content`).
    pub local_dirs: Vec<PathBuf>,
}

/// `[resolver.host."<registry>"]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    /// `[[resolver.host."<registry>".mirrors]]`.
    pub mirrors: Vec<MirrorConfig>,
}

/// One mirror.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MirrorConfig {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP.
    pub insecure: bool,
    /// Timeout (seconds); 0: the resolver's default; negative: none.
    pub request_timeout_sec: i64,
    /// Extra headers.
    pub header: BTreeMap<String, toml::Value>,
}

/// `[credentials]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CredentialsConfig {
    /// A docker `config.json` (auths and credential helpers); empty: `$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json`.
    pub docker_config: PathBuf,
}

/// `[snapshotter]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotterConfig {
    /// Start even when a remote snapshot cannot be mounted again.
    pub allow_invalid_mounts_on_restart: bool,
}

/// `[fuse_manager]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FuseManagerConfig {
    /// Keep FUSE mounts in the separate `estargz-snapshotter fuse-manager` process, so
    /// restarting or upgrading the daemon does not disturb running containers.
    pub enable: bool,
    /// Its socket (absolute).
    pub address: PathBuf,
    /// Its binary; empty: this daemon's own binary.
    pub path: PathBuf,
}

impl Default for FuseManagerConfig {
    fn default() -> Self {
        FuseManagerConfig {
            enable: true,
            address: PathBuf::from(DEFAULT_FUSE_MANAGER_ADDRESS),
            path: PathBuf::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: PathBuf::from(DEFAULT_ADDRESS),
            root: PathBuf::from(DEFAULT_ROOT),
            log_level: "info".to_owned(),
            log_format: "text".to_owned(),
            metrics_address: String::new(),
            strict: false,
            prefetch_size: 0,
            prefetch_timeout_sec: 10,
            noprefetch: false,
            no_background_fetch: false,
            max_concurrency: 2,
            disable_verification: false,
            allow_no_verification: false,
            filesystem_cache_type: String::new(),
            disable_remote: false,
            blob: BlobConfig::default(),
            cache: CacheConfig::default(),
            fuse: FuseConfig::default(),
            resolver: ResolverConfig::default(),
            credentials: CredentialsConfig::default(),
            snapshotter: SnapshotterConfig::default(),
            fuse_manager: FuseManagerConfig::default(),
        }
    }
}

/// A config that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a value of the wrong type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, where.
        message: String,
    },
}

/// Keys of stargz-snapshotter's config that this daemon accepts but does not use.
const IGNORED_STARGZ_KEYS: &[&str] = &[
    "http_cache_type",
    "resolve_result_entry_ttl_sec",
    "resolve_result_entry",
    "prefetch_async_size",
    "debug",
    "no_prometheus",
    "log_file_access",
    "metadata_store",
    "ipfs",
    "debug_address",
    "directory_cache",
    "kubeconfig_keychain",
    "cri_keychain",
];

impl Config {
    /// Parses TOML text; returns the config and the keys it did not recognise.
    pub fn parse(text: &str, path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let perr = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let value: toml::Value = toml::from_str(text).map_err(|e| perr(e.to_string()))?;
        let config: Config = value
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| perr(e.to_string()))?;
        // Unknown keys: compare with what the parsed config serialises back to.
        let known = toml::Value::try_from(&config).map_err(|e| perr(e.to_string()))?;
        let mut unknown = Vec::new();
        collect_unknown(&value, &known, "", &mut unknown);
        unknown.retain(|k| {
            !IGNORED_STARGZ_KEYS
                .iter()
                .any(|i| k == i || k.starts_with(&format!("{i}.")))
        });
        Ok((config, unknown))
    }

    /// Loads `path`. A missing file at the default path is the default config; a missing
    /// file given explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<(Self, Vec<String>), ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok((Config::default(), Vec::new()))
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

fn collect_unknown(have: &toml::Value, known: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    let (Some(have), Some(known)) = (have.as_table(), known.as_table()) else {
        return;
    };
    for (k, v) in have {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match known.get(k) {
            None => {
                // maps (resolver.host, header) accept any key
                if !matches!(prefix, "resolver.host") {
                    out.push(path);
                }
            }
            Some(kv) if !prefix.starts_with("resolver.host") => collect_unknown(v, kv, &path, out),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stargz_snapshotter_config_loads() {
        let text = r#"
metrics_address = "127.0.0.1:8234"
noprefetch = false
prefetch_size = 1000
http_cache_type = "memory"
no_such_key = 1
[blob]
chunk_size = 100000
[directory_cache]
direct = true
[fuse]
attr_timeout = 2
[[resolver.host."docker.io".mirrors]]
host = "mirror.example:5000"
insecure = true
[snapshotter]
allow_invalid_mounts_on_restart = true
"#;
        let (c, unknown) = Config::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(c.metrics_address, "127.0.0.1:8234");
        assert_eq!(c.prefetch_size, 1000);
        assert_eq!(c.blob.chunk_size, 100_000);
        assert_eq!(c.blob.max_retries, 5);
        assert_eq!(c.fuse.attr_timeout, 2);
        assert_eq!(
            c.resolver.host["docker.io"].mirrors[0].host,
            "mirror.example:5000"
        );
        assert!(c.snapshotter.allow_invalid_mounts_on_restart);
        assert_eq!(unknown, vec!["no_such_key".to_owned()]);
    }

    #[test]
    fn shipped_example_config_has_only_known_keys() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/config.toml");
        let (c, unknown) = Config::load(&path, true).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c.metrics_address, "127.0.0.1:8234");
        assert!(c.fuse_manager.enable);
    }

    #[test]
    fn missing_default_file_is_default() {
        let (c, _) = Config::load(Path::new("/nonexistent/config.toml"), false).unwrap();
        assert_eq!(c.address, PathBuf::from(DEFAULT_ADDRESS));
        assert!(Config::load(Path::new("/nonexistent/config.toml"), true).is_err());
        assert!(Config::parse("prefetch_size = \"x\"", Path::new("c.toml")).is_err());
    }
}
