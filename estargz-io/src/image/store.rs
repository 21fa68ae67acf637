//! Where images are read from and written to: an OCI layout directory or a registry
//! repository, behind one set of operations the converter uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use estargz::Digest;

use super::layout::Layout;
use super::spec::Descriptor;
use super::ImageLocation;
use crate::error::{Error, Result};
use crate::registry::RegistryClient;
use crate::source::RegistryOptions;

/// The largest manifest, index or config accepted.
pub(crate) const MAX_DOCUMENT: u64 = 16 << 20;
/// Upload piece size for layers.
const UPLOAD_CHUNK: usize = 16 << 20;

/// An opened image location.
#[derive(Debug)]
pub(crate) enum Store {
    Layout {
        layout: Layout,
        tag: String,
    },
    Registry {
        client: Arc<RegistryClient>,
        repo: String,
        reference: String,
    },
}

/// A layer blob as a local file: the layout's own file, or a download.
#[derive(Debug)]
pub(crate) enum LocalBlob {
    InPlace(PathBuf),
    Downloaded(tempfile::NamedTempFile),
}

impl LocalBlob {
    pub(crate) fn path(&self) -> &Path {
        match self {
            LocalBlob::InPlace(p) => p,
            LocalBlob::Downloaded(t) => t.path(),
        }
    }
}

fn digest_of(d: &Descriptor) -> Result<Digest> {
    Digest::parse(&d.digest)
        .map_err(|e| Error::InvalidArgument(format!("descriptor digest {:?}: {e}", d.digest)))
}

impl Store {
    /// Opens a location to read from (a layout must exist).
    pub(crate) fn open(
        loc: &ImageLocation,
        create: bool,
        clients: &mut Vec<Arc<RegistryClient>>,
        opts: &RegistryOptions,
    ) -> Result<Store> {
        match loc {
            ImageLocation::Layout { dir, tag } => Ok(Store::Layout {
                layout: if create {
                    Layout::create(dir)?
                } else {
                    Layout::open(dir)?
                },
                tag: tag.clone(),
            }),
            ImageLocation::Registry(r) => {
                let client = match clients.iter().find(|c| c.host() == r.host) {
                    Some(c) => Arc::clone(c),
                    None => {
                        let c = Arc::new(RegistryClient::new(&r.host, opts.clone())?);
                        clients.push(Arc::clone(&c));
                        c
                    }
                };
                Ok(Store::Registry {
                    client,
                    repo: r.repository.clone(),
                    reference: r.object(),
                })
            }
        }
    }

    /// The tagged manifest or index: media type, bytes, digest.
    pub(crate) async fn root(&self) -> Result<(String, Vec<u8>, Digest)> {
        match self {
            Store::Layout { layout, tag } => {
                let desc = layout.resolve(tag)?;
                let d = digest_of(&desc)?;
                let bytes = layout.read_blob(&d, MAX_DOCUMENT)?;
                Ok((desc.media_type, bytes, d))
            }
            Store::Registry {
                client,
                repo,
                reference,
            } => {
                let m = client.get_manifest(repo, reference).await?;
                Ok((m.media_type, m.bytes.to_vec(), m.digest))
            }
        }
    }

    /// A manifest listed in an index, checked against its digest.
    pub(crate) async fn manifest(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let d = digest_of(desc)?;
        match self {
            Store::Layout { layout, .. } => layout.read_blob(&d, MAX_DOCUMENT),
            Store::Registry { client, repo, .. } => Ok(client
                .get_manifest(repo, &d.to_string())
                .await?
                .bytes
                .to_vec()),
        }
    }

