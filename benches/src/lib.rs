//! Benchmarks of the estargz crates (see the `benches/` targets and the README), and what
//! several of them share.

pub mod registry;
pub mod shaping;
