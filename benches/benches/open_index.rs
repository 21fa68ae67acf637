//! Opening a big layer: TOC parse and index build time and index memory, against the Go reader.
//!
//! `cargo bench -p estargz-benches --bench open_index` (`BENCH_ENTRIES`, default 100000, and
//! `BENCH_RUNS`, default 11, override the sizes).
//!
//! 1. A synthetic TOC of 100 000 entries shaped like a real layer (10 % directories up to four
//!    levels deep, 85 % one-chunk regular files with offsets and digests, 3 % symlinks, 2 %
//!    hardlinks, names of 8 to 30 characters), written with `Toc::to_json`: median time of
//!    `Toc::from_json` and `Index::new`, per entry; `Index::heap_size()` per entry; and the bytes
//!    really allocated and still held once the JSON and the `Toc` are dropped (a counting global
//!    allocator wraps the system one in this binary), plus the peak while parsing and indexing.
//! 2. A real blob of a 100 000-member tar (`estargz_testkit::synth::wide_tree`, built once by the
//!    Go oracle and cached under `target/bench-data/open_index/`): median `Reader::open` time
//!    and memory held by the reader, also with the chunk digests spilled to a file
//!    (`OpenOptions::digest_dir`), and the cost of `Index::chunk_digest` either way.
//! 3. End to end on the same blob, one process per run: `estargz info BLOB` against
//!    `esgz-oracle tocdigest BLOB` (both read the footer and the TOC, check it and build their
//!    index), median wall time and maximum RSS (`/usr/bin/time -v`), next to each program's RSS
//!    when it does nothing (`--version` / `version`).
//!
//! Goals (from the issue): index memory under 150 bytes per entry, parse + index under 1 µs per
//! entry.

// The counting allocator below implements `GlobalAlloc`, an unsafe trait, so this one bench
// file allows unsafe code (the package denies it everywhere else; see benches/Cargo.toml).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use estargz::{EntryType, Index, Reader, Toc, TocEntry};
use estargz_testkit::synth::SplitMix64;

/// The system allocator, counting the bytes currently allocated and the peak.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters never affect the pointers.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocated() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

/// Resets the peak to the current allocation and returns it.
fn reset_peak() -> usize {
    let now = allocated();
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let s = Instant::now();
    let v = f();
    (s.elapsed(), v)
}

fn median(mut t: Vec<Duration>) -> Duration {
    t.sort();
    t[t.len() / 2]
}

fn us_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
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

fn name(rng: &mut SplitMix64) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-.";
    let len = 8 + rng.below(23) as usize;
    let mut s: String = (0..len)
        .map(|_| CHARS[rng.below(CHARS.len() as u64 - 3) as usize] as char)
        .collect();
    // A few names with punctuation, never `.`/`..`.
    if rng.below(4) == 0 {
        s.insert(len / 2, CHARS[26 + 10 + rng.below(3) as usize] as char);
    }
    s
}

fn digest(rng: &mut SplitMix64) -> String {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    estargz::Digest(b).to_string()
}

const MODTIME: &str = "2024-03-01T12:00:00Z";

