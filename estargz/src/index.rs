//! The filesystem view of a TOC.
#[derive(Debug)]
/// Placeholder.
pub struct Index;
