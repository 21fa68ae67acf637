//! Registry writes and the reads a conversion needs: blob uploads (monolithic and chunked),
//! cross-repository mounts, manifest and index pushes and pulls, whole small blobs (configs).
//!
//! Talks to the registry host itself (mirrors are for pulling), with the same authorisation
//! as the lazy reader but the `pull,push` scope. Idempotent requests (`GET`, `HEAD`, `PUT`) are
//! retried on transient failures; `POST` and `PATCH` are not (an upload session restarts
//! from the beginning instead).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use estargz::Digest;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::Authorizer;
use crate::config::MirrorConfig;
use crate::error::{Error, RangeList, Result};
use crate::http::{build_client, header_map, method_name, transport};
use crate::source::registry::endpoint_base;
use crate::source::RegistryOptions;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest (or index) as fetched: bytes, media type and digest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The `Content-Type` the registry gave (or the `mediaType` field).
    pub media_type: String,
    /// The exact bytes (their digest is the manifest digest).
    pub bytes: Bytes,
    /// `sha256` of `bytes`.
    pub digest: Digest,
}

/// A client for one registry host: pushes and pulls whole objects.
///
/// ```no_run
/// # async fn demo() -> estargz_io::Result<()> {
/// use estargz_io::registry::RegistryClient;
/// use estargz_io::source::RegistryOptions;
/// use estargz_io::config::RegistryConfig;
///
/// let opts = RegistryOptions { config: RegistryConfig::plain_http("127.0.0.1:5000"), ..Default::default() };
/// let reg = RegistryClient::new("127.0.0.1:5000", opts)?;
/// let digest = reg.upload_blob("test/layer", bytes::Bytes::from_static(b"data")).await?;
/// assert!(reg.blob_exists("test/layer", &digest).await?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RegistryClient {
    host: String,
    base: String,
    endpoint: MirrorConfig,
    client: reqwest::Client,
    opts: RegistryOptions,
    auth: Mutex<HashMap<String, Arc<Authorizer>>>,
}