/// A TOC of `n` entries in tar order (each directory before its contents).
fn synthetic_toc(n: usize) -> Toc {
    let mut rng = SplitMix64::new(0x0b0e_5eed);
    let dirs = (n / 10).max(1);
    // Directory tree: each directory's parent is an earlier one less than four levels deep.
    let mut parent = vec![usize::MAX; dirs];
    let mut depth = vec![1u8; dirs];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); dirs];
    let mut top = Vec::new();
    for d in 0..dirs {
        let p = if d < 8 {
            None
        } else {
            Some(rng.below(d as u64) as usize)
        };
        match p {
            Some(p) if depth[p] < 4 => {
                parent[d] = p;
                depth[d] = depth[p] + 1;
                children[p].push(d);
            }
            _ => top.push(d),
        }
    }
    // Non-directory entries, spread over the directories.
    let mut leaves: Vec<Vec<u8>> = vec![Vec::new(); dirs]; // kinds: 0 file, 1 symlink, 2 hardlink
    for i in 0..n - dirs {
        let kind = match i % 100 {
            0..=2 => 1,
            3..=4 => 2,
            _ => 0,
        };
        leaves[rng.below(dirs as u64) as usize].push(kind);
    }
    let dir_names: Vec<String> = (0..dirs).map(|_| name(&mut rng)).collect();
    let mut entries = Vec::with_capacity(n);
    let mut offset: i64 = 4096;
    let mut last_file: Option<String> = None;
    // Depth-first, with an explicit stack of (directory, its path).
    let mut stack: Vec<(usize, String)> = top
        .iter()
        .rev()
        .map(|&d| (d, dir_names[d].clone()))
        .collect();
    while let Some((d, path)) = stack.pop() {
        entries.push(TocEntry {
            name: format!("{path}/"),
            entry_type: EntryType::Dir,
            modtime: MODTIME.into(),
            mode: 0o755,
            ..TocEntry::default()
        });
        for &kind in &leaves[d] {
            let p = format!("{path}/{}", name(&mut rng));
            let e = match (kind, &last_file) {
                (1, _) => TocEntry {
                    name: p,
                    entry_type: EntryType::Symlink,
                    modtime: MODTIME.into(),
                    mode: 0o777,
                    link_name: format!("../{}", name(&mut rng)),
                    ..TocEntry::default()
                },
                (2, Some(target)) => TocEntry {
                    name: p,
                    entry_type: EntryType::Hardlink,
                    modtime: MODTIME.into(),
                    mode: 0o644,
                    link_name: target.clone(),
                    ..TocEntry::default()
                },
                _ => {
                    let size = 1 + rng.below(64 << 10) as i64;
                    let d = digest(&mut rng);
                    let e = TocEntry {
                        name: p.clone(),
                        entry_type: EntryType::Reg,
                        size,
                        modtime: MODTIME.into(),
                        mode: 0o644,
                        offset,
                        digest: d.clone(),
                        chunk_digest: d,
                        ..TocEntry::default()
                    };
                    offset += 40 + size / 3;
                    last_file = Some(p);
                    e
                }
            };
            entries.push(e);
        }
        for &c in children[d].iter().rev() {
            stack.push((c, format!("{path}/{}", dir_names[c])));
        }
    }
    Toc {
        version: 1,
        entries,
        ..Toc::default()
    }
}

struct Measured {
    from_json: Duration,
    index_new: Duration,
    heap_size: usize,
    retained: usize,
    peak: usize,
    json_len: usize,
    nodes: usize,
}

fn measure_synthetic(n: usize, runs: usize) -> Measured {
    let toc = synthetic_toc(n);
    assert_eq!(toc.entries.len(), n);
    let json = toc.to_json();
    drop(toc);
    let mut t_json = Vec::new();
    let mut t_index = Vec::new();
    for _ in 0..runs {
        let (d, toc) = time(|| Toc::from_json(black_box(&json)).expect("parse"));
        t_json.push(d);
        let (d, index) = time(|| Index::new(black_box(&toc)).expect("index"));
        t_index.push(d);
        drop(black_box(index));
    }
    // Memory, in a fresh sequence: everything allocated from here on is the JSON, the Toc and
    // the Index; once the first two are dropped, what is left is the index.
    let json_len = json.len();
    drop(json);
    let before = reset_peak();
    let json = synthetic_toc(n).to_json();
    let after_json = allocated();
    let toc = Toc::from_json(&json).expect("parse");
    let index = Index::new(&toc).expect("index");
    let peak = PEAK.load(Ordering::Relaxed) - after_json;
    drop(toc);
    drop(json);
    let retained = allocated() - before;
    let heap_size = index.heap_size();
    let nodes = index.node_count();
    drop(index);
    Measured {
        from_json: median(t_json),
        index_new: median(t_index),
        heap_size,
        retained,
        peak,
        json_len,
        nodes,
    }
}

