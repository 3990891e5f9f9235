//! A fault-injecting HTTP/1.1 reverse proxy for tests: put it between an AWS SDK client and
//! moto (`AWS_ENDPOINT_URL_EKS` = [`FaultProxy::endpoint`]) and it forwards every request
//! (method, path, query, headers, body) to the upstream, or, at configurable rates, answers
//! instead with what a real AWS endpoint does when it is unwell:
//!
//! - throttling: `429` with `x-amzn-ErrorType: ThrottlingException` and
//!   `{"message":"Rate exceeded"}`. The Rust SDK reads the error code from that header
//!   (before the body's `code` / `__type`) and its `AwsErrorCodeClassifier` retries
//!   `ThrottlingException` and `TooManyRequestsException` (among others) as throttling;
//! - a server error: `500` with `x-amzn-ErrorType: ServerException` (EKS's modelled 5xx);
//!   the SDK's `HttpStatusCodeClassifier` retries 500, 502, 503 and 504 as transient;
//! - a delay before whatever happens next (to provoke timeouts);
//! - a dropped connection: closed without any response, the request never reaches the
//!   upstream (the SDK sees an I/O error, which it retries as transient);
//! - a dropped connection *after* forwarding: the upstream acted on the request, the client
//!   never hears of it. This is the case that makes a retried create meet its own node
//!   group (moto does not honour `clientRequestToken`);
//! - a held request: read, never forwarded, never answered, the connection kept open, as
//!   an endpoint that hangs behaves (a load balancer whose target stopped responding).
//!   Only the client's own deadlines end such a call; the SDK has none by default but the
//!   3.1 s connect timeout, which a held request passes.
//!
//! Decisions come from a seeded [`StdRng`] (two numbers drawn per request, in arrival
//! order), so a sequential run is reproducible; [`FaultProxy::set_faults`] swaps the
//! configuration and reseeds at run time. Every request is counted ([`Stats`]) and logged
//! ([`RequestRecord`], including the SDK's `amz-sdk-invocation-id` and
//! `amz-sdk-request: attempt=N; max=M`, so tests can count retries per call).
//!
//! Moto routes on the `Authorization` header's credential scope, which passes through
//! untouched, as does `Host` (so a signature stays valid).
//!
//! Tried with aws-sdk-eks 1.160 (standard retries, 5 attempts) against moto: throttling,
//! 500s and dropped connections are retried, `amz-sdk-request` counting `attempt=1, 2, 3`;
//! with every answer throttled the call ends after 5 requests with code
//! `ThrottlingException`, message `Rate exceeded`; a `CreateNodegroup` whose answer was
//! dropped after forwarding is retried and meets `409 ResourceInUseException` (`NodeGroup
//! already exists with name …`), its own node group.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long the proxy waits for the upstream before answering `502`.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// What the proxy does, at which rates. Probabilities are 0.0–1.0; `throttle`, `error_500`,
/// `drop`, `drop_after_forward` and `hold` are exclusive, taken in that order from one draw (if
/// they add up to more than 1, the later ones get what is left). `delay` is drawn on its
/// own and applies before whatever else happens.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Answer `429 ThrottlingException`.
    pub throttle: f64,
    /// Answer `500 ServerException`.
    pub error_500: f64,
    /// Close the connection without a response; the upstream never sees the request.
    pub drop: f64,
    /// Forward, then close the connection instead of relaying the upstream's answer.
    pub drop_after_forward: f64,
    /// Hold the request: never forward it, never answer, keep the connection open.
    pub hold: f64,
    /// Sleep [`Faults::delay_ms`] before anything else.
    pub delay: f64,
    /// The delay, in milliseconds.
    pub delay_ms: u64,
    /// Seed of the random decisions.
    pub seed: u64,
    /// Only requests whose path contains this are subject to faults (all if `None`).
    pub path_contains: Option<String>,
    /// Only requests of this method (`POST`: EKS's creates) are subject to faults (all if `None`).
    pub method: Option<String>,
    /// At most this many faulted requests (throttle, 500, drop) in a row; the next one is
    /// forwarded untouched. With the SDK's retries set above it, every call completes.
    pub max_consecutive: Option<u32>,
    /// Answer every DescribeNodegroup of a node group whose name contains this as EKS
    /// describes a degraded one (moto cannot make one): status `DEGRADED` and a health
    /// issue (`AsgInstanceLaunchFailures`, one of EKS's `NodegroupIssueCode`s).
    pub degrade_node_groups: Option<String>,
}

