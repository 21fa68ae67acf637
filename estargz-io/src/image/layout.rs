//! An OCI image layout directory: `oci-layout`, `index.json` and `blobs/sha256/<hex>`.
//!
//! Reads check every blob against its digest; writes go to a temporary file in the same
//! directory and are renamed into place, so a crash never leaves a torn blob or index.

use std::io::Write;
use std::path::{Path, PathBuf};

use estargz::Digest;

use super::spec::{self, Descriptor, ImageIndex, OCI_INDEX, REF_NAME};
use crate::error::{Error, Result};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what, e)
}

impl Layout {
    /// Opens an existing layout (it must have `index.json`).
    pub fn open(dir: &Path) -> Result<Layout> {
        if !dir.join("index.json").is_file() {
            return Err(Error::InvalidArgument(format!(
                "{} is not an OCI image layout (no index.json); create one with e.g. `skopeo copy ... oci:{}:TAG`",
                dir.display(),
                dir.display()
            )));
        }
        Ok(Layout {
            dir: dir.to_owned(),
        })
    }

    /// Opens a layout, creating the directory, `oci-layout`, `blobs/sha256` and an empty
    /// `index.json` as needed.
    pub fn create(dir: &Path) -> Result<Layout> {
        let blobs = dir.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(io_err(format!("creating {}", blobs.display())))?;
        let l = Layout {
            dir: dir.to_owned(),
        };
        if !dir.join(LAYOUT_FILE).exists() {
            l.write_atomic(&dir.join(LAYOUT_FILE), LAYOUT_VERSION)?;
        }
        if !dir.join("index.json").exists() {
            let empty = ImageIndex {
                schema_version: 2,
                media_type: Some(OCI_INDEX.into()),
                manifests: Vec::new(),
                annotations: Default::default(),
                extra: Default::default(),
            };
            l.write_atomic(&dir.join("index.json"), &spec::to_json("index", &empty)?)?;
        }
        Ok(l)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    /// The layout's `index.json`.
    pub fn index(&self) -> Result<ImageIndex> {
        let p = self.dir.join("index.json");
        let bytes = std::fs::read(&p).map_err(io_err(format!("reading {}", p.display())))?;
        spec::parse(&format!("{}", p.display()), &bytes)
    }

    /// The `index.json` entry tagged `tag` (annotation `org.opencontainers.image.ref.name`).
    /// When no entry has a tag at all and there is exactly one entry, `latest` names it.
    pub fn resolve(&self, tag: &str) -> Result<Descriptor> {
        let index = self.index()?;
        if let Some(d) = index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        {
            return Ok(d.clone());
        }
        let tags: Vec<&str> = index
            .manifests
            .iter()
            .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
            .collect();
        if tags.is_empty() && index.manifests.len() == 1 && tag == "latest" {
            return Ok(index.manifests[0].clone());
        }
        Err(Error::InvalidArgument(format!(
            "{}: no image tagged {tag:?} (tags: {})",
            self.dir.display(),
            if tags.is_empty() {
                "none".to_string()
            } else {
                tags.join(", ")
            }
        )))
    }

    /// True when the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob (manifests, configs), refusing more than `max` bytes and checking
    /// its digest.
    pub fn read_blob(&self, digest: &Digest, max: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        let len = std::fs::metadata(&p)
            .map_err(io_err(format!("reading {}", p.display())))?
            .len();
        if len > max {
            return Err(Error::InvalidArgument(format!(
                "{}: {len} bytes, more than the {max} allowed for this kind of blob",
                p.display()
            )));
        }
        let bytes = std::fs::read(&p).map_err(io_err(format!("reading {}", p.display())))?;
        if Digest::of(&bytes) != *digest {
            return Err(Error::InvalidArgument(format!(
                "{} does not hash to {digest}: the layout is corrupt",
                p.display()
            )));
        }
        Ok(bytes)
    }

    /// Checks that a (large) blob file hashes to its digest, reading it in pieces.
    pub fn check_blob(&self, digest: &Digest) -> Result<PathBuf> {
        let p = self.blob_path(digest);
        let got = hash_file(&p)?;
        if got != *digest {
            return Err(Error::InvalidArgument(format!(
                "{} hashes to {got}, not {digest}: the layout is corrupt",
                p.display()
            )));
        }
        Ok(p)
    }

    /// Writes a small blob; returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        let p = self.blob_path(&d);
        if !p.is_file() {
            self.write_atomic(&p, bytes)?;
        }
        Ok(d)
    }

    /// Moves a finished temporary file (in any directory on the same filesystem, or copies
    /// it otherwise) into place as the blob `digest`.
    pub fn put_blob_file(&self, src: &Path, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        if p.is_file() {
            return Ok(());
        }
        let tmp = self.temp_path();
        std::fs::copy(src, &tmp).map_err(io_err(format!(
            "copying {} to {}",
            src.display(),
            tmp.display()
        )))?;
        std::fs::rename(&tmp, &p).map_err(io_err(format!("renaming to {}", p.display())))
    }

    /// A temporary file in the blobs directory (same filesystem: a rename moves it in).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let d = self.dir.join("blobs").join("sha256");
        tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&d)
            .map_err(io_err(format!(
                "creating a temporary file in {}",
                d.display()
            )))
    }

    /// Moves a temporary file made by [`Layout::temp_file`] into place as blob `digest`.
    pub fn persist(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        tmp.persist(&p)
            .map_err(|e| Error::io(format!("renaming to {}", p.display()), e.error))?;
        Ok(())
    }

    fn temp_path(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let dir = path.parent().unwrap_or(&self.dir);
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(io_err(format!(
                "creating a temporary file in {}",
                dir.display()
            )))?;
        tmp.write_all(bytes)
            .map_err(io_err(format!("writing {}", path.display())))?;
        tmp.persist(path)
            .map_err(|e| Error::io(format!("renaming to {}", path.display()), e.error))?;
        Ok(())
    }

    /// Points `tag` at `desc` in `index.json` (replacing the entry that had the tag).
    pub fn set_tag(&self, tag: &str, desc: &Descriptor) -> Result<()> {
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut d = desc.clone();
        d.annotations.insert(REF_NAME.into(), tag.into());
        index.manifests.push(d);
        if index.media_type.is_none() {
            index.media_type = Some(OCI_INDEX.into());
        }
        self.write_atomic(
            &self.dir.join("index.json"),
            &spec::to_json("index", &index)?,
        )
    }
}

/// `sha256` of a file, read in 1 MiB pieces.
pub fn hash_file(path: &Path) -> Result<Digest> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut h = estargz::digest::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(io_err(format!("reading {}", path.display())))?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}
