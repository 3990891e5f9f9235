//! Tower layers around every gRPC call.
//!
//! - [`TelemetryLayer`]: one `rpc` span per call (continuing the caller's
//!   W3C `traceparent`), and the `esaas.rpc.server.*` metrics by method and
//!   status code, recorded when the call really ends: at the trailers, or
//!   when the client goes away.
//! - [`GuardLayer`]: a deadline on every unary call (`DEADLINE_EXCEEDED`)
//!   and a limit of unary calls in flight, beyond which calls are shed at
//!   once with `UNAVAILABLE` and `RetryInfo` instead of queueing without
//!   bound. Streams (watches, worker sessions, reflection) live for hours
//!   and are exempt from both, as are health checks, which must answer
//!   under load.
//!
//! Which calls are streams comes from the services' own descriptors, so the
//! table can't drift from the contract; it also bounds the metrics' labels
//! (an unknown path counts as `unknown`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Frame, SizeHint};
use prost::Message;
use tokio::sync::Semaphore;
use tonic::Code;
use tonic::body::Body;
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

use crate::error::ERROR_DOMAIN;

/// One RPC of the contract.
#[derive(Debug)]
pub struct Method {
    /// `esaas.v1.ClusterService`.
    pub service: String,
    /// `GetCluster`.
    pub name: String,
    /// Client or server streaming.
    pub streaming: bool,
}

/// Every RPC the server offers, by HTTP/2 path (`/package.Service/Method`).
#[derive(Debug, Default)]
pub struct Methods(HashMap<String, Arc<Method>>);

impl Methods {
    /// Reads the methods of encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut map = HashMap::new();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(*bytes)?;
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = match package.as_str() {
                        "" => service.name().to_string(),
                        p => format!("{p}.{}", service.name()),
                    };
                    for m in service.method {
                        let path = format!("/{service_name}/{}", m.name());
                        map.insert(
                            path,
                            Arc::new(Method {
                                service: service_name.clone(),
                                name: m.name().to_string(),
                                streaming: m.client_streaming() || m.server_streaming(),
                            }),
                        );
                    }
                }
            }
        }
        Ok(Self(map))
    }

    fn get(&self, path: &str) -> Option<Arc<Method>> {
        self.0.get(path).cloned()
    }
}

fn unknown() -> Arc<Method> {
    static UNKNOWN: std::sync::OnceLock<Arc<Method>> = std::sync::OnceLock::new();
    UNKNOWN
        .get_or_init(|| {
            Arc::new(Method {
                service: "unknown".into(),
                name: "unknown".into(),
                streaming: false,
            })
        })
        .clone()
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Spans and metrics of every call.
#[derive(Debug, Clone)]
pub struct TelemetryLayer {
    methods: Arc<Methods>,
}

impl TelemetryLayer {
    /// For the RPCs in `methods`.
    pub fn new(methods: Arc<Methods>) -> Self {
        Self { methods }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// The service of [`TelemetryLayer`].
#[derive(Debug, Clone)]
pub struct Telemetry<S> {
    inner: S,
    methods: Arc<Methods>,
}

impl<S, B> Service<http::Request<B>> for Telemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.methods.get(req.uri().path()).unwrap_or_else(unknown);
        let span = tracing::info_span!(
            "rpc",
            otel.name = %format_args!("{}/{}", method.service, method.name),
            otel.kind = "server",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %method.service,
            rpc.method = %method.name,
            rpc.grpc.status_code = Empty,
            tenant = Empty,
            cluster = Empty,
            operation = Empty,
        );
        esaas_telemetry::context::continue_from_headers(&span, req.headers());
        let start = Instant::now();
        let fut = self.inner.call(req).instrument(span.clone());
        Box::pin(async move {
            let mut finish = Finish {
                span,
                method,
                start,
                code: None,
            };
            match fut.await {
                Ok(res) => {
                    // A trailers-only answer (every error of a unary call)
                    // carries its status in the headers.
                    finish.code = status_of(res.headers());
                    let (parts, body) = res.into_parts();
                    let body = Metered {
                        inner: body,
                        finish: Some(finish),
                    };
                    Ok(http::Response::from_parts(parts, Body::new(body)))
                }
                Err(e) => {
                    finish.code = Some(Code::Unknown);
                    drop(finish);
                    Err(e)
                }
            }
        })
    }
}

/// Records the end of a call, once.
struct Finish {
    span: tracing::Span,
    method: Arc<Method>,
    start: Instant,
    code: Option<Code>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        // No status at all: the client went away before the end.
        let code = self.code.unwrap_or(Code::Cancelled);
        let name = code_name(code);
        self.span.record("rpc.grpc.status_code", name);
        if matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ) {
            self.span.record("otel.status_code", "ERROR");
        }
        esaas_telemetry::metrics::metrics().rpc(
            &self.method.service,
            &self.method.name,
            name,
            self.start.elapsed(),
        );
    }
}

