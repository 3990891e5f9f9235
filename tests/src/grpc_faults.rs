//! A gRPC reverse proxy that loses answers, for the client's retry tests: it forwards
//! every call to the control plane over HTTP/2, except that the next `n` calls of a
//! chosen method get `UNAVAILABLE` instead of their answer, either after the call
//! reached the server (the answer was lost on the way back: the case that makes a
//! retry meet its own first attempt) or without forwarding it (the server was never
//! reached). It records the request messages of every call, so a test can check what
//! each attempt carried (the same `request_id`).
//!
//! `UNAVAILABLE` is sent as a trailers-only response (`:status 200`, `grpc-status:
//! 14` in the headers), which is how gRPC servers and proxies answer a call they
//! cannot serve (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md,
//! "Trailers-Only").

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, hyper::Error>;

/// What happens to a call the proxy fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Forwarded and served; the answer is replaced by UNAVAILABLE.
    Answer,
    /// Not forwarded; answered UNAVAILABLE at once.
    Request,
}

/// One call as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Call {
    /// `/esaas.v1.ClusterService/CreateCluster`.
    pub path: String,
    /// The request body: length-prefixed gRPC messages.
    pub body: Bytes,
    /// Whether the proxy failed it.
    pub failed: Option<Loss>,
}

impl Call {
    /// The first request message, decoded.
    pub fn message<M: prost::Message + Default>(&self) -> Option<M> {
        // 1 byte compressed flag, 4 bytes length, then the message.
        let len = u32::from_be_bytes(self.body.get(1..5)?.try_into().ok()?) as usize;
        M::decode(self.body.get(5..5 + len)?).ok()
    }
}

#[derive(Default)]
struct State {
    /// (path suffix, loss, calls left to fail)
    faults: Vec<(String, Loss, u32)>,
    calls: Vec<Call>,
}

/// The running proxy; stops when dropped.
pub struct GrpcFaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for GrpcFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcFaultProxy {
    /// Listens on a free port and forwards to `upstream` (plaintext HTTP/2).
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(upstream, state.clone(), req));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `http://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails the next `times` calls whose path ends with `method` (`/CreateCluster`).
    pub fn fail_next(&self, method: &str, loss: Loss, times: u32) {
        if let Ok(mut s) = self.state.lock() {
            s.faults.push((method.to_string(), loss, times));
        }
    }

    /// Every call so far whose path ends with `method`.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.state
            .lock()
            .map(|s| {
                s.calls
                    .iter()
                    .filter(|c| c.path.ends_with(method))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn unavailable() -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    let h = resp.headers_mut();
    h.insert("content-type", "application/grpc".parse().expect("header"));
    h.insert("grpc-status", "14".parse().expect("header"));
    h.insert(
        "grpc-message",
        "the%20proxy%20lost%20the%20answer".parse().expect("header"),
    );
    resp
}

async fn handle(
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_string();
    let loss = state.lock().ok().and_then(|mut s| {
        let loss = s.faults.iter_mut().find_map(|(m, loss, left)| {
            (*left > 0 && path.ends_with(m.as_str())).then(|| {
                *left -= 1;
                *loss
            })
        });
        s.calls.push(Call {
            path: path.clone(),
            body: body.clone(),
            failed: loss,
        });
        loss
    });
    if loss == Some(Loss::Request) {
        return Ok(unavailable());
    }
    let Ok(stream) = TcpStream::connect(upstream).await else {
        return Ok(unavailable());
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await
    else {
        return Ok(unavailable());
    };
    tokio::spawn(conn);
    let forwarded = Request::from_parts(parts, Full::new(body));
    let Ok(resp) = sender.send_request(forwarded).await else {
        return Ok(unavailable());
    };
    if loss == Some(Loss::Answer) {
        // Read the whole answer first: the server has committed what it did.
        let _ = resp.into_body().collect().await;
        return Ok(unavailable());
    }
    Ok(resp.map(|b| b.boxed()))
}
