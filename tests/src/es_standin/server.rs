//! The HTTPS listener: one port for every cluster, the certificate chosen
//! by SNI, each request routed to the cluster it was addressed to.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

use super::answer::{PENDING, es_error, parse_query};
use super::routes::{Call, answer};
use super::{EsRequest, Shared, lock};

/// Picks the registered cluster's certificate by SNI.
struct SniResolver(std::sync::Weak<Shared>);

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI (an IP address was dialled), no certificate: the cluster is
        // known only by its name.
        let name = hello.server_name()?.to_ascii_lowercase();
        let shared = self.0.upgrade()?;
        let state = lock(&shared);
        state.clusters.get(&name).map(|c| c.cert.clone())
    }
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts connections on `listener` until the stand-in stops.
pub(super) fn spawn(listener: TcpListener, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(Arc::downgrade(shared))));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let weak = Arc::downgrade(shared);
    let stop = shared.stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
            };
            let acceptor = acceptor.clone();
            let weak = weak.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let tls = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = acceptor.accept(tcp) => match r {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                };
                let Some(host) = tls.get_ref().1.server_name().map(str::to_ascii_lowercase) else {
                    return;
                };
                // The connection belongs to the cluster that presented
                // the certificate: it ends when that cluster goes.
                let Some(cluster_gone) = weak
                    .upgrade()
                    .and_then(|shared| lock(&shared).clusters.get(&host).map(|c| c.conns.clone()))
                else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let weak = weak.clone();
                    let host = host.clone();
                    async move { Ok::<_, Infallible>(handle(weak, host, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = cluster_gone.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    Ok(())
}

/// Elasticsearch's product header (`RestController.ELASTIC_PRODUCT_HTTP_HEADER`,
/// added to the thread context of every request since 7.14). The official
/// clients refuse a server whose successful answers lack it:
/// elasticsearch-py `BaseClient.perform_request` raises
/// `UnsupportedProductError` ("The client noticed that the server is not
/// Elasticsearch and we do not support this unknown product") on a 2xx
/// without it, elasticsearch-java `ElasticsearchTransportBase.checkProductHeader`
/// throws "Missing [X-Elastic-Product] header" on a 200.
const PRODUCT_HEADER: (&str, &str) = ("x-elastic-product", "Elasticsearch");

/// Answers one request to the cluster at `host` (the SNI of its connection).
pub(super) async fn handle<B: hyper::body::Body>(
    shared: std::sync::Weak<Shared>,
    host: String,
    req: Request<B>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|h: &HeaderValue| h.to_str().ok())
            .map(String::from)
    };
    let call = Arc::new(Call {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query()),
        auth: header(AUTHORIZATION),
        content_type: header(CONTENT_TYPE),
        body: body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
        started: Instant::now(),
    });
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| call.path.clone());
    // An endpoint that waits for the cluster answers PENDING until it is
    // done; the lock is not held while it waits.
    let (status, headers, body) = loop {
        let Some(shared) = shared.upgrade() else {
            break es_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_closed_exception",
                "stopped",
            );
        };
        let stop = shared.stop.clone();
        // Endpoints answer under the lock and may block on S3 (snapshot
        // repositories): on tokio's blocking pool, never on a runtime thread.
        let answered = {
            let (shared, call, host, path_and_query) = (
                shared.clone(),
                call.clone(),
                host.clone(),
                path_and_query.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let mut state = lock(&shared);
                let delay = state.drain_delay;
                let answer = match state.clusters.get_mut(&host) {
                    // Forgotten while the connection was open (it is being dropped).
                    None => es_error(
                        StatusCode::NOT_FOUND,
                        "resource_not_found_exception",
                        &format!("no cluster at {host}"),
                    ),
                    Some(c) => {
                        c.reconcile(Instant::now(), delay);
                        let answer = answer(c, &call);
                        c.reconcile(Instant::now(), delay);
                        answer
                    }
                };
                if answer.0 != PENDING {
                    state.requests.push(EsRequest {
                        method: call.method.to_string(),
                        host: host.clone(),
                        path: path_and_query.clone(),
                        status: answer.0.as_u16(),
                    });
                }
                answer
            })
            .await
        };
        match answered {
            Ok(answer) if answer.0 != PENDING => break answer,
            Ok(_) => {}
            Err(_) => {
                break es_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "the endpoint panicked",
                );
            }
        }
        drop(shared);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        if stop.is_cancelled() {
            break es_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "node_closed_exception",
                "stopped",
            );
        }
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    // ...on every answer but a 401 or 403, from which
    // `RestResponse.filterHeaders` strips it (elastic/elasticsearch
    // `server/src/main/java/org/elasticsearch/rest/RestResponse.java`).
    let product = (status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN)
        .then(|| (PRODUCT_HEADER.0, PRODUCT_HEADER.1.to_string()));
    for (k, v) in headers.into_iter().chain(product) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}
