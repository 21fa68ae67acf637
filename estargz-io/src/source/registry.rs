//! [`RegistrySource`]: a blob in an OCI registry (`HOST/REPO@sha256:DIGEST`), fetched from
//! `GET /v2/<repo>/blobs/<digest>` with Range requests, through mirrors in order.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use estargz::Digest;
use reqwest::Url;

use super::{check_ranges, BlobSource};
use crate::auth::{Authorizer, Keychain, TokenMethod};
use crate::config::{MirrorConfig, RegistryConfig};
use crate::error::{Error, Result};
use crate::http::{build_client, header_map, Endpoint, Engine, EngineOptions, HttpCounters};
use crate::reference::Reference;

/// Options of a [`RegistrySource`] (and of the registry client in general).
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Hosts, mirrors, plain HTTP, TLS verification.
    pub config: RegistryConfig,
    /// Where credentials come from.
    pub keychain: Arc<Keychain>,
    /// How tokens are requested when there are credentials.
    pub token_method: TokenMethod,
    /// Retries, timeouts, multi-range behaviour.
    pub engine: EngineOptions,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            config: RegistryConfig::default(),
            keychain: Arc::new(Keychain::from_environment()),
            token_method: TokenMethod::default(),
            engine: EngineOptions::default(),
        }
    }
}

/// A blob in an OCI registry.
///
/// Authentication answers whatever the registry asks (anonymous or credentialed bearer tokens,
/// basic auth), with credentials from [`RegistryOptions::keychain`]; an expired token is renewed
/// on the 401 and the request retried, so a lazy read never fails because a token ran out.
///
/// ```no_run
/// # async fn demo() -> estargz_io::Result<()> {
/// use estargz_io::source::{BlobSource, RegistrySource};
/// use estargz_io::config::RegistryConfig;
///
/// let opts = estargz_io::source::RegistryOptions {
///     config: RegistryConfig::plain_http("127.0.0.1:5000"),
///     ..Default::default()
/// };
/// let src = RegistrySource::new(
///     &"127.0.0.1:5000/test/layer@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse()?,
///     opts,
/// )?;
/// println!("{} bytes", src.len().await?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RegistrySource {
    reference: Reference,
    engine: Engine,
}

/// `<scheme>://<host><path>` for an endpoint (no trailing slash).
pub(crate) fn endpoint_base(m: &MirrorConfig) -> String {
    let scheme = if m.plain_http { "http" } else { "https" };
    let path = m.path.as_deref().unwrap_or("/v2").trim_end_matches('/');
    format!("{scheme}://{}{path}", m.host)
}

impl RegistrySource {
    /// A source for the blob `reference` names (it must have a digest). No request is sent
    /// until the first read.
    pub fn new(reference: &Reference, opts: RegistryOptions) -> Result<RegistrySource> {
        let digest = reference.digest.ok_or_else(|| Error::Reference {
            value: reference.to_string(),
            reason: "a blob reference needs @sha256:<digest>".into(),
        })?;
        let engine = registry_engine(reference, &opts, "pull", |base| {
            format!("{base}/{}/blobs/{digest}", reference.repository)
        })?;
        Ok(RegistrySource {
            reference: reference.clone(),
            engine,
        })
    }

    /// The blob's digest.
    pub fn digest(&self) -> Option<Digest> {
        self.reference.digest
    }

    /// Request counters of this source.
    pub fn http_counters(&self) -> HttpCounters {
        self.engine.counters()
    }
}

/// An engine whose endpoints are `reference.host`'s mirrors then the host, each with its own
/// authoriser for `repository:<repo>:<actions>`; `url` makes the object URL from an endpoint's
/// base (`http://host/v2`).
pub(crate) fn registry_engine(
    reference: &Reference,
    opts: &RegistryOptions,
    actions: &str,
    url: impl Fn(&str) -> String,
) -> Result<Engine> {
    let scope = format!("repository:{}:{actions}", reference.repository);
    let mirrors = opts.config.endpoints(&reference.host);
    let upstream = if reference.host == "docker.io" {
        "registry-1.docker.io"
    } else {
        reference.host.as_str()
    };
    let mut endpoints = Vec::with_capacity(mirrors.len());
    for m in &mirrors {
        let client = build_client(m.insecure_skip_verify, &opts.engine.retry)?;
        let mut u = url(&endpoint_base(m));
        if m.host != upstream {
            u.push_str(&format!("?ns={}", reference.host));
        }
        let parsed = Url::parse(&u).map_err(|e| Error::Reference {
            value: u.clone(),
            reason: e.to_string(),
        })?;
        let auth = Arc::new(Authorizer::new(
            &m.host,
            &scope,
            Arc::clone(&opts.keychain),
            client.clone(),
            opts.token_method,
        ));
        endpoints.push(Endpoint::new(
            parsed,
            client,
            header_map(&m.headers)?,
            Some(auth),
        ));
    }
    Ok(Engine::new(endpoints, opts.engine.clone()))
}

#[async_trait]
impl BlobSource for RegistrySource {
    async fn len(&self) -> Result<u64> {
        self.engine.len().await
    }

    async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let len = self.engine.len().await?;
        check_ranges(&self.describe(), ranges, len)?;
        self.engine.read_ranges(ranges).await
    }

    async fn read_tail(&self, n: u64) -> Result<(Bytes, u64)> {
        self.engine.read_tail(n).await
    }

    fn describe(&self) -> String {
        self.reference.to_string()
    }
}
