//! W3C trace context (`traceparent`, `tracestate`) across processes: read
//! from incoming gRPC metadata, stored with an operation, handed to the
//! worker that runs it, and continued there.
//!
//! Without an OTLP endpoint no propagator is installed: nothing is read or
//! written, and every function here is a cheap no-op.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct Map(HashMap<String, String>);

impl Injector for Map {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

impl Extractor for Map {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Makes `span` a child of the trace context in `headers` (a caller's
/// `traceparent`), if there is a valid one.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of a stored `traceparent`, if it is a valid one.
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() {
        return;
    }
    let carrier = Map(HashMap::from([(
        "traceparent".to_string(),
        traceparent.to_string(),
    )]));
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}

/// The `traceparent` of the current span, to store with work that another
/// process continues later; `None` when traces are not exported.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier = Map(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.0.remove("traceparent")
}
