//! The daemon's Snapshots gRPC API, method by method, against containerd's overlayfs
//! snapshotter rules: run as a real process on a unix socket, called with the generated
//! client. Needs no root and no containerd (it never mounts anything for normal layers).

#![allow(clippy::unwrap_used)] // test helpers: a failed step is a failed test

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use estargz_snapshotter::api::snapshots::snapshots_client::SnapshotsClient;
use estargz_snapshotter::api::snapshots::*;
use tonic::transport::Channel;
use tonic::Code;

async fn client(d: &Daemon) -> SnapshotsClient<Channel> {
    SnapshotsClient::new(
        estargz_snapshotter::client::connect_unix(&d.socket)
            .await
            .unwrap(),
    )
}

fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn prepare(
    c: &mut SnapshotsClient<Channel>,
    key: &str,
    parent: &str,
    l: HashMap<String, String>,
) -> Result<Vec<estargz_snapshotter::api::types::Mount>, tonic::Status> {
    c.prepare(PrepareSnapshotRequest {
        snapshotter: String::new(),
        key: key.into(),
        parent: parent.into(),
        labels: l,
    })
    .await
    .map(|r| r.into_inner().mounts)
}

async fn stat(c: &mut SnapshotsClient<Channel>, key: &str) -> Result<Info, tonic::Status> {
    c.stat(StatSnapshotRequest {
        snapshotter: String::new(),
        key: key.into(),
    })
    .await
    .map(|r| r.into_inner().info.unwrap())
}

