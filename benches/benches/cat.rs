//! Reading a whole file: verified reader throughput against plain decompression, and the
//! `estargz cat` binary against the Go reference `esgz-oracle cat`.
//!
//! `cargo bench -p estargz-benches --bench cat` (`BENCH_RUNS`, default 9, overrides the number
//! of runs; every figure is the median).
//!
//! One tar holding `big.bin`, 20 MiB of mixed content (`estargz_testkit::synth::one_big_file`:
//! text, random and repeated runs), is built once by the Go oracle into a gzip eStargz blob and
//! a zstd:chunked blob, both with the default 4 MiB chunks, cached under
//! `target/bench-data/cat/`. For each blob:
//!
//! - **reader**: `Reader::open_file("big.bin")` + `FileReader::for_each_chunk` into a sink, the
//!   reader opened once over the blob file (page cache) and once over the blob in memory;
//!   every chunk is read, decompressed and checked against its SHA-256 before it is handed out;
//! - **baseline**: the lower bound for the same work: the same compressed chunk bytes, already in
//!   memory, streamed through `flate2::read::MultiGzDecoder` (gzip) or the `zstd` decoder with a
//!   64 KiB buffer, and SHA-256 of the output (no allocation per chunk, no positioned reads);
//! - ratio reader / baseline (goal: at least 80 %);
//! - **end to end**: `target/release/estargz cat BLOB big.bin > /dev/null` against
//!   `esgz-oracle cat BLOB big.bin > /dev/null`, one process per run. The Go reader, as the
//!   oracle opens it, does not verify chunk digests; `estargz cat` does.

use std::hint::black_box;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use estargz::plan::Compression;
use estargz::{ReadAt, Reader};
use sha2::{Digest as _, Sha256};

const FILE: &str = "big.bin";
const SIZE: u64 = 20 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..runs).map(|_| f()).collect();
    t.sort();
    t[t.len() / 2]
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// Prints a Markdown table.
fn table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    println!("\n### {title}\n");
    println!("| {} |", header.join(" | "));
    println!(
        "|{}|",
        header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
    );
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}

/// The tar (once) and the blob built from it with `args` (once), under target/bench-data/cat.
fn blob(oracle: &Path, name: &str, args: &[&str]) -> PathBuf {
    let dir = estargz_testkit::target_dir().join("bench-data").join("cat");
    std::fs::create_dir_all(&dir).expect("bench data dir");
    let tar = dir.join("big-20m.tar");
    if !tar.exists() {
        let tmp = dir.join("big-20m.tar.tmp");
        let f = std::fs::File::create(&tmp).expect("create tar");
        estargz_testkit::synth::one_big_file_to(io::BufWriter::new(f), SIZE, 20)
            .expect("write tar");
        std::fs::rename(&tmp, &tar).expect("rename tar");
    }
    let blob = dir.join(format!("{name}.esgz"));
    if !blob.exists() {
        let tmp = dir.join(format!("{name}.esgz.tmp"));
        eprintln!("building {} with the Go oracle (once)", blob.display());
        let st = Command::new(oracle)
            .arg("build")
            .arg(&tar)
            .arg(&tmp)
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("run esgz-oracle");
        assert!(st.success(), "esgz-oracle build {name}");
        std::fs::rename(&tmp, &blob).expect("rename blob");
    }
    blob
}

/// `open_file` + `for_each_chunk` into a sink; returns the bytes seen.
fn read_with_reader<R: ReadAt>(r: &Reader<R>) -> u64 {
    let mut f = r.open_file(FILE).expect("open_file");
    let mut n = 0u64;
    f.for_each_chunk(0, |data| {
        n += black_box(data).len() as u64;
        Ok(())
    })
    .expect("for_each_chunk");
    n
}

/// Plain decompression of `members` (per chunk: its compressed range and its size) + SHA-256
/// of the output.
fn baseline(members: &[(Vec<u8>, u64)], compression: Compression) -> u64 {
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    for (m, size) in members {
        let mut h = Sha256::new();
        let dec: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&m[..])),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(&m[..]).expect("zstd"))
            }
        };
        let mut dec = dec.take(*size);
        loop {
            let k = dec.read(&mut buf).expect("decompress");
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        black_box(h.finalize());
    }
    n
}

