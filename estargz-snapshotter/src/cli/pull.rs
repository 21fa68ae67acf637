//! `estargz image pull REF` (alias `rpull`): a lazy pull through containerd with this
//! project's snapshotter; the work is [`crate::pull`].

use std::path::PathBuf;

use clap::Args;

use crate::pull::{describe, pull, PullOptions};

/// Arguments of `estargz image pull`.
#[derive(Debug, Args)]
#[command(
    after_help = "containerd must have the snapshotter configured as a proxy plugin \
(see the README). Layers the snapshotter can mount lazily (eStargz with a TOC digest \
annotation) are not downloaded; the others are pulled normally through containerd's content \
store and diff service, and the daemon's `estargz status` says why they were not lazy. Then \
run with `ctr run --snapshotter NAME REF ID`."
)]
pub struct PullArgs {
    /// The image: `HOST[:PORT]/REPO:TAG` or `HOST[:PORT]/REPO@sha256:DIGEST`.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// containerd's socket.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub address: PathBuf,
    /// containerd namespace.
    #[arg(long, short = 'n', value_name = "NS", default_value = "default")]
    pub namespace: String,
    /// The snapshotter to unpack with: the name of this daemon's `[proxy_plugins]` entry.
    #[arg(long, value_name = "NAME", default_value = "estargz")]
    pub snapshotter: String,
    /// Talk plain HTTP to the registry (loopback registries always do).
    #[arg(long)]
    pub plain_http: bool,
    /// From a multi-platform index, pull the image for OS/ARCH[/VARIANT].
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", default_value = "linux/amd64")]
    pub platform: String,
    /// Print the result as JSON: image name, target digest, and per layer its digest, chain
    /// ID, whether it is remote (lazy) and the bytes downloaded.
    #[arg(long)]
    pub json: bool,
}

/// Runs `estargz image pull`.
pub fn run(a: &PullArgs) -> Result<(), String> {
    let opts = PullOptions {
        reference: a.reference.clone(),
        address: a.address.clone(),
        namespace: a.namespace.clone(),
        snapshotter: a.snapshotter.clone(),
        plain_http: a.plain_http,
        platform: a.platform.clone(),
    };
    let rt = super::remote::runtime()?;
    let report = rt
        .block_on(pull(&opts))
        .map_err(|e| format!("pull {}: {e}", a.reference))?;
    if a.json {
        let layers: Vec<serde_json::Value> = report
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "digest": l.digest,
                    "chainId": l.chain_id,
                    "remote": l.remote,
                    "downloaded": l.downloaded,
                })
            })
            .collect();
        let j = serde_json::json!({
            "name": report.name,
            "target": report.target,
            "manifest": report.manifest,
            "layers": layers,
        });
        super::print_stdout(j)
    } else {
        super::print_stdout(describe(&report).trim_end())
    }
}
