//! The HTTP engine shared by [`crate::source::HttpSource`] and
//! [`crate::source::RegistrySource`]: range requests against an ordered list of endpoints.
//!
//! Owns: building requests (Range, auth header, per-endpoint headers), following and caching
//! redirects, 401 → re-authorise → retry once, retries with backoff on transient failures,
//! falling over to the next endpoint (mirror), multi-range requests with a permanent fallback
//! to single ranges for servers that mishandle them, and reading bodies without ever holding
//! more than the requested bytes (a `200` answer to a Range request is streamed and discarded up
//! to the range). Never decompresses or verifies: the bytes go back to the caller as they came.

pub mod range;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING, AUTHORIZATION, RANGE};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::Authorizer;
use crate::config::RetryPolicy;
use crate::error::{Error, RangeList, Result};
use range::{multipart_boundary, parse_content_range, parse_multipart, range_header};

/// Counters of one engine (one blob).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    /// HTTP requests sent (retries, redirects and re-authorisations included; token requests
    /// excluded).
    pub requests: u64,
    /// Attempts that were retried after a transient failure.
    pub retries: u64,
    /// Body bytes received for range reads (discarded bytes of a `200` included).
    pub body_bytes: u64,
    /// Range requests the server answered with the whole blob (`200`).
    pub range_ignored: u64,
    /// Times the engine switched to single-range requests.
    pub multi_range_fallbacks: u64,
    /// Redirects followed.
    pub redirects: u64,
    /// 401 answers that led to re-authorisation.
    pub reauthorizations: u64,
}

#[derive(Default, Debug)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    body_bytes: AtomicU64,
    range_ignored: AtomicU64,
    multi_range_fallbacks: AtomicU64,
    redirects: AtomicU64,
    reauthorizations: AtomicU64,
}

/// One place a blob can be fetched from.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub url: Url,
    pub client: reqwest::Client,
    pub headers: HeaderMap,
    pub auth: Option<Arc<Authorizer>>,
    /// Where the last redirect pointed, until when to reuse it.
    redirect: Mutex<Option<(Url, Instant)>>,
}

impl Endpoint {
    pub fn new(
        url: Url,
        client: reqwest::Client,
        headers: HeaderMap,
        auth: Option<Arc<Authorizer>>,
    ) -> Endpoint {
        Endpoint {
            url,
            client,
            headers,
            auth,
            redirect: Mutex::new(None),
        }
    }

    fn cached_redirect(&self) -> Option<Url> {
        let mut g = self.redirect.lock().unwrap_or_else(|e| e.into_inner());
        match &*g {
            Some((u, until)) if Instant::now() < *until => Some(u.clone()),
            Some(_) => {
                *g = None;
                None
            }
            None => None,
        }
    }

    fn set_redirect(&self, to: Option<(Url, Instant)>) {
        *self.redirect.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

/// Options of the engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Retry policy and timeouts.
    pub retry: RetryPolicy,
    /// Start in single-range mode (for servers known to mishandle multi-range requests).
    pub force_single_range: bool,
    /// At most this many ranges in one multi-range request.
    pub max_ranges_per_request: usize,
    /// Single-range requests sent concurrently in single-range mode.
    pub single_range_concurrency: usize,
    /// How long a redirect target is reused when the redirect does not say.
    pub redirect_ttl: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            retry: RetryPolicy::default(),
            force_single_range: false,
            max_ranges_per_request: 64,
            single_range_concurrency: 4,
            redirect_ttl: Duration::from_secs(60),
        }
    }
}

/// The range-fetching engine over an ordered list of endpoints.
#[derive(Debug)]
pub(crate) struct Engine {
    endpoints: Vec<Endpoint>,
    current: AtomicUsize,
    opts: EngineOptions,
    multi_range: AtomicBool,
    size: OnceLock<u64>,
    counters: Counters,
}

/// One kind of request, retried as a unit.
enum Op<'a> {
    Len,
    Tail(u64),
    Get(&'a [Range<u64>]),
}

enum OpOut {
    Len(u64),
    Tail(Bytes, u64),
    Get(GetAnswer),
}