impl RegistryClient {
    /// A client for `host` (`127.0.0.1:5000`, `ghcr.io`), configured by `opts.config`.
    pub fn new(host: &str, opts: RegistryOptions) -> Result<RegistryClient> {
        let endpoint = opts
            .config
            .endpoints(host)
            .pop()
            .ok_or_else(|| Error::Config(format!("no endpoint for {host}")))?;
        let client = build_client(endpoint.insecure_skip_verify, &opts.engine.retry)?;
        Ok(RegistryClient {
            host: host.to_owned(),
            base: endpoint_base(&endpoint),
            endpoint,
            client,
            opts,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// The registry host.
    pub fn host(&self) -> &str {
        &self.host
    }

    fn authorizer(&self, scope: &str) -> Arc<Authorizer> {
        let mut m = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(m.entry(scope.to_owned()).or_insert_with(|| {
            Arc::new(Authorizer::new(
                &self.endpoint.host,
                scope,
                Arc::clone(&self.opts.keychain),
                self.client.clone(),
                self.opts.token_method,
            ))
        }))
    }

    fn url(&self, path: &str) -> Result<Url> {
        let u = format!("{}{path}", self.base);
        Url::parse(&u).map_err(|e| Error::Reference {
            value: u,
            reason: e.to_string(),
        })
    }

    /// Sends a request with authorisation (re-authorising once on 401) and, for idempotent
    /// methods, retries on transient failures.
    async fn send(
        &self,
        scope: &str,
        method: Method,
        url: Url,
        headers: &[(&'static str, String)],
        body: Option<Bytes>,
    ) -> Result<Response> {
        let auth = self.authorizer(scope);
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT);
        let policy = &self.opts.engine.retry;
        let extra = header_map(&self.endpoint.headers)?;
        let mut reauthorized = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .client
                .request(method.clone(), url.clone())
                .timeout(policy.request_timeout);
            for (k, v) in &extra {
                req = req.header(k, v);
            }
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let (h, gen) = auth.header().await?;
            if let Some(h) = h {
                req = req.header(AUTHORIZATION, h);
            }
            if let Some(b) = &body {
                req = req.header(CONTENT_LENGTH, b.len()).body(b.clone());
            }
            let res = req.send().await;
            let retryable = match &res {
                Err(_) => true,
                Ok(r) => r.status().is_server_error() && r.status() != StatusCode::NOT_IMPLEMENTED,
            };
            if idempotent && retryable && attempt < policy.max_attempts {
                tokio::time::sleep(policy.backoff(attempt)).await;
                continue;
            }
            let resp = res.map_err(|e| transport(&method, &url, &RangeList::default(), &e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !reauthorized {
                reauthorized = true;
                auth.unauthorized(url.as_str(), resp.headers(), gen).await?;
                continue;
            }
            return Ok(resp);
        }
    }

    fn push_scope(repo: &str) -> String {
        format!("repository:{repo}:pull,push")
    }

    /// True when the repository has the blob.
    pub async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(
                &format!("repository:{repo}:pull"),
                Method::HEAD,
                url.clone(),
                &[],
                None,
            )
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(Method::HEAD, &url, resp).await),
        }
    }

    /// Starts an upload session; returns its URL.
    async fn start_upload(&self, repo: &str) -> Result<Url> {
        let url = self.url(&format!("/{repo}/blobs/uploads/"))?;
        let resp = self
            .send(
                &Self::push_scope(repo),
                Method::POST,
                url.clone(),
                &[],
                Some(Bytes::new()),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(Method::POST, &url, resp).await);
        }
        location(&url, &resp)
    }

    /// Uploads `data` in one request (POST, then PUT with the body) unless the repository has
    /// it already; returns its digest.
    pub async fn upload_blob(&self, repo: &str, data: Bytes) -> Result<Digest> {
        let digest = Digest::of(&data);
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let loc = self.start_upload(repo).await?;
        self.finish_upload(repo, loc, &digest, Some(data)).await?;
        Ok(digest)
    }

    async fn finish_upload(
        &self,
        repo: &str,
        mut loc: Url,
        digest: &Digest,
        data: Option<Bytes>,
    ) -> Result<()> {
        loc.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let resp = self
            .send(
                &Self::push_scope(repo),
                Method::PUT,
                loc.clone(),
                &[("Content-Type", "application/octet-stream".into())],
                Some(data.unwrap_or_default()),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(Method::PUT, &loc, resp).await);
        }
        Ok(())
    }

    /// Uploads `data` in `chunk_size` pieces (POST, PATCH per piece, PUT), for large blobs and
    /// registries that limit request sizes; returns its digest.
    pub async fn upload_blob_chunked(
        &self,
        repo: &str,
        data: Bytes,
        chunk_size: usize,
    ) -> Result<Digest> {
        let digest = Digest::of(&data);
        if self.blob_exists(repo, &digest).await? {
            return Ok(digest);
        }
        let mut loc = self.start_upload(repo).await?;
        let mut off = 0usize;
        while off < data.len() {
            let end = (off + chunk_size.max(1)).min(data.len());
            loc = self
                .upload_chunk(repo, &loc, off as u64, data.slice(off..end))
                .await?;
            off = end;
        }
        self.finish_upload(repo, loc, &digest, None).await?;
        Ok(digest)
    }

