//! Tests of the stand-in: through the product's own client (`client`), and
//! on the wire, where what the client does not check is (`wire`); node
//! shutdowns and voting exclusions both ways (`day2`); snapshots and
//! restores through moto's S3 (`snapshots`).

mod client;
mod day2;
mod follow_load;
mod snapshots;
mod versions;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use esaas_core::backend::{StepResult, Target};
use esaas_core::names::{ClusterId, TenantId};
use esaas_core::spec::{ClusterSpec, NodeRole, NodeSet, VolumeRetention};
use esaas_k8s::es::{EsAccess, EsClient, EsEndpoint};
use esaas_k8s::names;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use super::{EsStandin, IndexDef, lock, server};

pub(super) const PASSWORD: &str = "s3cret-elastic-password";

/// A CA, and a leaf for `host` and 127.0.0.1 signed by it: (CA PEM, leaf PEM, key PEM).
pub(super) fn tls_for(host: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "esaas test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("leaf key");
    let mut leaf =
        CertificateParams::new(vec![host.to_string(), "127.0.0.1".to_string()]).expect("leaf");
    leaf.distinguished_name.push(DnType::CommonName, host);
    let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

pub(super) fn target(cluster: &str, count: i32) -> Target {
    Target {
        uid: Uuid::new_v4(),
        tenant: TenantId::parse("t", "acme").expect("tenant"),
        cluster_id: ClusterId::parse("c", cluster).expect("cluster"),
        spec: ClusterSpec {
            version: "8.17.10".into(),
            node_sets: vec![NodeSet {
                name: "data-hot".into(),
                roles: vec![NodeRole::Master, NodeRole::Data],
                count,
                size_class: "small".into(),
                storage_gib: 100,
                storage_iops: 3000,
                storage_throughput_mibps: 125,
            }],
            zone_count: 1,
            zones: Vec::new(),
            volume_retention: VolumeRetention::Delete,
            deletion_protection: false,
            maintenance_window: None,
            change_freezes: Vec::new(),
            snapshot_policy: None,
        },
        generation: 1,
        operation: Uuid::new_v4(),
    }
}

fn pods(t: &Target, n: i32) -> Vec<String> {
    (0..n).map(|i| names::pod(t, "data-hot", i)).collect()
}

/// Hands out the stand-in's address for every target, with what the test set.
pub(super) struct TestAccess {
    pub(super) addr: SocketAddr,
    pub(super) ca_pem: String,
    pub(super) password: String,
    pub(super) none: bool,
}

impl EsAccess for TestAccess {
    async fn access(&self, t: &Target) -> StepResult<Option<EsEndpoint>> {
        if self.none {
            return Ok(None);
        }
        let host = names::http_host(t);
        Ok(Some(EsEndpoint {
            url: format!("https://{host}:{}", self.addr.port()),
            ca_pem: self.ca_pem.clone(),
            password: self.password.clone(),
            host,
            resolve: Some(self.addr),
        }))
    }
}

struct Fixture {
    es: EsStandin,
    ca: String,
    t: Target,
    host: String,
    client: EsClient<TestAccess>,
}

/// A stand-in with one registered cluster of `nodes` pods and a client that trusts its CA.
async fn fixture(nodes: i32, drain_delay: Duration) -> Fixture {
    fixture_with(nodes, drain_delay, vec![]).await
}

async fn fixture_with(nodes: i32, drain_delay: Duration, indices: Vec<IndexDef>) -> Fixture {
    let es = EsStandin::start_on("127.0.0.1:0".parse().expect("addr"), drain_delay)
        .await
        .expect("start");
    let t = target("logs", nodes);
    let host = names::http_host(&t);
    let (ca, cert, key) = tls_for(&host);
    es.register(&host, PASSWORD, &cert, &key, pods(&t, nodes), indices)
        .expect("register");
    let client = EsClient::new(
        TestAccess {
            addr: es.addr(),
            ca_pem: ca.clone(),
            password: PASSWORD.into(),
            none: false,
        },
        Duration::from_secs(2),
    );
    Fixture {
        es,
        ca,
        t,
        host,
        client,
    }
}

/// `_cat/shards` rows as the stand-in prints them now.
fn cat_rows(f: &Fixture) -> Vec<Value> {
    let state = lock(&f.es.shared);
    let c = state.clusters.get(&f.host).expect("cluster");
    c.shard_rows()
        .into_iter()
        .map(|r| Value::Object(r.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        .collect()
}

/// How a call authenticates.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    Elastic,
    WrongPassword,
    None,
}

/// `method path_and_query` (with a JSON body) to the fixture's cluster,
/// through the server's request handling (everything but TLS): the status,
/// headers and JSON body (`null` when the body is not JSON).
async fn send(
    f: &Fixture,
    method: Method,
    path_and_query: &str,
    auth: Auth,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = hyper::Request::builder().method(method).uri(path_and_query);
    let password = match auth {
        Auth::Elastic => Some(PASSWORD),
        Auth::WrongPassword => Some("wrong"),
        Auth::None => None,
    };
    if let Some(p) = password {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("elastic:{p}"));
        req = req.header(hyper::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let bytes = match body {
        Some(b) => {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            Bytes::from(b.to_string())
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(bytes)).expect("request");
    let resp = server::handle(Arc::downgrade(&f.es.shared), f.host.clone(), req).await;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}
