//! Benchmarks of the estargz crates (see the `benches/` targets and the README).
