//! Memory of the snapshotter: idle, and with 10 lazy layers of 30,000 entries each mounted.
//!
//! `cargo build --release -p estargz-snapshotter && cargo bench -p estargz-benches --bench daemon_memory`
//! (as root, with /dev/fuse and Debian's `docker-registry`). `BENCH_LAYERS` (default 10) and
//! `BENCH_ENTRIES` (default 30000) change the sizes. `BENCH_HOLD_SECS=N` pauses N seconds
//! once the layers are mounted and prints the FUSE manager's pid, to look inside it
//! (`/proc/PID/smaps`, `gdb -p PID`, `heaptrack -p PID`).
//!
//! Ten tars of `BENCH_ENTRIES` small files (`estargz_testkit::synth::many_small_files`, one
//! seed per layer) are converted with `target/release/estargz convert`, pushed to a local
//! registry and put in a `[resolver] local_dirs` directory. For each of the two sources (the
//! registry, which is what nodes run, then the local directory) a release `estargz-snapshotter`
//! daemon starts with its FUSE manager; each layer is prepared through the daemon's Snapshots
//! API with the remote-snapshot labels (as containerd would), so it is mounted lazily with
//! FUSE. Reported: the resident set (VmRSS, and in brackets RssAnon, the part that is not
//! pages of the executable) of the daemon and of the FUSE manager, idle, with every layer
//! mounted, and after a `stat` of every entry of every mount (which makes the kernel look up
//! every inode). The goal (issue 6): under 50 MiB in total with 10 layers mounted. The Go
//! daemon is not run here (it only reads layers from a registry with its own client); its
//! documented footprint is about 1 KiB per TOC entry held in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use estargz_snapshotter::api::snapshots::snapshots_client::SnapshotsClient;
use estargz_snapshotter::api::snapshots::{PrepareSnapshotRequest, RemoveSnapshotRequest};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `(VmRSS, RssAnon)` of `pid` in KiB: the whole resident set, and the part of it that is
/// heap and stacks rather than pages of the mapped executable and libraries.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// The pid of the FUSE manager serving `socket` (its command line names the socket or the
/// config it was started with).
fn manager_pid(config: &Path, daemon: u32) -> Option<u32> {
    let needle = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        if pid == daemon {
            return None;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("fuse-manager") && cmd.contains(&needle)).then_some(pid)
    })
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .map(PathBuf::from)
        .collect()
}

fn walk(dir: &Path, n: &mut u64) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        *n += 1;
        if let Ok(m) = std::fs::symlink_metadata(e.path()) {
            if m.is_dir() {
                walk(&e.path(), n);
            }
        }
    }
}

struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(pid) = manager_pid(&self.dir.join("config.toml"), 0) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        for m in mounts_under(&self.dir).into_iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// Where the daemon finds the layers' blobs.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// A local `docker-registry`: the path operators run (range reads over HTTP, the TOC
    /// fetched and parsed in memory).
    Registry,
    /// A `[resolver] local_dirs` directory: the blob is a local file.
    LocalDir,
}

/// One layer: blob digest, TOC digest, DiffID.
type Built = (String, String, String);

/// A row of the report: what, (daemon RSS, anon), (manager RSS, anon), in KiB.
type Row = (String, (u64, u64), (u64, u64));

