//! Small programs that show the estargz crates' public APIs (see `src/bin`).
