//! Logs, traces and metrics of esaas.
//!
//! Logs always go to stderr, as text or JSON lines. When an OTLP endpoint is
//! configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `telemetry.otlp_endpoint`),
//! the same `tracing` spans are also exported as OpenTelemetry traces, and
//! the instruments of [`metrics`] are exported as OpenTelemetry metrics, both
//! over OTLP/gRPC. [`context`] carries W3C trace context across processes.

pub mod context;
pub mod metrics;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How a process reports.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `service.name` of this process, unless `OTEL_SERVICE_NAME` names one.
    pub service: &'static str,
    /// Log JSON lines instead of text.
    pub json_logs: bool,
    /// OTLP/gRPC endpoint (e.g. `https://otel-collector:4317`); `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// PEM CA bundle that verifies an `https://` endpoint instead of the
    /// system's roots.
    pub otlp_ca_pem: Option<String>,
}

/// Exporters to flush on exit; dropping it without [`Telemetry::shutdown`]
/// may lose the last batch.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Whether spans and metrics are exported.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Some(Err(e)) = self.tracer.map(|t| t.shutdown()) {
            eprintln!("flushing traces on exit: {e}");
        }
        if let Some(Err(e)) = self.meter.map(|m| m.shutdown()) {
            eprintln!("flushing metrics on exit: {e}");
        }
    }
}

/// Installs the global `tracing` subscriber (filtered by `RUST_LOG`,
/// default `info`) and, with an endpoint, the OpenTelemetry trace and metric
/// pipelines and the W3C trace-context propagator. Call it once, inside the
/// tokio runtime (the OTLP client runs on it), before anything records.
pub fn init(settings: &Settings) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = if settings.json_logs {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) else {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init()
            .context("installing the log subscriber")?;
        return Ok(Telemetry::default());
    };

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = resource(settings.service);
    let tls = tls_config(endpoint, settings.otlp_ca_pem.as_deref());
    let mut spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if let Some(tls) = &tls {
        spans = spans.with_tls_config(tls.clone());
    }
    let spans = spans
        .build()
        .with_context(|| format!("OTLP span exporter for {endpoint}"))?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let mut points = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if let Some(tls) = tls {
        points = points.with_tls_config(tls);
    }
    let points = points
        .build()
        .with_context(|| format!("OTLP metric exporter for {endpoint}"))?;
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(points)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_meter_provider(meter.clone());

    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("esaas"))
        // Only esaas' own spans become OpenTelemetry spans; the libraries'
        // (h2, hyper, sqlx internals) would drown them.
        .with_filter(EnvFilter::new("off,esaas=debug,esaas_=debug"));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the log subscriber")?;
    tracing::info!(%endpoint, service = settings.service, "exporting traces and metrics over OTLP");
    Ok(Telemetry {
        tracer: Some(tracer),
        meter: Some(meter),
    })
}

/// For `https://`: the CA bundle if one is given (and then only it, as
/// `curl --cacert` does), else the system's roots.
fn tls_config(endpoint: &str, ca_pem: Option<&str>) -> Option<ClientTlsConfig> {
    if !endpoint.starts_with("https://") {
        return None;
    }
    Some(match ca_pem {
        Some(pem) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
        None => ClientTlsConfig::new().with_native_roots(),
    })
}

fn resource(service: &'static str) -> Resource {
    let builder = Resource::builder();
    // OTEL_SERVICE_NAME, read by the builder, wins over the built-in name.
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(service).build()
    }
}