    /// One `PATCH` of a chunked upload: `data` at offset `off` of the blob, sent to `loc`.
    /// Returns where the upload continues.
    async fn upload_chunk(
        &self,
        repo: &str,
        loc: &reqwest::Url,
        off: u64,
        data: Bytes,
    ) -> Result<reqwest::Url> {
        let end = off + data.len() as u64;
        let resp = self
            .send(
                &Self::push_scope(repo),
                Method::PATCH,
                loc.clone(),
                &[
                    ("Content-Type", "application/octet-stream".into()),
                    ("Content-Range", format!("{off}-{}", end - 1)),
                ],
                Some(data),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(Method::PATCH, loc, resp).await);
        }
        location(loc, &resp)
    }

    /// Asks the registry to link `digest` from `from_repo` into `repo` without uploading.
    /// Returns `false` when the registry declined (the caller uploads instead).
    pub async fn mount_blob(&self, repo: &str, from_repo: &str, digest: &Digest) -> Result<bool> {
        let mut url = self.url(&format!("/{repo}/blobs/uploads/"))?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from_repo);
        let scope = format!("{} repository:{from_repo}:pull", Self::push_scope(repo));
        let resp = self
            .send(&scope, Method::POST, url.clone(), &[], Some(Bytes::new()))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload session was opened instead: abandon it.
                if let Ok(loc) = location(&url, &resp) {
                    let _ = self
                        .send(&Self::push_scope(repo), Method::DELETE, loc, &[], None)
                        .await;
                }
                Ok(false)
            }
            _ => Err(status_error(Method::POST, &url, resp).await),
        }
    }

    /// Pushes a manifest or index under `reference` (a tag or its digest); returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest> {
        let digest = Digest::of(&bytes);
        let url = self.url(&format!("/{repo}/manifests/{reference}"))?;
        let resp = self
            .send(
                &Self::push_scope(repo),
                Method::PUT,
                url.clone(),
                &[("Content-Type", media_type.to_owned())],
                Some(bytes),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(Method::PUT, &url, resp).await);
        }
        Ok(digest)
    }

    /// Fetches a manifest or index by tag or digest (OCI and docker media types accepted).
    /// A manifest fetched by digest is checked against it.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        let url = self.url(&format!("/{repo}/manifests/{reference}"))?;
        let accept = [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let resp = self
            .send(
                &format!("repository:{repo}:pull"),
                Method::GET,
                url.clone(),
                &[("Accept", accept)],
                None,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(Method::GET, &url, resp).await);
        }
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = read_capped(resp, &url, 16 << 20).await?;
        let digest = Digest::of(&bytes);
        if let Ok(want) = Digest::parse(reference) {
            if want != digest {
                return Err(Error::Protocol {
                    url: url.to_string(),
                    range: RangeList::default(),
                    reason: format!("manifest hashes to {digest}, not {want}"),
                });
            }
        }
        Ok(Manifest {
            media_type,
            bytes,
            digest,
        })
    }

    /// Uploads the file at `path` (whose digest is `digest`) unless the repository has it
    /// already: one request when it is at most `chunk_size` bytes, else in `chunk_size`
    /// pieces read from the file one at a time (a layer is never held in memory whole).
    /// Returns `true` when bytes were uploaded.
    pub async fn upload_blob_file(
        &self,
        repo: &str,
        path: &std::path::Path,
        digest: &Digest,
        chunk_size: usize,
    ) -> Result<bool> {
        use tokio::io::AsyncReadExt;
        if self.blob_exists(repo, digest).await? {
            return Ok(false);
        }
        let ctx = |e| Error::io(format!("reading {}", path.display()), e);
        let mut file = tokio::fs::File::open(path).await.map_err(ctx)?;
        let len = file.metadata().await.map_err(ctx)?.len();
        let chunk_size = chunk_size.max(1);
        let mut loc = self.start_upload(repo).await?;
        if len <= chunk_size as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf).await.map_err(ctx)?;
            self.finish_upload(repo, loc, digest, Some(Bytes::from(buf)))
                .await?;
            return Ok(true);
        }
        let mut off = 0u64;
        while off < len {
            let want = (len - off).min(chunk_size as u64) as usize;
            let mut buf = vec![0u8; want];
            file.read_exact(&mut buf).await.map_err(ctx)?;
            loc = self.upload_chunk(repo, &loc, off, Bytes::from(buf)).await?;
            off += want as u64;
        }
        self.finish_upload(repo, loc, digest, None).await?;
        Ok(true)
    }

    /// `GET` of a blob, following one redirect to blob storage (without credentials): the URL
    /// asked and a successful response, else the error naming them.
    async fn get_blob_response(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(reqwest::Url, reqwest::Response)> {
        let url = self.url(&format!("/{repo}/blobs/{digest}"))?;
        let resp = self
            .send(
                &format!("repository:{repo}:pull"),
                Method::GET,
                url.clone(),
                &[],
                None,
            )
            .await?;
        let resp = if resp.status().is_redirection() {
            let loc = location(&url, &resp)?;
            self.client
                .get(loc)
                .send()
                .await
                .map_err(|e| transport(&Method::GET, &url, &RangeList::default(), &e))?
        } else {
            resp
        };
        if !resp.status().is_success() {
            return Err(status_error(Method::GET, &url, resp).await);
        }
        Ok((url, resp))
    }

    /// Streams a blob into `out` (from its current position), checking its digest and that it
    /// is exactly `size` bytes; returns the number of bytes written.
    pub async fn get_blob_to_file(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
        out: &mut tokio::fs::File,
    ) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        let (url, mut resp) = self.get_blob_response(repo, digest).await?;
        let mut hasher = estargz::digest::Hasher::new();
        let mut n = 0u64;
        let protocol = |reason: String| Error::Protocol {
            url: url.to_string(),
            range: RangeList::default(),
            reason,
        };
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    n += c.len() as u64;
                    if n > size {
                        return Err(protocol(format!("blob is larger than its {size} bytes")));
                    }
                    hasher.update(&c);
                    out.write_all(&c)
                        .await
                        .map_err(|e| Error::io("writing a downloaded blob", e))?;
                }
                Ok(None) => break,
                Err(e) => return Err(transport(&Method::GET, &url, &RangeList::default(), &e)),
            }
        }
        out.flush()
            .await
            .map_err(|e| Error::io("writing a downloaded blob", e))?;
        if n != size {
            return Err(protocol(format!(
                "blob is {n} bytes, its descriptor says {size}"
            )));
        }
        if hasher.finish() != *digest {
            return Err(protocol(format!("blob does not hash to {digest}")));
        }
        Ok(n)
    }

    /// Fetches a whole blob (configs, small layers), checking its digest, refusing more than
    /// `max_bytes`.
    pub async fn get_blob(&self, repo: &str, digest: &Digest, max_bytes: u64) -> Result<Bytes> {
        let (url, resp) = self.get_blob_response(repo, digest).await?;
        let bytes = read_capped(resp, &url, max_bytes).await?;
        if Digest::of(&bytes) != *digest {
            return Err(Error::Protocol {
                url: url.to_string(),
                range: RangeList::default(),
                reason: format!("blob does not hash to {digest}"),
            });
        }
        Ok(bytes)
    }
}

