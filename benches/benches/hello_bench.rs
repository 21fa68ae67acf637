//! HelloBench-style pull / create / run times of a ~250 MB image through a shaped network:
//! a full pull with containerd's own `overlayfs` snapshotter against a lazy pull with this
//! project's daemon, without and with prefetch of the recorded workload.
//!
//! `cargo build --release -p estargz-snapshotter && cargo bench -p estargz-benches --bench hello_bench`
//! (as root, with /dev/fuse, and what `scripts/test.sh` installs: containerd, runc,
//! docker-registry, busybox-static, golang-go and the Go sources of the oracle; prints a note
//! and exits when something is missing). `BENCH_RUNS` (default 3) sets the runs, every
//! figure is the median; `BENCH_RTT_MS` (default 20) the delay added to each round trip;
//! `BENCH_MBIT` (default 100) the bandwidth of the link, shared by all connections.
//!
//! The image, a "golang" image from files of this machine, converted with `estargz convert`
//! (defaults) and pushed to a local `docker-registry` that containerd and the daemon reach
//! through the shaping proxy (`estargz_benches::shaping`):
//!
//! 1. busybox-static and its applet links;
//! 2. `/usr/lib/go-1.19` (the Go toolchain);
//! 3. `/usr/share/gocode/src` (Go library sources);
//! 4. `/usr/share/doc`.
//!
//! The workload (`sh -c ...`) hashes the Go compiler and linker and reads one document: a
//! few percent of the image. Its recorded form (the stargz record format, `--record-in`)
//! lists those files; the "prefetch" image is converted with it, so they sit before the
//! `.prefetch.landmark` of their layers and the daemon fetches them when it mounts the layer.
//!
//! For each mode and run, a fresh containerd and daemon (empty content store, snapshots and
//! chunk cache) then, as HelloBench splits it:
//!
//! - **pull**: `ctr images pull --snapshotter overlayfs` (download and unpack every layer),
//!   or `estargz image pull` (manifest, config, then every layer mounted lazily);
//! - **create**: `ctr containers create`;
//! - **run**: `ctr tasks start` until the workload exits (its output is checked).
//!
//! Also reported: the bytes of layer blobs the registry served during the run (its access
//! log). The daemon runs with its defaults (prefetch on, background fetch on: the background
//! fetch competes with the workload for the link, as it does for users).

#![allow(clippy::unwrap_used)] // the shared test helpers: a failed step is a failed run

#[path = "../../estargz-snapshotter/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Containerd, Daemon, Env, Layer, Registry};
use estargz_testkit::prereq::which;

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The layers: a name and what goes in it (directories under `/`, with their parents).
const LAYERS: &[(&str, &str)] = &[
    ("go", "usr/lib/go-1.19"),
    ("gocode", "usr/share/gocode/src"),
    ("doc", "usr/share/doc"),
];

const COMPILE: &str = "usr/lib/go-1.19/pkg/tool/linux_amd64/compile";
const LINK: &str = "usr/lib/go-1.19/pkg/tool/linux_amd64/link";
const DOC: &str = "usr/share/doc/containerd/copyright";

fn workload() -> String {
    format!("sha256sum /{COMPILE} /{LINK} && wc -c < /{DOC}")
}

fn expected_output() -> String {
    let hash = |p: &str| common::sha256(&std::fs::read(Path::new("/").join(p)).unwrap());
    format!(
        "{}  /{COMPILE}\n{}  /{LINK}\n{}\n",
        &hash(COMPILE)[7..],
        &hash(LINK)[7..],
        std::fs::metadata(Path::new("/").join(DOC)).unwrap().len()
    )
}

