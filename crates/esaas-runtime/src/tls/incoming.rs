//! TLS connections for tonic: accepted TCP connections, each handshaken
//! with the rustls configuration whose resolver [`super::reload`] updates.
//!
//! tonic's own `ServerTlsConfig` takes one fixed identity and no rustls
//! configuration or resolver, so a new certificate would need a restart;
//! this stream is what `serve_with_incoming_shutdown` gets instead.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::reload::Resolver;

/// Handshakes in flight at once; past that, accepting waits for one to end.
const MAX_HANDSHAKES: usize = 1024;

/// TLS 1.2 and 1.3 with the process's provider, HTTP/2 by ALPN, the
/// certificate `resolver` holds at each handshake.
pub fn server_config(resolver: Arc<Resolver>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(super::files::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS streams of `tcp`'s connections, handshaken concurrently (a slow
/// client delays no other). A failed or timed-out handshake (a plaintext
/// client, a client that does not trust the certificate) closes that
/// connection and is logged at debug; accept errors pass through to tonic.
pub fn tls_incoming<S>(
    tcp: S,
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>>
where
    S: Stream<Item = Result<TcpStream, std::io::Error>>,
{
    let acceptor = TlsAcceptor::from(config);
    tcp.map(move |accepted| {
        let acceptor = acceptor.clone();
        async move {
            let tcp = match accepted {
                Ok(tcp) => tcp,
                Err(e) => return Some(Err(e)),
            };
            let peer = tcp.peer_addr().ok();
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some(Ok(tls)),
                Ok(Err(e)) => {
                    tracing::debug!(?peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(?peer, "TLS handshake timed out");
                    None
                }
            }
        }
    })
    .buffer_unordered(MAX_HANDSHAKES)
    .filter_map(std::future::ready)
}
