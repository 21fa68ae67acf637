//! Building a layer: the `estargz convert` binary (default settings: gzip level 7, 4 MiB
//! chunks, all cores; and again with `--level 9`) against `gzip -9`, `pigz -p $(nproc) -9`
//! and the Go reference `esgz-oracle build` (its defaults: level 9), each run as a child
//! process on the same input. Runs are interleaved (run 1 of every tool, then run 2, ...) so
//! a burst of load on a shared machine does not fall on one tool only.
//!
//! `cargo build --release -p estargz-snapshotter && cargo bench -p estargz-benches --bench build`
//! (`BENCH_RUNS`, default 3, sets the number of runs; every figure is the median).
//!
//! Inputs, cached under `target/bench-data/build/`:
//!
//! - (a) **doc**: `tar --sort=name -C /usr/share -cf doc.tar doc`: thousands of small text
//!   files, symlinks and directories;
//! - (b) **large executables**: the large Go binaries `scripts/test.sh` installs (containerd,
//!   ctr, containerd-shim-runc-v2, docker-registry, skopeo, runc; ~129 MB): a few large files
//!   as real images carry them; those missing are left out, and without any the row is
//!   skipped;
//! - (c) **mixed-300M**: `tar --sort=name -C /usr/share/gocode/src -cf - github.com` (Go
//!   sources as Debian packages them, about 320 MB, what `scripts/test.sh` installs for the
//!   oracle); without it, a deterministic 300 MB mix of small files and large files;
//! - (d) **synthetic large files**: four files of 32 MiB of generated content (runs of
//!   word-salad text from a 60-word vocabulary, random bytes and repeated patterns;
//!   `estargz_testkit::synth::MixedContent`). The worst case for libdeflate against zlib: its
//!   shorter match search loses on text made of a few words in random order, so at the same
//!   output size it gains far less than on real files. Kept to show it.
//!
//! For each tool: MB/s of uncompressed input (input size / wall time), output size, and peak
//! RSS (`/usr/bin/time -f %M`, the maximum resident set of the child). A missing tool is noted
//! and its row skipped. The last table checks the goal of issue 3 on each input: at least 6×
//! the Go tool's MB/s, output no larger than the Go tool's, faster than pigz at the same
//! level, and peak memory no higher than the Go tool's.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use estargz_testkit::prereq::which;
use estargz_testkit::synth::{self, MixedContent};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data_dir() -> PathBuf {
    let dir = estargz_testkit::target_dir()
        .join("bench-data")
        .join("build");
    std::fs::create_dir_all(&dir).expect("bench data dir");
    dir
}

/// Writes `path` once with `f` (through a temporary name, so a half-written file is never
/// taken for a finished one).
fn cached(path: &Path, f: impl FnOnce(&Path) -> io::Result<()>) -> PathBuf {
    if !path.exists() {
        let tmp = path.with_extension("tmp");
        f(&tmp).unwrap_or_else(|e| panic!("generating {}: {e}", path.display()));
        std::fs::rename(&tmp, path).expect("rename");
    }
    path.to_path_buf()
}

fn gnu_tar(dir: &str, member: &str, out: &Path) -> io::Result<()> {
    let st = Command::new("tar")
        .args(["--sort=name", "-C", dir, "-cf"])
        .arg(out)
        .arg(member)
        .stderr(Stdio::null())
        .status()?;
    // Exit 1 is "some files changed while reading", fine for a benchmark input.
    if st.code().is_some_and(|c| c <= 1) {
        Ok(())
    } else {
        Err(io::Error::other(format!("tar of {dir}/{member}: {st}")))
    }
}

fn add_file(b: &mut tar::Builder<impl Write>, name: &str, size: u64, seed: u64) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(synth::MTIME);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, MixedContent::new(size, seed))
}

fn large_files(out: &Path) -> io::Result<()> {
    let mut b = tar::Builder::new(BufWriter::new(File::create(out)?));
    for i in 0..4u64 {
        add_file(&mut b, &format!("large/file{i}.bin"), 32 << 20, 100 + i)?;
    }
    b.into_inner()?.flush()
}

/// 300 MB: 20 000 small files (0-16 KiB) and files of 1-24 MiB, interleaved.
fn synthetic_mix(out: &Path) -> io::Result<()> {
    let mut b = tar::Builder::new(BufWriter::new(File::create(out)?));
    let mut rng = synth::SplitMix64::new(300);
    let mut total = 0u64;
    let mut i = 0u64;
    while total < 300_000_000 {
        let size = if i % 1000 == 999 {
            (1 << 20) + rng.below(23 << 20)
        } else {
            rng.below(16 << 10)
        };
        add_file(&mut b, &format!("mix/d{:03}/f{i:06}", i / 200), size, i)?;
        total += size + 512;
        i += 1;
    }
    b.into_inner()?.flush()
}

