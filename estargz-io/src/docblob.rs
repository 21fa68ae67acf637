//! A blob for the documentation's examples (a conformance vector of the workspace).

use std::path::PathBuf;

use estargz::Digest;

/// A stored eStargz blob and its TOC digest.
#[derive(Debug, Clone)]
pub struct DocBlob {
    /// Path of the blob.
    pub path: PathBuf,
    /// Its TOC digest.
    pub toc_digest: Digest,
}

/// The `edge-gzip-chunk64k` conformance vector, for doc examples only.
pub fn doc_blob() -> DocBlob {
    DocBlob {
        path: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/vectors/edge-gzip-chunk64k/blob.esgz"
        )),
        toc_digest: Digest::parse(
            "sha256:575878383afdf5f5121c539366dc447db3dcc49489fcafff75f09fbe28542d55",
        )
        .unwrap_or(Digest([0; 32])),
    }
}
