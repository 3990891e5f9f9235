//! The HTTP side: the accept loop, the controllers' ticker, one request read and answered.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::errors::ApiError;
use super::watch::watch_response;
use super::{Body, Query, REQUEST_HISTORY, RequestRecord, Shared, TICK};

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

pub(super) async fn ticker(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let rv = {
            let mut s = shared.lock();
            s.tick();
            s.rv
        };
        shared.notify(rv);
    }
}

/// What one request asks.
pub(super) struct Req {
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) query: Query,
    pub(super) content_type: Option<String>,
    pub(super) accept: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) body: Bytes,
}

impl Req {
    pub(super) fn partial_metadata(&self) -> bool {
        self.accept
            .as_deref()
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    }

    pub(super) fn media_type(&self) -> String {
        self.content_type
            .as_deref()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }
}

pub(super) enum Reply {
    Json(u16, Value),
    Text(u16, &'static str),
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let err = ApiError::bad_request(format!("reading the request body: {e}"));
            return Ok(json_response(err.code, &err.status()));
        }
    };
    let req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        content_type: header(header::CONTENT_TYPE),
        accept: header(header::ACCEPT),
        user_agent: header(header::USER_AGENT),
        query,
        body,
    };
    {
        let mut s = shared.lock();
        if s.requests.len() >= REQUEST_HISTORY {
            s.requests.pop_front();
        }
        s.requests.push_back(RequestRecord {
            method: req.method.to_string(),
            path: req.path.clone(),
            content_type: req.content_type.clone(),
            field_manager: req.query.get("fieldManager").cloned(),
        });
    }
    let watching = req.method == Method::GET
        && req
            .query
            .get("watch")
            .is_some_and(|w| w == "true" || w == "1");
    if watching {
        return Ok(match watch_response(&shared, &req) {
            Ok(resp) => resp,
            Err(e) => json_response(e.code, &e.status()),
        });
    }
    let (reply, rv) = {
        let mut s = shared.lock();
        s.tick();
        let reply = s.dispatch(&req);
        s.tick();
        (reply, s.rv)
    };
    shared.notify(rv);
    Ok(match reply {
        Reply::Json(code, v) => {
            tracing::debug!(method = %req.method, path = %req.path, code, "kube stand-in");
            json_response(code, &v)
        }
        Reply::Text(code, t) => Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(t.as_bytes())).boxed())
            .expect("response"),
    })
}

pub(super) fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed())
        .expect("response")
}

pub(super) fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
        } else if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 2;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