impl Faults {
    /// Forward everything untouched.
    pub fn none() -> Self {
        Self::default()
    }
}

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded; the upstream's answer was relayed.
    Forwarded,
    /// Answered `429 ThrottlingException` by the proxy.
    Throttled,
    /// Answered `500 ServerException` by the proxy.
    Error500,
    /// Connection closed without a response; not forwarded.
    Dropped,
    /// Forwarded, then the connection was closed without relaying the answer.
    DroppedAfterForward,
    /// Held: never forwarded, never answered (logged on arrival).
    Held,
    /// The upstream could not be reached or failed; answered `502`.
    UpstreamError,
}

/// Counters since start (or [`FaultProxy::reset`]). Once no request is in flight but the
/// held ones, `seen == forwarded + throttled + errors_500 + dropped + dropped_after_forward +
/// held + upstream_errors`; `delayed` counts requests that were delayed, whatever came next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received.
    pub seen: u64,
    /// Forwarded and answered with the upstream's response.
    pub forwarded: u64,
    /// Answered 429 by the proxy.
    pub throttled: u64,
    /// Answered 500 by the proxy.
    pub errors_500: u64,
    /// Delayed before being handled.
    pub delayed: u64,
    /// Closed without a response, not forwarded.
    pub dropped: u64,
    /// Forwarded, then closed without a response.
    pub dropped_after_forward: u64,
    /// Held without an answer.
    pub held: u64,
    /// Upstream failures (answered 502).
    pub upstream_errors: u64,
}

impl Stats {
    /// Requests the proxy failed on purpose (throttle, 500, both kinds of drop, held).
    pub fn faulted(&self) -> u64 {
        self.throttled + self.errors_500 + self.dropped + self.dropped_after_forward + self.held
    }

    /// Requests that reached the upstream.
    pub fn reached_upstream(&self) -> u64 {
        self.forwarded + self.dropped_after_forward
    }
}

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Arrival order, from 0.
    pub seq: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// `METHOD PATH?QUERY HTTP/1.1`.
    pub first_line: String,
    /// `x-amz-target` (JSON-1.x protocols; restJson1 services such as EKS send none).
    pub target: Option<String>,
    /// `amz-sdk-invocation-id`: the same for every attempt of one SDK call.
    pub invocation_id: Option<String>,
    /// `attempt=N` of `amz-sdk-request` (1 for the first try).
    pub attempt: Option<u32>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
    /// What the proxy did.
    pub outcome: Outcome,
    /// The status the client got (None when the connection was dropped).
    pub status: Option<u16>,
    /// The injected delay, in milliseconds (0 if none).
    pub delayed_ms: u64,
}

