//! Async, verified reads of eStargz layers that live elsewhere (registry, HTTP, file).
//!
//! Not implemented yet: this crate currently only re-exports the core crate so that the
//! workspace layout is in place. See the project README for the plan.
#![forbid(unsafe_code)]
pub use estargz;
