//! [`HttpSource`]: a blob at a plain HTTP(S) URL, fetched with Range requests.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Url;

use super::{check_ranges, BlobSource};
use crate::error::{Error, Result};
use crate::http::{build_client, Endpoint, Engine, EngineOptions, HttpCounters};

/// A blob at an `http://` or `https://` URL (no authentication). Redirects are followed and
/// their target reused; the rest is as for [`super::RegistrySource`].
///
/// ```no_run
/// # async fn demo() -> estargz_io::Result<()> {
/// use estargz_io::source::{BlobSource, HttpSource};
///
/// let src = HttpSource::new("http://127.0.0.1:8080/layer.esgz", Default::default())?;
/// let (tail, len) = src.read_tail(51).await?; // one request: footer and length
/// # let _ = (tail, len); Ok(()) }
/// ```
#[derive(Debug)]
pub struct HttpSource {
    url: Url,
    engine: Engine,
}

/// Options of an [`HttpSource`].
#[derive(Clone, Debug, Default)]
pub struct HttpOptions {
    /// Retries, timeouts, multi-range behaviour.
    pub engine: EngineOptions,
    /// Accept any TLS certificate (testing only).
    pub insecure_skip_verify: bool,
}

impl HttpSource {
    /// A source for `url`. No request is sent until the first read.
    pub fn new(url: &str, opts: HttpOptions) -> Result<HttpSource> {
        let parsed = Url::parse(url).map_err(|e| Error::Reference {
            value: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Reference {
                value: url.to_owned(),
                reason: "only http:// and https:// URLs are supported".into(),
            });
        }
        let client = build_client(opts.insecure_skip_verify, &opts.engine.retry)?;
        let ep = Endpoint::new(parsed.clone(), client, HeaderMap::new(), None);
        Ok(HttpSource {
            url: parsed,
            engine: Engine::new(vec![ep], opts.engine),
        })
    }

    /// Request counters of this source.
    pub fn http_counters(&self) -> HttpCounters {
        self.engine.counters()
    }
}

#[async_trait]
impl BlobSource for HttpSource {
    async fn len(&self) -> Result<u64> {
        self.engine.len().await
    }

    async fn read_ranges(&self, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let len = self.engine.len().await?;
        check_ranges(self.url.as_str(), ranges, len)?;
        self.engine.read_ranges(ranges).await
    }

    async fn read_tail(&self, n: u64) -> Result<(Bytes, u64)> {
        self.engine.read_tail(n).await
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}
