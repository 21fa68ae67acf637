//! Whole-image conversion: every layer of an image (or of every image of a multi-platform
//! index) rebuilt as eStargz or zstd:chunked, with the manifest, config and index rewritten
//! to match.
//!
//! Sources and destinations are OCI image layout directories (`oci:DIR[:TAG]`) or registry
//! repositories (`docker://HOST/REPO:TAG`), in any combination ([`ImageLocation`]).
//!
//! What a conversion does, per image manifest:
//!
//! - each layer (gzip, zstd or uncompressed tar; OCI or docker media types) is made a local
//!   file (a layout's own blob, or a download to a temporary file, checked against its
//!   digest) and converted with [`estargz::build::Builder`] into a temporary file, which is
//!   then moved into the layout or uploaded in pieces: a layer is never held in memory;
//! - a layer that is already eStargz (it has the `containerd.io/snapshot/stargz/toc.digest`
//!   annotation, its compression is the requested one, and it opens and verifies against that
//!   digest) is kept as it is unless [`ConvertOptions::force`]; the same source layer in
//!   several manifests is converted once;
//! - the layer descriptor gets the builder's annotations (TOC digest, uncompressed size, and
//!   for zstd:chunked the manifest position and checksum); stale ones from the source are
//!   dropped, other annotations are kept;
//! - the config's `rootfs.diff_ids` are set to the new layers' DiffIDs; every other config
//!   field is kept. When no DiffID changed, the config's bytes are kept exactly.
//!
//! Media types: the output is always OCI. Docker schema 2 manifests, manifest lists, configs
//! and layers map to their OCI equivalents (`application/vnd.oci.image.manifest.v1+json`,
//! `...index.v1+json`, `...config.v1+json`, `...layer.v1.tar+gzip`). eStargz layers are
//! `application/vnd.oci.image.layer.v1.tar+gzip` and zstd:chunked layers `...tar+zstd`:
//! ordinary media types, so runtimes that know nothing of eStargz still pull and run the
//! image. Non-distributable (foreign) layers are refused.
//!
//! Indexes: with [`ConvertOptions::all_platforms`] every image of the index is converted and a
//! new OCI index (platforms and annotations kept) is written under the destination tag;
//! entries with platform `unknown/unknown` (build attestations, not runnable images) are left
//! out. Otherwise the one image that matches [`ConvertOptions::platform`] (default
//! `linux/amd64`) is converted and its manifest alone is written under the tag.
//!
//! Identical input and options give byte-identical output (the builder is deterministic and
//! every JSON document is written with a fixed field order), so a rerun writes nothing new.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use estargz::build::{
    BuildOptions, Builder, OutputFormat, Progress, ANNOTATION_TOC_DIGEST,
    ANNOTATION_UNCOMPRESSED_SIZE, ANNOTATION_ZSTD_MANIFEST_CHECKSUM,
    ANNOTATION_ZSTD_MANIFEST_POSITION,
};
use estargz::Digest;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::source::RegistryOptions;

pub mod layout;
pub mod spec;
mod store;

use spec::{Descriptor, ImageIndex, ImageManifest, Kind, Platform};
use store::{LocalBlob, Store};

