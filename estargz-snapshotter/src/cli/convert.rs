//! `estargz convert`: a tar, tar.gz or tar.zst layer in, an eStargz or zstd:chunked blob out.
//!
//! IN and OUT may be `-` (stdin / stdout). With `--json` one JSON object with the digests,
//! sizes and annotations goes to stdout (to stderr when OUT is stdout); otherwise a short
//! summary. A progress bar is drawn on stderr only when stderr is a terminal.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use estargz::build::{BuildOptions, Builder, OutputFormat, Progress, UnsupportedEntries};

/// Arguments of `estargz convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Input layer: tar, tar.gz or tar.zst (detected by magic); `-` for stdin.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Output blob; `-` for stdout.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    #[command(flatten)]
    pub build: BuildFlags,
    /// Write the TOC to this separate blob (`gzip(tar(stargz.index.json))`) and end OUT with
    /// the external-TOC footer.
    #[arg(long, value_name = "TOCFILE")]
    pub external_toc: Option<PathBuf>,
    /// Print one JSON object: tocDigest, diffId, uncompressedSize, blobDigest, blobSize,
    /// annotations.
    #[arg(long)]
    pub json: bool,
}

/// The flags that say how a layer is built, shared by `estargz convert` and
/// `estargz image convert`.
#[derive(Debug, Args)]
pub struct BuildFlags {
    /// Chunk size in bytes (default 4 MiB).
    #[arg(long, value_name = "N")]
    pub chunk_size: Option<u64>,
    /// Compression level: gzip 0-12 (libdeflate; default 7, whose output is no larger than
    /// the Go tool's level 9 on real layers; 9 is ~0.2 % smaller and half as fast; 10-12 are
    /// slow and smallest), zstd 1-22 (default 3). gzip members whose bytes look already
    /// compressed (gzip, xz, PNG, ... payloads) are deflated at level 1 when L is higher.
    #[arg(long, value_name = "L", allow_negative_numbers = true)]
    pub level: Option<i32>,
    /// Pack small chunks into shared members until a member holds N uncompressed bytes, at
    /// most 512 KiB (`innerOffset`; readable by stargz-snapshotter >= v0.13 only).
    #[arg(long, value_name = "N")]
    pub min_chunk_size: Option<u64>,
    /// File with one prioritised path per line (put first, before `.prefetch.landmark`).
    #[arg(long, value_name = "FILE")]
    pub prioritized_files: Option<PathBuf>,
    /// Prioritised paths in the stargz record format (JSON lines `{"path": "..."}`).
    #[arg(long, value_name = "FILE")]
    pub record_in: Option<PathBuf>,
    /// Do not fail when a prioritised path is missing (they are reported).
    #[arg(long)]
    pub allow_missing_prioritized: bool,
    /// Write zstd:chunked instead of eStargz (gzip).
    #[arg(long)]
    pub zstd_chunked: bool,
    /// Compression threads (default: all cores). The output does not depend on it.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Skip entries eStargz cannot carry (PAX global headers, sparse/contiguous files, ...)
    /// instead of failing.
    #[arg(long, conflicts_with = "convert_unsupported")]
    pub skip_unsupported: bool,
    /// Expand sparse files (up to 16 GiB each; a larger one is an error), write contiguous
    /// files as regular files, ignore PAX global headers, skip other unknown entry types.
    #[arg(long)]
    pub convert_unsupported: bool,
}

impl BuildFlags {
    /// The builder options these flags ask for (no progress callback, no external TOC).
    pub fn options(&self) -> Result<BuildOptions, String> {
        let a = self;
        let mut prioritized = Vec::new();
        if let Some(f) = &a.prioritized_files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            prioritized.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        if let Some(f) = &a.record_in {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            prioritized.extend(
                estargz::build::parse_record_file(&text)
                    .map_err(|e| format!("{}: {e}", f.display()))?,
            );
        }
        Ok(BuildOptions {
            format: if a.zstd_chunked {
                OutputFormat::ZstdChunked
            } else {
                OutputFormat::Estargz
            },
            level: a.level,
            chunk_size: a.chunk_size.unwrap_or(0),
            min_chunk_size: a.min_chunk_size.unwrap_or(0),
            prioritized,
            allow_missing_prioritized: a.allow_missing_prioritized,
            external_toc: false,
            threads: a.threads.unwrap_or(0),
            unsupported: if a.skip_unsupported {
                UnsupportedEntries::Skip
            } else if a.convert_unsupported {
                UnsupportedEntries::Convert
            } else {
                UnsupportedEntries::Error
            },
            max_sparse_expansion: 0,
            progress: None,
        })
    }
}

