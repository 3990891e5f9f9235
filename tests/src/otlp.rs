//! An OpenTelemetry collector for tests: the OTLP/gRPC trace and metrics
//! services of `opentelemetry-proto`, keeping everything exported to them,
//! flattened into spans and metric points that tests can search.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use tokio_stream::wrappers::TcpListenerStream;

/// One exported span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// `service.name` of the process that exported it.
    pub service: String,
    /// Span name (`otel.name` where set).
    pub name: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_span_id: String,
    /// Attributes, as text.
    pub attributes: BTreeMap<String, String>,
}

/// One exported metric data point.
#[derive(Debug, Clone)]
pub struct PointRecord {
    /// `service.name` of the process that exported it.
    pub service: String,
    /// Metric name.
    pub metric: String,
    /// Attributes, as text.
    pub attributes: BTreeMap<String, String>,
    /// The value (a histogram's count).
    pub value: f64,
}

#[derive(Debug, Default)]
struct Store {
    spans: Vec<SpanRecord>,
    points: Vec<PointRecord>,
}

/// The collector; it serves until dropped.
#[derive(Debug, Clone)]
pub struct Collector {
    addr: SocketAddr,
    tls: bool,
    store: Arc<Mutex<Store>>,
    _server: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn service_of(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .map(|r| attrs(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

#[derive(Clone)]
struct Traces(Arc<Mutex<Store>>);

#[tonic::async_trait]
impl TraceService for Traces {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut store = self
            .0
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?;
        for rs in req.into_inner().resource_spans {
            let service = service_of(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    store.spans.push(SpanRecord {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        attributes: attrs(&s.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[derive(Clone)]
struct Metrics(Arc<Mutex<Store>>);

#[tonic::async_trait]
impl MetricsService for Metrics {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
        let number = |v: Option<Value>| match v {
            Some(Value::AsDouble(d)) => d,
            Some(Value::AsInt(i)) => i as f64,
            None => 0.0,
        };
        let mut store = self
            .0
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?;
        for rm in req.into_inner().resource_metrics {
            let service = service_of(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let points: Vec<(BTreeMap<String, String>, f64)> = match m.data {
                        Some(Data::Sum(s)) => s
                            .data_points
                            .into_iter()
                            .map(|p| (attrs(&p.attributes), number(p.value)))
                            .collect(),
                        Some(Data::Gauge(g)) => g
                            .data_points
                            .into_iter()
                            .map(|p| (attrs(&p.attributes), number(p.value)))
                            .collect(),
                        Some(Data::Histogram(h)) => h
                            .data_points
                            .into_iter()
                            .map(|p| (attrs(&p.attributes), p.count as f64))
                            .collect(),
                        _ => Vec::new(),
                    };
                    for (attributes, value) in points {
                        store.points.push(PointRecord {
                            service: service.clone(),
                            metric: m.name.clone(),
                            attributes,
                            value,
                        });
                    }
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    /// Starts a collector on a free local port.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts a collector that serves TLS with this pair (for `localhost`).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        let identity = tonic::transport::Identity::from_pem(cert_pem, key_pem);
        Self::start_with(Some(
            tonic::transport::ServerTlsConfig::new().identity(identity),
        ))
        .await
    }

    async fn start_with(tls: Option<tonic::transport::ServerTlsConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let store = Arc::new(Mutex::new(Store::default()));
        let mut server = tonic::transport::Server::builder();
        let secure = tls.is_some();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("collector TLS");
        }
        let router = server
            .add_service(TraceServiceServer::new(Traces(store.clone())))
            .add_service(MetricsServiceServer::new(Metrics(store.clone())));
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self {
            addr,
            tls: secure,
            store,
            _server: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Its OTLP/gRPC endpoint, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        match self.tls {
            true => format!("https://localhost:{}", self.addr.port()),
            false => format!("http://{}", self.addr),
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.store
            .lock()
            .map(|s| s.spans.clone())
            .unwrap_or_default()
    }

    /// Every metric point received so far.
    pub fn points(&self) -> Vec<PointRecord> {
        self.store
            .lock()
            .map(|s| s.points.clone())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` until `ready` holds on what was received.
    pub async fn wait_for(
        &self,
        timeout: std::time::Duration,
        what: &str,
        ready: impl Fn(&[SpanRecord], &[PointRecord]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if ready(&self.spans(), &self.points()) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let names: std::collections::BTreeSet<String> = self
                    .spans()
                    .iter()
                    .map(|s| format!("{}: {}", s.service, s.name))
                    .chain(
                        self.points()
                            .iter()
                            .map(|p| format!("{}: metric {}", p.service, p.metric)),
                    )
                    .collect();
                panic!("the collector did not receive {what} in {timeout:?}; it has: {names:#?}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