fn data_dir() -> PathBuf {
    let d = estargz_testkit::target_dir().join("bench-data/hello");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `tar` of `path` (relative to `/`) with its parent directories, cached.
fn layer_tar(name: &str, path: &str) -> PathBuf {
    let out = data_dir().join(format!("{name}.tar"));
    if out.exists() {
        return out;
    }
    let tmp = out.with_extension("tmp");
    let parts: Vec<&str> = path.split('/').collect();
    let parents: Vec<String> = (1..parts.len()).map(|i| parts[..i].join("/")).collect();
    let st = Command::new("tar")
        .args(["--sort=name", "-C", "/", "-cf"])
        .arg(&tmp)
        .arg("--no-recursion")
        .args(&parents)
        .arg("--recursion")
        .arg(path)
        .status()
        .unwrap();
    // Exit 1: some file changed while read; fine for a benchmark input.
    assert!(st.code().is_some_and(|c| c <= 1), "tar of /{path}: {st}");
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Converts `tar` with `estargz convert` (and `extra` flags) into a layer.
fn convert(estargz: &Path, tar: &Path, extra: &[&str], tag: &str) -> Layer {
    let out = tar.with_extension(format!("{tag}.esgz"));
    let o = Command::new(estargz)
        .arg("convert")
        .args(extra)
        .arg("--json")
        .arg(tar)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "estargz convert {}: {}",
        tar.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let annotations: BTreeMap<String, String> = j["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    Layer {
        blob: std::fs::read(&out).unwrap(),
        diff_id: j["diffId"].as_str().unwrap().to_owned(),
        annotations,
        urls: Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Full,
    Lazy,
    LazyPrefetch,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Full => "full pull (containerd overlayfs)",
            Mode::Lazy => "lazy pull (estargz-snapshotter)",
            Mode::LazyPrefetch => "lazy pull + prefetch of the recorded workload",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Times {
    pull: f64,
    create: f64,
    run: f64,
    served: u64,
}

fn served_total(reg: &Registry, dir: &Path, blobs: &[String]) -> u64 {
    let served = reg.blob_bytes_served(dir);
    blobs.iter().filter_map(|d| served.get(d)).sum()
}

#[allow(clippy::too_many_arguments)]
fn run_once(
    mode: Mode,
    reference: &str,
    reg: &Registry,
    reg_dir: &Path,
    blobs: &[String],
    expected: &str,
    n: usize,
) -> Times {
    let dir = tempfile::Builder::new()
        .prefix("estargz-hello-")
        .tempdir_in("/tmp")
        .unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let ctd = Containerd::start(dir.path(), &daemon.socket);
    let env = Env {
        containerd: Some(ctd),
        daemon: Some(daemon),
        registry: None,
        dir,
    };
    let before = served_total(reg, reg_dir, blobs);
    let snapshotter = if mode == Mode::Full {
        "overlayfs"
    } else {
        "estargz"
    };

    let t0 = Instant::now();
    if mode == Mode::Full {
        env.ctd().ctr_ok(&[
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "overlayfs",
            reference,
        ]);
    } else {
        let report = common::image_pull(&env.ctd().address, reference);
        for l in report["layers"].as_array().unwrap() {
            assert_eq!(
                l["remote"], true,
                "a layer was not mounted lazily: {report}"
            );
        }
    }
    let pull = t0.elapsed().as_secs_f64();

    let id = format!("hello-{n}");
    let t1 = Instant::now();
    env.ctd().ctr_ok(&[
        "containers",
        "create",
        "--snapshotter",
        snapshotter,
        reference,
        &id,
        "--",
        "sh",
        "-c",
        &workload(),
    ]);
    let create = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let out = env.ctd().ctr_ok(&["tasks", "start", &id]);
    let run = t2.elapsed().as_secs_f64();
    assert_eq!(out, expected, "{}: the workload's output", mode.label());
    let served = served_total(reg, reg_dir, blobs) - before;
    drop(env);
    Times {
        pull,
        create,
        run,
        served,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !estargz_testkit::prereq::is_root() {
        println!("hello_bench: needs root (containerd, FUSE mounts); skipped");
        return;
    }
    let mut missing: Vec<String> = common::CONTAINERD_PREREQS
        .iter()
        .map(|(c, _)| *c)
        .chain(["tar"])
        .filter(|c| which(c).is_none())
        .map(|c| format!("the `{c}` command"))
        .collect();
    for p in ["dev/fuse", COMPILE, LINK, DOC]
        .into_iter()
        .chain(LAYERS.iter().map(|l| l.1))
    {
        if !Path::new("/").join(p).exists() {
            missing.push(format!("/{p}"));
        }
    }
    let release = estargz_testkit::target_dir().join("release");
    let estargz = release.join("estargz");
    for bin in [&estargz, &release.join("estargz-snapshotter")] {
        if !bin.is_file() {
            missing.push(format!(
                "{} (cargo build --release -p estargz-snapshotter)",
                bin.display()
            ));
        }
    }
    if !missing.is_empty() {
        println!(
            "hello_bench: missing {} (scripts/test.sh installs them); skipped",
            missing.join(", ")
        );
        return;
    }
    let runs = env_num("BENCH_RUNS", 3.0).max(1.0) as usize;
    let rtt = Duration::from_secs_f64(env_num("BENCH_RTT_MS", 20.0) / 1000.0);
    let mbit = env_num("BENCH_MBIT", 100.0);

    // The image, twice: plain and with the recorded workload prioritised.
    let data = data_dir();
    let busybox_tar = data.join("busybox.tar");
    std::fs::write(&busybox_tar, common::busybox_layer()).unwrap();
    let mut tars = vec![busybox_tar];
    tars.extend(LAYERS.iter().map(|(name, path)| layer_tar(name, path)));
    let record = data.join("record.json");
    let record_lines: String = ["bin/busybox", COMPILE, LINK, DOC]
        .iter()
        .map(|p| format!("{{\"path\":\"{p}\"}}\n"))
        .collect();
    std::fs::write(&record, record_lines).unwrap();
    let record_arg = record.to_string_lossy().into_owned();
    let plain: Vec<Layer> = tars
        .iter()
        .map(|t| convert(&estargz, t, &[], "plain"))
        .collect();
    let prefetch: Vec<Layer> = tars
        .iter()
        .map(|t| {
            convert(
                &estargz,
                t,
                &["--record-in", &record_arg, "--allow-missing-prioritized"],
                "prefetch",
            )
        })
        .collect();
    let tar_size: u64 = tars
        .iter()
        .map(|t| std::fs::metadata(t).unwrap().len())
        .sum();
    let image_size: u64 = plain.iter().map(|l| l.blob.len() as u64).sum();

    let reg_dir = tempfile::Builder::new()
        .prefix("estargz-hello-reg-")
        .tempdir_in("/tmp")
        .unwrap();
    let reg = Registry::start(reg_dir.path());
    let img_plain = common::image(&plain);
    let img_prefetch = common::image(&prefetch);
    reg.push("hello/golang", "esgz", &img_plain);
    reg.push("hello/golang", "esgz-prefetch", &img_prefetch);
    let blobs: Vec<String> = img_plain
        .layers
        .iter()
        .chain(&img_prefetch.layers)
        .cloned()
        .collect();
    drop((plain, prefetch));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy = rt.block_on(estargz_benches::shaping::start_proxy(
        reg.addr.parse().unwrap(),
        rtt,
        mbit * 1e6 / 8.0,
    ));
    let expected = expected_output();
    let modes = [Mode::Full, Mode::Lazy, Mode::LazyPrefetch];
    let mut results: Vec<Vec<Times>> = vec![Vec::new(); modes.len()];
    let mut n = 0;
    for _ in 0..runs {
        for (i, mode) in modes.iter().enumerate() {
            let tag = if *mode == Mode::LazyPrefetch {
                "esgz-prefetch"
            } else {
                "esgz"
            };
            let reference = format!("{proxy}/hello/golang:{tag}");
            n += 1;
            let t = run_once(
                *mode,
                &reference,
                &reg,
                reg_dir.path(),
                &blobs,
                &expected,
                n,
            );
            eprintln!(
                "{}: pull {:.2} s, create {:.2} s, run {:.2} s, {:.1} MB served",
                mode.label(),
                t.pull,
                t.create,
                t.run,
                t.served as f64 / 1e6
            );
            results[i].push(t);
        }
    }

    println!(
        "\n### HelloBench split, image {:.1} MB ({:.1} MB uncompressed, 4 layers), link {} Mbit/s + {} ms per round trip, median of {runs}\n",
        image_size as f64 / 1e6,
        tar_size as f64 / 1e6,
        mbit,
        rtt.as_millis()
    );
    println!("| mode | pull | create | run | total | layer bytes served | of the image |");
    println!("|---|---|---|---|---|---|---|");
    let mut totals = Vec::new();
    for (mode, ts) in modes.iter().zip(&results) {
        let pull = median(ts.iter().map(|t| t.pull).collect());
        let create = median(ts.iter().map(|t| t.create).collect());
        let run = median(ts.iter().map(|t| t.run).collect());
        let total = median(ts.iter().map(|t| t.pull + t.create + t.run).collect());
        let served = median(ts.iter().map(|t| t.served as f64).collect());
        totals.push(total);
        println!(
            "| {} | {pull:.2} s | {create:.2} s | {run:.2} s | {total:.2} s | {:.1} MB | {:.1} % |",
            mode.label(),
            served / 1e6,
            served / image_size as f64 * 100.0
        );
    }
    println!(
        "\n### Goal (issue 6): lazy pull + create + run at least 5x faster than the full pull\n"
    );
    for (mode, total) in modes.iter().zip(&totals).skip(1) {
        let ratio = totals[0] / total;
        println!(
            "- {}: {ratio:.1}x ({})",
            mode.label(),
            if ratio >= 5.0 { "met" } else { "NOT met" }
        );
    }
    drop(reg);
    common::unmount_under(reg_dir.path());
}
