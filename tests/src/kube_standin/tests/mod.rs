//! The stand-in against the real kube-rs client and raw HTTP.

mod api;
mod apply;
mod controllers;
mod nodes;
mod pending;
mod read;
mod volumes;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::KubeStandin;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};

fn ssa() -> PatchParams {
    PatchParams::apply("esaas").force()
}

fn typed<K: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("typed object")
}

fn api_status(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn namespace(client: &kube::Client, name: &str) -> Namespace {
    let ns: Namespace = typed(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": name, "labels": { "esaas.io/tenant": "t1" } },
    }));
    Api::<Namespace>::all(client.clone())
        .patch(name, &ssa(), &Patch::Apply(&ns))
        .await
        .expect("apply namespace")
}

fn secret(name: &str, labels: Value) -> Secret {
    typed(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "labels": labels },
        "stringData": { "elastic": "s3cret" },
    }))
}

fn statefulset(name: &str, replicas: i32, image: &str) -> StatefulSet {
    typed(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": name, "labels": { "esaas.io/cluster": "c1" } },
        "spec": {
            "replicas": replicas,
            "serviceName": format!("{name}-transport"),
            "podManagementPolicy": "Parallel",
            "selector": { "matchLabels": { "esaas.io/cluster": "c1", "esaas.io/node-set": name } },
            "template": {
                "metadata": { "labels": { "esaas.io/cluster": "c1", "esaas.io/node-set": name, "esaas.io/tenant": "t1" } },
                "spec": { "containers": [{ "name": "elasticsearch", "image": image }] },
            },
            "volumeClaimTemplates": [{
                "metadata": { "name": "data" },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "esaas-gp3",
                    "resources": { "requests": { "storage": "10Gi" } },
                },
            }],
        },
    }))
}

async fn eventually<T>(within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One raw request: (status, JSON body or Null).
async fn raw(
    s: &KubeStandin,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(s.addr())
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "127.0.0.1");
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    let resp = send
        .send_request(
            b.body(Full::new(Bytes::from(body.to_string())))
                .expect("request"),
        )
        .await
        .expect("send");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn rv(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .expect("resourceVersion")
        .parse()
        .expect("numeric rv")
}