fn main() {
    let root_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let estargz = root_dir.join("target/release/estargz");
    let daemon_bin = root_dir.join("target/release/estargz-snapshotter");
    if !estargz.exists() || !daemon_bin.exists() {
        println!(
            "daemon_memory: build the release binaries first: cargo build --release -p estargz-snapshotter"
        );
        return;
    }
    if !Path::new("/dev/fuse").exists() || !estargz_testkit::prereq::is_root() {
        println!("daemon_memory: needs root and /dev/fuse; skipped");
        return;
    }
    let Some(registry) = estargz_benches::registry::start() else {
        println!(
            "daemon_memory: skipped: docker-registry not found (apt-get install docker-registry)"
        );
        return;
    };
    let layers = env_usize("BENCH_LAYERS", 10);
    let entries = env_usize("BENCH_ENTRIES", 30_000);

    let tmp = tempfile::Builder::new()
        .prefix("esgz-mem-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = estargz_io::registry::RegistryClient::new(
        &registry.host,
        estargz_io::source::RegistryOptions {
            config: estargz_io::config::RegistryConfig::plain_http(&registry.host),
            keychain: std::sync::Arc::new(estargz_io::auth::Keychain::empty()),
            ..Default::default()
        },
    )
    .expect("registry client");

    // The layers, in the local directory and in the registry.
    let mut built: Vec<Built> = Vec::new();
    let mut toc_entries = 0u64;
    for i in 0..layers {
        let tar = estargz_testkit::synth::many_small_files(entries, 1000 + i as u64);
        let tar_path = dir.join(format!("layer{i}.tar"));
        std::fs::write(&tar_path, &tar).expect("write tar");
        let out = dir.join(format!("layer{i}.esgz"));
        let o = Command::new(&estargz)
            .arg("convert")
            .arg(&tar_path)
            .arg(&out)
            .arg("--json")
            .output()
            .expect("run estargz convert");
        assert!(
            o.status.success(),
            "convert: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let blob_digest = report["blobDigest"]
            .as_str()
            .expect("blobDigest")
            .to_owned();
        let toc_digest = report["tocDigest"].as_str().expect("tocDigest").to_owned();
        let diff_id = report["diffId"].as_str().expect("diffId").to_owned();
        let blob_path = blobs.join(&blob_digest[7..]);
        std::fs::rename(&out, &blob_path).expect("move blob");
        let _ = std::fs::remove_file(&tar_path);
        let data = std::fs::read(&blob_path).expect("read blob");
        rt.block_on(client.upload_blob("bench/memory", data.into()))
            .expect("upload blob");
        let reader = estargz::Reader::open(std::fs::File::open(&blob_path).expect("open blob"))
            .expect("reader");
        toc_entries += reader.index().toc_entry_count() as u64;
        built.push((blob_digest, toc_digest, diff_id));
    }

    println!(
        "\n### Snapshotter memory, {layers} lazy layers of {entries} files ({toc_entries} TOC entries in all)\n"
    );
    println!(
        "| layers from | state | daemon RSS (anon) | FUSE manager RSS (anon) | total | goal |"
    );
    println!("|---|---|---|---|---|---|");
    for (source, name) in [
        (Source::Registry, "registry"),
        (Source::LocalDir, "local dir"),
    ] {
        let run_dir = dir.join(name.replace(' ', "-"));
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let rows = measure_daemon(
            &rt,
            &daemon_bin,
            &run_dir,
            source,
            &registry.host,
            &dir,
            &built,
        );
        let mib = |k: u64| k as f64 / 1024.0;
        for (what, (d, da), (m, ma)) in &rows {
            let total = d + m;
            let goal = if what.contains("mounted") {
                if total < 50 * 1024 {
                    "< 50 MiB: met"
                } else {
                    "< 50 MiB: MISSED"
                }
            } else {
                ""
            };
            println!(
                "| {name} | {what} | {:.1} MiB ({:.1}) | {:.1} MiB ({:.1}) | {:.1} MiB | {goal} |",
                mib(*d),
                mib(*da),
                mib(*m),
                mib(*ma),
                mib(total)
            );
        }
    }
}

/// Starts a daemon in `dir` that finds the blobs per `source`, prepares every layer lazily,
/// measures, and stops it.
fn measure_daemon(
    rt: &tokio::runtime::Runtime,
    daemon_bin: &Path,
    dir: &Path,
    source: Source,
    registry: &str,
    blobs_root: &Path,
    built: &[Built],
) -> Vec<Row> {
    let socket = dir.join("estargz.sock");
    let config = dir.join("config.toml");
    let resolver = match source {
        // Nothing to configure: a loopback registry is spoken to over plain HTTP by default.
        Source::Registry => String::new(),
        Source::LocalDir => format!(
            "[resolver]\nlocal_dirs = [\"{}\"]\n",
            blobs_root.join("blobs").display()
        ),
    };
    std::fs::write(
        &config,
        format!(
            "address = \"{}\"\nroot = \"{}\"\nlog_level = \"warn\"\nnoprefetch = true\nno_background_fetch = true\nfuse_manager.address = \"{}\"\n{resolver}",
            socket.display(),
            dir.join("root").display(),
            dir.join("fm.sock").display(),
        ),
    )
    .expect("config");
    let child = Command::new(daemon_bin)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    let daemon = Daemon {
        child,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let dpid = daemon.child.id();
    let measure = |what: &str, rows: &mut Vec<Row>| {
        let d = rss_kib(dpid).unwrap_or((0, 0));
        let m = manager_pid(&config, dpid)
            .and_then(rss_kib)
            .unwrap_or((0, 0));
        rows.push((what.to_owned(), d, m));
    };
    let mut rows = Vec::new();
    measure("idle", &mut rows);

    let reference = match source {
        Source::Registry => format!("{registry}/bench/memory:v1"),
        Source::LocalDir => "local.invalid/bench/memory:v1".to_owned(),
    };
    let chains: Vec<String> = rt.block_on(async {
        let channel = estargz_snapshotter::client::connect_unix(&socket)
            .await
            .expect("connect");
        let mut c = SnapshotsClient::new(channel);
        let mut parent = String::new();
        let mut chains = Vec::new();
        for (blob, toc, diff_id) in built {
            let chain = if parent.is_empty() {
                diff_id.clone()
            } else {
                estargz::Digest::of(format!("{parent} {diff_id}").as_bytes()).to_string()
            };
            let labels: HashMap<String, String> = [
                ("containerd.io/snapshot.ref", chain.as_str()),
                (
                    "containerd.io/snapshot/remote/stargz.reference",
                    reference.as_str(),
                ),
                ("containerd.io/snapshot/remote/stargz.digest", blob.as_str()),
                ("containerd.io/snapshot/remote/stargz.layers", blob.as_str()),
                ("containerd.io/snapshot/stargz/toc.digest", toc.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let r = c
                .prepare(PrepareSnapshotRequest {
                    snapshotter: String::new(),
                    key: format!("extract-bench {chain}"),
                    parent: parent.clone(),
                    labels,
                })
                .await;
            match r {
                Err(s) if s.code() == tonic::Code::AlreadyExists => {}
                other => panic!("layer {blob} was not mounted lazily: {other:?}"),
            }
            chains.push(chain.clone());
            parent = chain;
        }
        chains
    });
    std::thread::sleep(Duration::from_millis(500));
    measure(&format!("{} layers mounted", built.len()), &mut rows);
    if let Ok(secs) = std::env::var("BENCH_HOLD_SECS") {
        eprintln!(
            "holding {secs} s: FUSE manager pid {:?}",
            manager_pid(&config, dpid)
        );
        std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(60)));
    }

    let mut walked = 0u64;
    for m in mounts_under(&dir.join("root")) {
        walk(&m, &mut walked);
    }
    measure(
        &format!("after stat of every entry ({walked} entries)"),
        &mut rows,
    );

    // Clean up: snapshots top first, then the daemon (its Drop unmounts what is left).
    rt.block_on(async {
        if let Ok(channel) = estargz_snapshotter::client::connect_unix(&socket).await {
            let mut c = SnapshotsClient::new(channel);
            for chain in chains.iter().rev() {
                let _ = c
                    .remove(RemoveSnapshotRequest {
                        snapshotter: String::new(),
                        key: chain.clone(),
                    })
                    .await;
            }
        }
    });
    drop(daemon);
    rows
}
