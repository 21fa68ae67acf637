//! An in-process HTTP/1.1 server that serves one blob at any `.../blobs/<digest>` path and
//! misbehaves on request: 5xx bursts, resets mid-body, truncated bodies, slow answers, Range
//! ignored, multi-range refused or half-answered, expiring bearer tokens, redirects to another
//! server, corrupted bytes. Every request is logged with its Range and the status answered.
//!
//! Written on raw tokio sockets (not a framework) because several faults are about the bytes
//! on the wire: a connection reset needs `SO_LINGER 0`, a truncated body needs a
//! `Content-Length` larger than what is sent. `TCP_NODELAY` is set on every connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the server answers multi-range requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiRange {
    /// `206 multipart/byteranges`, correctly.
    Supported,
    /// `400 Bad Request`.
    Reject,
    /// `206` with only the first range (as some servers do).
    FirstOnly,
    /// `200` with the whole blob.
    Ignore,
    /// `206 multipart/byteranges` with a mangled body.
    Garbage,
}

/// Faults to inject; counters are "the next N requests of that kind".
#[derive(Debug)]
pub struct Faults {
    /// Answer 503 to the next N requests.
    pub error_5xx: AtomicU32,
    /// Reset the connection half-way through the next N blob bodies.
    pub reset_mid_body: AtomicU32,
    /// Close the connection half-way through the next N blob bodies (Content-Length says more).
    pub truncate: AtomicU32,
    /// Wait this long before answering the next N requests.
    pub slow: AtomicU32,
    pub slow_ms: AtomicU64,
    /// Answer every ranged GET with 200 and the whole blob.
    pub ignore_range: AtomicBool,
    /// Flip bytes in the next N blob bodies.
    pub corrupt: AtomicU32,
    /// Require bearer tokens; each token is good for this many requests (0: no auth).
    pub token_uses: AtomicU32,
    /// Redirect blob GETs to this base URL (another server) when set.
    pub redirect_to: Mutex<Option<String>>,
    pub multi: Mutex<MultiRange>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_5xx: AtomicU32::new(0),
            reset_mid_body: AtomicU32::new(0),
            truncate: AtomicU32::new(0),
            slow: AtomicU32::new(0),
            slow_ms: AtomicU64::new(0),
            ignore_range: AtomicBool::new(false),
            corrupt: AtomicU32::new(0),
            token_uses: AtomicU32::new(0),
            redirect_to: Mutex::new(None),
            multi: Mutex::new(MultiRange::Supported),
        }
    }
}

fn take(c: &AtomicU32) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
        .is_ok()
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    id: u64,
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// The connection it came on: 1 for the first connection the server accepted, and so on.
    pub connection: u64,
    /// Body bytes the server meant to write (half of the body for resets and truncations).
    pub sent: u64,
}

#[derive(Debug, Default)]
struct TokenState {
    current: u32,
    uses_left: u32,
}

/// The server; stops when dropped.
pub struct FaultServer {
    pub addr: SocketAddr,
    pub faults: Arc<Faults>,
    log: Arc<Mutex<Vec<Logged>>>,
    connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    blob: Bytes,
    faults: Arc<Faults>,
    log: Arc<Mutex<Vec<Logged>>>,
    tokens: Mutex<TokenState>,
    addr: SocketAddr,
}

impl FaultServer {
    pub async fn start(blob: Bytes) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let faults = Arc::new(Faults::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            blob,
            faults: Arc::clone(&faults),
            log: Arc::clone(&log),
            tokens: Mutex::new(TokenState::default()),
            addr,
        });
        let connections = Arc::new(AtomicU64::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let connection = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = sock.set_nodelay(true);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(sock, connection, shared).await;
                });
            }
        });
        FaultServer {
            addr,
            faults,
            log,
            connections,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().expect("log").clone()
    }

    pub fn clear_log(&self) {
        self.log.lock().expect("log").clear();
    }

    /// Logged blob GETs.
    pub fn blob_gets(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method == "GET" && l.path.contains("/blobs/"))
            .collect()
    }

    /// Body bytes sent for blob requests.
    pub fn blob_bytes_sent(&self) -> u64 {
        self.blob_gets().iter().map(|l| l.sent).sum()
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut rest = buf.split_off(end + 4);
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let method = first.next()?.to_owned();
            let path = first.next()?.to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let req = Request {
                method,
                path,
                headers,
            };
            // Consume a request body (token POSTs, uploads are not served here).
            let len: usize = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while rest.len() < len {
                let mut tmp = [0u8; 8192];
                let n = sock.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                rest.extend_from_slice(&tmp[..n]);
            }
            *buf = rest.split_off(len);
            return Some(req);
        }
        let mut tmp = [0u8; 8192];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn parse_ranges(v: &str, len: u64) -> Option<Vec<(u64, u64)>> {
    let spec = v.strip_prefix("bytes=")?;
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (a, b) = part.trim().split_once('-')?;
        let r = if a.is_empty() {
            let n: u64 = b.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        } else {
            let s: u64 = a.parse().ok()?;
            let e: u64 = if b.is_empty() {
                len - 1
            } else {
                b.parse::<u64>().ok()?.min(len - 1)
            };
            if s > e {
                return None;
            }
            (s, e)
        };
        out.push(r);
    }
    Some(out)
}

