//! Real components for the snapshotter's end-to-end tests: the daemon, containerd (Debian's
//! 1.6, with a proxy-plugin config), a registry (Debian's `docker-registry`), each on free
//! loopback ports and in a unique temporary directory; a small busybox image built here
//! (the Rust port of shared/env/make_oci.py) and pushed over the registry's HTTP API.
//!
//! Everything started is stopped by `Drop` guards (processes by their own pid, mounts under
//! the test's directory, `/run/containerd` only when no other containerd runs).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// A free TCP port on 127.0.0.1 (bound then released).
/// A name no other test process or run uses (containers, snapshots).
pub fn unique(name: &str) -> String {
    format!("{name}-{}-{}", std::process::id(), free_port())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL now (a crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    v.sort();
    v.reverse();
    v
}

pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let ok = Command::new("umount")
            .arg(&m)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// A `docker-registry` on a free port.
#[derive(Debug)]
pub struct Registry {
    pub addr: String,
    pub proc: Proc,
}

impl Registry {
    pub fn start(dir: &Path) -> Registry {
        let port = free_port();
        let data = dir.join("reg-data");
        std::fs::create_dir_all(&data).unwrap();
        let cfg = dir.join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: test-only\nvalidation:\n  manifests:\n    urls:\n      allow:\n        - ^file://\n",
                data.display()
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            "docker-registry",
            Command::new("docker-registry").arg("serve").arg(&cfg),
            &dir.join("registry.log"),
        );
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_for(Duration::from_secs(10), || http(
                &addr,
                "GET",
                "/v2/",
                &[],
                &[]
            )
            .is_ok_and(|r| r.0 == 200)),
            "registry did not start: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        Registry { addr, proc }
    }

    /// Pushes an image: blobs then the manifest under `repo:tag`.
    pub fn push(&self, repo: &str, tag: &str, image: &Image) {
        for (digest, data) in &image.blobs {
            let (code, headers, _) = http(
                &self.addr,
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                &[],
            )
            .unwrap();
            assert_eq!(code, 202, "start upload");
            let loc = headers.get("location").expect("Location").clone();
            let path = loc
                .strip_prefix(&format!("http://{}", self.addr))
                .unwrap_or(&loc)
                .to_owned();
            let sep = if path.contains('?') { '&' } else { '?' };
            let (code, _, body) = http(
                &self.addr,
                "PUT",
                &format!("{path}{sep}digest={digest}"),
                &[("Content-Type", "application/octet-stream")],
                data,
            )
            .unwrap();
            assert_eq!(
                code,
                201,
                "put blob {digest}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let (code, _, body) = http(
            &self.addr,
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &image.manifest,
        )
        .unwrap();
        assert_eq!(
            code,
            201,
            "put manifest: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Bytes of blob GETs the registry answered so far (its access log), per digest.
    pub fn blob_bytes_served(&self, dir: &Path) -> BTreeMap<String, u64> {
        let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in log.lines() {
            // combined log format: "GET /v2/r/blobs/sha256:... HTTP/1.1" 206 12345
            let Some(i) = line.find("\"GET /v2/") else {
                continue;
            };
            let rest = &line[i + 1..];
            let mut parts = rest.split('"');
            let req = parts.next().unwrap_or("");
            let after = parts.next().unwrap_or("");
            let Some(path) = req.split_whitespace().nth(1) else {
                continue;
            };
            let Some(pos) = path.find("/blobs/") else {
                continue;
            };
            let digest = path[pos + 7..].to_owned();
            let bytes: u64 = after
                .split_whitespace()
                .nth(1)
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            *out.entry(digest).or_default() += bytes;
        }
        out
    }
}

/// A minimal HTTP/1.1 client (one request per connection): status, headers (lowercase), body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, BTreeMap<String, String>, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let mut lines = head.lines();
    let code = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((code, hs, resp[end + 4..].to_vec()))
}

/// An OCI image in memory: blobs by digest, the manifest bytes and digest.
#[derive(Debug, Clone)]
pub struct Image {
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub layers: Vec<String>,
}

/// One tar entry of a layer.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, Vec<u8>, u32),
    Symlink(&'a str, &'a str),
}

pub fn tar_layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, data.as_slice()).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The busybox layer (needs /bin/busybox, Debian busybox-static).
pub fn busybox_layer() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut entries = vec![Entry::Dir("bin/"), Entry::File("bin/busybox", bb, 0o755)];
    for app in [
        "sh",
        "echo",
        "cat",
        "ls",
        "sleep",
        "true",
        "id",
        "mount",
        "ps",
        "wc",
        "sha256sum",
        "head",
        "stat",
        "touch",
        "rm",
    ] {
        entries.push(Entry::Symlink(
            Box::leak(format!("bin/{app}").into_boxed_str()),
            "busybox",
        ));
    }
    for d in ["etc/", "proc/", "sys/", "dev/", "tmp/", "root/"] {
        entries.push(Entry::Dir(d));
    }
    tar_layer(&entries)
}