/// What one GET returned for the wanted ranges.
struct GetAnswer {
    parts: Vec<Option<Bytes>>,
    /// The server does not do multi-range requests properly: stop sending them.
    single_only: bool,
}

/// How an error names `m`.
pub(crate) fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "request",
    }
}

/// The error for a request that got no response (or whose body broke off): the method, URL
/// and range, and `e` with its chain of causes.
pub(crate) fn transport(
    method: &Method,
    url: &Url,
    range: &RangeList,
    e: &reqwest::Error,
) -> Error {
    let mut message = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    Error::Transport {
        method: method_name(method),
        url: url.to_string(),
        range: range.clone(),
        message,
        timeout: e.is_timeout(),
    }
}

impl Engine {
    pub fn new(endpoints: Vec<Endpoint>, opts: EngineOptions) -> Engine {
        let multi = !opts.force_single_range;
        Engine {
            endpoints,
            current: AtomicUsize::new(0),
            opts,
            multi_range: AtomicBool::new(multi),
            size: OnceLock::new(),
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> HttpCounters {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HttpCounters {
            requests: l(&c.requests),
            retries: l(&c.retries),
            body_bytes: l(&c.body_bytes),
            range_ignored: l(&c.range_ignored),
            multi_range_fallbacks: l(&c.multi_range_fallbacks),
            redirects: l(&c.redirects),
            reauthorizations: l(&c.reauthorizations),
        }
    }

    /// The endpoint that last worked (for descriptions).
    pub fn current_url(&self) -> &Url {
        let i = self
            .current
            .load(Ordering::Relaxed)
            .min(self.endpoints.len().saturating_sub(1));
        &self.endpoints[i].url
    }

    /// Sends one request to `ep`, following redirects (and caching their target) and
    /// re-authorising once on 401. Returns the final response whatever its status.
    async fn send(
        &self,
        ep: &Endpoint,
        method: Method,
        range: Option<&str>,
        what: &RangeList,
    ) -> Result<(Response, Url)> {
        let mut reauthorized = false;
        let mut hops = 0;
        let mut redirect_target = ep.cached_redirect();
        loop {
            let (url, via_redirect) = match &redirect_target {
                Some(u) => (u.clone(), true),
                None => (ep.url.clone(), false),
            };
            let mut req = ep
                .client
                .request(method.clone(), url.clone())
                .timeout(self.opts.retry.request_timeout)
                .header(ACCEPT_ENCODING, "identity");
            if let Some(r) = range {
                req = req.header(RANGE, r);
            }
            let mut gen = 0;
            if !via_redirect {
                // Credentials and configured headers go to the registry only, never to the
                // storage a redirect points at.
                for (k, v) in &ep.headers {
                    req = req.header(k, v);
                }
                if let Some(auth) = &ep.auth {
                    let (h, g) = auth.header().await?;
                    gen = g;
                    if let Some(h) = h {
                        req = req.header(AUTHORIZATION, h);
                    }
                }
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if via_redirect => {
                    // The storage behind the redirect failed: forget it, ask the registry again.
                    tracing::debug!(
                        "redirect target {url} failed ({e}); asking the registry again"
                    );
                    ep.set_redirect(None);
                    redirect_target = None;
                    hops += 1;
                    if hops > 5 {
                        return Err(transport(&method, &url, what, &e));
                    }
                    continue;
                }
                Err(e) => return Err(transport(&method, &url, what, &e)),
            };
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l).ok());
                let Some(loc) = loc else {
                    return Err(Error::Protocol {
                        url: url.to_string(),
                        range: what.clone(),
                        reason: format!("HTTP {status} without a usable Location"),
                    });
                };
                hops += 1;
                if hops > 5 {
                    return Err(Error::Protocol {
                        url: url.to_string(),
                        range: what.clone(),
                        reason: "more than 5 redirects".into(),
                    });
                }
                self.counters.redirects.fetch_add(1, Ordering::Relaxed);
                ep.set_redirect(Some((loc.clone(), Instant::now() + self.opts.redirect_ttl)));
                redirect_target = Some(loc);
                continue;
            }
            if via_redirect
                && (status.is_client_error() || status.is_server_error())
                && status != StatusCode::RANGE_NOT_SATISFIABLE
                && hops < 5
            {
                // Expired signed URL or failing storage: forget it, ask the registry again.
                tracing::debug!(
                    "redirect target {url} answered {status}; asking the registry again"
                );
                ep.set_redirect(None);
                redirect_target = None;
                hops += 1;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !reauthorized && !via_redirect {
                if let Some(auth) = &ep.auth {
                    reauthorized = true;
                    self.counters
                        .reauthorizations
                        .fetch_add(1, Ordering::Relaxed);
                    auth.unauthorized(url.as_str(), resp.headers(), gen).await?;
                    continue;
                }
            }
            return Ok((resp, url));
        }
    }