/// Where an image is: `oci:DIR[:TAG]` or `docker://HOST/REPO[:TAG]`.
///
/// ```
/// use estargz_io::image::ImageLocation;
///
/// let l: ImageLocation = "oci:/tmp/img:v1".parse().unwrap();
/// assert_eq!(l, ImageLocation::Layout { dir: "/tmp/img".into(), tag: "v1".into() });
/// let l: ImageLocation = "oci:/tmp/img".parse().unwrap();
/// assert_eq!(l, ImageLocation::Layout { dir: "/tmp/img".into(), tag: "latest".into() });
/// let l: ImageLocation = "docker://127.0.0.1:5000/app:esgz".parse().unwrap();
/// assert!(matches!(l, ImageLocation::Registry(r) if r.repository == "app"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageLocation {
    /// An OCI image layout directory and the tag (`org.opencontainers.image.ref.name`).
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag (default `latest`).
        tag: String,
    },
    /// A registry repository with a tag (default `latest`) or a digest (sources only).
    Registry(Reference),
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl FromStr for ImageLocation {
    type Err = Error;

    fn from_str(s: &str) -> Result<ImageLocation> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !d.is_empty() && !t.contains('/') => {
                    if !valid_tag(t) {
                        return Err(Error::Reference {
                            value: s.to_owned(),
                            reason: format!("invalid tag {t:?}"),
                        });
                    }
                    (d, t)
                }
                _ => (rest, "latest"),
            };
            if dir.is_empty() {
                return Err(Error::Reference {
                    value: s.to_owned(),
                    reason: "expected oci:DIR[:TAG]".into(),
                });
            }
            return Ok(ImageLocation::Layout {
                dir: PathBuf::from(dir),
                tag: tag.to_owned(),
            });
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return Ok(ImageLocation::Registry(rest.parse()?));
        }
        Err(Error::Reference {
            value: s.to_owned(),
            reason: "expected oci:DIR[:TAG] (an OCI image layout) or docker://HOST/REPO:TAG (a registry)".into(),
        })
    }
}

impl fmt::Display for ImageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageLocation::Layout { dir, tag } => write!(f, "oci:{}:{tag}", dir.display()),
            ImageLocation::Registry(r) => write!(f, "docker://{r}"),
        }
    }
}

/// What a layer is doing, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerEvent {
    /// Reading the source layer (downloading it, or checking a layout blob's digest).
    Fetching,
    /// Checking whether an annotated layer is eStargz already (open + verify).
    Checking,
    /// The builder's progress.
    Building(Progress),
    /// Storing the result (layout move, or upload).
    Storing,
    /// Finished.
    Done(LayerAction),
}

/// A progress update for one layer.
#[derive(Clone, Debug)]
pub struct LayerProgress {
    /// The platform of the image the layer belongs to (empty for a single-platform image).
    pub platform: String,
    /// The layer's position in its manifest (0 = base).
    pub index: usize,
    /// Layers in the manifest.
    pub count: usize,
    /// The source layer's digest.
    pub digest: String,
    /// The source layer's size.
    pub size: u64,
    /// What is happening.
    pub event: LayerEvent,
}

/// A progress callback (called from the converting task and from builder threads).
pub type ProgressCallback = Arc<dyn Fn(&LayerProgress) + Send + Sync>;

/// Options of [`convert`].
#[derive(Clone, Default)]
pub struct ConvertOptions {
    /// How each layer is built (format, level, chunk size, prioritised files, threads...).
    /// `progress` is ignored: use [`ConvertOptions::progress`]. An external TOC is refused.
    pub build: BuildOptions,
    /// The image to pick from an index (default `linux/amd64`).
    pub platform: Option<Platform>,
    /// Convert every image of an index and write an index.
    pub all_platforms: bool,
    /// Rebuild layers that are eStargz already.
    pub force: bool,
    /// How registries are reached (hosts, plain HTTP, credentials).
    pub registry: RegistryOptions,
    /// Progress per layer.
    pub progress: Option<ProgressCallback>,
}

impl fmt::Debug for ConvertOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConvertOptions")
            .field("build", &self.build)
            .field("platform", &self.platform)
            .field("all_platforms", &self.all_platforms)
            .field("force", &self.force)
            .field("registry", &self.registry)
            .field("progress", &self.progress.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// What happened to a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerAction {
    /// Rebuilt with the builder.
    Converted,
    /// Kept as it is: eStargz already (or the same source layer was converted before in
    /// this run).
    Reused,
}

/// One layer of a converted image.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// The source layer's digest.
    pub source_digest: String,
    /// The source layer's media type.
    pub source_media_type: String,
    /// The output layer's digest.
    pub digest: String,
    /// The output layer's size.
    pub size: u64,
    /// The output layer's media type.
    pub media_type: String,
    /// The output layer's DiffID (as in the config).
    pub diff_id: String,
    /// The TOC digest annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toc_digest: Option<String>,
    /// The uncompressed size annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncompressed_size: Option<u64>,
    /// Converted or reused.
    pub action: LayerAction,
    /// True when the destination did not have the output blob and it was written.
    pub written: bool,
    /// Why an annotated layer was not reused (it did not verify, or has the other format).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_reused: Option<String>,
}