    /// A small blob (a config), checked against its digest.
    pub(crate) async fn small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let d = digest_of(desc)?;
        match self {
            Store::Layout { layout, .. } => layout.read_blob(&d, MAX_DOCUMENT),
            Store::Registry { client, repo, .. } => {
                Ok(client.get_blob(repo, &d, MAX_DOCUMENT).await?.to_vec())
            }
        }
    }

    /// A layer as a local file, checked against its digest (a registry layer is downloaded
    /// to a temporary file).
    pub(crate) async fn layer(&self, desc: &Descriptor) -> Result<LocalBlob> {
        let d = digest_of(desc)?;
        match self {
            Store::Layout { layout, .. } => {
                let path = layout.blob_path(&d);
                let l = layout.clone();
                tokio::task::spawn_blocking(move || l.check_blob(&d))
                    .await
                    .map_err(|e| Error::InvalidArgument(format!("hashing a layer: {e}")))??;
                Ok(LocalBlob::InPlace(path))
            }
            Store::Registry { client, repo, .. } => {
                let tmp = tempfile::NamedTempFile::new()
                    .map_err(|e| Error::io("creating a temporary file for a layer", e))?;
                let f = tmp
                    .as_file()
                    .try_clone()
                    .map_err(|e| Error::io("creating a temporary file for a layer", e))?;
                let mut f = tokio::fs::File::from_std(f);
                client.get_blob_to_file(repo, &d, desc.size, &mut f).await?;
                Ok(LocalBlob::Downloaded(tmp))
            }
        }
    }

    /// True when the target has the blob.
    pub(crate) async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        match self {
            Store::Layout { layout, .. } => Ok(layout.has_blob(digest)),
            Store::Registry { client, repo, .. } => client.blob_exists(repo, digest).await,
        }
    }

    /// A temporary file for a layer being built, placed so that [`Store::commit`] is cheap.
    pub(crate) fn output_file(&self) -> Result<tempfile::NamedTempFile> {
        match self {
            Store::Layout { layout, .. } => layout.temp_file(),
            Store::Registry { .. } => tempfile::NamedTempFile::new()
                .map_err(|e| Error::io("creating a temporary file for a layer", e)),
        }
    }

    /// Stores a built layer; returns `true` when it was not there before.
    pub(crate) async fn commit(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: &Digest,
    ) -> Result<bool> {
        match self {
            Store::Layout { layout, .. } => {
                if layout.has_blob(digest) {
                    return Ok(false);
                }
                layout.persist(tmp, digest)?;
                Ok(true)
            }
            Store::Registry { client, repo, .. } => {
                client
                    .upload_blob_file(repo, tmp.path(), digest, UPLOAD_CHUNK)
                    .await
            }
        }
    }

    /// Copies a layer that is reused as it is from `src` (already local as `local`): nothing
    /// when the target has it, a cross-repository mount within one registry, else a copy.
    /// Returns `true` when bytes were written.
    pub(crate) async fn copy_layer(
        &self,
        src: &Store,
        digest: &Digest,
        local: &LocalBlob,
    ) -> Result<bool> {
        if self.has_blob(digest).await? {
            return Ok(false);
        }
        match self {
            Store::Layout { layout, .. } => {
                layout.put_blob_file(local.path(), digest)?;
                Ok(true)
            }
            Store::Registry { client, repo, .. } => {
                if let Store::Registry {
                    client: sc,
                    repo: srepo,
                    ..
                } = src
                {
                    if sc.host() == client.host()
                        && srepo != repo
                        && client.mount_blob(repo, srepo, digest).await?
                    {
                        return Ok(false);
                    }
                }
                client
                    .upload_blob_file(repo, local.path(), digest, UPLOAD_CHUNK)
                    .await
            }
        }
    }

    /// Stores a small blob (a config); returns `true` when it was not there before.
    pub(crate) async fn put_small_blob(&self, bytes: &[u8]) -> Result<bool> {
        let d = Digest::of(bytes);
        if self.has_blob(&d).await? {
            return Ok(false);
        }
        match self {
            Store::Layout { layout, .. } => {
                layout.write_blob(bytes)?;
            }
            Store::Registry { client, repo, .. } => {
                client
                    .upload_blob(repo, Bytes::copy_from_slice(bytes))
                    .await?;
            }
        }
        Ok(true)
    }

    /// Stores a manifest or index; with `tag`, the location's tag is pointed at it.
    pub(crate) async fn put_manifest(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        tag: bool,
    ) -> Result<()> {
        match self {
            Store::Layout { layout, tag: t } => {
                layout.write_blob(bytes)?;
                if tag {
                    layout.set_tag(t, desc)?;
                }
                Ok(())
            }
            Store::Registry {
                client,
                repo,
                reference,
            } => {
                let r = if tag {
                    reference.clone()
                } else {
                    desc.digest.clone()
                };
                client
                    .put_manifest(repo, &r, &desc.media_type, Bytes::copy_from_slice(bytes))
                    .await?;
                Ok(())
            }
        }
    }
}