/// Wall time of one process run with stdout to /dev/null.
fn run_process(program: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Duration {
    let null = std::fs::File::create("/dev/null").expect("/dev/null");
    let start = Instant::now();
    let st = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .stdout(Stdio::from(null))
        .status()
        .expect("run");
    let d = start.elapsed();
    assert!(st.success(), "{} failed", program.display());
    d
}

fn main() {
    let runs = env_usize("BENCH_RUNS", 9).max(1);
    let Some(oracle) = estargz_testkit::oracle() else {
        println!("skipped: build the Go oracle first (sh tools/esgz-oracle/build.sh target/tools)");
        return;
    };
    let cli = estargz_testkit::target_dir().join("release/estargz");
    let blobs = [
        ("gzip", blob(&oracle, "big-20m-gzip", &[])),
        (
            "zstd:chunked",
            blob(&oracle, "big-20m-zstd", &["--zstdchunked"]),
        ),
    ];

    let mut rows = Vec::new();
    let mut e2e = Vec::new();
    for (format, path) in &blobs {
        let file = std::fs::File::open(path).expect("open blob");
        let on_disk = Reader::open(file).expect("Reader::open");
        let bytes = std::fs::read(path).expect("read blob");
        let in_memory = Reader::open(bytes.clone()).expect("Reader::open");
        let node = on_disk.index().lookup(FILE).expect("big.bin");
        let chunks = on_disk.index().chunks(node);
        assert_eq!(on_disk.index().attr(node).size, SIZE);
        let compression = on_disk.location().compression();
        // Each chunk starts a member/frame here (no innerOffset): the baseline decompresses
        // exactly the ranges the reader fetches.
        assert!(chunks.iter().all(|c| c.inner_offset() == 0));
        let members: Vec<(Vec<u8>, u64)> = chunks
            .iter()
            .map(|c| {
                let range = c.blob_offset() as usize..c.blob_end() as usize;
                (bytes[range].to_vec(), c.size())
            })
            .collect();
        let compressed: u64 = members.iter().map(|m| m.0.len() as u64).sum();
        assert_eq!(baseline(&members, compression), SIZE);
        assert_eq!(read_with_reader(&on_disk), SIZE);

        let t_base = median(runs, || {
            let s = Instant::now();
            black_box(baseline(&members, compression));
            s.elapsed()
        });
        let t_disk = median(runs, || {
            let s = Instant::now();
            black_box(read_with_reader(&on_disk));
            s.elapsed()
        });
        let t_mem = median(runs, || {
            let s = Instant::now();
            black_box(read_with_reader(&in_memory));
            s.elapsed()
        });
        let base = mb_s(SIZE, t_base);
        for (what, t) in [
            ("baseline: decompress + sha256 (in memory)", t_base),
            ("reader over the blob file", t_disk),
            ("reader over the blob in memory", t_mem),
        ] {
            let speed = mb_s(SIZE, t);
            rows.push(vec![
                format!("{format}: {what}"),
                format!("{:.1} ms", t.as_secs_f64() * 1e3),
                format!("{speed:.0} MB/s"),
                format!("{:.0} %", speed / base * 100.0),
            ]);
        }
        println!(
            "{format}: {} chunks, {:.1} MiB compressed ({:.0} % of {})",
            chunks.len(),
            compressed as f64 / (1 << 20) as f64,
            compressed as f64 / SIZE as f64 * 100.0,
            SIZE >> 20
        );

        // End to end: one process per run.
        let proc_runs = runs.min(7);
        let go = median(proc_runs, || run_process(&oracle, &[&"cat", path, &FILE]));
        let rust = cli
            .is_file()
            .then(|| median(proc_runs, || run_process(&cli, &[&"cat", path, &FILE])));
        e2e.push((format, go, rust));
    }
    table(
        &format!(
            "Reading the {} MiB file `{FILE}` (4 MiB chunks), median of {runs}",
            SIZE >> 20
        ),
        &["what", "time", "throughput", "vs baseline (goal >= 80 %)"],
        &rows,
    );
    let mut rows = Vec::new();
    for (format, go, rust) in e2e {
        let mut row = vec![
            format.to_string(),
            format!(
                "{:.1} ms ({:.0} MB/s)",
                go.as_secs_f64() * 1e3,
                mb_s(SIZE, go)
            ),
        ];
        match rust {
            Some(r) => {
                row.push(format!(
                    "{:.1} ms ({:.0} MB/s)",
                    r.as_secs_f64() * 1e3,
                    mb_s(SIZE, r)
                ));
                row.push(format!("{:.2}x", go.as_secs_f64() / r.as_secs_f64()));
            }
            None => {
                row.push("(build: cargo build --release -p estargz-snapshotter)".into());
                row.push(String::new());
            }
        }
        rows.push(row);
    }
    table(
        "End to end: `cat BLOB big.bin > /dev/null`, one process per run, median",
        &[
            "format",
            "esgz-oracle cat (Go, no chunk verification)",
            "estargz cat (Rust, verified)",
            "speed-up Rust vs Go",
        ],
        &rows,
    );
}