/// One converted image manifest.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestReport {
    /// The platform (from the index entry), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The source manifest's digest.
    pub source_digest: String,
    /// The output manifest's digest.
    pub digest: String,
    /// The output manifest's size.
    pub size: u64,
    /// The output config's digest.
    pub config_digest: String,
    /// True when the destination did not have the config and it was written.
    pub config_written: bool,
    /// The layers, base first.
    pub layers: Vec<LayerReport>,
}

/// The result of [`convert`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConvertReport {
    /// The source, as given.
    pub source: String,
    /// The destination, as given.
    pub destination: String,
    /// Media type of what the destination tag now names (an OCI manifest or index).
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Every converted image.
    pub manifests: Vec<ManifestReport>,
    /// Index entries left out (`unknown/unknown` attestations), by digest.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl ConvertReport {
    /// Layers whose output blob was written to the destination (0 on a rerun).
    pub fn layers_written(&self) -> usize {
        self.manifests
            .iter()
            .flat_map(|m| &m.layers)
            .filter(|l| l.written)
            .count()
    }
}

/// Converts the image at `src` and writes the result to `dst` (created if it is a layout
/// directory that does not exist). See the [module docs](self).
pub async fn convert(
    src: &ImageLocation,
    dst: &ImageLocation,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    if opts.build.external_toc {
        return Err(Error::InvalidArgument(
            "an external TOC cannot be used for whole images (the TOC blob would have nowhere to go)".into(),
        ));
    }
    if let ImageLocation::Registry(r) = dst {
        if r.digest.is_some() {
            return Err(Error::InvalidArgument(format!(
                "destination {dst}: give a tag, not a digest (the converted image has a new digest)"
            )));
        }
    }
    let mut clients = Vec::new();
    let source = Store::open(src, false, &mut clients, &opts.registry)?;
    let target = Store::open(dst, true, &mut clients, &opts.registry)?;
    let mut conv = Converter {
        src: &source,
        dst: &target,
        opts,
        done: HashMap::new(),
    };
    let (media_type, bytes, digest) = source.root().await?;
    let mut report = ConvertReport {
        source: src.to_string(),
        destination: dst.to_string(),
        media_type: String::new(),
        digest: String::new(),
        size: 0,
        manifests: Vec::new(),
        skipped: Vec::new(),
    };
    match spec::classify(&media_type, &bytes)? {
        Kind::Manifest => {
            let (desc, m) = conv.manifest(&bytes, digest, None).await?;
            target.put_manifest(&desc, &m.1, true).await?;
            report.media_type = desc.media_type;
            report.digest = desc.digest;
            report.size = desc.size;
            report.manifests.push(m.0);
        }
        Kind::Index => {
            let index: ImageIndex = spec::parse("image index", &bytes)?;
            if opts.all_platforms {
                let mut out = index.clone();
                out.media_type = Some(spec::OCI_INDEX.into());
                out.manifests.clear();
                for entry in &index.manifests {
                    if entry.platform.as_ref().is_some_and(|p| p.os == "unknown") {
                        report.skipped.push(entry.digest.clone());
                        continue;
                    }
                    let bytes = source.manifest(entry).await?;
                    if spec::classify(&entry.media_type, &bytes)? != Kind::Manifest {
                        return Err(Error::InvalidArgument(format!(
                            "index entry {} is itself an index: nested indexes are not supported",
                            entry.digest
                        )));
                    }
                    let (desc, m) = conv
                        .manifest(&bytes, Digest::of(&bytes), entry.platform.as_ref())
                        .await?;
                    target.put_manifest(&desc, &m.1, false).await?;
                    let mut e = entry.clone();
                    e.media_type = desc.media_type;
                    e.digest = desc.digest;
                    e.size = desc.size;
                    out.manifests.push(e);
                    report.manifests.push(m.0);
                }
                let bytes = spec::to_json("index", &out)?;
                let desc = descriptor(spec::OCI_INDEX, &bytes);
                target.put_manifest(&desc, &bytes, true).await?;
                report.media_type = desc.media_type;
                report.digest = desc.digest;
                report.size = desc.size;
            } else {
                let want = opts
                    .platform
                    .clone()
                    .unwrap_or_else(Platform::default_target);
                let entry = index
                    .manifests
                    .iter()
                    .find(|e| e.platform.as_ref().is_some_and(|p| want.matches(p)))
                    .ok_or_else(|| {
                        let have: Vec<String> = index
                            .manifests
                            .iter()
                            .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
                            .collect();
                        Error::InvalidArgument(format!(
                            "{src} has no image for platform {want} (it has: {}); pick one with --platform or use --all-platforms",
                            have.join(", ")
                        ))
                    })?;
                let bytes = source.manifest(entry).await?;
                let (desc, m) = conv
                    .manifest(&bytes, Digest::of(&bytes), entry.platform.as_ref())
                    .await?;
                target.put_manifest(&desc, &m.1, true).await?;
                report.media_type = desc.media_type;
                report.digest = desc.digest;
                report.size = desc.size;
                report.manifests.push(m.0);
            }
        }
    }
    Ok(report)
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::of(bytes).to_string(),
        size: bytes.len() as u64,
        urls: Vec::new(),
        annotations: BTreeMap::new(),
        platform: None,
        extra: BTreeMap::new(),
    }
}

