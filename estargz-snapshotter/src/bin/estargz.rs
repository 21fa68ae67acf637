//! The `estargz` command-line tool.
fn main() {}
