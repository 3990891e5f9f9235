//! A TCP forwarder that counts the bytes it carries each way, put between
//! a worker and the control plane to measure what their stream sends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A running forwarder; stops when dropped.
pub struct CountingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    to_upstream: Arc<AtomicU64>,
    from_upstream: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

async fn pump<R, W>(mut from: R, mut to: W, count: Arc<AtomicU64>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        count.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl CountingProxy {
    /// Forwards connections on a free local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the counting proxy")?;
        let addr = listener.local_addr()?;
        let to_upstream = Arc::new(AtomicU64::new(0));
        let from_upstream = Arc::new(AtomicU64::new(0));
        let (up, down) = (to_upstream.clone(), from_upstream.clone());
        let task = tokio::spawn(async move {
            // Dropped (and so aborted) with the accept loop.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (up, down) = (up.clone(), down.clone());
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pump(cr, sw, up), pump(sr, cw, down));
                });
            }
        });
        Ok(Self {
            addr,
            to_upstream,
            from_upstream,
            task,
        })
    }

    /// Bytes carried so far: (to the upstream, from the upstream).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.to_upstream.load(Ordering::Relaxed),
            self.from_upstream.load(Ordering::Relaxed),
        )
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = echo.accept().await {
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(b"hello, world").await;
                }
            }
        });
        let proxy = CountingProxy::start(upstream).await.expect("proxy");
        let mut c = TcpStream::connect(proxy.addr).await.expect("connect");
        c.write_all(b"hello").await.expect("write");
        let mut back = [0u8; 12];
        c.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"hello, world");
        assert_eq!(proxy.bytes(), (5, 12));
    }
}
