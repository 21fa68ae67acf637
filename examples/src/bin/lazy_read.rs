//! Reads files of a remote eStargz layer lazily through `estargz-io`: one request opens the
//! layer (footer and TOC, the TOC checked against its digest), then only the chunks of the
//! named files are fetched, each verified before a byte of it is used.
//!
//! ```text
//! lazy_read URL TOC_DIGEST FILE...
//! ```
//!
//! Prints `SHA256  FILE` for each file (like `sha256sum`), then one line
//! `fetched N of M blob bytes in R requests`.

use std::process::ExitCode;
use std::sync::Arc;

use estargz::Digest;
use estargz_io::source::{HttpOptions, HttpSource};
use estargz_io::{ChunkCache, LayerOptions, RemoteLayer};

async fn run(url: &str, toc_digest: &str, files: &[String]) -> Result<(), String> {
    let digest = Digest::parse(toc_digest).map_err(|e| format!("TOC digest: {e}"))?;
    let source = HttpSource::new(url, HttpOptions::default()).map_err(|e| e.to_string())?;
    let opts = LayerOptions {
        tail_size: 256 << 10,
        ..LayerOptions::with_toc_digest(digest)
    };
    let layer = RemoteLayer::open(
        Arc::new(source),
        Arc::new(ChunkCache::memory(64 << 20)),
        opts,
    )
    .await
    .map_err(|e| format!("{url}: {e}"))?;
    for f in files {
        let data = layer.read_file(f).await.map_err(|e| format!("{f}: {e}"))?;
        let hex = Digest::of(&data).to_string();
        println!("{}  {f}", hex.trim_start_matches("sha256:"));
    }
    let m = layer.metrics();
    println!(
        "fetched {} of {} blob bytes in {} requests",
        m.total_bytes(),
        layer.location().blob_size,
        m.total_requests()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, toc_digest, files @ ..] = args.as_slice() else {
        eprintln!("usage: lazy_read URL TOC_DIGEST FILE...");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lazy_read: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(url, toc_digest, files)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazy_read: {e}");
            ExitCode::FAILURE
        }
    }
}
