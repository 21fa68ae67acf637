//! Prometheus metrics and the tiny HTTP server that exposes them.
//!
//! `GET /metrics` is the Prometheus text format; `GET /status` is the layer status document of
//! [`crate::status`] as JSON. The server is hand-written on tokio (two routes, `GET` only,
//! `Connection: close`), sets `TCP_NODELAY`, and never blocks the snapshotter: it only reads
//! shared counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::status::{Mode, StatusBoard};

/// (method, result) -> (calls, total seconds).
type OperationCounters = BTreeMap<(String, &'static str), (u64, f64)>;

/// The daemon's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    fallbacks: Mutex<BTreeMap<String, u64>>,
    /// (operation, result) -> (count, total seconds)
    operations: Mutex<OperationCounters>,
    extra: Mutex<Vec<Arc<dyn ExtraMetrics>>>,
}

/// More metrics to append to `/metrics` (the remote-layer machinery registers one).
pub trait ExtraMetrics: Send + Sync + std::fmt::Debug {
    /// Appends Prometheus text lines.
    fn write(&self, out: &mut String);
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    GLOBAL.get_or_init(Metrics::default)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Escapes a label value for the Prometheus text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Counts a fallback to a normal pull, by class.
    pub fn fallback(&self, kind: &str) {
        *lock(&self.fallbacks).entry(kind.to_owned()).or_default() += 1;
    }

    /// Counts one snapshot operation and its duration.
    pub fn operation(&self, op: &str, ok: bool, elapsed: Duration) {
        let mut ops = lock(&self.operations);
        let e = ops
            .entry((op.to_owned(), if ok { "ok" } else { "error" }))
            .or_default();
        e.0 += 1;
        e.1 += elapsed.as_secs_f64();
    }

    /// Registers more metrics.
    pub fn register(&self, extra: Arc<dyn ExtraMetrics>) {
        lock(&self.extra).push(extra);
    }

    /// The Prometheus text exposition of everything, with the layer gauges from `status`.
    pub fn render(&self, status: &StatusBoard) -> String {
        let mut out = String::new();
        out.push_str("# HELP estargz_fallbacks_total Layers with remote-snapshot labels pulled normally, by reason class.\n");
        out.push_str("# TYPE estargz_fallbacks_total counter\n");
        for (k, v) in lock(&self.fallbacks).iter() {
            let _ = writeln!(out, "estargz_fallbacks_total{{kind=\"{}\"}} {v}", escape(k));
        }
        out.push_str(
            "# HELP estargz_snapshot_operations_total Snapshots API calls, by method and result.\n",
        );
        out.push_str("# TYPE estargz_snapshot_operations_total counter\n");
        let ops = lock(&self.operations).clone();
        for ((op, res), (n, _)) in &ops {
            let _ = writeln!(
                out,
                "estargz_snapshot_operations_total{{operation=\"{op}\",result=\"{res}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP estargz_snapshot_operation_seconds_total Time spent in Snapshots API calls.\n",
        );
        out.push_str("# TYPE estargz_snapshot_operation_seconds_total counter\n");
        for ((op, res), (_, secs)) in &ops {
            let _ = writeln!(out, "estargz_snapshot_operation_seconds_total{{operation=\"{op}\",result=\"{res}\"}} {secs}");
        }
        let layers = status.list();
        out.push_str(
            "# HELP estargz_layers Layer snapshots known to the daemon, remote (lazy) or local.\n",
        );
        out.push_str("# TYPE estargz_layers gauge\n");
        for mode in [Mode::Remote, Mode::Local] {
            let n = layers.iter().filter(|l| l.state.mode == mode).count();
            let name = if mode == Mode::Remote {
                "remote"
            } else {
                "local"
            };
            let _ = writeln!(out, "estargz_layers{{mode=\"{name}\"}} {n}");
        }
        out.push_str("# HELP estargz_layer_fetched_bytes Compressed bytes of a remote layer fetched so far.\n");
        out.push_str("# TYPE estargz_layer_fetched_bytes gauge\n");
        for l in layers.iter().filter(|l| l.state.mode == Mode::Remote) {
            let _ = writeln!(
                out,
                "estargz_layer_fetched_bytes{{digest=\"{}\"}} {}",
                escape(&l.state.digest),
                l.state.fetched
            );
        }
        out.push_str("# HELP estargz_layer_size_bytes Size of a remote layer's blob.\n");
        out.push_str("# TYPE estargz_layer_size_bytes gauge\n");
        for l in layers.iter().filter(|l| l.state.mode == Mode::Remote) {
            let _ = writeln!(
                out,
                "estargz_layer_size_bytes{{digest=\"{}\"}} {}",
                escape(&l.state.digest),
                l.state.size
            );
        }
        for extra in lock(&self.extra).iter() {
            extra.write(&mut out);
        }
        out
    }
}

/// Serves `/metrics` and `/status` on `addr` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, status: Arc<StatusBoard>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let status = status.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let m = sock.read(&mut buf[n..]).await?;
                    if m == 0 {
                        break;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, ctype, body) = match path.split('?').next().unwrap_or("") {
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    global().render(&status),
                ),
                "/status" => ("200 OK", "application/json", status.to_json()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "not found: try /metrics or /status\n".to_owned(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Binds the metrics server's listener.
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no address for {addr}"),
        )
    })?;
    tokio::net::TcpListener::bind(addr).await
}
