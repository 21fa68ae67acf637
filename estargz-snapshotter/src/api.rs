//! containerd's gRPC API, generated at build time from the vendored protos in `proto/`.
//!
//! Only the services this crate needs: `snapshots` (the daemon serves it), and `content`,
//! `images`, `diff`, `leases`, `version` (the `estargz image pull` client uses them). The module
//! tree mirrors the proto packages (`containerd.services.snapshots.v1` is
//! [`containerd::services::snapshots::v1`]); short aliases follow.
#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

pub mod containerd {
    pub mod types {
        tonic::include_proto!("containerd.types");
    }
    pub mod services {
        pub mod snapshots {
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
        pub mod content {
            pub mod v1 {
                tonic::include_proto!("containerd.services.content.v1");
            }
        }
        pub mod images {
            pub mod v1 {
                tonic::include_proto!("containerd.services.images.v1");
            }
        }
        pub mod diff {
            pub mod v1 {
                tonic::include_proto!("containerd.services.diff.v1");
            }
        }
        pub mod leases {
            pub mod v1 {
                tonic::include_proto!("containerd.services.leases.v1");
            }
        }
        pub mod version {
            pub mod v1 {
                tonic::include_proto!("containerd.services.version.v1");
            }
        }
    }
}

pub use containerd::services::content::v1 as content;
pub use containerd::services::diff::v1 as diff;
pub use containerd::services::images::v1 as images;
pub use containerd::services::leases::v1 as leases;
pub use containerd::services::snapshots::v1 as snapshots;
pub use containerd::services::version::v1 as version;
pub use containerd::types;