impl RequestRecord {
    /// `x-amz-target` if sent, else the request line.
    pub fn label(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.first_line)
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Dice {
    faults: Faults,
    rng: StdRng,
    consecutive: u32,
}

#[derive(Default)]
struct Counters {
    seen: AtomicU64,
    forwarded: AtomicU64,
    throttled: AtomicU64,
    errors_500: AtomicU64,
    delayed: AtomicU64,
    dropped: AtomicU64,
    dropped_after_forward: AtomicU64,
    held: AtomicU64,
    upstream_errors: AtomicU64,
}

struct Upstream {
    /// `host:port` to connect to.
    addr: String,
    /// The authority, for a request without `Host`.
    authority: String,
    /// A path prefix of the base URL (without trailing `/`).
    prefix: String,
}

struct Shared {
    dice: Mutex<Dice>,
    counters: Counters,
    log: Mutex<Vec<RequestRecord>>,
    upstream: Upstream,
}

/// The error a handler returns to make hyper close the connection without an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for DropConnection {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`, a base URL such as
    /// `http://127.0.0.1:5000` (plain HTTP; a path in it is prefixed to every request's).
    /// Runs on the caller's tokio runtime.
    pub async fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let uri: Uri = upstream
            .parse()
            .unwrap_or_else(|e| panic!("upstream {upstream:?}: {e}"));
        assert_eq!(
            uri.scheme_str(),
            Some("http"),
            "the fault proxy forwards plain HTTP only: {upstream}"
        );
        let authority = uri
            .authority()
            .unwrap_or_else(|| panic!("upstream {upstream:?} has no host"))
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let upstream_conf = Upstream {
            addr: format!("{}:{port}", authority.host()),
            authority: authority.to_string(),
            prefix: uri.path().trim_end_matches('/').to_string(),
        };
        let shared = Arc::new(Shared {
            dice: Mutex::new(Dice {
                rng: StdRng::seed_from_u64(faults.seed),
                faults,
                consecutive: 0,
            }),
            counters: Counters::default(),
            log: Mutex::new(Vec::new()),
            upstream: upstream_conf,
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let task = tokio::spawn(serve(listener, shared.clone()));
        FaultProxy {
            addr,
            upstream: upstream.to_string(),
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL_EKS` or `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream base URL.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Stats {
            seen: get(&c.seen),
            forwarded: get(&c.forwarded),
            throttled: get(&c.throttled),
            errors_500: get(&c.errors_500),
            delayed: get(&c.delayed),
            dropped: get(&c.dropped),
            dropped_after_forward: get(&c.dropped_after_forward),
            held: get(&c.held),
            upstream_errors: get(&c.upstream_errors),
        }
    }

    /// The current configuration.
    pub fn faults(&self) -> Faults {
        lock(&self.shared.dice).faults.clone()
    }

    /// Replaces the configuration and reseeds from `faults.seed`; applies to requests that
    /// arrive from now on.
    pub fn set_faults(&self, faults: Faults) {
        let mut dice = lock(&self.shared.dice);
        dice.rng = StdRng::seed_from_u64(faults.seed);
        dice.faults = faults;
        dice.consecutive = 0;
    }

    /// Every completed request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        let mut log = lock(&self.shared.log).clone();
        log.sort_by_key(|r| r.seq);
        log
    }

    /// Zeroes the counters and empties the log (the faults and the random sequence stay).
    pub fn reset(&self) {
        let c = &self.shared.counters;
        for a in [
            &c.seen,
            &c.forwarded,
            &c.throttled,
            &c.errors_500,
            &c.delayed,
            &c.dropped,
            &c.dropped_after_forward,
            &c.held,
            &c.upstream_errors,
        ] {
            a.store(0, Ordering::SeqCst);
        }
        lock(&self.shared.log).clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept loop owns the connection tasks: aborting it ends them all.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    // An error here is usually a dropped connection: ours, on purpose.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

struct Decision {
    outcome: Outcome,
    delay_ms: u64,
}

impl Shared {
    fn decide(&self, method: &str, path: &str) -> Decision {
        let mut dice = lock(&self.dice);
        // Two draws per request whatever the configuration, so the sequence stays aligned.
        let fault: f64 = dice.rng.random();
        let delay: f64 = dice.rng.random();
        let f = &dice.faults;
        if f.path_contains
            .as_deref()
            .is_some_and(|p| !path.contains(p))
            || f.method.as_deref().is_some_and(|m| m != method)
        {
            return Decision {
                outcome: Outcome::Forwarded,
                delay_ms: 0,
            };
        }
        let delay_ms = if delay < f.delay { f.delay_ms } else { 0 };
        let mut edge = 0.0;
        let mut outcome = Outcome::Forwarded;
        for (p, o) in [
            (f.throttle, Outcome::Throttled),
            (f.error_500, Outcome::Error500),
            (f.drop, Outcome::Dropped),
            (f.drop_after_forward, Outcome::DroppedAfterForward),
            (f.hold, Outcome::Held),
        ] {
            edge += p.max(0.0);
            if fault < edge {
                outcome = o;
                break;
            }
        }
        if outcome == Outcome::Forwarded {
            dice.consecutive = 0;
        } else if dice.max_reached() {
            outcome = Outcome::Forwarded;
            dice.consecutive = 0;
        } else {
            dice.consecutive += 1;
        }
        Decision { outcome, delay_ms }
    }

    fn count(&self, outcome: Outcome) {
        let c = &self.counters;
        match outcome {
            Outcome::Forwarded => &c.forwarded,
            Outcome::Throttled => &c.throttled,
            Outcome::Error500 => &c.errors_500,
            Outcome::Dropped => &c.dropped,
            Outcome::DroppedAfterForward => &c.dropped_after_forward,
            Outcome::Held => &c.held,
            Outcome::UpstreamError => &c.upstream_errors,
        }
        .fetch_add(1, Ordering::SeqCst);
    }
}

impl Dice {
    fn max_reached(&self) -> bool {
        self.faults
            .max_consecutive
            .is_some_and(|max| self.consecutive >= max)
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `attempt=N` out of `amz-sdk-request: attempt=N; max=M`.
fn sdk_attempt(headers: &HeaderMap) -> Option<u32> {
    header_str(headers, "amz-sdk-request")?
        .split(';')
        .find_map(|kv| kv.trim().strip_prefix("attempt=")?.parse().ok())
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let seq = shared.counters.seen.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    let decision = shared.decide(parts.method.as_str(), &path);
    let mut record = RequestRecord {
        seq,
        method: parts.method.to_string(),
        first_line: format!("{} {path_and_query} HTTP/1.1", parts.method),
        path,
        query,
        target: header_str(&parts.headers, "x-amz-target"),
        invocation_id: header_str(&parts.headers, "amz-sdk-invocation-id"),
        attempt: sdk_attempt(&parts.headers),
        headers: parts.headers.clone(),
        body: body.clone(),
        outcome: decision.outcome,
        status: None,
        delayed_ms: decision.delay_ms,
    };
    if decision.delay_ms > 0 {
        shared.counters.delayed.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(decision.delay_ms)).await;
    }
    let result = match decision.outcome {
        Outcome::Throttled => Ok(aws_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Rate exceeded",
        )),
        Outcome::Error500 => Ok(aws_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServerException",
            "Internal failure (injected by the fault proxy)",
        )),
        Outcome::Dropped => Err(DropConnection),
        Outcome::Held => {
            // Logged now: it never completes. The connection stays open until the
            // client gives up (or the proxy stops).
            shared.count(Outcome::Held);
            lock(&shared.log).push(record);
            return std::future::pending().await;
        }
        Outcome::Forwarded | Outcome::DroppedAfterForward | Outcome::UpstreamError => {
            let degrade = lock(&shared.dice).faults.degrade_node_groups.clone();
            match forward(&shared.upstream, &parts, &path_and_query, body).await {
                Ok(_) if decision.outcome == Outcome::DroppedAfterForward => Err(DropConnection),
                Ok(resp)
                    if parts.method == hyper::Method::GET
                        && degrade.as_deref().is_some_and(|d| {
                            record.path.contains("/node-groups/") && record.path.contains(d)
                        }) =>
                {
                    Ok(degraded(resp).await)
                }
                Ok(resp) => Ok(resp),
                Err(e) => {
                    record.outcome = Outcome::UpstreamError;
                    let mut resp = Response::new(Full::new(Bytes::from(format!(
                        "fault proxy: upstream {} failed: {e}",
                        shared.upstream.authority
                    ))));
                    *resp.status_mut() = StatusCode::BAD_GATEWAY;
                    Ok(resp)
                }
            }
        }
    };
    record.status = result.as_ref().ok().map(|r| r.status().as_u16());
    shared.count(record.outcome);
    lock(&shared.log).push(record);
    result
}

/// A DescribeNodegroup answer rewritten to a degraded node group, in the shape
/// of EKS's `Nodegroup` (`status`, `health.issues[].code/message/resourceIds`).
async fn degraded(resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (mut head, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(head, Full::new(bytes));
    };
    if let Some(ng) = v.get_mut("nodegroup") {
        ng["status"] = serde_json::json!("DEGRADED");
        ng["health"] = serde_json::json!({ "issues": [{
            "code": "AsgInstanceLaunchFailures",
            "message": "Could not launch On-Demand Instances. InsufficientInstanceCapacity (injected by the fault proxy)",
            "resourceIds": ["eks-asg-faultproxy"],
        }]});
    }
    let out = Bytes::from(v.to_string());
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&out.len().to_string()).unwrap_or(HeaderValue::from_static("0")),
    );
    Response::from_parts(head, Full::new(out))
}

