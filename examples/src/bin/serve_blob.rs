//! Serves one file over plain HTTP on loopback, with `Range` support, so a layer can be
//! mounted lazily from a URL (the demo's "registry").
//!
//! ```text
//! serve_blob FILE [--addr 127.0.0.1:0] [--name layer.esgz]
//! ```
//!
//! Prints `http://ADDR/NAME` on the first line of stdout once it listens, then serves `GET`
//! and `HEAD` of `/NAME` until SIGINT or SIGTERM, when it prints (to stderr) how many body
//! bytes it sent in how many responses. A request with one byte range (`bytes=A-B`, `A-` or
//! `-N`) gets `206 Partial Content`; of a request with several ranges only the first is
//! answered (also `206`, with its `Content-Range`), which HTTP allows and clients detect.
//! Anything else gets the whole file. Meant for demos and tests: no TLS, no directory
//! listing, one file.

use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
struct Served {
    bytes: AtomicU64,
    responses: AtomicU64,
}

/// The first range of a `Range: bytes=...` value, clamped to `len`; `None` when absent,
/// malformed or unsatisfiable (the whole file is sent then).
fn first_range(value: &str, len: u64) -> Option<Range<u64>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let first = spec.split(',').next()?.trim();
    let (a, b) = first.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let r = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        len.saturating_sub(n)..len
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(len)
        };
        start..end
    };
    (r.start < r.end).then_some(r)
}

async fn serve(
    stream: TcpStream,
    data: Arc<Vec<u8>>,
    path: Arc<String>,
    served: Arc<Served>,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let mut request = String::new();
        if rd.read_line(&mut request).await? == 0 {
            return Ok(());
        }
        let mut range = None;
        let mut close = false;
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_owned());
                } else if k.eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
                {
                    close = true;
                }
            }
        }
        let mut words = request.split_whitespace();
        let method = words.next().unwrap_or("");
        let target = words.next().unwrap_or("");
        let len = data.len() as u64;
        let head = method == "HEAD";
        let (status, body, extra) = if (method != "GET" && !head) || target != path.as_str() {
            let status = if method == "GET" || head {
                "404 Not Found"
            } else {
                "405 Method Not Allowed"
            };
            (status, 0..0, String::new())
        } else {
            match range.as_deref().and_then(|v| first_range(v, len)) {
                Some(r) => (
                    "206 Partial Content",
                    r.clone(),
                    format!("Content-Range: bytes {}-{}/{len}\r\n", r.start, r.end - 1),
                ),
                None => ("200 OK", 0..len, String::new()),
            }
        };
        let header = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\
             Content-Type: application/octet-stream\r\n{extra}\r\n",
            body.end - body.start
        );
        wr.write_all(header.as_bytes()).await?;
        if !head {
            let slice = data
                .get(body.start as usize..body.end as usize)
                .unwrap_or_default();
            wr.write_all(slice).await?;
            served
                .bytes
                .fetch_add(slice.len() as u64, Ordering::Relaxed);
        }
        served.responses.fetch_add(1, Ordering::Relaxed);
        wr.flush().await?;
        if close {
            return Ok(());
        }
    }
}

async fn run(file: String, addr: String, name: String) -> Result<(), String> {
    let data = Arc::new(std::fs::read(&file).map_err(|e| format!("cannot read {file}: {e}"))?);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let path = Arc::new(format!("/{name}"));
    println!("http://{local}{path}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let served = Arc::new(Served::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                let (d, p, s) = (Arc::clone(&data), Arc::clone(&path), Arc::clone(&served));
                tokio::spawn(async move {
                    let _ = serve(stream, d, p, s).await;
                });
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    eprintln!(
        "serve_blob: sent {} body bytes of a {}-byte file in {} responses",
        served.bytes.load(Ordering::Relaxed),
        data.len(),
        served.responses.load(Ordering::Relaxed)
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let mut addr = "127.0.0.1:0".to_owned();
    let mut name = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = args.next().unwrap_or_default(),
            "--name" => name = args.next(),
            _ if file.is_none() => file = Some(a),
            _ => {
                eprintln!("usage: serve_blob FILE [--addr 127.0.0.1:0] [--name NAME]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(file) = file else {
        eprintln!("usage: serve_blob FILE [--addr 127.0.0.1:0] [--name NAME]");
        return ExitCode::from(2);
    };
    let name = name.unwrap_or_else(|| {
        std::path::Path::new(&file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "blob".to_owned())
    });
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serve_blob: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(file, addr, name)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve_blob: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_range;

    #[test]
    fn ranges() {
        assert_eq!(first_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(first_range("bytes=90-", 100), Some(90..100));
        assert_eq!(first_range("bytes=-10", 100), Some(90..100));
        assert_eq!(first_range("bytes=-1000", 100), Some(0..100));
        assert_eq!(first_range("bytes=5-9, 20-29", 100), Some(5..10));
        assert_eq!(first_range("bytes=95-200", 100), Some(95..100));
        assert_eq!(first_range("bytes=100-", 100), None);
        assert_eq!(first_range("items=0-1", 100), None);
        assert_eq!(first_range("bytes=x-1", 100), None);
    }
}