/// `target/bench-data/open_index/wide-N.esgz`, built once from `wide_tree(N)` by the oracle.
fn wide_blob(oracle: &Path, n: usize) -> PathBuf {
    let dir = estargz_testkit::target_dir()
        .join("bench-data")
        .join("open_index");
    std::fs::create_dir_all(&dir).expect("bench data dir");
    let blob = dir.join(format!("wide-{n}.esgz"));
    if !blob.exists() {
        let tar = dir.join(format!("wide-{n}.tar"));
        let f = std::fs::File::create(&tar).expect("create tar");
        estargz_testkit::synth::wide_tree_to(std::io::BufWriter::new(f), n).expect("write tar");
        let tmp = dir.join(format!("wide-{n}.esgz.tmp"));
        eprintln!("building {} with the Go oracle (once)", blob.display());
        let st = Command::new(oracle)
            .arg("build")
            .arg(&tar)
            .arg(&tmp)
            .stdout(Stdio::null())
            .status()
            .expect("run esgz-oracle");
        assert!(st.success(), "esgz-oracle build");
        std::fs::rename(&tmp, &blob).expect("rename");
        let _ = std::fs::remove_file(&tar);
    }
    blob
}

/// Wall time and max RSS (KiB) of one run of `cmd` under `/usr/bin/time -v`, stdout discarded.
fn run_process(cmd: &[&dyn AsRef<std::ffi::OsStr>]) -> (Duration, u64) {
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .args(cmd.iter().map(|a| a.as_ref()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run /usr/bin/time");
    let elapsed = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let rss = err
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (elapsed, rss)
}

fn process_stats(runs: usize, cmd: &[&dyn AsRef<std::ffi::OsStr>]) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let (t, r) = run_process(cmd);
        times.push(t);
        rss.push(r);
    }
    rss.sort_unstable();
    (median(times), rss[rss.len() / 2])
}

