//! Reads one file out of an eStargz layer, verifying every chunk, and prints what it had to
//! decompress compared with the layer's size.
//!
//! ```sh
//! cargo run -p estargz-examples --bin read_file -- testdata/vectors/edge-gzip-default/blob.esgz sizes/64k
//! ```
use std::error::Error;
use std::fs::File;
use std::io::Write;

use estargz::{OpenOptions, Reader};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(blob), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: read_file BLOB PATH [TOC_DIGEST]");
        std::process::exit(2);
    };
    let opts = OpenOptions {
        // With the digest from the layer's manifest annotation, a tampered TOC is refused.
        expected_toc_digest: args.next().map(|d| d.parse()).transpose()?,
        ..OpenOptions::default()
    };
    let reader = Reader::open_with(File::open(&blob)?, opts)?;
    let mut file = reader.open_file(&path)?;
    let node = file.node();
    let mut out = std::io::stdout().lock();
    file.for_each_chunk(0, |verified| out.write_all(verified))?;
    let compressed: u64 = reader
        .index()
        .chunks(node)
        .iter()
        .map(|c| c.blob_range().end - c.blob_range().start)
        .sum();
    eprintln!(
        "{path}: {} bytes in {} verified chunks, {compressed} compressed bytes read of a {}-byte layer",
        reader.index().attr(node).size,
        reader.index().chunks(node).len(),
        reader.location().blob_size,
    );
    Ok(())
}
