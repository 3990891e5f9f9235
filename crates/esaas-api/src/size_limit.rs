//! gRPC says an oversized message is `RESOURCE_EXHAUSTED`; tonic's decoder
//! answers `OUT_OF_RANGE`. This layer corrects the code on the way out, so
//! clients see what the gRPC specification promises.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::codegen::http::{self, HeaderValue};
use tower::{Layer, Service};

/// Rewrites tonic's "message length too large" status to `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageSizeLayer;

impl<S> Layer<S> for MessageSizeLayer {
    type Service = MessageSize<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageSize { inner }
    }
}

/// The service of [`MessageSizeLayer`].
#[derive(Debug, Clone)]
pub struct MessageSize<S> {
    inner: S,
}

const OUT_OF_RANGE: &str = "11";
const RESOURCE_EXHAUSTED: &str = "8";

fn fix(headers: &mut http::HeaderMap) {
    let too_large = headers
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| {
                m.contains("message%20length%20too%20large")
                    || m.contains("message length too large")
            });
    if too_large {
        headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    }
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MessageSize<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut res = fut.await?;
            // A decode error of a unary request is a trailers-only response:
            // the status is in the headers.
            fix(res.headers_mut());
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_size_error_is_rewritten() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large:%20found%202000000%20bytes",
            ),
        );
        fix(&mut h);
        assert_eq!(h.get("grpc-status").unwrap(), "8");

        let mut other = http::HeaderMap::new();
        other.insert("grpc-status", HeaderValue::from_static("11"));
        other.insert(
            "grpc-message",
            HeaderValue::from_static("page out of range"),
        );
        fix(&mut other);
        assert_eq!(other.get("grpc-status").unwrap(), "11");
    }
}
