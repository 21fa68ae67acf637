//! Prints a layer's file tree from its TOC alone (no file data is read), with the index's
//! memory use: what a filesystem or snapshotter holds per layer.
//!
//! ```sh
//! cargo run -p estargz-examples --bin walk_tree -- testdata/vectors/edge-zstd-default/blob.esgz
//! ```
use std::error::Error;
use std::fs::File;

use estargz::index::NodeKind;
use estargz::Reader;

fn main() -> Result<(), Box<dyn Error>> {
    let Some(blob) = std::env::args().nth(1) else {
        eprintln!("usage: walk_tree BLOB");
        std::process::exit(2);
    };
    let reader = Reader::open(File::open(&blob)?)?;
    let index = reader.index();
    index.walk(|path, node| {
        let attr = index.attr(node);
        let suffix = match attr.kind {
            NodeKind::Dir => "/".to_owned(),
            NodeKind::Symlink => format!(" -> {}", index.link_target(node).unwrap_or("")),
            _ => String::new(),
        };
        println!("{:o} {:>10} /{path}{suffix}", attr.mode, attr.size);
    });
    eprintln!(
        "{}: {} (TOC {}), {} TOC entries, index {} bytes",
        blob,
        reader.footer().format_name(),
        reader.toc_digest(),
        index.toc_entry_count(),
        index.heap_size()
    );
    Ok(())
}