async fn serve(mut sock: TcpStream, connection: u64, sh: Arc<Shared>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let keep = handle(&mut sock, connection, &sh, &req).await?;
        if !keep {
            return Ok(());
        }
    }
    Ok(())
}

/// Answers one request; `false` when the connection must be closed.
async fn handle(
    sock: &mut TcpStream,
    connection: u64,
    sh: &Shared,
    req: &Request,
) -> std::io::Result<bool> {
    let f = &sh.faults;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut logged = Logged {
        id: NEXT.fetch_add(1, Ordering::SeqCst),
        method: req.method.clone(),
        path: req.path.clone(),
        range: req.header("range").map(str::to_owned),
        authorization: req.header("authorization").map(str::to_owned),
        status: 0,
        connection,
        sent: 0,
    };
    // Logged when it arrives (so that a test clearing the log sees only later requests),
    // completed before the answer is written.
    sh.log.lock().expect("log").push(logged.clone());
    let _ = f;
    respond(sock, sh, req, &mut logged).await
}

async fn write_head(
    sock: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &[(String, String)],
) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    sock.write_all(h.as_bytes()).await
}

/// Updates the log entry of `l` (before the client can see the answer).
fn publish(sh: &Shared, l: &Logged) {
    if let Some(e) = sh
        .log
        .lock()
        .expect("log")
        .iter_mut()
        .find(|e| e.id == l.id)
    {
        *e = l.clone();
    }
}

async fn simple(
    sock: &mut TcpStream,
    sh: &Shared,
    l: &mut Logged,
    status: u16,
    reason: &str,
    extra: &[(String, String)],
    body: &[u8],
) -> std::io::Result<bool> {
    let mut headers = extra.to_vec();
    headers.push(("Content-Length".into(), body.len().to_string()));
    l.status = status;
    l.sent = body.len() as u64;
    publish(sh, l);
    write_head(sock, status, reason, &headers).await?;
    sock.write_all(body).await?;
    Ok(true)
}