fn is_dash(p: &std::path::Path) -> bool {
    p.as_os_str() == "-"
}

/// Runs `estargz convert`.
pub fn convert(a: &ConvertArgs) -> Result<(), String> {
    let input_len = if is_dash(&a.input) {
        None
    } else {
        std::fs::metadata(&a.input).ok().map(|m| m.len())
    };
    let bar = progress_bar(input_len);
    let mut opts = a.build.options()?;
    opts.external_toc = a.external_toc.is_some();
    if let Some(bar) = &bar {
        let bar = bar.clone();
        opts.progress = Some(Arc::new(move |p| match p {
            Progress::Spooling { bytes } => {
                bar.set_message("reading");
                bar.set_position(bytes);
            }
            Progress::Building { done, total } => {
                if bar.length() != Some(total) {
                    bar.set_length(total);
                    bar.reset_eta();
                    bar.set_message("compressing");
                }
                bar.set_position(done);
            }
        }));
    }
    let started = Instant::now();
    let builder = Builder::new(opts);
    let to_stdout = is_dash(&a.output);
    let result = {
        let out: Box<dyn Write> = if to_stdout {
            Box::new(io::BufWriter::with_capacity(1 << 20, io::stdout().lock()))
        } else {
            Box::new(
                File::create(&a.output)
                    .map_err(|e| format!("cannot create {}: {e}", a.output.display()))?,
            )
        };
        if is_dash(&a.input) {
            builder.build(io::stdin().lock(), out)
        } else {
            let f = File::open(&a.input)
                .map_err(|e| format!("cannot open {}: {e}", a.input.display()))?;
            builder.build_seekable(f, out)
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = result.map_err(|e| {
        if !to_stdout {
            let _ = std::fs::remove_file(&a.output);
        }
        e.to_string()
    })?;
    if let (Some(path), Some(toc)) = (&a.external_toc, &report.external_toc) {
        std::fs::write(path, toc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    if a.json {
        let mut obj = serde_json::json!({
            "tocDigest": report.toc_digest.to_string(),
            "diffId": report.diff_id.to_string(),
            "uncompressedSize": report.uncompressed_size,
            "blobDigest": report.blob_digest.to_string(),
            "blobSize": report.blob_size,
            "annotations": report.annotations,
        });
        if !report.missed_prioritized.is_empty() {
            obj["missedPrioritized"] = serde_json::json!(report.missed_prioritized);
        }
        if let Some(toc) = &report.external_toc {
            obj["externalTocDigest"] = serde_json::json!(estargz::Digest::of(toc).to_string());
            obj["externalTocSize"] = serde_json::json!(toc.len());
        }
        let text = serde_json::to_string_pretty(&obj).map_err(|e| e.to_string())?;
        if to_stdout {
            eprintln!("{text}");
        } else {
            super::print_stdout(&text)?;
        }
    } else {
        let mb = report.uncompressed_size as f64 / 1e6;
        let summary = format!(
            "{} -> {}: {} entries, {:.1} MB -> {:.1} MB in {:.2} s ({:.1} MB/s)\n  toc digest  {}\n  diff id     {}\n  blob digest {}",
            a.input.display(),
            a.output.display(),
            report.toc.entries.len(),
            mb,
            report.blob_size as f64 / 1e6,
            secs,
            mb / secs.max(1e-9),
            report.toc_digest,
            report.diff_id,
            report.blob_digest,
        );
        if to_stdout {
            eprintln!("{summary}");
        } else {
            super::print_stdout(&summary)?;
        }
        for m in &report.missed_prioritized {
            eprintln!("estargz: warning: prioritized file not found: {m}");
        }
    }
    Ok(())
}

fn progress_bar(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(len, indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "{msg:12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .ok()?
    .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}