/// An AWS restJson1 error answer.
fn aws_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-amzn-errortype",
        HeaderValue::from_str(code).expect("error code header"),
    );
    h.insert(
        "x-amzn-requestid",
        HeaderValue::from_static("00000000-0000-0000-0000-faultproxy00"),
    );
    resp
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1), plus any
/// that `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn forward(
    upstream: &Upstream,
    parts: &hyper::http::request::Parts,
    path_and_query: &str,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let exchange = async {
        let stream = TcpStream::connect(&upstream.addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let mut headers = parts.headers.clone();
        strip_hop_by_hop(&mut headers);
        if !headers.contains_key(header::HOST) {
            headers.insert(header::HOST, HeaderValue::from_str(&upstream.authority)?);
        }
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(format!("{}{path_and_query}", upstream.prefix))
            .body(Full::new(body))?;
        *request.headers_mut() = headers;
        let response = sender.send_request(request).await?;
        let (mut head, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        drop(sender);
        connection.abort();
        strip_hop_by_hop(&mut head.headers);
        Ok::<_, BoxError>(Response::from_parts(head, Full::new(body)))
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {UPSTREAM_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;

    /// A trivial upstream: 200 with `METHOD PATH?QUERY BODY` and an `x-echo-test` header
    /// copied from the request. Counts its requests.
    struct Upstream {
        endpoint: String,
        hits: Arc<AtomicUsize>,
        task: JoinHandle<()>,
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn upstream() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let counter = counter.clone();
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let echo = req.headers().get("x-echo-test").cloned();
                            let line = format!(
                                "{} {} ",
                                req.method(),
                                req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
                            );
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut out = line.into_bytes();
                            out.extend_from_slice(&body);
                            let mut resp = Response::new(Full::new(Bytes::from(out)));
                            if let Some(v) = echo {
                                resp.headers_mut().insert("x-echo-test", v);
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            endpoint: format!("http://{addr}"),
            hits,
            task,
        }
    }

    struct Answer {
        status: u16,
        headers: HeaderMap,
        body: Bytes,
    }

    /// One request on a fresh connection; Err if the connection closes without an answer.
    async fn call(
        proxy: &FaultProxy,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<Answer, BoxError> {
        let stream = TcpStream::connect(proxy.addr()).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, proxy.addr().to_string())
            .header("x-echo-test", "kept")
            .header("amz-sdk-invocation-id", "inv-1")
            .header("amz-sdk-request", "attempt=2; max=3")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    #[tokio::test]
    async fn rate_zero_forwards_everything_untouched() {
        let up = upstream().await;
        let proxy = FaultProxy::start(&up.endpoint, Faults::none()).await;
        for i in 0..20 {
            let a = call(
                &proxy,
                "POST",
                &format!("/clusters/c/node-groups?n={i}"),
                "{\"a\":1}",
            )
            .await
            .expect("answer");
            assert_eq!(a.status, 200);
            assert_eq!(
                a.body,
                Bytes::from(format!("POST /clusters/c/node-groups?n={i} {{\"a\":1}}"))
            );
            assert_eq!(a.headers.get("x-echo-test").unwrap(), "kept");
        }
        assert_eq!(up.hits.load(Ordering::SeqCst), 20);
        assert_eq!(
            proxy.stats(),
            Stats {
                seen: 20,
                forwarded: 20,
                ..Stats::default()
            }
        );
        let log = proxy.requests();
        assert_eq!(log.len(), 20);
        let r = &log[3];
        assert_eq!(r.seq, 3);
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/clusters/c/node-groups");
        assert_eq!(r.query.as_deref(), Some("n=3"));
        assert_eq!(r.label(), "POST /clusters/c/node-groups?n=3 HTTP/1.1");
        assert_eq!(r.invocation_id.as_deref(), Some("inv-1"));
        assert_eq!(r.attempt, Some(2));
        assert_eq!(r.body, Bytes::from("{\"a\":1}"));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.outcome, Outcome::Forwarded);
    }

    #[tokio::test]
    async fn rate_one_answers_every_request_itself() {
        let up = upstream().await;
        let proxy = FaultProxy::start(
            &up.endpoint,
            Faults {
                throttle: 1.0,
                ..Faults::none()
            },
        )
        .await;
        for _ in 0..10 {
            let a = call(&proxy, "GET", "/clusters/c", "")
                .await
                .expect("answer");
            assert_eq!(a.status, 429);
            assert_eq!(
                a.headers.get("x-amzn-errortype").unwrap(),
                "ThrottlingException"
            );
            assert_eq!(a.body, Bytes::from(r#"{"message":"Rate exceeded"}"#));
        }
        proxy.set_faults(Faults {
            error_500: 1.0,
            ..Faults::none()
        });
        for _ in 0..10 {
            let a = call(&proxy, "GET", "/clusters/c", "")
                .await
                .expect("answer");
            assert_eq!(a.status, 500);
            assert_eq!(
                a.headers.get("x-amzn-errortype").unwrap(),
                "ServerException"
            );
        }
        proxy.set_faults(Faults {
            drop: 1.0,
            ..Faults::none()
        });
        for _ in 0..10 {
            assert!(call(&proxy, "GET", "/clusters/c", "").await.is_err());
        }
        assert_eq!(
            up.hits.load(Ordering::SeqCst),
            0,
            "nothing reached the upstream"
        );
        proxy.set_faults(Faults {
            drop_after_forward: 1.0,
            ..Faults::none()
        });
        for _ in 0..10 {
            assert!(
                call(&proxy, "POST", "/clusters/c/node-groups", "{}")
                    .await
                    .is_err()
            );
        }
        assert_eq!(up.hits.load(Ordering::SeqCst), 10, "forwarded, answer lost");
        assert_eq!(
            proxy.stats(),
            Stats {
                seen: 40,
                throttled: 10,
                errors_500: 10,
                dropped: 10,
                dropped_after_forward: 10,
                ..Stats::default()
            }
        );
        let statuses: Vec<Option<u16>> = proxy.requests().iter().map(|r| r.status).collect();
        assert_eq!(&statuses[..10], &[Some(429); 10]);
        assert_eq!(&statuses[10..20], &[Some(500); 10]);
        assert_eq!(&statuses[20..], &[None; 20]);
    }

    #[tokio::test]
    async fn rates_are_roughly_kept_and_reproducible() {
        let up = upstream().await;
        let faults = Faults {
            throttle: 0.2,
            error_500: 0.1,
            drop: 0.1,
            seed: 42,
            ..Faults::none()
        };
        let run = |proxy: FaultProxy| async move {
            for _ in 0..400 {
                let _ = call(&proxy, "GET", "/x", "").await;
            }
            let outcomes: Vec<Outcome> = proxy.requests().iter().map(|r| r.outcome).collect();
            (proxy.stats(), outcomes)
        };
        let (stats, outcomes) = run(FaultProxy::start(&up.endpoint, faults.clone()).await).await;
        assert_eq!(stats.seen, 400);
        assert_eq!(
            stats.seen,
            stats.forwarded + stats.throttled + stats.errors_500 + stats.dropped
        );
        assert!((50..=110).contains(&stats.throttled), "{stats:?}");
        assert!((20..=65).contains(&stats.errors_500), "{stats:?}");
        assert!((20..=65).contains(&stats.dropped), "{stats:?}");
        assert_eq!(up.hits.load(Ordering::SeqCst) as u64, stats.forwarded);
        let (again, outcomes_again) = run(FaultProxy::start(&up.endpoint, faults).await).await;
        assert_eq!(stats, again, "same seed, same decisions");
        assert_eq!(outcomes, outcomes_again);
    }

    #[tokio::test]
    async fn delays_and_bounds_consecutive_faults() {
        let up = upstream().await;
        let proxy = FaultProxy::start(
            &up.endpoint,
            Faults {
                delay: 1.0,
                delay_ms: 150,
                ..Faults::none()
            },
        )
        .await;
        let start = tokio::time::Instant::now();
        assert_eq!(call(&proxy, "GET", "/x", "").await.unwrap().status, 200);
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert_eq!(proxy.stats().delayed, 1);
        assert_eq!(proxy.requests()[0].delayed_ms, 150);

        proxy.reset();
        proxy.set_faults(Faults {
            throttle: 1.0,
            max_consecutive: Some(2),
            ..Faults::none()
        });
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(call(&proxy, "GET", "/x", "").await.unwrap().status);
        }
        assert_eq!(statuses, [429, 429, 200, 429, 429, 200]);

        proxy.set_faults(Faults {
            throttle: 1.0,
            path_contains: Some("/node-groups".into()),
            ..Faults::none()
        });
        assert_eq!(
            call(&proxy, "GET", "/clusters/c", "").await.unwrap().status,
            200
        );
        assert_eq!(
            call(&proxy, "GET", "/clusters/c/node-groups/n", "")
                .await
                .unwrap()
                .status,
            429
        );
        assert_eq!(
            proxy.stats(),
            Stats {
                seen: 8,
                forwarded: 3,
                throttled: 5,
                ..Stats::default()
            }
        );
    }

    #[tokio::test]
    async fn holds_requests_of_one_method_without_answering_until_lifted() {
        let up = upstream().await;
        let proxy = FaultProxy::start(
            &up.endpoint,
            Faults {
                hold: 1.0,
                method: Some("POST".into()),
                path_contains: Some("/node-groups".into()),
                ..Faults::none()
            },
        )
        .await;
        let held = tokio::time::timeout(
            Duration::from_secs(1),
            call(&proxy, "POST", "/clusters/c/node-groups", "{}"),
        )
        .await;
        assert!(held.is_err(), "no answer, not even a closed connection");
        assert_eq!(
            call(&proxy, "GET", "/clusters/c/node-groups", "")
                .await
                .unwrap()
                .status,
            200,
            "another method passes"
        );
        assert_eq!(
            up.hits.load(Ordering::SeqCst),
            1,
            "the held one never got there"
        );
        let log = proxy.requests();
        assert_eq!(
            (log[0].outcome, log[0].status, log[0].method.as_str()),
            (Outcome::Held, None, "POST")
        );
        proxy.set_faults(Faults::none());
        assert_eq!(
            call(&proxy, "POST", "/clusters/c/node-groups", "{}")
                .await
                .unwrap()
                .status,
            200,
            "lifted: forwarded again"
        );
        assert_eq!(
            proxy.stats(),
            Stats {
                seen: 3,
                forwarded: 2,
                held: 1,
                ..Stats::default()
            }
        );
    }

    /// A request as the AWS SDK sends it to EKS (moto routes on the credential scope).
    async fn eks_call(
        proxy: &FaultProxy,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<Answer, BoxError> {
        let stream = TcpStream::connect(proxy.addr()).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, proxy.addr().to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::AUTHORIZATION,
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/eks/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    #[tokio::test]
    async fn relays_moto_answers_and_errors() {
        let moto = crate::moto::shared().await;
        let proxy = FaultProxy::start(&moto.endpoint, Faults::none()).await;
        let name = format!("fp-{}", rand::random::<u32>());
        let create = serde_json::json!({
            "name": name,
            "roleArn": crate::moto::role_arn("eks"),
            "resourcesVpcConfig": { "subnetIds": ["subnet-a"] },
        });
        let a = eks_call(&proxy, "POST", "/clusters", &create.to_string())
            .await
            .unwrap();
        assert_eq!(a.status, 200, "{:?}", a.body);
        let a = eks_call(&proxy, "GET", &format!("/clusters/{name}"), "")
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["cluster"]["name"], name.as_str());
        let a = eks_call(&proxy, "GET", "/clusters/fp-missing-cluster", "")
            .await
            .unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(
            a.headers.get("x-amzn-errortype").unwrap(),
            "ResourceNotFoundException"
        );
        assert_eq!(proxy.stats().forwarded, 3);
    }

    #[tokio::test]
    async fn unreachable_upstream_is_a_502() {
        let port = crate::free_port();
        let proxy = FaultProxy::start(&format!("http://127.0.0.1:{port}"), Faults::none()).await;
        assert_eq!(call(&proxy, "GET", "/x", "").await.unwrap().status, 502);
        assert_eq!(proxy.stats().upstream_errors, 1);
        assert_eq!(proxy.requests()[0].outcome, Outcome::UpstreamError);
    }
}