    /// Runs `attempt` on the current endpoint with retries, then on the following ones.
    async fn with_retries(&self, op: Op<'_>, what: &RangeList) -> Result<OpOut> {
        let method = if matches!(op, Op::Len) {
            Method::HEAD
        } else {
            Method::GET
        };
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed) % n.max(1);
        let mut last_err = None;
        let mut attempts = 0u32;
        for k in 0..n {
            let i = (first + k) % n;
            let ep = &self.endpoints[i];
            let start = Instant::now();
            for a in 1..=self.opts.retry.max_attempts.max(1) {
                attempts += 1;
                match self.attempt(ep, &op, what).await {
                    Ok(v) => {
                        self.current.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Err(e) => {
                        let retry = e.is_retryable()
                            && a < self.opts.retry.max_attempts
                            && start.elapsed() < self.opts.retry.max_elapsed;
                        tracing::debug!(
                            "{} {} ({what}): attempt {a}: {e}",
                            method_name(&method),
                            ep.url
                        );
                        if !retry {
                            last_err = Some((e, a > 1));
                            break;
                        }
                        self.counters.retries.fetch_add(1, Ordering::Relaxed);
                        last_err = Some((e, true));
                        tokio::time::sleep(self.opts.retry.backoff(a)).await;
                    }
                }
            }
        }
        match last_err {
            Some((e, true)) => Err(Error::RetriesExhausted {
                attempts,
                last: Box::new(e),
            }),
            Some((e, false)) => Err(e),
            None => Err(Error::InvalidArgument("no endpoints to fetch from".into())),
        }
    }

    /// The blob's length: from an earlier answer, else `HEAD`, else `GET bytes=0-0`.
    pub async fn len(&self) -> Result<u64> {
        if let Some(s) = self.size.get() {
            return Ok(*s);
        }
        let none = RangeList::default();
        let len = match self.with_retries(Op::Len, &none).await? {
            OpOut::Len(l) => l,
            _ => return Err(Error::InvalidArgument("engine: unexpected answer".into())),
        };
        let _ = self.size.set(len);
        Ok(len)
    }

    /// The last `n` bytes and the blob's length, in one suffix-range request.
    pub async fn read_tail(&self, n: u64) -> Result<(Bytes, u64)> {
        let n = n.max(1);
        let what = RangeList::default();
        match self.with_retries(Op::Tail(n), &what).await? {
            OpOut::Tail(b, t) => Ok((b, t)),
            _ => Err(Error::InvalidArgument("engine: unexpected answer".into())),
        }
    }

