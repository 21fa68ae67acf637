//! Small programs that show the estargz crates' public APIs doing real work (see `src/bin`):
//!
//! - `read_file BLOB PATH [TOC_DIGEST]`: read one file of a layer, verified chunk by chunk.
//! - `walk_tree BLOB`: the layer's tree from its TOC alone, and the index's memory use.