/// A layer of an image: its blob, DiffID, and descriptor extras.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub annotations: BTreeMap<String, String>,
    pub urls: Vec<String>,
}

impl Layer {
    /// A plain gzip layer.
    pub fn gzip(tar: &[u8]) -> Layer {
        Layer {
            blob: gzip(tar),
            diff_id: sha256(tar),
            ..Layer::default()
        }
    }

    /// An eStargz layer built by the Go reference implementation (`esgz-oracle build`), with
    /// the TOC digest annotation.
    pub fn estargz(oracle: &Path, tar: &[u8], dir: &Path) -> Layer {
        let input = dir.join(format!("in-{}.tar", free_port()));
        let out = input.with_extension("esgz");
        std::fs::write(&input, tar).unwrap();
        let o = Command::new(oracle)
            .arg("build")
            .arg(&input)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "esgz-oracle build: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "containerd.io/snapshot/stargz/toc.digest".to_owned(),
            j["tocDigest"].as_str().unwrap().to_owned(),
        );
        Layer {
            blob: std::fs::read(&out).unwrap(),
            diff_id: j["diffID"].as_str().unwrap().to_owned(),
            annotations,
            urls: Vec::new(),
        }
    }
}

/// An image from uncompressed layer tars, gzip-compressed.
pub fn image_from_layers(
    tars: &[Vec<u8>],
    compress: impl Fn(&[u8]) -> (Vec<u8>, BTreeMap<String, String>),
) -> Image {
    let layers = tars
        .iter()
        .map(|t| {
            let (blob, annotations) = compress(t);
            Layer {
                blob,
                diff_id: sha256(t),
                annotations,
                urls: Vec::new(),
            }
        })
        .collect::<Vec<_>>();
    image(&layers)
}

/// An image of these layers.
pub fn image(ls: &[Layer]) -> Image {
    let mut blobs = BTreeMap::new();
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in ls {
        let d = sha256(&l.blob);
        diff_ids.push(l.diff_id.clone());
        let mut desc = serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d, "size": l.blob.len(),
        });
        if !l.annotations.is_empty() {
            desc["annotations"] = serde_json::json!(l.annotations);
        }
        if !l.urls.is_empty() {
            desc["urls"] = serde_json::json!(l.urls);
        }
        descs.push(desc);
        layers.push(d.clone());
        blobs.insert(d, l.blob.clone());
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let cfg = serde_json::to_vec(&config).unwrap();
    let cfg_digest = sha256(&cfg);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg.len()},
        "layers": descs,
    });
    blobs.insert(cfg_digest, cfg);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    Image {
        manifest_digest: sha256(&manifest),
        manifest,
        blobs,
        layers,
    }
}

/// The small test image: busybox, then `etc/hello.txt` and a 256 KiB `data/big.bin`.
pub fn busybox_image() -> Image {
    let l2 = tar_layer(&[
        Entry::Dir("etc/"),
        Entry::File("etc/hello.txt", b"hello from layer 2\n".to_vec(), 0o644),
        Entry::Dir("data/"),
        Entry::File(
            "data/big.bin",
            sha2::Sha256::digest(b"x").repeat(8192),
            0o644,
        ),
    ]);
    image_from_layers(&[busybox_layer(), l2], |t| (gzip(t), BTreeMap::new()))
}

/// The daemon binary: Cargo's for this crate's tests, else the release build (the
/// `estargz-benches` benchmarks include this module).
pub fn daemon_bin() -> PathBuf {
    option_env!("CARGO_BIN_EXE_estargz-snapshotter").map_or_else(
        || estargz_testkit::target_dir().join("release/estargz-snapshotter"),
        PathBuf::from,
    )
}

/// The `estargz` CLI: Cargo's for this crate's tests, else the release build.
pub fn estargz_bin() -> PathBuf {
    option_env!("CARGO_BIN_EXE_estargz").map_or_else(
        || estargz_testkit::target_dir().join("release/estargz"),
        PathBuf::from,
    )
}