fn inputs() -> Vec<(&'static str, PathBuf)> {
    let dir = data_dir();
    let mut v = Vec::new();
    if Path::new("/usr/share/doc").is_dir() {
        v.push((
            "(a) /usr/share/doc",
            cached(&dir.join("doc.tar"), |p| gnu_tar("/usr/share", "doc", p)),
        ));
    } else {
        println!("note: /usr/share/doc is missing: input (a) skipped");
    }
    let executables: Vec<&str> = LARGE_EXECUTABLES
        .iter()
        .copied()
        .filter(|p| Path::new("/").join(p).is_file())
        .collect();
    if executables.is_empty() {
        println!("note: none of {LARGE_EXECUTABLES:?} is installed: input (b) skipped");
    } else {
        let name = format!("executables-{}.tar", executables.len());
        v.push((
            "(b) large executables",
            cached(&dir.join(name), |p| {
                let st = Command::new("tar")
                    .args(["--sort=name", "-ch", "-C", "/", "-f"])
                    .arg(p)
                    .args(&executables)
                    .status()?;
                if st.success() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!("tar of {executables:?}: {st}")))
                }
            }),
        ));
    }
    if Path::new("/usr/share/gocode/src/github.com").is_dir() {
        v.push((
            "(c) Go sources (mixed)",
            cached(&dir.join("gocode.tar"), |p| {
                gnu_tar("/usr/share/gocode/src", "github.com", p)
            }),
        ));
    } else {
        v.push((
            "(c) synthetic mix",
            cached(&dir.join("mix-300m.tar"), synthetic_mix),
        ));
    }
    v.push((
        "(d) 4 x 32 MiB synthetic",
        cached(&dir.join("large-files.tar"), large_files),
    ));
    v
}

/// Input (b): large Go executables, paths under `/`.
const LARGE_EXECUTABLES: &[&str] = &[
    "usr/bin/containerd",
    "usr/bin/containerd-shim-runc-v2",
    "usr/bin/ctr",
    "usr/bin/docker-registry",
    "usr/bin/skopeo",
    "usr/sbin/runc",
];

/// One run of a tool: wall time and peak RSS (KiB, when `/usr/bin/time` is there).
struct Run {
    wall: Duration,
    rss_kib: Option<u64>,
}

/// A way to run a tool on `input`, writing `output`.
struct Tool {
    name: String,
    program: PathBuf,
    /// Arguments; `{in}` and `{out}` are replaced. With `stdout_to_out` the tool's stdout is
    /// the output file.
    args: Vec<String>,
    stdout_to_out: bool,
}

impl Tool {
    fn run(&self, input: &Path, output: &Path, time: Option<&Path>) -> Run {
        let rss_file = data_dir().join("rss.txt");
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                a.replace("{in}", &input.to_string_lossy())
                    .replace("{out}", &output.to_string_lossy())
            })
            .collect();
        let mut cmd = match time {
            Some(time) => {
                let mut c = Command::new(time);
                c.args(["-f", "%M", "-o"]).arg(&rss_file).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&args).stdin(Stdio::null()).stderr(Stdio::piped());
        if self.stdout_to_out {
            cmd.stdout(File::create(output).expect("output file"));
        } else {
            cmd.stdout(Stdio::null());
        }
        let start = Instant::now();
        let out = cmd.output().expect("run tool");
        let wall = start.elapsed();
        assert!(
            out.status.success(),
            "{} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let rss_kib = time.and_then(|_| {
            std::fs::read_to_string(&rss_file)
                .ok()?
                .lines()
                .last()?
                .trim()
                .parse()
                .ok()
        });
        Run { wall, rss_kib }
    }
}

fn tools() -> Vec<Tool> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut v = Vec::new();
    let ours = estargz_testkit::target_dir().join("release/estargz");
    if ours.is_file() {
        warn_if_stale(&ours);
        v.push(Tool {
            name: "estargz convert".into(),
            program: ours.clone(),
            args: vec!["convert".into(), "{in}".into(), "{out}".into()],
            stdout_to_out: false,
        });
        v.push(Tool {
            name: "estargz convert --level 9".into(),
            program: ours,
            args: vec![
                "convert".into(),
                "--level".into(),
                "9".into(),
                "{in}".into(),
                "{out}".into(),
            ],
            stdout_to_out: false,
        });
    } else {
        println!(
            "note: {} is missing (cargo build --release -p estargz-snapshotter): row skipped",
            ours.display()
        );
    }
    match estargz_testkit::oracle() {
        Some(oracle) => v.push(Tool {
            name: "esgz-oracle build (Go)".into(),
            program: oracle,
            args: vec!["build".into(), "{in}".into(), "{out}".into()],
            stdout_to_out: false,
        }),
        None => println!(
            "note: esgz-oracle is missing (sh tools/esgz-oracle/build.sh target/tools): row skipped"
        ),
    }
    for (name, program, args) in [
        (
            "gzip -9",
            "gzip",
            vec!["-9".to_string(), "-c".into(), "{in}".into()],
        ),
        (
            "pigz -9",
            "pigz",
            vec![
                "-p".into(),
                cores.to_string(),
                "-9".into(),
                "-c".into(),
                "{in}".into(),
            ],
        ),
    ] {
        match which(program) {
            Some(p) => v.push(Tool {
                name: if program == "pigz" {
                    format!("pigz -p {cores} -9")
                } else {
                    name.to_string()
                },
                program: p,
                args,
                stdout_to_out: true,
            }),
            None => println!("note: `{program}` is not installed: row skipped"),
        }
    }
    v
}