    /// Fetches `ranges` (non-empty, inside the blob), in as few requests as the server allows.
    pub async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let mut out: Vec<Option<Bytes>> = vec![None; ranges.len()];
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        if ranges.len() > 1 && self.multi_range.load(Ordering::Relaxed) {
            let idx: Vec<usize> = (0..ranges.len()).collect();
            for group in idx.chunks(self.opts.max_ranges_per_request.max(1)) {
                let rs: Vec<Range<u64>> = group.iter().map(|&i| ranges[i].clone()).collect();
                let what = RangeList(rs.clone());
                let ans = match self.with_retries(Op::Get(&rs), &what).await? {
                    OpOut::Get(a) => a,
                    _ => return Err(Error::InvalidArgument("engine: unexpected answer".into())),
                };
                if ans.single_only && self.multi_range.swap(false, Ordering::Relaxed) {
                    self.counters
                        .multi_range_fallbacks
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        "{}: the server mishandles multi-range requests; using single ranges",
                        self.current_url()
                    );
                }
                for (&i, p) in group.iter().zip(ans.parts) {
                    out[i] = p;
                }
                if !self.multi_range.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
        // Whatever is still missing: one request per range, a few at a time.
        let missing: Vec<usize> = (0..ranges.len()).filter(|&i| out[i].is_none()).collect();
        let fetched: Vec<(usize, Bytes)> = stream::iter(missing)
            .map(|i| async move {
                let r = ranges[i].clone();
                let what = RangeList(vec![r.clone()]);
                let rs = [r];
                let ans = match self.with_retries(Op::Get(&rs), &what).await? {
                    OpOut::Get(a) => a,
                    _ => return Err(Error::InvalidArgument("engine: unexpected answer".into())),
                };
                let part =
                    ans.parts
                        .into_iter()
                        .next()
                        .flatten()
                        .ok_or_else(|| Error::Protocol {
                            url: self.current_url().to_string(),
                            range: what.clone(),
                            reason: "the answer did not contain the requested range".into(),
                        })?;
                Ok::<_, Error>((i, part))
            })
            .buffer_unordered(self.opts.single_range_concurrency.max(1))
            .try_collect()
            .await?;
        for (i, b) in fetched {
            out[i] = Some(b);
        }
        out.into_iter()
            .zip(ranges)
            .map(|(b, r)| {
                b.ok_or_else(|| Error::Protocol {
                    url: self.current_url().to_string(),
                    range: RangeList(vec![r.clone()]),
                    reason: "range not delivered".into(),
                })
            })
            .collect()
    }

