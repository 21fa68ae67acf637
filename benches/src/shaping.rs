//! A shaping TCP proxy for the network benchmarks: every byte is delivered a fixed delay
//! after it arrived (so each request/response exchange costs one added round trip), and each
//! direction is one link of capped bandwidth shared by every connection (as a real network
//! link is: parallel connections do not multiply the bandwidth).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One direction of the link: when it is free again.
#[derive(Debug, Clone)]
struct Link {
    free_at: Arc<Mutex<Instant>>,
    rate: f64,
}

impl Link {
    fn new(rate: f64) -> Link {
        Link {
            free_at: Arc::new(Mutex::new(Instant::now())),
            rate,
        }
    }

    /// Reserves the link for `len` bytes that may start at `due`; returns when they have
    /// been sent.
    fn reserve(&self, due: Instant, len: usize) -> Instant {
        let mut free_at = self.free_at.lock().unwrap_or_else(PoisonError::into_inner);
        let start = due.max(*free_at);
        *free_at = start + Duration::from_secs_f64(len as f64 / self.rate);
        *free_at
    }
}

/// Copies `from` to `to`: each read is delivered `delay` after it arrived, through `link`.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    link: Link,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    while let Some((due, data)) = rx.recv().await {
        let done = link.reserve(due, data.len());
        tokio::time::sleep_until(done.into()).await;
        if to.write_all(&data).await.is_err() {
            break;
        }
    }
    reader.abort();
}

/// Starts a shaping proxy to `upstream` on a free loopback port, on the current tokio
/// runtime: `rtt` added to every round trip, `rate` bytes per second each way (shared by all
/// connections). Returns its address.
pub async fn start_proxy(upstream: SocketAddr, rtt: Duration, rate: f64) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (down, up) = (Link::new(rate), Link::new(rate));
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let _ = c.set_nodelay(true);
            let (down, up) = (down.clone(), up.clone());
            tokio::spawn(async move {
                let Ok(u) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = u.set_nodelay(true);
                let (cr, cw) = c.into_split();
                let (ur, uw) = u.into_split();
                let one_way = rtt / 2;
                tokio::join!(
                    delay_line(cr, uw, one_way, up),
                    delay_line(ur, cw, one_way, down)
                );
            });
        }
    });
    addr
}
