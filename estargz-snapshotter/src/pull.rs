//! The lazy-pull client: `estargz image pull REF` asks containerd, through its gRPC API, to
//! pull an image with a snapshotter (this project's daemon) and the remote-snapshot labels, as
//! `ctr-remote images rpull` does, so no Go tool is needed.
//!
//! What it does, in containerd's terms (all under one lease, so nothing is garbage collected
//! half-way):
//!
//! 1. Resolves `REF` in the registry (through `estargz-io`): the manifest, or the index and the
//!    manifest of the requested platform, and the image config.
//! 2. Writes the index, manifest and config into containerd's content store, with the
//!    garbage-collection labels containerd's own pull sets (`containerd.io/gc.ref.content.*`,
//!    and on the config `containerd.io/gc.ref.snapshot.SNAPSHOTTER` naming the top snapshot).
//! 3. Unpacks the layers in order: for each layer, `Prepare` of an `extract-… CHAINID` key
//!    with `containerd.io/snapshot.ref=CHAINID`, the remote-snapshot labels
//!    (`containerd.io/snapshot/remote/stargz.{reference,digest,layers}`) and the layer
//!    annotations under `containerd.io/snapshot/` (such as the TOC digest). The snapshotter
//!    answers `AlreadyExists` when it mounted the layer lazily; otherwise the layer blob is
//!    fetched into the content store, applied by containerd's diff service on the returned
//!    mounts, and committed as `CHAINID` (a normal pull, for this layer only).
//! 4. Creates (or updates) the image record `REF` pointing at the manifest (or index).
//!
//! The outcome of each layer (remote or pulled, and how many bytes were downloaded) is
//! returned, so the CLI can say what was lazy.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use estargz::Digest;
use estargz_io::config::RegistryConfig;
use estargz_io::registry::{Manifest, RegistryClient, DOCKER_MANIFEST_LIST, OCI_INDEX};
use estargz_io::source::{RegistryOptions, RegistrySource};
use estargz_io::{BlobSource, Reference};
use serde_json::Value;
use tonic::transport::Channel;
use tonic::Code;

use crate::api::containerd::services::content::v1 as content;
use crate::api::containerd::services::diff::v1 as diff;
use crate::api::containerd::services::images::v1 as images;
use crate::api::containerd::services::leases::v1 as leases;
use crate::api::containerd::services::snapshots::v1 as snapshots;
use crate::api::containerd::types::Descriptor;
use crate::client::{connect_unix, with_namespace};

/// containerd's label: the name the snapshot is committed as (the chain ID).
pub const SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";
/// Labels under this prefix on a layer descriptor are passed to the snapshotter.
pub const SNAPSHOT_LABEL_PREFIX: &str = "containerd.io/snapshot/";
/// containerd's limit on the total size of one label (key + value).
const MAX_LABEL_SIZE: usize = 4096;
/// Bytes per content-store write message and per registry request for fetched layers.
const WRITE_CHUNK: u64 = 1 << 20;

/// What to pull and where.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The image reference, `HOST[:PORT]/REPO:TAG` or `…@sha256:…`.
    pub reference: String,
    /// containerd's socket.
    pub address: PathBuf,
    /// containerd namespace.
    pub namespace: String,
    /// The snapshotter to unpack with (the `proxy_plugins` name of this daemon).
    pub snapshotter: String,
    /// Talk plain HTTP to the registry (loopback registries always do).
    pub plain_http: bool,
    /// Platform to pick from an index: `OS/ARCH[/VARIANT]`.
    pub platform: String,
}

/// How one layer ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOutcome {
    /// The layer blob's digest.
    pub digest: String,
    /// The snapshot's chain ID.
    pub chain_id: String,
    /// `true` when the snapshotter mounted it lazily (answered `AlreadyExists`), or the
    /// snapshot existed already.
    pub remote: bool,
    /// Bytes of the blob downloaded by this pull (0 for a remote layer).
    pub downloaded: u64,
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The image name recorded in containerd.
    pub name: String,
    /// The digest the image record points at (manifest or index).
    pub target: String,
    /// The platform manifest's digest.
    pub manifest: String,
    /// One entry per layer, bottom first.
    pub layers: Vec<LayerOutcome>,
}

/// A failed pull: what step, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PullError(String);