    async fn attempt_len(&self, ep: &Endpoint) -> Result<u64> {
        let none = RangeList::default();
        let (resp, url) = self.send(ep, Method::HEAD, None, &none).await?;
        let status = resp.status();
        if status.is_success() {
            // Not `content_length()`: for HEAD that is the (empty) body's size.
            let header = resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(l) = header {
                return Ok(l);
            }
        }
        if status.is_server_error() {
            return Err(status_error(Method::HEAD, &url, &none, resp).await);
        }
        // HEAD refused or without a length: a one-byte GET tells the total.
        let r = RangeList::from(0..1);
        let (resp, url) = self.send(ep, Method::GET, Some("bytes=0-0"), &r).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                content_range_of(&resp, &url, &r)?
                    .total
                    .ok_or_else(|| Error::Protocol {
                        url: url.to_string(),
                        range: r.clone(),
                        reason: "Content-Range has no total length".into(),
                    })
            }
            StatusCode::OK => resp.content_length().ok_or_else(|| Error::Protocol {
                url: url.to_string(),
                range: r.clone(),
                reason: "200 without Content-Length".into(),
            }),
            _ => Err(status_error(Method::GET, &url, &r, resp).await),
        }
    }

    async fn attempt_tail(&self, ep: &Endpoint, n: u64) -> Result<(Bytes, u64)> {
        let what = RangeList::default();
        let header = format!("bytes=-{n}");
        let (resp, url) = self.send(ep, Method::GET, Some(&header), &what).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let cr = content_range_of(&resp, &url, &what)?;
                let total = cr.total.ok_or_else(|| Error::Protocol {
                    url: url.to_string(),
                    range: what.clone(),
                    reason: "Content-Range of a suffix request has no total length".into(),
                })?;
                if cr.range.end != total || cr.range.end - cr.range.start > n {
                    return Err(Error::Protocol {
                        url: url.to_string(),
                        range: what.clone(),
                        reason: format!(
                            "asked for the last {n} bytes, got {}-{}/{total}",
                            cr.range.start,
                            cr.range.end - 1
                        ),
                    });
                }
                let _ = self.size.set(total);
                let body = self
                    .read_exact(
                        resp,
                        &url,
                        &RangeList(vec![cr.range.clone()]),
                        cr.range.end - cr.range.start,
                    )
                    .await?;
                Ok((body, total))
            }
            StatusCode::OK => {
                self.counters.range_ignored.fetch_add(1, Ordering::Relaxed);
                let total = resp.content_length().ok_or_else(|| Error::Protocol {
                    url: url.to_string(),
                    range: what.clone(),
                    reason: "200 to a Range request without Content-Length".into(),
                })?;
                let _ = self.size.set(total);
                let range = total.saturating_sub(n)..total;
                let parts = self
                    .extract_from_full(resp, &url, std::slice::from_ref(&range), total)
                    .await?;
                Ok((parts.into_iter().next().unwrap_or_default(), total))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Ok((Bytes::new(), 0)),
            _ => Err(status_error(Method::GET, &url, &what, resp).await),
        }
    }

    async fn attempt(&self, ep: &Endpoint, op: &Op<'_>, what: &RangeList) -> Result<OpOut> {
        Ok(match op {
            Op::Len => OpOut::Len(self.attempt_len(ep).await?),
            Op::Tail(n) => {
                let (b, t) = self.attempt_tail(ep, *n).await?;
                OpOut::Tail(b, t)
            }
            Op::Get(rs) => OpOut::Get(self.get(ep, rs, what).await?),
        })
    }

    /// One GET for `ranges` (one or more), interpreting every kind of answer.
    async fn get(
        &self,
        ep: &Endpoint,
        ranges: &[Range<u64>],
        what: &RangeList,
    ) -> Result<GetAnswer> {
        let header = range_header(ranges);
        let (resp, url) = self.send(ep, Method::GET, Some(&header), what).await?;
        let status = resp.status();
        let multi = ranges.len() > 1;
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let ct = resp
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if let Some(boundary) = multipart_boundary(&ct) {
                    let wanted: u64 = ranges.iter().map(|r| r.end - r.start).sum();
                    let limit = wanted * 2 + 1024 * ranges.len() as u64 + 64 * 1024;
                    let body = self.read_limited(resp, &url, what, limit).await?;
                    match parse_multipart(&body, &boundary) {
                        Ok(parts) => {
                            let found: Vec<Option<Bytes>> = ranges
                                .iter()
                                .map(|r| {
                                    parts
                                        .iter()
                                        .find(|p| p.range.start <= r.start && r.end <= p.range.end)
                                        .map(|p| {
                                            let off =
                                                p.body.start + (r.start - p.range.start) as usize;
                                            body.slice(off..off + (r.end - r.start) as usize)
                                        })
                                })
                                .collect();
                            let incomplete = found.iter().any(Option::is_none);
                            Ok(GetAnswer {
                                parts: found,
                                single_only: incomplete,
                            })
                        }
                        // A truncated multipart body looks like a transient failure if it was
                        // cut short; a mangled one means the server cannot do it.
                        Err(reason)
                            if reason.contains("truncated")
                                || reason.contains("missing closing") =>
                        {
                            Err(Error::Protocol {
                                url: url.to_string(),
                                range: what.clone(),
                                reason: format!("multipart body: {reason}"),
                            })
                        }
                        Err(reason) => {
                            tracing::debug!("{url}: malformed multipart answer ({reason})");
                            Ok(GetAnswer {
                                parts: vec![None; ranges.len()],
                                single_only: true,
                            })
                        }
                    }
                } else {
                    let cr = content_range_of(&resp, &url, what)?;
                    if let Some(t) = cr.total {
                        let _ = self.size.set(t);
                    }
                    let covered: Vec<bool> = ranges
                        .iter()
                        .map(|r| cr.range.start <= r.start && r.end <= cr.range.end)
                        .collect();
                    if !covered.iter().any(|&c| c) {
                        return Err(Error::Protocol {
                            url: url.to_string(),
                            range: what.clone(),
                            reason: format!(
                                "the answer holds bytes {}-{}, none of the requested ranges",
                                cr.range.start,
                                cr.range.end - 1
                            ),
                        });
                    }
                    let body = self
                        .read_exact(resp, &url, what, cr.range.end - cr.range.start)
                        .await?;
                    let parts: Vec<Option<Bytes>> = ranges
                        .iter()
                        .zip(&covered)
                        .map(|(r, &c)| {
                            c.then(|| {
                                let off = (r.start - cr.range.start) as usize;
                                body.slice(off..off + (r.end - r.start) as usize)
                            })
                        })
                        .collect();
                    Ok(GetAnswer {
                        single_only: multi && covered.iter().any(|&c| !c),
                        parts,
                    })
                }
            }
            StatusCode::OK => {
                self.counters.range_ignored.fetch_add(1, Ordering::Relaxed);
                let total = resp.content_length();
                if let Some(t) = total {
                    let _ = self.size.set(t);
                }
                let parts = self
                    .extract_from_full(resp, &url, ranges, total.unwrap_or(u64::MAX))
                    .await?;
                Ok(GetAnswer {
                    parts: parts.into_iter().map(Some).collect(),
                    single_only: multi,
                })
            }
            StatusCode::BAD_REQUEST
            | StatusCode::RANGE_NOT_SATISFIABLE
            | StatusCode::NOT_IMPLEMENTED
                if multi =>
            {
                Ok(GetAnswer {
                    parts: vec![None; ranges.len()],
                    single_only: true,
                })
            }
            _ => Err(status_error(Method::GET, &url, what, resp).await),
        }
    }

    async fn next_chunk(
        &self,
        resp: &mut Response,
        url: &Url,
        what: &RangeList,
    ) -> Result<Option<Bytes>> {
        match resp.chunk().await {
            Ok(Some(c)) => {
                self.counters
                    .body_bytes
                    .fetch_add(c.len() as u64, Ordering::Relaxed);
                Ok(Some(c))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(transport(&Method::GET, url, what, &e)),
        }
    }

    /// Reads a body that must be exactly `n` bytes long.
    async fn read_exact(
        &self,
        mut resp: Response,
        url: &Url,
        what: &RangeList,
        n: u64,
    ) -> Result<Bytes> {
        let mut buf = BytesMut::with_capacity(n.min(64 << 20) as usize);
        while let Some(c) = self.next_chunk(&mut resp, url, what).await? {
            if buf.len() as u64 + c.len() as u64 > n {
                return Err(Error::Protocol {
                    url: url.to_string(),
                    range: what.clone(),
                    reason: format!("body longer than the {n} bytes announced"),
                });
            }
            buf.extend_from_slice(&c);
        }
        if (buf.len() as u64) < n {
            return Err(Error::Protocol {
                url: url.to_string(),
                range: what.clone(),
                reason: format!("body truncated: {} of {n} bytes", buf.len()),
            });
        }
        Ok(buf.freeze())
    }

    /// Reads a body of at most `limit` bytes, checking `Content-Length` when present.
    async fn read_limited(
        &self,
        mut resp: Response,
        url: &Url,
        what: &RangeList,
        limit: u64,
    ) -> Result<Bytes> {
        let announced = resp.content_length();
        if announced.is_some_and(|l| l > limit) {
            return Err(Error::Protocol {
                url: url.to_string(),
                range: what.clone(),
                reason: format!(
                    "body of {} bytes is larger than expected",
                    announced.unwrap_or(0)
                ),
            });
        }
        let mut buf = BytesMut::new();
        while let Some(c) = self.next_chunk(&mut resp, url, what).await? {
            if buf.len() as u64 + c.len() as u64 > limit {
                return Err(Error::Protocol {
                    url: url.to_string(),
                    range: what.clone(),
                    reason: format!("body larger than the {limit} bytes expected"),
                });
            }
            buf.extend_from_slice(&c);
        }
        if announced.is_some_and(|l| l != buf.len() as u64) {
            return Err(Error::Protocol {
                url: url.to_string(),
                range: what.clone(),
                reason: format!(
                    "body truncated: {} of {} bytes",
                    buf.len(),
                    announced.unwrap_or(0)
                ),
            });
        }
        Ok(buf.freeze())
    }

    /// The server sent the whole blob: keep only `ranges`, discarding everything else as it
    /// streams by, and stop reading after the last one (the connection is then dropped).
    async fn extract_from_full(
        &self,
        mut resp: Response,
        url: &Url,
        ranges: &[Range<u64>],
        total: u64,
    ) -> Result<Vec<Bytes>> {
        let what = RangeList(ranges.to_vec());
        let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
        if end > total {
            return Err(Error::Protocol {
                url: url.to_string(),
                range: what,
                reason: format!("the blob is only {total} bytes long"),
            });
        }
        let mut bufs: Vec<BytesMut> = ranges
            .iter()
            .map(|r| BytesMut::with_capacity((r.end - r.start).min(64 << 20) as usize))
            .collect();
        let mut pos = 0u64;
        while pos < end {
            let Some(c) = self.next_chunk(&mut resp, url, &what).await? else {
                return Err(Error::Protocol {
                    url: url.to_string(),
                    range: what,
                    reason: format!("body ended at byte {pos}, before byte {end}"),
                });
            };
            let cend = pos + c.len() as u64;
            for (r, b) in ranges.iter().zip(bufs.iter_mut()) {
                let from = r.start.max(pos);
                let to = r.end.min(cend);
                if from < to {
                    b.extend_from_slice(&c[(from - pos) as usize..(to - pos) as usize]);
                }
            }
            pos = cend;
        }
        Ok(bufs.into_iter().map(BytesMut::freeze).collect())
    }
}

