//! The OCI image JSON documents a conversion reads and writes: descriptors, image manifests,
//! image indexes (docker schema 2 manifests and manifest lists share the same shape), and the
//! config's `rootfs.diff_ids`.
//!
//! Fields this crate does not know are kept (`extra`), so a manifest or index round-trips
//! without losing anything; the config is handled as a [`serde_json::Value`] and only
//! `rootfs.diff_ids` is edited.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip (eStargz output).
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd (zstd:chunked output).
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer (gzip).
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer (uncompressed tar).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer (zstd), as written by some tools.
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";

/// Annotation of an OCI layout's `index.json` entry: its tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    /// Size of the content in bytes.
    pub size: u64,
    /// Where else the content may be fetched from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Annotations (the layer's TOC digest, uncompressed size, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The platform of a manifest listed in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Fields not listed above, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A platform: `os/architecture[/variant]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Architecture (`amd64`, `arm64`, ...).
    pub architecture: String,
    /// Operating system (`linux`, ...).
    pub os: String,
    /// CPU variant (`v7`, `v8`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields not listed above (`os.version`, `os.features`, ...), kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Platform {
    /// Parses `OS/ARCH[/VARIANT]`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: parts
                    .get(2)
                    .filter(|v| !v.is_empty())
                    .map(|v| (*v).to_owned()),
                extra: BTreeMap::new(),
            }),
            _ => Err(Error::InvalidArgument(format!(
                "platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7"
            ))),
        }
    }

    /// The platform this conversion targets by default: `linux/amd64`.
    pub fn default_target() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            ..Platform::default()
        }
    }

    /// True when `self` (a wanted platform) accepts `other` (an index entry's): same OS and
    /// architecture, and the same variant when `self` names one (`arm64` without a variant
    /// counts as `v8`).
    pub fn matches(&self, other: &Platform) -> bool {
        let norm = |p: &Platform| -> Option<String> {
            match (p.architecture.as_str(), p.variant.as_deref()) {
                ("arm64", None) => Some("v8".into()),
                (_, v) => v.map(str::to_owned),
            }
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || norm(self) == norm(other))
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image manifest (OCI, or docker schema 2: the same fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers, base first.
    pub layers: Vec<Descriptor>,
    /// Manifest annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields not listed above (`subject`, `artifactType`, ...), kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image index (OCI, or a docker manifest list).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The index's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
    /// Index annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields not listed above, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What a manifest-like document is, from its media type (header or `mediaType` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest.
    Manifest,
    /// An index / manifest list.
    Index,
}

/// Classifies a fetched document: by `media_type` when it is known, else by its
/// `mediaType` field, else by shape (`manifests` means an index).
pub fn classify(media_type: &str, bytes: &[u8]) -> Result<Kind> {
    let mt = media_type.split(';').next().unwrap_or("").trim();
    match mt {
        OCI_MANIFEST | DOCKER_MANIFEST => return Ok(Kind::Manifest),
        OCI_INDEX | DOCKER_MANIFEST_LIST => return Ok(Kind::Index),
        _ => {}
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("the manifest is not JSON: {e}")))?;
    match v.get("mediaType").and_then(Value::as_str) {
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(Kind::Manifest),
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => Ok(Kind::Index),
        Some(other) => Err(Error::InvalidArgument(format!(
            "unsupported manifest media type {other:?} (expected an OCI or docker schema 2 manifest or index)"
        ))),
        None if v.get("manifests").is_some() => Ok(Kind::Index),
        None if v.get("layers").is_some() => Ok(Kind::Manifest),
        None => Err(Error::InvalidArgument(
            "the document is neither an image manifest nor an index (docker schema 1 is not supported)".into(),
        )),
    }
}

/// Parses JSON of type `T`, saying what was being parsed on failure.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidArgument(format!("invalid {what}: {e}")))
}

/// Serialises `v` as compact JSON (deterministic: struct order, sorted maps).
pub fn to_json<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v)
        .map_err(|e| Error::InvalidArgument(format!("cannot serialise the {what}: {e}")))
}

/// The config's `rootfs.diff_ids`, as strings.
pub fn diff_ids(config: &Value) -> Result<Vec<String>> {
    config
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(Value::as_array)
        .ok_or_else(|| Error::InvalidArgument("the image config has no rootfs.diff_ids".into()))?
        .iter()
        .map(|d| {
            d.as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::InvalidArgument("rootfs.diff_ids holds a non-string".into()))
        })
        .collect()
}

/// Replaces the config's `rootfs.diff_ids`; every other field stays as it is.
pub fn set_diff_ids(config: &mut Value, ids: &[String]) -> Result<()> {
    let rootfs = config
        .get_mut("rootfs")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::InvalidArgument("the image config has no rootfs object".into()))?;
    rootfs.insert(
        "diff_ids".into(),
        Value::Array(ids.iter().cloned().map(Value::String).collect()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(&Platform::parse("linux/arm64/v8").unwrap()));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(!v7.matches(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(Platform::parse("linux").is_err());
        assert_eq!(v7.to_string(), "linux/arm/v7");
    }

    #[test]
    fn manifest_round_trips_unknown_fields() {
        let text = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[],"subject":{"x":1}}"#;
        let m: ImageManifest = parse("manifest", text).unwrap();
        assert_eq!(to_json("manifest", &m).unwrap(), text.to_vec());
        assert_eq!(classify("", text).unwrap(), Kind::Manifest);
    }

    #[test]
    fn edits_only_diff_ids() {
        let mut c: Value = serde_json::from_str(
            r#"{"os":"linux","rootfs":{"type":"layers","diff_ids":["a"]},"zzz":1}"#,
        )
        .unwrap();
        set_diff_ids(&mut c, &["b".into()]).unwrap();
        assert_eq!(diff_ids(&c).unwrap(), vec!["b".to_string()]);
        assert_eq!(c["zzz"], 1);
        assert_eq!(c["rootfs"]["type"], "layers");
    }
}
