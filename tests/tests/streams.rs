//! Streams against a real server: a revoked key's open streams end, one
//! tenant's watchers are capped without slowing another tenant, and streams
//! that need no key are capped too.

use std::time::{Duration, Instant};

use esaas_proto::v1 as pb;
use esaas_proto::v1::worker_service_client::WorkerServiceClient;
use esaas_tests::*;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_types::StatusExt;

async fn new_key(app: &App, parent: &str, role: pb::Role) -> (String, String) {
    let r = app
        .admin()
        .create_api_key(authed(
            ADMIN_KEY,
            pb::CreateApiKeyRequest {
                parent: parent.into(),
                api_key: Some(pb::ApiKey {
                    display_name: "streams".into(),
                    role: role as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("create key")
        .into_inner();
    (r.api_key.expect("key").name, r.secret)
}

/// The status a stream ends with, waiting at most `within`.
async fn end_of<T: std::fmt::Debug>(
    stream: &mut tonic::Streaming<T>,
    within: Duration,
) -> tonic::Status {
    tokio::time::timeout(within, async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return status,
                None => return tonic::Status::ok("ended without a status"),
            }
        }
    })
    .await
    .expect("the stream ended in time")
}

/// A viewer's WatchCluster and WatchOperation streams and a worker's
/// Connect stream, all open when their keys are revoked: each ends with
/// UNAUTHENTICATED within the key cache's time to live and a second, and
/// nothing more is sent on them.
#[tokio::test]
async fn revoking_a_key_ends_its_open_streams() {
    let app = spawn_app_with(|c| c.auth_cache_ttl_ms = 2000).await;
    let t = app.tenant("search").await;
    let created = app.create_cluster(&t.admin, "search", "logs", 3).await;
    let op = created.operation.expect("op").name;
    let (viewer_name, viewer) = new_key(&app, "tenants/search", pb::Role::TenantViewer).await;
    let (worker_name, worker) = new_key(&app, "", pb::Role::Worker).await;

    let mut cluster_watch = app
        .clusters()
        .watch_cluster(authed(
            &viewer,
            pb::WatchClusterRequest {
                name: "tenants/search/clusters/logs".into(),
                since_revision: 0,
            },
        ))
        .await
        .expect("watch cluster")
        .into_inner();
    cluster_watch
        .next()
        .await
        .expect("first")
        .expect("the cluster");
    let mut op_watch = app
        .operations()
        .watch_operation(authed(
            &viewer,
            pb::WatchOperationRequest { name: op.clone() },
        ))
        .await
        .expect("watch operation")
        .into_inner();
    op_watch
        .next()
        .await
        .expect("first")
        .expect("the operation");
    let (tx, rx) = mpsc::channel(8);
    tx.send(pb::ConnectRequest {
        message: Some(pb::connect_request::Message::Hello(pb::WorkerHello {
            worker_id: "revoked".into(),
            region: "test".into(),
            capacity: 1,
            version: "test".into(),
            ..Default::default()
        })),
    })
    .await
    .expect("hello");
    let mut connect = WorkerServiceClient::new(app.channel())
        .connect(authed(&worker, ReceiverStream::new(rx)))
        .await
        .expect("connect")
        .into_inner();
    // The session, then the create's assignment.
    for _ in 0..2 {
        connect.next().await.expect("message").expect("ok");
    }

    // Revoked through another connection, as an admin would.
    let revoked_at = Instant::now();
    for name in [&viewer_name, &worker_name] {
        app.admin()
            .revoke_api_key(authed(
                ADMIN_KEY,
                pb::RevokeApiKeyRequest { name: name.clone() },
            ))
            .await
            .expect("revoke");
    }
    let within = Duration::from_millis(2000 + 1000);
    for (what, status) in [
        ("WatchCluster", end_of(&mut cluster_watch, within).await),
        ("WatchOperation", end_of(&mut op_watch, within).await),
        ("Connect", end_of(&mut connect, within).await),
    ] {
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(status.message().contains("revoked"), "{what}: {status:?}");
    }
    let took = revoked_at.elapsed();
    assert!(took < within, "{took:?}");
    eprintln!("three streams ended {took:?} after their keys were revoked");
    // The worker's lease went back without costing the create an attempt.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = app
            .operations()
            .get_operation(authed(
                ADMIN_KEY,
                pb::GetOperationRequest { name: op.clone() },
            ))
            .await
            .expect("get")
            .into_inner()
            .operation
            .expect("op");
        if o.state == pb::OperationState::Queued as i32 {
            assert_eq!(o.attempts[0].outcome, "stream closed by the control plane");
            break;
        }
        assert!(Instant::now() < deadline, "{o:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the revoked keys open nothing new.
    let again = app
        .clusters()
        .watch_cluster(authed(
            &viewer,
            pb::WatchClusterRequest {
                name: "tenants/search/clusters/logs".into(),
                since_revision: 0,
            },
        ))
        .await
        .expect_err("refused");
    assert_eq!(again.code(), Code::Unauthenticated);
}

/// 4,000 watch streams of one tenant (over 40 connections): its cap holds
/// 1,000, the rest are refused with RESOURCE_EXHAUSTED and QuotaFailure, and
/// meanwhile another tenant's calls stay fast and its own watch opens.
#[tokio::test]
async fn one_tenants_watchers_are_capped_and_another_tenant_is_not_slowed() {
    let app = spawn_app_with(|c| {
        c.max_watch_streams_per_tenant = 1000;
        c.rate_limit_per_second = 100_000.0;
        c.rate_limit_burst = 100_000.0;
    })
    .await;
    let noisy = app.tenant("noisy").await;
    let calm = app.tenant("calm").await;
    app.create_cluster(&noisy.admin, "noisy", "logs", 1).await;
    app.create_cluster(&calm.admin, "calm", "logs", 1).await;

    let mut channels = Vec::new();
    for _ in 0..40 {
        channels.push(channel(app.addr).await);
    }
    let opened = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ch) in channels.iter().enumerate() {
        let (ch, key, opened) = (ch.clone(), noisy.viewer.clone(), opened.clone());
        tasks.spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..100 {
                let r = pb::cluster_service_client::ClusterServiceClient::new(ch.clone())
                    .watch_cluster(authed(
                        &key,
                        pb::WatchClusterRequest {
                            name: "tenants/noisy/clusters/logs".into(),
                            since_revision: 0,
                        },
                    ))
                    .await;
                match r {
                    Ok(s) => opened.lock().await.push(s.into_inner()),
                    Err(status) => refused.push(status),
                }
            }
            (i, refused)
        });
    }
    // The other tenant, meanwhile.
    let mut calm_latencies = Vec::new();
    let mut calm_client = app.clusters();
    let mut refusals = 0;
    while !tasks.is_empty() || calm_latencies.len() < 100 {
        let t0 = Instant::now();
        calm_client
            .get_cluster(authed(
                &calm.viewer,
                pb::GetClusterRequest {
                    name: "tenants/calm/clusters/logs".into(),
                },
            ))
            .await
            .expect("the calm tenant is served");
        calm_latencies.push(t0.elapsed());
        if tasks.is_empty() && calm_latencies.len() >= 100 {
            break;
        }
        if let Some(Ok((_, refused))) = tasks.try_join_next() {
            for status in refused {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let quota = status.get_details_quota_failure().expect("QuotaFailure");
                assert_eq!(quota.violations[0].subject, "tenants/noisy:watch_streams");
                refusals += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let open = opened.lock().await.len();
    assert_eq!((open, refusals), (1000, 3000), "the cap holds exactly");
    calm_latencies.sort();
    let p95 = calm_latencies[calm_latencies.len() * 95 / 100];
    eprintln!(
        "{} calm GetCluster calls while 4,000 watches were opened: p95 {p95:?}",
        calm_latencies.len()
    );
    assert!(p95 < Duration::from_millis(250), "p95 {p95:?}");
    // The calm tenant's own watch opens.
    let mut calm_watch = app
        .clusters()
        .watch_cluster(authed(
            &calm.viewer,
            pb::WatchClusterRequest {
                name: "tenants/calm/clusters/logs".into(),
                since_revision: 0,
            },
        ))
        .await
        .expect("another tenant watches")
        .into_inner();
    calm_watch.next().await.expect("first").expect("cluster");
    // Closing streams gives their slots back.
    opened.lock().await.truncate(900);
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.clusters()
        .watch_cluster(authed(
            &noisy.viewer,
            pb::WatchClusterRequest {
                name: "tenants/noisy/clusters/logs".into(),
                since_revision: 0,
            },
        ))
        .await
        .expect("a freed slot");
}

/// Health Watch needs no key; past its cap it is refused, and a unary
/// health check still answers.
#[tokio::test]
async fn unauthenticated_health_watches_are_capped() {
    let app = spawn_app_with(|c| c.max_unauthenticated_streams = 20).await;
    let mut open = Vec::new();
    let mut refused = None;
    for _ in 0..25 {
        let mut h = tonic_health::pb::health_client::HealthClient::new(app.channel());
        match h
            .watch(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
        {
            Ok(s) => open.push(s.into_inner()),
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    assert_eq!(open.len(), 20);
    let refused = refused.expect("the 21st is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let check = tonic_health::pb::health_client::HealthClient::new(app.channel())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a unary check answers");
    assert_eq!(check.into_inner().status, 1);
    // A closed watch gives its place back.
    open.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tonic_health::pb::health_client::HealthClient::new(app.channel())
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a place came back");
}