/// `estargz image pull --plain-http --json` of `reference` into the containerd at `address`
/// with the `estargz` snapshotter; its JSON report.
pub fn image_pull(address: &Path, reference: &str) -> serde_json::Value {
    let o = Command::new("timeout")
        .arg("300")
        .arg(estargz_bin())
        .args(["image", "pull", "--plain-http", "--json", "--address"])
        .arg(address)
        .args(["--snapshotter", "estargz", reference])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "estargz image pull: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The daemon, with its own config under `dir`.
#[derive(Debug)]
pub struct Daemon {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub config: PathBuf,
    pub metrics: String,
    pub proc: Proc,
    log: PathBuf,
    starts: u32,
}

impl Daemon {
    pub fn start(dir: &Path, extra_config: &str) -> Daemon {
        let socket = dir.join("estargz.sock");
        let root = dir.join("estargz-root");
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = dir.join("estargz.toml");
        std::fs::write(
            &config,
            format!(
                "address = \"{}\"\nroot = \"{}\"\nmetrics_address = \"{metrics}\"\nlog_level = \"info,estargz_snapshotter=debug\"\nfuse_manager.address = \"{}\"\n{extra_config}\n",
                socket.display(),
                root.display(),
                dir.join("fm.sock").display(),
            ),
        )
        .unwrap();
        let mut d = Daemon {
            socket,
            root,
            config,
            metrics,
            proc: Proc {
                name: String::new(),
                child: None,
            },
            log: dir.join("daemon.log"),
            starts: 0,
        };
        d.restart();
        d
    }

    /// Starts the daemon (again) and waits for its socket.
    pub fn restart(&mut self) {
        self.proc.stop(Duration::from_secs(10));
        let _ = std::fs::remove_file(&self.socket);
        self.starts += 1;
        let log = self.log.with_extension(format!("{}.log", self.starts));
        self.proc = Proc::spawn(
            "estargz-snapshotter",
            Command::new(daemon_bin()).arg("--config").arg(&self.config),
            &log,
        );
        let sock = self.socket.clone();
        assert!(
            wait_for(Duration::from_secs(20), || {
                std::os::unix::net::UnixStream::connect(&sock).is_ok()
            }),
            "daemon did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.starts {
            s += &std::fs::read_to_string(self.log.with_extension(format!("{i}.log")))
                .unwrap_or_default();
        }
        s
    }

    /// The `/status` entry of the layer with blob `digest`.
    pub fn layer_status(&self, digest: &str) -> serde_json::Value {
        let status = self.status_json();
        status["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["digest"] == digest)
            .cloned()
            .unwrap_or_else(|| panic!("no status for {digest}: {status}"))
    }

    pub fn status_json(&self) -> serde_json::Value {
        let (code, _, body) = http(&self.metrics, "GET", "/status", &[], &[]).unwrap();
        assert_eq!(code, 200);
        serde_json::from_slice(&body).unwrap()
    }

    pub fn metrics_text(&self) -> String {
        let (_, _, body) = http(&self.metrics, "GET", "/metrics", &[], &[]).unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(10));
        // a FUSE manager the daemon started (own process group): stop it by its pid file
        let pid_file = self.socket.with_file_name("fm.sock.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let pid = pid.trim().to_owned();
            let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
            wait_for(Duration::from_secs(10), || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map_or(true, |s| s.contains(") Z "))
            });
        }
    }
}

/// The arguments of `ctr run --rm --snapshotter estargz REFERENCE ID CMD...`.
pub fn run_args<'a>(reference: &'a str, id: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--rm", "--snapshotter", "estargz", reference, id];
    args.extend_from_slice(cmd);
    args
}

/// containerd with a proxy plugin `estargz` pointing at `snapshotter_socket`.
#[derive(Debug)]
pub struct Containerd {
    pub address: PathBuf,
    pub dir: PathBuf,
    pub proc: Proc,
}

