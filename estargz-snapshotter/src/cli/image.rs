//! `estargz image convert SRC DST`: every layer of an image converted to eStargz (or
//! zstd:chunked), manifest, config and index rewritten. The work is
//! `estargz_io::image::convert`; this module parses flags, draws per-layer progress on stderr
//! when it is a terminal, and prints the result.

use std::collections::HashMap;
use std::io::{self, IsTerminal};
use std::sync::{Arc, Mutex};

use clap::{Args, Subcommand};
use estargz::build::Progress;
use estargz_io::config::{HostConfig, RegistryConfig};
use estargz_io::image::{
    ConvertOptions, ConvertReport, ImageLocation, LayerAction, LayerEvent, LayerProgress,
};
use estargz_io::source::RegistryOptions;

use super::convert::BuildFlags;

/// Arguments of `estargz image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Convert every layer of an image (or of a multi-platform index) to eStargz or
    /// zstd:chunked and write the image to DST.
    Convert(ImageConvertArgs),
    /// Pull an image through containerd with the estargz snapshotter: eStargz layers are
    /// mounted lazily, the others pulled normally.
    #[command(visible_alias = "rpull")]
    Pull(super::pull::PullArgs),
}

/// Arguments of `estargz image convert`.
#[derive(Debug, Args)]
pub struct ImageConvertArgs {
    /// The image: `oci:DIR[:TAG]` (OCI image layout; TAG defaults to `latest`) or
    /// `docker://HOST/REPO[:TAG|@DIGEST]`.
    #[arg(value_name = "SRC")]
    pub source: String,
    /// Where to write the converted image: `oci:DIR[:TAG]` (created if missing) or
    /// `docker://HOST/REPO:TAG`.
    #[arg(value_name = "DST")]
    pub destination: String,
    #[command(flatten)]
    pub build: BuildFlags,
    /// From a multi-platform index, convert the image for OS/ARCH[/VARIANT] (default
    /// linux/amd64); DST gets that image's manifest.
    #[arg(
        long,
        value_name = "OS/ARCH[/VARIANT]",
        conflicts_with = "all_platforms"
    )]
    pub platform: Option<String>,
    /// Convert every image of a multi-platform index; DST gets a new index.
    #[arg(long)]
    pub all_platforms: bool,
    /// Rebuild layers that are eStargz already (by default they are kept as they are).
    #[arg(long)]
    pub force: bool,
    /// Talk plain HTTP to the registries of SRC and DST (loopback registries always do).
    #[arg(long)]
    pub plain_http: bool,
    /// Print the result as one JSON object: destination digest, and per image and layer the
    /// source and output digests, DiffIDs, TOC digests and whether each was converted,
    /// reused and written.
    #[arg(long)]
    pub json: bool,
}

/// Runs `estargz image ...`.
pub fn image(a: &ImageArgs) -> Result<(), String> {
    match &a.command {
        ImageCommand::Convert(c) => convert(c),
        ImageCommand::Pull(p) => super::pull::run(p),
    }
}

fn convert(a: &ImageConvertArgs) -> Result<(), String> {
    let src: ImageLocation = a
        .source
        .parse()
        .map_err(|e: estargz_io::Error| format!("SRC: {e}"))?;
    let dst: ImageLocation = a
        .destination
        .parse()
        .map_err(|e: estargz_io::Error| format!("DST: {e}"))?;
    let mut registry = RegistryOptions::default();
    if a.plain_http {
        registry.config = RegistryConfig {
            hosts: [&src, &dst]
                .iter()
                .filter_map(|l| match l {
                    ImageLocation::Registry(r) => Some(r.host.clone()),
                    ImageLocation::Layout { .. } => None,
                })
                .map(|h| RegistryConfig::plain_http(&h).hosts)
                .flat_map(|hosts: Vec<HostConfig>| hosts.into_iter())
                .collect(),
        };
    }
    let opts = ConvertOptions {
        build: a.build.options()?,
        platform: a
            .platform
            .as_deref()
            .map(estargz_io::image::spec::Platform::parse)
            .transpose()
            .map_err(|e| format!("--platform: {e}"))?,
        all_platforms: a.all_platforms,
        force: a.force,
        registry,
        progress: progress_bars(),
    };
    let rt = super::remote::runtime()?;
    let report = rt
        .block_on(estargz_io::image::convert(&src, &dst, &opts))
        .map_err(|e| format!("{} -> {}: {e}", a.source, a.destination))?;
    if a.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        super::print_stdout(text)
    } else {
        super::print_stdout(summary(&report).trim_end())
    }
}

fn summary(r: &ConvertReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} -> {}", r.source, r.destination);
    for m in &r.manifests {
        let p = m.platform.as_deref().unwrap_or("image");
        let _ = writeln!(out, "  {p}: manifest {}", m.digest);
        for (i, l) in m.layers.iter().enumerate() {
            let what = match l.action {
                LayerAction::Converted => "converted",
                LayerAction::Reused => "reused",
            };
            let _ = writeln!(
                out,
                "    layer {i}: {what:9} {} -> {}",
                l.source_digest, l.digest
            );
            if let Some(why) = &l.not_reused {
                eprintln!(
                    "estargz: note: layer {} is annotated as eStargz but was rebuilt: {why}",
                    l.source_digest
                );
            }
        }
    }
    for s in &r.skipped {
        let _ = writeln!(out, "  skipped index entry {s} (platform unknown/unknown)");
    }
    let _ = writeln!(out, "  {} {}", r.media_type, r.digest);
    out
}

/// One progress bar per layer on stderr, only when stderr is a terminal.
fn progress_bars() -> Option<estargz_io::image::ProgressCallback> {
    if !io::stderr().is_terminal() {
        return None;
    }
    let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "{prefix:24} {msg:12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}",
    )
    .ok()?
    .progress_chars("=> ");
    let bars: Mutex<HashMap<(String, usize), indicatif::ProgressBar>> = Mutex::new(HashMap::new());
    Some(Arc::new(move |p: &LayerProgress| {
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars
            .entry((p.platform.clone(), p.index))
            .or_insert_with(|| {
                let b = multi.add(indicatif::ProgressBar::new(p.size));
                b.set_style(style.clone());
                let short = p.digest.get(7..19).unwrap_or(&p.digest);
                let prefix = if p.platform.is_empty() {
                    format!("layer {}/{} {short}", p.index + 1, p.count)
                } else {
                    format!("{} {}/{}", p.platform, p.index + 1, p.count)
                };
                b.set_prefix(prefix);
                b
            })
            .clone();
        drop(bars);
        match p.event {
            LayerEvent::Fetching => bar.set_message("fetching"),
            LayerEvent::Checking => bar.set_message("verifying"),
            LayerEvent::Building(Progress::Spooling { bytes }) => {
                bar.set_message("reading");
                bar.set_position(bytes);
            }
            LayerEvent::Building(Progress::Building { done, total }) => {
                if bar.length() != Some(total) {
                    bar.set_length(total);
                    bar.set_message("compressing");
                }
                bar.set_position(done);
            }
            LayerEvent::Storing => bar.set_message("storing"),
            LayerEvent::Done(action) => {
                bar.set_message(match action {
                    LayerAction::Converted => "converted",
                    LayerAction::Reused => "reused",
                });
                bar.finish();
            }
        }
    }))
}