type Result<T> = std::result::Result<T, PullError>;

fn err(what: impl std::fmt::Display) -> PullError {
    PullError(what.to_string())
}

fn grpc(step: &str) -> impl Fn(tonic::Status) -> PullError + '_ {
    move |s| {
        PullError(format!(
            "containerd: {step}: {} ({:?})",
            s.message(),
            s.code()
        ))
    }
}

/// The chain IDs of layers with these diff IDs (OCI image spec: `chain[0] = diff[0]`,
/// `chain[i] = sha256(chain[i-1] + " " + diff[i])`).
///
/// ```
/// use estargz_snapshotter::pull::chain_ids;
///
/// let a = format!("sha256:{}", "a".repeat(64));
/// let b = format!("sha256:{}", "b".repeat(64));
/// let chain = chain_ids(&[a.clone(), b.clone()]);
/// assert_eq!(chain[0], a);
/// assert_eq!(chain[1], estargz::Digest::of(format!("{a} {b}").as_bytes()).to_string());
/// ```
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()).to_string(),
        };
        out.push(next);
    }
    out
}

/// The `stargz.layers` label: this layer's digest and the following ones, as many as fit in
/// containerd's label size limit.
fn layers_label(key: &str, digests: &[String]) -> String {
    let mut out = String::new();
    for d in digests {
        let extra = if out.is_empty() { d.len() } else { d.len() + 1 };
        if key.len() + out.len() + extra > MAX_LABEL_SIZE {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(d);
    }
    out
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// One containerd connection with the namespace and lease headers.
struct Containerd {
    channel: Channel,
    namespace: String,
    lease: Option<String>,
}

impl Containerd {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        with_namespace(msg, &self.namespace, self.lease.as_deref())
    }

    /// Writes `data` (known digest) into the content store with `labels`; when it exists
    /// already, sets the labels on it instead.
    async fn write_small(
        &self,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut client = content::content_client::ContentClient::new(self.channel.clone());
        let msg = content::WriteContentRequest {
            action: content::WriteAction::Commit as i32,
            r#ref: format!("estargz-pull-{digest}"),
            total: data.len() as i64,
            expected: digest.to_owned(),
            offset: 0,
            data: data.to_vec(),
            labels: labels.clone(),
        };
        let stream = tokio_stream::iter(vec![msg]);
        if write_outcome(client.write(self.req(stream)).await).await? {
            return self.label_content(digest, labels).await;
        }
        Ok(())
    }

    async fn label_content(&self, digest: &str, labels: HashMap<String, String>) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let mut client = content::content_client::ContentClient::new(self.channel.clone());
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        client
            .update(self.req(content::UpdateRequest {
                info: Some(content::Info {
                    digest: digest.to_owned(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(grpc("content label update"))?;
        Ok(())
    }

    async fn content_exists(&self, digest: &str) -> Result<bool> {
        let mut client = content::content_client::ContentClient::new(self.channel.clone());
        match client
            .info(self.req(content::InfoRequest {
                digest: digest.to_owned(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(grpc("content info")(s)),
        }
    }

    /// Streams a registry blob into the content store, `WRITE_CHUNK` bytes per request and
    /// message (never the whole layer in memory). Returns the bytes downloaded.
    async fn fetch_blob(&self, src: Arc<RegistrySource>, digest: &str, size: u64) -> Result<u64> {
        if self.content_exists(digest).await? {
            return Ok(0);
        }
        let mut client = content::content_client::ContentClient::new(self.channel.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<content::WriteContentRequest>(2);
        let reference = format!("estargz-pull-{digest}");
        let expected = digest.to_owned();
        let producer = tokio::spawn(async move {
            let mut offset = 0u64;
            let mut hasher = estargz::digest::Hasher::new();
            while offset < size {
                let end = (offset + WRITE_CHUNK).min(size);
                let range: Range<u64> = offset..end;
                let bytes = src
                    .read_range(range.clone())
                    .await
                    .map_err(|e| err(format!("fetching {expected} {range:?}: {e}")))?;
                if bytes.len() as u64 != end - offset {
                    return Err(err(format!(
                        "fetching {expected} {range:?}: {} bytes",
                        bytes.len()
                    )));
                }
                hasher.update(&bytes);
                let last = end == size;
                let msg = content::WriteContentRequest {
                    action: if last {
                        content::WriteAction::Commit
                    } else {
                        content::WriteAction::Write
                    } as i32,
                    r#ref: reference.clone(),
                    total: size as i64,
                    expected: expected.clone(),
                    offset: offset as i64,
                    data: bytes.to_vec(),
                    labels: HashMap::new(),
                };
                if tx.send(msg).await.is_err() {
                    return Err(err("containerd closed the content write stream"));
                }
                offset = end;
            }
            let got = hasher.finish().to_string();
            if got != expected {
                return Err(err(format!("blob {expected} hashes to {got}")));
            }
            Ok(offset)
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let written = write_outcome(client.write(self.req(stream)).await).await;
        let fetched = producer
            .await
            .map_err(|e| err(format!("fetch task: {e}")))?;
        written?;
        fetched
    }
}

/// Waits for the end of a content-store write stream: `Ok(true)` when containerd answered that
/// the content exists already (at the start or during the stream), `Ok(false)` when it was
/// written, else the error.
async fn write_outcome(
    result: std::result::Result<
        tonic::Response<tonic::Streaming<content::WriteContentResponse>>,
        tonic::Status,
    >,
) -> Result<bool> {
    let mut resp = match result {
        Ok(resp) => resp.into_inner(),
        Err(s) if s.code() == Code::AlreadyExists => return Ok(true),
        Err(s) => return Err(grpc("content write")(s)),
    };
    while let Some(r) = resp.message().await.transpose() {
        match r {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => return Ok(true),
            Err(s) => return Err(grpc("content write")(s)),
        }
    }
    Ok(false)
}

/// Picks the manifest for `platform` from an index.
fn pick_platform(index: &Value, platform: &str) -> Result<(String, String, u64)> {
    let mut parts = platform.split('/');
    let (os, arch, variant) = (parts.next(), parts.next(), parts.next());
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| err("the image index has no manifests"))?;
    for m in manifests {
        let p = &m["platform"];
        if p["os"].as_str() == os
            && p["architecture"].as_str() == arch
            && (variant.is_none() || p["variant"].as_str() == variant)
        {
            let digest = m["digest"]
                .as_str()
                .ok_or_else(|| err("index entry without digest"))?;
            let media_type = m["mediaType"].as_str().unwrap_or_default();
            let size = m["size"].as_u64().unwrap_or(0);
            return Ok((digest.to_owned(), media_type.to_owned(), size));
        }
    }
    Err(err(format!(
        "the image index has no manifest for platform {platform} (use --platform)"
    )))
}

fn manifest_media_type(m: &Manifest, json: &Value) -> String {
    json["mediaType"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| m.media_type.clone())
}

/// Pulls `opts.reference` with `opts.snapshotter`. See the module documentation.
pub async fn pull(opts: &PullOptions) -> Result<PullReport> {
    let reference: Reference = opts
        .reference
        .parse()
        .map_err(|e: estargz_io::Error| err(e))?;
    let mut reg_opts = RegistryOptions::default();
    if opts.plain_http {
        reg_opts.config = RegistryConfig::plain_http(&reference.host);
    }
    let registry = RegistryClient::new(&reference.host, reg_opts.clone()).map_err(err)?;
    let repo = reference.repository.clone();

    // 1. Resolve.
    let top = registry
        .get_manifest(&repo, &reference.object())
        .await
        .map_err(|e| err(format!("resolving {}: {e}", opts.reference)))?;
    let top_json: Value = serde_json::from_slice(&top.bytes)
        .map_err(|e| err(format!("{}: the manifest is not JSON: {e}", opts.reference)))?;
    let top_type = manifest_media_type(&top, &top_json);
    let is_index = top_type == OCI_INDEX
        || top_type == DOCKER_MANIFEST_LIST
        || (top_json.get("manifests").is_some() && top_json.get("layers").is_none());
    let (manifest, manifest_json, manifest_type) = if is_index {
        let (digest, _, _) = pick_platform(&top_json, &opts.platform)?;
        let m = registry
            .get_manifest(&repo, &digest)
            .await
            .map_err(|e| err(format!("fetching manifest {digest}: {e}")))?;
        let j: Value = serde_json::from_slice(&m.bytes)
            .map_err(|e| err(format!("manifest {digest} is not JSON: {e}")))?;
        let t = manifest_media_type(&m, &j);
        (m, j, t)
    } else {
        (top.clone(), top_json.clone(), top_type.clone())
    };
    let config_desc = &manifest_json["config"];
    let config_digest = config_desc["digest"]
        .as_str()
        .ok_or_else(|| err("the manifest has no config digest"))?
        .to_owned();
    let config_digest_parsed = Digest::parse(&config_digest).map_err(err)?;
    let config = registry
        .get_blob(&repo, &config_digest_parsed, 16 << 20)
        .await
        .map_err(|e| err(format!("fetching config {config_digest}: {e}")))?;
    let config_json: Value = serde_json::from_slice(&config)
        .map_err(|e| err(format!("config {config_digest} is not JSON: {e}")))?;
    let diff_ids: Vec<String> = config_json["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| err("the image config has no rootfs.diff_ids"))?
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    let layers = manifest_json["layers"]
        .as_array()
        .ok_or_else(|| err("the manifest has no layers"))?
        .clone();
    if layers.len() != diff_ids.len() {
        return Err(err(format!(
            "the manifest has {} layers but the config {} diff_ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    let chain = chain_ids(&diff_ids);
    let layer_digests: Vec<String> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or_default().to_owned())
        .collect();

    // 2. containerd: a lease for everything this pull creates.
    let channel = connect_unix(&opts.address).await.map_err(err)?;
    let mut ctd = Containerd {
        channel: channel.clone(),
        namespace: opts.namespace.clone(),
        lease: None,
    };
    let lease_id = format!("estargz-pull-{}", unique());
    let expire = estargz::toc::format_modtime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
            + 24 * 3600,
    );
    leases::leases_client::LeasesClient::new(channel.clone())
        .create(ctd.req(leases::CreateRequest {
            id: lease_id.clone(),
            labels: [("containerd.io/gc.expire".to_owned(), expire)].into(),
        }))
        .await
        .map_err(grpc("creating a lease"))?;
    ctd.lease = Some(lease_id.clone());

    let result = pull_with_lease(
        &ctd,
        opts,
        &reference,
        reg_opts,
        PullPlan {
            top: &top,
            top_json: &top_json,
            top_type: &top_type,
            is_index,
            manifest: &manifest,
            manifest_type: &manifest_type,
            config_digest: &config_digest,
            config: &config,
            layers: &layers,
            layer_digests: &layer_digests,
            diff_ids: &diff_ids,
            chain: &chain,
        },
    )
    .await;

    // The lease goes whatever happened: the image record and the config's snapshot label keep
    // what a successful pull made.
    let unleased = Containerd {
        channel,
        namespace: opts.namespace.clone(),
        lease: None,
    };
    let _ = leases::leases_client::LeasesClient::new(unleased.channel.clone())
        .delete(unleased.req(leases::DeleteRequest {
            id: lease_id,
            sync: false,
        }))
        .await;
    result
}

struct PullPlan<'a> {
    top: &'a Manifest,
    top_json: &'a Value,
    top_type: &'a str,
    is_index: bool,
    manifest: &'a Manifest,
    manifest_type: &'a str,
    config_digest: &'a str,
    config: &'a [u8],
    layers: &'a [Value],
    layer_digests: &'a [String],
    diff_ids: &'a [String],
    chain: &'a [String],
}

async fn pull_with_lease(
    ctd: &Containerd,
    opts: &PullOptions,
    reference: &Reference,
    reg_opts: RegistryOptions,
    p: PullPlan<'_>,
) -> Result<PullReport> {
    // Content: config (with the snapshot GC label), manifest, index.
    let top_chain = p.chain.last().cloned().unwrap_or_default();
    let mut config_labels = HashMap::new();
    if !top_chain.is_empty() {
        config_labels.insert(
            format!("containerd.io/gc.ref.snapshot.{}", opts.snapshotter),
            top_chain,
        );
    }
    ctd.write_small(p.config_digest, p.config, config_labels)
        .await?;
    let mut manifest_labels: HashMap<String, String> = HashMap::new();
    manifest_labels.insert(
        "containerd.io/gc.ref.content.config".into(),
        p.config_digest.to_owned(),
    );
    for (i, d) in p.layer_digests.iter().enumerate() {
        manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.clone());
    }
    ctd.write_small(
        &p.manifest.digest.to_string(),
        &p.manifest.bytes,
        manifest_labels,
    )
    .await?;
    if p.is_index {
        let mut index_labels = HashMap::new();
        if let Some(ms) = p.top_json["manifests"].as_array() {
            for (i, m) in ms.iter().enumerate() {
                if let Some(d) = m["digest"].as_str() {
                    index_labels.insert(format!("containerd.io/gc.ref.content.m.{i}"), d.into());
                }
            }
        }
        ctd.write_small(&p.top.digest.to_string(), &p.top.bytes, index_labels)
            .await?;
    }

    // Layers, bottom first.
    let mut snaps = snapshots::snapshots_client::SnapshotsClient::new(ctd.channel.clone());
    let mut outcomes = Vec::new();
    for (i, layer) in p.layers.iter().enumerate() {
        let chain_id = &p.chain[i];
        let digest = &p.layer_digests[i];
        let parent = if i == 0 {
            String::new()
        } else {
            p.chain[i - 1].clone()
        };
        let stat = snaps
            .stat(ctd.req(snapshots::StatSnapshotRequest {
                snapshotter: opts.snapshotter.clone(),
                key: chain_id.clone(),
            }))
            .await;
        match stat {
            Ok(_) => {
                outcomes.push(LayerOutcome {
                    digest: digest.clone(),
                    chain_id: chain_id.clone(),
                    remote: true,
                    downloaded: 0,
                });
                continue;
            }
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(grpc("snapshot stat")(s)),
        }

        let mut labels: HashMap<String, String> = HashMap::new();
        if let Some(ann) = layer["annotations"].as_object() {
            for (k, v) in ann {
                if let (true, Some(v)) = (k.starts_with(SNAPSHOT_LABEL_PREFIX), v.as_str()) {
                    labels.insert(k.clone(), v.to_owned());
                }
            }
        }
        labels.insert(SNAPSHOT_REF.into(), chain_id.clone());
        labels.insert(
            crate::remote::labels::REFERENCE.into(),
            opts.reference.clone(),
        );
        labels.insert(crate::remote::labels::DIGEST.into(), digest.clone());
        labels.insert(
            crate::remote::labels::LAYERS.into(),
            layers_label(crate::remote::labels::LAYERS, &p.layer_digests[i..]),
        );
        if let Some(urls) = layer["urls"].as_array() {
            let urls: Vec<&str> = urls.iter().filter_map(Value::as_str).collect();
            if !urls.is_empty() {
                labels.insert(crate::remote::labels::URLS.into(), urls.join(","));
            }
        }
        let key = format!("extract-{} {chain_id}", unique());
        let prepared = snaps
            .prepare(ctd.req(snapshots::PrepareSnapshotRequest {
                snapshotter: opts.snapshotter.clone(),
                key: key.clone(),
                parent: parent.clone(),
                labels: labels.clone(),
            }))
            .await;
        let mounts = match prepared {
            Err(s) if s.code() == Code::AlreadyExists => {
                // Mounted lazily by the snapshotter (or created by a concurrent pull).
                snaps
                    .stat(ctd.req(snapshots::StatSnapshotRequest {
                        snapshotter: opts.snapshotter.clone(),
                        key: chain_id.clone(),
                    }))
                    .await
                    .map_err(grpc("snapshot stat after a remote prepare"))?;
                outcomes.push(LayerOutcome {
                    digest: digest.clone(),
                    chain_id: chain_id.clone(),
                    remote: true,
                    downloaded: 0,
                });
                continue;
            }
            Err(s) => return Err(grpc("snapshot prepare")(s)),
            Ok(r) => r.into_inner().mounts,
        };

        // A normal pull of this layer: blob into the content store, apply, commit.
        let applied = async {
            let size = layer["size"].as_u64().unwrap_or(0);
            let blob_ref = Reference {
                host: reference.host.clone(),
                repository: reference.repository.clone(),
                tag: None,
                digest: Some(Digest::parse(digest).map_err(err)?),
            };
            let src = Arc::new(RegistrySource::new(&blob_ref, reg_opts.clone()).map_err(err)?);
            let size = if size == 0 {
                src.len().await.map_err(err)?
            } else {
                size
            };
            let downloaded = ctd.fetch_blob(src, digest, size).await?;
            let media_type = layer["mediaType"].as_str().unwrap_or_default().to_owned();
            let mut differ = diff::diff_client::DiffClient::new(ctd.channel.clone());
            let resp = differ
                .apply(ctd.req(diff::ApplyRequest {
                    diff: Some(Descriptor {
                        media_type,
                        digest: digest.clone(),
                        size: size as i64,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                }))
                .await
                .map_err(grpc("applying the layer"))?
                .into_inner();
            let applied = resp.applied.map(|d| d.digest).unwrap_or_default();
            Ok::<(u64, String), PullError>((downloaded, applied))
        }
        .await;
        let (downloaded, applied) = match applied {
            Ok(x) => x,
            Err(e) => {
                let _ = snaps
                    .remove(ctd.req(snapshots::RemoveSnapshotRequest {
                        snapshotter: opts.snapshotter.clone(),
                        key: key.clone(),
                    }))
                    .await;
                return Err(e);
            }
        };
        let diff_id = &p.diff_ids[i];
        if !applied.is_empty() && applied != *diff_id {
            let _ = snaps
                .remove(ctd.req(snapshots::RemoveSnapshotRequest {
                    snapshotter: opts.snapshotter.clone(),
                    key: key.clone(),
                }))
                .await;
            return Err(err(format!(
                "layer {digest} unpacked to {applied}, but the config says {diff_id}"
            )));
        }
        match snaps
            .commit(ctd.req(snapshots::CommitSnapshotRequest {
                snapshotter: opts.snapshotter.clone(),
                name: chain_id.clone(),
                key: key.clone(),
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(_) => {}
            // Committed meanwhile by a concurrent pull: drop ours.
            Err(s) if s.code() == Code::AlreadyExists => {
                let _ = snaps
                    .remove(ctd.req(snapshots::RemoveSnapshotRequest {
                        snapshotter: opts.snapshotter.clone(),
                        key: key.clone(),
                    }))
                    .await;
            }
            Err(s) => return Err(grpc("snapshot commit")(s)),
        }
        outcomes.push(LayerOutcome {
            digest: digest.clone(),
            chain_id: chain_id.clone(),
            remote: false,
            downloaded,
        });
    }

    // The image record.
    let target = Descriptor {
        media_type: if p.is_index {
            p.top_type.to_owned()
        } else {
            p.manifest_type.to_owned()
        },
        digest: p.top.digest.to_string(),
        size: p.top.bytes.len() as i64,
        annotations: HashMap::new(),
    };
    let image = images::Image {
        name: opts.reference.clone(),
        labels: HashMap::new(),
        target: Some(target),
        created_at: None,
        updated_at: None,
    };
    let mut imgs = images::images_client::ImagesClient::new(ctd.channel.clone());
    match imgs
        .create(ctd.req(images::CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == Code::AlreadyExists => {
            imgs.update(ctd.req(images::UpdateImageRequest {
                image: Some(image),
                update_mask: None,
                source_date_epoch: None,
            }))
            .await
            .map_err(grpc("updating the image record"))?;
        }
        Err(s) => return Err(grpc("creating the image record")(s)),
    }
    Ok(PullReport {
        name: opts.reference.clone(),
        target: p.top.digest.to_string(),
        manifest: p.manifest.digest.to_string(),
        layers: outcomes,
    })
}

/// Formats a report for people: one line per layer.
pub fn describe(report: &PullReport) -> String {
    let mut out = format!("{} ({})\n", report.name, report.target);
    let mut by_state: BTreeMap<bool, usize> = BTreeMap::new();
    for l in &report.layers {
        *by_state.entry(l.remote).or_default() += 1;
        if l.remote {
            out.push_str(&format!("  {}  remote (lazy)\n", l.digest));
        } else {
            out.push_str(&format!(
                "  {}  pulled ({} bytes downloaded)\n",
                l.digest, l.downloaded
            ));
        }
    }
    out.push_str(&format!(
        "{} layer(s) lazy, {} pulled\n",
        by_state.get(&true).copied().unwrap_or(0),
        by_state.get(&false).copied().unwrap_or(0)
    ));
    out
}