/// The compression a layer media type declares, or why it cannot be converted.
fn layer_compression(media_type: &str) -> Result<Option<&'static str>> {
    match media_type {
        spec::OCI_LAYER_GZIP | spec::DOCKER_LAYER_GZIP => Ok(Some("gzip")),
        spec::OCI_LAYER_ZSTD | spec::DOCKER_LAYER_ZSTD => Ok(Some("zstd")),
        spec::OCI_LAYER_TAR | spec::DOCKER_LAYER_TAR => Ok(None),
        m if m.contains("nondistributable") || m.contains("foreign") => {
            Err(Error::InvalidArgument(format!(
                "layer media type {m}: non-distributable (foreign) layers cannot be converted"
            )))
        }
        m => Err(Error::InvalidArgument(format!(
            "layer media type {m:?} is not a container layer (tar, tar+gzip or tar+zstd)"
        ))),
    }
}

/// Annotations the builder sets: dropped from a source layer before adding the new ones.
const BUILD_ANNOTATIONS: [&str; 4] = [
    ANNOTATION_TOC_DIGEST,
    ANNOTATION_UNCOMPRESSED_SIZE,
    ANNOTATION_ZSTD_MANIFEST_CHECKSUM,
    ANNOTATION_ZSTD_MANIFEST_POSITION,
];

struct Converter<'a> {
    src: &'a Store,
    dst: &'a Store,
    opts: &'a ConvertOptions,
    /// Source layer digest → (output descriptor, DiffID, report), for layers shared by
    /// several manifests.
    done: HashMap<String, (Descriptor, String, LayerReport)>,
}

