//! A TCP hop in front of PostgreSQL that can go down as a restarting server
//! does, for outage tests that must not disturb the shared server other
//! tests use. `restart_begins` drops every open connection at once (what
//! clients see of `pg_ctl restart -m immediate`, or of a crash) and refuses
//! new ones (the port closed while the server is down); `restart_ends`
//! takes connections again.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// The proxy; dropped, it stops.
pub struct PgProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
    accept: Arc<Mutex<Option<JoinHandle<()>>>>,
    upstream: SocketAddr,
}

impl PgProxy {
    /// A proxy to the server of `url`.
    pub async fn start(url: &str) -> Self {
        let upstream = upstream_of(url);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (up, _) = watch::channel(true);
        let proxy = Self {
            addr,
            up,
            accept: Arc::default(),
            upstream,
        };
        proxy.serve(listener).await;
        proxy
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        url.replacen(&self.upstream.to_string(), &self.addr.to_string(), 1)
            .replacen(
                &format!("localhost:{}", self.upstream.port()),
                &self.addr.to_string(),
                1,
            )
    }

    async fn serve(&self, listener: TcpListener) {
        let (upstream, up) = (self.upstream, self.up.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut down = up.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        *self.accept.lock().await = Some(task);
    }

    /// Drops every connection and closes the port.
    pub async fn restart_begins(&self) {
        self.up.send_replace(false);
        if let Some(task) = self.accept.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Opens the port again.
    pub async fn restart_ends(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.up.send_replace(true);
        self.serve(listener).await;
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.up.send_replace(false);
        if let Ok(mut accept) = self.accept.try_lock()
            && let Some(task) = accept.take()
        {
            task.abort();
        }
    }
}

/// The `host:port` of a `postgres://` URL (default port 5432).
fn upstream_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replacen("localhost", "127.0.0.1", 1);
    host_port.parse().expect("a host:port PostgreSQL URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_drop_and_come_back() {
        let url = crate::admin_database_url();
        let proxy = PgProxy::start(&url).await;
        let via = proxy.url(&url);
        assert_ne!(via, url);
        let one = |u: String| async move {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(&u).await?;
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&mut c)
                .await
        };
        assert_eq!(one(via.clone()).await.expect("before"), 1);
        proxy.restart_begins().await;
        assert!(one(via.clone()).await.is_err(), "refused while down");
        proxy.restart_ends().await;
        assert_eq!(one(via.clone()).await.expect("after"), 1);
    }
}