/// A response body that records the call's end with its status.
struct Metered {
    inner: Body,
    finish: Option<Finish>,
}

impl http_body::Body for Metered {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let _entered = this.finish.as_ref().map(|f| f.span.enter());
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        drop(_entered);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of)
                    && let Some(f) = this.finish.as_mut()
                {
                    f.code = Some(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = this.finish.as_mut() {
                    f.code.get_or_insert(Code::Unknown);
                }
                this.finish = None;
            }
            Poll::Ready(None) => {
                if let Some(f) = this.finish.as_mut() {
                    // Ended cleanly without a status: malformed, but finished.
                    f.code.get_or_insert(Code::Unknown);
                }
                this.finish = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Deadlines and load shedding of unary calls, and a cap on the streams
/// that need no API key (health Watch, reflection), which no tenant's cap
/// can count.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    methods: Arc<Methods>,
    deadline: Duration,
    permits: Arc<Semaphore>,
    limit: usize,
    open_streams: Arc<Semaphore>,
    stream_limit: usize,
}

impl GuardLayer {
    /// Unary calls get `deadline` each, and at most `limit` run at once; at
    /// most `stream_limit` unauthenticated streams are open at once.
    pub fn new(
        methods: Arc<Methods>,
        deadline: Duration,
        limit: usize,
        stream_limit: usize,
    ) -> Self {
        Self {
            methods,
            deadline,
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            open_streams: Arc::new(Semaphore::new(stream_limit)),
            stream_limit,
        }
    }
}

/// A response body that holds a permit until the stream ends (or the client goes).
struct Permitted {
    inner: Body,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for Permitted {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`GuardLayer`].
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

fn status_response(
    code: Code,
    message: String,
    reason: &str,
    retry: Option<Duration>,
) -> http::Response<Body> {
    let mut details = ErrorDetails::new();
    if let Some(after) = retry {
        details.set_retry_info(Some(after));
    }
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    tonic::Status::with_error_details(code, message, details).into_http()
}

impl<S, B> Service<http::Request<B>> for Guard<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (exempt, keyless_stream) = match self.layer.methods.get(req.uri().path()) {
            Some(m) => (
                m.streaming || m.service == "grpc.health.v1.Health",
                m.streaming
                    && (m.service == "grpc.health.v1.Health"
                        || m.service.starts_with("grpc.reflection.")),
            ),
            None => (false, false),
        };
        if keyless_stream {
            let Ok(permit) = self.layer.open_streams.clone().try_acquire_owned() else {
                let limit = self.layer.stream_limit;
                tracing::warn!(
                    limit,
                    path = req.uri().path(),
                    "too many unauthenticated streams: refused"
                );
                return Box::pin(std::future::ready(Ok(status_response(
                    Code::ResourceExhausted,
                    format!(
                        "the server holds its limit of {limit} open health and reflection streams; use a unary Check, or retry later"
                    ),
                    "TOO_MANY_STREAMS",
                    Some(Duration::from_secs(1)),
                ))));
            };
            let fut = self.inner.call(req);
            return Box::pin(async move {
                let res = fut.await?;
                Ok(res.map(|inner| {
                    Body::new(Permitted {
                        inner,
                        _permit: permit,
                    })
                }))
            });
        }
        if exempt {
            return Box::pin(self.inner.call(req));
        }
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            let limit = self.layer.limit;
            tracing::warn!(limit, path = req.uri().path(), "overloaded: call shed");
            return Box::pin(std::future::ready(Ok(status_response(
                Code::Unavailable,
                format!(
                    "the server is at its limit of {limit} calls in flight; retry after the delay in RetryInfo"
                ),
                "OVERLOADED",
                Some(Duration::from_millis(100)),
            ))));
        };
        let deadline = self.layer.deadline;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _permit = permit;
            match tokio::time::timeout(deadline, fut).await {
                Ok(res) => res,
                Err(_) => {
                    tracing::warn!(
                        deadline_ms = deadline.as_millis() as u64,
                        "call ran past its deadline"
                    );
                    Ok(status_response(
                        Code::DeadlineExceeded,
                        format!(
                            "the call did not finish within the server's deadline of {} ms",
                            deadline.as_millis()
                        ),
                        "DEADLINE_EXCEEDED",
                        None,
                    ))
                }
            }
        })
    }
}
