//! gRPC clients over unix sockets: containerd's API (`estargz image pull`) and the daemon's
//! own snapshots service (tests, diagnostics).

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Connects to a gRPC server on the unix socket `path`.
pub async fn connect_unix(path: &Path) -> Result<Channel, String> {
    let path: PathBuf = path.to_path_buf();
    let shown = path.display().to_string();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::try_from("http://[::1]:1")
        .map_err(|e| e.to_string())?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .map_err(|e| format!("cannot connect to {shown}: {e}"))
}

/// Adds containerd's namespace (and, when given, lease) headers to a request.
pub fn with_namespace<T>(msg: T, namespace: &str, lease: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = namespace.parse() {
        req.metadata_mut().insert("containerd-namespace", v);
    }
    if let Some(l) = lease.and_then(|l| l.parse().ok()) {
        req.metadata_mut().insert("containerd-lease", l);
    }
    req
}