impl Containerd {
    pub fn start(dir: &Path, snapshotter_socket: &Path) -> Containerd {
        let d = dir.join("ctd");
        std::fs::create_dir_all(&d).unwrap();
        let address = d.join("containerd.sock");
        let cfg = d.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "debug"
[proxy_plugins]
  [proxy_plugins.estargz]
    type = "snapshot"
    address = "{sock}"
"#,
                d = d.display(),
                sock = snapshotter_socket.display()
            ),
        )
        .unwrap();
        let proc = Proc::spawn(
            "containerd",
            Command::new("containerd").arg("--config").arg(&cfg),
            &d.join("containerd.log"),
        );
        let c = Containerd {
            address,
            dir: d,
            proc,
        };
        assert!(
            wait_for(Duration::from_secs(20), || c
                .ctr(&["version"])
                .status
                .success()),
            "containerd did not start: {}",
            std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
        );
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("120")
            .arg("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// `ctr` that must succeed; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `ctr` retried while containerd's client to the proxy backs off after a restart.
    pub fn ctr_retry(&self, args: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.ctr(args);
            if o.status.success() {
                return String::from_utf8_lossy(&o.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "ctr {args:?} kept failing: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

/// The whole setup of one test, torn down in order on drop.
#[derive(Debug)]
pub struct Env {
    pub containerd: Option<Containerd>,
    pub daemon: Option<Daemon>,
    pub registry: Option<Registry>,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ctd(&self) -> &Containerd {
        self.containerd.as_ref().unwrap()
    }

    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().unwrap()
    }

    pub fn registry(&self) -> &Registry {
        self.registry.as_ref().unwrap()
    }

    /// Prints the logs of everything (for a failing test).
    pub fn dump_logs(&self) {
        if let Some(d) = &self.daemon {
            eprintln!("---- daemon log (tail)\n{}", tail(&d.logs(), 80));
        }
        if let Some(c) = &self.containerd {
            eprintln!("---- containerd log (tail)\n{}", tail(&c.log(), 40));
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Whether another containerd (or shim) than ours is alive (zombies do not count).
fn other_containerd_running() -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten().any(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // "pid (comm) S ..."
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            return false;
        };
        let comm = &stat[open + 1..close];
        let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
        pid != 0 && state != "Z" && (comm == "containerd" || comm.starts_with("containerd-shim"))
    })
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        if let Some(c) = &self.containerd {
            // containers and their shims first
            let ns = c.ctr(&["tasks", "ls", "-q"]);
            for id in String::from_utf8_lossy(&ns.stdout).lines() {
                let _ = c.ctr(&["tasks", "kill", "-s", "KILL", id]);
                let _ = c.ctr(&["tasks", "rm", "-f", id]);
            }
        }
        let ctd_pid = self.containerd.as_ref().map_or(0, |c| c.proc.pid());
        self.containerd = None;
        self.daemon = None;
        self.registry = None;
        unmount_under(self.dir.path());
        // containerd 1.6 always uses /run/containerd/{fifo,runc,s}: remove it unless another
        // containerd (another test's) still runs; shims may take a moment to exit.
        if ctd_pid != 0 && wait_for(Duration::from_secs(3), || !other_containerd_running()) {
            let _ = std::fs::remove_dir_all("/run/containerd");
        }
    }
}

/// The commands (and their Debian packages) of the tests that run containerd, a registry and
/// containers: pass it to [`prerequisites`].
pub const CONTAINERD_PREREQS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("docker-registry", "docker-registry"),
    ("busybox", "busybox-static"),
];

/// Root, the commands and `/dev/fuse`, per the testkit prerequisite rule.
pub fn prerequisites(commands: &[(&str, &str)]) -> bool {
    if !estargz_testkit::prereq::require_root("the snapshotter end-to-end tests run containerd") {
        return false;
    }
    commands
        .iter()
        .all(|(c, pkg)| estargz_testkit::prereq::require_command(c, pkg).is_some())
}

/// Starts a registry, the daemon and containerd in a fresh directory.
pub fn env(extra_daemon_config: &str) -> Env {
    env_with(|_| extra_daemon_config.to_owned())
}

/// [`env`] whose daemon also reads layers from a local blob directory (`[resolver]
/// local_dirs`): returns it and the directory where a blob goes as `<hex digest>`.
pub fn env_with_local_blobs() -> (Env, PathBuf) {
    let env = env_with(|dir| {
        format!(
            "[resolver]\nlocal_dirs = [\"{}\"]\n",
            dir.join("blobs").display()
        )
    });
    let blobs = env.dir().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    (env, blobs)
}

/// [`env`] with daemon config that depends on the test directory.
pub fn env_with(extra_daemon_config: impl FnOnce(&Path) -> String) -> Env {
    let dir = tempfile::Builder::new()
        .prefix("estargz-snap-")
        .tempdir_in("/tmp")
        .unwrap();
    let registry = Registry::start(dir.path());
    let daemon = Daemon::start(dir.path(), &extra_daemon_config(dir.path()));
    let containerd = Containerd::start(dir.path(), &daemon.socket);
    Env {
        containerd: Some(containerd),
        daemon: Some(daemon),
        registry: Some(registry),
        dir,
    }
}
