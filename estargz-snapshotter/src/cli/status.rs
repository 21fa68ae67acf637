//! `estargz status`: per-layer state of the snapshotter daemon (remote or local, fetched %,
//! why a layer is not remote).
//!
//! Reads the daemon's `/status` on its metrics address when one is known (`--address`, or
//! `metrics_address` in its config), else the status file `<root>/status.json` it keeps.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::status::LayerStatus;

/// `estargz status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The daemon's metrics address (`host:port`); default: `metrics_address` from its config.
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<String>,
    /// The daemon's config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the status document as JSON.
    #[arg(long)]
    json: bool,
}

fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut s =
        std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("{addr}: {e}"))?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{addr}{path}: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(body.to_owned())
}

/// Runs `estargz status`.
pub fn status(args: &StatusArgs) -> Result<(), String> {
    let text = match &args.address {
        Some(a) => http_get(a, "/status")?,
        None => {
            let path = args
                .config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
            let (config, _) =
                Config::load(&path, args.config.is_some()).map_err(|e| e.to_string())?;
            if config.metrics_address.is_empty() {
                let file = config.root.join("status.json");
                std::fs::read_to_string(&file).map_err(|e| {
                    format!(
                        "cannot read {}: {e} (is estargz-snapshotter running with root {}?)",
                        file.display(),
                        config.root.display()
                    )
                })?
            } else {
                http_get(&config.metrics_address, "/status")?
            }
        }
    };
    if args.json {
        return super::print_stdout(text.trim_end());
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        layers: Vec<LayerStatus>,
    }
    let doc: Doc =
        serde_json::from_str(&text).map_err(|e| format!("unexpected status document: {e}"))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<20} {:<20} {:<7} {:>8} DETAIL",
        "SNAPSHOT", "LAYER", "MODE", "FETCHED"
    );
    for l in doc.layers {
        let short = |s: &str| {
            s.strip_prefix("sha256:")
                .unwrap_or(s)
                .chars()
                .take(12)
                .collect::<String>()
        };
        let mode = match l.state.mode {
            crate::status::Mode::Remote => "remote",
            crate::status::Mode::Local => "local",
        };
        let fetched = match l.state.mode {
            crate::status::Mode::Remote => format!("{:.1}%", l.fetched_percent),
            crate::status::Mode::Local => "-".to_owned(),
        };
        let detail = match (&l.state.fallback, &l.state.reason, &l.state.error) {
            (_, _, Some(e)) => format!("error: {e}"),
            (Some(k), Some(r), _) => format!("fallback ({k}): {r}"),
            (None, Some(r), _) => r.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<20} {:<7} {:>8} {detail}",
            short(&l.snapshot),
            short(&l.state.digest),
            mode,
            fetched
        );
    }
    Ok(())
}