fn main() {
    let n = env_usize("BENCH_ENTRIES", 100_000);
    let runs = env_usize("BENCH_RUNS", 11).max(1);

    // 1. Synthetic TOC.
    let m = measure_synthetic(n, runs);
    let total = m.from_json + m.index_new;
    table(
        &format!(
            "TOC of {n} entries ({} of JSON, {} nodes), median of {runs}",
            mib(m.json_len),
            m.nodes
        ),
        &["measure", "value", "per entry", "goal"],
        &[
            vec![
                "Toc::from_json".into(),
                ms(m.from_json),
                format!("{:.3} µs", us_per(m.from_json, n)),
                String::new(),
            ],
            vec![
                "Index::new".into(),
                ms(m.index_new),
                format!("{:.3} µs", us_per(m.index_new, n)),
                String::new(),
            ],
            vec![
                "parse + index".into(),
                ms(total),
                format!("{:.3} µs", us_per(total, n)),
                format!(
                    "< 1 µs: {}",
                    if us_per(total, n) < 1.0 {
                        "met"
                    } else {
                        "MISSED"
                    }
                ),
            ],
            vec![
                "Index::heap_size()".into(),
                mib(m.heap_size),
                format!("{:.1} B", m.heap_size as f64 / n as f64),
                String::new(),
            ],
            vec![
                "allocated, held by the index (JSON and Toc dropped)".into(),
                mib(m.retained),
                format!("{:.1} B", m.retained as f64 / n as f64),
                format!(
                    "< 150 B: {}",
                    if m.retained < 150 * n {
                        "met"
                    } else {
                        "MISSED"
                    }
                ),
            ],
            vec![
                "peak allocated while parsing + indexing (beyond the JSON)".into(),
                mib(m.peak),
                format!("{:.1} B", m.peak as f64 / n as f64),
                String::new(),
            ],
        ],
    );

    // 2 and 3 need a real blob, built by the Go oracle.
    let Some(oracle) = estargz_testkit::oracle() else {
        println!(
            "\nskipped the real-blob and Go comparisons: build the Go oracle first \
             (sh tools/esgz-oracle/build.sh target/tools)"
        );
        return;
    };
    let blob = wide_blob(&oracle, n);
    let blob_size = std::fs::metadata(&blob).map(|m| m.len()).unwrap_or(0);
    let mut t_open = Vec::new();
    let mut entries = 0;
    for _ in 0..runs {
        let f = std::fs::File::open(&blob).expect("open blob");
        let (d, r) = time(|| Reader::open(f).expect("Reader::open"));
        entries = r.index().toc_entry_count();
        t_open.push(d);
    }
    let before = allocated();
    let r = Reader::open(std::fs::File::open(&blob).expect("open blob")).expect("open");
    let held = allocated() - before;
    let heap = r.index().heap_size();
    // The same with the chunk digests spilled to an unlinked file (what the snapshotter does),
    // and the cost of looking a digest up either way (every chunk, several passes).
    let spill_dir = tempfile::tempdir().expect("tempdir");
    let before = allocated();
    let spilled = Reader::open_with(
        std::fs::File::open(&blob).expect("open blob"),
        estargz::OpenOptions {
            digest_dir: Some(spill_dir.path().to_path_buf()),
            ..estargz::OpenOptions::default()
        },
    )
    .expect("open spilled");
    let held_spilled = allocated() - before;
    let lookups = |index: &Index| {
        let mut times = Vec::new();
        let chunks = index.all_chunks();
        for _ in 0..runs.min(5) {
            let (d, ()) = time(|| {
                for c in chunks {
                    black_box(index.chunk_digest(c).expect("digest"));
                }
            });
            times.push(d);
        }
        median(times).as_secs_f64() * 1e9 / chunks.len().max(1) as f64
    };
    let ns_memory = lookups(r.index());
    let ns_spilled = lookups(spilled.index());
    drop(spilled);
    drop(r);
    let t_open = median(t_open);
    let mut rows = vec![
        vec![
            "Reader::open (footer + TOC + gunzip + digest + parse + index)".into(),
            ms(t_open),
            format!("{:.3} µs", us_per(t_open, entries)),
            String::new(),
        ],
        vec![
            "held by the Reader".into(),
            mib(held),
            format!("{:.1} B", held as f64 / entries as f64),
            format!("heap_size {:.1} B", heap as f64 / entries as f64),
        ],
        vec![
            "held by the Reader, chunk digests spilled (OpenOptions::digest_dir)".into(),
            mib(held_spilled),
            format!("{:.1} B", held_spilled as f64 / entries as f64),
            String::new(),
        ],
        vec![
            "Index::chunk_digest, in memory / spilled (pread, page cache)".into(),
            format!("{ns_memory:.0} ns / {ns_spilled:.0} ns"),
            String::new(),
            "per chunk".into(),
        ],
    ];

    // 3. End to end, one process per run.
    let proc_runs = runs.min(7);
    let cli = estargz_testkit::target_dir().join("release/estargz");
    let (go_t, go_rss) = process_stats(proc_runs, &[&oracle, &"tocdigest", &blob]);
    let (_, go_idle) = process_stats(3, &[&oracle, &"version"]);
    rows.push(vec![
        "Go: esgz-oracle tocdigest (process)".into(),
        ms(go_t),
        format!("{:.3} µs", us_per(go_t, entries)),
        format!(
            "max RSS {} (idle {}; +{:.0} B/entry)",
            mib(go_rss as usize * 1024),
            mib(go_idle as usize * 1024),
            (go_rss.saturating_sub(go_idle) * 1024) as f64 / entries as f64
        ),
    ]);
    if cli.is_file() {
        let (rs_t, rs_rss) = process_stats(proc_runs, &[&cli, &"info", &blob]);
        let (_, rs_idle) = process_stats(3, &[&cli, &"--version"]);
        rows.push(vec![
            "Rust: estargz info (process)".into(),
            ms(rs_t),
            format!("{:.3} µs", us_per(rs_t, entries)),
            format!(
                "max RSS {} (idle {}; +{:.0} B/entry)",
                mib(rs_rss as usize * 1024),
                mib(rs_idle as usize * 1024),
                (rs_rss.saturating_sub(rs_idle) * 1024) as f64 / entries as f64
            ),
        ]);
        rows.push(vec![
            "Go / Rust, process wall time".into(),
            format!("{:.2}x", go_t.as_secs_f64() / rs_t.as_secs_f64()),
            String::new(),
            format!("RSS Go / Rust {:.2}x", go_rss as f64 / rs_rss.max(1) as f64),
        ]);
    } else {
        println!(
            "\n(no {}: build it with `cargo build --release -p estargz-snapshotter` for the \
             end-to-end row)",
            cli.display()
        );
    }
    table(
        &format!(
            "Real blob: wide_tree({n}) built by esgz-oracle ({entries} TOC entries, {}), median",
            mib(blob_size as usize)
        ),
        &["measure", "value", "per entry", "memory / notes"],
        &rows,
    );
}