fn content_range_of(resp: &Response, url: &Url, what: &RangeList) -> Result<range::ContentRange> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    v.and_then(parse_content_range)
        .ok_or_else(|| Error::Protocol {
            url: url.to_string(),
            range: what.clone(),
            reason: format!("206 with missing or invalid Content-Range {v:?}"),
        })
}

async fn status_error(method: Method, url: &Url, what: &RangeList, resp: Response) -> Error {
    let status = resp.status().as_u16();
    // A little of the body helps (registries explain errors in JSON); never read much.
    let mut resp = resp;
    let mut detail = Vec::new();
    while detail.len() < 512 {
        match tokio::time::timeout(Duration::from_secs(2), resp.chunk()).await {
            Ok(Ok(Some(c))) => detail.extend_from_slice(&c[..c.len().min(512 - detail.len())]),
            _ => break,
        }
    }
    Error::Status {
        method: method_name(&method),
        url: url.to_string(),
        range: what.clone(),
        status,
        detail: String::from_utf8_lossy(&detail).trim().to_owned(),
    }
}

/// A reqwest client for the engine: no automatic redirects (the engine follows and caches
/// them), rustls, keep-alive, HTTP/2 when the server offers it over TLS.
///
/// Called in a tokio runtime's context, the client is shared with every other source opened
/// on that runtime with the same settings: one set of TLS roots (both root stores, a few
/// hundred KiB) and one pool of connections, whose read buffers stay as large as the largest
/// response they carried (a TOC) while idle. Ten registry layers on the snapshotter's runtime
/// held ten of each. Clients never cross runtimes: a pooled connection is driven by a task
/// of the runtime it was opened on.
pub(crate) fn build_client(
    insecure_skip_verify: bool,
    policy: &RetryPolicy,
) -> Result<reqwest::Client> {
    type Key = (tokio::runtime::Id, bool, Duration);
    /// The most recently used clients; a few, since runtimes come and go (tests make many).
    static SHARED: Mutex<Vec<(Key, reqwest::Client)>> = Mutex::new(Vec::new());
    const KEEP: usize = 8;
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return new_client(insecure_skip_verify, policy);
    };
    let key = (handle.id(), insecure_skip_verify, policy.connect_timeout);
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = shared.iter().position(|(k, _)| *k == key) {
        let entry = shared.remove(i);
        let client = entry.1.clone();
        shared.push(entry);
        return Ok(client);
    }
    let client = new_client(insecure_skip_verify, policy)?;
    if shared.len() >= KEEP {
        shared.remove(0);
    }
    shared.push((key, client.clone()));
    Ok(client)
}

fn new_client(insecure_skip_verify: bool, policy: &RetryPolicy) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(policy.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .danger_accept_invalid_certs(insecure_skip_verify)
        .user_agent(concat!("estargz-io/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))
}

/// Header map from configured string pairs.
pub(crate) fn header_map(pairs: &std::collections::BTreeMap<String, String>) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| Error::Config(format!("header name {k:?}: {e}")))?;
        let val =
            HeaderValue::from_str(v).map_err(|e| Error::Config(format!("header {k}: {e}")))?;
        h.append(name, val);
    }
    Ok(h)
}