fn location(base: &Url, resp: &Response) -> Result<Url> {
    resp.headers()
        .get(LOCATION)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .and_then(|l| base.join(l).ok())
        .ok_or_else(|| Error::Protocol {
            url: base.to_string(),
            range: RangeList::default(),
            reason: format!("HTTP {} without a usable Location header", resp.status()),
        })
}

async fn read_capped(mut resp: Response, url: &Url, max: u64) -> Result<Bytes> {
    let mut buf = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if buf.len() as u64 + c.len() as u64 > max {
                    return Err(Error::Protocol {
                        url: url.to_string(),
                        range: RangeList::default(),
                        reason: format!("larger than {max} bytes"),
                    });
                }
                buf.extend_from_slice(&c);
            }
            Ok(None) => return Ok(Bytes::from(buf)),
            Err(e) => return Err(transport(&Method::GET, url, &RangeList::default(), &e)),
        }
    }
}

async fn status_error(method: Method, url: &Url, resp: Response) -> Error {
    let status = resp.status().as_u16();
    let detail = resp
        .bytes()
        .await
        .map(|b| {
            String::from_utf8_lossy(&b[..b.len().min(512)])
                .trim()
                .to_owned()
        })
        .unwrap_or_default();
    Error::Status {
        method: method_name(&method),
        url: url.to_string(),
        range: RangeList::default(),
        status,
        detail,
    }
}