/// Warns when the release binary is older than the builder's sources.
fn warn_if_stale(bin: &Path) {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let src = estargz_testkit::workspace_dir().join("estargz/src/build");
    let newer = std::fs::read_dir(&src)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built)
        });
    if newer {
        println!(
            "warning: {} is older than {}: rebuild it (cargo build --release -p estargz-snapshotter)",
            bin.display(),
            src.display()
        );
    }
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

struct Row {
    tool: String,
    mb_s: f64,
    wall: Duration,
    out_size: u64,
    rss_mib: Option<f64>,
}

fn main() {
    let runs = env_usize("BENCH_RUNS", 3).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let time = which("/usr/bin/time");
    if time.is_none() {
        println!("note: /usr/bin/time is missing (apt-get install time): no peak RSS column");
    }
    let tools = tools();
    let inputs = inputs();
    let out = data_dir().join("out.bin");
    let mut goals = Vec::new();
    for (label, input) in &inputs {
        let size = std::fs::metadata(input).expect("input").len();
        // Warm the page cache so the first tool is not charged for the disk.
        let _ = io::copy(&mut File::open(input).expect("input"), &mut io::sink());
        let mut walls = vec![Vec::new(); tools.len()];
        let mut rss = vec![Vec::new(); tools.len()];
        let mut sizes = vec![0u64; tools.len()];
        for _ in 0..runs {
            for (i, tool) in tools.iter().enumerate() {
                let r = tool.run(input, &out, time.as_deref());
                walls[i].push(r.wall);
                rss[i].extend(r.rss_kib);
                sizes[i] = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            }
        }
        let mut rows = Vec::new();
        for (((tool, walls), rss), out_size) in tools.iter().zip(walls).zip(rss).zip(sizes) {
            let wall = median(walls);
            rows.push(Row {
                tool: tool.name.clone(),
                mb_s: size as f64 / 1e6 / wall.as_secs_f64(),
                wall,
                out_size,
                rss_mib: (!rss.is_empty()).then(|| median(rss) as f64 / 1024.0),
            });
        }
        let _ = std::fs::remove_file(&out);
        println!(
            "\n### {label}: {:.1} MB uncompressed tar, {cores} cores, median of {runs}\n",
            size as f64 / 1e6
        );
        println!("| tool | MB/s | time | output | output / input | peak RSS |");
        println!("|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.1} | {:.2} s | {:.2} MB | {:.2} % | {} |",
                r.tool,
                r.mb_s,
                r.wall.as_secs_f64(),
                r.out_size as f64 / 1e6,
                r.out_size as f64 / size as f64 * 100.0,
                r.rss_mib
                    .map_or("n/a".to_string(), |m| format!("{m:.1} MiB"))
            );
        }
        goals.push((label, rows));
    }

    println!("\n### Goals (issue 3), estargz convert vs the others\n");
    println!("| input | speed vs Go (goal >= 6x) | size vs Go (goal <= 100 %) | speed vs pigz -9 (goal > 1x) | RSS vs Go (goal <= 100 %) |");
    println!("|---|---|---|---|---|");
    for (label, rows) in &goals {
        let find = |prefix: &str| rows.iter().find(|r| r.tool.starts_with(prefix));
        let (Some(ours), Some(go)) = (find("estargz"), find("esgz-oracle")) else {
            println!("| {label} | n/a | n/a | n/a | n/a |");
            continue;
        };
        let mark = |ok: bool| if ok { "met" } else { "NOT met" };
        let speed = ours.mb_s / go.mb_s;
        let size = ours.out_size as f64 / go.out_size as f64;
        let pigz = find("pigz").map(|p| ours.mb_s / p.mb_s);
        let rss = ours.rss_mib.zip(go.rss_mib).map(|(a, b)| a / b);
        println!(
            "| {label} | {speed:.2}x ({}) | {:.2} % ({}) | {} | {} |",
            mark(speed >= 6.0),
            size * 100.0,
            mark(size <= 1.0),
            pigz.map_or("n/a".into(), |p| format!("{p:.2}x ({})", mark(p > 1.0))),
            rss.map_or("n/a".into(), |r| format!(
                "{:.0} % ({})",
                r * 100.0,
                mark(r <= 1.0)
            )),
        );
    }
}