async fn respond(
    sock: &mut TcpStream,
    sh: &Shared,
    req: &Request,
    l: &mut Logged,
) -> std::io::Result<bool> {
    let f = &sh.faults;
    if take(&f.slow) {
        tokio::time::sleep(Duration::from_millis(f.slow_ms.load(Ordering::SeqCst))).await;
    }
    // Token endpoint.
    if req.path.starts_with("/token") {
        let body = {
            let mut t = sh.tokens.lock().expect("tokens");
            t.current += 1;
            t.uses_left = f.token_uses.load(Ordering::SeqCst);
            format!(r#"{{"token":"tok-{}","expires_in":300}}"#, t.current)
        };
        return simple(
            sock,
            sh,
            l,
            200,
            "OK",
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
        )
        .await;
    }
    if take(&f.error_5xx) {
        return simple(sock, sh, l, 503, "Service Unavailable", &[], b"try later").await;
    }
    // Bearer auth with tokens that expire after N uses.
    if f.token_uses.load(Ordering::SeqCst) > 0 && !req.path.starts_with("/redirected") {
        let ok = {
            let mut t = sh.tokens.lock().expect("tokens");
            let want = format!("Bearer tok-{}", t.current);
            if t.current > 0
                && req.header("authorization") == Some(want.as_str())
                && t.uses_left > 0
            {
                t.uses_left -= 1;
                true
            } else {
                false
            }
        };
        if !ok {
            let ch = format!(
                r#"Bearer realm="http://{}/token",service="fault",scope="repository:test/blob:pull""#,
                sh.addr
            );
            return simple(
                sock,
                sh,
                l,
                401,
                "Unauthorized",
                &[("WWW-Authenticate".into(), ch)],
                b"",
            )
            .await;
        }
    }
    if !req.path.contains("/blobs/") && !req.path.starts_with("/redirected") {
        return simple(sock, sh, l, 404, "Not Found", &[], b"not found").await;
    }
    let redirect = f.redirect_to.lock().expect("redirect").clone();
    if let Some(base) = redirect {
        if req.method == "GET" {
            let loc = format!("{base}/redirected{}", req.path);
            return simple(
                sock,
                sh,
                l,
                307,
                "Temporary Redirect",
                &[("Location".into(), loc)],
                b"",
            )
            .await;
        }
    }
    let blob = &sh.blob;
    let len = blob.len() as u64;
    if req.method == "HEAD" {
        l.status = 200;
        publish(sh, l);
        write_head(
            sock,
            200,
            "OK",
            &[("Content-Length".into(), len.to_string())],
        )
        .await?;
        return Ok(true);
    }
    let ranges = match req.header("range") {
        None => None,
        Some(v) => match parse_ranges(v, len) {
            Some(r) => Some(r),
            None => return simple(sock, sh, l, 416, "Range Not Satisfiable", &[], b"").await,
        },
    };
    let multi = *f.multi.lock().expect("multi");
    let ignore = f.ignore_range.load(Ordering::SeqCst)
        || ranges.is_none()
        || (multi == MultiRange::Ignore && ranges.as_ref().is_some_and(|r| r.len() > 1));
    if !ignore && multi == MultiRange::Reject && ranges.as_ref().is_some_and(|r| r.len() > 1) {
        return simple(
            sock,
            sh,
            l,
            400,
            "Bad Request",
            &[],
            b"multi-range not supported",
        )
        .await;
    }
    // Build the answer: status, headers, body.
    let (status, reason, mut headers, body): (u16, &str, Vec<(String, String)>, Vec<u8>) = if ignore
    {
        (200, "OK", vec![], blob.to_vec())
    } else {
        let rs = ranges.unwrap_or_default();
        if rs.len() == 1 || multi == MultiRange::FirstOnly {
            let (a, b) = rs[0];
            (
                206,
                "Partial Content",
                vec![("Content-Range".into(), format!("bytes {a}-{b}/{len}"))],
                blob[a as usize..=b as usize].to_vec(),
            )
        } else {
            let boundary = "FAULTBOUNDARY";
            let mut body = Vec::new();
            for (a, b) in &rs {
                body.extend_from_slice(
                    format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {a}-{b}/{len}\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(&blob[*a as usize..=*b as usize]);
            }
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            if multi == MultiRange::Garbage {
                body = b"\r\n--FAULTBOUNDARY\r\nX: y\r\n\r\nnot what you asked for\r\n--FAULTBOUNDARY--\r\n".to_vec();
            }
            (
                206,
                "Partial Content",
                vec![(
                    "Content-Type".into(),
                    format!("multipart/byteranges; boundary={boundary}"),
                )],
                body,
            )
        }
    };
    let mut body = body;
    if take(&f.corrupt) {
        // Flip bytes in the middle of the body (not the framing of a multipart body's head).
        let n = body.len();
        for i in (n / 3..n.saturating_sub(n / 3)).step_by(97) {
            body[i] ^= 0x5a;
        }
    }
    headers.push(("Content-Length".into(), body.len().to_string()));
    headers.push(("Content-Type".into(), "application/octet-stream".into()));
    l.status = status;
    let reset = take(&f.reset_mid_body);
    let truncate = take(&f.truncate);
    l.sent = if reset || truncate {
        body.len() as u64 / 2
    } else {
        body.len() as u64
    };
    publish(sh, l);
    write_head(sock, status, reason, &headers).await?;
    if reset {
        let half = body.len() / 2;
        sock.write_all(&body[..half]).await?;
        sock.flush().await?;
        l.sent = half as u64;
        sock.set_zero_linger()?;
        return Ok(false);
    }
    if truncate {
        let half = body.len() / 2;
        sock.write_all(&body[..half]).await?;
        sock.flush().await?;
        l.sent = half as u64;
        let _ = sock.shutdown().await;
        return Ok(false);
    }
    // A client that stops reading after the range it wanted closes the connection.
    for piece in body.chunks(64 << 10) {
        if sock.write_all(piece).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}