async fn list(c: &mut SnapshotsClient<Channel>, filters: &[&str]) -> Vec<String> {
    let mut s = c
        .list(ListSnapshotsRequest {
            snapshotter: String::new(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut names = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        names.extend(m.info.into_iter().map(|i| i.name));
    }
    names.sort();
    names
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_method_behaves_like_containerds_overlayfs_snapshotter() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), "disable_remote = true");
    let snaps = d.root.join("snapshotter/snapshots");
    let index_off = std::path::Path::new("/sys/module/overlay/parameters/index").exists();
    rt().block_on(async {
        let mut c = client(&d).await;
        // a snapshot without parents: a read-write bind mount of its fs/
        let m = prepare(&mut c, "a", "", labels(&[("x", "1")]))
            .await
            .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].r#type, "bind");
        assert_eq!(m[0].options, ["rw", "rbind"]);
        let a_fs = std::path::PathBuf::from(&m[0].source);
        assert!(a_fs.starts_with(&snaps) && a_fs.ends_with("fs"), "{a_fs:?}");
        assert!(a_fs.parent().unwrap().join("work").is_dir());
        std::fs::write(a_fs.join("file"), vec![7u8; 10_000]).unwrap();
        let u = c
            .usage(UsageRequest {
                snapshotter: String::new(),
                key: "a".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(u.inodes, 2);
        assert!(u.size >= 10_000, "{u:?}");

        assert_eq!(
            prepare(&mut c, "a", "", HashMap::new())
                .await
                .unwrap_err()
                .code(),
            Code::AlreadyExists
        );
        assert_eq!(
            prepare(&mut c, "z", "missing", HashMap::new())
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
        assert_eq!(
            prepare(&mut c, "z", "a", HashMap::new())
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );

        // commit: labels replaced, usage recorded, the key is gone
        c.commit(CommitSnapshotRequest {
            snapshotter: String::new(),
            name: "A".into(),
            key: "a".into(),
            labels: labels(&[("y", "2")]),
        })
        .await
        .unwrap();
        let i = stat(&mut c, "A").await.unwrap();
        assert_eq!(i.kind, Kind::Committed as i32);
        assert_eq!(i.labels, labels(&[("y", "2")]));
        assert_eq!(stat(&mut c, "a").await.unwrap_err().code(), Code::NotFound);
        let u = c
            .usage(UsageRequest {
                snapshotter: String::new(),
                key: "A".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(u.inodes, 2);
        let mounts_of_committed = c
            .mounts(MountsRequest {
                snapshotter: String::new(),
                key: "A".into(),
            })
            .await;
        assert_eq!(
            mounts_of_committed.unwrap_err().code(),
            Code::FailedPrecondition
        );

        // an active child: overlay, workdir, upperdir, lowerdir (nearest parent first)
        let m = prepare(&mut c, "b", "A", HashMap::new()).await.unwrap();
        assert_eq!(
            (m[0].r#type.as_str(), m[0].source.as_str()),
            ("overlay", "overlay")
        );
        let mut want = Vec::new();
        if index_off {
            want.push("index=off".to_owned());
        }
        let b_dir = m[0]
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir="))
            .unwrap()
            .trim_end_matches("/fs")
            .to_owned();
        want.push(format!("workdir={b_dir}/work"));
        want.push(format!("upperdir={b_dir}/fs"));
        want.push(format!("lowerdir={}", a_fs.display()));
        assert_eq!(m[0].options, want);
        let again = c
            .mounts(MountsRequest {
                snapshotter: String::new(),
                key: "b".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        assert_eq!(again, m);
        c.commit(CommitSnapshotRequest {
            snapshotter: String::new(),
            name: "B".into(),
            key: "b".into(),
            labels: HashMap::new(),
        })
        .await
        .unwrap();
        let m = prepare(&mut c, "c", "B", HashMap::new()).await.unwrap();
        let lower = m[0]
            .options
            .iter()
            .find_map(|o| o.strip_prefix("lowerdir="))
            .unwrap();
        assert_eq!(lower, format!("{b_dir}/fs:{}", a_fs.display()));

        // views: one parent is a read-only bind of it; two parents a read-only overlay
        let v = c
            .view(ViewSnapshotRequest {
                snapshotter: String::new(),
                key: "v".into(),
                parent: "A".into(),
                labels: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        assert_eq!(
            (v[0].r#type.as_str(), v[0].options.clone()),
            ("bind", vec!["ro".to_owned(), "rbind".to_owned()])
        );
        assert_eq!(std::path::PathBuf::from(&v[0].source), a_fs);
        let v2 = c
            .view(ViewSnapshotRequest {
                snapshotter: String::new(),
                key: "v2".into(),
                parent: "B".into(),
                labels: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        assert_eq!(v2[0].r#type, "overlay");
        assert!(!v2[0]
            .options
            .iter()
            .any(|o| o.starts_with("upperdir") || o.starts_with("workdir")));
        let v3 = c
            .view(ViewSnapshotRequest {
                snapshotter: String::new(),
                key: "v3".into(),
                parent: String::new(),
                labels: HashMap::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .mounts;
        assert_eq!(v3[0].options, ["ro", "rbind"]);

        // update: by field path, whole labels, bad path
        let upd = |labels: HashMap<String, String>, paths: &[&str]| UpdateSnapshotRequest {
            snapshotter: String::new(),
            info: Some(Info {
                name: "A".into(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        };
        let i = c
            .update(upd(labels(&[("z", "3"), ("q", "9")]), &["labels.z"]))
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(i.labels, labels(&[("y", "2"), ("z", "3")]));
        let i = c
            .update(upd(labels(&[]), &["labels.y"]))
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(i.labels, labels(&[("z", "3")]));
        assert_eq!(
            c.update(upd(labels(&[]), &["parent"]))
                .await
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );

        // list with filters
        assert_eq!(list(&mut c, &[]).await, ["A", "B", "c", "v", "v2", "v3"]);
        assert_eq!(list(&mut c, &["kind==committed"]).await, ["A", "B"]);
        assert_eq!(list(&mut c, &["kind==view,parent==A"]).await, ["v"]);
        assert_eq!(
            list(&mut c, &[r#"labels."z"==3"#, "name~=^v[0-9]$"]).await,
            ["A", "v2", "v3"]
        );
        assert_eq!(list(&mut c, &["labels.z"]).await, ["A"]);
        assert_eq!(
            c.list(ListSnapshotsRequest {
                snapshotter: String::new(),
                filters: vec!["kind=".into()]
            })
            .await
            .unwrap_err()
            .code(),
            Code::InvalidArgument
        );

        // remove: children first; directories go with the snapshot
        let rm = |k: &str| RemoveSnapshotRequest {
            snapshotter: String::new(),
            key: k.into(),
        };
        assert_eq!(
            c.remove(rm("A")).await.unwrap_err().code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            c.remove(rm("nope")).await.unwrap_err().code(),
            Code::NotFound
        );
        for k in ["v", "v2", "v3", "c"] {
            c.remove(rm(k)).await.unwrap();
        }
        assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 2);

        // cleanup removes directories the metadata does not know
        std::fs::create_dir_all(snaps.join("999/fs")).unwrap();
        std::fs::create_dir_all(snaps.join("new-5/fs")).unwrap();
        c.cleanup(CleanupRequest {
            snapshotter: String::new(),
        })
        .await
        .unwrap();
        assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 2);
    });

    // everything survives a restart (and a kill -9)
    d.proc.kill9();
    d.restart();
    rt().block_on(async {
        let mut c = client(&d).await;
        assert_eq!(list(&mut c, &[]).await, ["A", "B"]);
        assert_eq!(
            stat(&mut c, "A").await.unwrap().labels,
            labels(&[("z", "3")])
        );
        assert_eq!(stat(&mut c, "B").await.unwrap().parent, "A");
    });
}

const REMOTE: &[(&str, &str)] = &[
    ("containerd.io/snapshot.ref", "sha256:chain1"),
    (
        "containerd.io/snapshot/remote/stargz.reference",
        "127.0.0.1:1/none/image:v1",
    ),
    (
        "containerd.io/snapshot/remote/stargz.digest",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "containerd.io/snapshot/remote/stargz.layers",
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "containerd.io/snapshot/stargz/toc.digest",
        "sha256:1111111111111111111111111111111111111111111111111111111111111111",
    ),
];

#[test]
fn a_layer_that_cannot_be_remote_falls_back_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        "fuse_manager.enable = false\n[blob]\nmax_retries = 0\nfetching_timeout_sec = 5\n",
    );
    rt().block_on(async {
        let mut c = client(&d).await;
        // normal layer: no remote labels, not a fallback
        let plain = labels(&[("containerd.io/snapshot.ref", "sha256:plain")]);
        let m = prepare(&mut c, "extract-1 sha256:plain", "", plain)
            .await
            .unwrap();
        assert_eq!(m[0].r#type, "bind");
        // remote labels, but the registry is unreachable: a normal snapshot, a reason
        let m = prepare(&mut c, "extract-2 sha256:chain1", "", labels(REMOTE))
            .await
            .unwrap();
        assert_eq!(m[0].r#type, "bind");
        assert_eq!(
            stat(&mut c, "extract-2 sha256:chain1").await.unwrap().kind,
            Kind::Active as i32
        );
    });
    let status = d.status_json();
    let layers = status["layers"].as_array().unwrap();
    let chain1 = layers
        .iter()
        .find(|l| l["snapshot"] == "sha256:chain1")
        .expect("status of chain1");
    assert_eq!(chain1["mode"], "local", "{status}");
    assert!(chain1["fallback"].is_string(), "{status}");
    assert!(!chain1["reason"].as_str().unwrap().is_empty(), "{status}");
    let plain = layers
        .iter()
        .find(|l| l["snapshot"] == "sha256:plain")
        .unwrap();
    assert!(plain["fallback"].is_null(), "{status}");
    assert!(
        d.metrics_text().contains("estargz_fallbacks_total{kind="),
        "{}",
        d.metrics_text()
    );
    assert!(
        d.logs().contains("falling back to a normal pull"),
        "{}",
        d.logs()
    );

    // `estargz status` reads the same (from the metrics address, and from the status file)
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(["status", "--address", &d.metrics])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("chain1") && text.contains("local") && text.contains("fallback"),
        "{text}"
    );
    assert!(wait_for(Duration::from_secs(5), || d
        .root
        .join("status.json")
        .exists()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_estargz"))
        .args(["status", "--json", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        j["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["snapshot"] == "sha256:chain1"),
        "{j}"
    );

    // the reason survives a restart
    d.restart();
    let status = d.status_json();
    assert!(
        status["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["snapshot"] == "sha256:chain1" && l["fallback"].is_string()),
        "{status}"
    );
}

#[test]
fn strict_mode_turns_a_fallback_into_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), "strict = true\nfuse_manager.enable = false\n[blob]\nmax_retries = 0\nfetching_timeout_sec = 5\n");
    rt().block_on(async {
        let mut c = client(&d).await;
        let err = prepare(&mut c, "extract-2 sha256:chain1", "", labels(REMOTE))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("strict"), "{err:?}");
        assert_eq!(
            stat(&mut c, "extract-2 sha256:chain1")
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
        // layers without remote labels are unaffected
        let plain = labels(&[("containerd.io/snapshot.ref", "sha256:plain")]);
        prepare(&mut c, "extract-1 sha256:plain", "", plain)
            .await
            .unwrap();
    });
}
