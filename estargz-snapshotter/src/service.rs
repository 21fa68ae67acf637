//! containerd's `Snapshots` gRPC service over a [`Snapshotter`].
//!
//! Translation only: protobuf in, [`Snapshotter`] call on tokio's blocking pool, protobuf out,
//! errors as the gRPC codes containerd's `errdefs` understands. Every call is logged at debug
//! level and counted in the metrics.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api::snapshots::snapshots_server::Snapshots;
use crate::api::snapshots::{
    self as pb, CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, ListSnapshotsResponse,
    MountsRequest, MountsResponse, PrepareSnapshotRequest, PrepareSnapshotResponse,
    RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse, UpdateSnapshotRequest,
    UpdateSnapshotResponse, UsageRequest, UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use crate::api::types;
use crate::snapshotter::{self, Filter, Info, Kind, Mount, Snapshotter};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SnapshotService {
    sn: Arc<Snapshotter>,
}

impl SnapshotService {
    /// Serves `sn`.
    pub fn new(sn: Arc<Snapshotter>) -> Self {
        SnapshotService { sn }
    }

    /// Runs `f` on the blocking pool, logs and counts it.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        key: String,
        f: impl FnOnce(&Snapshotter) -> snapshotter::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let sn = self.sn.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || f(&sn))
            .await
            .map_err(|e| Status::internal(format!("{op}: task failed: {e}")))?;
        let elapsed = started.elapsed();
        crate::metrics::global().operation(op, result.is_ok(), elapsed);
        match &result {
            Ok(_) => tracing::debug!(op, key = %key, elapsed_us = elapsed.as_micros() as u64, "ok"),
            Err(snapshotter::Error::AlreadyExists(_)) | Err(snapshotter::Error::NotFound(_)) => {
                tracing::debug!(op, key = %key, error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(), "done");
            }
            Err(e) => tracing::warn!(op, key = %key, error = %e, "failed"),
        }
        result.map_err(Status::from)
    }
}

fn labels(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn mounts(ms: Vec<Mount>) -> Vec<types::Mount> {
    ms.into_iter()
        .map(|m| types::Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn timestamp(t: snapshotter::store::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.secs,
        nanos: i32::try_from(t.nanos).unwrap_or(0),
    }
}

fn info(i: Info) -> pb::Info {
    let kind = match i.record.kind {
        Kind::View => pb::Kind::View,
        Kind::Active => pb::Kind::Active,
        Kind::Committed => pb::Kind::Committed,
    };
    pb::Info {
        name: i.name,
        parent: i.record.parent,
        kind: kind as i32,
        created_at: Some(timestamp(i.record.created)),
        updated_at: Some(timestamp(i.record.updated)),
        labels: i.record.labels.into_iter().collect(),
    }
}

#[allow(clippy::result_large_err)] // tonic's Status is what the stream carries
type ListStream = Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for SnapshotService {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let ms = self
            .run("prepare", r.key.clone(), move |sn| {
                sn.prepare(&r.key, &r.parent, labels(r.labels))
            })
            .await?;
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: mounts(ms),
        }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let ms = self
            .run("view", r.key.clone(), move |sn| {
                sn.view(&r.key, &r.parent, labels(r.labels))
            })
            .await?;
        Ok(Response::new(ViewSnapshotResponse { mounts: mounts(ms) }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let r = req.into_inner();
        let ms = self
            .run("mounts", r.key.clone(), move |sn| sn.mounts(&r.key))
            .await?;
        Ok(Response::new(MountsResponse { mounts: mounts(ms) }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.run("commit", r.key.clone(), move |sn| {
            sn.commit(&r.name, &r.key, labels(r.labels))
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.run("remove", r.key.clone(), move |sn| sn.remove(&r.key))
            .await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        let i = self
            .run("stat", r.key.clone(), move |sn| sn.stat(&r.key))
            .await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let i = r
            .info
            .ok_or_else(|| Status::invalid_argument("update: no info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let name = i.name.clone();
        let i = self
            .run("update", name.clone(), move |sn| {
                sn.update(&name, labels(i.labels), &paths)
            })
            .await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info(i)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = req.into_inner();
        let list = self
            .run("list", r.filters.join(" | "), move |sn| {
                let filter = Filter::parse(&r.filters)?;
                sn.list(&filter)
            })
            .await?;
        // containerd sends at most ~100 infos per message; so do we.
        let batches: Vec<ListSnapshotsResponse> = list
            .chunks(100)
            .map(|c| ListSnapshotsResponse {
                info: c.iter().cloned().map(info).collect(),
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(
            batches.into_iter().map(Ok),
        ))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let r = req.into_inner();
        let u = self
            .run("usage", r.key.clone(), move |sn| sn.usage(&r.key))
            .await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, _req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        self.run("cleanup", String::new(), |sn| sn.cleanup())
            .await?;
        Ok(Response::new(()))
    }
}