impl Converter<'_> {
    fn progress(&self, p: LayerProgress) {
        if let Some(f) = &self.opts.progress {
            f(&p);
        }
    }

    /// Converts one image manifest: returns its new descriptor, and its report and bytes.
    async fn manifest(
        &mut self,
        bytes: &[u8],
        digest: Digest,
        platform: Option<&Platform>,
    ) -> Result<(Descriptor, (ManifestReport, Vec<u8>))> {
        let m: ImageManifest = spec::parse("image manifest", bytes)?;
        let config_bytes = self.src.small_blob(&m.config).await?;
        let mut config: Value = spec::parse("image config", &config_bytes)?;
        let old_ids = spec::diff_ids(&config)?;
        if old_ids.len() != m.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "manifest {digest} has {} layers but its config lists {} diff_ids",
                m.layers.len(),
                old_ids.len()
            )));
        }
        let label = platform.map(|p| p.to_string()).unwrap_or_default();
        let mut layers = Vec::with_capacity(m.layers.len());
        let mut ids = Vec::with_capacity(m.layers.len());
        let mut reports = Vec::with_capacity(m.layers.len());
        for (i, layer) in m.layers.iter().enumerate() {
            let lp = |event| LayerProgress {
                platform: label.clone(),
                index: i,
                count: m.layers.len(),
                digest: layer.digest.clone(),
                size: layer.size,
                event,
            };
            if let Some((desc, id, rep)) = self.done.get(&layer.digest) {
                let mut rep = rep.clone();
                rep.written = false;
                if rep.action == LayerAction::Converted {
                    rep.action = LayerAction::Reused;
                }
                self.progress(lp(LayerEvent::Done(rep.action)));
                layers.push(desc.clone());
                ids.push(id.clone());
                reports.push(rep);
                continue;
            }
            let (desc, id, rep) = self.layer(layer, &old_ids[i], &lp).await?;
            self.progress(lp(LayerEvent::Done(rep.action)));
            self.done.insert(
                layer.digest.clone(),
                (desc.clone(), id.clone(), rep.clone()),
            );
            layers.push(desc);
            ids.push(id);
            reports.push(rep);
        }
        let config_bytes = if ids == old_ids {
            config_bytes
        } else {
            spec::set_diff_ids(&mut config, &ids)?;
            spec::to_json("image config", &config)?
        };
        let config_written = self.dst.put_small_blob(&config_bytes).await?;
        let mut config_desc = m.config.clone();
        config_desc.media_type = spec::OCI_CONFIG.into();
        config_desc.digest = Digest::of(&config_bytes).to_string();
        config_desc.size = config_bytes.len() as u64;
        let out = ImageManifest {
            schema_version: 2,
            media_type: Some(spec::OCI_MANIFEST.into()),
            config: config_desc.clone(),
            layers,
            annotations: m.annotations.clone(),
            extra: m.extra.clone(),
        };
        let out_bytes = spec::to_json("image manifest", &out)?;
        let desc = descriptor(spec::OCI_MANIFEST, &out_bytes);
        let report = ManifestReport {
            platform: platform.map(|p| p.to_string()),
            source_digest: digest.to_string(),
            digest: desc.digest.clone(),
            size: desc.size,
            config_digest: config_desc.digest,
            config_written,
            layers: reports,
        };
        Ok((desc, (report, out_bytes)))
    }

    /// Converts (or reuses) one layer: its new descriptor, DiffID and report.
    async fn layer(
        &self,
        layer: &Descriptor,
        old_id: &str,
        lp: &(dyn Fn(LayerEvent) -> LayerProgress + Sync),
    ) -> Result<(Descriptor, String, LayerReport)> {
        let compression = layer_compression(&layer.media_type)?;
        let want = match self.opts.build.format {
            OutputFormat::Estargz => "gzip",
            OutputFormat::ZstdChunked => "zstd",
        };
        self.progress(lp(LayerEvent::Fetching));
        let local = self.src.layer(layer).await?;
        let mut not_reused = None;
        if let (Some(toc), false) = (
            layer.annotations.get(ANNOTATION_TOC_DIGEST),
            self.opts.force,
        ) {
            if compression != Some(want) {
                not_reused = Some(format!(
                    "it is {} but {want} was asked for",
                    compression.unwrap_or("uncompressed")
                ));
            } else {
                self.progress(lp(LayerEvent::Checking));
                match check_estargz(&local, toc).await {
                    Ok(()) => return self.reuse(layer, old_id, &local, lp).await,
                    Err(e) => not_reused = Some(e),
                }
            }
        }
        let mut build = self.opts.build.clone();
        if let Some(f) = &self.opts.progress {
            let f = Arc::clone(f);
            let base = lp(LayerEvent::Fetching);
            build.progress = Some(Arc::new(move |p| {
                let mut ev = base.clone();
                ev.event = LayerEvent::Building(p);
                f(&ev);
            }));
        } else {
            build.progress = None;
        }
        let out = self.dst.output_file()?;
        let input = local.path().to_owned();
        let out_file = out
            .as_file()
            .try_clone()
            .map_err(|e| Error::io("opening the layer's output file", e))?;
        let report = tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&input)
                .map_err(|e| Error::io(format!("opening {}", input.display()), e))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, out_file);
            let r = Builder::new(build)
                .build_seekable(f, &mut w)
                .map_err(Error::from)?;
            std::io::Write::flush(&mut w)
                .map_err(|e| Error::io("writing the converted layer", e))?;
            Ok::<_, Error>(r)
        })
        .await
        .map_err(|e| Error::InvalidArgument(format!("the layer build task failed: {e}")))?
        .map_err(|e| match e {
            Error::Format(f) => Error::InvalidArgument(format!("layer {}: {f}", layer.digest)),
            e => e,
        })?;
        drop(local);
        self.progress(lp(LayerEvent::Storing));
        let written = self.dst.commit(out, &report.blob_digest).await?;
        let mut annotations = layer.annotations.clone();
        annotations.retain(|k, _| !BUILD_ANNOTATIONS.contains(&k.as_str()));
        annotations.extend(report.annotations.clone());
        let media_type = match self.opts.build.format {
            OutputFormat::Estargz => spec::OCI_LAYER_GZIP,
            OutputFormat::ZstdChunked => spec::OCI_LAYER_ZSTD,
        };
        let desc = Descriptor {
            media_type: media_type.into(),
            digest: report.blob_digest.to_string(),
            size: report.blob_size,
            urls: Vec::new(),
            annotations,
            platform: None,
            extra: layer.extra.clone(),
        };
        let rep = LayerReport {
            source_digest: layer.digest.clone(),
            source_media_type: layer.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
            media_type: desc.media_type.clone(),
            diff_id: report.diff_id.to_string(),
            toc_digest: Some(report.toc_digest.to_string()),
            uncompressed_size: Some(report.uncompressed_size),
            action: LayerAction::Converted,
            written,
            not_reused,
        };
        Ok((desc, report.diff_id.to_string(), rep))
    }

    async fn reuse(
        &self,
        layer: &Descriptor,
        old_id: &str,
        local: &LocalBlob,
        lp: &(dyn Fn(LayerEvent) -> LayerProgress + Sync),
    ) -> Result<(Descriptor, String, LayerReport)> {
        let digest = Digest::parse(&layer.digest)?;
        self.progress(lp(LayerEvent::Storing));
        let written = self.dst.copy_layer(self.src, &digest, local).await?;
        let mut desc = layer.clone();
        desc.media_type = match layer.media_type.as_str() {
            spec::DOCKER_LAYER_GZIP => spec::OCI_LAYER_GZIP.into(),
            spec::DOCKER_LAYER_ZSTD => spec::OCI_LAYER_ZSTD.into(),
            m => m.to_owned(),
        };
        let rep = LayerReport {
            source_digest: layer.digest.clone(),
            source_media_type: layer.media_type.clone(),
            digest: desc.digest.clone(),
            size: desc.size,
            media_type: desc.media_type.clone(),
            diff_id: old_id.to_owned(),
            toc_digest: layer.annotations.get(ANNOTATION_TOC_DIGEST).cloned(),
            uncompressed_size: layer
                .annotations
                .get(ANNOTATION_UNCOMPRESSED_SIZE)
                .and_then(|s| s.parse().ok()),
            action: LayerAction::Reused,
            written,
            not_reused: None,
        };
        Ok((desc, old_id.to_owned(), rep))
    }
}

/// Opens the layer as eStargz / zstd:chunked against the annotated TOC digest and verifies
/// every chunk; the error says why it is not reusable.
async fn check_estargz(local: &LocalBlob, toc: &str) -> std::result::Result<(), String> {
    let expected = Digest::parse(toc).map_err(|e| format!("its TOC digest annotation: {e}"))?;
    let path = local.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path).map_err(|e| format!("opening it: {e}"))?;
        let reader = estargz::Reader::open_with(
            f,
            estargz::OpenOptions {
                expected_toc_digest: Some(expected),
                ..Default::default()
            },
        )
        .map_err(|e| format!("it does not open as eStargz: {e}"))?;
        reader
            .verify()
            .map_err(|e| format!("it does not verify: {e}"))?;
        Ok(())
    })
    .await
    .map_err(|e| format!("the check task failed: {e}"))?
}
