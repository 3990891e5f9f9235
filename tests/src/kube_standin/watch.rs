//! Watch streams: events from a `resourceVersion`, selectors, timeouts and `410 Expired`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Response, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::errors::ApiError;
use super::routing::{Route, route};
use super::select::Selection;
use super::server::Req;
use super::{Body, Shared, State};

impl State {
    /// Event lines after `after` for `w`; Err when `after` is older than the history.
    pub(super) fn watch_batch(&self, w: &WatchSpec, after: u64) -> Result<(Vec<Value>, u64), ()> {
        if after < self.compacted_rv {
            return Err(());
        }
        let start = self.events.partition_point(|e| e.rv <= after);
        let mut out = Vec::new();
        let mut last = after;
        for e in self.events.range(start..) {
            last = e.rv;
            if e.r != w.r || w.ns.as_deref().is_some_and(|ns| ns != e.ns) {
                continue;
            }
            let is = w.sel.matches(w.r, &e.obj);
            let typ = match e.kind {
                "ADDED" if is => "ADDED",
                "DELETED" if is => "DELETED",
                "MODIFIED" => {
                    let was = e.old.as_ref().is_some_and(|o| w.sel.matches(w.r, o));
                    match (was, is) {
                        (true, true) => "MODIFIED",
                        (false, true) => "ADDED",
                        (true, false) => "DELETED",
                        (false, false) => continue,
                    }
                }
                _ => continue,
            };
            out.push(json!({ "type": typ, "object": e.obj }));
        }
        Ok((out, last))
    }
}

pub(super) struct WatchSpec {
    pub(super) r: usize,
    pub(super) ns: Option<String>,
    pub(super) sel: Selection,
}

pub(super) fn watch_response(shared: &Arc<Shared>, req: &Req) -> Result<Response<Body>, ApiError> {
    let (r, ns, name) = match route(&req.path)? {
        Route::Collection { r, ns } => (r, ns, None),
        Route::Object {
            r,
            ns,
            name,
            sub: None,
        } => (r, ns, Some(name)),
        _ => return Err(ApiError::method_not_allowed()),
    };
    let mut sel = Selection::parse(r, &req.query)?;
    if let Some(n) = name {
        sel.fields.push(("metadata.name".into(), true, n));
    }
    let spec = WatchSpec { r, ns, sel };
    let timeout = req
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut changes = shared.changes.subscribe();
    let (initial, mut cursor, expired) = {
        let mut s = shared.lock();
        s.tick();
        match req.query.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => {
                let items: Vec<Value> = s
                    .range(r)
                    .filter(|((_, ons, _), obj)| {
                        spec.ns.as_deref().is_none_or(|ns| ns == ons) && spec.sel.matches(r, obj)
                    })
                    .map(|(_, obj)| json!({ "type": "ADDED", "object": obj }))
                    .collect();
                (items, s.rv, false)
            }
            Some(v) => {
                let rv = v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {v:?}"))
                })?;
                let expired = rv < s.compacted_rv;
                (Vec::new(), rv, expired)
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        let line = |v: &Value| {
            let mut b = serde_json::to_vec(v).unwrap_or_default();
            b.push(b'\n');
            Ok(Frame::data(Bytes::from(b)))
        };
        let gone = |rv: u64, oldest: u64| {
            json!({ "type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {rv} ({oldest})"),
                "reason": "Expired", "code": 410,
            }})
        };
        if expired {
            let oldest = shared.lock().compacted_rv;
            let _ = tx.send(line(&gone(cursor, oldest))).await;
            return;
        }
        for ev in &initial {
            if tx.send(line(ev)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let batch = shared.lock().watch_batch(&spec, cursor);
            match batch {
                Ok((events, last)) => {
                    cursor = last;
                    for ev in &events {
                        if tx.send(line(ev)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(()) => {
                    let oldest = shared.lock().compacted_rv;
                    let _ = tx.send(line(&gone(cursor, oldest))).await;
                    return;
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(ReceiverStream::new(rx)).boxed())
        .expect("response"))
}
