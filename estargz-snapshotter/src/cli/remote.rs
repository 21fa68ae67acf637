//! Remote BLOB arguments: `HOST[:PORT]/REPO@sha256:DIGEST` (a registry blob) or an
//! `http(s)://` URL, read lazily through `estargz-io` with a runtime owned by the command.
//!
//! `info`, `ls`, `toc` and `verify` run the core reader over a block-cached blocking view of
//! the blob (one request opens it: footer and TOC come in the first suffix request); `cat`
//! reads through a `RemoteLayer`, fetching and verifying only the chunks of the file.

use std::io::{self, Write};
use std::sync::Arc;

use estargz::ReadAt;
use estargz_io::blocking::BlockingBlob;
use estargz_io::config::RegistryConfig;
use estargz_io::layer::LayerOptions;
use estargz_io::source::{BlobSource, HttpOptions, HttpSource, RegistryOptions, RegistrySource};
use estargz_io::{ChunkCache, RemoteLayer};

use super::BlobArgs;

/// A blob on local disk or behind the network, as the core reader sees it.
#[derive(Debug)]
pub enum Blob {
    /// A local file.
    Local(std::fs::File),
    /// A remote blob; the runtime that serves it lives as long as the view.
    Remote(BlockingBlob, Arc<tokio::runtime::Runtime>),
}

impl ReadAt for Blob {
    fn len(&self) -> io::Result<u64> {
        match self {
            Blob::Local(f) => ReadAt::len(f),
            Blob::Remote(b, _) => b.len(),
        }
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Blob::Local(f) => f.read_exact_at(offset, buf),
            Blob::Remote(b, _) => b.read_exact_at(offset, buf),
        }
    }
}

/// True when BLOB names a remote blob (and no local file of that name exists).
pub fn is_remote(blob: &str) -> bool {
    if blob.starts_with("http://") || blob.starts_with("https://") {
        return true;
    }
    blob.contains("@sha256:") && !std::path::Path::new(blob).exists()
}

/// The I/O runtime of a command (two worker threads).
pub(crate) fn runtime() -> Result<Arc<tokio::runtime::Runtime>, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))
}

/// The source for a remote BLOB argument.
pub fn source(a: &BlobArgs) -> Result<Arc<dyn BlobSource>, String> {
    let blob = a.blob.to_string_lossy();
    if blob.starts_with("http://") || blob.starts_with("https://") {
        let s = HttpSource::new(&blob, HttpOptions::default()).map_err(|e| e.to_string())?;
        return Ok(Arc::new(s));
    }
    let reference: estargz_io::Reference =
        blob.parse().map_err(|e: estargz_io::Error| e.to_string())?;
    let mut opts = RegistryOptions::default();
    if a.plain_http {
        opts.config = RegistryConfig::plain_http(&reference.host);
    }
    let s = RegistrySource::new(&reference, opts).map_err(|e| e.to_string())?;
    Ok(Arc::new(s))
}

/// Opens a remote BLOB as a blocking, block-cached view.
pub fn open_view(a: &BlobArgs) -> Result<Blob, String> {
    let rt = runtime()?;
    let src = source(a)?;
    let _guard = rt.enter();
    let view = BlockingBlob::open(rt.handle().clone(), src, 1 << 20)
        .map_err(|e| format!("{}: {e}", a.blob.display()))?;
    Ok(Blob::Remote(view, rt))
}

/// `estargz cat` of a remote BLOB through a `RemoteLayer`: only the file's chunks are fetched.
pub fn cat(a: &BlobArgs, path: &str, offset: u64, length: Option<u64>) -> Result<(), String> {
    let rt = runtime()?;
    let src = source(a)?;
    let mut opts = match &a.toc_digest {
        Some(d) => LayerOptions::with_toc_digest(
            estargz::Digest::parse(d).map_err(|e| format!("--toc-digest: {e}"))?,
        ),
        // As for local blobs: without --toc-digest the TOC is not checked (chunks still are).
        None => LayerOptions::unverified(),
    };
    opts.format.verify_chunks = !a.no_verify;
    if let Some(toc) = &a.toc {
        opts.format.external_toc =
            Some(std::fs::read(toc).map_err(|e| format!("cannot read {}: {e}", toc.display()))?);
    }
    rt.block_on(async {
        let layer = RemoteLayer::open(src, Arc::new(ChunkCache::memory(64 << 20)), opts)
            .await
            .map_err(|e| format!("{}: {e}", a.blob.display()))?;
        let node = layer
            .index()
            .lookup(path)
            .ok_or_else(|| format!("{path:?}: no such file or directory in the layer"))?;
        let size = layer.index().attr(node).size;
        let end = length.map_or(size, |l| offset.saturating_add(l).min(size));
        let mut pos = offset.min(end);
        let mut buf = vec![0u8; 1 << 20];
        let mut out = io::stdout().lock();
        while pos < end {
            let want = ((end - pos) as usize).min(buf.len());
            let n = layer
                .read_at(node, pos, &mut buf[..want])
                .await
                .map_err(|e| format!("{path}: {e}"))?;
            if n == 0 {
                break;
            }
            match out.write_all(&buf[..n]) {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(format!("writing to stdout: {e}")),
                Ok(()) => {}
            }
            pos += n as u64;
        }
        out.flush().map_err(|e| format!("writing to stdout: {e}"))
    })
}
