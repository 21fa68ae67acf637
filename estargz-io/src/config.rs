//! Configuration of the network layer: retry policy, timeouts, and per-registry hosts (mirrors,
//! plain HTTP, TLS verification), modelled on containerd's `hosts.toml`.
//!
//! ```
//! use estargz_io::config::RegistryConfig;
//!
//! let cfg: RegistryConfig = toml::from_str(r#"
//!     [[hosts]]
//!     host = "docker.io"
//!     mirrors = [{ host = "mirror.local:5000", plain_http = true }]
//!
//!     [[hosts]]
//!     host = "127.0.0.1:5000"
//!     plain_http = true
//! "#).unwrap();
//! let eps = cfg.endpoints("docker.io");
//! assert_eq!(eps[0].host, "mirror.local:5000");
//! assert_eq!(eps[1].host, "registry-1.docker.io");
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// How often and how long requests are retried, and their timeouts.
///
/// Retried: connection failures, resets and timeouts, truncated or malformed bodies, 408, 429
/// and 5xx except 501. The wait before attempt `n` (from 1) is a random duration in
/// `[d, 2d)` with `d = min(initial_backoff * 2^(n-1), max_backoff)`.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// The base wait before the first retry.
    pub initial_backoff: Duration,
    /// The largest base wait.
    pub max_backoff: Duration,
    /// No new attempt starts after this much time since the first one.
    pub max_elapsed: Duration,
    /// Timeout of one request, body included.
    pub request_timeout: Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(120),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry), with jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        let d = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        d + d.mul_f64(fastrand::f64())
    }
}

/// One endpoint a blob can be fetched from: a mirror or the registry itself.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct MirrorConfig {
    /// `host[:port]`.
    pub host: String,
    /// Use `http://` instead of `https://`.
    #[serde(default)]
    pub plain_http: bool,
    /// Accept any TLS certificate (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The API path prefix (default `/v2`).
    #[serde(default)]
    pub path: Option<String>,
    /// Extra headers sent with every request to this endpoint.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// What to do for one registry host.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct HostConfig {
    /// The registry host as written in references (`docker.io`, `127.0.0.1:5000`).
    pub host: String,
    /// Mirrors, tried in order before the host itself.
    #[serde(default)]
    pub mirrors: Vec<MirrorConfig>,
    /// Use `http://` for the host itself.
    #[serde(default)]
    pub plain_http: bool,
    /// Accept any TLS certificate from the host itself (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Extra headers sent with every request to the host itself.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Do not fall back to the host itself when every mirror failed.
    #[serde(default)]
    pub mirrors_only: bool,
}

/// Registry hosts, like containerd's `certs.d/<host>/hosts.toml` files gathered in one place.
///
/// Hosts without an entry use HTTPS with certificate verification, except loopback hosts
/// (`localhost`, `127.x.x.x`, `[::1]`), which use plain HTTP as containerd allows.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RegistryConfig {
    /// One entry per registry host.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
}

impl RegistryConfig {
    /// Parses a TOML file's contents.
    pub fn from_toml(text: &str) -> Result<RegistryConfig> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// A config where `host` uses plain HTTP (the CLI's `--plain-http`).
    pub fn plain_http(host: &str) -> RegistryConfig {
        RegistryConfig {
            hosts: vec![HostConfig {
                host: host.to_owned(),
                mirrors: Vec::new(),
                plain_http: true,
                insecure_skip_verify: false,
                headers: BTreeMap::new(),
                mirrors_only: false,
            }],
        }
    }

    /// The endpoints to try for `host`, in order: its mirrors, then the host itself (with
    /// `docker.io` served by `registry-1.docker.io`).
    pub fn endpoints(&self, host: &str) -> Vec<MirrorConfig> {
        let upstream = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let cfg = self.hosts.iter().find(|h| h.host == host);
        let mut out: Vec<MirrorConfig> = cfg.map(|c| c.mirrors.clone()).unwrap_or_default();
        if !cfg.is_some_and(|c| c.mirrors_only && !c.mirrors.is_empty()) {
            out.push(MirrorConfig {
                host: upstream.to_owned(),
                plain_http: cfg.map_or_else(|| is_loopback(host), |c| c.plain_http),
                insecure_skip_verify: cfg.is_some_and(|c| c.insecure_skip_verify),
                path: None,
                headers: cfg.map(|c| c.headers.clone()).unwrap_or_default(),
            });
        }
        out
    }
}

/// True for `localhost`, `127.x.x.x` and `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:80"));
        assert!(!is_loopback("example.com:5000"));
    }

    #[test]
    fn endpoints_default() {
        let cfg = RegistryConfig::default();
        let e = cfg.endpoints("127.0.0.1:5000");
        assert_eq!(e.len(), 1);
        assert!(e[0].plain_http);
        let e = cfg.endpoints("ghcr.io");
        assert!(!e[0].plain_http);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..RetryPolicy::default()
        };
        for _ in 0..20 {
            let b1 = p.backoff(1);
            assert!(b1 >= Duration::from_millis(10) && b1 < Duration::from_millis(20));
            let b9 = p.backoff(9);
            assert!(b9 >= Duration::from_millis(40) && b9 < Duration::from_millis(80));
        }
    }
}
